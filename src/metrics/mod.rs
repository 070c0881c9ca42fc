//! `/metrics` (Prometheus text format) and `/healthz` on `metrics.listen`
//! (default 127.0.0.1:9187). A scrape copies the live counters (per-database
//! atomics the sessions already keep, the engine's counters, the rollouts read
//! through the service connections) into a [`Scrape`], which the
//! `prometheus-client` crate encodes: nothing on the hot path changes for it.

mod http;

pub use http::Listener;

use crate::context::Shared;
use crate::latency::Counts;
use crate::stats::{Snapshot, TrafficSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Turn duration buckets, in seconds (the fine histogram is folded into these).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// One rollout as /metrics shows it.
#[derive(Debug, Clone, Default)]
pub struct RolloutGauge {
    pub database: String,
    pub id: String,
    pub table: String,
    pub column: String,
    pub phase: String,
    pub rows_done: i64,
    pub rows_total: Option<i64>,
    pub rows_per_second: Option<f64>,
}

/// Everything one scrape shows, copied at once.
#[derive(Debug, Default)]
pub struct Scrape {
    pub totals: Snapshot,
    pub databases: Vec<(String, TrafficSnapshot)>,
    pub ddl: Vec<(String, &'static str, u64)>,
    pub lock_timeouts: u64,
    pub lock_giveups: u64,
    pub journal_dropped: u64,
    pub rollouts: Vec<RolloutGauge>,
    /// Databases whose rollouts could not be read this time.
    pub unread: u64,
    /// The application's turns while a rollout of this process ran.
    pub rollout_latency: Counts,
}

/// How long the rollouts read for one scrape serve the next ones.
const GAUGES_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The rollouts of the last scrape: scrapes need no login, and each read asks
/// every database, so at most one read a second, and scrapes that arrive while
/// one runs wait for it.
#[derive(Debug, Default)]
pub struct GaugeCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, Vec<RolloutGauge>, u64)>>,
}

impl GaugeCache {
    async fn get(&self, shared: &Shared) -> (Vec<RolloutGauge>, u64) {
        let mut last = self.last.lock().await;
        if let Some((at, gauges, unread)) = last.as_ref() {
            if at.elapsed() < GAUGES_FRESH {
                return (gauges.clone(), *unread);
            }
        }
        let (gauges, unread) = crate::admin::rollout_gauges(shared).await;
        *last = Some((std::time::Instant::now(), gauges.clone(), unread));
        (gauges, unread)
    }
}

impl Scrape {
    pub async fn gather(shared: &Shared, cache: &GaugeCache) -> Scrape {
        use std::sync::atomic::Ordering::Relaxed;
        let (rollouts, unread) = cache.get(shared).await;
        Scrape {
            totals: shared.stats.snapshot(),
            databases: shared.stats.by_database(),
            ddl: crate::engine::counters::outcomes(),
            lock_timeouts: crate::engine::counters::LOCK_TIMEOUTS.load(Relaxed),
            lock_giveups: crate::engine::counters::LOCK_GIVEUPS.load(Relaxed),
            journal_dropped: shared.engine.journal.dropped.load(Relaxed),
            rollouts,
            unread,
            rollout_latency: shared.engine.rollouts.latency(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(self) -> String {
        let mut registry = Registry::with_prefix("pgshift");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// The turns of `counts` folded into [`BUCKETS`]: (upper bound, count) pairs,
/// each fine bucket counted in the first coarse one its upper end fits.
fn folded(counts: &Counts) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out: Vec<(f64, u64)> = BUCKETS.iter().map(|b| (*b, 0)).collect();
    out.push((f64::INFINITY, 0));
    for (upper, n) in counts.buckets() {
        if n == 0 {
            continue;
        }
        let seconds = upper as f64 / 1e6;
        let slot = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        out[slot].1 += n;
    }
    (counts.sum_micros() as f64 / 1e6, counts.total(), out)
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let t = &self.totals;
        let none = Labels::new;
        counter(
            &mut e,
            "client_connections",
            "Client connections accepted.",
            &[(none(), t.connections_total)],
        )?;
        gauge(
            &mut e,
            "client_connections_active",
            "Client connections open now.",
            &[(none(), t.connections_active as f64)],
        )?;
        counter(
            &mut e,
            "client_connections_rejected",
            "Client connections refused (max_client_conn).",
            &[(none(), t.connections_rejected)],
        )?;
        counter(
            &mut e,
            "protocol_errors",
            "Sessions ended for a protocol violation.",
            &[(none(), t.protocol_errors)],
        )?;
        counter(
            &mut e,
            "upstream_connect_errors",
            "Failed connections to the upstream server.",
            &[(none(), t.upstream_connect_errors)],
        )?;
        counter(
            &mut e,
            "cancel_requests",
            "CancelRequests received.",
            &[(none(), t.cancel_requests)],
        )?;

        let per_db = |f: fn(&TrafficSnapshot) -> u64| -> Vec<(Labels, u64)> {
            self.databases
                .iter()
                .map(|(db, s)| (vec![("database", db.as_str())], f(s)))
                .collect()
        };
        counter(
            &mut e,
            "queries",
            "Queries from clients (a Query, or an Execute).",
            &per_db(|s| s.queries),
        )?;
        counter(
            &mut e,
            "received_bytes",
            "Bytes received from clients.",
            &per_db(|s| s.bytes_from_clients),
        )?;
        counter(
            &mut e,
            "sent_bytes",
            "Bytes sent to clients.",
            &per_db(|s| s.bytes_from_servers),
        )?;
        counter(
            &mut e,
            "server_errors",
            "ErrorResponses from the server to clients.",
            &per_db(|s| s.server_errors),
        )?;
        let by_class: Vec<(Labels, u64)> = self
            .databases
            .iter()
            .flat_map(|(db, s)| {
                s.errors_by_class
                    .iter()
                    .map(move |(class, n)| (vec![("database", db.as_str()), ("class", *class)], *n))
            })
            .collect();
        counter(
            &mut e,
            "server_errors_by_class",
            "ErrorResponses from the server by SQLSTATE class (its first two characters; 'other' for the rest).",
            &by_class,
        )?;
        counter(
            &mut e,
            "ddl_candidates",
            "Statements the cheap check held as possible DDL.",
            &per_db(|s| s.ddl_candidates),
        )?;
        {
            let mut metric = e.encode_descriptor(
                "turn_duration_seconds",
                "Client turns, first message to the ReadyForQuery that answers it.",
                None,
                MetricType::Histogram,
            )?;
            for (db, s) in &self.databases {
                let (sum, count, buckets) = folded(&s.latency);
                let labels = vec![("database", db.as_str())];
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum, count, &buckets, None,
                    )?;
            }
        }

        {
            let mut metric = e.encode_descriptor(
                "rollout_turn_duration_seconds",
                "Client turns while a rollout runs (its mirror and backfill are what they pay for, next to turn_duration_seconds).",
                None,
                MetricType::Histogram,
            )?;
            let (sum, count, buckets) = folded(&self.rollout_latency);
            let no_labels: Labels = Vec::new();
            metric
                .encode_family(&no_labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }

        let ddl: Vec<(Labels, u64)> = self
            .ddl
            .iter()
            .map(|(rule, outcome, n)| (vec![("rule", rule.as_str()), ("outcome", *outcome)], *n))
            .collect();
        counter(
            &mut e,
            "ddl_statements",
            "DDL statements by rule and outcome (rewritten, warned, rejected, deferred, ...).",
            &ddl,
        )?;
        counter(&mut e, "lock_timeouts", "Lock attempts of pgshift's steps that hit lock_timeout (or a deadlock) and were retried or given up.", &[(none(), self.lock_timeouts)])?;
        counter(
            &mut e,
            "lock_giveups",
            "Steps whose lock attempts ran out (55P03 to the client).",
            &[(none(), self.lock_giveups)],
        )?;
        counter(
            &mut e,
            "journal_dropped",
            "DDL journal entries dropped (their database's queue was full).",
            &[(none(), self.journal_dropped)],
        )?;

        let labels = |r: &'_ RolloutGauge| -> Vec<(&'static str, String)> {
            vec![
                ("database", r.database.clone()),
                ("id", r.id.clone()),
                ("table", r.table.clone()),
                ("column", r.column.clone()),
            ]
        };
        {
            let mut metric = e.encode_descriptor(
                "rollout_phase",
                "1 for each rollout's current phase.",
                None,
                MetricType::Gauge,
            )?;
            for r in &self.rollouts {
                let mut l = labels(r);
                l.push(("phase", r.phase.clone()));
                ConstGauge::new(1i64).encode(metric.encode_family(&l)?)?;
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "rollout_rows_done",
                "Rows a rollout's backfill has done.",
                None,
                MetricType::Gauge,
            )?;
            for r in &self.rollouts {
                ConstGauge::new(r.rows_done).encode(metric.encode_family(&labels(r))?)?;
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "rollout_rows_total",
                "Rows a rollout's backfill expects (estimate).",
                None,
                MetricType::Gauge,
            )?;
            for r in self.rollouts.iter().filter(|r| r.rows_total.is_some()) {
                ConstGauge::new(r.rows_total.unwrap_or(0))
                    .encode(metric.encode_family(&labels(r))?)?;
            }
        }
        {
            let mut metric = e.encode_descriptor(
                "rollout_backfill_rows_per_second",
                "A rollout's backfill rate since it began.",
                None,
                MetricType::Gauge,
            )?;
            for r in self.rollouts.iter().filter(|r| r.rows_per_second.is_some()) {
                ConstGauge::new(r.rows_per_second.unwrap_or(0.0))
                    .encode(metric.encode_family(&labels(r))?)?;
            }
        }
        gauge(
            &mut e,
            "rollout_databases_unread",
            "Databases whose rollouts this scrape could not read.",
            &[(none(), self.unread as f64)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_buckets_fold_into_the_coarse_ones() {
        let counts = Counts::of(&[(50, 3), (300, 2), (20_000_000, 1)]);
        let (sum, count, buckets) = folded(&counts);
        assert_eq!(count, 6);
        assert_eq!(buckets[0], (0.0001, 3));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 6);
        // 300 µs lies in a fine bucket that ends by 0.5 ms.
        assert_eq!(buckets[2], (0.0005, 2));
        assert_eq!(buckets.last().unwrap().1, 1);
        assert!((sum - 20.00075).abs() / 20.00075 < 0.07, "{sum}");
    }
}
