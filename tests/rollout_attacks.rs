//! Attacks on a rollout's background work, which runs as pgshift's service role
//! (`postgres`, a superuser, in these tests): the table's owner swaps the table
//! for one with a trigger, or adds a CHECK constraint that runs SQL text, while
//! the backfill runs; or gives the table a key of a type of their own. Every test
//! ends by checking that the attacker is still not a superuser. The first two made
//! the attacker superuser before the checks under the batch's lock.

mod common;

use common::attack::{is_superuser, role, trap};
use common::rollouts::{paced_proxy, phase, start};
use common::scenario::direct;
use common::{connect, fresh_db, sqlstate, Proxy};
use std::time::Duration;
use tokio_postgres::Client;

fn proxy() -> Proxy {
    Proxy::start_with(|c| {
        c.ddl.lock_timeout_ms = 200;
        c.rollout.batch_rows = 500;
        c.rollout.rows_per_second = 2_000;
    })
}

/// A database where `attacker` owns schema app and table app.t of 20,000 rows.
async fn owned_table(db: &str, attacker: &str) -> (Client, Client) {
    let admin = connect(&direct(db)).await;
    role(&admin, attacker, "").await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA app AUTHORIZATION {attacker}; GRANT CREATE ON DATABASE {db} TO {attacker};"
        ))
        .await
        .unwrap();
    let mallory = connect(&direct(db).replace("user=postgres", &format!("user={attacker}"))).await;
    mallory
        .batch_execute(
            "CREATE TABLE app.t (id int PRIMARY KEY, amount int);
             INSERT INTO app.t SELECT g, g FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    (admin, mallory)
}

#[tokio::test]
async fn a_table_swapped_during_the_backfill_is_never_updated() {
    let db = fresh_db("rollout_swap");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, &attacker),
        "ALTER TABLE app.t ALTER COLUMN amount TYPE bigint",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mallory
        .batch_execute(&format!(
            "ALTER TABLE app.t RENAME TO t_old;
             CREATE TABLE app.t (id int PRIMARY KEY, amount int, amount__pgshift_new bigint);
             INSERT INTO app.t SELECT g, g FROM generate_series(1, 20000) g;
             {}
             CREATE TRIGGER z BEFORE UPDATE ON app.t FOR EACH STATEMENT EXECUTE FUNCTION app.trap();",
            trap("app", "trap", "", "trigger", &attacker)
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(
        !is_superuser(&admin, &attacker).await,
        "the trap ran as the service role"
    );
    // The rollout followed its table (by oid) to its new name.
    let (table, p): (String, String) = {
        let r = admin
            .query_one(
                "SELECT table_name, phase FROM pgshift.rollouts WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(table, "t_old", "phase {p}");
    let filled: i64 = admin
        .query_one(
            "SELECT count(*) FROM app.t WHERE amount__pgshift_new IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(filled, 0, "the stand-in table was updated");
}

#[tokio::test]
async fn code_added_during_the_backfill_stops_it() {
    let db = fresh_db("rollout_check");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, &attacker),
        "ALTER TABLE app.t ALTER COLUMN amount TYPE bigint",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // query_to_xml is built in, but runs the SQL text it is given.
    mallory
        .batch_execute(&format!(
            "{}
             ALTER TABLE app.t ADD CONSTRAINT c CHECK (query_to_xml('SELECT app.trap()', false, false, '') IS NOT NULL) NOT VALID;",
            trap("app", "trap", "", "int", &attacker)
        ))
        .await
        .unwrap();
    let mut stopped = None;
    for _ in 0..100 {
        let (p, error) = phase(&admin, id).await;
        if p == "failed" {
            stopped = error;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = stopped.expect("the rollout went on");
    assert!(error.contains("constraint c"), "{error}");
    assert!(
        !is_superuser(&admin, &attacker).await,
        "the trap ran as the service role"
    );
}

#[tokio::test]
async fn a_key_or_column_of_the_owners_own_type_is_refused() {
    let db = fresh_db("rollout_types");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    mallory
        .batch_execute(&format!(
            "{}
             CREATE DOMAIN app.k AS int CHECK (app.trap(VALUE) IS NULL);
             CREATE TABLE app.d (id app.k PRIMARY KEY, amount int);
             INSERT INTO app.d SELECT g, g FROM generate_series(1, 100) g;
             CREATE TYPE app.mood AS ENUM ('ok', 'meh');
             CREATE DOMAIN app.pos AS int CHECK (VALUE > 0);
             CREATE TABLE app.e (id int PRIMARY KEY, mood app.mood, bonus app.pos, amount int);",
            trap("app", "trap", "int", "int", &attacker)
        ))
        .await
        .unwrap();
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, &attacker)).await;
    for (sql, words) in [
        (
            "ALTER TABLE app.d ALTER COLUMN amount TYPE bigint",
            "column id has type app.k",
        ),
        (
            "ALTER TABLE app.e ALTER COLUMN amount TYPE bigint USING amount + (mood = 'ok')::int",
            "app.mood",
        ),
        (
            "ALTER TABLE app.e ALTER COLUMN amount TYPE bigint USING amount + bonus",
            "column bonus has type app.pos",
        ),
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        let text = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {text}");
        assert!(text.contains(words), "{sql}: {text}");
    }
    assert!(!is_superuser(&admin, &attacker).await);
}

#[tokio::test]
async fn pgshifts_own_names_are_no_free_pass() {
    for attack in ["constraint", "trigger"] {
        let db = fresh_db("rollout_names");
        let attacker = format!("{db}_mallory");
        let (admin, mallory) = owned_table(&db, &attacker).await;
        let proxy = proxy();
        let id = start(
            &proxy.conn_str(&db, &attacker),
            "ALTER TABLE app.t ALTER COLUMN amount TYPE bigint",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sql = match attack {
            // The name of the CHECK pgshift adds before a cutover.
            "constraint" => format!(
                "{} ALTER TABLE app.t ADD CONSTRAINT pgshift_not_null_{id} CHECK (app.trap() IS NULL) NOT VALID;",
                trap("app", "trap", "", "int", &attacker)
            ),
            // pgshift's trigger, with a WHEN clause of the owner's.
            _ => format!(
                "{} DROP TRIGGER pgshift_mirror_{id} ON app.t;
                 CREATE TRIGGER pgshift_mirror_{id} BEFORE UPDATE ON app.t FOR EACH ROW
                   WHEN (app.trap() IS NULL) EXECUTE FUNCTION pgshift.mirror_{id}();
                 ALTER TABLE app.t ENABLE ALWAYS TRIGGER pgshift_mirror_{id};",
                trap("app", "trap", "", "int", &attacker)
            ),
        };
        mallory.batch_execute(&sql).await.unwrap();
        let mut stopped = None;
        for _ in 0..100 {
            let (p, error) = phase(&admin, id).await;
            if p == "failed" {
                stopped = error;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(stopped.is_some(), "{attack}: the rollout went on");
        assert!(
            !is_superuser(&admin, &attacker).await,
            "{attack}: the trap ran as the service role"
        );
    }
}

#[tokio::test]
async fn other_users_writes_and_copies_run_none_of_the_attackers_code() {
    // The attacker owns the table (app.t) and may create in public; the victim is a
    // superuser who writes the table and copies another one through pgshift.
    let db = fresh_db("rollout_paths");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    admin
        .batch_execute(&format!(
            "GRANT CREATE ON SCHEMA public TO {attacker};
             CREATE TABLE public.other (id int PRIMARY KEY, v int);
             INSERT INTO public.other VALUES (1, 1);"
        ))
        .await
        .unwrap();
    mallory
        .batch_execute(
            "ALTER TABLE app.t ADD COLUMN code varchar(20); UPDATE app.t SET code = 'C' || id",
        )
        .await
        .unwrap();
    let proxy = proxy();
    let _id = start(
        &proxy.conn_str(&db, &attacker),
        "ALTER TABLE app.t ALTER COLUMN code TYPE text USING lower(code)",
    )
    .await;
    // Functions and operators of the attacker's that a writer's search_path
    // (public first) or an implicit cast would pick over pg_catalog's.
    mallory
        .batch_execute(&format!(
            "{}
             {}
             CREATE FUNCTION public.eq(oid, regclass) RETURNS bool LANGUAGE sql AS 'SELECT public.trap_eq() IS NULL';
             CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.eq);",
            trap("public", "lower", "varchar", "text", &attacker),
            trap("public", "trap_eq", "", "int", &attacker),
        ))
        .await
        .unwrap();
    let victim = connect(&proxy.conn_str(&db, "postgres")).await;
    victim
        .batch_execute(
            "SET search_path = public, pg_catalog;
             INSERT INTO app.t (id, amount, code) VALUES (30001, 1, 'XY');
             UPDATE app.t SET code = 'ZZ' WHERE id = 5;",
        )
        .await
        .unwrap();
    let (ok, _, stderr) = common::psql_at(
        proxy.port(),
        &db,
        "COPY public.other TO STDOUT;\nCOPY app.t TO STDOUT;\n",
    );
    assert!(ok, "{stderr}");
    assert!(
        !is_superuser(&admin, &attacker).await,
        "the attacker's code ran as the victim"
    );
    let mirrored: String = common::scenario::one_value(
        &admin,
        "SELECT code__pgshift_new FROM app.t WHERE id = 30001",
    )
    .await;
    assert_eq!(mirrored, "xy", "pg_catalog's lower, not the attacker's");
}

#[tokio::test]
async fn a_referencing_table_of_another_role_runs_nothing_as_the_service_role() {
    // The attacker may only REFERENCES the owner's table; their referencing column
    // is of their own enum type with their own casts to int and bigint, which a
    // VALIDATE of the moved foreign key would run.
    let db = fresh_db("rollout_fk_cast");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &format!("{db}_owner")).await;
    role(&admin, &attacker, "").await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA evil AUTHORIZATION {attacker};
             GRANT USAGE ON SCHEMA app TO {attacker};
             GRANT REFERENCES ON app.t TO {attacker};"
        ))
        .await
        .unwrap();
    let evil = connect(&direct(&db).replace("user=postgres", &format!("user={attacker}"))).await;
    evil.batch_execute(&format!(
        "CREATE TYPE evil.e AS ENUM ('one');
         {}
         CREATE FUNCTION evil.e2i(evil.e) RETURNS int LANGUAGE sql AS 'SELECT coalesce(evil.trap(), 1)';
         CREATE FUNCTION evil.e2b(evil.e) RETURNS bigint LANGUAGE sql AS 'SELECT coalesce(evil.trap(), 1)::bigint';
         CREATE CAST (evil.e AS int) WITH FUNCTION evil.e2i(evil.e) AS IMPLICIT;
         CREATE CAST (evil.e AS bigint) WITH FUNCTION evil.e2b(evil.e) AS IMPLICIT;
         GRANT USAGE ON SCHEMA evil TO PUBLIC;
         CREATE TABLE evil.r (c evil.e REFERENCES app.t (id));
         INSERT INTO evil.r VALUES ('one');",
        trap("evil", "trap", "", "int", &attacker)
    ))
    .await
    .unwrap();
    drop(mallory);
    let proxy = proxy();
    let owner = format!("{db}_owner");
    let e = connect(&proxy.conn_str(&db, &owner))
        .await
        .batch_execute("ALTER TABLE app.t ALTER COLUMN id TYPE bigint")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    assert!(!is_superuser(&admin, &attacker).await);
}

#[tokio::test]
async fn an_index_made_under_a_twins_name_is_not_taken_for_the_twin() {
    let db = fresh_db("rollout_squat");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    mallory
        .batch_execute(
            "CREATE UNIQUE INDEX t_amount ON app.t (amount); CREATE INDEX t_amount_any ON app.t (amount)",
        )
        .await
        .unwrap();
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, &attacker),
        "ALTER TABLE app.t ALTER COLUMN amount TYPE bigint",
    )
    .await;
    let oid: String =
        common::scenario::one_value(&admin, "SELECT 'app.t_amount'::regclass::oid::text").await;
    // The owner makes an index by the twin's name first: partial, so the index
    // that takes t_amount's name at the cutover would be unique only in part.
    mallory
        .batch_execute(&format!(
            "CREATE UNIQUE INDEX pgshift_{id}_new_{oid} ON app.t (amount__pgshift_new) WHERE amount__pgshift_new < 0"
        ))
        .await
        .unwrap();
    // And one by the other twin's name with another access method: same
    // columns, no predicate, but not what `t_amount_any` is.
    let any: String =
        common::scenario::one_value(&admin, "SELECT 'app.t_amount_any'::regclass::oid::text").await;
    mallory
        .batch_execute(&format!(
            "CREATE INDEX pgshift_{id}_new_{any} ON app.t USING hash (amount__pgshift_new)"
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while phase(&admin, id).await.0 != "verified" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            phase(&admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pgshift::rollout::request(&admin, id, pgshift::rollout::Request::Cutover)
        .await
        .unwrap();
    while phase(&admin, id).await.0 != "cut_over" {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{:?}",
            phase(&admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let def: String =
        common::scenario::one_value(&admin, "SELECT pg_get_indexdef('app.t_amount'::regclass)")
            .await;
    assert_eq!(
        def,
        "CREATE UNIQUE INDEX t_amount ON app.t USING btree (amount)"
    );
    let def: String = common::scenario::one_value(
        &admin,
        "SELECT pg_get_indexdef('app.t_amount_any'::regclass)",
    )
    .await;
    assert_eq!(
        def,
        "CREATE INDEX t_amount_any ON app.t USING btree (amount)"
    );
}

#[tokio::test]
async fn an_index_of_a_referencing_table_runs_nothing_in_the_keys_validation() {
    // The attacker owns a table whose key references the owner's (with SELECT
    // on it, so Postgres checks the key with one planned query); an index of
    // theirs computes with an immutable function that takes the session's own
    // role back (RESET ROLE) and then tries to make them superuser. Planning the
    // check of VALIDATE CONSTRAINT folds index expressions: without a look at
    // them, pgshift's validation (as the attacker, in its service session) ran it.
    let db = fresh_db("rollout_fk_index");
    let attacker = format!("{db}_mallory");
    let owner = format!("{db}_owner");
    let (admin, mallory) = owned_table(&db, &owner).await;
    role(&admin, &attacker, "").await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA evil AUTHORIZATION {attacker};
             GRANT USAGE ON SCHEMA app TO {attacker};
             GRANT REFERENCES, SELECT ON app.t TO {attacker};"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    drop(mallory);
    let evil = connect(&direct(&db).replace("user=postgres", &format!("user={attacker}"))).await;
    evil.batch_execute(&format!(
        "CREATE FUNCTION evil.boom() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
         BEGIN
           IF session_user::text <> '{attacker}' THEN
             EXECUTE 'RESET ROLE';
             IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
               EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
             END IF;
           END IF;
           RETURN 1;
         END $f$;
         CREATE FUNCTION evil.konst() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ BEGIN RETURN evil.boom(); END $f$;
         GRANT USAGE ON SCHEMA evil TO PUBLIC;
         CREATE TABLE evil.r (c int REFERENCES app.t (id));
         INSERT INTO evil.r VALUES (1), (2);
         CREATE INDEX r_c ON evil.r ((c + evil.konst()));"
    ))
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!is_superuser(&admin, &attacker).await);
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, &owner),
        "ALTER TABLE app.t ALTER COLUMN id TYPE bigint",
    )
    .await;
    let started = std::time::Instant::now();
    while phase(&admin, id).await.0 != "verified" {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{:?}",
            phase(&admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pgshift::rollout::request(&admin, id, pgshift::rollout::Request::Cutover)
        .await
        .unwrap();
    while phase(&admin, id).await.0 != "cut_over" {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{:?}",
            phase(&admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The driver tries to validate the key again on every pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !is_superuser(&admin, &attacker).await,
        "the index's function ran as the service role"
    );
    let valid: bool = admin
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conrelid = 'evil.r'::regclass AND contype = 'f'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!valid, "pgshift validated a key it cannot check");
}

/// A range type of the owner's whose subtype difference is their own function,
/// under a GiST index of the table: each UPDATE of the backfill that moves a row
/// to another page places its index entry by calling it, as the service role.
/// The start is refused, naming it.
#[tokio::test]
async fn an_index_on_a_range_type_of_the_owners_is_refused() {
    let db = fresh_db("rollout_range");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    mallory
        .batch_execute(&format!(
            "CREATE FUNCTION app.diff(a float8, b float8) RETURNS float8 IMMUTABLE LANGUAGE plpgsql AS $f$
             BEGIN
               IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                 EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
               END IF;
               RETURN a - b;
             END $f$;
             CREATE TYPE app.span AS RANGE (subtype = float8, subtype_diff = app.diff);
             ALTER TABLE app.t ADD COLUMN s app.span;
             UPDATE app.t SET s = app.span(id, id + 1);
             CREATE INDEX ON app.t USING gist (s);"
        ))
        .await
        .unwrap();
    let proxy = proxy();
    let client = connect(&proxy.conn_str(&db, &attacker)).await;
    let sql = "ALTER TABLE app.t ALTER COLUMN amount TYPE bigint";
    let e = client.batch_execute(sql).await.expect_err(sql);
    let text = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{text}");
    assert!(text.contains("app.span"), "{text}");
    assert!(!is_superuser(&admin, &attacker).await);
}

/// Planning a batch folds the expressions of the table's extended statistics:
/// one that calls the owner's own immutable function, added during the
/// backfill (CREATE STATISTICS takes only SHARE UPDATE EXCLUSIVE), stops it.
#[tokio::test]
async fn statistics_added_during_the_backfill_stop_it() {
    let db = fresh_db("rollout_stats");
    let attacker = format!("{db}_mallory");
    let (admin, mallory) = owned_table(&db, &attacker).await;
    let proxy = proxy();
    let id = start(
        &proxy.conn_str(&db, &attacker),
        "ALTER TABLE app.t ALTER COLUMN amount TYPE bigint",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mallory
        .batch_execute(&format!(
            "{}
             ALTER FUNCTION app.trap(int) IMMUTABLE;
             CREATE STATISTICS app.s ON (amount + app.trap(1)), id FROM app.t;",
            trap("app", "trap", "int", "int", &attacker)
        ))
        .await
        .unwrap();
    let mut stopped = None;
    for _ in 0..100 {
        let (p, error) = phase(&admin, id).await;
        if p == "failed" {
            stopped = error;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = stopped.expect("the rollout went on");
    assert!(error.contains("statistics object s"), "{error}");
    assert!(
        !is_superuser(&admin, &attacker).await,
        "the trap ran as the service role"
    );
}

/// A database where `attacker` owns `app.parts` (id, amount), partitioned by
/// range of id with `p1` and what `more` makes, 20,000 rows, and sequence
/// `app.probe`; its rollout to bigint, started through a proxy waiting
/// `lock_ms` for locks, is verified. The attacker's connection string, the
/// proxy and the rollout's id.
async fn verified_parts(
    db: &str,
    attacker: &str,
    more: &str,
    lock_ms: u64,
) -> (Client, String, Proxy, i64) {
    let admin = connect(&direct(db)).await;
    role(&admin, attacker, "").await;
    admin
        .batch_execute(&format!("CREATE SCHEMA app AUTHORIZATION {attacker}"))
        .await
        .unwrap();
    let as_mallory = direct(db).replace("user=postgres", &format!("user={attacker}"));
    connect(&as_mallory)
        .await
        .batch_execute(&format!(
            "CREATE TABLE app.parts (id int PRIMARY KEY, amount int) PARTITION BY RANGE (id);
             CREATE TABLE app.p1 PARTITION OF app.parts FOR VALUES FROM (0) TO (10001);
             {more}
             INSERT INTO app.parts SELECT g, g FROM generate_series(1, 20000) g;
             CREATE SEQUENCE app.probe;"
        ))
        .await
        .unwrap();
    let proxy = paced_proxy(|c| c.ddl.lock_timeout_ms = lock_ms);
    let id = start(
        &proxy.conn_str(db, attacker),
        "ALTER TABLE app.parts ALTER COLUMN amount TYPE bigint",
    )
    .await;
    common::rollouts::wait_phase(&admin, id, "verified", Duration::from_secs(60)).await;
    (admin, as_mallory, proxy, id)
}

/// `app.leak(int)`, immutable: sets `app.probe` to 666 when it runs as anyone
/// but `attacker`.
fn leak(attacker: &str) -> String {
    format!(
        "CREATE FUNCTION app.leak(a int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
         BEGIN
           IF current_user <> '{attacker}' THEN PERFORM pg_catalog.setval('app.probe', 666); END IF;
           RETURN a;
         END $f$;"
    )
}

async fn leaked(admin: &Client) -> bool {
    let value: i64 = admin
        .query_one("SELECT last_value FROM app.probe", &[])
        .await
        .unwrap()
        .get(0);
    value == 666
}

/// A partition left half detached (a `DETACH … CONCURRENTLY` cancelled while a
/// reader held the table) is out of the table for every query and out of
/// `pg_partition_tree`, by which pgshift looks at the code an UPDATE would
/// run; its `pg_inherits` row, rewritten, reads as a new attachment. The
/// cutover waits for the detach to be finished, and nothing of the owner's
/// runs as the service role meanwhile: before, the check of the "new"
/// partition planned a query on it, and planning folded an index's call of
/// the owner's immutable function.
#[tokio::test]
async fn a_half_detached_partition_holds_the_cutover_and_runs_nothing() {
    let db = fresh_db("rollout_detaching");
    let attacker = format!("{db}_mallory");
    let more = "CREATE TABLE app.p2 PARTITION OF app.parts FOR VALUES FROM (10001) TO (20001);";
    let (admin, as_mallory, _proxy, id) = verified_parts(&db, &attacker, more, 200).await;
    let mallory = connect(&as_mallory).await;
    // The reader is the owner: its planning runs the function below as them.
    let reader = connect(&as_mallory).await;
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM app.parts")
        .await
        .unwrap();
    mallory
        .batch_execute("SET statement_timeout = '1s'")
        .await
        .unwrap();
    let cancelled = mallory
        .batch_execute("ALTER TABLE app.parts DETACH PARTITION app.p2 CONCURRENTLY")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&cancelled).as_deref(),
        Some("57014"),
        "{cancelled}"
    );
    reader.batch_execute("COMMIT").await.unwrap();
    mallory
        .batch_execute(&format!(
            "RESET statement_timeout; {}
             CREATE INDEX p2_leak ON app.p2 ((amount + app.leak(1)));",
            leak(&attacker)
        ))
        .await
        .unwrap();
    let pending: bool = admin
        .query_one(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'app.p2'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(pending, "the detach was not left half done");
    pgshift::rollout::request(&admin, id, pgshift::rollout::Request::Cutover)
        .await
        .unwrap();
    let waited = std::time::Instant::now();
    let error = loop {
        let (p, error) = phase(&admin, id).await;
        assert_eq!(p, "verified", "{error:?}");
        if let Some(e) = error.filter(|e| e.contains("FINALIZE")) {
            break e;
        }
        assert!(waited.elapsed() < Duration::from_secs(30), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        error.contains("ALTER TABLE app.parts DETACH PARTITION app.p2 FINALIZE"),
        "{error}"
    );
    assert!(
        !leaked(&admin).await,
        "the owner's function ran as the service role"
    );
    mallory
        .batch_execute("ALTER TABLE app.parts DETACH PARTITION app.p2 FINALIZE")
        .await
        .unwrap();
    // The request stands: the cutover goes on by itself, on what was verified.
    let waited = std::time::Instant::now();
    loop {
        let (p, error) = phase(&admin, id).await;
        if p == "cut_over" {
            break;
        }
        assert_eq!(p, "verified", "{error:?}");
        assert!(waited.elapsed() < Duration::from_secs(60), "{error:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !leaked(&admin).await,
        "the owner's function ran as the service role"
    );
    let types: Vec<String> = admin
        .query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid IN ('app.parts'::regclass, 'app.p1'::regclass) AND attname = 'amount'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["bigint", "bigint"]);
}

/// The owner's sessions, one by one.
async fn sessions(url: &str, n: usize) -> Vec<Client> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(connect(url).await);
    }
    all
}

/// Waits until a backend whose query contains `text` waits for a lock.
async fn waiting(admin: &Client, text: &str) {
    let waited = std::time::Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                &[&text],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "nothing waits: {text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A partition attached under a partitioned partition after the verify is
/// checked on its own, under the table's lock. The owner lines a `DETACH …
/// CONCURRENTLY` of the partitioned partition up in the lock queue ahead of
/// that check: the detach marks it half detached before the check gets the
/// lock. The new partition keeps its own attachment, but is out of what the
/// check looked at: it must not be planned (its index calls the owner's
/// immutable function).
#[tokio::test]
async fn a_partition_under_one_detached_ahead_of_its_check_runs_nothing() {
    let db = fresh_db("rollout_detach_under");
    let attacker = format!("{db}_mallory");
    let more = "CREATE TABLE app.q PARTITION OF app.parts FOR VALUES FROM (10001) TO (30001) PARTITION BY RANGE (id);
                CREATE TABLE app.q1 PARTITION OF app.q FOR VALUES FROM (10001) TO (20001);";
    let (admin, as_mallory, _proxy, id) = verified_parts(&db, &attacker, more, 5_000).await;
    let mut owner = sessions(&as_mallory, 3).await;
    let (mallory, holder, detacher) = (owner.remove(0), owner.remove(0), owner.remove(0));
    mallory
        .batch_execute(&format!(
            "{}
             CREATE TABLE app.r (LIKE app.parts);
             INSERT INTO app.r SELECT g, g, g FROM generate_series(20001, 20100) g;
             CREATE INDEX r_leak ON app.r ((amount + app.leak(1)));
             ALTER TABLE app.q ATTACH PARTITION app.r FOR VALUES FROM (20001) TO (30001);",
            leak(&attacker)
        ))
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE app.parts IN SHARE MODE")
        .await
        .unwrap();
    let detach = tokio::spawn(async move {
        detacher
            .batch_execute("ALTER TABLE app.parts DETACH PARTITION app.q CONCURRENTLY")
            .await
    });
    waiting(&admin, "DETACH PARTITION app.q CONCURRENTLY").await;
    pgshift::rollout::request(&admin, id, pgshift::rollout::Request::Cutover)
        .await
        .unwrap();
    // The check's lock queues behind the detach; then the way is cleared.
    waiting(&admin, "IN SHARE UPDATE EXCLUSIVE MODE").await;
    holder.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), detach)
        .await
        .expect("the detach did not end")
        .unwrap()
        .unwrap();
    common::rollouts::wait_phase(&admin, id, "cut_over", Duration::from_secs(60)).await;
    assert!(
        !leaked(&admin).await,
        "the owner's function ran as the service role"
    );
    let attached: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'app.parts'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attached, 1, "q was not detached");
}
