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
