//! Statements a client prepared before a rollout changed the table. Directly, the
//! same ALTER gives each of them "cached plan must not change result type"
//! (0A000), for good; a client that reads results in binary with the types it was
//! told (tokio-postgres here, like PgJDBC past prepareThreshold or psycopg's binary
//! cursors) cannot even be given the new type. Through pgshift each session
//! prepares them again before it next uses one, with the result types the client
//! knows.

mod common;

use common::rollouts::{mismatches, proxy, setup, start, wait_phase};
use common::{connect, fresh_db};
use pgshift::rollout::{self, Request};
use std::time::Duration;
use tokio_postgres::{Client, Statement};

/// The statements an application prepared, and how it uses them.
struct App {
    client: Client,
    by_id: Statement,
    star: Statement,
    bump: Statement,
}

impl App {
    async fn prepare(client: Client) -> App {
        let by_id = client
            .prepare("SELECT id, amount FROM orders WHERE id = $1")
            .await
            .unwrap();
        let star = client
            .prepare("select * from ORDERS where id = $1")
            .await
            .unwrap();
        let bump = client
            .prepare("UPDATE orders SET amount = $2, shadow = $2 WHERE id = $1 RETURNING amount")
            .await
            .unwrap();
        App {
            client,
            by_id,
            star,
            bump,
        }
    }

    /// Uses every statement; the values come back as the types the client knows.
    async fn use_all(&self, id: i64, amount: i32, when: &str) {
        let row = self
            .client
            .query_one(&self.by_id, &[&id])
            .await
            .unwrap_or_else(|e| panic!("{when}: by_id: {e:?}"));
        assert_eq!(row.get::<_, i64>(0), id, "{when}");
        let before: i32 = row.get(1);
        let row = self
            .client
            .query_one(&self.star, &[&id])
            .await
            .unwrap_or_else(|e| panic!("{when}: star: {e:?}"));
        assert_eq!(row.len(), 4, "{when}: the application's four columns");
        assert_eq!(row.get::<_, i32>(1), before, "{when}");
        let row = self
            .client
            .query_one(&self.bump, &[&id, &amount])
            .await
            .unwrap_or_else(|e| panic!("{when}: bump: {e:?}"));
        assert_eq!(row.get::<_, i32>(0), amount, "{when}");
    }
}

#[tokio::test]
async fn statements_prepared_before_a_rollout_keep_working_through_a_rollback() {
    through_the_rollout("rollout_prepared_back", Request::Rollback, "rolled_back").await;
}

#[tokio::test]
async fn statements_prepared_before_a_rollout_keep_working_through_the_finish() {
    through_the_rollout("rollout_prepared_finish", Request::Finish, "finished").await;
}

/// Statements prepared before the rollout, used through it: the new column, the
/// cutover (also in a transaction open across it), then `end`.
async fn through_the_rollout(name: &str, end: Request, ended: &str) {
    let db = fresh_db(name);
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let app = App::prepare(connect(&url).await).await;
    // In a transaction that is open across the change.
    let in_tx = App::prepare(connect(&url).await).await;
    app.use_all(1, 11, "before").await;

    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    app.use_all(2, 12, "mirrored").await;
    in_tx.use_all(3, 13, "mirrored, the other session").await;

    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    // A transaction that has not touched the table (the cutover would wait for
    // it) is open across the cutover: its statements are renewed inside it.
    in_tx.client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    // The proxy learns of the cutover when its driver next reads the rollout, a
    // moment after it committed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.use_all(4, 14, "cut over").await;
    in_tx.use_all(5, 15, "cut over, in a transaction").await;
    in_tx.client.batch_execute("COMMIT").await.unwrap();

    // Prepared after the cutover: the new type, as directly after the ALTER.
    let fresh = connect(&url).await;
    let late = fresh
        .prepare("SELECT amount FROM orders WHERE id = $1")
        .await
        .unwrap();
    let row = fresh.query_one(&late, &[&6i64]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 6);

    // Rolled back, the column is an integer again; finished, pgshift's old column
    // is gone: each statement still returns what it was prepared to return.
    rollout::request(&admin, id, end).await.unwrap();
    wait_phase(&admin, id, ended, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.use_all(7, 17, ended).await;
    let row = fresh
        .query_one(&late, &[&6i64])
        .await
        .unwrap_or_else(|e| panic!("late, {ended}: {e:?}"));
    assert_eq!(row.get::<_, i64>(0), 6);
    assert_eq!(mismatches(&admin).await, 0);
}

#[tokio::test]
async fn a_prepared_statement_in_a_loop_sees_no_error_through_the_cutover() {
    let db = fresh_db("rollout_prepared_loop");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    // Prepared before the cutover, used as fast as it goes while it happens.
    let client = connect(&url).await;
    let by_id = client
        .prepare("SELECT id, amount FROM orders WHERE id = $1")
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let reader = tokio::spawn(async move {
        let (mut reads, mut errors, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let id = 1 + (reads % 1000) as i64;
            let began = std::time::Instant::now();
            match client.query_one(&by_id, &[&id]).await {
                Ok(row) => assert_eq!(row.get::<_, i32>(1), (id % 1000) as i32),
                Err(e) => errors.push(format!("{e:?}")),
            }
            slowest = slowest.max(began.elapsed());
            reads += 1;
        }
        (reads, errors, slowest)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, errors, slowest) = reader.await.unwrap();
    eprintln!("{reads} reads, the slowest {slowest:?}");
    // Held for one lock window at most (lock_timeout 200 ms, then the swap).
    assert!(
        slowest < Duration::from_millis(1_000),
        "a read took {slowest:?}"
    );
    assert!(reads > 100, "{reads} reads");
    assert!(
        errors.is_empty(),
        "{} of {reads} reads failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
}

#[tokio::test]
async fn a_transaction_that_begins_before_a_change_can_still_set_its_isolation() {
    let db = fresh_db("rollout_prepared_isolation");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let app = App::prepare(connect(&url).await).await;
    app.client.batch_execute("BEGIN").await.unwrap();
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    // The backfill is done before the transaction's snapshot: a SERIALIZABLE
    // transaction that updates a row the backfill updated after its snapshot
    // fails with 40001, as the README says (not what this test is about).
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    // The session's statements are stale now; a look at the server's list before
    // this would make it fail ("must be called before any query").
    app.client
        .batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await
        .unwrap_or_else(|e| panic!("SET TRANSACTION: {e:?}"));
    app.use_all(8, 18, "serializable, after the change").await;
    let level: String = app
        .client
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "serializable");
    app.client.batch_execute("COMMIT").await.unwrap();
}

/// pgbench `-M prepared` (libpq's PQprepare, which never describes the statement:
/// each execution's portal tells the client its columns) reading and writing the
/// column through the cutover: no client aborts.
#[tokio::test]
async fn libpq_prepared_statements_run_through_the_cutover() {
    let db = fresh_db("rollout_prepared_libpq");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let script = std::env::temp_dir().join(format!("pgshift-{db}.sql"));
    std::fs::write(
        &script,
        "\\set id random(1, 1000)\n\
         SELECT amount FROM orders WHERE id = :id;\n\
         UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id = :id RETURNING amount;\n",
    )
    .unwrap();
    let pgbench = pgshift::cluster::bin_dir().unwrap().join("pgbench");
    let bench = std::process::Command::new(&pgbench)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-n", "-M", "prepared", "-c", "2", "-T", "4", "-f"])
        .arg(&script)
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    let out = tokio::task::spawn_blocking(move || bench.wait_with_output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "pgbench: {stderr}\n{stdout}");
    assert!(!stderr.contains("aborted"), "{stderr}");
    assert_eq!(mismatches(&admin).await, 0);
    let _ = std::fs::remove_file(script);
}

/// A fresh database `name` whose `orders.amount` rolls out to bigint through a
/// new proxy, verified and waiting for its cutover: (database, a direct
/// connection, the proxy, the rollout's id).
async fn verified(name: &str) -> (String, Client, common::Proxy, i64) {
    let db = fresh_db(name);
    let admin = setup(&db).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    (db, admin, proxy, id)
}

/// A client program that reads through the cutover until a stop file appears, as
/// `reads errors wrong [messages]` on its output.
async fn reader_through_the_cutover(name: &str, command: &[&str]) {
    let (db, admin, proxy, id) = verified(name).await;
    let stop = std::env::temp_dir().join(format!("pgshift-{db}.stop"));
    let _ = std::fs::remove_file(&stop);
    let _ = std::fs::remove_file(format!("{}.ready", stop.display()));
    let (libpq, jdbc) = (
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            proxy.port()
        ),
        format!(
            "jdbc:postgresql://127.0.0.1:{}/{db}?user=postgres&sslmode=disable",
            proxy.port()
        ),
    );
    let args: Vec<String> = command
        .iter()
        .map(|a| a.replace("{libpq}", &libpq).replace("{jdbc}", &jdbc))
        .chain([stop.display().to_string()])
        .collect();
    let mut reader = std::process::Command::new(&args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    // The client has started (a JVM compiling its source may take seconds) and
    // passed PgJDBC's prepareThreshold.
    let ready = std::path::PathBuf::from(format!("{}.ready", stop.display()));
    let began = std::time::Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = reader.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            let _ = reader.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("{} ended before it was ready ({status}): {err}", args[0]);
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{} did not start",
            args[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(&ready);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&stop, "").unwrap();
    let out = tokio::task::spawn_blocking(move || reader.wait_with_output().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_file(&stop);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = stdout
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    let (reads, errors, wrong) = (
        counts.next().unwrap(),
        counts.next().unwrap(),
        counts.next().unwrap(),
    );
    assert!(reads > 100, "{stdout}");
    assert_eq!((errors, wrong), (0, 0), "{stdout}");
}

/// psycopg 3 with a binary cursor and a prepared statement
/// (tests/clients/psycopg_reader.py): no error, no wrong value.
#[tokio::test]
async fn psycopg_binary_prepared_reads_run_through_the_cutover() {
    // Debian's python3, where scripts/deps.sh installs python3-psycopg.
    let python = match std::path::Path::new("/usr/bin/python3").exists() {
        true => "/usr/bin/python3",
        false => "python3",
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/psycopg_reader.py"
    );
    reader_through_the_cutover("rollout_prepared_psycopg", &[python, script, "{libpq}"]).await;
}

/// PgJDBC past prepareThreshold, binary int4 (tests/clients/JdbcReader.java, run by
/// the JDK's source launcher with Debian's PgJDBC jar).
#[tokio::test]
async fn pgjdbc_prepared_reads_run_through_the_cutover() {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/JdbcReader.java");
    reader_through_the_cutover(
        "rollout_prepared_pgjdbc",
        &[
            "java",
            "-cp",
            "/usr/share/java/postgresql.jar",
            source,
            "{jdbc}",
        ],
    )
    .await;
}

/// One turn (a pipeline under one Sync) that runs longer than a lock window
/// waits for turns (250 ms), holding no lock on the table, then uses a
/// statement pgshift rewrote to set the new column. Were the cutover to rename
/// the column meanwhile, that Bind would be planned again and fail with 42703,
/// where directly it succeeds; the cutover waits for the turn instead (its
/// attempt is tried again), and the turn sees no error. (A turn that wrote the
/// table first holds its lock, and the cutover's lock waits for it anyway.)
#[tokio::test]
async fn a_long_turn_using_a_rewritten_statement_holds_off_the_cutover() {
    use bytes::BytesMut;
    use common::raw::{first_error, Raw};
    use pgshift::wire::backend;
    let (db, admin, proxy, id) = verified("prepared_long_turn").await;
    let (mut raw, _) = Raw::startup(proxy.addr, "postgres", &db).await;
    let mut out = BytesMut::new();
    backend::parse(
        &mut out,
        "w",
        "UPDATE orders SET amount = $1 WHERE id = $2",
        &[],
    );
    backend::sync(&mut out);
    raw.send(&out).await;
    let parsed = raw.read_until(b'Z').await;
    assert_eq!(first_error(&parsed), None);
    // The premise: the server holds the rewritten text.
    raw.send(&common::raw::query(
        "SELECT statement FROM pg_prepared_statements WHERE name = 'w'",
    ))
    .await;
    let shown = raw.read_until(b'Z').await;
    assert!(
        shown
            .iter()
            .any(|(t, b)| *t == b'D' && String::from_utf8_lossy(b).contains("amount__pgshift_new")),
        "{shown:?}"
    );
    let mut turn = BytesMut::new();
    backend::parse(&mut turn, "", "SELECT pg_sleep(5)", &[]);
    backend::bind_execute_params(&mut turn, "", &[]);
    backend::bind_execute_params(&mut turn, "w", &[Some("12"), Some("1")]);
    backend::sync(&mut turn);
    raw.send(&turn).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    // The cutover's first attempts come while the turn sleeps.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (during, _) = common::rollouts::phase(&admin, id).await;
    let replies = raw.read_until(b'Z').await;
    assert_eq!(first_error(&replies), None, "{replies:?}");
    assert_eq!(during, "verified", "the cutover did not wait for the turn");
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    let row = admin
        .query_one(
            "SELECT amount, amount__pgshift_old FROM orders WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (12, 12));
}
