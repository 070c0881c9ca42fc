//! `[rollout]`: online column rollouts (an `ALTER COLUMN … TYPE` that would
//! rewrite the table becomes a new column, mirrored, backfilled, verified and
//! swapped in).

use super::ConfigError;
use serde::Deserialize;

/// Whether a step happens by itself or waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    Manual,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// Turn a rewriting `ALTER COLUMN … TYPE` into a rollout; off: it is refused
    /// (0A000) as before.
    pub enabled: bool,
    /// manual | auto: swap the new column in once it is verified, or wait for an
    /// operator (like gh-ost's postponed cut-over).
    pub cutover: When,
    /// manual | auto: drop the old column after a cutover, or wait for an operator
    /// (until then a rollback loses nothing).
    pub finish: When,
    /// Most rows per backfill or verify batch (one short transaction each).
    pub batch_rows: u64,
    /// Fewest rows per batch when batches shrink.
    pub min_batch_rows: u64,
    /// Batch duration the backfill aims at: batches grow and shrink toward it.
    pub batch_target_ms: u64,
    /// Backfill rate limit in rows per second; 0 = none.
    pub rows_per_second: u64,
    /// Pause between batches.
    pub pause_ms: u64,
    /// The backfill slows down while the application's p99 turn latency, as this
    /// proxy sees it, is over this many times its value before the backfill
    /// began (and at least 0.5 ms over it); 0 = off.
    pub latency_factor: f64,
    /// The backfill waits while a replica (any WAL sender the database lists
    /// in pg_stat_replication) has more than this many bytes of WAL still to
    /// replay; 0 = off.
    pub max_replica_lag_bytes: u64,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            enabled: true,
            cutover: When::Manual,
            finish: When::Manual,
            batch_rows: 5_000,
            min_batch_rows: 100,
            batch_target_ms: 50,
            rows_per_second: 0,
            pause_ms: 0,
            latency_factor: 2.0,
            max_replica_lag_bytes: 32 << 20,
        }
    }
}

impl Rollout {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        if self.min_batch_rows == 0 || self.min_batch_rows > self.batch_rows {
            return Err(invalid(
                "rollout.min_batch_rows",
                "expected 1 to rollout.batch_rows",
            ));
        }
        if self.batch_rows > 1_000_000 {
            return Err(invalid("rollout.batch_rows", "expected at most 1000000"));
        }
        if !(0.0..=1000.0).contains(&self.latency_factor)
            || (self.latency_factor > 0.0 && self.latency_factor < 1.0)
        {
            return Err(invalid(
                "rollout.latency_factor",
                "expected 0 (off) or 1 to 1000",
            ));
        }
        if self.batch_target_ms == 0 {
            return Err(invalid("rollout.batch_target_ms", "must be at least 1"));
        }
        Ok(())
    }
}
