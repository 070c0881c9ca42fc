//! Two pgshift processes in front of one database: a rollout driven by one
//! changes the table under the other's sessions too. Each lock window that
//! changes what the table returns (the expand, the cutover, the finish) is
//! acknowledged by every live proxy first, and each holds its own sessions'
//! statements on the table for the window and renews them after, so a client
//! of either proxy sees no error and no column it did not ask for.

mod common;

use common::rollouts::{setup, start, wait_phase};
use common::{connect, fresh_db, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A proxy like the other rollout tests' that acts on tables of any size.
fn proxy() -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.ddl.small_table_bytes = 0;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
    })
}

/// A client of `url` that uses statements prepared before anything changed,
/// as fast as it goes, until `stop`: (reads, errors, slowest).
fn reader(
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>, Duration)> {
    tokio::spawn(async move {
        let client = connect(&url).await;
        let by_id = client
            .prepare("SELECT id, amount FROM orders WHERE id = $1")
            .await
            .unwrap();
        let star = client
            .prepare("SELECT * FROM orders WHERE id = $1")
            .await
            .unwrap();
        let (mut reads, mut errors, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let id = 1 + (reads % 1000) as i64;
            let began = Instant::now();
            match client.query_one(&by_id, &[&id]).await {
                Ok(row) => match row.try_get::<_, i32>(1) {
                    Ok(v) if v == (id % 1000) as i32 => {}
                    other => errors.push(format!("by_id {id}: {other:?}")),
                },
                Err(e) => errors.push(format!("by_id: {e:?}")),
            }
            match client.query_one(&star, &[&id]).await {
                Ok(row) if row.len() == 4 => {}
                Ok(row) => errors.push(format!("star: {} columns", row.len())),
                Err(e) => errors.push(format!("star: {e:?}")),
            }
            slowest = slowest.max(began.elapsed());
            reads += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (reads, errors, slowest)
    })
}

#[tokio::test]
async fn the_other_proxys_clients_see_no_change_through_expand_cutover_and_finish() {
    let db = fresh_db("rollout_proxies");
    let admin = setup(&db).await;
    let (a, b) = (proxy(), proxy());
    let (url_a, url_b) = (a.conn_str(&db, "postgres"), b.conn_str(&db, "postgres"));
    // pgshift's schema exists before the rollout (an index built through A
    // makes it): a proxy watches only a database that has it.
    connect(&url_a)
        .await
        .batch_execute("CREATE INDEX orders_note ON orders (note)")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = [
        reader(url_a.clone(), stop.clone()),
        reader(url_b.clone(), stop.clone()),
    ];
    // B's watcher finds the schema within a second and says it is there.
    let live = "SELECT count(*) FROM pgshift.proxies WHERE heartbeat > clock_timestamp() - interval '1 second'";
    let started = Instant::now();
    // (The journal makes the schema a moment after the index.)
    while admin
        .query_one(live, &[])
        .await
        .map_or(0, |r| r.get::<_, i64>(0))
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "both proxies never beat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = start(&url_a, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rollout::request(&admin, id, Request::Finish).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for (i, r) in readers.into_iter().enumerate() {
        let (reads, errors, slowest) = r.await.unwrap();
        eprintln!("proxy {i}: {reads} reads, the slowest {slowest:?}");
        assert!(reads > 100, "proxy {i}: {reads} reads");
        assert!(
            errors.is_empty(),
            "proxy {i}: {} of {reads} reads failed: {:?}",
            errors.len(),
            &errors[..errors.len().min(4)]
        );
        assert!(
            slowest < Duration::from_millis(1_000),
            "proxy {i}: a read took {slowest:?}"
        );
    }
}

/// The same `ALTER COLUMN … TYPE` through both proxies at the same moment:
/// neither proxy knows of the other's rollout when it checks, and the database
/// lets one rollout of a column be under way. One client gets its ALTER TABLE,
/// the other 55006 naming that rollout; one rollout runs.
#[tokio::test]
async fn the_same_alter_through_both_proxies_at_once_starts_one_rollout() {
    let db = fresh_db("rollout_twice");
    let admin = setup(&db).await;
    let (a, b) = (proxy(), proxy());
    let (x, y) = (
        connect(&a.conn_str(&db, "postgres")).await,
        connect(&b.conn_str(&db, "postgres")).await,
    );
    // Both proxies know the database and its pgshift schema: they reach the
    // start together.
    for c in [&x, &y] {
        c.batch_execute("CREATE INDEX IF NOT EXISTS orders_note ON orders (note)")
            .await
            .unwrap();
    }
    let alter = "ALTER TABLE orders ALTER COLUMN amount TYPE bigint";
    let (one, two) = tokio::join!(x.batch_execute(alter), y.batch_execute(alter));
    let started = [&one, &two].iter().filter(|r| r.is_ok()).count();
    assert_eq!(started, 1, "{one:?} {two:?}");
    let refused = [one, two].into_iter().find_map(|r| r.err()).unwrap();
    let db_error = refused.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "55006", "{refused:?}");
    let live: Vec<i64> = admin
        .query(
            "SELECT id FROM pgshift.rollouts WHERE phase NOT IN ('finished', 'rolled_back')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(
        db_error.message().contains(&format!("rollout {}", live[0])),
        "{db_error:?}"
    );
    rollout::request(&admin, live[0], Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, live[0], "rolled_back", Duration::from_secs(60)).await;
}
