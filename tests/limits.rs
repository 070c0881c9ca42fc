//! Resource bounds: a session's memory stays bounded whatever the result size, one
//! database's trouble stays in that database, and a cancel ends pgshift's own
//! waits.

mod common;

use common::binary::Binary;
use common::raw::{query, Raw};
use common::scenario::{direct, eventually, one_value};
use common::{connect, fresh_db, sqlstate, Proxy};
use std::time::{Duration, Instant};

/// `SELECT …400 MB…; CREATE INDEX …` as one Query: pgshift runs it statement by
/// statement, and the rows stream to the client as they come.
#[tokio::test]
async fn a_large_result_before_ddl_streams_through() {
    let db = fresh_db("bigresult");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute("CREATE TABLE t (a int)").await.unwrap();
    let proxy = Binary::start(&["-c", "log.level=warn"]);
    let (mut raw, _) = Raw::startup(proxy.addr(), "postgres", &db).await;
    let before = proxy.rss();
    raw.send(&query(
        "SELECT repeat('x', 1000) FROM generate_series(1, 400000); CREATE INDEX t_g ON t (a)",
    ))
    .await;
    let (mut rows, mut bytes, mut tags, mut peak) = (0u64, 0u64, Vec::new(), before);
    loop {
        let (tag, body) = raw.read_msg().await.expect("a message");
        match tag {
            b'D' => {
                rows += 1;
                bytes += body.len() as u64;
                if rows % 20_000 == 0 {
                    peak = peak.max(proxy.rss());
                }
            }
            b'C' => tags.push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()),
            b'E' => panic!("error: {}", common::raw::field(&body, b'M')),
            b'Z' => break,
            _ => {}
        }
    }
    peak = peak.max(proxy.rss());
    assert_eq!(rows, 400_000);
    assert!(bytes > 400_000_000, "{bytes}");
    assert_eq!(tags, ["SELECT 400000", "CREATE INDEX"]);
    eprintln!(
        "proxy RSS: {} MB before, {} MB at most while relaying",
        before >> 20,
        peak >> 20
    );
    assert!(peak < 64 << 20, "proxy RSS reached {} MB", peak >> 20);
    // The Query ran as one transaction, so the concurrent build ran after it.
    eventually(
        &admin,
        "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_g'::regclass",
        "true",
    )
    .await;
}

/// Anyone can take the advisory lock pgshift uses to create its schema. In that
/// database a deferral gets a clear error within seconds; another database's
/// journal keeps flowing meanwhile.
#[tokio::test]
async fn a_held_schema_lock_stays_in_its_database() {
    let stuck = fresh_db("lockheld");
    let fine = fresh_db("lockfree");
    for db in [&stuck, &fine] {
        let admin = connect(&direct(db)).await;
        admin.batch_execute("CREATE TABLE t (c int)").await.unwrap();
    }
    let holder = connect(&direct(&stuck)).await;
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({})",
            0x7067_7368_0000_0001_i64
        ))
        .await
        .unwrap();
    let p = common::scenario::proxy();
    let a = connect(&p.conn_str(&stuck, "postgres")).await;
    let b = connect(&p.conn_str(&fine, "postgres")).await;
    // The stuck database's journal writer waits for the lock...
    a.batch_execute("CREATE INDEX t_c ON t (c)").await.unwrap();
    // ...and a deferral there gets 58000 within the retry deadline.
    let started = Instant::now();
    a.batch_execute("BEGIN").await.unwrap();
    let e = a
        .batch_execute("CREATE INDEX t_d ON t (c)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}");
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(message.contains("schema lock"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    a.batch_execute("ROLLBACK").await.unwrap();
    // The other database: journal written while the first is still stuck.
    let started = Instant::now();
    b.batch_execute("CREATE INDEX t_c ON t (c)").await.unwrap();
    let fine_admin = connect(&direct(&fine)).await;
    eventually(&fine_admin, "SELECT count(*) FROM pgshift.ddl_journal", "1").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Once the lock is released the stuck database works again.
    holder
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.batch_execute("BEGIN; CREATE INDEX t_e ON t (c); COMMIT")
        .await
        .unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    let stuck_admin = connect(&direct(&stuck)).await;
    eventually(&stuck_admin, "SELECT state FROM pgshift.deferred", "done").await;
}

/// A proxy whose retries pause long between lock attempts.
fn patient_proxy() -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 100;
        c.ddl.retry_initial_ms = 4_000;
        c.ddl.retry_max_ms = 4_000;
        c.ddl.max_attempts = 10;
    })
}

/// A cancel that arrives while pgshift sleeps between lock attempts ends the
/// statement with 57014 at once; the transaction is left as Postgres leaves it.
#[tokio::test]
async fn cancel_ends_the_pause_between_lock_attempts() {
    let db = fresh_db("cancelpause");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute("CREATE TABLE t (c int)").await.unwrap();
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; SELECT * FROM t")
        .await
        .unwrap();
    let p = patient_proxy();
    for in_transaction in [false, true] {
        let client = connect(&p.conn_str(&db, "postgres")).await;
        if in_transaction {
            client.batch_execute("BEGIN").await.unwrap();
        }
        let cancel = client.cancel_token();
        let running = tokio::spawn(async move {
            let r = client.batch_execute("ALTER TABLE t ADD COLUMN x int").await;
            (r, client)
        });
        // The first attempt times out after 100 ms; then a pause of 2-6 s.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!running.is_finished());
        let sent = Instant::now();
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let (r, client) = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .unwrap()
            .unwrap();
        let e = r.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e:?}");
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "{:?}",
            sent.elapsed()
        );
        // The backend was idle during the pause: a cancel sent on to it would
        // arrive late, on whatever the session runs next.
        let next = client.batch_execute("SELECT pg_sleep(0.5)").await;
        if in_transaction {
            // A cancelled statement fails the transaction, as in Postgres.
            assert_eq!(sqlstate(&next.unwrap_err()).as_deref(), Some("25P02"));
            client.batch_execute("ROLLBACK").await.unwrap();
        } else {
            next.unwrap();
        }
    }
    assert_eq!(
        one_value(
            &admin,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'x'"
        )
        .await,
        "0"
    );
}
