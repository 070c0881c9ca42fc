//! What of a session is at the server, as a rollout's lock window needs to know
//! it. A prepared statement whose Bind reaches Postgres while the window's ALTER
//! waits for its lock fails after it ("cached plan must not change result type"),
//! so the window first waits for the turns already on their way. Sessions that
//! start a turn after the window opened see the change and renew their statements
//! first; one that started before, the window sees here.
//!
//! The pairing is the classic store-then-load on both sides: a session publishes
//! the change count it starts a turn at, then checks whether its statements are
//! stale; the window bumps the count, then reads every session's published count.
//! One of the two sees the other.

use crate::latency::{now_micros, Latency};
use crate::stats::Traffic;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Published while nothing of the session is at the server.
const IDLE: u64 = u64::MAX;

#[derive(Debug)]
pub struct Activity {
    /// The change count the oldest turn still at the server started at; IDLE
    /// when none is.
    since: AtomicU64,
    /// ReadyForQuery messages the server owes: Syncs, Queries and FunctionCalls
    /// forwarded and not yet answered. Both directions of a session run in one
    /// task, so this is never raced; atomic only so that the struct can be shared.
    expected: AtomicU32,
    /// Messages of a batch went to the server, its Sync not yet.
    open: AtomicBool,
    /// When the turn being timed was sent (µs, see [`now_micros`]); 0: none is.
    began: AtomicU64,
    /// Where turns are timed to, while the count (of rollouts) is not zero.
    timing: Option<(Arc<AtomicUsize>, Arc<Latency>)>,
    /// The database's turn histogram, timed always (SHOW STATS, /metrics).
    traffic: Option<Arc<Traffic>>,
    /// The tables (oids) of the statements the session holds that pgshift
    /// prepared with a rollout's new column in them (0: one is being
    /// rewritten, its table not known yet): a lock window that renames or drops
    /// that column does not begin while one of its turns from before is at the
    /// server.
    rewritten: Mutex<Vec<u32>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            since: AtomicU64::new(IDLE),
            expected: AtomicU32::new(0),
            open: AtomicBool::new(false),
            began: AtomicU64::new(0),
            timing: None,
            traffic: None,
            rewritten: Mutex::new(Vec::new()),
        }
    }
}

impl Activity {
    /// An activity that times its turns into `latency` while `live` is not zero.
    pub fn timed(live: Arc<AtomicUsize>, latency: Arc<Latency>) -> Self {
        Activity {
            timing: Some((live, latency)),
            ..Activity::default()
        }
    }

    /// Also times every turn into `traffic`'s histogram.
    pub fn counted(mut self, traffic: Arc<Traffic>) -> Self {
        self.traffic = Some(traffic);
        self
    }

    /// True when rollouts are live (their governor reads the process histogram).
    fn rollouts_live(&self) -> bool {
        self.timing
            .as_ref()
            .is_some_and(|(live, _)| live.load(Ordering::Relaxed) > 0)
    }

    /// About to forward the first message of a turn: publish the count it starts
    /// at (unless an older turn is still out). Comes before the stale check.
    pub fn publish(&self, changes: &AtomicU64) {
        if self.since.load(Ordering::Relaxed) == IDLE {
            self.since
                .store(changes.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    fn busy(&self) -> bool {
        self.expected.load(Ordering::Relaxed) > 0 || self.open.load(Ordering::Relaxed)
    }

    /// The first message of a turn went to the server.
    pub fn sent(&self) {
        if !self.busy() && (self.traffic.is_some() || self.rollouts_live()) {
            self.began.store(now_micros(), Ordering::Relaxed);
        }
        self.open.store(true, Ordering::Relaxed);
    }

    /// A Sync, Query or FunctionCall went to the server: it owes a ReadyForQuery.
    pub fn ended(&self) {
        self.expected.fetch_add(1, Ordering::Relaxed);
        self.open.store(false, Ordering::Relaxed);
    }

    /// The server ignored a Sync it was sent (one sent early, during COPY FROM).
    pub fn ignored(&self) {
        let owed = self.expected.load(Ordering::Relaxed).saturating_sub(1);
        self.expected.store(owed, Ordering::Relaxed);
    }

    /// A ReadyForQuery came back.
    pub fn answered(&self) {
        let owed = self.expected.load(Ordering::Relaxed).saturating_sub(1);
        self.expected.store(owed, Ordering::Relaxed);
        let busy = self.busy();
        let began = self.began.load(Ordering::Relaxed);
        if began != 0 {
            // A pipelined turn is timed from the answer before it.
            let now = now_micros();
            let took = now.saturating_sub(began);
            if let Some(traffic) = &self.traffic {
                traffic.latency.record(took);
            }
            if let Some((_, latency)) = self.timing.as_ref().filter(|_| self.rollouts_live()) {
                latency.record(took);
            }
            self.began
                .store(if busy { now } else { 0 }, Ordering::Relaxed);
        }
        if !busy {
            self.since.store(IDLE, Ordering::SeqCst);
        }
    }

    /// Nothing published is out any more unless a turn is (a held message was
    /// answered by pgshift, or never sent).
    pub fn settle(&self) {
        if !self.busy() {
            self.since.store(IDLE, Ordering::SeqCst);
        }
    }

    /// The server answered everything the client sent (pgshift waited for it).
    pub fn quiet(&self) {
        self.expected.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Relaxed);
        self.began.store(0, Ordering::Relaxed);
        self.since.store(IDLE, Ordering::SeqCst);
    }

    /// True while a turn that started before change `count` may be at the server.
    pub fn before(&self, count: u64) -> bool {
        self.since.load(Ordering::SeqCst) < count
    }

    /// The tables of the statements the session holds that pgshift rewrote
    /// (see `rewritten`).
    pub fn set_rewritten(&self, tables: Vec<u32>) {
        *self.rewritten.lock().unwrap_or_else(|e| e.into_inner()) = tables;
    }

    /// [`Activity::before`], for a session that holds statements pgshift
    /// rewrote on table `oid` (or is rewriting one).
    pub fn rewritten_before(&self, count: u64, oid: u32) -> bool {
        self.before(count)
            && self
                .rewritten
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|t| *t == oid || *t == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch: its first message, then its Sync.
    fn batch(a: &Activity, changes: &AtomicU64) {
        a.publish(changes);
        a.sent();
        a.ended();
    }

    #[test]
    fn a_turn_is_out_from_its_first_message_to_its_ready_for_query() {
        let changes = AtomicU64::new(5);
        let a = Activity::default();
        assert!(!a.before(6));
        batch(&a, &changes);
        assert!(a.before(6));
        assert!(!a.before(5));
        // A pipelined second turn keeps the older count.
        changes.store(6, Ordering::SeqCst);
        batch(&a, &changes);
        a.answered();
        assert!(a.before(6), "the second turn is still out");
        a.answered();
        assert!(!a.before(u64::MAX - 1));
        // A Sync with nothing before it is owed an answer too.
        a.ended();
        a.publish(&changes);
        a.sent();
        a.answered();
        assert!(a.before(7), "the batch after the bare Sync is still out");
        a.ended();
        a.answered();
        assert!(!a.before(7));
        // An answer nobody is owed (pgshift lost count) does not underflow.
        a.answered();
        batch(&a, &changes);
        assert!(a.before(7));
    }

    #[test]
    fn a_held_turn_that_pgshift_answered_is_not_out() {
        let changes = AtomicU64::new(1);
        let a = Activity::default();
        a.publish(&changes);
        a.settle();
        assert!(!a.before(2));
        batch(&a, &changes);
        a.settle();
        assert!(a.before(2));
        a.quiet();
        assert!(!a.before(2));
        // A batch without its Sync yet (a Flush) is out.
        a.publish(&changes);
        a.sent();
        a.settle();
        assert!(a.before(2));
    }

    #[test]
    fn turns_are_timed_only_while_a_rollout_is_live() {
        let live = Arc::new(AtomicUsize::new(0));
        let latency = Arc::new(Latency::default());
        let changes = AtomicU64::new(1);
        let a = Activity::timed(live.clone(), latency.clone());
        batch(&a, &changes);
        a.answered();
        assert_eq!(latency.counts().total(), 0);
        live.store(1, Ordering::Relaxed);
        batch(&a, &changes);
        batch(&a, &changes);
        a.answered();
        a.answered();
        assert_eq!(latency.counts().total(), 2, "two pipelined turns");
        a.ended();
        a.answered();
        assert_eq!(latency.counts().total(), 2, "a Sync alone is not timed");
    }
}
