//! CHECK constraints on a column under rollout, against a real Postgres:
//! directly, `ALTER COLUMN … TYPE` keeps them over the new type. Through
//! pgshift each gets a twin on the new column (validated before the cutover,
//! NOT VALID where the old one was), which takes the old name at the cutover;
//! a rollback and a finish leave exactly the constraints there were, enforced.

mod common;

use common::rollouts::{column_type, mismatches, setup, start, wait_phase, writer_with};
use common::{connect, fresh_db, sqlstate, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn proxy() -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 400;
        c.ddl.retry_deadline_ms = 30_000;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
        c.rollout.rows_per_second = 20_000;
    })
}

/// The table's CHECK constraints: name, definition, validated, and the type of
/// the first column each one reads.
async fn checks(admin: &tokio_postgres::Client) -> Vec<(String, String, bool, String)> {
    admin
        .query(
            "SELECT k.conname::text, pg_get_constraintdef(k.oid), k.convalidated, \
                    (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                      WHERE a.attrelid = k.conrelid AND a.attnum = k.conkey[1]) \
               FROM pg_constraint k WHERE k.conrelid = 'orders'::regclass AND k.contype = 'c' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// A write through pgshift that breaks `"Amount above"` fails as it would
/// directly: 23514, naming that constraint.
async fn refused_below(conn: &str) {
    let c = connect(conn).await;
    let e = c
        .batch_execute("INSERT INTO orders (amount, shadow) VALUES (-5000, -5000)")
        .await
        .expect_err("a write under the CHECK");
    assert_eq!(sqlstate(&e).as_deref(), Some("23514"), "{e:?}");
    let text = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        text.as_deref()
            .is_some_and(|t| t.contains("\"Amount above\"")),
        "{text:?}"
    );
}

#[tokio::test]
async fn check_constraints_move_to_the_new_column_and_back() {
    let db = fresh_db("rollout_checks");
    let admin = setup(&db).await;
    // One validated with a quoted name, one over two columns whose text holds
    // the column's name in a literal, and one NOT VALID (a row that broke it
    // could not be updated by anyone, the backfill included).
    admin
        .batch_execute(
            "INSERT INTO orders (amount, shadow, note) VALUES (-500, -500, 'old');
             ALTER TABLE orders ADD CONSTRAINT \"Amount above\" CHECK (amount > -1000);
             ALTER TABLE orders ADD CONSTRAINT amount_or_note CHECK (amount < 1000000 OR note = 'amount');
             ALTER TABLE orders ADD CONSTRAINT amount_recent CHECK (amount > -600) NOT VALID;",
        )
        .await
        .unwrap();
    let before = checks(&admin).await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().all(|c| c.3 == "integer"), "{before:?}");
    let proxy = proxy();
    let conn = proxy.conn_str(&db, "postgres");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let positional = Arc::new(AtomicBool::new(true));
    let w = writer_with(
        conn.clone(),
        stop.clone(),
        done.clone(),
        0,
        false,
        positional.clone(),
    );
    for end in [Request::Rollback, Request::Finish] {
        let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        // The names and definitions are the old ones, now on the new `amount`
        // (bigint), the NOT VALID one still NOT VALID; the old constraints are
        // parked on the old column.
        let now = checks(&admin).await;
        for (name, def, valid, _) in &before {
            let found = now.iter().find(|c| &c.0 == name);
            assert_eq!(
                found.map(|c| (&c.1, c.2, c.3.as_str())),
                Some((def, *valid, "bigint")),
                "{now:?}"
            );
        }
        let parked: Vec<_> = now
            .iter()
            .filter(|c| c.0.starts_with(&format!("pgshift_{id}_oldcheck_")))
            .collect();
        assert_eq!(parked.len(), 3, "{now:?}");
        refused_below(&conn).await;
        let target = match end {
            Request::Rollback => "rolled_back",
            _ => {
                // After the finish `amount` is the last column: no more
                // INSERTs by position.
                positional.store(false, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                "finished"
            }
        };
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, target, Duration::from_secs(60)).await;
        let after = checks(&admin).await;
        let want_type = match end {
            Request::Rollback => "integer",
            _ => "bigint",
        };
        let want: Vec<_> = before
            .iter()
            .map(|(n, d, v, _)| (n.clone(), d.clone(), *v, want_type.to_string()))
            .collect();
        assert_eq!(after, want);
        refused_below(&conn).await;
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    assert!(done.load(Ordering::Relaxed) > 0);
    assert_eq!(mismatches(&admin).await, 0);
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
}

#[tokio::test]
async fn a_check_the_new_type_cannot_take_is_refused_as_directly() {
    let db = fresh_db("rollout_check_type");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "ALTER TABLE orders ADD CONSTRAINT note_word CHECK (note ~ '^[a-z0-9]+$');
             CREATE TABLE orders_copy (LIKE orders INCLUDING ALL);",
        )
        .await
        .unwrap();
    let direct = admin
        .batch_execute(
            "ALTER TABLE orders_copy ALTER COLUMN note TYPE int USING pg_catalog.length(note)",
        )
        .await
        .expect_err("directly");
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let through = client
        .batch_execute(
            "ALTER TABLE orders ALTER COLUMN note TYPE int USING pg_catalog.length(note)",
        )
        .await
        .expect_err("through pgshift");
    assert_eq!(
        sqlstate(&through),
        sqlstate(&direct),
        "{through:?} / {direct:?}"
    );
    let message = through.as_db_error().map(|d| d.message().to_string());
    let direct_message = direct.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .zip(direct_message.as_deref())
            .is_some_and(|(m, d)| m.contains(d)),
        "{message:?} / {direct_message:?}"
    );
    assert_eq!(column_type(&admin, "note__pgshift_new").await, None);
    assert_eq!(column_type(&admin, "note").await.as_deref(), Some("text"));
    let open: i64 = admin
        .query_one(
            "SELECT count(*) FROM pgshift.rollouts WHERE phase NOT IN ('rolled_back', 'finished')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
}
