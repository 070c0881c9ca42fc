//! The stall budget (`ddl.stall_budget_ms`): while an idle-in-transaction session
//! holds the table, pgshift does not join Postgres' lock queue (where every
//! application query on the table would queue behind its attempt); it waits
//! outside and attempts once only short transactions are left, with lock_timeout
//! = the budget. Each scenario runs through pgshift with the budget, and with the
//! budget off (attempts of lock_timeout_ms = 500, the old engine), in one test:
//! the second shows the stall the first avoids, so the test can fail.

mod common;

use common::scenario::{run, Scenario, TABLE};
use common::{connect, fresh_db, Proxy};
use std::time::Duration;

const BUDGET_MS: u64 = 100;
const LOCK_TIMEOUT_MS: u64 = 500;
/// Scheduling slack on a busy 2-core machine, over the budget.
const SLACK: Duration = Duration::from_millis(200);

fn proxy(budget_ms: u64) -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = LOCK_TIMEOUT_MS;
        c.ddl.stall_budget_ms = budget_ms;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 400;
        c.ddl.max_attempts = 100;
        c.ddl.retry_deadline_ms = 30_000;
    })
}

/// (worst application query with the budget, worst with it off).
async fn both_ways(name: &str, s: &Scenario<'_>, check: &str, want: &str) -> (Duration, Duration) {
    let mut worst = Vec::new();
    for budget in [BUDGET_MS, 0] {
        let db = fresh_db(&format!("{name}_{budget}"));
        let proxy = proxy(budget);
        let out = run(&db, &proxy.conn_str(&db, "postgres"), s).await;
        out.ddl
            .as_ref()
            .unwrap_or_else(|e| panic!("{} (budget {budget}): {e:?}", s.ddl));
        assert!(out.app_queries > 10, "the load ran: {}", out.app_queries);
        let client = connect(&common::scenario::direct(&db)).await;
        common::scenario::eventually(&client, check, want).await;
        worst.push(out.worst);
    }
    (worst[0], worst[1])
}

fn assert_within_budget(what: &str, (with, without): (Duration, Duration)) {
    eprintln!("{what}: worst application query {with:?} with the budget, {without:?} without");
    assert!(
        with < Duration::from_millis(BUDGET_MS) + SLACK,
        "{what}: with the stall budget an application query waited {with:?}"
    );
    assert!(
        without > Duration::from_millis(LOCK_TIMEOUT_MS) * 8 / 10,
        "{what}: without the budget the attempts should stall the application, worst {without:?}"
    );
}

const BLOCKER: &str = "UPDATE items SET qty = qty WHERE id = 1";
const APP: &str = "UPDATE items SET qty = qty + 1 WHERE id = 500";

#[tokio::test]
async fn check_constraint_and_set_not_null() {
    let s = Scenario {
        setup: TABLE,
        blocker: BLOCKER,
        ddl: "ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)",
        app: APP,
    };
    let worst = both_ways(
        "sb_check",
        &s,
        "SELECT convalidated::text FROM pg_constraint WHERE conname = 'qty_positive'",
        "true",
    )
    .await;
    assert_within_budget("ADD CHECK", worst);
    let s = Scenario {
        ddl: "ALTER TABLE items ALTER COLUMN qty SET NOT NULL",
        ..s
    };
    let worst = both_ways(
        "sb_notnull",
        &s,
        "SELECT attnotnull::text FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'qty'",
        "true",
    )
    .await;
    assert_within_budget("SET NOT NULL", worst);
}

#[tokio::test]
async fn foreign_key_and_volatile_default() {
    let s = Scenario {
        setup: TABLE,
        blocker: BLOCKER,
        ddl: "ALTER TABLE items ADD CONSTRAINT items_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id)",
        app: APP,
    };
    let worst = both_ways(
        "sb_fk",
        &s,
        "SELECT convalidated::text FROM pg_constraint WHERE conname = 'items_owner_fk'",
        "true",
    )
    .await;
    assert_within_budget("ADD FOREIGN KEY", worst);
    let s = Scenario {
        ddl: "ALTER TABLE items ADD COLUMN token text DEFAULT md5(random()::text)",
        ..s
    };
    let worst = both_ways(
        "sb_volatile",
        &s,
        "SELECT (count(token) = count(*))::text FROM items",
        "true",
    )
    .await;
    assert_within_budget("ADD COLUMN with a volatile default", worst);
}

#[tokio::test]
async fn a_django_style_migration_in_one_transaction() {
    let s = Scenario {
        setup: TABLE,
        blocker: BLOCKER,
        ddl: "BEGIN; \
              ALTER TABLE items ADD COLUMN note varchar(40) NULL; \
              ALTER TABLE items ADD CONSTRAINT items_qty_check CHECK (qty >= 0); \
              CREATE INDEX items_note ON items (note); \
              COMMIT",
        app: APP,
    };
    let worst = both_ways(
        "sb_django",
        &s,
        "SELECT (SELECT count(*) FROM pg_index WHERE indexrelid = 'items_note'::regclass AND indisvalid) \
         + (SELECT count(*) FROM pg_constraint WHERE conname = 'items_qty_check' AND convalidated)",
        "2",
    )
    .await;
    assert_within_budget("a Django-style migration", worst);
}

/// `ddl.blockers = "end_idle"`: a session idle in its transaction on the table is
/// ended once it has been idle for `ddl.blockers_idle_ms`, and not before; a session
/// that holds the table while running a statement, or that is idle in a
/// transaction on another table, is left alone.
#[tokio::test]
async fn end_idle_ends_only_sessions_idle_in_a_blocking_transaction() {
    const IDLE_MS: u64 = 1_500;
    let db = fresh_db("sb_end_idle");
    let direct = common::scenario::direct(&db);
    let admin = connect(&direct).await;
    admin.batch_execute(TABLE).await.unwrap();
    admin
        .batch_execute("CREATE TABLE other (a int)")
        .await
        .unwrap();
    let proxy = Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = BUDGET_MS;
        c.ddl.blockers = pgshift::config::Blockers::EndIdle;
        c.ddl.blockers_idle_ms = IDLE_MS;
        c.ddl.retry_deadline_ms = 30_000;
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;

    // Busy, not idle: holds the table for 2.5 s while running, then commits.
    let busy = connect(&direct).await;
    let running = tokio::spawn(async move {
        busy.batch_execute(
            "BEGIN; LOCK TABLE items IN ROW EXCLUSIVE MODE; SELECT pg_sleep(2.5); COMMIT",
        )
        .await
        .map(|_| busy)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    client
        .batch_execute("ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)")
        .await
        .unwrap();
    let busy = running
        .await
        .unwrap()
        .expect("a running session is not ended");
    busy.batch_execute("SELECT 1")
        .await
        .expect("still connected");
    assert!(
        started.elapsed() >= Duration::from_millis(2_000),
        "the step waited for the running transaction: {:?}",
        started.elapsed()
    );

    // Idle in a transaction that holds the table: ended after IDLE_MS, not before.
    // Idle in a transaction on another table: untouched.
    let bystander = connect(&direct).await;
    bystander
        .batch_execute("BEGIN; UPDATE other SET a = 1")
        .await
        .unwrap();
    let idle = connect(&direct).await;
    idle.batch_execute(&format!("BEGIN; {BLOCKER}"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    client
        .batch_execute("ALTER TABLE items ALTER COLUMN qty SET NOT NULL")
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(IDLE_MS) - Duration::from_millis(100),
        "ended before it had been idle for ddl.blockers_idle_ms: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let err = idle
        .batch_execute("COMMIT")
        .await
        .expect_err("the idle session was ended");
    assert!(
        idle.is_closed() || err.to_string().contains("terminat"),
        "{err}"
    );
    bystander
        .batch_execute("COMMIT")
        .await
        .expect("the bystander was left alone");
    let n: i64 = admin
        .query_one("SELECT count(*) FROM items WHERE qty IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let notnull: bool = admin
        .query_one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'qty'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(notnull);
}

/// Postgres cancels an autovacuum that blocks a lock request (after
/// deadlock_timeout), so a DDL sent directly does not wait for it. pgshift waits
/// outside the lock queue, where that never happens: it cancels the autovacuum
/// itself, as Postgres would, instead of waiting for it to finish.
#[tokio::test]
async fn a_blocking_autovacuum_is_cancelled_not_waited_for() {
    let db = fresh_db("sb_autovacuum");
    let direct = common::scenario::direct(&db);
    let admin = connect(&direct).await;
    // Slow autovacuum: one cost unit between 100 ms sleeps, on a table with dead rows.
    admin
        .batch_execute(
            "CREATE TABLE av (id int, pad text) WITH (autovacuum_vacuum_cost_delay = 100, \
             autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, \
             autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 1000000000);
             INSERT INTO av SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
             DELETE FROM av WHERE id % 2 = 0;",
        )
        .await
        .unwrap();
    admin
        .batch_execute("ALTER SYSTEM SET autovacuum_naptime = 1")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND query LIKE '%av%' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no autovacuum started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .batch_execute("ALTER SYSTEM RESET autovacuum_naptime")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    // Running longer than the budget: a long holder by pgshift's measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let proxy = Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = BUDGET_MS;
        c.ddl.retry_deadline_ms = 20_000;
    });
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    let started = std::time::Instant::now();
    client
        .batch_execute("ALTER TABLE av ADD CONSTRAINT id_positive CHECK (id > 0)")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the step waited {:?} for autovacuum",
        started.elapsed()
    );
}

/// A foreign key locks the referenced table too: a long transaction on it makes
/// pgshift wait outside the lock queue just as one on the table itself does (the
/// NOTICE names it), so the application's writes to it never queue behind an
/// attempt.
#[tokio::test]
async fn a_long_transaction_on_the_referenced_table_is_waited_out() {
    let db = fresh_db("sb_fk_referenced");
    let direct = common::scenario::direct(&db);
    let admin = connect(&direct).await;
    admin.batch_execute(TABLE).await.unwrap();
    let proxy = Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = BUDGET_MS;
        c.ddl.retry_deadline_ms = 30_000;
    });
    let (client, notices) = common::connect_noting(&proxy.conn_str(&db, "postgres")).await;
    let blocker = connect(&direct).await;
    blocker
        .batch_execute("BEGIN; UPDATE owners SET id = id WHERE id = 1")
        .await
        .unwrap();
    let ddl = tokio::spawn(async move {
        client
            .batch_execute("ALTER TABLE items ADD CONSTRAINT items_owner_fk FOREIGN KEY (owner_id) REFERENCES owners (id)")
            .await
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    ddl.await.unwrap().expect("the foreign key is added");
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("pgshift: waiting for") && n.contains("owners")),
        "{notices:?}"
    );
    common::scenario::eventually(
        &admin,
        "SELECT convalidated::text FROM pg_constraint WHERE conname = 'items_owner_fk'",
        "true",
    )
    .await;
}

/// A fresh database with the items table owned by a new role that is not a
/// superuser, plus `grant` (with `{weak}` for the role): (database, direct
/// connection string, superuser client, role).
async fn with_owner_role(
    name: &str,
    grant: &str,
) -> (String, String, tokio_postgres::Client, String) {
    let db = fresh_db(name);
    let direct = common::scenario::direct(&db);
    let admin = connect(&direct).await;
    admin.batch_execute(TABLE).await.unwrap();
    let weak = format!("{db}_weak");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {weak} LOGIN; ALTER TABLE items OWNER TO {weak}; GRANT CREATE ON SCHEMA public TO {weak}; {}",
            grant.replace("{weak}", &weak)
        ))
        .await
        .unwrap();
    (db, direct, admin, weak)
}

/// Inside the client's transaction (a migration tool's BEGIN … COMMIT): an idle
/// blocker is ended once idle long enough, and where the client's role may not end
/// it, the refusal does not abort the client's transaction: pgshift waits instead.
#[tokio::test]
async fn end_idle_inside_a_transaction_and_when_refused() {
    let (db, direct, admin, weak) =
        with_owner_role("sb_end_idle_tx", "GRANT pg_read_all_stats TO {weak}").await;
    let proxy = Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = BUDGET_MS;
        c.ddl.blockers = pgshift::config::Blockers::EndIdle;
        c.ddl.blockers_idle_ms = 1_000;
        c.ddl.retry_deadline_ms = 30_000;
    });

    // Allowed: the superuser's transaction ends the idle blocker and goes on.
    let idle = connect(&direct).await;
    idle.batch_execute(&format!("BEGIN; {BLOCKER}"))
        .await
        .unwrap();
    let client = connect(&proxy.conn_str(&db, "postgres")).await;
    client
        .batch_execute("BEGIN; ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)")
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert!(
        idle.batch_execute("COMMIT").await.is_err(),
        "the idle blocker was ended"
    );

    // Refused: a role that sees the superuser's session (pg_read_all_stats) but may
    // not end it waits for it, inside its own transaction, which stays usable.
    let idle = connect(&direct).await;
    idle.batch_execute(&format!("BEGIN; {BLOCKER}"))
        .await
        .unwrap();
    let ender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        idle.batch_execute("COMMIT").await
    });
    let client = connect(&proxy.conn_str(&db, &weak)).await;
    client
        .batch_execute(
            "BEGIN; ALTER TABLE items ADD CONSTRAINT qty_not_negative CHECK (qty >= 0); SELECT 1",
        )
        .await
        .expect("the transaction survives the refused signal");
    client.batch_execute("COMMIT").await.unwrap();
    ender
        .await
        .unwrap()
        .expect("the superuser's session was not ended");
    common::scenario::eventually(
        &admin,
        "SELECT count(*)::text FROM pg_constraint WHERE conname IN ('qty_positive', 'qty_not_negative') AND convalidated",
        "2",
    )
    .await;
}

/// A role without pg_read_all_stats cannot see how long another role's session has
/// been in its transaction. pgshift then measures it itself: once it has seen the
/// same transaction hold the table for the budget, it waits outside the lock
/// queue, so the attempts (each a stall of up to the budget for the application)
/// stop instead of repeating until the blocker ends.
#[tokio::test]
async fn a_blocker_the_role_cannot_see_into_is_waited_out_too() {
    let (db, direct, _admin, weak) = with_owner_role("sb_invisible", "").await;
    let proxy = Proxy::start_with(|c| {
        c.ddl.stall_budget_ms = BUDGET_MS;
        c.ddl.retry_initial_ms = 50;
        c.ddl.retry_max_ms = 200;
        c.ddl.max_attempts = 100;
        c.ddl.retry_deadline_ms = 30_000;
    });
    let blocker = connect(&direct).await;
    blocker
        .batch_execute(&format!("BEGIN; {BLOCKER}"))
        .await
        .unwrap();
    let (client, notices) = common::connect_noting(&proxy.conn_str(&db, &weak)).await;
    let ddl = tokio::spawn(async move {
        client
            .batch_execute("ALTER TABLE items ADD CONSTRAINT qty_positive CHECK (qty > 0)")
            .await
    });
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    blocker.batch_execute("COMMIT").await.unwrap();
    let committed = std::time::Instant::now();
    ddl.await.unwrap().expect("the constraint is added");
    let after = committed.elapsed();
    assert!(
        after < Duration::from_secs(2),
        "the step went on {after:?} after the blocker ended"
    );
    let attempts = common::scenario::logged(&db)
        .iter()
        .filter(|l| l.contains("lock_timeout") && l.contains("ADD CONSTRAINT qty_positive"))
        .count();
    let notices = notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("pgshift: waiting for") && n.contains("pg_read_all_stats")),
        "{notices:?}"
    );
    // One attempt finds the holder, then pgshift waits; one more once it ended.
    assert!(
        attempts <= 3,
        "{attempts} attempts while the blocker held the table"
    );
}
