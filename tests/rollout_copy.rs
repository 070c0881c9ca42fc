//! COPY without a column list on a table under rollout, through pgshift with psql
//! (a simple-protocol COPY, as libpq, psycopg and PgJDBC send it). The table has a
//! column more than the application knows of; directly, `COPY orders FROM STDIN`
//! with the application's four columns fails. Through pgshift it gets the column
//! list the application means, before and after the cutover, both ways.

mod common;

use common::rollouts::{mismatches, proxy, setup, start, wait_phase};
use common::{fresh_db, psql_at, Proxy};
use pgshift::rollout::{self, Request};
use std::time::Duration;

/// Rows by position, as `COPY orders FROM STDIN` reads them: id, amount, shadow, note.
fn rows(from: i64, n: i64) -> String {
    (from..from + n)
        .map(|i| format!("{i}\t{}\t{}\tcopied\n", i % 900, i % 900))
        .collect()
}

/// The lines of `out` that start with one of `starts`.
fn lines<'a>(out: &'a str, starts: &[&str]) -> Vec<&'a str> {
    out.lines()
        .filter(|l| starts.iter().any(|s| l.starts_with(s)))
        .collect()
}

#[tokio::test]
async fn copy_without_a_column_list_works_before_and_after_the_cutover() {
    let db = fresh_db("rollout_copy");
    let admin = setup(&db).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let pg_port = common::pg().port;

    // Directly, the data is a column short.
    let script = format!("COPY orders FROM STDIN;\n{}\\.\n", rows(900_001, 3));
    let (ok, _, stderr) = psql_at(pg_port, &db, &script);
    assert!(!ok && stderr.contains("missing data"), "{stderr}");

    // Through pgshift, while mirrored: in with the list, and out with it.
    let script = format!("COPY orders FROM STDIN;\n{}\\.\n", rows(900_001, 500));
    let (ok, _, stderr) = psql_at(proxy.port(), &db, &script);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("is under rollout"),
        "the NOTICE says so: {stderr}"
    );
    let (ok, out, stderr) = psql_at(proxy.port(), &db, "COPY orders TO STDOUT;\n");
    assert!(ok, "{stderr}");
    assert_eq!(lines(&out, &["900002\t"]), ["900002\t2\t2\tcopied"]);

    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;

    // After the cutover: the old column stands where `amount` stood.
    let script = format!("COPY orders FROM STDIN;\n{}\\.\n", rows(950_001, 500));
    let (ok, _, stderr) = psql_at(proxy.port(), &db, &script);
    assert!(ok, "{stderr}");
    let (ok, out, stderr) = psql_at(
        proxy.port(),
        &db,
        "COPY public.orders TO STDOUT (FORMAT csv);\n",
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        lines(&out, &["900003,", "950004,"]),
        ["900003,3,3,copied", "950004,504,504,copied"]
    );
    // An explicit list and a query go as written.
    let (ok, out, stderr) = psql_at(
        proxy.port(),
        &db,
        "COPY (SELECT 41 + 1) TO STDOUT;\nCOPY orders (note, amount) TO STDOUT;\n",
    );
    assert!(ok, "{stderr}");
    assert!(out.starts_with("42\n"), "{out:.100}");
    assert_eq!(lines(&out, &["copied\t505"]), ["copied\t505"]);

    assert_eq!(mismatches(&admin).await, 0);
    let copied: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE note = 'copied' AND amount = amount__pgshift_old",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 1_000, "every copied row in both columns");
}

#[tokio::test]
async fn generated_columns_stay_out_of_the_list_as_postgres_leaves_them_out() {
    let db = fresh_db("rollout_copy_gen");
    let admin = common::connect(&common::scenario::direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE gen (id int PRIMARY KEY, amount int, v int, total int GENERATED ALWAYS AS (v * 2) STORED);
             INSERT INTO gen (id, amount, v) SELECT g, g, g FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let proxy = Proxy::start();
    start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE gen ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let script = "COPY gen FROM STDIN;\n2001\t5\t6\n\\.\nCOPY gen TO STDOUT;\n";
    let (ok, out, stderr) = psql_at(proxy.port(), &db, script);
    assert!(ok, "{stderr}");
    assert_eq!(lines(&out, &["2001\t"]), ["2001\t5\t6"]);
}

/// A COPY the client prepares (tokio-postgres' `copy_in` and `copy_out` send a
/// named Parse): the same column list, in and out, in text and in binary, inside
/// a transaction block too.
#[tokio::test]
async fn a_prepared_copy_gets_the_list_too() {
    use futures_util::{SinkExt, StreamExt};
    let db = fresh_db("rollout_copy_prep");
    let admin = setup(&db).await;
    let proxy = proxy();
    start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let mut client = common::connect(&proxy.conn_str(&db, "postgres")).await;
    let sink = client.copy_in("COPY orders FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(rows(900_001, 300)))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 300);
    // Prepared once, used inside a transaction block.
    let tx = client.transaction().await.unwrap();
    let statement = tx.prepare("COPY public.orders FROM STDIN").await.unwrap();
    let sink = tx.copy_in(&statement).await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(rows(910_001, 200)))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 200);
    tx.commit().await.unwrap();
    // Out: the application's four columns.
    let out = client
        .copy_out("COPY orders TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    let chunks: Vec<_> = out.collect().await;
    let text: String = chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(lines(&text, &["910002,"]), ["910002,102,102,copied"]);
    let copied: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE note = 'copied' AND amount = amount__pgshift_new",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 500, "every copied row in both columns");
}
