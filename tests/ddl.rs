//! The DDL engine against real Postgres: with a transaction holding a lock on the
//! table, an unsafe statement through pgshift must not stall application queries
//! beyond lock_timeout plus a margin, must end in the schema the original would
//! have produced, and must have sent the safe statements (read back from the
//! server's own statement log). Directly, the same scenario stalls: the test can fail.

mod common;

use common::scenario::{
    direct, eventually, logged, one_value, proxy, safe_through_pgshift, Scenario, LOCK_TIMEOUT_MS,
    TABLE,
};
use common::{connect, fresh_db, Proxy};
use std::time::{Duration, Instant};

#[tokio::test]
async fn create_index_runs_concurrently() {
    let (db, client) = safe_through_pgshift(
        "cic",
        &Scenario {
            setup: TABLE,
            // A writer transaction: plain CREATE INDEX would queue behind it and
            // every later write would queue behind CREATE INDEX.
            blocker: "UPDATE items SET qty = qty WHERE id = 1",
            ddl: "CREATE INDEX items_qty ON items (qty)",
            app: "UPDATE items SET qty = qty + 1 WHERE id = 500",
        },
    )
    .await;
    let valid = one_value(
        &client,
        "SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'items_qty'::regclass",
    )
    .await;
    assert_eq!(valid, "true");
    let sent = logged(&db);
    assert!(
        sent.iter()
            .any(|s| s.contains("CREATE INDEX CONCURRENTLY items_qty ON items")),
        "{sent:#?}"
    );
    assert!(
        !sent.iter().any(|s| s.starts_with("CREATE INDEX items_qty")),
        "{sent:#?}"
    );
}

#[tokio::test]
async fn command_tag_and_notice_are_the_originals() {
    let db = fresh_db("tag");
    let proxy = proxy();
    let (client, notices) = common::connect_noting(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    let out = client
        .simple_query("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap();
    assert!(matches!(
        out.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(0))
    ));
    // Multi-statement: a SELECT around the rewritten statement still returns its rows.
    let out = client
        .simple_query("SELECT 1; DROP INDEX t_c; SELECT 2")
        .await
        .unwrap();
    let rows: Vec<_> = out
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["1", "2"]);
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("pgshift: rewrote CREATE INDEX")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn transaction_wrapped_index_is_deferred_until_commit() {
    let db = fresh_db("defer");
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let check = connect(&direct(&db)).await;
    check.batch_execute(TABLE).await.unwrap();
    // Django-style: one statement per Query inside BEGIN … COMMIT.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("CREATE INDEX \"items_qty_1a2b3c\" ON \"items\" (\"qty\")")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO owners VALUES (1000)")
        .await
        .unwrap();
    // Nothing ran yet: no CONCURRENTLY while the client's transaction is open.
    assert_eq!(
        one_value(
            &check,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_qty_1a2b3c'"
        )
        .await,
        "0"
    );
    client.batch_execute("COMMIT").await.unwrap();
    eventually(
        &check,
        "SELECT indisvalid::text FROM pg_index WHERE indexrelid = to_regclass('items_qty_1a2b3c')",
        "true",
    )
    .await;
    eventually(
        &check,
        "SELECT state FROM pgshift.deferred ORDER BY id DESC LIMIT 1",
        "done",
    )
    .await;
    assert_eq!(
        one_value(&check, "SELECT count(*) FROM owners WHERE id = 1000").await,
        "1"
    );

    // ROLLBACK drops the deferred work with the transaction.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("CREATE INDEX items_owner ON items (owner_id)")
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        one_value(&check, "SELECT count(*) FROM pgshift.deferred").await,
        "1"
    );
    assert_eq!(
        one_value(
            &check,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_owner'"
        )
        .await,
        "0"
    );
    // The journal has both statements.
    eventually(
        &check,
        "SELECT count(*) FROM pgshift.ddl_journal WHERE outcome = 'deferred'",
        "2",
    )
    .await;
}

#[tokio::test]
async fn reject_policy_and_in_transaction_reject() {
    let db = fresh_db("reject");
    let proxy = Proxy::start_with(|c| {
        c.ddl.in_transaction = pgshift::config::InTransaction::Reject;
        c.ddl
            .rules
            .insert("create-index".into(), pgshift::sql::plan::Policy::Rewrite);
        c.ddl.user.insert(
            "md5_user".into(),
            [(
                "create-index".to_string(),
                pgshift::sql::plan::Policy::Reject,
            )]
            .into(),
        );
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let err = client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("25001"), "{err:?}");
    // The transaction failed as it would have for a server error.
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("25P02"), "{err:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
    // Autocommit: rewritten.
    client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap();

    let (user, password) = common::MD5_USER;
    let md5 = connect(&format!(
        "{} password='{password}'",
        proxy.conn_str(&db, user)
    ))
    .await;
    let err = md5
        .batch_execute("CREATE INDEX t_c2 ON t (c)")
        .await
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "0A000");
    assert!(
        db_err.hint().unwrap().contains("create-index"),
        "{db_err:?}"
    );
    md5.batch_execute("SELECT 1").await.unwrap();
}

/// A proxy where create-index runs as written under lock_timeout (policy warn), so
/// the lock retries can be watched with a plain CREATE INDEX. The stall budget is
/// off: with it, pgshift would wait for the idle blocker instead of attempting
/// (tests/stall_budget.rs).
fn warn_proxy(attempts: u32) -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = 0;
        c.ddl.lock_timeout_ms = LOCK_TIMEOUT_MS;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 200;
        c.ddl.max_attempts = attempts;
        c.ddl
            .rules
            .insert("create-index".into(), pgshift::sql::plan::Policy::Warn);
    })
}

#[tokio::test]
async fn exhausted_retries_name_the_blockers() {
    let db = fresh_db("exhaust");
    let proxy = warn_proxy(3);
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("CREATE TABLE t (c int); INSERT INTO t VALUES (1); SET application_name = 'long_writer'")
        .await
        .unwrap();
    blocker
        .batch_execute("BEGIN; UPDATE t SET c = 2")
        .await
        .unwrap();
    let pid = one_value(&blocker, "SELECT pg_backend_pid()").await;
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let started = Instant::now();
    let err = client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap_err();
    let e = err.as_db_error().expect("a server-side error");
    assert_eq!(e.code().code(), "55P03", "{e:?}");
    assert!(e.message().contains("3 attempts"), "{}", e.message());
    let detail = e.detail().unwrap_or_default();
    assert!(
        detail.contains(&format!("pid {pid}")) && detail.contains("long_writer"),
        "{detail}"
    );
    assert!(e.hint().unwrap_or_default().contains("ddl.lock_timeout_ms"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The session is usable and no index was left behind.
    client.batch_execute("SELECT 1").await.unwrap();
    blocker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        one_value(
            &blocker,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 't_c'"
        )
        .await,
        "0"
    );
}

#[tokio::test]
async fn retries_inside_a_transaction_keep_it_alive() {
    let db = fresh_db("savepoint");
    let proxy = warn_proxy(100);
    let setup = connect(&direct(&db)).await;
    setup
        .batch_execute("CREATE TABLE t (c int); CREATE TABLE log (x int)")
        .await
        .unwrap();
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("BEGIN; INSERT INTO log VALUES (1)")
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        blocker.batch_execute("COMMIT").await.unwrap();
    });
    // Fails several lock_timeouts in savepoints, then succeeds once the writer commits.
    client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap();
    release.await.unwrap();
    client
        .batch_execute("INSERT INTO log VALUES (2); COMMIT")
        .await
        .unwrap();
    assert_eq!(
        one_value(
            &setup,
            "SELECT string_agg(x::text, ',' ORDER BY x) FROM log"
        )
        .await,
        "1,2"
    );
    assert_eq!(
        one_value(
            &setup,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 't_c'"
        )
        .await,
        "1"
    );
    // lock_timeout is the client's again after pgshift's attempts.
    assert_eq!(one_value(&client, "SHOW lock_timeout").await, "0");
    let sent = logged(&db);
    let attempts = sent
        .iter()
        .filter(|s| s.contains("SAVEPOINT pgshift_step; SET LOCAL lock_timeout = '200ms'"))
        .count();
    assert!(attempts >= 2, "{sent:#?}");
}

#[tokio::test]
async fn multi_statement_queries_stay_atomic() {
    let db = fresh_db("multi");
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    // The CREATE INDEX needs CONCURRENTLY, which a multi-statement Query (an implicit
    // transaction) cannot hold: it is deferred to after the implicit COMMIT.
    client
        .batch_execute(
            "INSERT INTO t VALUES (1); CREATE INDEX t_c ON t (c); INSERT INTO t VALUES (2)",
        )
        .await
        .unwrap();
    let check = connect(&direct(&db)).await;
    eventually(
        &check,
        "SELECT indisvalid::text FROM pg_index WHERE indexrelid = to_regclass('t_c')",
        "true",
    )
    .await;
    // A failure rolls back every statement of the Query, as Postgres does.
    let err = client
        .batch_execute("INSERT INTO t VALUES (3); CREATE INDEX t_d ON t (c); SELECT 1/0")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("22012"));
    assert_eq!(
        one_value(&check, "SELECT string_agg(c::text, ',' ORDER BY c) FROM t").await,
        "1,2"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        one_value(
            &check,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 't_d'"
        )
        .await,
        "0"
    );
}

/// P/B/D/E/S for one parameterless statement, as JDBC and psycopg 3 send it.
fn extended_batch(sql: &str) -> Vec<u8> {
    use common::raw::frame;
    let mut parse = vec![0];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    [
        frame(b'P', &parse),
        frame(b'B', b"\0\0\0\0\0\0\0\0"),
        frame(b'D', b"P\0"),
        frame(b'E', b"\0\0\0\0\0"),
        frame(b'S', b""),
    ]
    .concat()
}

#[tokio::test]
async fn extended_protocol_ddl_is_rewritten_too() {
    let db = fresh_db("extended");
    let proxy = proxy();
    let setup = connect(&direct(&db)).await;
    setup.batch_execute("CREATE TABLE t (c int)").await.unwrap();
    let (mut raw, _) = common::raw::Raw::startup(proxy.addr, "postgres", &db).await;
    // A clean statement in the same shape goes through untouched; then the DDL,
    // pipelined right behind it.
    let mut bytes = extended_batch("SELECT 1");
    bytes.extend(extended_batch("CREATE INDEX t_c ON t (c)"));
    raw.send(&bytes).await;
    let first: Vec<u8> = raw.read_until(b'Z').await.iter().map(|m| m.0).collect();
    assert_eq!(first, b"12TDCZ");
    let second = raw.read_until(b'Z').await;
    let tags: Vec<u8> = second.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"12nNCZ", "{second:?}");
    assert_eq!(second[4].1, b"CREATE INDEX\0");
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("CREATE INDEX CONCURRENTLY t_c ON t")));
    // A named statement is not intercepted (it outlives its batch): it runs as sent.
    let mut named = vec![];
    named.extend(common::raw::frame(
        b'P',
        b"s1\0CREATE INDEX t_d ON t (c)\0\0\0",
    ));
    named.extend(common::raw::frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
    named.extend(common::raw::frame(b'E', b"\0\0\0\0\0"));
    named.extend(common::raw::frame(b'S', b""));
    raw.send(&named).await;
    let third: Vec<u8> = raw.read_until(b'Z').await.iter().map(|m| m.0).collect();
    assert_eq!(third, b"12CZ");
    raw.send(&common::raw::query("SELECT 42")).await;
    let last: Vec<u8> = raw.read_until(b'Z').await.iter().map(|m| m.0).collect();
    assert_eq!(last, b"TDCZ");
    // A sniffed but clean batch is forwarded; the next DDL batch is still seen.
    raw.send(&extended_batch("CREATE TABLE t2 (c int)")).await;
    let clean: Vec<u8> = raw.read_until(b'Z').await.iter().map(|m| m.0).collect();
    assert_eq!(clean, b"12nCZ");
    raw.send(&extended_batch("CREATE INDEX t2_c ON t2 (c)"))
        .await;
    let rewritten: Vec<u8> = raw.read_until(b'Z').await.iter().map(|m| m.0).collect();
    assert_eq!(rewritten, b"12nNCZ");
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("CREATE INDEX CONCURRENTLY t2_c ON t2")));
}

#[tokio::test]
async fn multi_statement_results_match_postgres() {
    let db = fresh_db("multitags");
    let proxy = proxy();
    let setup = connect(&direct(&db)).await;
    setup.batch_execute("CREATE TABLE t (c int)").await.unwrap();
    let (mut raw, _) = common::raw::Raw::startup(proxy.addr, "postgres", &db).await;
    let tags = |msgs: &[(u8, Vec<u8>)]| -> Vec<String> {
        msgs.iter()
            .filter(|m| m.0 == b'C')
            .map(|m| {
                String::from_utf8_lossy(&m.1)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .collect()
    };
    raw.send(&common::raw::query(
        "INSERT INTO t VALUES (1); CREATE INDEX t_c ON t (c); INSERT INTO t VALUES (2)",
    ))
    .await;
    let ok = raw.read_until(b'Z').await;
    assert_eq!(tags(&ok), ["INSERT 0 1", "CREATE INDEX", "INSERT 0 1"]);
    assert_eq!(ok.last().unwrap().1, b"I");
    // On failure the ErrorResponse is the last result, as with Postgres (libpq's
    // PQexec returns it, so psql and psycopg2 see the error).
    raw.send(&common::raw::query(
        "INSERT INTO t VALUES (3); CREATE INDEX t_d ON t (c); SELECT 1/0",
    ))
    .await;
    let failed = raw.read_until(b'Z').await;
    let kinds: Vec<u8> = failed.iter().map(|m| m.0).filter(|t| *t != b'N').collect();
    assert_eq!(kinds, b"CCEZ", "{failed:?}");
    assert_eq!(failed.last().unwrap().1, b"I");
}

#[tokio::test]
async fn ddl_after_an_extended_protocol_copy_is_still_handled() {
    use futures_util::SinkExt;
    let db = fresh_db("copyturns");
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (c int)")
        .await
        .unwrap();
    // tokio-postgres, like libpq, sends Sync right after Execute and again after
    // CopyDone; the server ignores the first. pgshift must not wait for its answer.
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let created = tokio::time::timeout(
        Duration::from_secs(10),
        client.batch_execute("CREATE INDEX t_c ON t (c)"),
    )
    .await
    .expect("the DDL is not stuck waiting for a ReadyForQuery that never comes");
    created.unwrap();
    assert!(logged(&db)
        .iter()
        .any(|s| s.contains("CREATE INDEX CONCURRENTLY t_c ON t")));
}

#[tokio::test]
async fn shutdown_ends_a_session_waiting_in_a_long_step() {
    let db = fresh_db("shutdown");
    let proxy = proxy();
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("CREATE TABLE t (c int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    blocker
        .batch_execute("BEGIN; UPDATE t SET c = 2")
        .await
        .unwrap();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    // CREATE INDEX CONCURRENTLY waits for the writer's transaction, in-band.
    let waiting =
        tokio::spawn(async move { client.batch_execute("CREATE INDEX t_c ON t (c)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("57P01"), "{err:?}");
    blocker.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn queries_pgshift_cannot_run_in_band_pass_through_unchanged() {
    let db = fresh_db("passthrough");
    let proxy = proxy();
    let setup = connect(&direct(&db)).await;
    setup.batch_execute("CREATE TABLE t (c int)").await.unwrap();
    // COPY data flows through the pump, so a Query holding COPY goes as it is.
    let port = proxy.port().to_string();
    let (ok, _, stderr) = common::psql(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            &db,
            "-c",
            "CREATE INDEX t_c ON t (c); COPY t FROM STDIN",
        ],
        "1\n2\n\\.\n",
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(one_value(&setup, "SELECT count(*) FROM t").await, "2");
    // With standard_conforming_strings off, pg_query and the server could split a
    // Query differently: pgshift stays out of it.
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    client
        .batch_execute("CREATE INDEX t_d ON t (c)")
        .await
        .unwrap();
    let sent = logged(&db);
    assert!(
        sent.iter()
            .any(|s| s == "CREATE INDEX t_c ON t (c); COPY t FROM STDIN"),
        "{sent:#?}"
    );
    assert!(
        sent.iter().any(|s| s == "CREATE INDEX t_d ON t (c)"),
        "{sent:#?}"
    );
}

/// A failed concurrent build leaves its index INVALID; the next build drops that
/// leftover and succeeds. An INVALID index of the same name on another table,
/// found first through search_path, is not a leftover of this build: left alone,
/// and it does not hide the real leftover.
#[tokio::test]
async fn invalid_leftovers_are_dropped_only_from_the_indexed_table() {
    let db = fresh_db("leftover");
    let check = connect(&direct(&db)).await;
    check.batch_execute(TABLE).await.unwrap();
    check
        .batch_execute("CREATE SCHEMA other; CREATE TABLE other.dup AS SELECT owner_id FROM items")
        .await
        .unwrap();
    // owner_id repeats, so these unique builds fail and leave INVALID indexes.
    for sql in [
        "CREATE UNIQUE INDEX CONCURRENTLY items_owner ON items (owner_id)",
        "CREATE UNIQUE INDEX CONCURRENTLY items_qty ON other.dup (owner_id)",
        "CREATE UNIQUE INDEX CONCURRENTLY items_qty ON items (owner_id)",
    ] {
        assert!(check.batch_execute(sql).await.is_err(), "{sql}");
    }
    let proxy = proxy();
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute("CREATE INDEX items_owner ON items (owner_id)")
        .await
        .unwrap();
    app.batch_execute("SET search_path = other, public")
        .await
        .unwrap();
    app.batch_execute("CREATE INDEX items_qty ON items (qty)")
        .await
        .unwrap();
    let indexes = one_value(
        &check,
        "SELECT string_agg(format('%s.%s %s', n.nspname, c.relname, i.indisvalid), ', ' ORDER BY n.nspname, c.relname) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname IN ('items_owner', 'items_qty')",
    )
    .await;
    assert_eq!(
        indexes,
        "other.items_qty f, public.items_owner t, public.items_qty t"
    );
}

/// A string continued after a `--` comment on a later line: Postgres joins the two
/// parts, pgshift's parser does not, so it would check other statements than the
/// ones that run. Refused, instead of running `CREATE INDEX` unchecked.
#[tokio::test]
async fn texts_split_differently_by_the_parser_are_refused() {
    let db = fresh_db("split");
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute("CREATE TABLE t (a int)")
        .await
        .unwrap();
    let text = "DO E'BEGIN NULL; END --' -- c\n'\\''; CREATE INDEX i ON t(a); -- '";
    let e = client.batch_execute(text).await.unwrap_err();
    assert_eq!(common::sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    let check = connect(&direct(&db)).await;
    assert_eq!(
        one_value(
            &check,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'i'"
        )
        .await,
        "0"
    );
    // Directly, Postgres runs both statements: the index exists.
    check.batch_execute(text).await.unwrap();
    assert_eq!(
        one_value(
            &check,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'i'"
        )
        .await,
        "1"
    );
}
