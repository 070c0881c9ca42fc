//! Process-wide counters. Sessions keep plain counters on the hot path and fold
//! them in once per wake-up into their database's [`Traffic`] (one set of
//! atomics per database, so the hot path does no more than with one set); the
//! process totals are their sum. The admin console and /metrics read snapshots.

use crate::latency::{Counts, Latency};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Databases counted apart at most; later ones share [`OTHER`].
pub const DATABASES_MAX: usize = 1024;
/// Where databases past [`DATABASES_MAX`] are counted.
pub const OTHER: &str = "(other)";

/// One database's traffic through this proxy.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_from_clients: AtomicU64,
    pub bytes_from_servers: AtomicU64,
    pub queries: AtomicU64,
    pub ddl_candidates: AtomicU64,
    pub server_errors: AtomicU64,
    /// The server's errors by SQLSTATE class (`crate::wire::sqlstate` slots).
    pub errors_by_class: ErrorClasses,
    /// Turn durations: first message to the ReadyForQuery that answers it.
    pub latency: Latency,
}

/// One counter per SQLSTATE class slot.
#[derive(Debug)]
pub struct ErrorClasses(Vec<AtomicU64>);

impl Default for ErrorClasses {
    fn default() -> Self {
        ErrorClasses(
            (0..crate::wire::sqlstate::SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }
}

impl ErrorClasses {
    pub fn add(&self, slot: usize, n: u32) {
        if let Some(c) = self.0.get(slot) {
            c.fetch_add(u64::from(n), Relaxed);
        }
    }

    /// (class, count) of the classes with errors.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| (crate::wire::sqlstate::label(i), c.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A point-in-time copy of one database's [`Traffic`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrafficSnapshot {
    pub bytes_from_clients: u64,
    pub bytes_from_servers: u64,
    pub queries: u64,
    pub ddl_candidates: u64,
    pub server_errors: u64,
    pub errors_by_class: Vec<(&'static str, u64)>,
    pub latency: Counts,
}

impl Traffic {
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            bytes_from_clients: self.bytes_from_clients.load(Relaxed),
            bytes_from_servers: self.bytes_from_servers.load(Relaxed),
            queries: self.queries.load(Relaxed),
            ddl_candidates: self.ddl_candidates.load(Relaxed),
            server_errors: self.server_errors.load(Relaxed),
            errors_by_class: self.errors_by_class.snapshot(),
            latency: self.latency.counts(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_rejected: AtomicU64,
    traffic: DashMap<String, Arc<Traffic>>,
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

    /// The counters of `database`'s traffic (a session takes them once).
    pub fn traffic(&self, database: &str) -> Arc<Traffic> {
        if let Some(t) = self.traffic.get(database) {
            return t.clone();
        }
        let key = match self.traffic.len() < DATABASES_MAX {
            true => database,
            false => OTHER,
        };
        self.traffic.entry(key.to_string()).or_default().clone()
    }

    /// Each database's traffic, by name.
    pub fn by_database(&self) -> Vec<(String, TrafficSnapshot)> {
        let mut out: Vec<(String, TrafficSnapshot)> = self
            .traffic
            .iter()
            .map(|e| (e.key().clone(), e.value().snapshot()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut total = TrafficSnapshot::default();
        for (_, t) in self.by_database() {
            total.bytes_from_clients += t.bytes_from_clients;
            total.bytes_from_servers += t.bytes_from_servers;
            total.queries += t.queries;
            total.ddl_candidates += t.ddl_candidates;
            total.server_errors += t.server_errors;
        }
        Snapshot {
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_rejected: self.connections_rejected.load(Relaxed),
            bytes_from_clients: total.bytes_from_clients,
            bytes_from_servers: total.bytes_from_servers,
            queries: total.queries,
            ddl_candidates: total.ddl_candidates,
            server_errors: total.server_errors,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_the_databases_and_their_number_is_capped() {
        let stats = Stats::default();
        stats.traffic("a").queries.fetch_add(2, Relaxed);
        stats.traffic("b").queries.fetch_add(3, Relaxed);
        stats.traffic("a").bytes_from_clients.fetch_add(10, Relaxed);
        assert_eq!(stats.snapshot().queries, 5);
        assert_eq!(stats.snapshot().bytes_from_clients, 10);
        assert_eq!(stats.by_database()[0].1.queries, 2);
        for i in 0..2 * DATABASES_MAX {
            stats.traffic(&format!("db{i}"));
        }
        assert!(stats.by_database().len() <= DATABASES_MAX + 1);
        assert!(Arc::ptr_eq(&stats.traffic("late"), &stats.traffic(OTHER)));
    }
}
