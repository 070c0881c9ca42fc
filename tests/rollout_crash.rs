//! Rollouts survive their proxy: the pgshift binary is killed with SIGKILL during
//! the backfill and during the cutover, and a new one finishes the rollout; two
//! proxies in front of one database share a rollout, exactly one driving it, and
//! killing the driver hands it to the other. The data is checked row by row.

mod common;

use common::binary::Binary;
use common::rollouts::{
    mismatches, rows_done, setup, start, wait_phase, writer, writer_with, ROWS,
};
use common::scenario::direct;
use common::{connect, fresh_db};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

fn proxy(extra: &[&str]) -> Binary {
    let mut args = vec![
        "-c",
        "ddl.small_table_bytes=0",
        "-c",
        "ddl.lock_timeout_ms=200",
        "-c",
        "ddl.retry_initial_ms=50",
        "-c",
        "ddl.retry_max_ms=200",
        "-c",
        "rollout.batch_rows=500",
        "-c",
        "rollout.latency_factor=0.0",
    ];
    args.extend_from_slice(extra);
    Binary::start(&args)
}

/// Backends holding rollout `id`'s driver lock.
async fn drivers(admin: &Client, id: i64) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid = x'70677368'::int::oid AND objid = $1::int::oid AND objsubid = 2",
            &[&(id as i32)],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn kill_9_during_backfill_and_during_cutover_then_a_new_proxy_finishes() {
    let db = fresh_db("rollout_kill");
    let admin = setup(&db).await;
    let mut first = proxy(&["-c", "rollout.rows_per_second=4000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    // INSERTs by position stop before the finish (then `amount` is last).
    let positional = Arc::new(AtomicBool::new(true));
    let direct_writer = writer_with(
        direct(&db),
        stop.clone(),
        done.clone(),
        1,
        false,
        positional.clone(),
    );
    let proxied = writer(first.conn_str(&db), stop.clone(), done.clone(), 7, true);
    let id = start(
        &first.conn_str(&db),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    first.kill();
    proxied.await.unwrap();
    let at_kill = rows_done(&admin, id).await;
    assert!(
        at_kill > 0 && at_kill < ROWS,
        "killed mid-backfill: {at_kill} rows done"
    );
    let (phase, _) = common::rollouts::phase(&admin, id).await;
    assert_eq!(phase, "backfilling");

    let mut second = proxy(&[]);
    // A client connecting makes the new proxy look at the database.
    let proxied = writer(second.conn_str(&db), stop.clone(), done.clone(), 11, true);
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    assert!(rows_done(&admin, id).await >= at_kill);

    // A transaction holding the table keeps the cutover retrying its lock window;
    // the proxy is killed in the middle of that.
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM orders WHERE id = 1")
        .await
        .unwrap();
    let control = connect(&direct(&db)).await;
    rollout::request(&control, id, Request::Cutover)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    second.kill();
    proxied.await.unwrap();
    let (phase, _) = common::rollouts::phase(&admin, id).await;
    assert_eq!(phase, "verified", "the cutover could not have happened");
    blocker.batch_execute("COMMIT").await.unwrap();

    positional.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = proxy(&["-c", "rollout.finish=auto"]);
    let proxied = writer_with(
        third.conn_str(&db),
        stop.clone(),
        done.clone(),
        13,
        false,
        positional.clone(),
    );
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    direct_writer.await.unwrap();
    proxied.await.unwrap();
    assert_eq!(mismatches(&admin).await, 0);
    let ty: String = admin
        .query_one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "bigint");
}

#[tokio::test]
async fn two_proxies_share_a_rollout_and_the_survivor_finishes_it() {
    let db = fresh_db("rollout_two");
    let admin = setup(&db).await;
    let throttled = [
        "-c",
        "rollout.rows_per_second=4000",
        "-c",
        "rollout.cutover=auto",
    ];
    let mut a = proxy(&throttled);
    let b = proxy(&throttled);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let on_a = writer(a.conn_str(&db), stop.clone(), done.clone(), 3, true);
    let on_b = writer(b.conn_str(&db), stop.clone(), done.clone(), 5, false);
    let on_direct = writer(direct(&db), stop.clone(), done.clone(), 9, false);
    let id = start(
        &a.conn_str(&db),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    // b learned of the rollout when its writer connected (before the start) or
    // learns of it on its next scan; either way exactly one proxy drives.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(drivers(&admin, id).await, 1, "exactly one driver");
    let before = rows_done(&admin, id).await;
    a.kill();
    on_a.await.unwrap();
    // A new client on b: b scans the database and stands by, then takes over.
    let _looker = connect(&b.conn_str(&db)).await;
    wait_phase(&admin, id, "cut_over", Duration::from_secs(90)).await;
    assert!(
        rows_done(&admin, id).await > before,
        "b went on with the backfill"
    );
    assert_eq!(drivers(&admin, id).await, 1);
    stop.store(true, Ordering::Relaxed);
    on_b.await.unwrap();
    on_direct.await.unwrap();
    assert_eq!(mismatches(&admin).await, 0);
}
