//! A table without a primary key rolls out too: the backfill walks it by pages
//! (TID ranges). A row version the mirror did not write stays where it is until
//! it is updated or the table is rewritten; a VACUUM FULL in the middle of the
//! walk moves rows behind its checkpoint, and the walk must start over.

mod common;

use common::rollouts::{column_type, mismatches, phase, rows_done, setup, start, wait_phase};
use common::rollouts::{writer_with, ROWS};
use common::scenario::direct;
use common::{connect, fresh_db};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn wait_paused(admin: &tokio_postgres::Client, id: i64, paused: bool) {
    let waited = Instant::now();
    while admin
        .query_one("SELECT paused FROM pgshift.rollouts WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get::<_, bool>(0)
        != paused
    {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "paused is not {paused}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_table_without_a_primary_key_is_walked_by_pages() {
    let db = fresh_db("rollout_nokey");
    let admin = setup(&db).await;
    // A unique index, not a primary key: the writers' ON CONFLICT (id) still works.
    admin
        .batch_execute(
            "ALTER TABLE orders DROP CONSTRAINT orders_pkey;
             CREATE UNIQUE INDEX orders_id ON orders (id);",
        )
        .await
        .unwrap();
    let proxy = common::Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 1_000;
        c.rollout.rows_per_second = 4_000;
        c.rollout.latency_factor = 0.0;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    // INSERTs by position stop before the finish (then `amount` is last).
    let positional = Arc::new(AtomicBool::new(true));
    let w = |conn: String, seed: i64| {
        writer_with(
            conn,
            stop.clone(),
            done.clone(),
            seed,
            false,
            positional.clone(),
        )
    };
    let writers = vec![
        w(proxy.conn_str(&db, "postgres"), 0),
        w(direct(&db), 1_000_000),
    ];
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let client = connect(&direct(&db)).await;
    let waited = Instant::now();
    while rows_done(&admin, id).await < ROWS / 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "{:?}",
            phase(&admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Midway: the table is rewritten. The rows the walk has not reached yet
    // move to the pages it has passed.
    rollout::request(&client, id, Request::Pause).await.unwrap();
    wait_paused(&admin, id, true).await;
    let before: String = admin
        .query_one("SELECT pg_relation_filenode('orders')::text", &[])
        .await
        .unwrap()
        .get(0);
    admin.batch_execute("VACUUM FULL orders").await.unwrap();
    let after: String = admin
        .query_one("SELECT pg_relation_filenode('orders')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(before, after);
    rollout::request(&client, id, Request::Resume)
        .await
        .unwrap();
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    // The backfill left nothing for the verify pass to repair.
    let repaired: i64 = admin
        .query_one(
            "SELECT COALESCE(repaired, 0) FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(repaired, 0, "the walk missed rows the rewrite moved");
    rollout::request(&client, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    positional.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rollout::request(&client, id, Request::Finish)
        .await
        .unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "writers wrote too little"
    );
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
    // Row by row: every row's amount is what its writer stored beside it, and
    // no row was lost or added.
    assert_eq!(mismatches(&admin).await, 0);
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM orders WHERE id <= $1", &[&ROWS])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, ROWS);
}
