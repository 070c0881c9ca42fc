//! The stall budget: a lock attempt joins Postgres' lock queue, and every query on
//! the table that arrives meanwhile queues behind the attempt. So pgshift does not
//! attempt while a session in a long transaction (idle in it, or open longer than
//! the budget) holds a conflicting lock: the attempt would wait for it, and the
//! application with it. It polls, outside the queue, until only short holders are
//! left, then attempts with `lock_timeout` = the budget.

use super::conn::{cell, Conn};
use crate::config::Ddl;
use crate::sql::plan::Lock;
use std::io;
use std::time::Duration;

/// How often pgshift looks again while a long transaction holds the table: only
/// whether that session is still in the same transaction (one backend's entry,
/// no lock manager involved).
pub const POLL: Duration = Duration::from_millis(50);

/// How often the full look at pg_locks runs meanwhile (it takes every lock-manager
/// partition lock, which the application's own statements need; polled every 50 ms
/// on a busy 2-core machine it stalled them, measured in bench/migration_stall.rs),
/// in case the holder let go of the lock without ending its transaction (ROLLBACK
/// TO SAVEPOINT).
pub const RECHECK: Duration = Duration::from_secs(1);

/// lock_timeout of one attempt: the stall budget, within `ddl.lock_timeout_ms`.
pub fn attempt_ms(ddl: &Ddl) -> u64 {
    match ddl.stall_budget_ms {
        0 => ddl.lock_timeout_ms,
        budget => budget.min(ddl.lock_timeout_ms),
    }
}

/// A session whose lock an attempt would queue behind for longer than the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: String,
    pub user: String,
    pub application: String,
    pub state: String,
    /// How long its transaction has been open.
    pub for_ms: u64,
    /// How long it has been in its current state (idle in transaction, say).
    pub idle_ms: u64,
    /// The relation it holds the lock on.
    pub relation: String,
    /// When its transaction began, as the server's text: the same transaction
    /// while this is unchanged.
    pub xact_start: String,
    /// pg_stat_activity.backend_type: "client backend", "autovacuum worker", ...
    pub kind: String,
    /// Its current or last statement (for an autovacuum: what it vacuums).
    pub query: String,
    /// Its transaction as pg_locks names it (`3/1234`), which every role may see.
    pub vxid: String,
    /// Whether pg_stat_activity shows this role its state and timings (another
    /// role's session needs pg_read_all_stats); if not, how long it has held the
    /// lock is measured by pgshift watching it.
    pub visible: bool,
}

/// When pgshift first saw each transaction it cannot see into hold a conflicting
/// lock (by pg_locks' virtual transaction id), across the looks of one step.
pub type FirstSeen = std::collections::HashMap<String, std::time::Instant>;

impl Holder {
    pub fn idle_in_transaction(&self) -> bool {
        self.state.starts_with("idle in transaction")
    }

    /// An autovacuum that Postgres itself would cancel for a lock request that it
    /// blocks: any but one run to prevent transaction ID wraparound.
    pub fn yielding_autovacuum(&self) -> bool {
        self.kind == "autovacuum worker" && !self.query.contains("to prevent wraparound")
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.visible {
            return write!(
                f,
                "pid {} (user \"{}\", holding the lock for at least {:.1} s; grant pg_read_all_stats to see more)",
                self.pid,
                self.user,
                self.for_ms as f64 / 1000.0
            );
        }
        if self.kind != "client backend" {
            return write!(
                f,
                "pid {} ({} \"{}\", {} for {:.1} s)",
                self.pid,
                self.kind,
                self.query,
                self.state,
                self.for_ms as f64 / 1000.0
            );
        }
        write!(
            f,
            "pid {} (user \"{}\", application \"{}\", {} for {:.1} s)",
            self.pid,
            self.user,
            self.application,
            self.state,
            self.for_ms as f64 / 1000.0
        )
    }
}

/// pg_locks modes that conflict with `lock` (Postgres' conflict table).
pub fn conflicting(lock: Lock) -> &'static [&'static str] {
    const ALL: [&str; 8] = [
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ];
    match lock {
        Lock::None => &[],
        Lock::AccessShare => &ALL[7..],
        Lock::RowShare => &ALL[6..],
        Lock::RowExclusive => &ALL[4..],
        Lock::ShareUpdateExclusive => &ALL[3..],
        Lock::Share => &[
            "RowExclusiveLock",
            "ShareUpdateExclusiveLock",
            "ShareRowExclusiveLock",
            "ExclusiveLock",
            "AccessExclusiveLock",
        ],
        Lock::ShareRowExclusive => &ALL[2..],
        Lock::Exclusive => &ALL[1..],
        Lock::AccessExclusive => &ALL,
    }
}

const HOLDERS: &str = "\
SELECT a.pid::pg_catalog.text, coalesce(a.usename::pg_catalog.text, ''), coalesce(a.application_name, ''),
  coalesce(a.state, ''),
  coalesce((extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start) OPERATOR(pg_catalog.*) 1000::pg_catalog.numeric)::pg_catalog.int8, 0)::pg_catalog.text,
  coalesce((extract(epoch FROM pg_catalog.clock_timestamp() - a.state_change) OPERATOR(pg_catalog.*) 1000::pg_catalog.numeric)::pg_catalog.int8, 0)::pg_catalog.text,
  coalesce(a.backend_type, ''), pg_catalog.left(coalesce(a.query, ''), 200),
  l.relation::pg_catalog.regclass::pg_catalog.text, coalesce(a.xact_start::pg_catalog.text, ''),
  coalesce(l.virtualtransaction, ''), (a.state IS NOT NULL)::pg_catalog.text
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation'
  AND l.relation OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.to_regclass(t)::pg_catalog.oid FROM pg_catalog.unnest($1::pg_catalog.text[]) t))
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
  AND l.pid <> pg_catalog.pg_backend_pid() AND l.mode = ANY ($2::pg_catalog.text[])
  AND a.wait_event_type IS DISTINCT FROM 'Lock'
ORDER BY a.xact_start NULLS LAST LIMIT 50";

/// The longest-open session holding a lock on one of `tables` that conflicts with
/// `lock` while idle in its transaction or open longer than `budget_ms`, if any. A
/// holder that is itself waiting for a lock does not count: it may be waiting for
/// this very session (a lock the client's transaction took), and only the lock
/// queue's deadlock detection settles that, so pgshift attempts as before. A
/// holder whose activity this role may not see counts once pgshift has seen its
/// transaction hold the lock for the budget (`first_seen`, kept by the caller).
pub async fn long_holder<C: Conn>(
    conn: &mut C,
    tables: &[&str],
    lock: Lock,
    budget_ms: u64,
    first_seen: &mut FirstSeen,
) -> io::Result<Option<Holder>> {
    let modes = conflicting(lock);
    if modes.is_empty() {
        return Ok(None);
    }
    let modes = format!("{{{}}}", modes.join(","));
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let tables = super::unnamed::array_literal(&tables);
    let reply = conn.query_params(HOLDERS, &[&tables, &modes]).await?;
    if reply.error.is_some() {
        return Ok(None);
    }
    let now = std::time::Instant::now();
    let holders: Vec<Holder> = reply
        .rows
        .iter()
        .map(|r| Holder {
            pid: cell(r, 0),
            user: cell(r, 1),
            application: cell(r, 2),
            state: cell(r, 3),
            for_ms: cell(r, 4).parse().unwrap_or(0),
            idle_ms: cell(r, 5).parse().unwrap_or(0),
            kind: cell(r, 6),
            query: cell(r, 7),
            relation: cell(r, 8),
            xact_start: cell(r, 9),
            vxid: cell(r, 10),
            visible: cell(r, 11) == "true",
        })
        .collect();
    first_seen.retain(|vxid, _| holders.iter().any(|h| !h.visible && h.vxid == *vxid));
    let budget = Duration::from_millis(budget_ms);
    let mut long = None;
    for mut h in holders {
        let is_long = if h.visible {
            h.idle_in_transaction() || h.for_ms > budget_ms
        } else {
            let since = *first_seen.entry(h.vxid.clone()).or_insert(now);
            h.for_ms = (now - since).as_millis() as u64;
            now - since >= budget
        };
        if is_long && long.is_none() {
            long = Some(h);
        }
    }
    Ok(long)
}

/// `holder` as it is now, if it is still in the same transaction and not waiting
/// for a lock itself; None when that changed (then look again in full).
pub async fn same_transaction<C: Conn>(
    conn: &mut C,
    holder: &Holder,
) -> io::Result<Option<Holder>> {
    let reply = conn
        .query_params(
            "SELECT coalesce(a.state, ''), \
             coalesce((extract(epoch FROM pg_catalog.clock_timestamp() - a.xact_start) OPERATOR(pg_catalog.*) 1000::pg_catalog.numeric)::pg_catalog.int8, 0)::pg_catalog.text, \
             coalesce((extract(epoch FROM pg_catalog.clock_timestamp() - a.state_change) OPERATOR(pg_catalog.*) 1000::pg_catalog.numeric)::pg_catalog.int8, 0)::pg_catalog.text \
             FROM pg_catalog.pg_stat_get_activity($1::pg_catalog.int4) a \
             WHERE a.xact_start::pg_catalog.text = $2 AND a.wait_event_type IS DISTINCT FROM 'Lock'",
            &[&holder.pid, &holder.xact_start],
        )
        .await?;
    if reply.error.is_some() {
        return Ok(None);
    }
    Ok(reply.rows.first().map(|r| Holder {
        state: cell(r, 0),
        for_ms: cell(r, 1).parse().unwrap_or(0),
        idle_ms: cell(r, 2).parse().unwrap_or(0),
        ..holder.clone()
    }))
}

/// What pgshift may do to a long holder instead of waiting for it.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// Cancel an autovacuum (not one for wraparound), as Postgres cancels one that
    /// blocks a lock request; it runs again later.
    CancelAutovacuum,
    /// End a session idle in its transaction for at least this many ms
    /// (`ddl.blockers = "end_idle"`).
    EndIdle(u64),
}

impl Signal {
    /// What pgshift may send `holder` under `ddl`, if anything.
    pub fn for_holder(holder: &Holder, ddl: &Ddl) -> Option<Signal> {
        if ddl.cancel_autovacuum && holder.yielding_autovacuum() {
            Some(Signal::CancelAutovacuum)
        } else if ddl.blockers == crate::config::Blockers::EndIdle
            && holder.idle_in_transaction()
            && holder.idle_ms >= ddl.blockers_idle_ms
        {
            Some(Signal::EndIdle(ddl.blockers_idle_ms))
        } else {
            None
        }
    }
}

/// Sends `signal` to `holder` if it still holds: the same transaction (its start
/// time), and for EndIdle still idle in it long enough, for CancelAutovacuum still
/// an autovacuum not for wraparound, all checked again in the statement that
/// signals. Ok(true) when sent; Err when the role may not (42501). Inside the
/// client's transaction (`in_tx`) it runs in a savepoint, so a refusal does not
/// abort the transaction, on a fresh look at the other sessions.
pub async fn signal<C: Conn>(
    conn: &mut C,
    holder: &Holder,
    signal: Signal,
    in_tx: bool,
) -> io::Result<Result<bool, super::conn::ServerError>> {
    const CANCEL: &str = "SELECT pg_catalog.pg_cancel_backend(a.pid)::pg_catalog.text \
         FROM pg_catalog.pg_stat_get_activity($1::pg_catalog.int4) a \
         WHERE a.xact_start::pg_catalog.text OPERATOR(pg_catalog.=) $2 \
         AND a.backend_type OPERATOR(pg_catalog.=) 'autovacuum worker' \
         AND a.query NOT LIKE '%to prevent wraparound%'";
    const END: &str = "SELECT pg_catalog.pg_terminate_backend(a.pid)::pg_catalog.text \
         FROM pg_catalog.pg_stat_get_activity($1::pg_catalog.int4) a \
         WHERE a.xact_start::pg_catalog.text OPERATOR(pg_catalog.=) $2 \
         AND a.state LIKE 'idle in transaction%' \
         AND a.state_change OPERATOR(pg_catalog.<) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) $3::pg_catalog.interval)";
    if in_tx {
        conn.query("SAVEPOINT pgshift_signal; SELECT pg_catalog.pg_stat_clear_snapshot()")
            .await?;
    }
    let reply = match signal {
        Signal::CancelAutovacuum => {
            conn.query_params(CANCEL, &[&holder.pid, &holder.xact_start])
                .await?
        }
        Signal::EndIdle(ms) => {
            let idle = format!("{ms} milliseconds");
            conn.query_params(END, &[&holder.pid, &holder.xact_start, &idle])
                .await?
        }
    };
    if in_tx {
        let end = if reply.error.is_some() {
            "ROLLBACK TO SAVEPOINT pgshift_signal; RELEASE SAVEPOINT pgshift_signal"
        } else {
            "RELEASE SAVEPOINT pgshift_signal"
        };
        conn.query(end).await?;
    }
    Ok(match reply.error {
        Some(e) => Err(e),
        None => Ok(reply.rows.first().is_some_and(|r| cell(r, 0) == "true")),
    })
}

/// Inside a transaction Postgres keeps its first look at the other sessions
/// (pg_stat_activity) until the transaction ends: drop it before looking again.
pub async fn fresh_look<C: Conn>(conn: &mut C, in_tx: bool) -> io::Result<()> {
    if in_tx {
        conn.query("SELECT pg_catalog.pg_stat_clear_snapshot()")
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_follow_postgres_table() {
        assert_eq!(conflicting(Lock::AccessShare), ["AccessExclusiveLock"]);
        assert_eq!(conflicting(Lock::AccessExclusive).len(), 8);
        assert!(!conflicting(Lock::Share).contains(&"ShareLock"));
        assert!(conflicting(Lock::ShareUpdateExclusive).contains(&"ShareUpdateExclusiveLock"));
        assert!(!conflicting(Lock::RowExclusive).contains(&"RowExclusiveLock"));
        assert!(conflicting(Lock::ShareRowExclusive).contains(&"RowExclusiveLock"));
    }

    #[test]
    fn the_budget_bounds_each_attempt() {
        let mut ddl = Ddl {
            lock_timeout_ms: 500,
            stall_budget_ms: 100,
            ..Ddl::default()
        };
        assert_eq!(attempt_ms(&ddl), 100);
        ddl.stall_budget_ms = 0;
        assert_eq!(attempt_ms(&ddl), 500);
        ddl.stall_budget_ms = 900;
        assert_eq!(attempt_ms(&ddl), 500);
    }
}
