//! Type rollouts of a partitioned table: the new column, the mirror trigger's
//! clones, the backfill through the partitioned table, the cutover's renames
//! and the finish reach every partition, sub-partitions and a partition attached
//! with other column numbers included. Writers write through pgshift (to the
//! partitioned table and to a partition by name) and directly; every writer
//! stores what it wrote to `amount` in `shadow` too, so the data check is row by
//! row.

mod common;

use common::rollouts::{
    column_type, mismatches, paced_proxy, start, wait_phase, writer_with, ROWS,
};
use common::scenario::direct;
use common::{connect, fresh_db, psql_at, sqlstate, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

fn proxy() -> Proxy {
    paced_proxy(|_| {})
}

/// `orders` as the other rollout tests have it, partitioned by hash of `id`:
/// `orders_0` made with the table, `bucket_1` made apart (a dropped column
/// first: its columns have other numbers; a name that does not contain the
/// table's) and attached, `orders_2` itself partitioned by range.
async fn setup(db: &str) -> Client {
    let admin = connect(&direct(db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 7, shadow int, note text)
                 PARTITION BY HASH (id);
             CREATE TABLE orders_0 PARTITION OF orders FOR VALUES WITH (MODULUS 3, REMAINDER 0);
             CREATE TABLE bucket_1 (junk int, id bigint NOT NULL DEFAULT nextval('orders_id_seq'),
                                    amount int NOT NULL DEFAULT 7, shadow int, note text);
             ALTER TABLE bucket_1 DROP COLUMN junk;
             ALTER TABLE orders ATTACH PARTITION bucket_1 FOR VALUES WITH (MODULUS 3, REMAINDER 1);
             CREATE TABLE orders_2 PARTITION OF orders FOR VALUES WITH (MODULUS 3, REMAINDER 2)
                 PARTITION BY RANGE (id);
             CREATE TABLE orders_2a PARTITION OF orders_2 FOR VALUES FROM (MINVALUE) TO (10000);
             CREATE TABLE orders_2b PARTITION OF orders_2 DEFAULT;
             INSERT INTO orders (amount, shadow, note) SELECT g % 1000, g % 1000, 'n' || g FROM generate_series(1, {ROWS}) g;
             ANALYZE orders;"
        ))
        .await
        .unwrap();
    admin
}

const LEAVES: [&str; 4] = ["orders_0", "bucket_1", "orders_2a", "orders_2b"];

/// The column's type in every partition (and the partitioned tables).
async fn types_everywhere(admin: &Client, column: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for t in [
        "orders",
        "orders_0",
        "bucket_1",
        "orders_2",
        "orders_2a",
        "orders_2b",
    ] {
        let ty = admin
            .query_opt(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped",
                &[&t, &column],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        out.push((t.to_string(), ty));
    }
    out
}

fn all(ty: Option<&str>) -> Vec<(String, Option<String>)> {
    [
        "orders",
        "orders_0",
        "bucket_1",
        "orders_2",
        "orders_2a",
        "orders_2b",
    ]
    .iter()
    .map(|t| (t.to_string(), ty.map(str::to_string)))
    .collect()
}

/// pgshift's triggers left on the table or any partition.
async fn triggers_left(admin: &Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_trigger t JOIN pg_partition_tree('orders') p ON p.relid = t.tgrelid \
             WHERE t.tgname LIKE 'pgshift%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A writer through pgshift that names a partition: a prepared UPDATE and an
/// INSERT into it (of ids that hash to it, from the `first`th on), until `stop`.
fn leaf_writer(
    conn: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    first: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = connect(&conn).await;
        let update = c
            .prepare("UPDATE orders_0 SET amount = amount + 3, shadow = shadow + 3 WHERE id = $1")
            .await
            .unwrap();
        // A row of another partition, inserted by name, fails: directly with
        // 23514, while a BEFORE trigger is on the partition with 0A000.
        let ids: Vec<i64> = c
            .query(
                "SELECT g FROM generate_series(5000000::bigint, 5100000) g \
                 WHERE satisfies_hash_partition('orders'::regclass, 3, 0, g)",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut i: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let id = (i * 104_729) % ROWS + 1;
            c.execute(&update, &[&id]).await.unwrap();
            if let Some(n) = ids.get(first + i as usize) {
                c.batch_execute(&format!(
                    "INSERT INTO orders_0 (id, amount, shadow, note) VALUES ({n}, {v}, {v}, 'leaf')",
                    v = i % 3000
                ))
                .await
                .unwrap();
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test]
async fn a_partitioned_table_rolls_out_while_writers_write() {
    let db = fresh_db("rollout_part");
    let admin = setup(&db).await;
    let proxy = proxy();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let positional = Arc::new(AtomicBool::new(true));
    let w = |conn: String, seed: i64| {
        writer_with(
            conn,
            stop.clone(),
            done.clone(),
            seed,
            false,
            positional.clone(),
        )
    };
    let writers = vec![
        w(proxy.conn_str(&db, "postgres"), 0),
        w(direct(&db), 2_000_000),
        leaf_writer(
            proxy.conn_str(&db, "postgres"),
            stop.clone(),
            done.clone(),
            0,
        ),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    assert_eq!(
        types_everywhere(&admin, "amount").await,
        all(Some("integer"))
    );
    assert_eq!(
        types_everywhere(&admin, "amount__pgshift_new").await,
        all(Some("bigint"))
    );
    let total: i64 = admin
        .query_one(
            "SELECT rows_total FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        total >= ROWS,
        "the estimate counts every partition's rows: {total}"
    );
    wait_phase(&admin, id, "verified", Duration::from_secs(90)).await;
    let unfilled: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount__pgshift_new IS DISTINCT FROM amount",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unfilled, 0, "rows the backfill or the mirror left behind");
    let client = connect(&direct(&db)).await;
    rollout::request(&client, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(
        types_everywhere(&admin, "amount").await,
        all(Some("bigint"))
    );
    assert_eq!(
        types_everywhere(&admin, "amount__pgshift_old").await,
        all(Some("integer"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mismatches(&admin).await, 0);
    positional.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rollout::request(&client, id, Request::Finish)
        .await
        .unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "writers wrote too little"
    );
    assert_eq!(
        types_everywhere(&admin, "amount").await,
        all(Some("bigint"))
    );
    assert_eq!(
        types_everywhere(&admin, "amount__pgshift_old").await,
        all(None)
    );
    assert_eq!(mismatches(&admin).await, 0);
    let leaf_rows: i64 = admin
        .query_one("SELECT count(*) FROM orders_0 WHERE note = 'leaf'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(leaf_rows > 0, "no INSERT into a partition by name");
    for leaf in LEAVES {
        let (nn, default): (bool, Option<String>) = {
            let row = admin
                .query_one(
                    "SELECT a.attnotnull, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a \
                     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                     WHERE a.attrelid = $1::text::regclass AND a.attname = 'amount'",
                    &[&leaf],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert!(nn, "{leaf}: NOT NULL moved to the new column");
        assert_eq!(default.as_deref(), Some("7"), "{leaf}: the default moved");
    }
    assert_eq!(triggers_left(&admin).await, 0, "triggers left behind");
}

#[tokio::test]
async fn a_partitioned_rollout_rolls_back_from_backfill_and_from_cutover() {
    let db = fresh_db("rollout_part_back");
    let admin = setup(&db).await;
    let proxy = Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 2_000;
        c.rollout.rows_per_second = 10_000;
        c.rollout.latency_factor = 0.0;
    });
    let client = connect(&direct(&db)).await;
    for from in ["backfilling", "cut_over"] {
        let id = start(
            &proxy.conn_str(&db, "postgres"),
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let positional = Arc::new(AtomicBool::new(true));
        let writers = vec![
            writer_with(
                proxy.conn_str(&db, "postgres"),
                stop.clone(),
                done.clone(),
                5,
                false,
                positional,
            ),
            leaf_writer(
                proxy.conn_str(&db, "postgres"),
                stop.clone(),
                done.clone(),
                if from == "backfilling" { 0 } else { 15_000 },
            ),
        ];
        if from == "backfilling" {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (phase, _) = common::rollouts::phase(&admin, id).await;
            assert_eq!(phase, "backfilling");
        } else {
            wait_phase(&admin, id, "verified", Duration::from_secs(90)).await;
            rollout::request(&client, id, Request::Cutover)
                .await
                .unwrap();
            wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        rollout::request(&client, id, Request::Rollback)
            .await
            .unwrap();
        wait_phase(&admin, id, "rolled_back", Duration::from_secs(30)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(
            types_everywhere(&admin, "amount").await,
            all(Some("integer"))
        );
        assert_eq!(
            types_everywhere(&admin, "amount__pgshift_new").await,
            all(None)
        );
        assert_eq!(
            types_everywhere(&admin, "amount__pgshift_old").await,
            all(None)
        );
        assert_eq!(mismatches(&admin).await, 0, "rolled back from {from}");
        assert_eq!(triggers_left(&admin).await, 0, "triggers left after {from}");
        assert_eq!(
            column_type(&admin, "amount").await.as_deref(),
            Some("integer")
        );
    }
}

#[tokio::test]
async fn what_a_partitioned_rollout_cannot_carry_is_refused() {
    let db = fresh_db("rollout_part_no");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE INDEX orders_2b_shadow ON orders_2b (shadow) WHERE shadow > 0;
             ALTER TABLE orders_0 ADD CONSTRAINT leaf_check CHECK (amount > -5);
             CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
             CREATE TRIGGER touch BEFORE UPDATE ON bucket_1 FOR EACH ROW EXECUTE FUNCTION public.touch();
             CREATE TABLE events (at int, v int) PARTITION BY RANGE (at);
             CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);",
        )
        .await
        .unwrap();
    let proxy = proxy();
    let through = connect(&proxy.conn_str(&db, "postgres")).await;
    let direct_client = connect(&direct(&db)).await;
    // As directly: the partition key's column cannot change type.
    let sql = "ALTER TABLE orders ALTER COLUMN id TYPE int";
    let theirs = direct_client.batch_execute(sql).await.expect_err(sql);
    let ours = through.batch_execute(sql).await.expect_err(sql);
    assert_eq!(sqlstate(&ours), sqlstate(&theirs), "{ours:?}");
    assert_eq!(
        ours.as_db_error().map(|e| e.message()),
        theirs.as_db_error().map(|e| e.message())
    );
    for (sql, code, words) in [
        (
            "ALTER TABLE orders ALTER COLUMN shadow TYPE bigint",
            "0A000",
            "orders_2b_shadow",
        ),
        // A partition's own CHECK constraint.
        (
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
            "0A000",
            "leaf_check",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN note TYPE int USING length(note)",
            "42501",
            "trigger touch of partition public.bucket_1",
        ),
        (
            "ALTER TABLE events ALTER COLUMN v TYPE bigint",
            "0A000",
            "no primary key",
        ),
    ] {
        let e = through.batch_execute(sql).await.expect_err(sql);
        let db_error = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
        let text = format!("{} {}", db_error.message(), db_error.hint().unwrap_or(""));
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql}: {text}");
        assert!(text.contains(words), "{sql}: {text}");
    }
    assert_eq!(
        types_everywhere(&admin, "shadow").await,
        all(Some("integer"))
    );
    assert_eq!(
        types_everywhere(&admin, "amount__pgshift_new").await,
        all(None)
    );
    assert_eq!(triggers_left(&admin).await, 0);
}

/// Ids of `count` new rows that belong in `bucket_1`, from `from` on.
async fn bucket_ids(admin: &Client, from: i64, count: i64) -> Vec<i64> {
    admin
        .query(
            "SELECT g FROM generate_series($1::bigint, $1 + 100000) g \
             WHERE satisfies_hash_partition('orders'::regclass, 3, 1, g) ORDER BY g LIMIT $2",
            &[&from, &count],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// COPY into `bucket_1` by name, without a column list, through pgshift.
fn copy_into_bucket(proxy: &Proxy, db: &str, ids: &[i64]) {
    let rows: String = ids
        .iter()
        .map(|i| format!("{i}\t{}\t{}\tcopied\n", i % 900, i % 900))
        .collect();
    let (ok, _, stderr) = psql_at(
        proxy.port(),
        db,
        &format!("COPY bucket_1 FROM STDIN;\n{rows}\\.\n"),
    );
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn statements_copies_and_ddl_that_name_a_partition_through_the_rollout() {
    let db = fresh_db("rollout_part_named");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let app = connect(&url).await;
    let by_id = app
        .prepare("SELECT id, amount FROM bucket_1 WHERE id = $1")
        .await
        .unwrap();
    let star = app
        .prepare("SELECT * FROM bucket_1 WHERE id = $1")
        .await
        .unwrap();
    let id: i64 = admin
        .query_one("SELECT min(id) FROM bucket_1", &[])
        .await
        .unwrap()
        .get(0);
    let use_all = |when: &'static str| {
        let (app, by_id, star) = (&app, &by_id, &star);
        async move {
            let row = app
                .query_one(by_id, &[&id])
                .await
                .unwrap_or_else(|e| panic!("{when}: by_id: {e:?}"));
            let amount: i32 = row.get(1);
            let row = app
                .query_one(star, &[&id])
                .await
                .unwrap_or_else(|e| panic!("{when}: star: {e:?}"));
            assert_eq!(row.len(), 4, "{when}: the application's four columns");
            assert_eq!(row.get::<_, i32>(1), amount, "{when}");
        }
    };
    use_all("before").await;
    let rollout_id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    use_all("mirrored").await;
    copy_into_bucket(&proxy, &db, &bucket_ids(&admin, 900_000, 300).await);
    // Attaching or detaching a partition now is refused, and changes nothing.
    let through = connect(&url).await;
    for sql in [
        "ALTER TABLE orders DETACH PARTITION orders_0",
        "ALTER TABLE orders_2 DETACH PARTITION orders_2b",
    ] {
        let e = through.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("55006"), "{sql}: {e:?}");
    }
    let parts: i64 = admin
        .query_one("SELECT count(*) FROM pg_partition_tree('orders')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 6, "every partition still attached");
    wait_phase(&admin, rollout_id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, rollout_id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, rollout_id, "cut_over", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    use_all("cut over").await;
    copy_into_bucket(&proxy, &db, &bucket_ids(&admin, 950_000, 300).await);
    rollout::request(&admin, rollout_id, Request::Finish)
        .await
        .unwrap();
    wait_phase(&admin, rollout_id, "finished", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    use_all("finished").await;
    assert_eq!(mismatches(&admin).await, 0);
    let copied: i64 = admin
        .query_one("SELECT count(*) FROM bucket_1 WHERE note = 'copied'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 600, "every copied row");
    // Once it is over, partitions come and go again.
    through
        .batch_execute("ALTER TABLE orders DETACH PARTITION orders_0")
        .await
        .unwrap();
}

/// A partition made during the rollout with its own default for the column
/// (directly, the ALTER would keep it): the cutover refuses until it is gone,
/// rather than lose it in the swap.
#[tokio::test]
async fn a_partition_made_since_the_start_with_its_own_default_holds_the_cutover() {
    let db = fresh_db("rollout_part_late");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    admin
        .batch_execute(
            "CREATE TABLE orders_2c PARTITION OF orders_2 (amount DEFAULT 5) \
             FOR VALUES FROM (1000000) TO (1000001)",
        )
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let waited = std::time::Instant::now();
    let error = loop {
        let (phase, error) = common::rollouts::phase(&admin, id).await;
        // A partition made since the verify: one more pass comes first.
        assert!(
            ["verified", "verifying"].contains(&phase.as_str()),
            "{phase} {error:?}"
        );
        if let Some(e) = error.filter(|e| e.contains("orders_2c")) {
            break e;
        }
        assert!(waited.elapsed() < Duration::from_secs(20), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("its own default"), "{error}");
    admin.batch_execute("DROP TABLE orders_2c").await.unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(
        types_everywhere(&admin, "amount").await,
        all(Some("bigint"))
    );
}

/// A partition attached after the verify, directly, with rows whose new column
/// holds other values: the cutover does not swap them in; a verify pass comes
/// first and mends them.
#[tokio::test]
async fn a_partition_attached_after_the_verify_is_verified_before_the_cutover() {
    let db = fresh_db("rollout_part_attach");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    admin
        .batch_execute(
            "CREATE TABLE late (LIKE orders INCLUDING DEFAULTS);
             INSERT INTO late (id, amount, amount__pgshift_new, shadow, note)
                 SELECT g, g % 1000, -1, g % 1000, 'late' FROM generate_series(20000000::bigint, 20000999) g
                 WHERE satisfies_hash_partition('orders'::regclass, 3, 2, g);
             ALTER TABLE orders_2 ATTACH PARTITION late FOR VALUES FROM (20000000) TO (20001000)",
        )
        .await
        .unwrap();
    let late: i64 = admin
        .query_one("SELECT count(*) FROM late", &[])
        .await
        .unwrap()
        .get(0);
    assert!(late > 100, "{late} rows attached");
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM late WHERE amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        wrong, 0,
        "rows of the attached partition swapped in unverified"
    );
    assert_eq!(mismatches(&admin).await, 0);
}

/// The phases the rollout passes through until it is `want` (polled often: a
/// verify pass of this table takes about a second at the tests' pace).
async fn phases_until(admin: &Client, id: i64, want: &str) -> Vec<String> {
    let started = std::time::Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (p, error) = common::rollouts::phase(admin, id).await;
        if seen.last() != Some(&p) {
            seen.push(p.clone());
        }
        if p == want {
            return seen;
        }
        assert!(
            p != "failed" && started.elapsed() < Duration::from_secs(60),
            "rollout {id} is {p} (error {error:?}), phases {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Partitions made after the verify, empty or with rows whose new values are
/// right, are checked on their own: the cutover needs no whole verify pass (a
/// table that gets a partition made every day would never get one done).
#[tokio::test]
async fn partitions_made_after_the_verify_are_checked_on_their_own() {
    let db = fresh_db("rollout_part_made");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    admin
        .batch_execute(
            "CREATE TABLE orders_2c PARTITION OF orders_2 FOR VALUES FROM (30000000) TO (30001000);
             CREATE TABLE late (LIKE orders INCLUDING DEFAULTS);
             INSERT INTO late (id, amount, amount__pgshift_new, shadow, note)
                 SELECT g, g % 1000, g % 1000, g % 1000, 'late' FROM generate_series(20000000::bigint, 20000999) g
                 WHERE satisfies_hash_partition('orders'::regclass, 3, 2, g);
             ALTER TABLE orders_2 ATTACH PARTITION late FOR VALUES FROM (20000000) TO (20001000)",
        )
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let seen = phases_until(&admin, id, "cut_over").await;
    assert_eq!(
        seen,
        ["verified", "cut_over"],
        "no verify pass for partitions whose rows match"
    );
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
}

/// A partition detached, written directly (its copy of the mirror trigger went
/// with the DETACH) and attached again keeps its oid: its attachment is new,
/// so its rows are compared again before the cutover.
#[tokio::test]
async fn a_partition_detached_written_and_attached_again_is_verified_again() {
    let db = fresh_db("rollout_part_again");
    let admin = setup(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    admin
        .batch_execute(
            "ALTER TABLE orders DETACH PARTITION bucket_1;
             UPDATE bucket_1 SET amount = amount + 1, shadow = shadow + 1, amount__pgshift_new = -1;
             ALTER TABLE orders ATTACH PARTITION bucket_1 FOR VALUES WITH (MODULUS 3, REMAINDER 1)",
        )
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let seen = phases_until(&admin, id, "cut_over").await;
    assert!(seen.iter().any(|p| p == "verifying"), "phases {seen:?}");
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM bucket_1 WHERE amount IS DISTINCT FROM shadow",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        wrong, 0,
        "rows written while detached swapped in unverified"
    );
}

/// A long transaction that read one partition by name: the cutover's lock
/// window would queue on it while holding the table, so the stall budget waits
/// it out instead, and readers of the table are not held up meanwhile.
#[tokio::test]
async fn the_cutover_waits_out_a_long_transaction_on_a_partition() {
    let db = fresh_db("rollout_part_wait");
    let admin = setup(&db).await;
    let proxy = Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 500;
        c.ddl.stall_budget_ms = 100;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
    });
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM bucket_1")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let slow = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, worst, slow) = (stop.clone(), worst.clone(), slow.clone());
        let c = connect(&url).await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = std::time::Instant::now();
                c.simple_query("SELECT count(*) FROM orders WHERE id = 2")
                    .await
                    .unwrap();
                if t.elapsed() > Duration::from_millis(60) {
                    slow.fetch_add(1, Ordering::Relaxed);
                }
                let mut w = worst.lock().unwrap();
                *w = (*w).max(t.elapsed());
            }
        })
    };
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(
        common::rollouts::phase(&admin, id).await.0,
        "verified",
        "no cutover under the long transaction"
    );
    let before_commit = *worst.lock().unwrap();
    // Each attempt under the long transaction would stall readers for up to
    // the budget: none is made.
    let slow_before = slow.load(Ordering::Relaxed);
    blocker.batch_execute("COMMIT").await.unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(
        before_commit < Duration::from_millis(300),
        "a reader waited {before_commit:?} while the cutover tried"
    );
    assert!(slow_before <= 2, "{slow_before} reads waited over 60 ms");
}

/// Starts the rollout of `amount` through `url` and cuts it over.
async fn cut_over(admin: &Client, url: &str) -> i64 {
    let id = start(url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(admin, id, "verified", Duration::from_secs(90)).await;
    rollout::request(admin, id, Request::Cutover).await.unwrap();
    wait_phase(admin, id, "cut_over", Duration::from_secs(60)).await;
    id
}

/// Rows of catalog `table` whose `column` starts with `pgshift`.
async fn named_pgshift(admin: &Client, table: &str, column: &str) -> i64 {
    admin
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE {column} LIKE 'pgshift%'"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The indexes on `amount` in the table and every partition: (table, index,
/// valid, the column's type).
async fn amount_indexes(admin: &Client) -> Vec<(String, String, bool, String)> {
    admin
        .query(
            "SELECT t.relname::text, c.relname::text, x.indisvalid, format_type(a.atttypid, a.atttypmod) \
             FROM pg_partition_tree('orders') p JOIN pg_index x ON x.indrelid = p.relid \
             JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = p.relid \
             JOIN pg_attribute a ON a.attrelid = p.relid AND a.attnum = ANY (x.indkey::int2[]) \
             WHERE a.attname = 'amount' ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn typed(
    found: &[(String, String, bool, String)],
    ty: &str,
) -> Vec<(String, String, bool, String)> {
    found
        .iter()
        .map(|(t, i, _, _)| (t.clone(), i.clone(), true, ty.to_string()))
        .collect()
}

/// The indexes partitions use as replica identity or cluster on: (table,
/// index, replica identity, clustered, the type of `amount`).
async fn leaf_marks(admin: &Client) -> Vec<(String, String, bool, bool)> {
    admin
        .query(
            "SELECT t.relname::text, c.relname::text, x.indisreplident, x.indisclustered \
             FROM pg_partition_tree('orders') p JOIN pg_index x ON x.indrelid = p.relid \
             JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = p.relid \
             WHERE (x.indisreplident AND t.relreplident = 'i') OR x.indisclustered ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Every leaf index on `amount` holds exactly the rows of its partition
/// (amcheck, with every heap tuple looked up).
async fn indexes_hold_every_row(admin: &Client) {
    admin
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS amcheck;
             SELECT bt_index_check(x.indexrelid, true)
               FROM pg_partition_tree('orders') p JOIN pg_index x ON x.indrelid = p.relid
               JOIN pg_class c ON c.oid = x.indexrelid WHERE c.relkind = 'i'",
        )
        .await
        .unwrap();
}

const AMOUNT_INDEXES: &str = "CREATE INDEX orders_amount ON orders (amount);
     CREATE INDEX orders_note_amount ON orders USING btree (note, amount DESC) INCLUDE (shadow);
     CREATE UNIQUE INDEX orders_amount_id ON orders (amount, id);
     ALTER TABLE bucket_1 REPLICA IDENTITY USING INDEX bucket_1_amount_id_idx;
     ALTER TABLE orders_0 CLUSTER ON orders_0_amount_id_idx;
     ALTER TABLE orders ADD CONSTRAINT amount_sane CHECK (amount > -1000000000 AND amount IS NOT NULL)";

/// The CHECK constraints in the table and every partition: (table, name,
/// validated, definition, the type of `amount`).
async fn amount_checks(admin: &Client) -> Vec<(String, String, bool, String, String)> {
    admin
        .query(
            "SELECT t.relname::text, k.conname::text, k.convalidated, pg_get_constraintdef(k.oid), \
                    format_type(a.atttypid, a.atttypmod) \
             FROM pg_partition_tree('orders') p JOIN pg_constraint k ON k.conrelid = p.relid AND k.contype = 'c' \
             JOIN pg_class t ON t.oid = p.relid \
             JOIN pg_attribute a ON a.attrelid = p.relid AND a.attnum = ANY (k.conkey) \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn checks_typed(
    found: &[(String, String, bool, String, String)],
    ty: &str,
) -> Vec<(String, String, bool, String, String)> {
    found
        .iter()
        .map(|(t, n, v, d, _)| (t.clone(), n.clone(), *v, d.clone(), ty.to_string()))
        .collect()
}

#[tokio::test]
async fn indexes_and_checks_on_the_column_get_twins_in_every_partition() {
    let db = fresh_db("rollout_part_index");
    let admin = setup(&db).await;
    admin.batch_execute(AMOUNT_INDEXES).await.unwrap();
    let before = amount_indexes(&admin).await;
    // Three on the table, and one per partition at every level for each.
    assert_eq!(before.len(), 3 * 6, "{before:?}");
    let said = leaf_marks(&admin).await;
    assert_eq!(said.len(), 2, "{said:?}");
    let checks = amount_checks(&admin).await;
    assert_eq!(checks.len(), 6, "{checks:?}");
    admin
        .batch_execute(
            "COMMENT ON INDEX orders_amount IS 'the table''s';
             COMMENT ON INDEX orders_2_amount_idx IS 'a partitioned partition''s';
             COMMENT ON INDEX orders_0_amount_idx IS 'a leaf''s';
             COMMENT ON CONSTRAINT amount_sane ON orders IS 'sane'",
        )
        .await
        .unwrap();
    let noted = common::rollouts::comments(&admin).await;
    assert_eq!(noted.len(), 4, "{noted:?}");
    let proxy = proxy();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let positional = Arc::new(AtomicBool::new(false));
    let writers = vec![
        writer_with(
            proxy.conn_str(&db, "postgres"),
            stop.clone(),
            done.clone(),
            0,
            false,
            positional.clone(),
        ),
        writer_with(
            direct(&db),
            stop.clone(),
            done.clone(),
            2_000_000,
            false,
            positional.clone(),
        ),
        leaf_writer(
            proxy.conn_str(&db, "postgres"),
            stop.clone(),
            done.clone(),
            0,
        ),
    ];
    let url = proxy.conn_str(&db, "postgres");
    let id = cut_over(&admin, &url).await;
    // Same names, on the new column, valid at every level.
    assert_eq!(amount_indexes(&admin).await, typed(&before, "bigint"));
    assert_eq!(amount_checks(&admin).await, checks_typed(&checks, "bigint"));
    assert_eq!(leaf_marks(&admin).await, said);
    tokio::time::sleep(Duration::from_millis(300)).await;
    indexes_hold_every_row(&admin).await;
    rollout::request(&admin, id, Request::Finish).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "writers wrote too little"
    );
    assert_eq!(amount_indexes(&admin).await, typed(&before, "bigint"));
    assert_eq!(amount_checks(&admin).await, checks_typed(&checks, "bigint"));
    assert_eq!(leaf_marks(&admin).await, said);
    assert_eq!(common::rollouts::comments(&admin).await, noted);
    indexes_hold_every_row(&admin).await;
    assert_eq!(mismatches(&admin).await, 0);
    let left = named_pgshift(&admin, "pg_class", "relname").await;
    assert_eq!(left, 0, "twins or old indexes left behind");
    // A partition made now gets both indexes, as one made before would.
    admin
        .batch_execute(
            "CREATE TABLE orders_2z PARTITION OF orders_2 FOR VALUES FROM (30000000) TO (30000010)",
        )
        .await
        .unwrap();
    let on_new: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'orders_2z'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_new, 4, "the key and the three indexes");
}

#[tokio::test]
async fn a_rollback_after_the_cutover_gives_the_partitions_indexes_and_checks_back() {
    let db = fresh_db("rollout_part_index_back");
    let admin = setup(&db).await;
    admin.batch_execute(AMOUNT_INDEXES).await.unwrap();
    let before = amount_indexes(&admin).await;
    let checks = amount_checks(&admin).await;
    let said = leaf_marks(&admin).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = cut_over(&admin, &url).await;
    let through = connect(&url).await;
    through
        .batch_execute(
            "UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id % 7 = 0",
        )
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    assert_eq!(amount_indexes(&admin).await, typed(&before, "integer"));
    assert_eq!(leaf_marks(&admin).await, said);
    // The CHECK constraint comes back NOT VALID in the window and is
    // validated right after it.
    let waited = std::time::Instant::now();
    while amount_checks(&admin).await != checks && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(amount_checks(&admin).await, checks);
    indexes_hold_every_row(&admin).await;
    assert_eq!(mismatches(&admin).await, 0);
    let left = named_pgshift(&admin, "pg_class", "relname").await;
    assert_eq!(left, 0, "twins left behind");
}

/// Privileges, statistics targets, options and comments of the column, on
/// the table and on each partition: (table, attacl, attstattarget,
/// attoptions, comment).
async fn marks(admin: &Client, column: &str) -> Vec<(String, String, i32, String, Option<String>)> {
    admin
        .query(
            "SELECT c.relname::text, COALESCE(a.attacl::text, ''), a.attstattarget::int4, \
                    COALESCE(a.attoptions::text, ''), col_description(a.attrelid, a.attnum::int4) \
             FROM pg_partition_tree('orders') p JOIN pg_class c ON c.oid = p.relid \
             JOIN pg_attribute a ON a.attrelid = p.relid AND a.attname = $1 ORDER BY 1",
            &[&column],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

/// Grants, statistics targets, options and comments set on a partition's
/// column itself (not only on the table's) are the new column's after the
/// cutover, and the old column's again after a rollback.
#[tokio::test]
async fn what_partitions_say_of_the_column_moves_with_it() {
    let db = fresh_db("rollout_part_marks");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS part_reader; CREATE ROLE part_reader;
             GRANT SELECT (amount) ON orders TO part_reader;
             GRANT SELECT (amount), UPDATE (amount) ON orders_0 TO part_reader;
             ALTER TABLE orders_2a ALTER COLUMN amount SET STATISTICS 321;
             ALTER TABLE bucket_1 ALTER COLUMN amount SET (n_distinct = 42);
             COMMENT ON COLUMN orders_2b.amount IS 'cents';",
        )
        .await
        .unwrap();
    let before = marks(&admin, "amount").await;
    assert!(
        before.iter().any(|m| m.0 == "orders_0" && !m.1.is_empty()),
        "{before:?}"
    );
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = cut_over(&admin, &url).await;
    assert_eq!(marks(&admin, "amount").await, before);
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    assert_eq!(marks(&admin, "amount").await, before);
    admin
        .batch_execute("REVOKE ALL ON orders, orders_0 FROM part_reader; DROP ROLE part_reader")
        .await
        .unwrap();
}

/// The foreign keys in the table and every partition: (table, name,
/// validated, definition, the type of `amount`, inherited).
async fn amount_keys(admin: &Client) -> Vec<(String, String, bool, String, String, bool)> {
    admin
        .query(
            "SELECT t.relname::text, k.conname::text, k.convalidated, pg_get_constraintdef(k.oid), \
                    format_type(a.atttypid, a.atttypmod), k.conparentid <> 0 \
             FROM pg_partition_tree('orders') p JOIN pg_constraint k ON k.conrelid = p.relid AND k.contype = 'f' \
             JOIN pg_class t ON t.oid = p.relid \
             JOIN pg_attribute a ON a.attrelid = p.relid AND a.attnum = ANY (k.conkey) \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

fn keys_typed(
    found: &[(String, String, bool, String, String, bool)],
    ty: &str,
) -> Vec<(String, String, bool, String, String, bool)> {
    found
        .iter()
        .map(|(t, n, v, d, _, i)| (t.clone(), n.clone(), *v, d.clone(), ty.to_string(), *i))
        .collect()
}

/// `amount` references `amounts`; a partition's copy of the key was made
/// under another name (its own, taken first).
async fn keyed(db: &str) -> Client {
    let admin = setup(db).await;
    admin
        .batch_execute(
            "CREATE TABLE amounts (v bigint PRIMARY KEY);
             INSERT INTO amounts SELECT generate_series(0, 5000);
             ALTER TABLE orders_0 ADD CONSTRAINT orders_amount_fkey CHECK (id > 0);
             ALTER TABLE orders ADD CONSTRAINT orders_amount_fkey FOREIGN KEY (amount) REFERENCES amounts (v);",
        )
        .await
        .unwrap();
    admin
}

/// A write that breaks the key, through pgshift: the error names the
/// constraint of the partition the row goes to, as directly.
async fn key_error(url: &str) -> (Option<String>, String) {
    let c = connect(url).await;
    let e = c
        .batch_execute(
            "INSERT INTO orders (id, amount, shadow, note) VALUES (9000001, 999999, 999999, 'bad')",
        )
        .await
        .expect_err("the key holds");
    (
        sqlstate(&e),
        e.as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn the_columns_own_foreign_key_moves_on_every_partition() {
    let db = fresh_db("rollout_part_key");
    let admin = keyed(&db).await;
    let before = amount_keys(&admin).await;
    assert!(before.len() >= 6, "{before:?}");
    assert!(
        before.iter().any(|k| k.1 != "orders_amount_fkey"),
        "a copy under another name: {before:?}"
    );
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let direct_error = key_error(&direct(&db)).await;
    assert_eq!(direct_error.0.as_deref(), Some("23503"));
    let id = cut_over(&admin, &url).await;
    assert_eq!(amount_keys(&admin).await, keys_typed(&before, "bigint"));
    assert_eq!(key_error(&url).await, direct_error);
    rollout::request(&admin, id, Request::Finish).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    assert_eq!(amount_keys(&admin).await, keys_typed(&before, "bigint"));
    assert_eq!(key_error(&url).await, direct_error);
    let left = named_pgshift(&admin, "pg_constraint", "conname").await;
    assert_eq!(left, 0, "twins or parked keys left behind");
}

#[tokio::test]
async fn a_rollback_after_the_cutover_gives_the_partitions_keys_back() {
    let db = fresh_db("rollout_part_key_back");
    let admin = keyed(&db).await;
    let before = amount_keys(&admin).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let direct_error = key_error(&direct(&db)).await;
    let id = cut_over(&admin, &url).await;
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    assert_eq!(amount_keys(&admin).await, before);
    assert_eq!(key_error(&url).await, direct_error);
    let left = named_pgshift(&admin, "pg_constraint", "conname").await;
    assert_eq!(left, 0, "twins or parked keys left behind");
}

/// Puts a foreign key by the name of a leaf's twin key on `orders_2a`, but
/// not the twin (other actions), and asks for the cutover: it is refused
/// after the index twins were built. Returns the key's name and the error.
async fn hold_with_a_fake_key(admin: &Client, id: i64) -> (String, String) {
    let key: String = admin
        .query_one(
            "SELECT oid::text FROM pg_constraint WHERE conrelid = 'orders'::regclass AND conname = 'orders_amount_fkey'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fake = format!("pgshift_{id}_fk_{key}");
    admin
        .batch_execute(&format!(
            "ALTER TABLE orders_2a ADD CONSTRAINT {fake} FOREIGN KEY (amount__pgshift_new) \
             REFERENCES amounts (v) ON DELETE SET NULL"
        ))
        .await
        .unwrap();
    rollout::request(admin, id, Request::Cutover).await.unwrap();
    let waited = std::time::Instant::now();
    loop {
        let (phase, error) = common::rollouts::phase(admin, id).await;
        assert!(
            ["verified", "verifying"].contains(&phase.as_str()),
            "{phase} {error:?}"
        );
        if let Some(e) = error.filter(|e| e.contains("did not make")) {
            return (fake, e);
        }
        assert!(waited.elapsed() < Duration::from_secs(30), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A constraint by the name of a leaf's twin, made by someone else with other
/// actions: the cutover does not take it for the twin (the table's key added
/// over it would check the partition in the window, as the owner).
#[tokio::test]
async fn a_leaf_key_by_the_twins_name_but_not_the_twin_holds_the_cutover() {
    let db = fresh_db("rollout_part_key_fake");
    let admin = keyed(&db).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(90)).await;
    let (_, error) = hold_with_a_fake_key(&admin, id).await;
    assert!(error.contains("orders_2a"), "{error}");
}

/// A cutover held after the partitions' index twins were built (a leaf key by
/// a twin's name), then `REINDEX … CONCURRENTLY` of a partition (its indexes
/// get new oids): the next attempt keeps the twins it built (named by the
/// partition and the table's index), leaves none behind on the column, and a
/// rollback after it gives every index back.
#[tokio::test]
async fn a_partition_reindexed_between_two_cutover_attempts_keeps_its_twins() {
    let db = fresh_db("rollout_part_reindex");
    let admin = keyed(&db).await;
    admin.batch_execute(AMOUNT_INDEXES).await.unwrap();
    let before = amount_indexes(&admin).await;
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(90)).await;
    let (fake, _) = hold_with_a_fake_key(&admin, id).await;
    let built: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey) \
             WHERE a.attname = 'amount__pgshift_new' AND i.relname LIKE 'pgshift%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        built,
        3 * 4,
        "every leaf's twins were built before the refusal"
    );
    // Those of a partition not reindexed are valid twins: kept, not built again.
    let kept = "SELECT array_agg(i.oid::text ORDER BY i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                WHERE x.indrelid = 'orders_2a'::regclass AND i.relname LIKE 'pgshift%'";
    let twins_2a: Vec<String> = admin.query_one(kept, &[]).await.unwrap().get(0);
    assert_eq!(twins_2a.len(), 3);
    for step in [
        format!("ALTER TABLE orders_2a DROP CONSTRAINT {fake}"),
        "REINDEX TABLE CONCURRENTLY orders_0".to_string(),
        "REINDEX TABLE CONCURRENTLY bucket_1".to_string(),
    ] {
        admin.batch_execute(&step).await.unwrap();
    }
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    assert_eq!(amount_indexes(&admin).await, typed(&before, "bigint"));
    let now_2a: Vec<String> = admin
        .query_one(
            "SELECT array_agg(x.indexrelid::text ORDER BY x.indexrelid) FROM pg_index x \
             WHERE x.indrelid = 'orders_2a'::regclass AND x.indexrelid::text = ANY ($1)",
            &[&twins_2a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(now_2a, twins_2a, "valid twins built again");
    indexes_hold_every_row(&admin).await;
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    assert_eq!(amount_indexes(&admin).await, typed(&before, "integer"));
    let left = named_pgshift(&admin, "pg_class", "relname").await;
    assert_eq!(left, 0, "twins left behind");
}

/// Indexes partitions made on their own (attached to none of the table's),
/// one the replica identity of its partition, one with a comment: each gets
/// a twin on its partition that takes its name at the cutover, with the
/// replica identity and the comment; a rollback after the cutover gives
/// them back; a second rollout finishes with them on the new type.
#[tokio::test]
async fn a_partitions_own_indexes_on_the_column_get_twins() {
    let db = fresh_db("rollout_part_own");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE INDEX orders_0_own ON orders_0 (amount, note);
             CREATE UNIQUE INDEX bucket_1_own ON bucket_1 (amount, id);
             ALTER TABLE bucket_1 REPLICA IDENTITY USING INDEX bucket_1_own;
             CREATE INDEX orders_2b_own ON orders_2b (amount DESC);
             COMMENT ON INDEX orders_2b_own IS 'the default partition''s'",
        )
        .await
        .unwrap();
    let before = amount_indexes(&admin).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let said = leaf_marks(&admin).await;
    assert_eq!(said.len(), 1, "{said:?}");
    let noted = common::rollouts::comments(&admin).await;
    assert_eq!(noted.len(), 1, "{noted:?}");
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    let through = connect(&url).await;
    for end in [Request::Rollback, Request::Finish] {
        let id = cut_over(&admin, &url).await;
        assert_eq!(amount_indexes(&admin).await, typed(&before, "bigint"));
        assert_eq!(leaf_marks(&admin).await, said);
        // The parked index keeps its own until the finish drops it.
        let now = common::rollouts::comments(&admin).await;
        assert!(now.contains(&noted[0]), "{now:?}");
        through
            .batch_execute(
                "UPDATE orders SET amount = amount + 1, shadow = shadow + 1 WHERE id % 7 = 0",
            )
            .await
            .unwrap();
        indexes_hold_every_row(&admin).await;
        let (done, ty) = match end {
            Request::Rollback => ("rolled_back", "integer"),
            _ => ("finished", "bigint"),
        };
        if end == Request::Rollback {
            // An index a partition gained since the cutover would go with
            // the new column: the rollback refuses until it is gone.
            admin
                .batch_execute("CREATE INDEX orders_0_late ON orders_0 (amount)")
                .await
                .unwrap();
            rollout::request(&admin, id, Request::Rollback)
                .await
                .unwrap();
            let waited = std::time::Instant::now();
            loop {
                let (phase, error) = common::rollouts::phase(&admin, id).await;
                assert_eq!(phase, "cut_over", "{error:?}");
                if error.is_some_and(|e| e.contains("orders_0_late")) {
                    break;
                }
                assert!(waited.elapsed() < Duration::from_secs(30), "no refusal");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            admin
                .batch_execute("DROP INDEX orders_0_late")
                .await
                .unwrap();
        }
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, done, Duration::from_secs(60)).await;
        assert_eq!(amount_indexes(&admin).await, typed(&before, ty), "{done}");
        assert_eq!(leaf_marks(&admin).await, said, "{done}");
        assert_eq!(common::rollouts::comments(&admin).await, noted, "{done}");
        indexes_hold_every_row(&admin).await;
        assert_eq!(mismatches(&admin).await, 0);
        let left = named_pgshift(&admin, "pg_class", "relname").await;
        assert_eq!(left, 0, "twins or old indexes left after {done}");
    }
}
