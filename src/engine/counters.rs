//! The DDL engine's counters for /metrics: lock attempts that timed out, steps
//! that gave up, and journaled outcomes per rule. Process-wide, like the engine's
//! work itself; DDL is rare, so a lock around the per-rule map costs nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Lock attempts that failed with lock_timeout or a deadlock, and were retried
/// or given up.
pub static LOCK_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
/// Steps whose attempts ran out (the client got 55P03).
pub static LOCK_GIVEUPS: AtomicU64 = AtomicU64::new(0);

static OUTCOMES: Mutex<BTreeMap<(String, &'static str), u64>> = Mutex::new(BTreeMap::new());

/// Rules counted apart at most (rule ids come from pgshift's own registry).
const RULES_MAX: usize = 256;

/// Counts one statement of `rule` ending with `outcome`.
pub fn outcome(rule: &str, outcome: &'static str) {
    let mut map = OUTCOMES.lock().unwrap_or_else(|e| e.into_inner());
    let key = (rule.to_string(), outcome);
    if map.len() >= RULES_MAX && !map.contains_key(&key) {
        return;
    }
    *map.entry(key).or_default() += 1;
}

/// Every (rule, outcome) with its count.
pub fn outcomes() -> Vec<(String, &'static str, u64)> {
    let map = OUTCOMES.lock().unwrap_or_else(|e| e.into_inner());
    map.iter().map(|((r, o), n)| (r.clone(), *o, *n)).collect()
}

pub fn lock_timeout() {
    LOCK_TIMEOUTS.fetch_add(1, Relaxed);
}

pub fn gave_up() {
    LOCK_GIVEUPS.fetch_add(1, Relaxed);
}
