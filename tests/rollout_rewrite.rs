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

/// A rollout of `orders.amount` to bigint through pgshift, waiting for its
/// cutover.
struct Verified {
    db: String,
    admin: Client,
    proxy: common::Proxy,
    conn: String,
    id: i64,
    /// The mirror trigger's function.
    function: u32,
}

async fn verified() -> Verified {
    let db = fresh_db("rollout_rewrite");
    let admin = setup(&db).await;
    let proxy = proxy();
    let conn = proxy.conn_str(&db, "postgres");
    let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let function = admin
        .query_one(
            "SELECT tgfoid::int8 FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as u32;
    Verified {
        db,
        admin,
        proxy,
        conn,
        id,
        function,
    }
}

#[tokio::test]
async fn writes_set_the_new_column_and_skip_the_trigger() {
    let Verified {
        db,
        admin,
        proxy,
        conn,
        id,
        function,
    } = verified().await;

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

/// A Parse of an extended-protocol message: statement `name`, `sql`, no
/// parameter types given.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = format!("{name}\0{sql}\0").into_bytes();
    body.extend_from_slice(&0u16.to_be_bytes());
    common::raw::frame(b'P', &body)
}

/// Bind of statement `name` with text parameters, Execute, Sync.
fn bind_execute(name: &str, params: &[&str]) -> Vec<u8> {
    let mut body = format!("\0{name}\0").into_bytes();
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p.as_bytes());
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    let mut out = common::raw::frame(b'B', &body);
    out.extend(common::raw::frame(b'E', b"\0\0\0\0\0"));
    out.extend(common::raw::frame(b'S', b""));
    out
}

#[tokio::test]
async fn prepared_writes_set_the_new_column_and_outlive_the_cutover() {
    use tokio_postgres::types::Type;
    let Verified {
        db,
        admin,
        proxy,
        conn,
        id,
        function,
    } = verified().await;

    let app = connect(&conn).await;
    let plain = connect(&direct(&db)).await;
    let insert = "INSERT INTO orders (id, amount, shadow) VALUES ($1, $2, $3)";
    let update = "UPDATE orders SET amount = amount + $1, shadow = shadow + $2 WHERE id = $3";
    // The client declares the amount an int8 (as PgJDBC's setLong does).
    let typed = "UPDATE orders SET amount = $1, shadow = $2 WHERE id = $3";
    // Prepared first: later, only its Bind shows that it may change the names.
    let path = app
        .prepare("SELECT set_config('search_path', $1, false)")
        .await
        .unwrap();
    let ins = app.prepare(insert).await.unwrap();
    let upd = app.prepare(update).await.unwrap();
    let set = app
        .prepare_typed(typed, &[Type::INT8, Type::INT4, Type::INT8])
        .await
        .unwrap();
    // The server describes the parameters as it does directly.
    for (statement, sql) in [(&ins, insert), (&upd, update)] {
        let direct = plain.prepare(sql).await.unwrap();
        assert_eq!(statement.params(), direct.params(), "{sql}");
    }
    run(&app, "BEGIN").await;
    run(&app, "SET LOCAL track_functions = 'pl'").await;
    let before = calls(&app, function).await;
    for i in 0..20i64 {
        app.execute(&ins, &[&(ROWS + 100 + i), &(i as i32), &(i as i32)])
            .await
            .unwrap();
        app.execute(&upd, &[&3i32, &3i32, &(i + 1)]).await.unwrap();
        app.execute(&set, &[&(i + 40), &(i as i32 + 40), &(i + 30)])
            .await
            .unwrap();
    }
    // And the unnamed statement of one-off statements.
    app.query_typed(
        "UPDATE orders SET amount = $1, shadow = $2 WHERE id = $3",
        &[
            (&77i32, Type::INT4),
            (&77i32, Type::INT4),
            (&50i64, Type::INT8),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        calls(&app, function).await - before,
        0,
        "the trigger ran for prepared writes pgshift set"
    );
    run(&app, "COMMIT").await;
    // A value that does not fit the column fails as it does directly.
    let too_big = app.execute(&set, &[&(1i64 << 40), &0i32, &1i64]).await;
    let direct_set = plain
        .prepare_typed(typed, &[Type::INT8, Type::INT4, Type::INT8])
        .await
        .unwrap();
    let directly = plain
        .execute(&direct_set, &[&(1i64 << 40), &0i32, &1i64])
        .await;
    assert_eq!(
        too_big
            .unwrap_err()
            .as_db_error()
            .map(|e| e.message().to_string()),
        directly
            .unwrap_err()
            .as_db_error()
            .map(|e| e.message().to_string())
    );

    // A parameter declared with a type that has no cast to integer fails as
    // it does directly (42804, not the repeat's 42846).
    let declared = [Type::INT8, Type::TIMESTAMPTZ, Type::INT4];
    let via = app.prepare_typed(insert, &declared).await.unwrap_err();
    let want = plain.prepare_typed(insert, &declared).await.unwrap_err();
    assert_eq!(via.code(), want.code());
    assert_eq!(
        want.code(),
        Some(&tokio_postgres::error::SqlState::DATATYPE_MISMATCH)
    );

    // A session that changes its search_path (through a prepared set_config):
    // its statements mean another table now, as they do directly.
    admin
        .batch_execute(
            "CREATE SCHEMA other2; CREATE TABLE other2.orders (id bigint, amount int, shadow int)",
        )
        .await
        .unwrap();
    app.query(&path, &[&"other2, public"]).await.unwrap();
    app.execute(&ins, &[&1i64, &2i32, &2i32]).await.unwrap();
    app.query(&path, &[&"public"]).await.unwrap();
    let moved: i64 = admin
        .query_one("SELECT count(*) FROM other2.orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1);

    // An unnamed statement bound again later, with no Parse (libpq allows it).
    let (mut raw, _) = common::raw::Raw::startup(
        format!("127.0.0.1:{}", proxy.port()).parse().unwrap(),
        "postgres",
        &db,
    )
    .await;
    let mut first = parse(
        "",
        "UPDATE orders SET amount = $1, shadow = $2 WHERE id = $3",
    );
    first.extend(bind_execute("", &["5", "5", "60"]));
    raw.send(&first).await;
    let replies = raw.read_until(b'Z').await;
    assert_eq!(common::raw::first_error(&replies), None);

    let control = connect(&direct(&db)).await;
    rollout::request(&control, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    // Prepared before the cutover, each statement works as it does directly
    // (where the server plans it again against the renamed column).
    for i in 0..5i64 {
        app.execute(&ins, &[&(ROWS + 200 + i), &(i as i32), &(i as i32)])
            .await
            .unwrap();
        app.execute(&upd, &[&3i32, &3i32, &(i + 1)]).await.unwrap();
        app.execute(&set, &[&(i + 40), &(i as i32 + 40), &(i + 30)])
            .await
            .unwrap();
    }
    raw.send(&bind_execute("", &["6", "6", "61"])).await;
    let replies = raw.read_until(b'Z').await;
    assert_eq!(common::raw::first_error(&replies), None);

    rollout::request(&control, id, Request::Finish)
        .await
        .unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    app.execute(&upd, &[&1i32, &1i32, &1i64]).await.unwrap();
    let differ: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differ, 0);
    let changed: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE id IN (60, 61) AND amount IN (5, 6)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 2);
}

#[tokio::test]
async fn prepared_writes_outlive_a_rollback() {
    let db = fresh_db("rollout_rewrite");
    let admin = setup(&db).await;
    let proxy = proxy();
    let conn = proxy.conn_str(&db, "postgres");
    let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let app = connect(&conn).await;
    let upd = app
        .prepare("UPDATE orders SET amount = $1, shadow = $2 WHERE id = $3")
        .await
        .unwrap();
    app.execute(&upd, &[&1i32, &1i32, &1i64]).await.unwrap();
    let text: String = app
        .query_one(
            "SELECT statement FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE 'UPDATE%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(text.contains("amount__pgshift_new"), "{text}");
    let control = connect(&direct(&db)).await;
    rollout::request(&control, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(30)).await;
    // Inside a block, the statement the Bind uses is given its own text back.
    run(&app, "BEGIN").await;
    app.execute(&upd, &[&2i32, &2i32, &2i64]).await.unwrap();
    run(&app, "COMMIT").await;
    app.execute(&upd, &[&3i32, &3i32, &3i64]).await.unwrap();
    let rows: Vec<(i64, i32)> = admin
        .query(
            "SELECT id, amount FROM orders WHERE id <= 3 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, 1), (2, 2), (3, 3)]);
}
