//! `[ddl]`: the DDL safety engine's knobs and per-rule policies.

use super::ConfigError;
use crate::sql::analysis::ParseLimits;
use crate::sql::plan::Policy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to do with a statement whose safe form needs to run outside the client's
/// transaction block (CONCURRENTLY, VALIDATE in its own transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InTransaction {
    /// Run the part that may run in the transaction now; journal the rest and run
    /// it after the client's COMMIT (dropped on ROLLBACK).
    Defer,
    /// Refuse with an error and a HINT.
    Reject,
}

/// What to do with a possible DDL statement pgshift did not parse (too large, too
/// deeply nested, or not parsed in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnparsedPolicy {
    /// Send it to the server unchecked, with a warning in the log.
    Forward,
    /// Refuse it with 0A000 and a HINT naming `ddl.unparsed`.
    Reject,
}

/// What pgshift does about a session idle in a transaction that holds a lock a
/// step needs (see `ddl.blockers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blockers {
    /// Wait outside the lock queue until it ends its transaction (up to the retry
    /// deadline).
    Wait,
    /// End the session (pg_terminate_backend) once it has been idle in its
    /// transaction for `ddl.blockers_idle_ms`; its transaction rolls back.
    EndIdle,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ddl {
    /// Intercept DDL at all; off = pure passthrough.
    pub enabled: bool,
    /// lock_timeout for each attempt of a step that takes a lock blocking
    /// application queries: the longest an attempt can stall them.
    pub lock_timeout_ms: u64,
    /// Attempts per step before the client gets 55P03.
    pub max_attempts: u32,
    /// First pause between attempts; doubles each time, with jitter.
    pub retry_initial_ms: u64,
    /// Longest pause between attempts (inside a client transaction, at most 1 s:
    /// locks taken earlier in it stay held while pgshift sleeps).
    pub retry_max_ms: u64,
    /// Total time a step may spend retrying.
    pub retry_deadline_ms: u64,
    /// statement_timeout for long steps that do not block traffic
    /// (CONCURRENTLY, VALIDATE, one backfill batch); 0 = none.
    pub long_step_timeout_ms: u64,
    /// defer | reject: see [`InTransaction`].
    pub in_transaction: InTransaction,
    /// Send a NOTICE saying what pgshift did.
    pub notices: bool,
    /// Longest any application query may wait behind one of pgshift's lock
    /// attempts: each attempt's lock_timeout (at most `lock_timeout_ms`), and
    /// pgshift makes none while a long transaction holds a conflicting lock.
    /// 0 = attempt with `lock_timeout_ms` whoever holds the table.
    pub stall_budget_ms: u64,
    /// A table (with its indexes and TOAST, partitions summed) at most this big is
    /// small: holding any lock on it for a whole statement is brief, so the
    /// statement runs as written (under lock_timeout with retries).
    pub small_table_bytes: u64,
    /// Cancel an autovacuum (not one for wraparound) that blocks a step, as
    /// Postgres does for a lock request it blocks, instead of waiting for it.
    pub cancel_autovacuum: bool,
    /// wait | end_idle: see [`Blockers`]. Off (wait) by default: ending a session
    /// rolls back its work and its client sees a closed connection.
    pub blockers: Blockers,
    /// How long a blocking session must have been idle in its transaction before
    /// `blockers = "end_idle"` ends it.
    pub blockers_idle_ms: u64,
    /// Honour `SET pgshift.bypass = on` in a session (emergencies, admins).
    pub allow_bypass: bool,
    /// Most rows per backfill batch (one transaction each); with a stall budget,
    /// batches shrink so that one holds its row locks for at most half of it.
    pub backfill_batch_rows: u64,
    /// Pause between backfill batches.
    pub backfill_pause_ms: u64,
    /// Longest statement text pgshift parses; longer candidates are unparsed.
    pub max_parse_bytes: usize,
    /// Longest a session waits for its statement's parse; then it is unparsed.
    pub parse_timeout_ms: u64,
    /// forward | reject: see [`UnparsedPolicy`].
    pub unparsed: UnparsedPolicy,
    /// Parse cache of each session thread, in bytes.
    pub parse_cache_bytes: usize,
    /// Policy per rule id: rewrite | warn | reject | allow.
    pub rules: BTreeMap<String, Policy>,
    /// Per-database policy overrides: `[ddl.database.NAME]` rule = policy.
    pub database: BTreeMap<String, BTreeMap<String, Policy>>,
    /// Per-user overrides, which beat per-database ones: `[ddl.user.NAME]`.
    pub user: BTreeMap<String, BTreeMap<String, Policy>>,
}

impl Default for Ddl {
    fn default() -> Self {
        Ddl {
            enabled: true,
            lock_timeout_ms: 500,
            max_attempts: 20,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            retry_deadline_ms: 60_000,
            long_step_timeout_ms: 3_600_000,
            in_transaction: InTransaction::Defer,
            notices: true,
            stall_budget_ms: 100,
            small_table_bytes: 1 << 20,
            cancel_autovacuum: true,
            blockers: Blockers::Wait,
            blockers_idle_ms: 60_000,
            allow_bypass: false,
            backfill_batch_rows: 5_000,
            backfill_pause_ms: 10,
            max_parse_bytes: 1 << 20,
            parse_timeout_ms: 5_000,
            unparsed: UnparsedPolicy::Forward,
            parse_cache_bytes: 16 << 20,
            rules: BTreeMap::new(),
            database: BTreeMap::new(),
            user: BTreeMap::new(),
        }
    }
}

impl Ddl {
    /// The policy for `rule` in a session of `user` on `database`, if config sets one.
    pub fn policy(&self, rule: &str, database: &str, user: &str) -> Option<Policy> {
        let from = |m: Option<&BTreeMap<String, Policy>>| m.and_then(|m| m.get(rule)).copied();
        from(self.user.get(user))
            .or_else(|| from(self.database.get(database)))
            .or_else(|| self.rules.get(rule).copied())
    }

    pub fn lock_timeout(&self) -> Duration {
        Duration::from_millis(self.lock_timeout_ms)
    }

    pub fn parse_limits(&self) -> ParseLimits {
        ParseLimits {
            max_bytes: self.max_parse_bytes,
            timeout: Duration::from_millis(self.parse_timeout_ms),
            cache_bytes: self.parse_cache_bytes,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        if self.lock_timeout_ms == 0 {
            return Err(invalid("ddl.lock_timeout_ms", "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(invalid("ddl.max_attempts", "must be at least 1".into()));
        }
        if self.blockers_idle_ms < 1_000 {
            return Err(invalid(
                "ddl.blockers_idle_ms",
                "must be at least 1000: a session idle for less may be between two statements"
                    .into(),
            ));
        }
        if self.backfill_batch_rows == 0 {
            return Err(invalid(
                "ddl.backfill_batch_rows",
                "must be at least 1".into(),
            ));
        }
        if self.max_parse_bytes == 0 {
            return Err(invalid("ddl.max_parse_bytes", "must be at least 1".into()));
        }
        if self.parse_timeout_ms == 0 {
            return Err(invalid("ddl.parse_timeout_ms", "must be at least 1".into()));
        }
        let maps = std::iter::once(&self.rules)
            .chain(self.database.values())
            .chain(self.user.values());
        for map in maps {
            for id in map.keys() {
                if crate::sql::rules::by_id(id).is_none() {
                    let known: Vec<_> = crate::sql::rules::RULES.iter().map(|r| r.id).collect();
                    return Err(invalid(
                        "ddl.rules",
                        format!("unknown rule {id:?}; rules are {}", known.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_beats_database_beats_global() {
        let ddl: Ddl = toml::from_str(
            r#"
            rules = { create-index = "warn" }
            [database.shop]
            create-index = "reject"
            [user.admin]
            create-index = "allow"
            "#,
        )
        .unwrap();
        assert_eq!(ddl.policy("create-index", "x", "y"), Some(Policy::Warn));
        assert_eq!(
            ddl.policy("create-index", "shop", "y"),
            Some(Policy::Reject)
        );
        assert_eq!(
            ddl.policy("create-index", "shop", "admin"),
            Some(Policy::Allow)
        );
        assert_eq!(ddl.policy("drop-index", "shop", "y"), None);
        ddl.validate().unwrap();
        let bad: Ddl = toml::from_str(r#"rules = { no-such-rule = "warn" }"#).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no-such-rule"));
    }

    #[test]
    fn parse_limits() {
        let ddl: Ddl = toml::from_str(
            "max_parse_bytes = 4096\nparse_timeout_ms = 250\nunparsed = \"reject\"\nparse_cache_bytes = 0",
        )
        .unwrap();
        ddl.validate().unwrap();
        assert_eq!(ddl.unparsed, UnparsedPolicy::Reject);
        assert_eq!(
            ddl.parse_limits(),
            ParseLimits {
                max_bytes: 4096,
                timeout: Duration::from_millis(250),
                cache_bytes: 0
            }
        );
        assert_eq!(Ddl::default().unparsed, UnparsedPolicy::Forward);
        for bad in [
            "max_parse_bytes = 0",
            "parse_timeout_ms = 0",
            "unparsed = \"drop\"",
        ] {
            let rejected = toml::from_str::<Ddl>(bad).map_or(true, |d| d.validate().is_err());
            assert!(rejected, "{bad}");
        }
    }
}
