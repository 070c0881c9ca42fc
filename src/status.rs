//! `pgshift status`: the rollouts and the open deferred DDL jobs, read from the
//! admin console (SHOW ROLLOUTS, SHOW DEFERRED) as any psql would, shown as live
//! progress bars, or once (`--once`) as text or JSON for scripts.

use crate::cli::StatusArgs;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// One row as column name → value (NULL: None).
type Row = BTreeMap<String, Option<String>>;

/// What one look at the console found.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub rollouts: Vec<Row>,
    /// Deferred jobs still to run or running.
    pub deferred: Vec<Row>,
}

/// Why status could not show anything.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no password for the admin console: set PGSHIFT_ADMIN_PASSWORD or --password-file")]
    NoPassword,
    #[error("cannot read {path}: {reason}")]
    PasswordFile { path: String, reason: String },
    #[error("{0} is not HOST:PORT")]
    BadAddress(String),
    #[error("admin console at {addr}: {reason}")]
    Console { addr: String, reason: String },
}

fn password(args: &StatusArgs) -> Result<String, StatusError> {
    if let Ok(p) = std::env::var("PGSHIFT_ADMIN_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let Some(path) = &args.password_file else {
        return Err(StatusError::NoPassword);
    };
    let text = std::fs::read_to_string(path).map_err(|e| StatusError::PasswordFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    match line.is_empty() {
        true => Err(StatusError::NoPassword),
        false => Ok(line.to_string()),
    }
}

async fn rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    Ok(client
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// A logged-in console connection.
pub async fn connect(args: &StatusArgs) -> Result<tokio_postgres::Client, StatusError> {
    let addr: std::net::SocketAddr = args
        .admin
        .parse()
        .map_err(|_| StatusError::BadAddress(args.admin.clone()))?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(&args.user)
        .password(password(args)?)
        .dbname("pgshift")
        .application_name("pgshift status")
        .connect_timeout(Duration::from_secs(5));
    let Some(ca) = &args.tls_ca else {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| console_error(&args.admin, &e))?;
        tokio::spawn(connection);
        return Ok(client);
    };
    let name = args
        .tls_server_name
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let stream = tokio::time::timeout(Duration::from_secs(5), tls_stream(addr, ca, &name))
        .await
        .unwrap_or_else(|_| Err("no answer within 5 s".into()))
        .map_err(|reason| StatusError::Console {
            addr: args.admin.clone(),
            reason,
        })?;
    let (client, connection) = config
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| console_error(&args.admin, &e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A TLS connection to the console: SSLRequest, then a handshake that verifies
/// the certificate against `ca` and `name`.
async fn tls_stream(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = crate::net::tls::verifying_connector(ca).map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name:?} is not a server name: {e}"))?;
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    // SSLRequest: length 8, code 80877103.
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer[0] != b'S' {
        return Err("the console has no TLS (set [tls] on the proxy)".into());
    }
    connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

fn console_error(addr: &str, e: &tokio_postgres::Error) -> StatusError {
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    StatusError::Console {
        addr: addr.to_string(),
        reason,
    }
}

pub async fn look(client: &tokio_postgres::Client, addr: &str) -> Result<Snapshot, StatusError> {
    let failed = |e: tokio_postgres::Error| console_error(addr, &e);
    let rollouts = rows(client, "SHOW ROLLOUTS").await.map_err(failed)?;
    let deferred = rows(client, "SHOW DEFERRED LIMIT 100")
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|r| {
            matches!(
                r.get("state").and_then(|s| s.as_deref()),
                Some("recorded" | "working") | None
            )
        })
        .collect();
    Ok(Snapshot { rollouts, deferred })
}

fn get<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_deref()).unwrap_or("")
}

/// Columns the console types as numbers and as booleans.
const NUMBERS: &[&str] = &[
    "id",
    "progress_pct",
    "rows_done",
    "rows_total",
    "rows_per_s",
    "eta_s",
    "rate_limit",
    "next_step",
    "steps",
];
const BOOLEANS: &[&str] = &["paused"];

/// A value as JSON, typed by its column; NULL as null.
fn json_value(column: &str, v: &Option<String>) -> serde_json::Value {
    let Some(s) = v.as_deref() else {
        return serde_json::Value::Null;
    };
    if BOOLEANS.contains(&column) {
        return serde_json::Value::Bool(s == "t");
    }
    if NUMBERS.contains(&column) {
        if let Ok(i) = s.parse::<i64>() {
            return serde_json::Value::from(i);
        }
        if let Some(f) = s.parse::<f64>().ok().filter(|f| f.is_finite()) {
            return serde_json::Value::from(f);
        }
    }
    serde_json::Value::String(s.to_string())
}

pub fn json(snapshot: &Snapshot) -> String {
    let list = |rows: &[Row]| {
        serde_json::Value::Array(
            rows.iter()
                .map(|r| {
                    serde_json::Value::Object(
                        r.iter()
                            .map(|(k, v)| (k.clone(), json_value(k, v)))
                            .collect(),
                    )
                })
                .collect(),
        )
    };
    serde_json::json!({
        "rollouts": list(&snapshot.rollouts),
        "deferred": list(&snapshot.deferred),
    })
    .to_string()
}

/// `line` with its control characters spelled out (`\u{1b}`): names, errors
/// and statements come from the database, and a terminal obeys escape sequences.
fn printable(line: String) -> String {
    if !line.chars().any(char::is_control) {
        return line;
    }
    line.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// One rollout's line: where it is and how fast it goes.
fn rollout_line(r: &Row) -> String {
    let mut line = format!(
        "{} #{} {}.{} {}{}",
        get(r, "database"),
        get(r, "id"),
        get(r, "table"),
        get(r, "column"),
        get(r, "phase"),
        if get(r, "paused") == "t" {
            " (paused)"
        } else {
            ""
        },
    );
    match (get(r, "rows_done"), get(r, "rows_total")) {
        ("", _) => {}
        (done, "") => line.push_str(&format!("  {done} rows")),
        (done, total) => line.push_str(&format!("  {done}/{total} rows")),
    }
    if let Ok(rate) = get(r, "rows_per_s").parse::<f64>() {
        line.push_str(&format!("  {rate:.0} rows/s"));
    }
    if let Ok(eta) = get(r, "eta_s").parse::<f64>() {
        line.push_str(&format!("  ETA {eta:.0} s"));
    }
    if !get(r, "error").is_empty() {
        line.push_str(&format!("  error: {}", get(r, "error")));
    }
    printable(line)
}

fn deferred_line(d: &Row) -> String {
    printable(format!(
        "{} #{} {} {} (step {} of {}): {}",
        get(d, "database"),
        get(d, "id"),
        get(d, "rule"),
        get(d, "state"),
        get(d, "next_step"),
        get(d, "steps"),
        get(d, "statement").chars().take(80).collect::<String>(),
    ))
}

pub fn text(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    out.push_str(&format!("rollouts: {}\n", snapshot.rollouts.len()));
    for r in &snapshot.rollouts {
        let pct = get(r, "progress_pct").parse::<f64>().ok();
        let bar = match pct {
            Some(p) => {
                let filled = ((p / 100.0) * 30.0).round().clamp(0.0, 30.0) as usize;
                format!(
                    "[{}{}] {p:>5.1} %  ",
                    "#".repeat(filled),
                    "-".repeat(30 - filled)
                )
            }
            None => String::new(),
        };
        out.push_str(&format!("  {bar}{}\n", rollout_line(r)));
    }
    out.push_str(&format!("deferred DDL open: {}\n", snapshot.deferred.len()));
    for d in &snapshot.deferred {
        out.push_str(&format!("  {}\n", deferred_line(d)));
    }
    out
}

/// Live bars until Ctrl-C (or the console goes away).
async fn live(client: &tokio_postgres::Client, args: &StatusArgs) -> Result<(), StatusError> {
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}")
        .expect("a valid template")
        .progress_chars("#>-");
    let mut shown: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let header = bars.add(ProgressBar::new_spinner());
    loop {
        let snapshot = look(client, &args.admin).await?;
        let mut seen = Vec::new();
        for r in &snapshot.rollouts {
            let key = format!("{}#{}", get(r, "database"), get(r, "id"));
            let bar = shown.entry(key.clone()).or_insert_with(|| {
                let b = bars.add(ProgressBar::new(1000));
                b.set_style(style.clone());
                b
            });
            let pct = get(r, "progress_pct").parse::<f64>().unwrap_or(0.0);
            bar.set_position((pct * 10.0).round() as u64);
            bar.set_message(rollout_line(r));
            seen.push(key);
        }
        shown.retain(|k, b| {
            let keep = seen.contains(k);
            if !keep {
                b.finish_and_clear();
            }
            keep
        });
        header.set_message(format!(
            "{} rollouts, {} open deferred jobs (Ctrl-C to quit)",
            snapshot.rollouts.len(),
            snapshot.deferred.len()
        ));
        header.tick();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(args.interval_ms.max(100))) => {}
        }
    }
}

/// Runs `pgshift status`; the exit code.
pub async fn run(args: StatusArgs) -> u8 {
    let client = match connect(&args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgshift status: {e}");
            return 1;
        }
    };
    let result = match (args.once, args.format.as_str()) {
        (true, "json") => look(&client, &args.admin)
            .await
            .map(|s| println!("{}", json(&s))),
        (true, _) => look(&client, &args.admin)
            .await
            .map(|s| print!("{}", text(&s))),
        (false, _) => live(&client, &args).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pgshift status: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Option<&str>)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn escape_sequences_from_the_database_are_spelled_out() {
        let r = row(&[
            ("database", Some("app")),
            ("id", Some("1")),
            ("table", Some("public.\u{1b}]52;c;x\u{7}t")),
            ("column", Some("c")),
            ("phase", Some("failed")),
            ("error", Some("bad\nline")),
        ]);
        let line = rollout_line(&r);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(
            line.contains("\\u{1b}]52") && line.contains("bad\\nline"),
            "{line}"
        );
    }

    #[test]
    fn a_rollout_reads_in_one_line_and_in_json() {
        let r = row(&[
            ("database", Some("1e5")),
            ("id", Some("3")),
            ("table", Some("public.orders")),
            ("column", Some("amount")),
            ("phase", Some("backfilling")),
            ("paused", Some("f")),
            ("progress_pct", Some("45.5")),
            ("rows_done", Some("455")),
            ("rows_total", Some("1000")),
            ("rows_per_s", Some("100.2")),
            ("eta_s", Some("5.4")),
            ("error", None),
        ]);
        let s = Snapshot {
            rollouts: vec![r],
            deferred: Vec::new(),
        };
        let t = text(&s);
        assert!(
            t.contains(
                "1e5 #3 public.orders.amount backfilling  455/1000 rows  100 rows/s  ETA 5 s"
            ),
            "{t}"
        );
        assert!(t.contains(" 45.5 %"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(j["rollouts"][0]["id"], 3);
        assert_eq!(j["rollouts"][0]["database"], "1e5");
        assert_eq!(j["rollouts"][0]["progress_pct"], 45.5);
        assert_eq!(j["rollouts"][0]["paused"], false);
        assert_eq!(j["rollouts"][0]["error"], serde_json::Value::Null);
        assert_eq!(j["deferred"], serde_json::json!([]));
    }
}
