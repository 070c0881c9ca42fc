//! `ADD COLUMN … DEFAULT <volatile>` through the rollout machinery against a
//! real Postgres: the client gets `ALTER TABLE` once the column exists, the old
//! rows are filled in the background while writers write (through pgshift and
//! directly), and what the application wrote stays as it wrote it; a default
//! the background cannot evaluate is filled in-band as before.

mod common;

use common::rollouts::{setup, wait_phase, ROWS};
use common::scenario::direct;
use common::{connect, connect_noting, fresh_db, sqlstate, Proxy};
use pgshift::rollout::{self, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn proxy(rows_per_second: u64) -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_deadline_ms = 30_000;
        c.rollout.batch_rows = 2_000;
        c.rollout.min_batch_rows = 100;
        c.rollout.latency_factor = 0.0;
        c.rollout.rows_per_second = rows_per_second;
    })
}

/// Runs `sql` through pgshift; returns the fill's rollout id from its NOTICE,
/// or None when there was none.
async fn add(conn: &str, sql: &str) -> Option<i64> {
    let (client, notices) = connect_noting(conn).await;
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let notices = notices.lock().unwrap().clone();
    let line = notices
        .iter()
        .find(|n| n.contains("fills its existing rows"))?;
    line.split("rollout ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
}

/// A column whose default (volatile) was set after it was added: its rows are
/// NULL, for the console's ROLLOUT FILL.
const DEFAULT_SET_LATER: &str = "ALTER TABLE orders ADD COLUMN c1 double precision; \
     ALTER TABLE orders ALTER COLUMN c1 SET DEFAULT random()";

async fn count(admin: &tokio_postgres::Client, sql: &str) -> i64 {
    admin.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until pgshift's schema is in the database (a proxy makes it with the
/// first statement that needs it).
async fn schema_made(admin: &tokio_postgres::Client) {
    let schema = "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'";
    for _ in 0..100 {
        if count(admin, schema).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `a` and `b` while a session of its own holds `pgshift.rollouts` IN
/// SHARE MODE, so that their INSERTs there (not the checks' reads) wait
/// together, within the service connection's 2 s lock_timeout; lets go once two
/// wait, or after about 1.5 s. Their outputs, and how many waited.
async fn held_together<A, B>(db: &str, a: A, b: B) -> ((A::Output, B::Output), i64)
where
    A: std::future::Future,
    B: std::future::Future,
{
    let mut holder = connect(&direct(db)).await;
    let held = holder.transaction().await.unwrap();
    held.batch_execute("LOCK TABLE pgshift.rollouts IN SHARE MODE")
        .await
        .unwrap();
    let release = async {
        let waiting = "SELECT count(*) FROM pg_locks \
                       WHERE relation = 'pgshift.rollouts'::regclass AND NOT granted";
        let mut seen = 0;
        for _ in 0..150 {
            let probe = connect(&direct(db)).await;
            seen = count(&probe, waiting).await;
            if seen == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        held.commit().await.unwrap();
        seen
    };
    tokio::join!(async { tokio::join!(a, b) }, release)
}

/// What pgshift installed on the table and in its schema for rollouts.
async fn leftovers(admin: &tokio_postgres::Client) -> i64 {
    count(
        admin,
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshift%') \
         + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgshift'::regnamespace AND proname LIKE 'mirror%')",
    )
    .await
}

/// Writers until `stop`: through `conn`, UPDATEs of other columns of old rows,
/// INSERTs that take the default and INSERTs that write NULL on purpose (note
/// `null`), then UPDATE those rows' other columns. Counts commits.
fn writer(
    conn: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    seed: i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = connect(&conn).await;
        let mut i = seed;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let id = (i * 7919) % ROWS + 1;
            let sql = match i % 4 {
                0 => format!("UPDATE orders SET note = 'touched {i}' WHERE id = {id}"),
                1 => format!("INSERT INTO orders (amount, shadow, note) VALUES ({v}, {v}, 'new')", v = i % 1000),
                2 => format!("INSERT INTO orders (amount, shadow, note, token) VALUES ({v}, {v}, 'null', NULL)", v = i % 1000),
                _ => "UPDATE orders SET amount = amount + 1, shadow = shadow + 1 \
                      WHERE id = (SELECT max(id) FROM orders WHERE note = 'null')"
                    .to_string(),
            };
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test]
async fn a_volatile_default_fills_in_the_background_and_keeps_what_writers_wrote() {
    let db = fresh_db("fill_run");
    let admin = setup(&db).await;
    let proxy = proxy(10_000);
    let conn = proxy.conn_str(&db, "postgres");
    let id = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    )
    .await
    .expect("the fill runs as a rollout");
    // The answer came with the column there and the rows not filled yet.
    let unfilled = count(&admin, "SELECT count(*) FROM orders WHERE token IS NULL").await;
    assert!(
        unfilled > ROWS / 2,
        "{unfilled} rows unfilled when the ALTER returned"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers = vec![
        writer(conn.clone(), stop.clone(), done.clone(), 0),
        // A writer connected directly: the trigger covers it too.
        writer(direct(&db), stop.clone(), done.clone(), 1_000_000),
    ];
    wait_phase(&admin, id, "finished", Duration::from_secs(120)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) > 50,
        "the writers barely wrote"
    );
    // Rows written with NULL on purpose keep it, even once updated.
    let nulls_written = count(&admin, "SELECT count(*) FROM orders WHERE note = 'null'").await;
    assert!(nulls_written > 10, "{nulls_written}");
    let nulls_kept = count(
        &admin,
        "SELECT count(*) FROM orders WHERE note = 'null' AND token IS NULL",
    )
    .await;
    assert_eq!(nulls_kept, nulls_written);
    // Every other row has its own value, as the table rewrite would have given.
    let missing = count(
        &admin,
        "SELECT count(*) FROM orders WHERE note <> 'null' AND token IS NULL",
    )
    .await;
    assert_eq!(missing, 0);
    let repeated = count(
        &admin,
        "SELECT count(token) - count(DISTINCT token) FROM orders",
    )
    .await;
    assert_eq!(repeated, 0);
    assert_eq!(
        leftovers(&admin).await,
        0,
        "trigger or function left behind"
    );
    let default: String = admin
        .query_one(
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
             WHERE d.adrelid = 'orders'::regclass AND a.attname = 'token'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "gen_random_uuid()");
    let done_rows: i64 = admin
        .query_one(
            "SELECT rows_done FROM pgshift.rollouts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(done_rows > 0 && done_rows <= ROWS, "{done_rows}");
}

#[tokio::test]
async fn an_update_fills_an_old_row_and_a_rollback_drops_the_column() {
    let db = fresh_db("fill_back");
    let admin = setup(&db).await;
    // Slow enough that the last rows wait for a long time.
    let proxy = proxy(200);
    let conn = proxy.conn_str(&db, "postgres");
    let id = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
    )
    .await
    .expect("the fill runs as a rollout");
    let last = ROWS;
    // Directly, bypassing pgshift: the old row gets its value with the update.
    admin
        .batch_execute(&format!("UPDATE orders SET note = 'x' WHERE id = {last}"))
        .await
        .unwrap();
    let filled = count(
        &admin,
        &format!("SELECT count(drawn) FROM orders WHERE id = {last}"),
    )
    .await;
    assert_eq!(filled, 1, "the update of an old row did not fill it");
    // A new row's NULL is the application's.
    admin
        .batch_execute(
            "INSERT INTO orders (amount, shadow, note, drawn) VALUES (1, 1, 'mine', NULL); \
             UPDATE orders SET note = 'still mine' WHERE note = 'mine'",
        )
        .await
        .unwrap();
    let mine = count(
        &admin,
        "SELECT count(drawn) FROM orders WHERE note = 'still mine'",
    )
    .await;
    assert_eq!(mine, 0, "a NULL the application wrote was filled");
    let client = connect(&direct(&db)).await;
    rollout::request(&client, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    let column = count(
        &admin,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'drawn' AND NOT attisdropped",
    )
    .await;
    assert_eq!(column, 0, "the column is still there");
    assert_eq!(leftovers(&admin).await, 0);
    let rows = count(&admin, "SELECT count(*) FROM orders").await;
    assert_eq!(rows, ROWS + 1);
}

#[tokio::test]
async fn a_default_the_background_cannot_evaluate_is_filled_in_band() {
    let db = fresh_db("fill_inband");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE FUNCTION public.mint() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 5'",
        )
        .await
        .unwrap();
    let proxy = proxy(0);
    let conn = proxy.conn_str(&db, "postgres");
    for (sql, column) in [
        // A user's function: it would run as pgshift's service role.
        (
            "ALTER TABLE orders ADD COLUMN minted int DEFAULT public.mint()",
            "minted",
        ),
        // float8 to text depends on the session's extra_float_digits.
        (
            "ALTER TABLE orders ADD COLUMN token text DEFAULT md5(random()::text)",
            "token",
        ),
        // NOT NULL needs every row filled before it.
        (
            "ALTER TABLE orders ADD COLUMN stamp timestamptz NOT NULL DEFAULT clock_timestamp()",
            "stamp",
        ),
    ] {
        assert_eq!(add(&conn, sql).await, None, "{sql}");
        let nulls = count(
            &admin,
            &format!("SELECT count(*) FROM orders WHERE {column} IS NULL"),
        )
        .await;
        assert_eq!(nulls, 0, "{sql}: rows left unfilled when it returned");
    }
    let rollouts = count(&admin, "SELECT count(*) FROM pgshift.rollouts").await;
    assert_eq!(rollouts, 0);
}

#[tokio::test]
async fn odd_names_fill_too() {
    let db = fresh_db("fill_names");
    let admin = connect(&direct(&db)).await;
    admin
        .batch_execute(
            "CREATE SCHEMA \"My %s Schema\"; \
             CREATE TABLE \"My %s Schema\".\"Or'ders\" (id int PRIMARY KEY, v int); \
             INSERT INTO \"My %s Schema\".\"Or'ders\" SELECT g, g FROM generate_series(1, 3000) g",
        )
        .await
        .unwrap();
    let proxy = proxy(0);
    let conn = proxy.conn_str(&db, "postgres");
    let id = add(
        &conn,
        "ALTER TABLE \"My %s Schema\".\"Or'ders\" ADD COLUMN \"%L 50% \"\"off\"\" age('1'::xid)\" float8 DEFAULT random()",
    )
    .await
    .expect("the fill runs as a rollout");
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    let missing = count(
        &admin,
        "SELECT count(*) FROM \"My %s Schema\".\"Or'ders\" WHERE \"%L 50% \"\"off\"\" age('1'::xid)\" IS NULL",
    )
    .await;
    assert_eq!(missing, 0);
    assert_eq!(leftovers(&admin).await, 0);
}

/// The default is printed in the author's session and read back by pgshift's
/// service connection and by the trigger in whichever session writes: a
/// database that sets `standard_conforming_strings = off` and a day-first
/// DateStyle changes neither what the background fills nor what the trigger does.
#[tokio::test]
async fn a_fill_reads_its_default_the_same_whatever_sessions_set() {
    let db = fresh_db("fill_settings");
    let admin = setup(&db).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET standard_conforming_strings = off; \
             ALTER DATABASE {db} SET DateStyle = 'SQL, DMY'"
        ))
        .await
        .unwrap();
    // Slow, so that an old row is still unfilled when it is updated.
    let proxy = proxy(200);
    // pgshift leaves a session that reads strings the old way alone.
    let conn = format!(
        "{} options='-c standard_conforming_strings=on'",
        proxy.conn_str(&db, "postgres")
    );
    let backslash = add(
        &conn,
        r"ALTER TABLE orders ADD COLUMN mark text DEFAULT CASE WHEN random() < 2 THEN 'a\' END",
    )
    .await
    .expect("the fill runs as a rollout");
    let day = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN day date DEFAULT CASE WHEN random() < 2 THEN DATE '2020-01-02' END",
    )
    .await
    .expect("the fill runs as a rollout");
    // A session with the database's settings updates an old row: the trigger fills it.
    let old_ways = connect(&direct(&db)).await;
    let settings = old_ways
        .query_one(
            "SELECT current_setting('standard_conforming_strings') || current_setting('DateStyle')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(settings.get::<_, String>(0), "offSQL, DMY");
    old_ways
        .batch_execute(&format!("UPDATE orders SET note = 'x' WHERE id = {ROWS}"))
        .await
        .unwrap();
    let client = connect(&direct(&db)).await;
    for id in [backslash, day] {
        rollout::throttle(&client, id, 0).await.unwrap();
    }
    for id in [backslash, day] {
        wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    }
    let wrong = count(
        &admin,
        r"SELECT count(*) FROM orders WHERE mark IS DISTINCT FROM E'a\\' OR day IS DISTINCT FROM DATE '2020-01-02'",
    )
    .await;
    assert_eq!(wrong, 0, "rows filled with another value than the default");
}

/// While a fill runs, pgshift refuses what would lose its work (a rewrite of the
/// table, a change of the column being filled) and lets other columns be added;
/// a default Postgres stores once (not volatile after all) runs as written; a
/// temporary table is filled in-band.
#[tokio::test]
async fn a_fill_keeps_its_column_and_leaves_constant_defaults_alone() {
    let db = fresh_db("fill_guard");
    let admin = setup(&db).await;
    let proxy = proxy(200);
    let conn = proxy.conn_str(&db, "postgres");
    let id = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
    )
    .await
    .expect("the fill runs as a rollout");
    let client = connect(&conn).await;
    for sql in [
        "ALTER TABLE orders SET UNLOGGED",
        "ALTER TABLE orders DROP COLUMN drawn",
        "ALTER TABLE orders RENAME COLUMN drawn TO drawn2",
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            common::sqlstate(&e).as_deref(),
            Some("55006"),
            "{sql}: {e:?}"
        );
    }
    // Another column, a constant default: Postgres stores it once.
    assert_eq!(
        add(&conn, "ALTER TABLE orders ADD COLUMN k int DEFAULT abs(-7)").await,
        None
    );
    let sevens = count(&admin, "SELECT count(*) FROM orders WHERE k = 7").await;
    assert_eq!(sevens, ROWS, "the constant default was not there at once");
    // As written: the journal (written in the background) says so.
    common::scenario::eventually(
        &admin,
        "SELECT count(*) FROM pgshift.ddl_journal WHERE statement LIKE '%abs(-7)%' AND policy = 'not-volatile'",
        "1",
    )
    .await;
    // A temporary table is out of the service connection's reach.
    client
        .batch_execute(
            "CREATE TEMPORARY TABLE scratch AS SELECT g AS id FROM generate_series(1, 5000) g",
        )
        .await
        .unwrap();
    client
        .batch_execute("ALTER TABLE scratch ADD COLUMN r float8 DEFAULT random()")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT count(r) FROM scratch", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 5000);
    let rollouts = count(&admin, "SELECT count(*) FROM pgshift.rollouts").await;
    assert_eq!(rollouts, 1, "only the first fill is a rollout");
    // Once the fill is over, the statements run.
    rollout::throttle(&client, id, 0).await.unwrap();
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    client
        .batch_execute("ALTER TABLE orders RENAME COLUMN drawn TO drawn2")
        .await
        .unwrap();
    let unfilled = count(&admin, "SELECT count(*) FROM orders WHERE drawn2 IS NULL").await;
    assert_eq!(unfilled, 0);
}

/// ALTER TABLE takes its transaction id before it waits for its lock: a writer
/// that holds the table then writes with a later id, without the trigger, and
/// commits before the lock is granted. Its row is old all the same, and filled
/// (with the transaction id as the boundary it kept NULL for good).
#[tokio::test]
async fn a_writer_the_alter_waited_for_has_its_row_filled() {
    let db = fresh_db("fill_waited");
    let admin = setup(&db).await;
    let proxy = Proxy::start_with(|c| {
        // Attempt at once (no waiting out the holder first), and wait for it.
        c.ddl.stall_budget_ms = 0;
        c.ddl.lock_timeout_ms = 5_000;
        c.rollout.latency_factor = 0.0;
    });
    let holder = connect(&direct(&db)).await;
    holder
        .batch_execute("BEGIN; LOCK TABLE orders IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let conn = proxy.conn_str(&db, "postgres");
    let adding = tokio::spawn(async move {
        add(
            &conn,
            "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
        )
        .await
    });
    // The ALTER waits for the lock, its transaction id already taken.
    common::scenario::eventually(
        &admin,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND backend_xid IS NOT NULL AND query LIKE '%ADD COLUMN drawn%'",
        "1",
    )
    .await;
    holder
        .batch_execute("UPDATE orders SET note = 'waited for' WHERE id = 7; COMMIT")
        .await
        .unwrap();
    let id = adding.await.unwrap().expect("the fill runs as a rollout");
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    let unfilled = count(&admin, "SELECT count(*) FROM orders WHERE drawn IS NULL").await;
    assert_eq!(
        unfilled, 0,
        "a row written while the ALTER waited kept NULL"
    );
}

#[tokio::test]
async fn a_column_added_inside_a_transaction_is_filled_in_the_background_after_commit() {
    let db = fresh_db("fill_in_block");
    let admin = setup(&db).await;
    // Slow enough that the fill outlasts the client's next statements by far.
    let proxy = proxy(5_000);
    let conn = proxy.conn_str(&db, "postgres");
    let client = connect(&conn).await;
    let add = "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid()";
    // A ROLLBACK leaves nothing.
    for sql in ["BEGIN", add, "ROLLBACK"] {
        client.batch_execute(sql).await.unwrap();
    }
    client.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(
        count(&admin, "SELECT count(*) FROM pgshift.rollouts").await,
        0
    );
    // A COMMIT: the column and its default are the transaction's; the old rows
    // are filled by a rollout that starts once it committed.
    for sql in [
        "BEGIN",
        add,
        "INSERT INTO orders (amount, shadow, note) VALUES (1, 1, 'in the block')",
        "COMMIT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    let t = std::time::Instant::now();
    client.batch_execute("SELECT 1").await.unwrap();
    let waited = t.elapsed();
    let id: i64 = admin
        .query_one(
            "SELECT id FROM pgshift.rollouts WHERE kind = 'fill-committed' AND column_name = 'token'",
            &[],
        )
        .await
        .expect("a fill rollout")
        .get(0);
    // In-band, the next statement would wait for all 20,000 rows (4 s at
    // 5,000 rows/s).
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let left = count(&admin, "SELECT count(*) FROM orders WHERE token IS NULL").await;
    assert!(left > 0, "filled before the client went on");
    let mine = count(
        &admin,
        "SELECT count(token) FROM orders WHERE note = 'in the block'",
    )
    .await;
    assert_eq!(mine, 1, "the block's own row has its default");
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    assert_eq!(
        count(&admin, "SELECT count(*) FROM orders WHERE token IS NULL").await,
        0
    );
    assert_eq!(
        count(&admin, "SELECT count(DISTINCT token) FROM orders").await,
        ROWS + 1
    );
    assert_eq!(leftovers(&admin).await, 0);
}

#[tokio::test]
async fn a_fill_from_a_block_keeps_its_column_on_rollback_and_waits_for_later_work() {
    let db = fresh_db("fill_in_block_more");
    let admin = setup(&db).await;
    let proxy = proxy(2_000);
    let conn = proxy.conn_str(&db, "postgres");
    let client = connect(&conn).await;
    // Rolled back, the fill leaves the column the transaction committed (and
    // what was written into it).
    for sql in [
        "BEGIN",
        "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
        "COMMIT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    client.batch_execute("SELECT 1").await.unwrap();
    let id: i64 = admin
        .query_one(
            "SELECT id FROM pgshift.rollouts WHERE kind = 'fill-committed' AND column_name = 'drawn'",
            &[],
        )
        .await
        .expect("a fill rollout")
        .get(0);
    client
        .batch_execute("INSERT INTO orders (amount, shadow, note) VALUES (1, 1, 'after')")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    wait_phase(&admin, id, "rolled_back", Duration::from_secs(60)).await;
    let kept = count(
        &admin,
        "SELECT count(drawn) FROM orders WHERE note = 'after'",
    )
    .await;
    assert_eq!(kept, 1, "the column or its value is gone");
    assert_eq!(leftovers(&admin).await, 0);
    // A SET NOT NULL later in the block needs every row filled at its turn:
    // that fill runs in-band, as before, and the column ends NOT NULL.
    for sql in [
        "BEGIN",
        "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "ALTER TABLE orders ALTER COLUMN token SET NOT NULL",
        "COMMIT",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    client.batch_execute("SELECT 1").await.unwrap();
    common::scenario::eventually(
        &admin,
        "SELECT count(*) FROM pgshift.deferred WHERE state <> 'done'",
        "0",
    )
    .await;
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM pgshift.rollouts WHERE column_name = 'token'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&admin, "SELECT count(*) FROM orders WHERE token IS NULL").await,
        0
    );
    let not_null: bool = admin
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'token'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(not_null);
}

/// Waits up to 30 s for rollout `id` to be in `want` (failed included); its error.
async fn until_phase(admin: &tokio_postgres::Client, id: i64, want: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let (phase, error) = common::rollouts::phase(admin, id).await;
        if phase == want {
            return error.unwrap_or_default();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rollout {id} is {phase} ({error:?}), not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes pgshift's update of a rollout row from `planned` to `backfilling` fail
/// with 55P03, as a lock held on the row by another session would (until dropped).
const FAULT: &str = "
CREATE FUNCTION public.no_backfilling() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'the row is busy (test fault)' USING ERRCODE = '55P03'; END$$;
CREATE TRIGGER test_fault BEFORE UPDATE ON pgshift.rollouts FOR EACH ROW
  WHEN (OLD.phase = 'planned' AND NEW.phase = 'backfilling') EXECUTE FUNCTION public.no_backfilling()";

/// The expand committed in the client's session, then pgshift could not mark
/// its rollout as expanded: the client's statement took effect, so it gets its
/// answer (not an error for a change that is in place), and the driver moves
/// the rollout on once its row can be written. For a fill and a type change.
#[tokio::test]
async fn a_start_whose_row_cannot_be_updated_after_the_expand_still_answers_and_goes_on() {
    let db = fresh_db("fill_books");
    let admin = setup(&db).await;
    let proxy = proxy(0);
    let conn = proxy.conn_str(&db, "postgres");
    // pgshift's service connection checks its schema when it opens: a
    // rollout first, so the fault's trigger comes after the check.
    let first = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN first double precision DEFAULT random()",
    )
    .await
    .expect("the fill runs as a rollout");
    admin
        .batch_execute(
            "CREATE TABLE other (id bigserial PRIMARY KEY, amount int); \
             INSERT INTO other (amount) SELECT g FROM generate_series(1, 5000) g; \
             CREATE TABLE third (id bigserial PRIMARY KEY, amount int); \
             INSERT INTO third (amount) SELECT g FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    admin.batch_execute(FAULT).await.unwrap();
    let fill = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
    )
    .await
    .expect("the fill answers with its rollout");
    let change =
        common::rollouts::start(&conn, "ALTER TABLE other ALTER COLUMN amount TYPE bigint").await;
    let dropped =
        common::rollouts::start(&conn, "ALTER TABLE third ALTER COLUMN amount TYPE bigint").await;
    for id in [fill, change, dropped] {
        let (phase, error) = common::rollouts::phase(&admin, id).await;
        assert_eq!(
            phase, "planned",
            "rollout {id}: the fault did not hold its row"
        );
        assert!(
            error.is_some_and(|e| e.contains("will try again")),
            "rollout {id}: the failure is not noted"
        );
    }
    // A trigger dropped after the start: the rollout fails saying so (the
    // fault holds it planned until then), and its rollback takes the column away.
    admin
        .batch_execute(&format!("DROP TRIGGER pgshift_mirror_{dropped} ON third"))
        .await
        .unwrap();
    let failed = until_phase(&admin, dropped, "failed").await;
    assert!(failed.contains("was dropped after it started"), "{failed}");
    admin
        .batch_execute(
            "DROP TRIGGER test_fault ON pgshift.rollouts; DROP FUNCTION public.no_backfilling()",
        )
        .await
        .unwrap();
    for id in [first, fill] {
        wait_phase(&admin, id, "finished", Duration::from_secs(90)).await;
    }
    wait_phase(&admin, change, "verified", Duration::from_secs(90)).await;
    rollout::request(&admin, dropped, Request::Rollback)
        .await
        .unwrap();
    until_phase(&admin, dropped, "rolled_back").await;
    let left = count(
        &admin,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'third'::regclass AND attname LIKE '%pgshift%' AND NOT attisdropped",
    )
    .await;
    assert_eq!(left, 0, "the rollback left the new column");
    let unfilled = count(
        &admin,
        "SELECT count(*) FROM orders WHERE drawn IS NULL OR first IS NULL",
    )
    .await;
    assert_eq!(unfilled, 0, "old rows were left unfilled");
    let mismatched = count(
        &admin,
        "SELECT count(*) FROM other WHERE amount__pgshift_new IS DISTINCT FROM amount::bigint",
    )
    .await;
    assert_eq!(mismatched, 0, "the new column differs from the old");
}

/// The console's ROLLOUT FILL on columns whose defaults were set after they
/// were added (as a fill whose deferred work was interrupted leaves one): the
/// old rows' NULLs get the default in the background, a constant one too; a
/// NULL written after the command stays; a default that is not built in is
/// refused before anything runs it as the service role.
#[tokio::test]
async fn the_console_fills_the_nulls_of_a_column_with_its_default() {
    let db = fresh_db("fill_console");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "CREATE SEQUENCE ran;
             CREATE FUNCTION public.mine() RETURNS double precision VOLATILE LANGUAGE sql
                 AS $$ SELECT pg_catalog.nextval('public.ran')::float8 $$;
             CREATE DOMAIN positive AS int CHECK (VALUE > 0);
             CREATE TABLE refd (id int PRIMARY KEY);
             INSERT INTO refd VALUES (1);
             ALTER TABLE orders ADD COLUMN drawn double precision, ADD COLUMN other double precision,
                 ADD COLUMN plain int, ADD COLUMN dom positive, ADD COLUMN keyed int REFERENCES refd (id);
             ALTER TABLE orders ALTER COLUMN drawn SET DEFAULT random(),
                 ALTER COLUMN other SET DEFAULT public.mine(), ALTER COLUMN plain SET DEFAULT 7,
                 ALTER COLUMN dom SET DEFAULT 5, ALTER COLUMN keyed SET DEFAULT 1;
             INSERT INTO orders (amount, shadow, note) VALUES (1, 1, 'after');",
        )
        .await
        .unwrap();
    let proxy = common::admin::proxy();
    let console = common::admin::console(&proxy).await;
    for (sql, code) in [
        (format!("ROLLOUT FILL orders.other IN {db}"), "42501"),
        (format!("ROLLOUT FILL orders.dom IN {db}"), "42501"),
        (format!("ROLLOUT FILL orders.keyed IN {db}"), "42501"),
        (format!("ROLLOUT FILL orders.note IN {db}"), "55000"),
        (format!("ROLLOUT FILL orders.id IN {db}"), "55000"),
        (format!("ROLLOUT FILL orders.nope IN {db}"), "42703"),
        (format!("ROLLOUT FILL nosuch.drawn IN {db}"), "42P01"),
    ] {
        let e = console.simple_query(&sql).await.expect_err(&sql);
        let code_seen = e.as_db_error().map(|d| d.code().code().to_string());
        assert_eq!(code_seen.as_deref(), Some(code), "{sql}: {e:?}");
    }
    // Counted where no rollback undoes it: the INSERT's call only.
    let ran = count(&admin, "SELECT last_value FROM ran").await;
    assert_eq!(ran, 1, "the default ran for more than the INSERT");
    let mut ids = Vec::new();
    for column in ["drawn", "plain"] {
        let started =
            common::admin::rows(&console, &format!("ROLLOUT FILL orders.{column} IN {db}")).await;
        assert_eq!(started.len(), 1, "{started:?}");
        let id: i64 = common::admin::cell(&started[0], "id")
            .unwrap()
            .parse()
            .unwrap();
        ids.push(id);
        if column == "drawn" {
            // One at a time on a table.
            let e = console
                .simple_query(&format!("ROLLOUT FILL orders.plain IN {db}"))
                .await
                .expect_err("a second fill");
            assert_eq!(
                e.as_db_error().map(|d| d.code().code()),
                Some("55006"),
                "{e:?}"
            );
            // Written after the command: the application's NULL.
            admin
                .batch_execute(
                    "INSERT INTO orders (amount, shadow, note, drawn) VALUES (2, 2, 'mine', NULL); \
                     UPDATE orders SET note = 'still mine' WHERE note = 'mine'",
                )
                .await
                .unwrap();
        }
        wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    }
    let nulls = count(&admin, "SELECT count(*) FROM orders WHERE drawn IS NULL").await;
    assert_eq!(
        nulls, 1,
        "the old rows' NULLs were not all filled, or the new one was"
    );
    let mine = count(
        &admin,
        "SELECT count(*) FROM orders WHERE drawn IS NULL AND note = 'still mine'",
    )
    .await;
    assert_eq!(mine, 1);
    let distinct = count(&admin, "SELECT count(DISTINCT drawn) FROM orders").await;
    assert!(distinct > ROWS / 2, "one value for every row: {distinct}");
    let sevens = count(&admin, "SELECT count(*) FROM orders WHERE plain = 7").await;
    assert_eq!(sevens, ROWS + 2);
    assert_eq!(leftovers(&admin).await, 0);
    // The two INSERTs ran it; nothing else did.
    let ran = count(&admin, "SELECT last_value FROM ran").await;
    assert_eq!(ran, 2, "the refused default ran");
}

/// A trigger dropped during the backfill (by someone with the right to): the
/// next batch stops the rollout, naming it, instead of going on to a column
/// that writes no longer reach.
#[tokio::test]
async fn a_trigger_dropped_during_the_backfill_stops_it() {
    let db = fresh_db("fill_dropped");
    let admin = setup(&db).await;
    let proxy = proxy(500);
    let conn = proxy.conn_str(&db, "postgres");
    let id = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
    )
    .await
    .expect("the fill runs as a rollout");
    admin
        .batch_execute(&format!("DROP TRIGGER pgshift_mirror_{id} ON orders"))
        .await
        .unwrap();
    let error = until_phase(&admin, id, "failed").await;
    assert!(error.contains("is gone"), "{error}");
    rollout::request(&admin, id, Request::Rollback)
        .await
        .unwrap();
    until_phase(&admin, id, "rolled_back").await;
    assert_eq!(leftovers(&admin).await, 0);
}

/// The fill's trigger goes on the table pgshift looked at: when the name means
/// another table by the time the expand holds its lock (renamed, and a new one
/// made under the name), the expand fails with 55000 and adds nothing.
#[tokio::test]
async fn the_fill_trigger_goes_only_on_the_table_looked_at() {
    let db = fresh_db("fill_renamed");
    let admin = setup(&db).await;
    admin
        .batch_execute(
            "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random();
             CREATE TABLE elsewhere (id int);
             CREATE FUNCTION public.fill_it() RETURNS trigger LANGUAGE plpgsql
                 AS $$BEGIN RETURN NEW; END$$;",
        )
        .await
        .unwrap();
    let oid = |table: &'static str| {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(&format!("SELECT '{table}'::regclass::oid"), &[])
                .await
                .unwrap();
            row.get::<_, u32>(0)
        }
    };
    let online = pgshift::sql::plan::OnlineFill {
        column: "drawn".into(),
        type_sql: "double precision".into(),
        value: "random()".into(),
    };
    let spec = pgshift::rollout::fill::FillSpec {
        table: "orders",
        online: &online,
        add: "",
        set_default: "",
        exists: true,
        known_oid: None,
    };
    let expand = |oid: u32| {
        pgshift::rollout::fill::expand(
            &spec,
            "public.orders",
            oid,
            "pgshift_mirror_9",
            "public.fill_it",
        )
    };
    let e = admin
        .batch_execute(&expand(oid("elsewhere").await))
        .await
        .expect_err("the trigger went on another table's name");
    assert_eq!(sqlstate(&e).as_deref(), Some("55000"), "{e:?}");
    let triggers = "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshift_mirror_9'";
    assert_eq!(count(&admin, triggers).await, 0);
    admin
        .batch_execute(&expand(oid("orders").await))
        .await
        .unwrap();
    assert_eq!(count(&admin, triggers).await, 1);
}

/// Ages tell old rows from the application's only while no transaction id has
/// come round: a row frozen more than 2^31 ids ago keeps its xmin, whose age
/// then reads as anything. On a cluster of its own, aged with pg_resetwal: a
/// fill under way when the count nears 2^31 stops and says why; past it, the
/// fill runs in-band, as before, and fills every old row.
#[tokio::test]
async fn a_cluster_past_two_billion_transactions_fills_in_band() {
    let mut pg = pgshift::cluster::Cluster::start(&pgshift::cluster::ClusterOptions {
        settings: vec!["autovacuum=off".into()],
        ..Default::default()
    })
    .expect("a cluster of its own");
    let sql = |pg: &pgshift::cluster::Cluster, db: &str, q: &str| {
        pg.psql(db, q).unwrap_or_else(|e| panic!("{q}: {e}"))
    };
    sql(
        &pg,
        "postgres",
        "CREATE TABLE old_rows (id int PRIMARY KEY, note text);
         INSERT INTO old_rows SELECT g, 'old' FROM generate_series(1, 50) g;
         CREATE TABLE slow (id int PRIMARY KEY);
         INSERT INTO slow SELECT generate_series(1, 3000);
         VACUUM FREEZE;",
    );
    pg.set_next_xid(1_100_000_000).unwrap();
    sql(
        &pg,
        "postgres",
        "ALTER DATABASE template0 ALLOW_CONNECTIONS true",
    );
    for db in ["postgres", "template1", "template0"] {
        sql(&pg, db, "VACUUM FREEZE");
    }
    let address = pg.tcp_address();
    let proxy = Proxy::start_with(|c| {
        c.upstream.address = address;
        c.rollout.latency_factor = 0.0;
        c.rollout.batch_rows = 100;
        c.rollout.min_batch_rows = 10;
        c.rollout.rows_per_second = 100;
    });
    let conn = proxy.conn_str("postgres", "postgres");
    let admin_conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port
    );
    // Under the count: the fill runs in the background.
    let id = add(
        &conn,
        "ALTER TABLE slow ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    )
    .await
    .expect("a fill in the background");
    // The count nears 2^31 while it runs: it stops at its next batch.
    pg.set_next_xid(2_147_000_000).unwrap();
    let admin = connect(&admin_conn).await;
    let error = until_phase(&admin, id, "failed").await;
    assert!(error.contains("transaction ids"), "{error}");
    assert!(error.contains("removes the column"), "{error}");
    // Past 2^31: the ages of the frozen rows read negative, and the fill of
    // another table runs in-band, every old row filled.
    pg.set_next_xid(2_200_000_000).unwrap();
    let admin = connect(&admin_conn).await;
    let negative = count(
        &admin,
        "SELECT count(*) FROM old_rows WHERE pg_catalog.age(xmin) < 0",
    )
    .await;
    assert_eq!(negative, 50, "the premise: ages read negative");
    let started = add(
        &conn,
        "ALTER TABLE old_rows ADD COLUMN token uuid DEFAULT gen_random_uuid()",
    )
    .await;
    assert_eq!(started, None, "no background fill past 2^31 ids");
    admin
        .batch_execute("INSERT INTO old_rows VALUES (51, 'new', NULL)")
        .await
        .unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE token IS NULL AND id <= 50), count(DISTINCT token), \
             count(*) FILTER (WHERE id = 51 AND token IS NULL) FROM old_rows",
            &[],
        )
        .await
        .unwrap();
    let (unfilled, distinct, meant): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(unfilled, 0, "old rows left NULL");
    assert_eq!(distinct, 50);
    assert_eq!(meant, 1, "the NULL written after the ALTER was filled");
    proxy.stop();
}

/// Two consoles, on two proxies, start a fill of the same column at the same
/// moment: both pass their checks before either has written its row (held
/// there by a lock on pgshift's table of rollouts, so the race is not left to
/// chance), and the database lets one rollout of a column be under way: the
/// second is refused with 55006 naming the first, and no column is filled by
/// two drivers with two boundaries.
#[tokio::test]
async fn two_consoles_filling_one_column_at_once_start_one_fill() {
    let db = fresh_db("fill_twice");
    let admin = setup(&db).await;
    admin.batch_execute(DEFAULT_SET_LATER).await.unwrap();
    let (one, two) = (common::admin::proxy(), common::admin::proxy());
    let (a, b) = (
        common::admin::console(&one).await,
        common::admin::console(&two).await,
    );
    // pgshift's schema exists before the lock (an index built through a
    // proxy makes it).
    connect(&one.conn_str(&db, "postgres"))
        .await
        .batch_execute("CREATE INDEX orders_note ON orders (note)")
        .await
        .unwrap();
    schema_made(&admin).await;
    let sql = format!("ROLLOUT FILL orders.c1 IN {db}");
    let ((x, y), seen) = held_together(&db, a.simple_query(&sql), b.simple_query(&sql)).await;
    assert_eq!(seen, 2, "both starts did not reach their INSERT together");
    let started: Vec<_> = [&x, &y].into_iter().filter(|r| r.is_ok()).collect();
    assert_eq!(started.len(), 1, "{x:?} {y:?}");
    let refused = [x, y].into_iter().find_map(|r| r.err()).unwrap();
    let id = count(&admin, "SELECT max(id) FROM pgshift.rollouts").await;
    let db_error = refused.as_db_error().expect("a server error");
    assert_eq!(db_error.code().code(), "55006", "{refused:?}");
    assert!(
        db_error.message().contains(&format!("rollout {id} ")),
        "{db_error:?}"
    );
    wait_phase(&admin, id, "finished", Duration::from_secs(60)).await;
    let rollouts = count(&admin, "SELECT count(*) FROM pgshift.rollouts").await;
    assert_eq!(rollouts, 1, "one rollout of the column");
    let nulls = count(&admin, "SELECT count(*) FROM orders WHERE c1 IS NULL").await;
    assert_eq!(nulls, 0, "c1 left NULL");
}

/// Two sessions add the same column with a volatile default at the same moment.
/// Directly, the later ALTER waits for the first and gets 42701 (with IF NOT
/// EXISTS, a notice and nothing done). Through pgshift the same: the session
/// whose fill could not be recorded runs its statement as written.
#[tokio::test]
async fn two_sessions_adding_one_column_at_once_get_what_postgres_gives() {
    let db = fresh_db("fill_add_twice");
    let admin = setup(&db).await;
    // Two proxies: each has its own service connection, so both INSERTs can
    // wait on the lock below together.
    let (one, two) = (proxy(0), proxy(0));
    let (p, q) = (one.conn_str(&db, "postgres"), two.conn_str(&db, "postgres"));
    // pgshift's schema exists before the lock, and both proxies know it.
    for c in [&p, &q] {
        connect(c)
            .await
            .batch_execute("CREATE INDEX IF NOT EXISTS orders_note ON orders (note)")
            .await
            .unwrap();
    }
    schema_made(&admin).await;
    for if_not_exists in [false, true] {
        let column = if if_not_exists { "drawn2" } else { "drawn" };
        let add = format!(
            "ALTER TABLE orders ADD COLUMN {} {column} double precision DEFAULT random()",
            if if_not_exists { "IF NOT EXISTS" } else { "" }
        );
        let (a, b) = (connect(&p).await, connect(&q).await);
        let ((x, y), seen) = held_together(&db, a.simple_query(&add), b.simple_query(&add)).await;
        // IF NOT EXISTS is filled in-band (its column may have been there):
        // nothing waits on the INSERT.
        let expected = if if_not_exists { 0 } else { 2 };
        assert_eq!(seen, expected, "the starts' INSERTs waiting together");
        let failed: Vec<_> = [&x, &y]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
            .collect();
        if if_not_exists {
            assert!(failed.is_empty(), "{x:?} {y:?}");
        } else {
            assert_eq!(failed.len(), 1, "{x:?} {y:?}");
            let code = failed[0].as_db_error().map(|e| e.code().code().to_string());
            assert_eq!(code.as_deref(), Some("42701"), "{:?}", failed[0]);
        }
        // Whichever got there first filled the column: a fill that ends, or the
        // engine's in-band one (then the other fill's start failed and was
        // rolled back).
        let live =
            "SELECT count(*) FROM pgshift.rollouts WHERE phase NOT IN ('finished', 'rolled_back')";
        for _ in 0..600 {
            if count(&admin, live).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(count(&admin, live).await, 0, "a fill still under way");
        let nulls = count(
            &admin,
            &format!("SELECT count(*) FROM orders WHERE {column} IS NULL"),
        )
        .await;
        assert_eq!(nulls, 0, "{column} left NULL");
        let columns = count(
            &admin,
            &format!("SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = '{column}'"),
        )
        .await;
        assert_eq!(columns, 1);
    }
    // Directly, IF NOT EXISTS on a column that is there does nothing: no new
    // default, no fill of a NULL written on purpose.
    let c = connect(&p).await;
    c.batch_execute("ALTER TABLE orders ALTER COLUMN drawn2 SET DEFAULT 2; UPDATE orders SET drawn2 = NULL WHERE id = 1")
        .await
        .unwrap();
    let before = count(&admin, "SELECT count(*) FROM orders WHERE drawn2 IS NULL").await;
    let (noted, notices) = connect_noting(&p).await;
    noted
        .batch_execute(
            "ALTER TABLE orders ADD COLUMN IF NOT EXISTS drawn2 double precision DEFAULT random()",
        )
        .await
        .unwrap();
    let notices = notices.lock().unwrap().clone();
    let skipping = "column \"drawn2\" of relation \"orders\" already exists, skipping";
    assert!(notices.iter().any(|n| n.contains(skipping)), "{notices:?}");
    let after = count(&admin, "SELECT count(*) FROM orders WHERE drawn2 IS NULL").await;
    assert_eq!(
        (before, after),
        (1, 1),
        "a NULL written on purpose was filled"
    );
    let default = admin
        .query_one("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders'::regclass AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'drawn2')", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(default, "2", "the default was changed");
}

/// The upgrade to the schema that lets one rollout of a column be under way
/// meets two (left by such a race before it): the schema is still taken, the
/// index is left out, and the next check of the schema once one of them is
/// over adds it (the version stays what it is).
#[tokio::test]
async fn an_upgrade_over_two_rollouts_of_one_column_leaves_the_index_out() {
    let db = fresh_db("fill_upgrade");
    let admin = setup(&db).await;
    admin.batch_execute(DEFAULT_SET_LATER).await.unwrap();
    let proxy = common::admin::proxy();
    let console = common::admin::console(&proxy).await;
    let fill = format!("ROLLOUT FILL orders.c1 IN {db}");
    common::admin::rows(&console, &fill).await;
    let first = count(&admin, "SELECT max(id) FROM pgshift.rollouts").await;
    wait_phase(&admin, first, "finished", Duration::from_secs(60)).await;
    let index = "SELECT count(*) FROM pg_class WHERE relname = 'rollouts_one_per_column'";
    assert_eq!(count(&admin, index).await, 1);
    let older = "COMMENT ON SCHEMA pgshift IS 'pgshift state, schema version 9'";
    admin
        .batch_execute(&format!(
            "DROP INDEX pgshift.rollouts_one_per_column; {older};
             INSERT INTO pgshift.rollouts (username, statement, table_oid, schema_name, table_name, column_name, new_column,
                 old_type, new_type, transform, uses, key_columns, not_null, phase, paused, rows_per_second, rows_done)
             SELECT 'test', 'twice', 'orders'::regclass, 'public', 'orders', 'gone', 'gone', 'int', 'int', 'x', '{{}}', '{{id}}',
                    false, 'failed', false, 1, 0
               FROM generate_series(1, 2);"
        ))
        .await
        .unwrap();
    // A new proxy reads the rollouts through its service connection, which
    // upgrades the schema first.
    let db_name = db.as_str();
    let upgraded = || async move {
        let proxy = common::admin::proxy();
        let client = connect(&proxy.conn_str(db_name, "postgres")).await;
        client.batch_execute("SELECT 1").await.unwrap();
        let console = common::admin::console(&proxy).await;
        common::admin::rows(&console, &format!("SHOW ROLLOUT {first} IN {db_name}"))
            .await
            .len()
    };
    let shown = upgraded().await;
    assert_eq!(shown, 1, "the schema was refused or not read");
    assert_eq!(count(&admin, index).await, 0, "built over two live rows");
    admin
        .batch_execute(
            "UPDATE pgshift.rollouts SET phase = 'rolled_back' WHERE id = (SELECT max(id) FROM pgshift.rollouts)",
        )
        .await
        .unwrap();
    let version = "SELECT obj_description('pgshift'::regnamespace, 'pg_namespace')";
    let current: String = admin.query_one(version, &[]).await.unwrap().get(0);
    assert_eq!(upgraded().await, 1);
    assert_eq!(count(&admin, index).await, 1, "not added once it could be");
    let after: String = admin.query_one(version, &[]).await.unwrap().get(0);
    assert_eq!(current, after);
}

/// A fill meets a row that breaks a NOT VALID CHECK constraint (which no UPDATE
/// of it passes): it stops naming the constraint and what to do, and resumes
/// to the end once the row is mended.
#[tokio::test]
async fn a_fill_stops_at_a_row_breaking_a_not_valid_check_until_it_is_mended() {
    let db = fresh_db("fill_not_valid");
    let admin = setup(&db).await;
    admin
        .batch_execute(common::rollouts::NOT_VALID_ROW)
        .await
        .unwrap();
    let proxy = proxy(0);
    let conn = proxy.conn_str(&db, "postgres");
    let id = add(
        &conn,
        "ALTER TABLE orders ADD COLUMN drawn double precision DEFAULT random()",
    )
    .await
    .expect("the fill runs as a rollout");
    let error = until_phase(&admin, id, "failed").await;
    assert!(
        error.contains("breaks the NOT VALID constraint note_ok")
            && error.contains(&format!("ROLLOUT RESUME {id}")),
        "{error}"
    );
    admin
        .batch_execute("UPDATE orders SET note = 'mended' WHERE note = 'bad'")
        .await
        .unwrap();
    rollout::request(&admin, id, Request::Resume).await.unwrap();
    until_phase(&admin, id, "finished").await;
    let nulls = count(&admin, "SELECT count(*) FROM orders WHERE drawn IS NULL").await;
    assert_eq!(nulls, 0);
}
