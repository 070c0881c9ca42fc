//! Process-wide counters. Sessions keep plain counters on the hot path and fold
//! them in here once per wake-up; the admin console and /metrics read snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_from_servers: AtomicU64,
    pub queries: AtomicU64,
    pub ddl_candidates: AtomicU64,
    pub server_errors: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub upstream_connect_errors: AtomicU64,
    pub cancel_requests: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub connections_total: u64,
    pub connections_active: u64,
    pub connections_rejected: u64,
    pub bytes_from_clients: u64,
    pub bytes_from_servers: u64,
    pub queries: u64,
    pub ddl_candidates: u64,
    pub server_errors: u64,
    pub protocol_errors: u64,
    pub upstream_connect_errors: u64,
    pub cancel_requests: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_rejected: self.connections_rejected.load(Relaxed),
            bytes_from_clients: self.bytes_from_clients.load(Relaxed),
            bytes_from_servers: self.bytes_from_servers.load(Relaxed),
            queries: self.queries.load(Relaxed),
            ddl_candidates: self.ddl_candidates.load(Relaxed),
            server_errors: self.server_errors.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            upstream_connect_errors: self.upstream_connect_errors.load(Relaxed),
            cancel_requests: self.cancel_requests.load(Relaxed),
        }
    }
}

/// Counts a client for as long as it is held: from its startup packet on (a
/// socket that sent nothing is not a client yet).
pub struct ActiveGuard<'a>(&'a Stats);

impl<'a> ActiveGuard<'a> {
    pub fn new(stats: &'a Stats) -> Self {
        stats.connections_active.fetch_add(1, Relaxed);
        ActiveGuard(stats)
    }

    /// Active clients including this one.
    pub fn active(&self) -> u64 {
        self.0.connections_active.load(Relaxed)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Relaxed);
    }
}
