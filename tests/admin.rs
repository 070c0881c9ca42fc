//! The admin console against a real Postgres, through real clients (tokio-postgres
//! and psql): its commands return typed rows, a rollout is paused, throttled,
//! resumed, cut over and finished from it; wrong passwords, unknown commands and
//! injection attempts get clear errors and change nothing.

mod common;

use common::admin::{admin_conn, cell, console, proxy, rollout_field, rows, tag, until, PASSWORD};
use common::fresh_db;
use common::rollouts::{setup, start, wait_phase};
use std::time::Duration;
use tokio_postgres::NoTls;

#[tokio::test]
async fn a_rollout_is_steered_from_the_console() {
    let db = fresh_db("admin_steer");
    let admin = setup(&db).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let console = console(&proxy).await;

    let version = rows(&console, "SHOW VERSION").await;
    assert!(cell(&version[0], "version")
        .unwrap()
        .starts_with("pgshift "));
    let help = rows(&console, "show help;").await;
    assert!(help.len() >= 6, "{help:?}");

    // Paused, then throttled, then resumed: each lands in pgshift.rollouts.
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT PAUSE {id}")).await,
        "ROLLOUT PAUSE"
    );
    until(&admin, id, "paused", "true").await;
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT THROTTLE {id} 100000 IN {db}")).await,
        "ROLLOUT THROTTLE"
    );
    assert_eq!(rollout_field(&admin, id, "rows_per_second").await, "100000");
    let listed = rows(&console, "SHOW ROLLOUTS").await;
    let mine: Vec<_> = listed
        .iter()
        .filter(|r| cell(r, "database") == Some(db.as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "{listed:?}");
    assert_eq!(cell(mine[0], "id"), Some(id.to_string().as_str()));
    assert_eq!(cell(mine[0], "table"), Some("public.orders"));
    assert_eq!(cell(mine[0], "column"), Some("amount"));
    assert_eq!(cell(mine[0], "paused"), Some("t"));
    assert_eq!(cell(mine[0], "rate_limit"), Some("100000"));
    assert_eq!(
        tag(&proxy, &format!("rollout resume {id}")).await,
        "ROLLOUT RESUME"
    );
    until(&admin, id, "paused", "false").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let shown = rows(&console, &format!("SHOW ROLLOUT {id}")).await;
    assert_eq!(cell(&shown[0], "phase"), Some("verified"));
    assert_eq!(cell(&shown[0], "progress_pct"), Some("100"));
    assert_eq!(cell(&shown[0], "new_type"), Some("bigint"));

    // The extended protocol, results in binary (tokio-postgres asks for it).
    let typed = console
        .query(&*format!("SHOW ROLLOUT {id} IN {db}"), &[])
        .await
        .unwrap();
    assert_eq!(typed[0].get::<_, i64>("id"), id);
    assert_eq!(typed[0].get::<_, f64>("progress_pct"), 100.0);
    assert!(!typed[0].get::<_, bool>("paused"));
    assert_eq!(typed[0].get::<_, String>("phase"), "verified");
    assert_eq!(typed[0].get::<_, Option<String>>("error"), None);
    // psycopg 3 (extended protocol, a binary cursor).
    let addr = proxy.admin.unwrap();
    let script = format!(
        "import psycopg\n\
         c = psycopg.connect(host='{}', port={}, user='admin', password={PASSWORD:?}, dbname='pgshift', autocommit=True)\n\
         cur = c.cursor(binary=True)\n\
         cur.execute('SHOW ROLLOUT {id}')\n\
         row = cur.fetchone()\n\
         names = [d.name for d in cur.description]\n\
         print(row[names.index('phase')], row[names.index('rows_done')] > 0, row[names.index('paused')])\n",
        addr.ip(),
        addr.port()
    );
    // Debian's python3, where scripts/deps.sh installs python3-psycopg.
    let python = match std::path::Path::new("/usr/bin/python3").exists() {
        true => "/usr/bin/python3",
        false => "python3",
    };
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verified True False"
    );

    // PgJDBC, past its prepareThreshold (binary results).
    let url = format!("jdbc:postgresql://{}:{}/pgshift", addr.ip(), addr.port());
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/AdminConsole.java"
    );
    let out = std::process::Command::new("java")
        .args([
            "-cp",
            "/usr/share/java/postgresql.jar",
            source,
            &url,
            PASSWORD,
        ])
        .arg(format!("SHOW ROLLOUT {id}"))
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("verified {id} 100.0 false")
    );

    assert_eq!(
        tag(&proxy, &format!("ROLLOUT CUTOVER {id}")).await,
        "ROLLOUT CUTOVER"
    );
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT FINISH {id}")).await,
        "ROLLOUT FINISH"
    );
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    let ty: String = admin
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "bigint");
    // Over: no more requests.
    let e = console
        .simple_query(&format!("ROLLOUT PAUSE {id}"))
        .await
        .expect_err("a request on a finished rollout");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("55000"));
    let e = console
        .simple_query(&format!("ROLLOUT THROTTLE {id} 5"))
        .await
        .expect_err("a throttle on a finished rollout");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("55000"));

    // psql reads the same rows.
    let port = proxy.admin.unwrap().port().to_string();
    let (ok, out, err) = common::psql(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "admin",
            "-d",
            "pgshift",
            "-c",
            "SHOW ROLLOUTS",
        ],
        "",
        &[("PGPASSWORD", PASSWORD)],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("progress_pct") && out.contains("finished"),
        "{out}"
    );
}

#[tokio::test]
async fn wrong_logins_and_bad_commands_change_nothing() {
    let db = fresh_db("admin_bad");
    let admin = setup(&db).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    for (user, password) in [("admin", "wrong"), ("postgres", PASSWORD), ("admin", "")] {
        let e = admin_conn(&proxy, user, password)
            .connect(NoTls)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user}/{password:?} logged in"));
        assert_eq!(common::sqlstate(&e).as_deref(), Some("28P01"), "{e:?}");
    }
    let console = console(&proxy).await;
    for (sql, code) in [
        ("SELECT 1", "42601"),
        ("DROP TABLE orders", "42601"),
        (&*format!("ROLLOUT PAUSE {id}; DROP TABLE orders"), "42601"),
        (
            "ROLLOUT START orders.amount TYPE bigint; DROP TABLE orders",
            "42601",
        ),
        (
            &*format!("ROLLOUT ROLLBACK {id} IN \"x'; DROP TABLE orders; --\""),
            "3D000",
        ),
        ("ROLLOUT THROTTLE 1 1e9", "42601"),
        ("SHOW ROLLOUT 987654", "42704"),
    ] {
        let e = console.simple_query(sql).await.expect_err(sql);
        let db_error = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
        assert_eq!(db_error.code().code(), code, "{sql}: {e:?}");
        assert!(db_error.hint().is_some(), "{sql}: no hint");
    }
    // Through the extended protocol, the same refusal comes at Parse.
    let e = console
        .prepare("DROP TABLE orders")
        .await
        .expect_err("a Parse of SQL");
    assert_eq!(common::sqlstate(&e).as_deref(), Some("42601"), "{e:?}");
    // Nothing changed: the table is there, the rollout neither paused nor rolled back.
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, common::rollouts::ROWS);
    assert_eq!(rollout_field(&admin, id, "paused").await, "false");
    let request = rollout_field(&admin, id, "coalesce(request, 'none')").await;
    assert_eq!(request, "none");
}

/// ROLLOUT START from the console: the same rollout an intercepted ALTER starts,
/// steered to the end from the console alone, with an application writing
/// through pgshift meanwhile; every row ends with its value.
#[tokio::test]
async fn a_rollout_is_started_and_finished_from_the_console() {
    let db = fresh_db("admin_start");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE ran (what text);
             CREATE SEQUENCE ran_seq;
             CREATE FUNCTION public.evil(int) RETURNS bigint IMMUTABLE LANGUAGE sql
                 AS $$ INSERT INTO ran VALUES ('evil') RETURNING 1::bigint $$;
             -- Planning folds an immutable call on a constant: it would run then.
             CREATE FUNCTION public.evil_folded(int) RETURNS bigint IMMUTABLE LANGUAGE plpgsql
                 AS $$ BEGIN RETURN nextval('public.ran_seq'); END $$;",
        )
        .await
        .unwrap();
    let proxy = proxy();
    let console = console(&proxy).await;

    // Refusals first: each names why, and none leaves a rollout or a column.
    for (sql, code) in [
        (
            format!("ROLLOUT START orders.amount TYPE bigint USING public.evil(amount) IN {db}"),
            "42501",
        ),
        (
            format!("ROLLOUT START orders.amount TYPE bigint USING evil(amount) IN {db}"),
            "42883",
        ),
        (
            format!("ROLLOUT START orders.amount TYPE bigint USING (SELECT 1) IN {db}"),
            "0A000",
        ),
        (
            format!("ROLLOUT START orders.nope TYPE bigint IN {db}"),
            "42703",
        ),
        (
            format!("ROLLOUT START nosuch.amount TYPE bigint IN {db}"),
            "42P01",
        ),
        (
            format!("ROLLOUT START orders.amount TYPE bigint); DROP TABLE orders; -- IN {db}"),
            "42601",
        ),
        (
            format!("ROLLOUT START orders.amount TYPE bigint; DROP TABLE orders IN {db}"),
            "42601",
        ),
        // No IN, and no client has used a database through this proxy yet.
        (
            "ROLLOUT START orders.amount TYPE bigint".to_string(),
            "3D000",
        ),
    ] {
        let e = console.simple_query(&sql).await.expect_err(&sql);
        let db_error = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
        assert_eq!(db_error.code().code(), code, "{sql}: {e:?}");
    }
    let columns: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(columns, 4, "orders keeps its columns");
    let state: Option<String> = admin
        .query_one("SELECT to_regclass('pgshift.rollouts')::text", &[])
        .await
        .unwrap()
        .get(0);
    if state.is_some() {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM pgshift.rollouts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "a refused start left a rollout");
    }

    // An application through pgshift: the database becomes known (no IN needed).
    let app = common::connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute("SELECT 1").await.unwrap();
    let started = rows(
        &console,
        "rollout start Orders.amount TYPE bigint USING amount::int8;",
    )
    .await;
    assert_eq!(started.len(), 1, "{started:?}");
    let id: i64 = cell(&started[0], "id").unwrap().parse().unwrap();
    assert_eq!(cell(&started[0], "database"), Some(db.as_str()));
    assert_eq!(cell(&started[0], "new_type"), Some("bigint"));
    assert_eq!(
        rollout_field(&admin, id, "username").await,
        "admin (console)"
    );

    assert_eq!(
        tag(&proxy, &format!("ROLLOUT BATCH {id} 500")).await,
        "ROLLOUT BATCH"
    );
    assert_eq!(rollout_field(&admin, id, "batch_rows").await, "500");
    let shown = rows(&console, &format!("SHOW ROLLOUT {id}")).await;
    assert_eq!(cell(&shown[0], "batch_rows"), Some("500"));
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT PAUSE {id}")).await,
        "ROLLOUT PAUSE"
    );
    until(&admin, id, "paused", "true").await;
    // Writes while paused and after: the mirror carries them.
    for i in 0..50 {
        app.execute(
            "INSERT INTO orders (amount, shadow, note) VALUES ($1, $1, 'app')",
            &[&(i * 7)],
        )
        .await
        .unwrap();
        app.execute(
            "UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id = $1",
            &[&(i as i64 * 301 + 1)],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT THROTTLE {id} 50000")).await,
        "ROLLOUT THROTTLE"
    );
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT RESUME {id}")).await,
        "ROLLOUT RESUME"
    );
    until(&admin, id, "paused", "false").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT CUTOVER {id}")).await,
        "ROLLOUT CUTOVER"
    );
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(
        tag(&proxy, &format!("ROLLOUT FINISH {id}")).await,
        "ROLLOUT FINISH"
    );
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;

    let check = admin
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(check.get::<_, String>(0), "bigint");
    let (total, wrong): (i64, i64) = {
        let r = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE amount IS DISTINCT FROM shadow::bigint) FROM orders",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((total, wrong), (common::rollouts::ROWS + 50, 0));
    let evil: i64 = admin
        .query_one("SELECT count(*) FROM ran", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(evil, 0);
    let folded: bool = admin
        .query_one("SELECT is_called FROM ran_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!folded, "evil_folded ran as pgshift's service role");
}
