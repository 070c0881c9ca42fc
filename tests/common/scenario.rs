//! The blocking-transaction scenario shared by the DDL tests: a transaction holds a
//! lock on the table while an application load runs and a migration statement is
//! sent, through pgshift or directly.

use super::{connect, fresh_db, pg, Proxy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// lock_timeout pgshift uses in these tests.
pub const LOCK_TIMEOUT_MS: u64 = 200;
/// Slack for scheduling on a busy 2-core machine.
pub const MARGIN: Duration = Duration::from_millis(400);
/// How long the blocking transaction stays open once the DDL started.
pub const HOLD: Duration = Duration::from_millis(2_500);

pub fn proxy() -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = LOCK_TIMEOUT_MS;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 400;
        c.ddl.max_attempts = 100;
        c.ddl.retry_deadline_ms = 30_000;
    })
}

pub fn direct(db: &str) -> String {
    let addr = pg().tcp_address();
    let (host, port) = addr.rsplit_once(':').unwrap();
    format!("host={host} port={port} dbname={db} user=postgres connect_timeout=10")
}

/// The statements the server logged for database `db` (simple Query, and the
/// extended protocol's `execute <unnamed>: …`).
pub fn logged(db: &str) -> Vec<String> {
    let log = std::fs::read_to_string(pg().log_path()).unwrap_or_default();
    let tag = format!(" db={db} ");
    log.lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            let (_, s) = l
                .split_once("statement: ")
                .or_else(|| l.split_once("execute <unnamed>: "))?;
            Some(s.to_string())
        })
        .collect()
}

pub struct Scenario<'a> {
    pub setup: &'a str,
    /// Runs in the blocking transaction, which then stays idle for HOLD.
    pub blocker: &'a str,
    pub ddl: &'a str,
    /// The application's query, run in a loop during the DDL.
    pub app: &'a str,
}

pub struct Outcome {
    pub ddl: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
    /// Longest single application query while the DDL ran.
    pub worst: Duration,
    pub app_queries: u64,
}

/// Runs the scenario with the application and the DDL connected to `target`.
pub async fn run(db: &str, target: &str, s: &Scenario<'_>) -> Outcome {
    let admin = connect(&direct(db)).await;
    admin.batch_execute(s.setup).await.unwrap();
    let blocker = connect(&direct(db)).await;
    blocker.batch_execute("BEGIN").await.unwrap();
    blocker.batch_execute(s.blocker).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let app = connect(target).await;
    let app_sql = s.app.to_string();
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let (mut worst, mut n) = (Duration::ZERO, 0u64);
        while !stop2.load(Ordering::Relaxed) {
            let t = Instant::now();
            app.batch_execute(&app_sql)
                .await
                .expect("application query");
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (worst, n)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let migrator = connect(target).await;
    let ddl = s.ddl.to_string();
    let ran = tokio::spawn(async move { migrator.simple_query(&ddl).await });
    tokio::time::sleep(HOLD).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let ddl = tokio::time::timeout(Duration::from_secs(60), ran)
        .await
        .expect("the DDL finished")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let (worst, app_queries) = load.await.unwrap();
    Outcome {
        ddl,
        worst,
        app_queries,
    }
}

/// Through pgshift no stall; directly (in a second database) the same scenario stalls.
pub async fn safe_through_pgshift(name: &str, s: &Scenario<'_>) -> (String, Client) {
    let db = fresh_db(name);
    let proxy = proxy();
    let out = run(&db, &proxy.conn_str(&db, "postgres"), s).await;
    out.ddl
        .as_ref()
        .unwrap_or_else(|e| panic!("{}: {e:?}", s.ddl));
    assert!(out.app_queries > 10, "the load ran: {}", out.app_queries);
    assert!(
        out.worst < Duration::from_millis(LOCK_TIMEOUT_MS) + MARGIN,
        "{}: an application query stalled {:?} through pgshift",
        s.ddl,
        out.worst
    );
    let control = fresh_db(&format!("{name}_direct"));
    let out_direct = run(&control, &direct(&control), s).await;
    assert!(
        out_direct.worst > HOLD / 2,
        "{}: directly, the scenario should stall the application, worst {:?}",
        s.ddl,
        out_direct.worst
    );
    let client = connect(&direct(&db)).await;
    (db, client)
}

pub async fn one_value(client: &Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

pub const TABLE: &str = "CREATE TABLE items (id int PRIMARY KEY, owner_id int, qty int);
    INSERT INTO items SELECT g, g % 100, g FROM generate_series(1, 20000) g;
    CREATE TABLE owners (id int PRIMARY KEY);
    INSERT INTO owners SELECT g FROM generate_series(0, 99) g;";

/// Waits until `sql` (one value) returns `want`; an error (a table not made
/// yet) counts as not yet.
pub async fn eventually(client: &Client, sql: &str, want: &str) {
    let start = Instant::now();
    loop {
        let got = match client.simple_query(sql).await {
            Ok(rows) => rows
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .unwrap_or_default(),
            Err(e) => format!("error: {e}"),
        };
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{sql}: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
