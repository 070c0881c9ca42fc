//! The backfill waits for replicas: a standby of the test cluster stops
//! replaying (pg_wal_replay_pause), the backfill's WAL piles up there, and the
//! backfill must stop once the standby is `rollout.max_replica_lag_bytes`
//! behind, then go on when it replays again.

mod common;

use common::rollouts::{phase, rows_done, setup, start, wait_phase, ROWS};
use common::{connect, fresh_db};
use std::time::{Duration, Instant};

async fn replica_lag(admin: &tokio_postgres::Client, id: i64) -> Option<i64> {
    admin
        .query_one(
            "SELECT replica_lag FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_backfill_waits_for_a_replica_that_falls_behind() {
    let db = fresh_db("rollout_replica");
    let admin = setup(&db).await;
    let replica = pgshift::cluster::Cluster::replica_of(common::pg()).unwrap();
    let standby = format!(
        "host=127.0.0.1 port={} dbname={db} user=postgres connect_timeout=10",
        replica.port
    );
    let r = connect(&standby).await;
    let waited = Instant::now();
    loop {
        let rows: Option<i64> = match r.query_one("SELECT count(*) FROM orders", &[]).await {
            Ok(row) => row.get(0),
            Err(_) => None,
        };
        if rows == Some(ROWS) {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the standby has {rows:?} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();

    const MAX: i64 = 256 << 10;
    let proxy = common::Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 1_000;
        c.rollout.latency_factor = 0.0;
        c.rollout.max_replica_lag_bytes = MAX as u64;
    });
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let waited = Instant::now();
    while replica_lag(&admin, id).await.is_none_or(|lag| lag <= MAX) {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "no lag over {MAX} seen: {:?}, {:?}, {} rows done",
            replica_lag(&admin, id).await,
            phase(&admin, id).await,
            rows_done(&admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopped: nothing more is done while the standby stays behind.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = rows_done(&admin, id).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = rows_done(&admin, id).await;
    assert_eq!(
        before, after,
        "the backfill went on while the standby was behind"
    );
    assert!(after < ROWS, "the backfill was done before the lag showed");
    assert_eq!(phase(&admin, id).await.0, "backfilling");

    r.batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    // The standby replays the backfill too.
    let primary: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount__pgshift_new IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(primary, ROWS);
    let waited = Instant::now();
    loop {
        let on_standby: i64 = r
            .query_one(
                "SELECT count(*) FROM orders WHERE amount__pgshift_new IS NOT NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if on_standby == ROWS {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "{on_standby} rows on the standby"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(replica);
}
