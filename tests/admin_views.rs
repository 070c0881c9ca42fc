//! The console's views and knobs against a real Postgres: SHOW CONFIG, CLIENTS,
//! STATS, RULES, DDL and DEFERRED return the rows the traffic made; SET and
//! SET RULE change what the proxy does next; SHUTDOWN stops it.

mod common;

use common::admin::{cell, console, proxy, rows, tag};
use common::{connect, fresh_db};
use std::time::{Duration, Instant};

type Row = Vec<(String, Option<String>)>;

fn find<'a>(rows: &'a [Row], column: &str, value: &str) -> Option<&'a Row> {
    rows.iter().find(|r| cell(r, column) == Some(value))
}

async fn code_of(console: &tokio_postgres::Client, sql: &str) -> String {
    let e = console.simple_query(sql).await.expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
    assert!(db.hint().is_some(), "{sql}: no hint");
    db.code().code().to_string()
}

#[tokio::test]
async fn views_show_the_live_process() {
    let db = fresh_db("admin_views");
    let proxy = proxy();
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    for i in 0..25 {
        app.execute("INSERT INTO t VALUES ($1, $1)", &[&i])
            .await
            .unwrap();
    }
    app.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let console = console(&proxy).await;

    let clients = rows(&console, "SHOW CLIENTS").await;
    let mine = find(&clients, "database", &db).unwrap_or_else(|| panic!("{clients:?}"));
    assert_eq!(cell(mine, "user"), Some("postgres"));
    assert_eq!(cell(mine, "state"), Some("idle in transaction"));
    assert_eq!(cell(mine, "addr"), Some("127.0.0.1"));
    assert_eq!(cell(mine, "tls"), Some("f"));
    app.batch_execute("COMMIT").await.unwrap();
    let clients = rows(&console, "SHOW CLIENTS").await;
    assert_eq!(
        cell(find(&clients, "database", &db).unwrap(), "state"),
        Some("idle")
    );

    let stats = rows(&console, "SHOW STATS").await;
    let mine = find(&stats, "database", &db).unwrap_or_else(|| panic!("{stats:?}"));
    let number = |c: &str| cell(mine, c).unwrap().parse::<i64>().unwrap();
    assert_eq!(number("clients"), 1);
    // CREATE, 25 INSERTs (Parse/Bind/Execute/Sync: one query each), BEGIN; SELECT 1, COMMIT.
    assert!(number("total_query_count") >= 28, "{mine:?}");
    assert!(number("total_received") > 25 * 20, "{mine:?}");
    assert!(number("total_sent") > 0);
    assert_eq!(number("total_server_errors"), 0);
    assert!(number("turns") >= 28, "{mine:?}");
    assert!(
        number("p50_us") > 0 && number("p50_us") <= number("p99_us"),
        "{mine:?}"
    );
    app.simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    let stats = rows(&console, "SHOW STATS").await;
    assert_eq!(
        cell(
            find(&stats, "database", &db).unwrap(),
            "total_server_errors"
        ),
        Some("1")
    );

    // The journal and the deferred jobs, newest first.
    app.batch_execute("CREATE INDEX t_v ON t (v)")
        .await
        .unwrap();
    app.batch_execute("BEGIN; CREATE INDEX t_v2 ON t (v); COMMIT")
        .await
        .unwrap();
    // The journal is written in the background: wait for both entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ddl = loop {
        let ddl = rows(&console, "SHOW DDL LIMIT 1000").await;
        let n = ddl
            .iter()
            .filter(|r| cell(r, "database") == Some(db.as_str()))
            .count();
        if n >= 2 || Instant::now() > deadline {
            break ddl;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mine: Vec<&Row> = ddl
        .iter()
        .filter(|r| cell(r, "database") == Some(db.as_str()))
        .collect();
    assert!(mine.len() >= 2, "{ddl:?}");
    let first = mine
        .iter()
        .position(|r| cell(r, "statement").is_some_and(|s| s.contains("t_v2")))
        .expect("the deferred CREATE INDEX is journaled");
    let second = mine
        .iter()
        .position(|r| cell(r, "statement") == Some("CREATE INDEX t_v ON t (v)"))
        .expect("the CREATE INDEX is journaled");
    assert!(first < second, "newest first: {mine:?}");
    assert_eq!(cell(mine[second], "rule"), Some("create-index"));
    assert_eq!(cell(mine[second], "outcome"), Some("rewritten"));
    assert_eq!(rows(&console, "SHOW DDL LIMIT 1").await.len(), 1);
    let deferred = rows(&console, "SHOW DEFERRED").await;
    let job = deferred
        .iter()
        .find(|r| cell(r, "database") == Some(db.as_str()))
        .unwrap_or_else(|| panic!("{deferred:?}"));
    assert_eq!(cell(job, "rule"), Some("create-index"));
    assert!(cell(job, "statement").unwrap().contains("t_v2"));
    assert!(cell(job, "created").unwrap().ends_with("+00"));

    // SHOW CONFIG: every key, the service password hidden.
    let config = rows(&console, "SHOW CONFIG").await;
    let key = |k: &str| find(&config, "key", k).unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(cell(key("ddl.lock_timeout_ms"), "value"), Some("200"));
    assert_eq!(cell(key("ddl.lock_timeout_ms"), "default"), Some("500"));
    assert_eq!(cell(key("ddl.lock_timeout_ms"), "changeable"), Some("t"));
    assert_eq!(cell(key("server.listen"), "changeable"), Some("f"));
    let password = cell(key("upstream.service_password"), "value");
    assert!(
        matches!(password, Some("") | Some("********")),
        "{password:?}"
    );
}

#[tokio::test]
async fn set_changes_what_the_proxy_does_next() {
    let db = fresh_db("admin_set");
    let proxy = proxy();
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    let console = console(&proxy).await;

    assert_eq!(tag(&proxy, "SET lock_timeout = '300ms'").await, "SET");
    assert_eq!(tag(&proxy, "SET ddl.max_attempts TO 7").await, "SET");
    let config = rows(&console, "SHOW CONFIG").await;
    assert_eq!(
        cell(
            find(&config, "key", "ddl.lock_timeout_ms").unwrap(),
            "value"
        ),
        Some("300")
    );
    assert_eq!(
        cell(find(&config, "key", "ddl.max_attempts").unwrap(), "value"),
        Some("7")
    );
    for (sql, code) in [
        ("SET server.listen = '127.0.0.1:1'", "55P02"),
        ("SET admin.user = 'x'", "55P02"),
        ("SET ddl.lock_timeout_ms = soon", "22023"),
        ("SET ddl.max_attempts = 0", "22023"),
        ("SET nope = 1", "42704"),
        ("SET listen = 1", "42702"),
        ("SET RULE no-such-rule warn", "42704"),
        ("SET RULE create-index sometimes", "22023"),
        ("SET ddl.max_attempts = 1; DROP TABLE t", "42601"),
    ] {
        assert_eq!(code_of(&console, sql).await, code, "{sql}");
    }
    // The failed SETs left the settings as they were.
    let config = rows(&console, "SHOW CONFIG").await;
    assert_eq!(
        cell(find(&config, "key", "ddl.max_attempts").unwrap(), "value"),
        Some("7")
    );

    // A rule's policy, changed from the console, decides the next statement.
    assert_eq!(tag(&proxy, "SET RULE create-index reject").await, "SET");
    let rules = rows(&console, "SHOW RULES").await;
    assert_eq!(
        cell(find(&rules, "rule", "create-index").unwrap(), "policy"),
        Some("reject")
    );
    assert!(cell(find(&rules, "rule", "drop-index").unwrap(), "about").is_some());
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    let e = app
        .batch_execute("CREATE INDEX t_v ON t (v)")
        .await
        .expect_err("rejected by the console's rule");
    assert!(e.as_db_error().is_some(), "{e:?}");
    tag(&proxy, "SET RULE create-index rewrite").await;
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute("CREATE INDEX t_v ON t (v)")
        .await
        .unwrap();
    let direct = connect(&common::scenario::direct(&db)).await;
    let valid: bool = direct
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_v'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(valid);
}

#[tokio::test]
async fn shutdown_stops_the_proxy() {
    let proxy = proxy();
    let addr = proxy.addr;
    assert_eq!(tag(&proxy, "SHUTDOWN").await, "SHUTDOWN");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pgshift_status_once_shows_the_rollout() {
    let db = fresh_db("admin_status");
    common::rollouts::setup(&db).await;
    let proxy = proxy();
    let id = common::rollouts::start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let console = console(&proxy).await;
    console
        .simple_query(&format!("ROLLOUT PAUSE {id}"))
        .await
        .unwrap();
    let addr = proxy.admin.unwrap().to_string();
    let run = |format: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
                .args(["status", "--once", "--admin", &addr, "--format", format])
                .env("PGSHIFT_ADMIN_PASSWORD", common::admin::PASSWORD)
                .output()
                .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let out = run("text").await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        if text.contains("(paused)") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line = format!("{db} #{id} public.orders.amount ");
    assert!(text.contains(&line), "{text}");
    assert!(text.contains("(paused)"), "{text}");
    assert!(
        text.lines().next().unwrap().starts_with("rollouts: "),
        "{text}"
    );

    let out = run("json").await.unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine = json["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["database"] == db.as_str())
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(mine["id"], id);
    assert_eq!(mine["paused"], true);
    assert!(mine["rows_done"].is_i64());

    // A wrong password: a clear line and exit 1.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .args(["status", "--once", "--admin", &addr])
            .env("PGSHIFT_ADMIN_PASSWORD", "wrong")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("28P01"), "{stderr}");
}

#[tokio::test]
async fn kill_ends_one_session_and_reload_reads_the_config_again() {
    let db = fresh_db("admin_kill");
    let proxy = proxy();
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    let other = connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute("BEGIN; CREATE TABLE k (id int)")
        .await
        .unwrap();
    let pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let console = console(&proxy).await;
    let servers = rows(&console, "SHOW SERVERS").await;
    let mine = find(&servers, "remote_pid", &pid.to_string())
        .unwrap_or_else(|| panic!("{pid} not in {servers:?}"));
    assert_eq!(cell(mine, "database"), Some(db.as_str()));
    assert_eq!(cell(mine, "state"), Some("idle in transaction"));
    assert_eq!(cell(mine, "addr"), Some("127.0.0.1"));
    let id = cell(mine, "client_id").unwrap().to_string();

    assert_eq!(code_of(&console, "KILL 987654").await, "42704");
    assert_eq!(tag(&proxy, &format!("KILL {id}")).await, "KILL");
    app.simple_query("SELECT 1")
        .await
        .expect_err("a killed session");
    // Its transaction is gone with its backend; the other session goes on.
    let direct = connect(&common::scenario::direct(&db)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backend {pid} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k: Option<String> = direct
        .query_one("SELECT to_regclass('k')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(k, None);
    other.simple_query("SELECT 1").await.unwrap();
    let clients = rows(&console, "SHOW CLIENTS").await;
    assert!(find(&clients, "id", &id).is_none(), "{clients:?}");

    // RELOAD reads the configuration again (here a reloader the test gives it).
    assert_eq!(code_of(&console, "RELOAD").await, "55000");
    let upstream = common::pg().tcp_address();
    proxy.handle.set_reloader(std::sync::Arc::new(move || {
        let mut c = pgshift::config::Config::default();
        c.upstream.address = upstream.clone();
        c.ddl.max_attempts = 3;
        c.server.drain_timeout_ms = 1_000;
        Ok(c)
    }));
    assert_eq!(tag(&proxy, "SET ddl.max_attempts = 9").await, "SET");
    assert_eq!(tag(&proxy, "RELOAD").await, "RELOAD");
    let config = rows(&console, "SHOW CONFIG").await;
    assert_eq!(
        cell(find(&config, "key", "ddl.max_attempts").unwrap(), "value"),
        Some("3")
    );
    // What is set up at start keeps its running value (the reloaded config has
    // the default console address): SHOW CONFIG tells what is in effect.
    assert_eq!(
        cell(find(&config, "key", "admin.listen").unwrap(), "value"),
        Some("127.0.0.1:0")
    );
    proxy.handle.set_reloader(std::sync::Arc::new(|| {
        Err("line 3: unknown field".to_string())
    }));
    assert_eq!(code_of(&console, "RELOAD").await, "F0000");
    let config = rows(&console, "SHOW CONFIG").await;
    assert_eq!(
        cell(find(&config, "key", "ddl.max_attempts").unwrap(), "value"),
        Some("3")
    );
}

#[tokio::test]
async fn locks_and_blockers_show_what_a_migration_waits_for() {
    let db = fresh_db("admin_locks");
    let proxy = common::Proxy::start_with(|c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.admin.password_file = common::admin::password_file();
        c.ddl.lock_timeout_ms = 100;
        c.ddl.stall_budget_ms = 100;
        c.ddl.retry_deadline_ms = 20_000;
    });
    let direct = connect(&common::scenario::direct(&db)).await;
    direct
        .batch_execute("CREATE TABLE w (id int PRIMARY KEY, v int)")
        .await
        .unwrap();
    // A long transaction holds the table.
    let holder = connect(&common::scenario::direct(&db)).await;
    holder
        .batch_execute("BEGIN; SELECT * FROM w")
        .await
        .unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    let migration = tokio::spawn(async move {
        app.batch_execute("ALTER TABLE w ADD CONSTRAINT w_v CHECK (v > 0)")
            .await
    });
    let console = console(&proxy).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let blockers = loop {
        let rows = rows(&console, "SHOW BLOCKERS").await;
        let mine: Vec<Row> = rows
            .into_iter()
            .filter(|r| cell(r, "blocker_pid") == Some(holder_pid.to_string().as_str()))
            .collect();
        if !mine.is_empty() {
            break mine;
        }
        assert!(Instant::now() < deadline, "no blocker shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cell(&blockers[0], "work"), Some("ddl"));
    let is_w = |t: Option<&str>| t.is_some_and(|t| t == "w" || t.ends_with(".w"));
    assert!(is_w(cell(&blockers[0], "table")), "{blockers:?}");
    let locks = rows(&console, "SHOW LOCKS").await;
    let lock = locks
        .iter()
        .find(|r| {
            is_w(cell(r, "table")) && cell(r, "state") == Some("waiting for a long transaction")
        })
        .unwrap_or_else(|| panic!("{locks:?}"));
    assert!(cell(lock, "waiting_ms").unwrap().parse::<i64>().unwrap() >= 0);
    // A second migration waits too; KILL ends it at once, not at the retry deadline.
    let app2 = connect(&proxy.conn_str(&db, "postgres")).await;
    // Its client id, by its backend's pid (a session is listed once its login
    // is through, which its first query shows).
    let pid2: i32 = app2
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let servers = rows(&console, "SHOW SERVERS").await;
    let newest = find(&servers, "remote_pid", &pid2.to_string())
        .and_then(|r| cell(r, "client_id"))
        .unwrap_or_else(|| panic!("{pid2} not in {servers:?}"))
        .to_string();
    let second = tokio::spawn(async move {
        let t = Instant::now();
        let r = app2
            .batch_execute("ALTER TABLE w ADD CONSTRAINT w_v2 CHECK (v > 1)")
            .await;
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second migration waits for the holder"
    );
    assert_eq!(tag(&proxy, &format!("KILL {newest}")).await, "KILL");
    let (ended, took) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("KILL ends a session waiting inside pgshift's DDL work")
        .unwrap();
    let e = ended.expect_err("killed");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("57P01"), "{e:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    migration.await.unwrap().unwrap();
    // Done: nothing waits any more.
    let locks = rows(&console, "SHOW LOCKS").await;
    assert!(locks.iter().all(|r| !is_w(cell(r, "table"))), "{locks:?}");
}

/// PAUSE holds new queries of its database between transactions and answers
/// once the open transaction ended; other databases go on; RESUME lets the held
/// query run.
#[tokio::test]
async fn pause_holds_new_queries_until_resume() {
    let db = fresh_db("admin_pause");
    let other = fresh_db("admin_pause_other");
    let proxy = proxy();
    let in_tx = connect(&proxy.conn_str(&db, "postgres")).await;
    let later = std::sync::Arc::new(connect(&proxy.conn_str(&db, "postgres")).await);
    let elsewhere = connect(&proxy.conn_str(&other, "postgres")).await;
    in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    later.batch_execute("SELECT 1").await.unwrap();

    let pausing = {
        let console = console(&proxy).await;
        let sql = format!("PAUSE {db}");
        tokio::spawn(async move { console.simple_query(&sql).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pausing.is_finished(),
        "PAUSE waits for the open transaction"
    );
    // The open transaction goes on, and ends.
    in_tx.batch_execute("SELECT 2; COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), pausing)
        .await
        .expect("PAUSE answers once the transaction ended")
        .unwrap()
        .expect("PAUSE");

    let held = {
        let later = later.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = later.query_one("SELECT 42", &[]).await.unwrap();
            (r.get::<_, i32>(0), t.elapsed())
        })
    };
    let elsewhere_took = {
        let t = Instant::now();
        elsewhere.batch_execute("SELECT 1").await.unwrap();
        t.elapsed()
    };
    assert!(
        elsewhere_took < Duration::from_secs(1),
        "{elsewhere_took:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !held.is_finished(),
        "a new query of the paused database waits"
    );
    let console = console(&proxy).await;
    let clients = rows(&console, "SHOW CLIENTS").await;
    let states: Vec<_> = clients
        .iter()
        .filter(|r| cell(r, "database") == Some(db.as_str()))
        .map(|r| cell(r, "state").unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["paused", "paused"], "{clients:?}");

    assert_eq!(tag(&proxy, &format!("RESUME {db}")).await, "RESUME");
    let (value, took) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("RESUME lets the query run")
        .unwrap();
    assert_eq!(value, 42);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // A PAUSE of everything, then RESUME: the same for every database.
    assert_eq!(tag(&proxy, "PAUSE").await, "PAUSE");
    assert_eq!(tag(&proxy, "RESUME").await, "RESUME");
    elsewhere.batch_execute("SELECT 1").await.unwrap();
}
