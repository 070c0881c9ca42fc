//! Statements pgshift's parser cannot take lightly: nesting deep enough to overflow a
//! thread's stack, megabytes of SQL that take seconds to parse. Through pgshift the
//! client gets what Postgres gives directly, the proxy survives, and other sessions
//! are not delayed. (Memory around big statements: tests/parse_memory.rs.)

mod common;

use common::scenario::direct;
use common::{connect, fresh_db, Proxy};
use std::time::{Duration, Instant};

/// The tests here run one at a time: the latency test must not share the machine's
/// two cores with the others' megabytes of SQL.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a client sees for one simple Query: row and command counts, or the error.
#[derive(Debug, PartialEq)]
enum Seen {
    Done(Vec<String>),
    Error {
        code: String,
        message: String,
        hint: Option<String>,
    },
}

async fn seen(conn_str: &str, sql: &str) -> Seen {
    use tokio_postgres::SimpleQueryMessage as M;
    let client = connect(conn_str).await;
    match client.simple_query(sql).await {
        Ok(msgs) => Seen::Done(
            msgs.iter()
                .filter_map(|m| match m {
                    M::CommandComplete(n) => Some(format!("complete {n}")),
                    M::Row(_) => Some("row".into()),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a server error: {e}"));
            Seen::Error {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                hint: db.hint().map(str::to_string),
            }
        }
    }
}

async fn still_serving(conn_str: &str) {
    let client = connect(conn_str).await;
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

fn plus_chain(name: &str, terms: usize) -> String {
    format!("CREATE VIEW {name} AS SELECT 1{}", "+1".repeat(terms))
}

#[tokio::test]
async fn deep_expressions_get_what_postgres_gives() {
    let _serial = SERIAL.lock().await;
    let (db, twin) = (fresh_db("deep"), fresh_db("deep_direct"));
    let proxy = Proxy::start();
    let through = proxy.conn_str(&db, "postgres");
    // 5,000 terms: Postgres accepts it (its default max_stack_depth takes ~6,000);
    // 100,000: Postgres refuses it with 54001, pgshift must pass that on.
    for terms in [5_000, 100_000] {
        let sql = plus_chain("v", terms);
        let want = seen(&direct(&twin), &sql).await;
        let got = seen(&through, &sql).await;
        assert_eq!(got, want, "{terms} terms");
        still_serving(&through).await;
    }
    let created = seen(&through, "SELECT 1 FROM pg_views WHERE viewname = 'v'").await;
    assert_eq!(created, Seen::Done(vec!["row".into(), "complete 1".into()]));
}

#[tokio::test]
async fn unparsed_statements_are_refused_when_configured() {
    let _serial = SERIAL.lock().await;
    let db = fresh_db("unparsed_reject");
    let proxy = Proxy::start_with(|c| {
        c.ddl.unparsed = pgshift::config::UnparsedPolicy::Reject;
        c.ddl.allow_bypass = true;
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let deep = plus_chain("v", 5_000);
    let err = client.simple_query(&deep).await.unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code().code(), "0A000", "{}", e.message());
    assert!(e.hint().unwrap().contains("ddl.unparsed"), "{:?}", e.hint());
    // Inside a transaction the refusal fails it, as a server error would.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.simple_query(&deep).await.is_err());
    let after = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(common::sqlstate(&after).as_deref(), Some("25P02"));
    client.batch_execute("ROLLBACK").await.unwrap();
    // Too large for ddl.max_parse_bytes: refused too, naming the limit.
    let big = format!("COMMENT ON DATABASE {db} IS '{}'", "x".repeat(2 << 20));
    let err = client.simple_query(&big).await.unwrap_err();
    let e = err.as_db_error().unwrap();
    assert_eq!(e.code().code(), "0A000");
    assert!(e.message().contains("max_parse_bytes"), "{}", e.message());
    // What parses is still checked as usual.
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap();
    // A session that bypasses pgshift (allowed here) gets it through.
    client
        .batch_execute("SET pgshift.bypass = on")
        .await
        .unwrap();
    client.simple_query(&deep).await.unwrap();
}

/// A statement of about 6 MB that keeps pgshift's parser busy for seconds: many
/// 2,000-term sums (the parser's protobuf output is quadratic in nesting depth).
fn slow_to_parse(bytes: usize) -> String {
    let sum = format!("1{}", "+1".repeat(2_000));
    let mut sql = String::from("CREATE VIEW slow AS SELECT ");
    while sql.len() < bytes {
        sql.push_str(&sum);
        sql.push(',');
    }
    sql.push('1');
    sql
}

#[tokio::test]
async fn a_slow_parse_does_not_delay_other_sessions() {
    let _serial = SERIAL.lock().await;
    let db = fresh_db("slow_parse");
    // One session thread: both sessions share it, as many sessions do in production.
    let proxy = Proxy::start_with(|c| {
        c.server.workers = 1;
        c.ddl.max_parse_bytes = 8 << 20;
    });
    let conn_str = proxy.conn_str(&db, "postgres");
    let other = connect(&conn_str).await;
    other.simple_query("SELECT 1").await.unwrap();
    let big = connect(&conn_str).await;
    let sql = slow_to_parse(6 << 20);
    let started = Instant::now();
    let sent = tokio::spawn(async move { big.simple_query(&sql).await.map(|_| ()) });
    let mut worst = Duration::ZERO;
    let mut queries = 0u32;
    while !sent.is_finished() || queries < 20 {
        let t = Instant::now();
        other.simple_query("SELECT 1").await.unwrap();
        worst = worst.max(t.elapsed());
        queries += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = sent.await.unwrap();
    let total = started.elapsed();
    eprintln!(
        "6 MB statement answered after {total:?} ({result:?}); {queries} SELECT 1, slowest {worst:?}"
    );
    assert!(total > Duration::from_millis(500), "the parse was not slow");
    assert!(
        worst < Duration::from_millis(100),
        "SELECT 1 took {worst:?} while another session's statement was parsed"
    );
    still_serving(&conn_str).await;
}
