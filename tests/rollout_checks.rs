//! CHECK constraints on a column under rollout, against a real Postgres:
//! directly, `ALTER COLUMN … TYPE` keeps them over the new type. Through
//! pgshift each gets a twin on the new column (validated before the cutover,
//! NOT VALID where the old one was), which takes the old name at the cutover;
//! a rollback and a finish leave exactly the constraints there were, enforced.

mod common;

use common::rollouts::{
    column_type, mismatches, paced_proxy, setup, start, wait_phase, writer_with,
};
use common::scenario::direct;
use common::{connect, fresh_db, sqlstate, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn proxy() -> Proxy {
    proxy_with_deadline(30_000)
}

fn proxy_with_deadline(ms: u64) -> Proxy {
    paced_proxy(|c| c.ddl.retry_deadline_ms = ms)
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
    refused(
        conn,
        "INSERT INTO orders (amount, shadow) VALUES (-5000, -5000)",
        "23514",
        "\"Amount above\"",
    )
    .await;
}

/// `sql` through pgshift fails with `code`, its message naming `name`.
async fn refused(conn: &str, sql: &str, code: &str, name: &str) {
    let c = connect(conn).await;
    let e = c.batch_execute(sql).await.expect_err(sql);
    assert_eq!(sqlstate(&e).as_deref(), Some(code), "{e:?}");
    let text = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        text.as_deref().is_some_and(|t| t.contains(name)),
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
        if end == Request::Rollback {
            // A twin an earlier attempt left for a constraint that is gone
            // since (dropped, or replaced under a new oid): it must not stay.
            admin
                .batch_execute(&format!(
                    "ALTER TABLE orders ADD CONSTRAINT pgshift_{id}_check_1 CHECK (amount__pgshift_new > -7) NOT VALID"
                ))
                .await
                .unwrap();
        }
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        // The names and definitions are the old ones, now on the new `amount`
        // (bigint), the NOT VALID one still NOT VALID; the old constraints are
        // gone (a write that broke both would have named pgshift's).
        let now = checks(&admin).await;
        assert_eq!(now.len(), before.len(), "{now:?}");
        for (name, def, valid, _) in &before {
            let found = now.iter().find(|c| &c.0 == name);
            assert_eq!(
                found.map(|c| (&c.1, c.2, c.3.as_str())),
                Some((def, *valid, "bigint")),
                "{now:?}"
            );
        }
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
        let want_type = match end {
            Request::Rollback => "integer",
            _ => "bigint",
        };
        let want: Vec<_> = before
            .iter()
            .map(|(n, d, v, _)| (n.clone(), d.clone(), *v, want_type.to_string()))
            .collect();
        // A rollback adds them again NOT VALID and validates them right after.
        let started = std::time::Instant::now();
        loop {
            let after = checks(&admin).await;
            if after == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{after:?} / {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// The rollout of `note` to an integer is refused with the error the direct
/// ALTER gives (on a copy), when `sql` made something on it that the new type
/// cannot take.
async fn refused_as_directly(name: &str, sql: &str) {
    refused_as_directly_after(name, sql, "").await
}

/// [`refused_as_directly`], with `copy` run on the copy after it is made.
async fn refused_as_directly_after(name: &str, sql: &str, copy: &str) {
    let db = fresh_db(name);
    let admin = setup(&db).await;
    admin
        .batch_execute(&format!(
            "{sql}; CREATE TABLE orders_copy (LIKE orders INCLUDING ALL); {copy}"
        ))
        .await
        .unwrap();
    let alter = "ALTER COLUMN note TYPE int USING pg_catalog.length(note)";
    let direct = admin
        .batch_execute(&format!("ALTER TABLE orders_copy {alter}"))
        .await
        .expect_err("directly");
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let through = client
        .batch_execute(&format!("ALTER TABLE orders {alter}"))
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

#[tokio::test]
async fn a_check_the_new_type_cannot_take_is_refused_as_directly() {
    refused_as_directly(
        "rollout_check_type",
        "ALTER TABLE orders ADD CONSTRAINT note_word CHECK (note ~ '^[a-z0-9]+$')",
    )
    .await;
}

#[tokio::test]
async fn an_index_the_new_type_cannot_take_is_refused_as_directly() {
    refused_as_directly(
        "rollout_shape_type",
        "CREATE INDEX orders_note_lower ON orders (pg_catalog.lower(note)) WHERE note <> ''",
    )
    .await;
}

#[tokio::test]
async fn a_foreign_key_the_new_type_cannot_take_is_refused_as_directly() {
    refused_as_directly_after(
        "rollout_key_type",
        "CREATE TABLE notes (n text PRIMARY KEY); INSERT INTO notes SELECT DISTINCT note FROM orders WHERE note IS NOT NULL; \
         ALTER TABLE orders ADD CONSTRAINT note_ref FOREIGN KEY (note) REFERENCES notes",
        "ALTER TABLE orders_copy ADD CONSTRAINT note_ref FOREIGN KEY (note) REFERENCES notes",
    )
    .await;
}

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

/// The plan of `query` with sequential scans off.
async fn plan(admin: &tokio_postgres::Client, query: &str) -> String {
    admin
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: String = admin
        .query(&format!("EXPLAIN {query}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    admin.batch_execute("RESET enable_seqscan").await.unwrap();
    plan
}

#[tokio::test]
async fn indexes_with_expressions_or_predicates_are_built_again() {
    let db = fresh_db("rollout_shapes");
    let admin = setup(&db).await;
    // An expression, an expression beside the plain column, and a predicate
    // (with the column's name in a literal) under a quoted name; the same on a
    // copy in schema `direct`, changed by the blocking ALTER: what the indexes
    // are to look like after the cutover.
    let shapes = "CREATE INDEX orders_amount_mod ON orders ((amount % 10));
         CREATE INDEX orders_lower_note ON orders (lower(note), amount DESC) WITH (fillfactor = 70);
         CREATE INDEX \"Orders big\" ON orders (note) WHERE amount > 500 AND note <> 'amount';";
    admin
        .batch_execute(&format!(
            "{shapes}
             CREATE SCHEMA direct; SET search_path = direct, public;
             CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL DEFAULT 7, shadow int, note text);
             {shapes}
             ALTER TABLE orders ALTER COLUMN amount TYPE bigint;
             RESET search_path;"
        ))
        .await
        .unwrap();
    let before = index_defs(&admin).await;
    assert_eq!(before.len(), 4, "{before:?}");
    let direct: Vec<(String, String)> = admin
        .query(
            "SELECT c.relname::text, replace(pg_get_indexdef(x.indexrelid), 'ON direct.orders', 'ON public.orders') \
             FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
             WHERE x.indrelid = 'direct.orders'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_ne!(direct, before, "the type shows in an expression");
    // A short retry deadline: the first cutover gives up (below) and comes back.
    let proxy = proxy_with_deadline(2_000);
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
        // The first time, a long transaction holds the table (a lock, no
        // snapshot: the twins' builds do not wait for it) past the retry
        // deadline: the cutover tries again later, and takes the twins it
        // built for the ones it needs.
        let blocker = connect(&common::scenario::direct(&db)).await;
        if end == Request::Rollback {
            blocker
                .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS SHARE MODE")
                .await
                .unwrap();
        }
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        if end == Request::Rollback {
            let started = std::time::Instant::now();
            loop {
                let (p, error) = common::rollouts::phase(&admin, id).await;
                if error
                    .as_deref()
                    .is_some_and(|e| e.contains("will try again"))
                {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(60), "{p} {error:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let twins: i64 = admin
                .query_one(
                    &format!("SELECT count(*) FROM pg_class WHERE relname LIKE 'pgshift\\_{id}\\_new\\_%'"),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(twins, 3);
            blocker.batch_execute("COMMIT").await.unwrap();
        }
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        // The twins carry the names and the definitions the direct ALTER
        // gives, on the new `amount`; the old indexes are parked on the old
        // column.
        let now = index_defs(&admin).await;
        for def in &direct {
            assert!(now.contains(def), "{def:?} not in {now:?}");
        }
        let parked: Vec<_> = now
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("pgshift_{id}_old_")))
            .collect();
        assert_eq!(parked.len(), 3, "{now:?}");
        assert!(
            parked
                .iter()
                .all(|(_, d)| d.contains("amount__pgshift_old")),
            "{parked:?}"
        );
        let used = plan(&admin, "SELECT id FROM orders WHERE amount % 10 = 3").await;
        assert!(used.contains("orders_amount_mod"), "{used}");
        let used = plan(
            &admin,
            "SELECT id FROM orders WHERE amount > 600 AND note <> 'amount' AND note = 'n77'",
        )
        .await;
        assert!(used.contains("Orders big"), "{used}");
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
        let want = match end {
            Request::Rollback => &before,
            _ => &direct,
        };
        assert_eq!(&index_defs(&admin).await, want);
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    assert_eq!(mismatches(&admin).await, 0);
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
    // Every row is found through each index as through the table.
    for filter in ["amount % 10 = 3", "amount > 500 AND note <> 'amount'"] {
        let count = |scan: &'static str| {
            let admin = &admin;
            let q = format!("SELECT count(*) FROM orders WHERE {filter}");
            async move {
                admin.batch_execute(scan).await.unwrap();
                let n: i64 = admin.query_one(&q, &[]).await.unwrap().get(0);
                admin.batch_execute("RESET ALL").await.unwrap();
                n
            }
        };
        let by_index = count("SET enable_seqscan = off").await;
        let by_table = count("SET enable_indexscan = off; SET enable_bitmapscan = off").await;
        assert_eq!(by_index, by_table, "{filter}");
    }
}

/// The foreign keys of `orders`: name, definition, validated.
async fn keys(admin: &tokio_postgres::Client) -> Vec<(String, String, bool)> {
    admin
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid), convalidated FROM pg_constraint \
             WHERE conrelid = 'orders'::regclass AND contype = 'f' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_foreign_key_of_the_column_moves_with_it() {
    let db = fresh_db("rollout_own_key");
    let admin = setup(&db).await;
    // `amount` references a table of another role (pgshift adds the key's
    // twin as the table's owner, as the direct ALTER adds the key again).
    admin
        .batch_execute(
            "CREATE ROLE pricing NOLOGIN;
             CREATE TABLE prices (id int PRIMARY KEY, owner_note text);
             INSERT INTO prices SELECT g FROM generate_series(0, 100000) g;
             ALTER TABLE prices OWNER TO pricing;
             GRANT REFERENCES ON prices TO postgres;
             ALTER TABLE orders ADD CONSTRAINT \"Orders price\" FOREIGN KEY (amount) REFERENCES prices (id) ON DELETE CASCADE;",
        )
        .await
        .unwrap();
    let before = keys(&admin).await;
    assert_eq!(before.len(), 1, "{before:?}");
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
    let missing = "INSERT INTO orders (amount, shadow) VALUES (200000, 200000)";
    for end in [Request::Rollback, Request::Finish] {
        let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        // One key, by its name and definition, validated, on the new column.
        assert_eq!(keys(&admin).await, before);
        let on_new: bool = admin
            .query_one(
                "SELECT k.conkey[1] = a.attnum FROM pg_constraint k, pg_attribute a \
                 WHERE k.conname = 'Orders price' AND a.attrelid = k.conrelid AND a.attname = 'amount'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(on_new);
        refused(&conn, missing, "23503", "\"Orders price\"").await;
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
        // Validated again after a rollback (it came back NOT VALID).
        let started = std::time::Instant::now();
        while keys(&admin).await != before {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{:?}",
                keys(&admin).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refused(&conn, missing, "23503", "\"Orders price\"").await;
    }
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    assert_eq!(mismatches(&admin).await, 0);
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
    // The cascade reaches the rows through the new column.
    admin
        .batch_execute("DELETE FROM prices WHERE id = 5")
        .await
        .unwrap();
    let left: i64 = admin
        .query_one("SELECT count(*) FROM orders WHERE amount = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// The cutover moves the column's foreign key, which locks the table it
/// references too: a transaction open on that table for longer than the stall
/// budget keeps the cutover from trying (as one on the rollout's own table
/// does), instead of each attempt queueing the application's queries on it
/// behind its lock for up to the lock timeout. Once it ends, the cutover goes.
#[tokio::test]
async fn a_long_transaction_on_the_referenced_table_holds_off_the_cutover() {
    let db = fresh_db("rollout_key_long");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE prices (id int PRIMARY KEY);
             INSERT INTO prices SELECT g FROM generate_series(0, 100000) g;
             ALTER TABLE orders ADD CONSTRAINT orders_price FOREIGN KEY (amount) REFERENCES prices (id);",
        )
        .await
        .unwrap();
    let proxy = Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 1_000;
        c.ddl.stall_budget_ms = 1_000;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 100;
        c.ddl.retry_deadline_ms = 3_000;
        c.rollout.batch_rows = 2_000;
        c.rollout.latency_factor = 0.0;
    });
    let conn = proxy.conn_str(&db, "postgres");
    let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let long = connect(&common::scenario::direct(&db)).await;
    long.batch_execute("BEGIN; SELECT count(*) FROM prices")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The application reads prices all along, directly.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dsn) = (stop.clone(), common::scenario::direct(&db));
        tokio::spawn(async move {
            let c = connect(&dsn).await;
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let began = std::time::Instant::now();
                c.query_one("SELECT id FROM prices WHERE id = 7", &[])
                    .await
                    .unwrap();
                worst = worst.max(began.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            worst
        })
    };
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let began = std::time::Instant::now();
    let error = loop {
        let (phase, error) = common::rollouts::phase(&admin, id).await;
        assert_eq!(phase, "verified", "the cutover went on ({error:?})");
        if let Some(e) = error.filter(|e| e.contains("retry deadline")) {
            break e;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no wait was noted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("held public.prices"), "{error}");
    // The key's twin was added meanwhile: its lock on prices (SHARE ROW
    // EXCLUSIVE) does not wait for a reader.
    let keys: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'f'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 2, "the key's twin is missing");
    stop.store(true, Ordering::Relaxed);
    let worst = reader.await.unwrap();
    // An attempt would have queued the reads for up to 1 s.
    assert!(
        worst < Duration::from_millis(500),
        "a read of prices waited {worst:?}"
    );
    long.batch_execute("COMMIT").await.unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    assert_eq!(mismatches(&admin).await, 0);
    // The finish drops the old column, which has no key any more: a reader of
    // prices does not hold it off.
    long.batch_execute("BEGIN; SELECT count(*) FROM prices")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    rollout::request(&admin, id, Request::Finish).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(30)).await;
    long.batch_execute("COMMIT").await.unwrap();
}

/// A row that breaks a NOT VALID CHECK constraint (on another column) cannot
/// be updated by anyone, the backfill included, while the ALTER itself would
/// not have checked it: the rollout fails naming the constraint and what to do,
/// and once the row is mended, ROLLOUT RESUME carries it to the end, every row
/// right.
#[tokio::test]
async fn a_row_breaking_a_not_valid_check_stops_the_backfill_until_it_is_mended() {
    let db = fresh_db("rollout_not_valid");
    let admin = setup(&db).await;
    admin
        .batch_execute(common::rollouts::NOT_VALID_ROW)
        .await
        .unwrap();
    let proxy = proxy();
    let conn = proxy.conn_str(&db, "postgres");
    let id = start(&conn, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
    let mut error = String::new();
    for _ in 0..300 {
        let (phase, e) = common::rollouts::phase(&admin, id).await;
        if phase == "failed" {
            error = e.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        error.contains("breaks the NOT VALID constraint note_ok")
            && error.contains(&format!("ROLLOUT RESUME {id}"))
            && error.contains("'bad'"),
        "{error}"
    );
    admin
        .batch_execute("UPDATE orders SET note = 'mended' WHERE note = 'bad'")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Resume).await.unwrap();
    for _ in 0..100 {
        if common::rollouts::phase(&admin, id).await.0 != "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let wrong: i64 = admin
        .query_one(
            "SELECT count(*) FROM orders WHERE amount__pgshift_new IS DISTINCT FROM amount::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
    assert_eq!(mismatches(&admin).await, 0);
}

/// A cutover stopped after the index twins were built (a constraint by a
/// CHECK twin's name that pgshift did not make), then `REINDEX … CONCURRENTLY`
/// (every index gets a new oid): the next attempt drops the twins no index
/// wants any more instead of leaving them on the column.
#[tokio::test]
async fn a_table_reindexed_between_two_cutover_attempts_keeps_no_stale_twin() {
    let db = fresh_db("rollout_check_reindex");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE INDEX orders_amount ON orders (amount);
             ALTER TABLE orders ADD CONSTRAINT amount_sane CHECK (amount > -1000000)",
        )
        .await
        .unwrap();
    let before = index_defs(&admin).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN amount TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let check: String = admin
        .query_one(
            "SELECT oid::text FROM pg_constraint WHERE conname = 'amount_sane'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fake = format!("pgshift_{id}_check_{check}");
    admin
        .batch_execute(&format!(
            "ALTER TABLE orders ADD CONSTRAINT {fake} CHECK (amount__pgshift_new > -5) NOT VALID"
        ))
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let waited = std::time::Instant::now();
    while !common::rollouts::phase(&admin, id)
        .await
        .1
        .is_some_and(|e| e.contains("did not make"))
    {
        assert!(waited.elapsed() < Duration::from_secs(30), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let twins = index_defs(&admin).await.len() - before.len();
    assert_eq!(twins, 1, "the twin was built before the refusal");
    for step in [
        format!("ALTER TABLE orders DROP CONSTRAINT {fake}"),
        "REINDEX TABLE CONCURRENTLY orders".to_string(),
    ] {
        admin.batch_execute(&step).await.unwrap();
    }
    // A reader holds the table while the stale twin is dropped, longer than
    // the service session's lock_timeout (2 s): the drop waits it out (it
    // queues nobody) rather than failing and costing a verify pass.
    let reader = connect(&direct(&db)).await;
    reader
        .batch_execute("BEGIN; SELECT count(*) FROM orders")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    let waited = std::time::Instant::now();
    loop {
        let dropping: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DROP INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if dropping > 0 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no drop of the stale twin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    reader.batch_execute("COMMIT").await.unwrap();
    let waited = std::time::Instant::now();
    loop {
        let (phase, error) = common::rollouts::phase(&admin, id).await;
        assert!(
            !error.as_deref().is_some_and(|e| e.contains("timeout")),
            "the drop gave up: {error:?}"
        );
        if phase == "cut_over" {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "phase {phase}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rollout::request(&admin, id, Request::Finish).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    assert_eq!(index_defs(&admin).await, before);
}

/// A direct `ALTER … TYPE` keeps the comments of the indexes and constraints
/// it builds again; through pgshift the twins that take their names take
/// their comments too, and a rollback after the cutover gives them back to
/// what it adds again.
#[tokio::test]
async fn comments_on_the_columns_indexes_and_constraints_stay() {
    let db = fresh_db("rollout_check_comments");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE INDEX orders_amount ON orders (amount);
             COMMENT ON INDEX orders_amount IS 'by amount';
             ALTER TABLE orders ADD CONSTRAINT orders_amount_id UNIQUE (amount, id);
             COMMENT ON CONSTRAINT orders_amount_id ON orders IS 'one per pair';
             COMMENT ON INDEX orders_amount_id IS 'the pair''s index';
             ALTER TABLE orders ADD CONSTRAINT amount_sane CHECK (amount > -1000000);
             COMMENT ON CONSTRAINT amount_sane ON orders IS 'sane';
             CREATE TABLE refs (amount int, id bigint, FOREIGN KEY (amount, id) REFERENCES orders (amount, id));
             INSERT INTO refs SELECT amount, id FROM orders WHERE id % 10 = 0;
             COMMENT ON CONSTRAINT refs_amount_id_fkey ON refs IS 'refers';",
        )
        .await
        .unwrap();
    let before = common::rollouts::comments(&admin).await;
    assert_eq!(before.len(), 5, "{before:?}");
    let proxy = proxy();
    let url = proxy.conn_str(&db, "postgres");
    for end in [Request::Rollback, Request::Finish] {
        let id = start(&url, "ALTER TABLE orders ALTER COLUMN amount TYPE bigint").await;
        wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
        rollout::request(&admin, id, Request::Cutover)
            .await
            .unwrap();
        wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
        let now = common::rollouts::comments(&admin).await;
        for c in &before {
            assert!(now.contains(c), "{c:?} lost at the cutover: {now:?}");
        }
        let done = match end {
            Request::Rollback => "rolled_back",
            _ => "finished",
        };
        rollout::request(&admin, id, end).await.unwrap();
        wait_phase(&admin, id, done, Duration::from_secs(60)).await;
        assert_eq!(
            common::rollouts::comments(&admin).await,
            before,
            "after {done}"
        );
    }
    assert_eq!(
        column_type(&admin, "amount").await.as_deref(),
        Some("bigint")
    );
}

/// A REVOKE on the column while the cutover's window waits out a long
/// transaction: the window was to give the new column the privileges read
/// before it waited (the revoked one with them). It gives up instead; asked
/// again, the cutover carries what the column has then.
#[tokio::test]
async fn a_revoke_while_the_window_waits_is_not_undone() {
    let db = fresh_db("rollout_check_revoke");
    let admin = setup(&db).await;
    let clerk = format!("{db}_clerk");
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {clerk}; CREATE ROLE {clerk};
             GRANT SELECT (shadow), UPDATE (shadow) ON orders TO {clerk}"
        ))
        .await
        .unwrap();
    let proxy = paced_proxy(|c| c.ddl.stall_budget_ms = 100);
    let id = start(
        &proxy.conn_str(&db, "postgres"),
        "ALTER TABLE orders ALTER COLUMN shadow TYPE bigint",
    )
    .await;
    wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    let blocker = connect(&direct(&db)).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS SHARE MODE")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    admin
        .batch_execute(&format!("REVOKE UPDATE (shadow) ON orders FROM {clerk}"))
        .await
        .unwrap();
    blocker.batch_execute("COMMIT").await.unwrap();
    let waited = std::time::Instant::now();
    loop {
        let (phase, error) = common::rollouts::phase(&admin, id).await;
        assert_eq!(phase, "verified", "{error:?}");
        if error.is_some_and(|e| e.contains("changed while the window waited")) {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rollout::request(&admin, id, Request::Cutover)
        .await
        .unwrap();
    wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    let may = |privilege: &'static str| {
        let (admin, clerk) = (&admin, &clerk);
        async move {
            admin
                .query_one(
                    "SELECT has_column_privilege($1, 'orders', 'shadow', $2)",
                    &[clerk, &privilege],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(may("SELECT").await);
    assert!(!may("UPDATE").await, "the revoked privilege came back");
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON orders FROM {clerk}; DROP ROLE {clerk}"
        ))
        .await
        .unwrap();
}
