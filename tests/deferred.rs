//! Deferred work (steps that cannot run inside the client's transaction) runs on
//! the client's own session as soon as the transaction ends, however it ends: a
//! simple COMMIT, an extended-protocol one, a COMMIT followed by Terminate or a
//! closed socket, a savepoint rolled back. The client's next statement waits for
//! it, and a cancel answers that statement without touching the work.

mod common;

use common::scenario::{direct, eventually, one_value, proxy};
use common::{connect, fresh_db, sqlstate};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const SETUP: &str =
    "CREATE TABLE t (c int); INSERT INTO t SELECT g FROM generate_series(1, 1000) g";

/// `true`, `false` or `missing`: the index's state.
fn valid(name: &str) -> String {
    format!("SELECT coalesce((SELECT indisvalid::text FROM pg_index WHERE indexrelid = to_regclass('{name}')), 'missing')")
}

async fn index_valid(admin: &tokio_postgres::Client, name: &str) -> String {
    one_value(admin, &valid(name)).await
}

/// A table whose deferred index build will wait: a direct session holds an open
/// write on it. Returns that session (COMMIT it to let the build finish), an
/// admin session and a proxy.
async fn waiting_build(db: &str) -> (Client, Client, common::Proxy) {
    let admin = connect(&direct(db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let blocker = connect(&direct(db)).await;
    blocker
        .batch_execute("BEGIN; INSERT INTO t VALUES (0)")
        .await
        .unwrap();
    (blocker, admin, proxy())
}

#[tokio::test]
async fn an_extended_protocol_commit_runs_the_work_at_once() {
    let db = fresh_db("extcommit");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute("BEGIN; CREATE INDEX t_c ON t (c)")
        .await
        .unwrap();
    // tokio-postgres prepares a named statement and binds it: pgshift cannot
    // answer it, only see the transaction end.
    client.execute("COMMIT", &[]).await.unwrap();
    // No further message from the client: the work starts on its own.
    eventually(&admin, &valid("t_c"), "true").await;
    eventually(&admin, "SELECT state FROM pgshift.deferred", "done").await;
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn work_finishes_after_the_client_leaves() {
    let db = fresh_db("leave");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let p = proxy();
    // COMMIT then Terminate (tokio-postgres sends it on drop), pipelined.
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute("BEGIN; CREATE INDEX t_a ON t (c)")
        .await
        .unwrap();
    let commit = client.execute("COMMIT", &[]);
    commit.await.unwrap();
    drop(client);
    eventually(&admin, &valid("t_a"), "true").await;
    // A client that closes its socket right after a simple-protocol COMMIT.
    let mut raw = common::raw::Raw::startup(p.addr, "postgres", &db).await.0;
    raw.send(&common::raw::query("BEGIN; CREATE INDEX t_b ON t (c)"))
        .await;
    raw.read_until(b'Z').await;
    raw.send(&common::raw::query("COMMIT")).await;
    drop(raw);
    eventually(&admin, &valid("t_b"), "true").await;
    eventually(
        &admin,
        "SELECT string_agg(state, ',') FROM pgshift.deferred",
        "done,done",
    )
    .await;
}

#[tokio::test]
async fn a_rolled_back_savepoint_takes_its_deferral_with_it() {
    let db = fresh_db("savepoint");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    for sql in [
        "BEGIN",
        "SAVEPOINT a",
        "CREATE INDEX t_gone ON t (c)",
        "ROLLBACK TO SAVEPOINT a",
        "CREATE INDEX t_kept ON t (c)",
        "COMMIT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(index_valid(&admin, "t_kept").await, "true");
    assert_eq!(index_valid(&admin, "t_gone").await, "missing");
    assert_eq!(
        one_value(&admin, "SELECT count(*) FROM pgshift.deferred").await,
        "1"
    );
}

/// The deferred build waits behind an open writer; meanwhile the client's next
/// statement waits, and cancelling it answers 57014 within a second while the
/// build goes on.
#[tokio::test]
async fn cancel_answers_a_statement_waiting_for_deferred_work() {
    let db = fresh_db("holdcancel");
    let (blocker, admin, p) = waiting_build(&db).await;
    let client = connect(&p.conn_str(&db, "postgres")).await;
    let started = Instant::now();
    client
        .batch_execute("BEGIN; CREATE INDEX t_c ON t (c); COMMIT")
        .await
        .unwrap();
    // The COMMIT is answered at once, not after the build.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let cancel = client.cancel_token();
    let waiting = tokio::spawn(async move {
        let r = client.simple_query("SELECT 42").await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the statement waits for the deferred build"
    );
    let sent = Instant::now();
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, client) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    // The build was not cancelled: it still waits for the writer.
    assert_eq!(
        one_value(
            &admin,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%'"
        )
        .await,
        "1"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    // The next statement waits for the build, then runs.
    let rows = client.simple_query("SELECT 7").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("7"))
    );
    assert_eq!(index_valid(&admin, "t_c").await, "true");
    assert_eq!(
        one_value(&admin, "SELECT state FROM pgshift.deferred").await,
        "done"
    );
}

/// A row whose session died (a proxy killed after the COMMIT) is marked
/// interrupted by the next proxy and not run by anyone; malformed rows do not
/// stop anything either.
#[tokio::test]
async fn rows_of_dead_sessions_are_marked_interrupted() {
    let db = fresh_db("interrupted");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute("BEGIN; CREATE INDEX t_c ON t (c); COMMIT")
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    // As a dead proxy would leave them: committed, never finished; and garbage.
    admin
        .batch_execute(
            "SELECT pgshift.defer('CREATE INDEX t_late ON t (c)', 'create-index', \
               '[{\"sql\": \"CREATE INDEX CONCURRENTLY t_late ON t (c)\", \"kind\": \"Sql\", \"lock\": \"ShareUpdateExclusive\", \"long\": true, \"placement\": \"OutsideTransaction\"}]', 'public', 'postgres');
             INSERT INTO pgshift.deferred (username, search_path, statement, rule, steps) VALUES ('x', 'x', 'x', 'x', '{}')",
        )
        .await
        .unwrap();
    let pid = one_value(&admin, "SELECT pg_backend_pid()").await;
    drop(admin);
    let admin = connect(&direct(&db)).await;
    eventually(
        &admin,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        "0",
    )
    .await;
    drop(client);
    drop(p);
    let later = proxy();
    let client = connect(&later.conn_str(&db, "postgres")).await;
    eventually(
        &admin,
        "SELECT string_agg(state, ',' ORDER BY id) FROM pgshift.deferred",
        "done,interrupted,interrupted",
    )
    .await;
    assert_eq!(index_valid(&admin, "t_late").await, "missing");
    // Deferred work still runs in that database.
    client
        .batch_execute("BEGIN; CREATE INDEX t_d ON t (c); COMMIT")
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(index_valid(&admin, "t_d").await, "true");
}

/// Endings that leave deferred work no moment to run between two transactions
/// are refused, and the transaction fails as with any error.
#[tokio::test]
async fn prepare_transaction_and_commit_and_chain_are_refused_with_deferred_work() {
    let db = fresh_db("twophase");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    for ending in ["PREPARE TRANSACTION 'pgshift_t'", "COMMIT AND CHAIN"] {
        client
            .batch_execute("BEGIN; CREATE INDEX t_c ON t (c)")
            .await
            .unwrap();
        let e = client.batch_execute(ending).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{ending}: {e:?}");
        let hint = e
            .as_db_error()
            .unwrap()
            .hint()
            .unwrap_or_default()
            .to_string();
        assert!(!hint.is_empty(), "{ending}");
        // The transaction failed; ROLLBACK ends it and nothing is left behind.
        let next = client.batch_execute("SELECT 1").await.unwrap_err();
        assert_eq!(sqlstate(&next).as_deref(), Some("25P02"));
        client.batch_execute("ROLLBACK").await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        assert_eq!(index_valid(&admin, "t_c").await, "missing");
    }
    // Without deferred work both pass through as usual.
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1); COMMIT AND CHAIN")
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

/// The settings the statement ran under are the deferred steps' too: here a
/// read-write transaction in a session whose default is read-only.
#[tokio::test]
async fn deferred_steps_run_under_the_statements_settings() {
    let db = fresh_db("replay");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute(SETUP).await.unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute(
            "SET default_transaction_read_only = on; BEGIN READ WRITE; \
             SET LOCAL maintenance_work_mem = '77MB'; CREATE INDEX t_c ON t (c); COMMIT",
        )
        .await
        .unwrap();
    let rows = client
        .simple_query("SELECT current_setting('default_transaction_read_only'), current_setting('maintenance_work_mem')")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &rows[1] else {
        panic!("{rows:?}")
    };
    // The session's own settings are back.
    assert_eq!((r.get(0), r.get(1)), (Some("on"), Some("64MB")));
    assert_eq!(index_valid(&admin, "t_c").await, "true");
    assert_eq!(
        one_value(&admin, "SELECT state FROM pgshift.deferred").await,
        "done"
    );
}

/// Notifications that arrive while the deferred build runs reach the client
/// whole and in order.
#[tokio::test]
async fn notifications_during_deferred_work_arrive_intact() {
    use futures_util::StreamExt;
    let db = fresh_db("notify");
    let (blocker, admin, p) = waiting_build(&db).await;
    let (client, mut connection) =
        tokio_postgres::connect(&p.conn_str(&db, "postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute("LISTEN ch; BEGIN; CREATE INDEX t_c ON t (c); COMMIT")
        .await
        .unwrap();
    admin
        .batch_execute(
            "SELECT pg_notify('ch', g::text || repeat('y', 500)) FROM generate_series(1, 3000) g",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        got.push(n);
    }
    assert_eq!(got.len(), 3000);
    for (i, n) in got.iter().enumerate() {
        assert_eq!(n, &format!("{}{}", i + 1, "y".repeat(500)));
    }
    assert_eq!(index_valid(&admin, "t_c").await, "true");
}

/// A test runner creates a database through pgshift, runs migrations with deferred
/// DDL in it, and drops it at once: pgshift's own connection to it must not be in
/// the way (Postgres refuses DROP DATABASE while other sessions are connected).
#[tokio::test]
async fn a_database_with_deferred_work_can_be_dropped_at_once() {
    let runner_db = fresh_db("dropper");
    let p = proxy();
    let runner = connect(&p.conn_str(&runner_db, "postgres")).await;
    let test_db = format!("{runner_db}_test");
    for round in 0..2 {
        runner
            .batch_execute(&format!("CREATE DATABASE {test_db}"))
            .await
            .unwrap();
        let app = connect(&p.conn_str(&test_db, "postgres")).await;
        app.batch_execute(SETUP).await.unwrap();
        app.batch_execute("BEGIN; CREATE INDEX t_c ON t (c); COMMIT")
            .await
            .unwrap();
        app.simple_query("SELECT 1").await.unwrap();
        let check = connect(&direct(&test_db)).await;
        assert_eq!(index_valid(&check, "t_c").await, "true", "round {round}");
        drop(check);
        drop(app);
        tokio::time::sleep(Duration::from_millis(200)).await;
        runner
            .batch_execute(&format!("DROP DATABASE {test_db}"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
    }
}

/// A RENAME in a table this transaction deferred steps on is refused: the steps
/// name the table, its columns and constraints as they were, and after COMMIT
/// would fail (SET NOT NULL on a column no longer there) or miss. Directly the
/// statements all run inside the transaction. A rename the steps do not name (in
/// another table, or another column) goes through.
#[tokio::test]
async fn a_rename_under_deferred_steps_is_refused() {
    let db = fresh_db("renamedeferred");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(&format!("{SETUP}; CREATE TABLE other (x int)"))
        .await
        .unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute(
            "BEGIN; ALTER TABLE t ADD COLUMN e int; ALTER TABLE t ALTER COLUMN c SET NOT NULL; \
             ALTER TABLE other RENAME COLUMN x TO y; ALTER TABLE t RENAME COLUMN e TO f",
        )
        .await
        .unwrap();
    for rename in [
        "ALTER TABLE t RENAME COLUMN c TO c2",
        "ALTER TABLE t RENAME TO t2",
        "ALTER TABLE public.t RENAME CONSTRAINT t_c_not_null TO z",
    ] {
        client.batch_execute("SAVEPOINT s").await.unwrap();
        let e = client.batch_execute(rename).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{rename}: {e:?}");
        client
            .batch_execute("ROLLBACK TO SAVEPOINT s")
            .await
            .unwrap();
    }
    client.batch_execute("COMMIT").await.unwrap();
    // The next statement waits for the deferred steps.
    client.batch_execute("SELECT 1").await.unwrap();
    let state = "SELECT (SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c') \
                 || ' ' || (SELECT count(*) FROM pg_constraint WHERE conrelid = 't'::regclass) \
                 || ' ' || (SELECT count(*) FROM pg_attribute WHERE attrelid = 'other'::regclass AND attname = 'y') \
                 || ' ' || (SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'f')";
    assert_eq!(one_value(&admin, state).await, "true 0 1 1");
}

/// A FOREIGN KEY to a key the same transaction added follows that key's build
/// after COMMIT (before the build Postgres finds no key to reference: the
/// migration failed with 42704), written as ADD FOREIGN KEY, inline REFERENCES
/// of ADD COLUMN, or in a statement with several subcommands, whose columns are
/// added in the transaction. Directly all of it runs in the transaction.
#[tokio::test]
async fn a_foreign_key_to_a_key_added_in_the_transaction_follows_its_build() {
    let db = fresh_db("fkfollows");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE accounts (id int, code text); \
             INSERT INTO accounts SELECT g, 'c' || g FROM generate_series(1, 100) g; \
             CREATE TABLE orders (id int, account_id int, code text); \
             INSERT INTO orders SELECT g, 1 + g % 100, 'c' || (1 + g % 100) FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    let p = proxy();
    let client = connect(&p.conn_str(&db, "postgres")).await;
    client
        .batch_execute(
            "BEGIN; ALTER TABLE accounts ADD PRIMARY KEY (id); \
             ALTER TABLE public.accounts ADD CONSTRAINT accounts_code_key UNIQUE (code); \
             ALTER TABLE orders ADD FOREIGN KEY (account_id) REFERENCES accounts; \
             ALTER TABLE orders ADD CONSTRAINT orders_code_fk FOREIGN KEY (code) REFERENCES accounts (code); \
             ALTER TABLE orders ADD COLUMN inline_ref int REFERENCES accounts; \
             ALTER TABLE orders ADD COLUMN split_ref int, ADD FOREIGN KEY (split_ref) REFERENCES accounts (id); \
             UPDATE orders SET inline_ref = account_id, split_ref = account_id; \
             COMMIT",
        )
        .await
        .unwrap();
    // The next statement waits for the deferred steps.
    client.batch_execute("SELECT 1").await.unwrap();
    let constraints = "SELECT string_agg(conname || ':' || contype::text || ':' || convalidated, ' ' ORDER BY conname) \
                       FROM pg_constraint WHERE conrelid IN ('accounts'::regclass, 'orders'::regclass)";
    assert_eq!(
        one_value(&admin, constraints).await,
        "accounts_code_key:u:true accounts_pkey:p:true orders_account_id_fkey:f:true orders_code_fk:f:true \
         orders_inline_ref_fkey:f:true orders_split_ref_fkey:f:true"
    );
}

/// In a transaction block the build or VALIDATE that reads the rows runs after
/// COMMIT; a row that breaks the new rule still fails the statement at once,
/// with Postgres' own error, and the transaction with it. (One duplicated key:
/// with several, which one Postgres names depends on the order its sort compares.)
#[tokio::test]
async fn rows_that_break_a_deferred_check_fail_the_statement_as_directly() {
    let db = fresh_db("deferredrows");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(&format!(
            "{SETUP}; CREATE TABLE u (k int); INSERT INTO u SELECT generate_series(1, 1000); INSERT INTO u VALUES (500); \
             CREATE TABLE p (id int PRIMARY KEY); INSERT INTO p SELECT generate_series(1, 10); \
             CREATE TABLE o (pid int); INSERT INTO o SELECT 1 + g % 10 FROM generate_series(1, 1000) g; \
             INSERT INTO o VALUES (NULL), (11)"
        ))
        .await
        .unwrap();
    let p = proxy();
    let through = connect(&p.conn_str(&db, "postgres")).await;
    for (before, statement, code) in [
        ("", "ALTER TABLE u ADD CONSTRAINT u_k UNIQUE (k)", "23505"),
        ("", "CREATE UNIQUE INDEX u_k2 ON u (k)", "23505"),
        (
            "",
            "ALTER TABLE t ADD CONSTRAINT t_c CHECK (c < 1000)",
            "23514",
        ),
        (
            "UPDATE t SET c = NULL WHERE c = 7",
            "ALTER TABLE t ALTER COLUMN c SET NOT NULL",
            "23502",
        ),
        (
            "",
            "ALTER TABLE o ADD CONSTRAINT o_fk FOREIGN KEY (pid) REFERENCES p",
            "23503",
        ),
    ] {
        let mut seen = Vec::new();
        for client in [&admin, &through] {
            client.batch_execute("BEGIN").await.unwrap();
            if !before.is_empty() {
                client.batch_execute(before).await.unwrap();
            }
            let e = client.batch_execute(statement).await.unwrap_err();
            let db_error = e.as_db_error().expect("a server error");
            let field = |v: Option<&str>| v.map(str::to_string);
            seen.push((
                db_error.code().code().to_string(),
                db_error.message().to_string(),
                db_error.detail().map(str::to_string),
                // What client libraries match on (psycopg's diag, Ecto).
                [
                    field(db_error.schema()),
                    field(db_error.table()),
                    field(db_error.constraint()),
                    field(db_error.column()),
                ],
            ));
            // The transaction failed with it.
            let next = client.batch_execute("SELECT 1").await.unwrap_err();
            assert_eq!(sqlstate(&next).as_deref(), Some("25P02"), "{statement}");
            client.batch_execute("ROLLBACK").await.unwrap();
        }
        assert_eq!(seen[0].0, code, "{statement}: {:?}", seen[0]);
        assert_eq!(
            seen[0], seen[1],
            "{statement}: directly, then through pgshift"
        );
    }
    // What succeeds directly succeeds through pgshift (a hostile review's
    // cases): an index on an inheritance parent covers the parent alone; NOT NULL
    // asks whether a composite value is null, not its fields; numeric 1.0 and
    // 1.00 are one key, which their text hides.
    admin
        .batch_execute(
            "CREATE TABLE par (a int); CREATE TABLE chi () INHERITS (par); \
             INSERT INTO par SELECT generate_series(1, 1000); INSERT INTO chi VALUES (1); \
             CREATE TYPE pair AS (x int, y int); CREATE TABLE cp (c pair); \
             INSERT INTO cp SELECT ROW(NULL, g)::pair FROM generate_series(1, 1000) g; \
             CREATE TABLE nu (n numeric); INSERT INTO nu SELECT generate_series(1, 1000); \
             INSERT INTO nu VALUES (1.00)",
        )
        .await
        .unwrap();
    for statement in [
        "CREATE UNIQUE INDEX par_a ON par (a)",
        "ALTER TABLE cp ALTER COLUMN c SET NOT NULL",
    ] {
        for client in [&admin, &through] {
            client.batch_execute("BEGIN").await.unwrap();
            client.batch_execute(statement).await.unwrap();
            client.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    let mut seen = Vec::new();
    for client in [&admin, &through] {
        client.batch_execute("BEGIN").await.unwrap();
        let e = client
            .batch_execute("ALTER TABLE nu ADD CONSTRAINT nu_n UNIQUE (n)")
            .await
            .unwrap_err();
        let e = e.as_db_error().expect("a server error");
        seen.push((e.code().code().to_string(), e.message().to_string()));
        client.batch_execute("ROLLBACK").await.unwrap();
    }
    assert_eq!(
        seen[0], seen[1],
        "numeric keys: directly, then through pgshift"
    );
    // Nothing was left behind, and nothing runs after the ROLLBACKs.
    through.batch_execute("SELECT 1").await.unwrap();
    let left = "SELECT (SELECT count(*) FROM pg_constraint WHERE conrelid IN ('t'::regclass, 'u'::regclass, 'o'::regclass, 'nu'::regclass, 'cp'::regclass)) \
                || ' ' || (SELECT count(*) FROM pg_index WHERE indrelid IN ('u'::regclass, 'par'::regclass, 'nu'::regclass)) \
                || ' ' || (SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'c')";
    assert_eq!(one_value(&admin, left).await, "0 0 false");
}
