//! Online column rollouts against a real Postgres: an `ALTER COLUMN … TYPE` that
//! would rewrite the table runs as a new column, mirrored, backfilled, verified,
//! cut over and finished (or rolled back), while writers keep writing through
//! pgshift and directly. Every writer stores what it wrote to `amount` in
//! `shadow` too, in the same statement, so the data check is row by row: after
//! the rollout, `amount` equals `shadow` everywhere.

mod common;

use common::rollouts::{
    column_type, mismatches, rows_done, setup, start, wait_phase, writer, writer_with, ROWS,
};
use common::scenario::direct;
use common::{connect, fresh_db, sqlstate, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn proxy_with(edit: impl FnOnce(&mut pgshift::config::Config)) -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 400;
        c.ddl.retry_deadline_ms = 30_000;
        c.rollout.batch_rows = 2_000;
        c.rollout.min_batch_rows = 100;
        // No latency governor unless a test asks for it: its pace would depend
        // on how busy the test host is.
        c.rollout.latency_factor = 0.0;
        edit(c)
    })
}

#[tokio::test]
async fn a_type_change_rolls_out_while_writers_write() {
    let db = fresh_db("rollout_run");
    let admin = setup(&db).await;
    let proxy = proxy_with(|c| c.rollout.rows_per_second = 20_000);
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
    let writers: Vec<_> = vec![
        w(proxy.conn_str(&db, "postgres"), 0),
        w(proxy.conn_str(&db, "postgres"), 1_000_000),
        w(direct(&db), 2_000_000),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    // Still the old type until the cutover; the new column exists and is mirrored.
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("integer")
    );
    assert_eq!(
        column_type(&admin, "amount__pgshift_new").await.as_deref(),
        Some("bigint")
    );
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let client = connect(&direct(&db)).await;
    rollout::request(&client, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
    assert_eq!(
        column_type(&admin, "amount__pgshift_old").await.as_deref(),
        Some("integer")
    );
    // Writes after the cutover keep reaching the old column too, and INSERTs by
    // position (into the old column) reach the new one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_cutover: i64 = admin
        .query_one("SELECT count(*) FROM orders WHERE note = 'positional' AND amount__pgshift_old IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(after_cutover > 0, "no INSERT by position after the cutover");
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
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
    assert_eq!(column_type(&admin, "amount__pgshift_old").await, None);
    assert_eq!(mismatches(&admin).await, 0);
    let nn: bool = admin
        .query_one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(nn, "NOT NULL moved to the new column");
    let default: i64 = {
        admin
            .batch_execute("INSERT INTO orders (shadow) VALUES (7)")
            .await
            .unwrap();
        admin
            .query_one("SELECT amount FROM orders ORDER BY id DESC LIMIT 1", &[])
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(default, 7, "the default moved to the new column");
    let leftovers: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgname LIKE 'pgshift%') \
             + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgshift'::regnamespace AND proname LIKE '%\\_' || $1::text)",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0, "triggers or functions left behind");
}

#[tokio::test]
async fn rollback_from_every_phase_keeps_every_write() {
    let db = fresh_db("rollout_back");
    let admin = setup(&db).await;
    // Slow enough that the backfill and the verify pass can be caught at work.
    let proxy = proxy_with(|c| c.rollout.rows_per_second = 10_000);
    let client = connect(&direct(&db)).await;
    for from in ["backfilling", "paused", "verifying", "verified", "cut_over"] {
        let id = start(
            &proxy.conn_str(&db, "postgres"),
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let w = writer(
            proxy.conn_str(&db, "postgres"),
            stop.clone(),
            done.clone(),
            5,
            false,
        );
        match from {
            "backfilling" => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (phase, _) = common::rollouts::phase(&admin, id).await;
                assert_eq!(phase, "backfilling");
            }
            "paused" => {
                rollout::request(&client, id, Request::Pause).await.unwrap();
                let waited = std::time::Instant::now();
                while !admin
                    .query_one("SELECT paused FROM pgshift.rollouts WHERE id = $1", &[&id])
                    .await
                    .unwrap()
                    .get::<_, bool>(0)
                {
                    assert!(waited.elapsed() < Duration::from_secs(10), "not paused");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            "verifying" => wait_phase(&admin, id, "verifying", Duration::from_secs(60)).await,
            _ => wait_phase(&admin, id, "verified", Duration::from_secs(60)).await,
        }
        if from == "cut_over" {
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
        w.await.unwrap();
        assert_eq!(
            column_type(&admin, "amount").await.as_deref(),
            Some("integer")
        );
        assert_eq!(column_type(&admin, "amount__pgshift_new").await, None);
        assert_eq!(column_type(&admin, "amount__pgshift_old").await, None);
        assert_eq!(mismatches(&admin).await, 0, "rolled back from {from}");
        let leftovers: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgname LIKE 'pgshift%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(leftovers, 0, "triggers left after a rollback from {from}");
        let nn: bool = admin
            .query_one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(nn);
    }
}

#[tokio::test]
async fn what_cannot_roll_out_is_refused_and_changes_nothing() {
    let db = fresh_db("rollout_refused");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE FUNCTION public.twice(int) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
             CREATE TABLE tagged (id int PRIMARY KEY, v int, w int);
             CREATE VIEW tagged_w AS SELECT w FROM tagged;
             CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
             CREATE TABLE touched (id int PRIMARY KEY, v int);
             CREATE TRIGGER touch BEFORE UPDATE ON touched FOR EACH ROW EXECUTE FUNCTION public.touch();",
        )
        .await
        .unwrap();
    let proxy = proxy_with(|_| {});
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    for (sql, code, words) in [
        (
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint USING twice(amount)",
            "42501",
            "function twice(integer)",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint USING amount + random()::int",
            "42P17",
            "immutable",
        ),
        (
            "ALTER TABLE tagged ALTER COLUMN w TYPE bigint",
            "0A000",
            "tagged_w",
        ),
        (
            "ALTER TABLE touched ALTER COLUMN v TYPE bigint",
            "42501",
            "trigger touch",
        ),
        (
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint, ADD COLUMN x int",
            "0A000",
            "separate statement",
        ),
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        let db_error = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
        let text = format!("{} {}", db_error.message(), db_error.hint().unwrap_or(""));
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{sql}: {text}");
        assert!(text.contains(words), "{sql}: {text}");
    }
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("integer")
    );
    assert_eq!(column_type(&admin, "amount__pgshift_new").await, None);
    let open: i64 = admin
        .query_one(
            "SELECT count(*) FROM pgshift.rollouts WHERE phase NOT IN ('rolled_back', 'finished')",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(open, 0);
}

#[tokio::test]
async fn a_new_proxy_takes_over_a_rollout_the_old_one_left() {
    let db = fresh_db("rollout_resume");
    let admin = setup(&db).await;
    let slow = |c: &mut pgshift::config::Config| {
        c.rollout.rows_per_second = 4_000;
        c.rollout.batch_rows = 500;
    };
    let first = proxy_with(slow);
    let id = start(
        &first.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint USING amount::bigint * 10",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(first);
    let done = rows_done(&admin, id).await;
    assert!(
        done > 0 && done < ROWS,
        "the first proxy got part of the way: {done}"
    );
    let second = proxy_with(|c| c.rollout.cutover = pgshift::config::When::Auto);
    // A client connecting is what makes the new proxy look at the database.
    let _client = connect(&second.conn_str(&db, "postgres")).await;
    wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount IS DISTINCT FROM shadow::bigint * 10",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn with_rollouts_off_the_type_change_is_refused() {
    let db = fresh_db("rollout_off");
    let admin = setup(&db).await;
    let proxy = proxy_with(|c| c.rollout.enabled = false);
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let e = client
        .batch_execute("ALTER TABLE orders ALTER COLUMN amount TYPE bigint")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("rewrites all of orders"));
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("integer")
    );
}

#[tokio::test]
async fn inside_a_transaction_the_rollout_starts_at_commit_and_rollback_cancels_it() {
    let db = fresh_db("rollout_tx");
    let admin = setup(&db).await;
    let proxy = proxy_with(|_| {});
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    // Rolled back: nothing starts.
    client
        .batch_execute("BEGIN; ALTER TABLE orders ALTER COLUMN amount TYPE bigint; ROLLBACK")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(column_type(&admin, "amount__pgshift_new").await, None);
    // Committed, as Alembic and Django send it: the rollout starts after COMMIT.
    client
        .batch_execute("BEGIN; ALTER TABLE orders ALTER COLUMN amount TYPE bigint; UPDATE orders SET note = 'migrated' WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        column_type(&admin, "amount__pgshift_new").await,
        None,
        "not before COMMIT"
    );
    client.batch_execute("COMMIT").await.unwrap();
    let id: i64 = {
        let mut id = None;
        for _ in 0..100 {
            id = admin
                .query_opt(
                    "SELECT id FROM pgshift.rollouts WHERE phase <> 'rolled_back'",
                    &[],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            if id.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id.expect("a rollout after COMMIT")
    };
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    assert_eq!(mismatches(&admin).await, 0);
}

#[tokio::test]
async fn the_cutover_waits_out_a_long_transaction_without_stalling_readers() {
    let db = fresh_db("rollout_wait");
    let admin = setup(&db).await;
    let proxy = proxy_with(|c| {
        c.ddl.stall_budget_ms = 100;
        c.ddl.lock_timeout_ms = 500;
    });
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; SELECT count(*) FROM orders WHERE id = 1")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let slow = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, worst, slow, conn) = (
            stop.clone(),
            worst.clone(),
            slow.clone(),
            proxy.conn_str(&db, "postgres"),
        );
        tokio::spawn(async move {
            let c = connect(&conn).await;
            while !stop.load(Ordering::Relaxed) {
                let t = std::time::Instant::now();
                // Simple protocol: a statement parsed before the swap and
                // executed after it gets "cached plan must not change result
                // type" (as after a direct ALTER; pgshift does not hide it yet).
                c.simple_query("SELECT amount FROM orders WHERE id = 2")
                    .await
                    .unwrap();
                let took = t.elapsed();
                if took > Duration::from_millis(60) {
                    slow.fetch_add(1, Ordering::Relaxed);
                }
                let mut w = worst.lock().unwrap();
                *w = (*w).max(took);
            }
        })
    };
    let control = connect(&direct(&db)).await;
    rollout::request(&control, id, Request::Cutover)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        common::rollouts::phase(&admin, id).await.0,
        "verified",
        "no cutover under the long transaction"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let worst = *worst.lock().unwrap();
    let slow = slow.load(Ordering::Relaxed);
    eprintln!("worst {worst:?}, {slow} reads over 60 ms");
    // The budget (100 ms) plus scheduling slack on a busy 2-core machine; and no
    // attempts while the long transaction ran (each would stall the reader for
    // up to the budget): at most the final one.
    assert!(
        worst < Duration::from_millis(500),
        "a reader waited {worst:?}"
    );
    assert!(slow <= 2, "{slow} reads waited over 60 ms");
}

#[tokio::test]
async fn a_value_that_does_not_convert_fails_its_write_and_positional_inserts_keep_working() {
    let db = fresh_db("rollout_convert");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE codes (id int PRIMARY KEY, code text, seen text);
             INSERT INTO codes SELECT g, g::text, g::text FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let proxy = proxy_with(|c| c.rollout.rows_per_second = 10_000);
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE codes ALTER COLUMN code TYPE int USING code::int",
    )
    .await;
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    // While mirrored: a value the new type cannot hold fails the write (as it
    // would once the type had changed in place), by name and by position; the
    // row is not written with a NULL a cutover would keep.
    for bad in [
        "INSERT INTO codes (id, code, seen) VALUES (30001, 'x1', 'x1')",
        "INSERT INTO codes VALUES (30002, 'x2', 'x2')",
        "UPDATE codes SET code = 'x3' WHERE id = 5",
    ] {
        let e = app.batch_execute(bad).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22P02"), "{bad}: {e:?}");
    }
    app.batch_execute(
        "INSERT INTO codes VALUES (30003, '77', '77'); UPDATE codes SET code = '8', seen = '8' WHERE id = 6",
    )
    .await
    .unwrap();
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    // After the cutover the old column stands where `code` stood: an INSERT by
    // position puts its value there, and the mirror converts it into `code`.
    app.batch_execute("INSERT INTO codes VALUES (30004, '91', '91')")
        .await
        .unwrap();
    let e = app
        .batch_execute("INSERT INTO codes VALUES (30005, 'x5', 'x5')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("22P02"), "{e:?}");
    app.batch_execute("INSERT INTO codes (id, code, seen) VALUES (30006, 12, '12')")
        .await
        .unwrap();
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM codes WHERE code IS DISTINCT FROM seen::int",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM codes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 20_003);
}

#[tokio::test]
async fn an_automatic_cutover_that_cannot_work_stops_until_asked_again() {
    let db = fresh_db("rollout_auto_stop");
    let admin = setup(&db).await;
    let proxy = proxy_with(|c| {
        c.rollout.rows_per_second = 20_000;
        c.rollout.cutover = pgshift::config::When::Auto;
    });
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    // A new user of the old column pgshift cannot carry over (a view): the
    // swap would leave it behind.
    admin
        .batch_execute("CREATE VIEW orders_amount AS SELECT amount FROM orders")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let error = loop {
        let (p, error) = common::rollouts::phase(&admin, id).await;
        if let (true, Some(e)) = (p == "verified", &error) {
            if e.contains("gained users") {
                break e.clone();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && p != "cut_over",
            "{p} {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("ask for the cutover again"), "{error}");
    // No more automatic attempts (each would verify the whole table again first).
    for _ in 0..30 {
        let (p, _) = common::rollouts::phase(&admin, id).await;
        assert_eq!(p, "verified");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .batch_execute("DROP VIEW orders_amount")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    assert_eq!(mismatches(&admin).await, 0);
}

/// Each index of `orders` and its definition.
async fn index_defs(admin: &tokio_postgres::Client) -> Vec<(String, String)> {
    admin
        .query(
            "SELECT c.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
             WHERE x.indrelid = 'orders'::regclass AND x.indisvalid ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn the_columns_indexes_are_built_again_and_keep_their_names() {
    let db = fresh_db("rollout_indexes");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE INDEX orders_amount ON orders (amount);
             CREATE INDEX orders_note_amount ON orders (note, amount DESC) INCLUDE (shadow) WITH (fillfactor = 80);",
        )
        .await
        .unwrap();
    let before = index_defs(&admin).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let proxy = proxy_with(|c| c.rollout.rows_per_second = 20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let positional = Arc::new(AtomicBool::new(true));
    let w = writer_with(
        proxy.conn_str(&db, "postgres"),
        stop.clone(),
        done.clone(),
        0,
        false,
        positional.clone(),
    );
    // Cut over, then rolled back; then again, cut over and finished.
    for end in [Request::Rollback, Request::Finish] {
        let id = start(
            &proxy.conn_str(&db, "postgres"),
            "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
        )
        .await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        // The twins carry the names and, on the new `amount`, the same definitions;
        // the old indexes stay on the old column until the finish.
        let now = index_defs(&admin).await;
        for def in &before {
            assert!(now.contains(def), "{def:?} not in {now:?}");
        }
        let parked: Vec<&(String, String)> = now
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("pgshift_{id}_old_")))
            .collect();
        assert_eq!(parked.len(), 2, "{now:?}");
        assert!(
            parked
                .iter()
                .all(|(_, d)| d.contains("amount__pgshift_old")),
            "{parked:?}"
        );
        admin
            .batch_execute("SET enable_seqscan = off")
            .await
            .unwrap();
        let plan_off: String = admin
            .query("EXPLAIN SELECT * FROM orders WHERE amount = 5", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        admin.batch_execute("RESET enable_seqscan").await.unwrap();
        assert!(plan_off.contains("orders_amount"), "{plan_off}");
        let target = match end {
            Request::Rollback => "rolled_back",
            _ => {
                positional.store(false, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                "finished"
            }
        };
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, target, Duration::from_secs(60)).await;
        // Every index as it was, by name and definition, and nothing of pgshift's.
        assert_eq!(index_defs(&admin).await, before);
        assert_eq!(mismatches(&admin).await, 0);
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
}

/// [`key_state`] once the foreign key is validated again (pgshift re-adds it
/// NOT VALID in the lock window and validates it right after).
async fn validated_key_state(
    admin: &tokio_postgres::Client,
) -> (String, String, Option<String>, String) {
    let started = std::time::Instant::now();
    loop {
        let state = key_state(admin).await;
        if state.3.ends_with(" true") || started.elapsed() > Duration::from_secs(20) {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The primary key of `accounts`, its column's type, the sequence its column
/// owns, and the foreign key of `entries` that references it (with its validity).
async fn key_state(admin: &tokio_postgres::Client) -> (String, String, Option<String>, String) {
    let row = admin
        .query_one(
            "SELECT k.conname || ' ' || pg_get_constraintdef(k.oid), format_type(a.atttypid, a.atttypmod), \
                    pg_get_serial_sequence('accounts', 'id'), \
                    (SELECT f.conname || ' ' || pg_get_constraintdef(f.oid) || ' ' || f.convalidated \
                       FROM pg_constraint f WHERE f.conrelid = 'entries'::regclass AND f.contype = 'f') \
             FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attname = 'id' \
             WHERE k.conrelid = 'accounts'::regclass AND k.contype = 'p'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn a_serial_primary_key_becomes_bigint_and_can_go_back() {
    let db = fresh_db("rollout_pkey");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE accounts (id serial PRIMARY KEY, v int, seen int);
             INSERT INTO accounts (v, seen) SELECT g, g FROM generate_series(1, 20000) g;
             CREATE TABLE entries (account int REFERENCES accounts ON DELETE CASCADE, amount int);
             INSERT INTO entries SELECT g, g FROM generate_series(1, 20000, 7) g;
             CREATE TABLE referenced (id int PRIMARY KEY, code int UNIQUE DEFERRABLE);",
        )
        .await
        .unwrap();
    let proxy = proxy_with(|c| c.rollout.rows_per_second = 20_000);
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    // A deferrable unique constraint does not move (its checks wait for COMMIT).
    let e = app
        .batch_execute("ALTER TABLE referenced ALTER COLUMN code TYPE bigint")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    let before = key_state(&admin).await;
    assert_eq!(
        before,
        (
            "accounts_pkey PRIMARY KEY (id)".to_string(),
            "integer".to_string(),
            Some("public.accounts_id_seq".to_string()),
            "entries_account_fkey FOREIGN KEY (account) REFERENCES accounts(id) ON DELETE CASCADE true"
                .to_string()
        )
    );
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (stop, conn) = (stop.clone(), proxy.conn_str(&db, "postgres"));
        tokio::spawn(async move {
            let c = connect(&conn).await;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                c.batch_execute(
                    "WITH a AS (INSERT INTO accounts (v, seen) VALUES (1, 1) RETURNING id) \
                     INSERT INTO entries SELECT id, 1 FROM a; \
                     UPDATE accounts SET v = v + 1, seen = seen + 1 WHERE id = 5",
                )
                .await
                .unwrap();
                n += 1;
            }
            n
        })
    };
    for end in [Request::Rollback, Request::Finish] {
        let id = start(
            &proxy.conn_str(&db, "postgres"),
            "ALTER TABLE accounts ALTER COLUMN id TYPE bigint",
        )
        .await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        assert_eq!(
            validated_key_state(&admin).await,
            (
                before.0.clone(),
                "bigint".to_string(),
                before.2.clone(),
                before.3.clone()
            )
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let target = match end {
            Request::Rollback => "rolled_back",
            _ => "finished",
        };
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, target, Duration::from_secs(60)).await;
        let ty = match end {
            Request::Rollback => "integer",
            _ => "bigint",
        };
        assert_eq!(
            validated_key_state(&admin).await,
            (
                before.0.clone(),
                ty.to_string(),
                before.2.clone(),
                before.3.clone()
            )
        );
    }
    stop.store(true, Ordering::Relaxed);
    let inserted = inserter.await.unwrap();
    assert!(inserted > 10, "{inserted}");
    let (rows, wrong, distinct): (i64, i64, i64) = {
        let r = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE v IS DISTINCT FROM seen), count(DISTINCT id) FROM accounts",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((rows, wrong, distinct), (20_000 + inserted, 0, rows));
    // Every entry still has its account (the foreign key held throughout).
    let orphans: i64 = admin
        .query_one(
            "SELECT count(*) FROM entries e WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
    let leftovers: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgshift%' AND relnamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn a_failed_rollout_does_not_refuse_the_applications_writes() {
    let db = fresh_db("rollout_lenient");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE codes (id int PRIMARY KEY, code text);
             INSERT INTO codes SELECT g, g::text FROM generate_series(1, 5000) g;
             UPDATE codes SET code = 'legacy' WHERE id = 4000;",
        )
        .await
        .unwrap();
    let proxy = proxy_with(|_| {});
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE codes ALTER COLUMN code TYPE int USING code::int",
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        let (p, error) = common::rollouts::phase(&admin, id).await;
        if p == "failed" {
            assert!(error.unwrap_or_default().contains("legacy"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old type takes these; directly, the failed ALTER would have changed
    // nothing, so they must work as before.
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    app.batch_execute(
        "INSERT INTO codes VALUES (9001, 'abc'); UPDATE codes SET code = code WHERE id = 4000",
    )
    .await
    .unwrap();
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while common::rollouts::phase(&admin, id).await.0 != "rolled_back" {
        assert!(started.elapsed() < Duration::from_secs(30), "no rollback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: i64 = admin
        .query_one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'codes'::regclass AND attname LIKE '%pgshift%' AND NOT attisdropped", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn keys_come_back_exact_whatever_the_database_sets() {
    let db = fresh_db("rollout_float_key");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET extra_float_digits = 0;
             CREATE TABLE f (id float8 PRIMARY KEY, amount int);
             INSERT INTO f SELECT g, g FROM generate_series(1, 5) g;
             INSERT INTO f VALUES (5.000000000000001, 42);"
        ))
        .await
        .unwrap();
    let proxy = proxy_with(|c| c.rollout.cutover = pgshift::config::When::Auto);
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE f ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "cut_over", Duration::from_secs(30)).await;
    let missing: i64 = admin
        .query_one("SELECT count(*) FROM f WHERE amount IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(missing, 0, "a row past the pass's rounded last key");
}

#[tokio::test]
async fn columns_of_a_table_under_rollout_do_not_change_through_pgshift() {
    let db = fresh_db("rollout_columns_held");
    let admin = setup(&db).await;
    let proxy = proxy_with(|c| c.rollout.rows_per_second = 2_000);
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    // An added column would stand after pgshift's: an INSERT by position would
    // put its last value into pgshift's column, and the mirror would overwrite it.
    for sql in [
        "ALTER TABLE orders ADD COLUMN extra int",
        "ALTER TABLE public.orders RENAME COLUMN note TO remark",
        "ALTER TABLE orders DROP COLUMN note",
        "ALTER TABLE orders ALTER COLUMN shadow TYPE bigint",
        "BEGIN; ALTER TABLE orders ADD COLUMN extra int; COMMIT",
    ] {
        let e = app.batch_execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("55006"), "{sql}: {e:?}");
        let _ = app.batch_execute("ROLLBACK").await;
    }
    // Other changes, and other tables, go on.
    app.batch_execute("CREATE TABLE other (id int); ALTER TABLE other ADD COLUMN extra int; COMMENT ON TABLE orders IS 'x'")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(30)).await;
    // Once the process no longer drives or watches it, the table is free again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.batch_execute("ALTER TABLE orders ADD COLUMN extra int")
        .await
        .unwrap();
}

/// Each constraint of `parts` and `part_uses` with its definition and validity,
/// and the type of `parts.code`.
async fn unique_state(admin: &tokio_postgres::Client) -> (Vec<String>, String) {
    let started = std::time::Instant::now();
    loop {
        let defs: Vec<String> = admin
            .query(
                "SELECT conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint \
                 WHERE conrelid IN ('parts'::regclass, 'part_uses'::regclass) ORDER BY conname",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let ty: String = admin
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'parts'::regclass AND attname = 'code'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        // A moved foreign key is validated right after the move.
        if defs.iter().all(|d| d.ends_with(" true")) || started.elapsed() > Duration::from_secs(20)
        {
            return (defs, ty);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_unique_constraint_and_the_keys_that_reference_it_move_too() {
    let db = fresh_db("rollout_unique");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE parts (id int PRIMARY KEY, code int CONSTRAINT parts_code_key UNIQUE, serial_no int);
             CREATE UNIQUE INDEX parts_serial ON parts (serial_no);
             INSERT INTO parts SELECT g, g * 10, g FROM generate_series(1, 5000) g;
             CREATE TABLE part_uses (part_code int REFERENCES parts (code), part_serial int REFERENCES parts (serial_no));
             INSERT INTO part_uses SELECT g * 10, g FROM generate_series(1, 5000, 3) g;",
        )
        .await
        .unwrap();
    let (before, ty) = unique_state(&admin).await;
    assert_eq!(ty, "integer");
    assert_eq!(before.len(), 4, "{before:?}");
    let proxy = proxy_with(|_| {});
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    for (column, end) in [
        ("code", Request::Rollback),
        ("code", Request::Finish),
        ("serial_no", Request::Finish),
    ] {
        let id = start(
            &proxy.conn_str(&db, "postgres"),
            &format!("ALTER TABLE parts ALTER COLUMN {column} TYPE bigint"),
        )
        .await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        assert_eq!(unique_state(&admin).await.0, before, "{column} cut over");
        // Still unique, still referenced.
        let dup = app
            .batch_execute(&format!(
                "INSERT INTO parts (id, {column}) VALUES (90001, 10)"
            ))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&dup).as_deref(), Some("23505"), "{dup:?}");
        let orphan = app
            .batch_execute("INSERT INTO part_uses VALUES (7, NULL), (NULL, 90007)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&orphan).as_deref(), Some("23503"), "{orphan:?}");
        let target = match end {
            Request::Rollback => "rolled_back",
            _ => "finished",
        };
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, target, Duration::from_secs(60)).await;
        assert_eq!(unique_state(&admin).await.0, before, "{column} {target}");
    }
    let types: Vec<String> = admin
        .query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'parts'::regclass AND attname IN ('code', 'serial_no') ORDER BY attname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["bigint", "bigint"]);
}

#[tokio::test]
async fn what_the_column_carries_moves_with_it_and_nothing_added_since_is_lost() {
    let db = fresh_db("rollout_carries");
    let admin = setup(&db).await;
    let clerk = format!("{db}_clerk");
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {clerk}; CREATE ROLE {clerk} LOGIN;
             GRANT SELECT (id, amount), UPDATE (amount) ON orders TO {clerk};
             COMMENT ON COLUMN orders.amount IS 'in cents';
             ALTER TABLE orders ALTER COLUMN amount SET STATISTICS 500;
             ALTER TABLE orders ADD COLUMN code int;
             UPDATE orders SET code = id;
             ALTER TABLE orders ALTER COLUMN code SET NOT NULL;
             CREATE UNIQUE INDEX orders_code ON orders (code);
             ALTER TABLE orders REPLICA IDENTITY USING INDEX orders_code;"
        ))
        .await
        .unwrap();
    let proxy = proxy_with(|_| {});
    let as_clerk = connect(&direct(&db).replace("user=postgres", &format!("user={clerk}"))).await;
    let state = |column: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT col_description('orders'::regclass, attnum)::text, attstattarget::int4, \
                            (SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
                              WHERE x.indrelid = 'orders'::regclass AND x.indisreplident) \
                     FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = $1",
                    &[&column],
                )
                .await
                .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, i32>(1), r.get::<_, Option<String>>(2)))
                .unwrap()
        }
    };
    let before_amount = state("amount").await;
    for (column, end) in [("amount", Request::Finish), ("code", Request::Finish)] {
        let sql = match column {
            "amount" => "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
            _ => "ALTER TABLE orders ALTER COLUMN code TYPE bigint",
        };
        let id = start(&proxy.conn_str(&db, "postgres"), sql).await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        if column == "amount" {
            assert_eq!(state("amount").await, before_amount);
            as_clerk
                .batch_execute("SELECT amount FROM orders LIMIT 1; UPDATE orders SET amount = amount WHERE id = 1")
                .await
                .unwrap();
            // Added to the new column since the cutover: a rollback would drop it.
            admin
                .batch_execute(
                    "ALTER TABLE orders ADD CONSTRAINT amount_small CHECK (amount < 100000000)",
                )
                .await
                .unwrap();
            rollout::request(&admin, id, Request::Rollback)
                .await
                .unwrap();
            let started = std::time::Instant::now();
            loop {
                let (p, error) = common::rollouts::phase(&admin, id).await;
                assert_eq!(p, "cut_over");
                if error.as_deref().is_some_and(|e| e.contains("amount_small")) {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "{error:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            admin
                .batch_execute("ALTER TABLE orders DROP CONSTRAINT amount_small")
                .await
                .unwrap();
        } else {
            // The replica identity moved to the twin of orders_code.
            assert_eq!(state("code").await.2.as_deref(), Some("orders_code"));
        }
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    }
    assert_eq!(state("amount").await, before_amount);
    as_clerk
        .batch_execute(
            "SELECT amount FROM orders LIMIT 1; UPDATE orders SET amount = amount WHERE id = 1",
        )
        .await
        .unwrap();
    assert_eq!(state("code").await.2.as_deref(), Some("orders_code"));
    // A Query that changes the search_path before its ALTER is judged by name.
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN shadow TYPE bigint",
    )
    .await;
    let app = connect(&proxy.conn_str(&db, "postgres")).await;
    let e = app
        .batch_execute("SET search_path = public; ALTER TABLE orders ADD COLUMN extra int")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55006"), "{e:?}");
    let e = app
        .batch_execute(&format!(
            "ALTER TABLE {db}.public.orders ADD COLUMN extra int"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55006"), "{e:?}");
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(30)).await;
}

/// Every foreign key of the database: its table, definition and validity.
async fn foreign_keys(admin: &tokio_postgres::Client) -> Vec<String> {
    admin
        .query(
            "SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated \
             FROM pg_constraint WHERE contype = 'f' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test]
async fn a_key_a_partitioned_table_references_is_refused() {
    let db = fresh_db("rollout_fk_parts");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, v int);
             INSERT INTO accounts SELECT g, g FROM generate_series(1, 5000) g;
             CREATE TABLE events (account int REFERENCES accounts, at int) PARTITION BY RANGE (at);
             CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);
             CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200);
             INSERT INTO events SELECT g, g % 200 FROM generate_series(1, 5000, 3) g;",
        )
        .await
        .unwrap();
    let before = foreign_keys(&admin).await;
    assert_eq!(before.len(), 3, "{before:?}");
    // Postgres 15 cannot add a partitioned table's foreign key NOT VALID (its
    // validation would scan under the lock window): refused up front.
    let proxy = proxy_with(|_| {});
    let e = connect(&proxy.conn_str(&db, "postgres"))
        .await
        .batch_execute("ALTER TABLE accounts ALTER COLUMN id TYPE bigint")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    assert_eq!(foreign_keys(&admin).await, before);
    let e = admin
        .batch_execute("INSERT INTO events VALUES (999999, 5)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23503"), "{e:?}");
}

async fn throttle_ms(admin: &tokio_postgres::Client, id: i64) -> i64 {
    admin
        .query_one(
            "SELECT coalesce(throttle_ms, 0) FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// The backfill's governor: a client's turns through pgshift take ~0.1 ms before
/// the backfill and 10 ms once it runs (`pg_sleep`, standing in for an
/// application the backfill slows down); the backfill adds a pause of its own
/// (`throttle_ms`), and drops it once the turns are fast again.
#[tokio::test]
async fn the_backfill_slows_down_while_the_applications_latency_is_up() {
    let db = fresh_db("rollout_governor");
    let admin = setup(&db).await;
    let proxy = proxy_with(|c| {
        c.rollout.rows_per_second = 2_500;
        c.rollout.latency_factor = 2.0;
    });
    let slow = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (slow, stop) = (slow.clone(), stop.clone());
        let client = connect(&proxy.conn_str(&db, "postgres")).await;
        async move {
            while !stop.load(Ordering::Relaxed) {
                let sql = match slow.load(Ordering::Relaxed) {
                    true => "SELECT pg_sleep(0.01)",
                    false => "SELECT 1",
                };
                client.simple_query(sql).await.unwrap();
            }
        }
    });
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let waited = std::time::Instant::now();
    // The first batch runs after the baseline was read.
    while rows_done(&admin, id).await == 0 {
        assert!(waited.elapsed() < Duration::from_secs(20), "no batch ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(throttle_ms(&admin, id).await, 0, "fast turns: no pause");
    slow.store(true, Ordering::Relaxed);
    let waited = std::time::Instant::now();
    while throttle_ms(&admin, id).await == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the backfill did not slow down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slow.store(false, Ordering::Relaxed);
    let waited = std::time::Instant::now();
    while throttle_ms(&admin, id).await > 0 {
        let (phase, _) = common::rollouts::phase(&admin, id).await;
        if phase == "verified" {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "the pause stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
}
