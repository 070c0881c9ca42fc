//! The cutover's lock window holds, inside pgshift, the statements of sessions
//! outside a transaction block that name the table: they wait there, not in the
//! server's lock queue behind the window's ALTER (where every later query on the
//! table would queue behind them too). Other statements go on.

mod common;

use common::rollouts::{setup, start, wait_phase, ROWS};
use common::scenario::direct;
use common::{connect, fresh_db, Proxy};
use pgshift::rollout::{self, Request};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// A backend's state and what it waits for.
async fn backend(admin: &Client, pid: i32) -> (String, Option<String>) {
    let row = admin
        .query_one(
            "SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// True once the rollout's window waits for its ACCESS EXCLUSIVE lock.
async fn window_waits(admin: &Client) -> bool {
    admin
        .query_one(
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%LOCK TABLE ONLY%ACCESS EXCLUSIVE%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_query_on_the_table_waits_out_the_window_inside_pgshift() {
    let db = fresh_db("rollout_hold");
    let admin = setup(&db).await;
    // No stall budget: the window waits for the blocker below for up to
    // lock_timeout (5 s) instead of waiting outside the queue.
    let proxy = Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = 0;
        c.ddl.lock_timeout_ms = 5_000;
        c.ddl.retry_deadline_ms = 30_000;
        c.rollout.rows_per_second = 20_000;
        c.rollout.latency_factor = 0.0;
    });
    let conn = proxy.conn_str(&db, "postgres");
    let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let reader = connect(&conn).await;
    let other = connect(&conn).await;
    let pid: i32 = reader
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Holds the table (a lock without a snapshot), so the window waits.
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS SHARE MODE")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let began = Instant::now();
    while !window_waits(&admin).await {
        assert!(began.elapsed() < Duration::from_secs(30), "no window");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read = tokio::spawn(async move {
        let rows = reader
            .simple_query("SELECT count(*) FROM Orders")
            .await
            .unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The read is in pgshift: its backend is idle, not in the lock queue.
    assert!(window_waits(&admin).await, "the window ended early");
    let (state, waits) = backend(&admin, pid).await;
    assert_eq!(state, "idle", "{waits:?}");
    assert_ne!(waits.as_deref(), Some("Lock"));
    assert!(!read.is_finished());
    // A statement that does not name the table goes on; the same session's
    // next one that does waits too, and a cancel request answers it (57014)
    // while the window goes on.
    let t = Instant::now();
    other.simple_query("SELECT 1").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        t.elapsed()
    );
    let other_pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let token = other.cancel_token();
    let second = tokio::spawn(async move {
        other
            .simple_query("SELECT count(*) FROM orders WHERE id > 10")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (state, waits) = backend(&admin, other_pid).await;
    assert_eq!(state, "idle", "{waits:?}");
    assert!(!second.is_finished());
    let t = Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = second.await.unwrap().expect_err("cancelled");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("57014"), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        t.elapsed()
    );
    assert!(window_waits(&admin).await, "the window ended early");
    blocker.batch_execute("COMMIT").await.unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(read.await.unwrap(), ROWS.to_string());
}
