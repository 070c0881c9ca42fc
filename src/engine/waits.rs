//! What pgshift's own lock-taking work waits for right now: a DDL step retrying
//! its lock, or waiting outside the lock queue for a long transaction; a
//! rollout's lock window doing the same. The console's SHOW LOCKS and SHOW
//! BLOCKERS read it. Entries live as long as their [`Waiting`] guard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One wait, as the console shows it.
#[derive(Debug, Clone)]
pub struct Wait {
    /// `ddl` (a client's statement, or deferred work) or `rollout`.
    pub work: &'static str,
    pub table: String,
    pub lock: String,
    pub since: Instant,
    /// Lock attempts that failed so far.
    pub attempts: u32,
    /// The session that keeps the lock from being tried, when pgshift knows it:
    /// its pid and a description.
    pub blocker: Option<(String, String)>,
}

impl Wait {
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
    }
}

static WAITS: Mutex<BTreeMap<u64, Wait>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

fn with<R>(f: impl FnOnce(&mut BTreeMap<u64, Wait>) -> R) -> R {
    f(&mut WAITS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Keeps its wait listed until dropped.
#[derive(Debug)]
pub struct Waiting(u64);

impl Waiting {
    pub fn new(work: &'static str, table: &str, lock: impl Into<String>) -> Waiting {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let wait = Wait {
            work,
            table: table.to_string(),
            lock: lock.into(),
            since: Instant::now(),
            attempts: 0,
            blocker: None,
        };
        with(|w| w.insert(id, wait));
        Waiting(id)
    }

    /// Another attempt failed.
    pub fn failed_attempt(&self) {
        with(|w| {
            if let Some(wait) = w.get_mut(&self.0) {
                wait.attempts += 1;
            }
        });
    }

    /// Who keeps the attempts from being made (None: nobody now).
    pub fn blocked_by(&self, blocker: Option<(String, String)>) {
        with(|w| {
            if let Some(wait) = w.get_mut(&self.0) {
                wait.blocker = blocker;
            }
        });
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        with(|w| w.remove(&self.0));
    }
}

/// Every wait now, the oldest first.
pub fn snapshot() -> Vec<Wait> {
    let mut out: Vec<Wait> = with(|w| w.values().cloned().collect());
    out.sort_by_key(|w| w.since);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_listed_while_its_guard_lives() {
        let w = Waiting::new("ddl", "waits_test_t", "SHARE");
        w.failed_attempt();
        w.blocked_by(Some(("42".into(), "pid 42 (alice)".into())));
        let found: Vec<Wait> = snapshot()
            .into_iter()
            .filter(|x| x.table == "waits_test_t")
            .collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].attempts, 1);
        assert_eq!(found[0].blocker.as_ref().unwrap().0, "42");
        drop(w);
        assert!(snapshot().iter().all(|x| x.table != "waits_test_t"));
    }
}
