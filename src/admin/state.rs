//! The console's views of the live process: SHOW CLIENTS (the sessions), SHOW
//! STATS (traffic per database), SHOW RULES (each rule and its policy).

use super::table::{Answer, Cell, Failed, Kind, Table};
use crate::context::Shared;
use crate::session::info::SessionSnapshot;
use std::time::UNIX_EPOCH;

pub const CLIENTS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("user", Kind::Text),
    ("database", Kind::Text),
    ("state", Kind::Text),
    ("addr", Kind::Text),
    ("port", Kind::Int),
    ("connect_time", Kind::Text),
    ("tls", Kind::Bool),
];

/// A Unix time as an ISO 8601 UTC timestamp (what psql users read).
fn timestamp(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A session's state: its last ReadyForQuery, whether a turn is out, whether
/// its database is paused.
fn state(s: &SessionSnapshot) -> &'static str {
    match (s.tx_status, s.busy, s.paused) {
        ('T', ..) => "idle in transaction",
        ('E', ..) => "idle in failed transaction",
        (_, true, _) => "active",
        (_, false, true) => "paused",
        _ => "idle",
    }
}

/// How long PAUSE waits for the sessions of what it pauses to stand still.
const PAUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// PAUSE [database]: new queries wait; answers once no session of it has a
/// query running or a transaction open (or says which still have, after
/// [`PAUSE_WAIT`]; the pause stays).
pub async fn pause(shared: &Shared, database: Option<&str>) -> Result<Answer, Failed> {
    shared.sessions.pauses.set(database, true);
    tracing::info!(target: "pgshift::admin", database = database.unwrap_or("(all)"), "paused from the console");
    let deadline = std::time::Instant::now() + PAUSE_WAIT;
    let mut still_in_a_row = 0;
    loop {
        let busy: Vec<String> = shared
            .sessions
            .snapshot()
            .into_iter()
            .filter(|s| database.is_none_or(|db| s.database == db) && s.busy)
            .map(|s| s.id.to_string())
            .collect();
        // Twice in a row: a session that read a query just before the flag
        // was set shows up as busy by the second look.
        still_in_a_row = if busy.is_empty() {
            still_in_a_row + 1
        } else {
            0
        };
        if still_in_a_row >= 2 {
            return Ok(Answer::Done("PAUSE".into()));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failed::new(
                "55000",
                format!(
                    "paused, but after {} s client sessions {} still have a query running or a transaction open",
                    PAUSE_WAIT.as_secs(),
                    busy.join(", ")
                ),
                "New queries wait until RESUME; those sessions go on until their transactions end. SHOW CLIENTS shows them, KILL ends one.",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// RESUME [database]: held sessions go on.
pub fn resume(shared: &Shared, database: Option<&str>) -> Answer {
    shared.sessions.pauses.set(database, false);
    tracing::info!(target: "pgshift::admin", database = database.unwrap_or("(all)"), "resumed from the console");
    Answer::Done("RESUME".into())
}

pub fn clients(shared: &Shared) -> Answer {
    let rows = shared
        .sessions
        .snapshot()
        .into_iter()
        .map(|s| {
            let st = state(&s);
            vec![
                Cell::Int(Some(s.id as i64)),
                Cell::text(s.user),
                Cell::text(s.database),
                Cell::text(st),
                Cell::text(s.peer.ip().to_string()),
                Cell::Int(Some(i64::from(s.peer.port()))),
                Cell::text(timestamp(s.connected_at)),
                Cell::Bool(Some(s.tls)),
            ]
        })
        .collect();
    Answer::Rows(Table {
        columns: CLIENTS.to_vec(),
        rows,
    })
}

pub const SERVERS: &[(&str, Kind)] = &[
    ("client_id", Kind::Int),
    ("user", Kind::Text),
    ("database", Kind::Text),
    ("state", Kind::Text),
    ("addr", Kind::Text),
    ("port", Kind::Int),
    ("remote_pid", Kind::Int),
    ("connect_time", Kind::Text),
    ("tls", Kind::Bool),
];

/// The server connection of each client (pgshift pairs them one to one): the
/// upstream address, the backend's pid (what pg_stat_activity.pid shows).
pub fn servers(shared: &Shared) -> Answer {
    let settings = shared.settings.load_full();
    let (addr, port) = match &settings.upstream {
        crate::config::UpstreamAddr::Tcp { host, port } => (host.clone(), i64::from(*port)),
        crate::config::UpstreamAddr::Unix { dir, port } => {
            (dir.display().to_string(), i64::from(*port))
        }
    };
    let rows = shared
        .sessions
        .snapshot()
        .into_iter()
        .filter(|s| s.backend_pid != 0)
        .map(|s| {
            let st = state(&s);
            vec![
                Cell::Int(Some(s.id as i64)),
                Cell::text(s.user),
                Cell::text(s.database),
                Cell::text(st),
                Cell::text(addr.clone()),
                Cell::Int(Some(port)),
                Cell::Int(Some(i64::from(s.backend_pid))),
                Cell::text(timestamp(s.connected_at)),
                Cell::Bool(Some(s.upstream_tls)),
            ]
        })
        .collect();
    Answer::Rows(Table {
        columns: SERVERS.to_vec(),
        rows,
    })
}

/// `KILL <id>`: the session ends at its next message boundary with FATAL 57P01.
pub fn kill(shared: &Shared, id: u64) -> Result<Answer, Failed> {
    if !shared.sessions.kill(id) {
        return Err(Failed::new(
            "42704",
            format!("there is no client session {id}"),
            "SHOW CLIENTS lists them.",
        ));
    }
    tracing::info!(target: "pgshift::admin", session = id, "session killed from the console");
    Ok(Answer::Done("KILL".into()))
}

pub const LOCKS: &[(&str, Kind)] = &[
    ("work", Kind::Text),
    ("table", Kind::Text),
    ("lock", Kind::Text),
    ("state", Kind::Text),
    ("waiting_ms", Kind::Int),
    ("failed_attempts", Kind::Int),
];

/// The locks pgshift's own work is trying to take now.
pub fn locks() -> Answer {
    let rows = crate::engine::waits::snapshot()
        .into_iter()
        .map(|w| {
            let state = match &w.blocker {
                Some(_) => "waiting for a long transaction",
                None => "trying",
            };
            vec![
                Cell::text(w.work),
                Cell::text(w.table.clone()),
                Cell::text(w.lock.clone()),
                Cell::text(state),
                Cell::Int(Some(w.waited().as_millis() as i64)),
                Cell::Int(Some(i64::from(w.attempts))),
            ]
        })
        .collect();
    Answer::Rows(Table {
        columns: LOCKS.to_vec(),
        rows,
    })
}

pub const BLOCKERS: &[(&str, Kind)] = &[
    ("work", Kind::Text),
    ("table", Kind::Text),
    ("lock", Kind::Text),
    ("blocker_pid", Kind::Int),
    ("blocker", Kind::Text),
    ("waiting_ms", Kind::Int),
];

/// The sessions pgshift's waits are waiting on (pid NULL when it is not known).
pub fn blockers() -> Answer {
    let rows = crate::engine::waits::snapshot()
        .into_iter()
        .filter_map(|w| {
            let (pid, about) = w.blocker.clone()?;
            Some(vec![
                Cell::text(w.work),
                Cell::text(w.table.clone()),
                Cell::text(w.lock.clone()),
                Cell::Int(pid.parse().ok()),
                Cell::text(about),
                Cell::Int(Some(w.waited().as_millis() as i64)),
            ])
        })
        .collect();
    Answer::Rows(Table {
        columns: BLOCKERS.to_vec(),
        rows,
    })
}

pub const STATS: &[(&str, Kind)] = &[
    ("database", Kind::Text),
    ("clients", Kind::Int),
    ("total_query_count", Kind::Int),
    ("total_received", Kind::Int),
    ("total_sent", Kind::Int),
    ("total_server_errors", Kind::Int),
    ("total_ddl_candidates", Kind::Int),
    ("turns", Kind::Int),
    ("p50_us", Kind::Int),
    ("p99_us", Kind::Int),
];

/// Traffic per database since pgshift started (bytes received from clients and
/// sent to them, as pgbouncer counts), the clients connected now, and the turn
/// latency (first message to its ReadyForQuery) at the 50th and 99th
/// percentiles, each the upper end of its bucket (within 12.5 %).
pub fn stats(shared: &Shared) -> Answer {
    let sessions = shared.sessions.snapshot();
    let rows = shared
        .stats
        .by_database()
        .into_iter()
        .map(|(database, t)| {
            let clients = sessions.iter().filter(|s| s.database == database).count();
            let quantile = |q: f64| t.latency.quantile(q).map(|d| d.as_micros() as i64);
            vec![
                Cell::text(database),
                Cell::Int(Some(clients as i64)),
                Cell::Int(Some(t.queries as i64)),
                Cell::Int(Some(t.bytes_from_clients as i64)),
                Cell::Int(Some(t.bytes_from_servers as i64)),
                Cell::Int(Some(t.server_errors as i64)),
                Cell::Int(Some(t.ddl_candidates as i64)),
                Cell::Int(Some(t.latency.total() as i64)),
                Cell::Int(quantile(0.5)),
                Cell::Int(quantile(0.99)),
            ]
        })
        .collect();
    Answer::Rows(Table {
        columns: STATS.to_vec(),
        rows,
    })
}

pub const RULES: &[(&str, Kind)] = &[
    ("rule", Kind::Text),
    ("policy", Kind::Text),
    ("overrides", Kind::Text),
    ("about", Kind::Text),
];

/// Every rule with the policy the config sets (NULL: the rule's own, which may
/// differ by finding), and the per-database and per-user overrides.
pub fn rules(shared: &Shared) -> Answer {
    let settings = shared.settings.load_full();
    let ddl = &settings.config.ddl;
    let rows = crate::sql::rules::RULES
        .iter()
        .map(|rule| {
            let mut overrides = Vec::new();
            for (kind, map) in [("database", &ddl.database), ("user", &ddl.user)] {
                for (name, rules) in map {
                    if let Some(p) = rules.get(rule.id) {
                        overrides.push(format!("{kind} {name}: {}", p.name()));
                    }
                }
            }
            vec![
                Cell::text(rule.id),
                Cell::Text(ddl.rules.get(rule.id).map(|p| p.name().to_string())),
                Cell::Text((!overrides.is_empty()).then(|| overrides.join("; "))),
                Cell::text(rule.about),
            ]
        })
        .collect();
    Answer::Rows(Table {
        columns: RULES.to_vec(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00+00");
        let at = UNIX_EPOCH + Duration::from_secs(1_796_265_296);
        assert_eq!(timestamp(at), "2026-12-03 02:34:56+00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29 00:00:00+00");
    }
}
