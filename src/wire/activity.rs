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

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Published while nothing of the session is at the server.
const IDLE: u64 = u64::MAX;

#[derive(Debug)]
pub struct Activity {
    /// The change count the oldest turn still at the server started at; IDLE
    /// when none is.
    since: AtomicU64,
    /// Turns forwarded (by their first message) and not yet answered by a
    /// ReadyForQuery. Both directions of a session run in one task, so this is
    /// never raced; atomic only so that the struct can be shared.
    outstanding: AtomicU32,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            since: AtomicU64::new(IDLE),
            outstanding: AtomicU32::new(0),
        }
    }
}

impl Activity {
    /// About to forward the first message of a turn: publish the count it starts
    /// at (unless an older turn is still out). Comes before the stale check.
    pub fn publish(&self, changes: &AtomicU64) {
        if self.since.load(Ordering::Relaxed) == IDLE {
            self.since
                .store(changes.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    /// The first message of a turn went to the server.
    pub fn sent(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    /// A ReadyForQuery came back.
    pub fn answered(&self) {
        let left = self.outstanding.load(Ordering::Relaxed).saturating_sub(1);
        self.outstanding.store(left, Ordering::Relaxed);
        if left == 0 {
            self.since.store(IDLE, Ordering::SeqCst);
        }
    }

    /// Nothing published is out any more unless a turn is (a held message was
    /// answered by pgshift, or never sent).
    pub fn settle(&self) {
        if self.outstanding.load(Ordering::Relaxed) == 0 {
            self.since.store(IDLE, Ordering::SeqCst);
        }
    }

    /// The server answered everything the client sent (pgshift waited for it).
    pub fn quiet(&self) {
        self.outstanding.store(0, Ordering::Relaxed);
        self.since.store(IDLE, Ordering::SeqCst);
    }

    /// True while a turn that started before change `count` may be at the server.
    pub fn before(&self, count: u64) -> bool {
        self.since.load(Ordering::SeqCst) < count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_is_out_from_its_first_message_to_its_ready_for_query() {
        let changes = AtomicU64::new(5);
        let a = Activity::default();
        assert!(!a.before(6));
        a.publish(&changes);
        a.sent();
        assert!(a.before(6));
        assert!(!a.before(5));
        // A pipelined second turn keeps the older count.
        changes.store(6, Ordering::SeqCst);
        a.publish(&changes);
        a.sent();
        a.answered();
        assert!(a.before(6), "the second turn is still out");
        a.answered();
        assert!(!a.before(u64::MAX - 1));
        // A Sync with nothing before it is answered too: no underflow.
        a.answered();
        a.publish(&changes);
        a.sent();
        assert!(a.before(7));
    }

    #[test]
    fn a_held_turn_that_pgshift_answered_is_not_out() {
        let changes = AtomicU64::new(1);
        let a = Activity::default();
        a.publish(&changes);
        a.settle();
        assert!(!a.before(2));
        a.publish(&changes);
        a.sent();
        a.settle();
        assert!(a.before(2));
        a.quiet();
        assert!(!a.before(2));
    }
}
