//! Writes through pgshift set the rollout's new column themselves: the mirror
//! trigger (guarded by its WHEN clause) is not entered for them, which the
//! server's own count of function calls in the transaction shows. Writes pgshift
//! cannot repeat are still mirrored by the trigger, and a table of the same name
//! elsewhere on the session's search_path is left alone.

mod common;

use common::rollouts::{proxy, setup, start, wait_phase, ROWS};
use common::scenario::direct;
use common::{connect, fresh_db};
use pgshift::rollout::{self, Request};
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Runs one simple Query; its rows' first values.
async fn run(client: &Client, sql: &str) -> Vec<Option<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

/// Calls of the mirror function the session counted and has not reported yet
/// (Postgres 15 reports them at most once a second: compare two readings).
async fn calls(client: &Client, function: u32) -> i64 {
    let sql = format!("SELECT pg_stat_get_xact_function_calls({function})");
    run(client, &sql).await[0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn writes_set_the_new_column_and_skip_the_trigger() {
    let db = fresh_db("rollout_rewrite");
    let admin = setup(&db).await;
    let proxy = proxy();
    let conn = proxy.conn_str(&db, "postgres");
    let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let function: u32 = admin
        .query_one(
            "SELECT tgfoid::int8 FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as u32;

    let app = connect(&conn).await;
    run(&app, "BEGIN").await;
    run(&app, "SET LOCAL track_functions = 'pl'").await;
    let before = calls(&app, function).await;
    // Repeatable values: the statement sets the new column, the trigger is skipped.
    run(
        &app,
        "UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id <= 100",
    )
    .await;
    run(
        &app,
        &format!(
            "INSERT INTO orders (id, amount, shadow, note) VALUES ({a}, 5, 5, 'x'), ({b}, -7, -7, 'y')",
            a = ROWS + 1,
            b = ROWS + 2
        ),
    )
    .await;
    let returned = app
        .simple_query("UPDATE orders SET amount = 9, shadow = 9 WHERE id = 1 RETURNING *")
        .await
        .unwrap();
    let columns: Vec<String> = returned
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some(r.columns().iter().map(|c| c.name().to_string()).collect())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(columns, ["id", "amount", "shadow", "note"]);
    assert_eq!(
        calls(&app, function).await - before,
        0,
        "the trigger ran for writes pgshift set"
    );
    // A value that may differ when evaluated twice: the trigger mirrors it.
    run(&app, "UPDATE orders SET amount = (random() * 0)::int + 3, shadow = 3 WHERE id BETWEEN 101 AND 110").await;
    assert_eq!(calls(&app, function).await - before, 10);
    run(&app, "COMMIT").await;

    // A table of the same name first on the search_path is another table.
    run(&app, "CREATE SCHEMA other").await;
    run(&app, "CREATE TABLE other.orders (id int, amount int)").await;
    run(&app, "SET search_path = other, public").await;
    run(&app, "INSERT INTO orders (id, amount) VALUES (1, 5)").await;
    run(&app, "UPDATE orders SET amount = amount + 1").await;
    assert_eq!(
        run(&app, "SELECT amount FROM other.orders").await,
        [Some("6".into())]
    );
    // A write that changes the search_path itself: the next one is looked up
    // again (it means other.orders now).
    run(&app, "RESET search_path").await;
    run(
        &app,
        &format!(
            "INSERT INTO orders (id, amount, shadow) VALUES ({}, 4, 4)",
            ROWS + 3
        ),
    )
    .await;
    run(
        &app,
        &format!(
            "INSERT INTO orders (id, amount, shadow, note) VALUES ({}, 5, 5, set_config('search_path', 'other, public', false))",
            ROWS + 4
        ),
    )
    .await;
    run(&app, "INSERT INTO orders (id, amount) VALUES (3, 7)").await;
    assert_eq!(
        run(&app, "SELECT count(*) FROM other.orders WHERE id = 3").await,
        [Some("1".into())]
    );
    // And a temporary one.
    run(&app, "RESET search_path").await;
    run(&app, "CREATE TEMP TABLE orders (id int, amount int)").await;
    run(&app, "INSERT INTO orders (id, amount) VALUES (2, 8)").await;
    run(&app, "UPDATE orders SET amount = amount * 2").await;
    assert_eq!(
        run(&app, "SELECT amount FROM orders").await,
        [Some("16".into())]
    );
    run(&app, "DROP TABLE orders").await;
    // Back to the table under rollout, written through a qualified name.
    run(&app, "BEGIN").await;
    run(&app, "SET LOCAL track_functions = 'pl'").await;
    let before = calls(&app, function).await;
    run(&app, "UPDATE public.orders SET amount = amount - 2, shadow = shadow - 2 WHERE id > 200 AND id <= 300").await;
    assert_eq!(calls(&app, function).await - before, 0);
    run(&app, "COMMIT").await;

    // A role granted only the columns it writes (not pgshift's): its writes go
    // as written, and work as they do directly.
    let role = format!("limited_{db}");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT INSERT (id, amount, shadow), UPDATE (amount, shadow), SELECT ON orders TO {role}"
        ))
        .await
        .unwrap();
    let limited = connect(&proxy.conn_str(&db, &role)).await;
    run(
        &limited,
        &format!(
            "INSERT INTO orders (id, amount, shadow) VALUES ({}, 11, 11)",
            ROWS + 10
        ),
    )
    .await;
    run(
        &limited,
        "UPDATE orders SET amount = 12, shadow = 12 WHERE id = 2",
    )
    .await;

    // Errors point where they point directly, though the text grew before them.
    let plain = connect(&direct(&db)).await;
    for sql in [
        "UPDATE orders SET amount = amount + 1 WHERE nosuch = 1",
        "INSERT INTO orders (id, amount, shadow) VALUES (1, 5, 5), (2, 6, nosuch)",
    ] {
        let position = |e: tokio_postgres::Error| match e.as_db_error().and_then(|d| d.position()) {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
            _ => None,
        };
        let via = position(app.simple_query(sql).await.unwrap_err());
        let want = position(plain.simple_query(sql).await.unwrap_err());
        assert_eq!(via, want, "{sql}");
        assert_eq!(want, Some(sql.find("nosuch").unwrap() as u32 + 1));
    }

    // Row by row: the new column holds every value, whoever set it.
    let differ: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount__pgshift_new IS DISTINCT FROM amount OR amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differ, 0);
    let control = connect(&direct(&db)).await;
    rollout::request(&control, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    // After the cutover the statement goes as written.
    run(
        &app,
        "UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id <= 5",
    )
    .await;
    rollout::request(&control, id, Request::Finish)
        .await
        .unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    let differ: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differ, 0);
}
