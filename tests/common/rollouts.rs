//! Helpers of the rollout tests: a table whose writers store what they wrote to
//! `amount` in `shadow` too, in the same statement, so that the data check is row
//! by row: after a rollout, `amount` equals `shadow` everywhere.

use super::scenario::direct;
use super::{connect, connect_noting};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

pub const ROWS: i64 = 20_000;

/// A row of `orders` (note 'bad') that breaks a NOT VALID CHECK constraint
/// (`note_ok`): no UPDATE of it succeeds, a backfill's included.
pub const NOT_VALID_ROW: &str = "INSERT INTO orders (amount, shadow, note) VALUES (5, 5, 'bad');
     ALTER TABLE orders ADD CONSTRAINT note_ok CHECK (note <> 'bad') NOT VALID;";

/// A proxy for a rollout test: short lock attempts, batches that a 20,000-row
/// table fills in a few passes, no latency governor (its pace would depend on
/// how busy the test host is; tests/rollout.rs tests it on its own).
pub fn proxy() -> super::Proxy {
    super::Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
    })
}

/// A proxy for a rollout test that goes through lock windows: short lock
/// attempts retried quickly for up to 30 s, batches of 2,000 rows (at least
/// 100) at 20,000 rows/s, no latency governor; `more` sets what a test needs
/// on top.
pub fn paced_proxy(more: impl FnOnce(&mut pgshift::config::Config)) -> super::Proxy {
    super::Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 400;
        c.ddl.retry_deadline_ms = 30_000;
        c.rollout.batch_rows = 2_000;
        c.rollout.min_batch_rows = 100;
        c.rollout.rows_per_second = 20_000;
        c.rollout.latency_factor = 0.0;
        more(c);
    })
}

pub async fn setup(db: &str) -> Client {
    let admin = connect(&direct(db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 7, shadow int, note text);
             INSERT INTO orders (amount, shadow, note) SELECT g % 1000, g % 1000, 'n' || g FROM generate_series(1, {ROWS}) g;
             ANALYZE orders;"
        ))
        .await
        .unwrap();
    admin
}

/// Starts the rollout through pgshift (`conn`); returns its id from the NOTICE.
pub async fn start(conn: &str, sql: &str) -> i64 {
    let (client, notices) = connect_noting(conn).await;
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let tag = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::CommandComplete(_) => Some(()),
        _ => None,
    });
    assert!(tag.is_some(), "no command tag");
    let notices = notices.lock().unwrap().clone();
    let line = notices
        .iter()
        .find(|n| n.contains("started rollout"))
        .unwrap_or_else(|| panic!("no rollout NOTICE in {notices:?}"));
    line.split("started rollout ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no id in {line}"))
}

pub async fn phase(admin: &Client, id: i64) -> (String, Option<String>) {
    let row = admin
        .query_one(
            "SELECT phase, error FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Rows the rollout's backfill has done.
pub async fn rows_done(admin: &Client, id: i64) -> i64 {
    admin
        .query_one(
            "SELECT rows_done FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

pub async fn wait_phase(admin: &Client, id: i64, want: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let (p, error) = phase(admin, id).await;
        if p == want {
            return;
        }
        assert!(
            p != "failed" && started.elapsed() < limit,
            "rollout {id} is {p} (error {error:?}), waited {:?} for {want}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn column_type(admin: &Client, column: &str) -> Option<String> {
    admin
        .query_opt(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = $1 AND NOT attisdropped",
            &[&column],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Rows where `amount` differs from what the writer stored next to it.
pub async fn mismatches(admin: &Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Writers until `stop`: single-row and multi-row INSERTs (by name and by
/// position), INSERT … ON CONFLICT,
/// UPDATEs with expressions, prepared statements, through `conn`. Counts commits.
/// A `tolerant` writer stops at its first error (its proxy was killed): a failed
/// statement committed nothing.
pub fn writer(
    conn: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    seed: i64,
    tolerant: bool,
) -> tokio::task::JoinHandle<()> {
    writer_with(
        conn,
        stop,
        done,
        seed,
        tolerant,
        Arc::new(AtomicBool::new(true)),
    )
}

/// A writer whose INSERTs by position stop when `positional` turns false: after
/// the rollout finishes, `amount` is the table's last column, and a positional
/// INSERT means other columns than before (as pgshift's README says).
pub fn writer_with(
    conn: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    seed: i64,
    tolerant: bool,
    positional: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = connect(&conn).await;
        let update = c
            .prepare("UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id = $1")
            .await
            .unwrap();
        let mut i = seed;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let id = (i * 7919) % ROWS + 1;
            let result = match i % 5 {
                0 => c.execute(&update, &[&id]).await.map(drop),
                1 => c
                    .batch_execute(&format!(
                        "INSERT INTO orders (amount, shadow) VALUES ({v}, {v}), ({w}, {w})",
                        v = i % 5000,
                        w = (i + 1) % 5000
                    ))
                    .await,
                2 => c
                    .batch_execute(&format!(
                        "INSERT INTO orders (id, amount, shadow) VALUES ({id}, 1, 1) \
                         ON CONFLICT (id) DO UPDATE SET amount = orders.amount * 2 % 100000, shadow = orders.shadow * 2 % 100000"
                    ))
                    .await,
                3 if positional.load(Ordering::Relaxed) => c
                    .batch_execute(&format!(
                        // By position: after the cutover the old column stands
                        // where `amount` stood, and `amount` is last; the
                        // mirror gives `amount` the value.
                        "INSERT INTO orders VALUES (DEFAULT, {v}, {v}, 'positional')",
                        v = i % 7000
                    ))
                    .await,
                _ => c
                    .batch_execute(&format!("UPDATE orders SET amount = {v}, shadow = {v} WHERE id = {id}", v = i % 9000))
                    .await,
            };
            match result {
                Ok(()) => {}
                Err(e) if tolerant => {
                    eprintln!("tolerant writer on {conn} stopped: {e:?}");
                    return;
                }
                Err(e) => panic!("writer on {conn}: {e:?}"),
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Every comment on an index or constraint of the database: kind, table,
/// name, text.
pub async fn comments(admin: &Client) -> Vec<(String, String, String, String)> {
    admin
        .query(
            "SELECT 'index', t.relname::text, c.relname::text, d.description
               FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
               JOIN pg_index x ON x.indexrelid = c.oid JOIN pg_class t ON t.oid = x.indrelid
             UNION ALL
             SELECT 'constraint', t.relname::text, k.conname::text, d.description
               FROM pg_description d JOIN pg_constraint k ON k.oid = d.objoid AND d.classoid = 'pg_constraint'::regclass
               JOIN pg_class t ON t.oid = k.conrelid
             ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}
