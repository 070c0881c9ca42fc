//! Attacks on pgshift's service role, each in a database of its own. pgshift runs
//! here with its default service role, `postgres`, a superuser: every attack tries
//! to make pgshift run something the attacker wrote with that role's privileges,
//! and every test ends by checking that the attacker is still not a superuser.
//! Each of them made the attacker superuser on the code before the fix.

mod common;

use common::attack::{is_superuser, role, trap};
use common::scenario::{direct, eventually, one_value, proxy};
use common::{connect, fresh_db, sqlstate, Proxy};
use std::time::Duration;
use tokio_postgres::Client;

/// A client of `proxy` logged in as `user`.
async fn through(proxy: &Proxy, db: &str, user: &str) -> Client {
    connect(&proxy.conn_str(db, user)).await
}

/// A transaction-wrapped CREATE INDEX through `client`: its CONCURRENTLY build is
/// deferred until the COMMIT. Waits until pgshift recorded it as done.
async fn deferred_index(client: &Client, admin: &Client, table: &str, index: &str) {
    let name = index.rsplit('.').next().unwrap();
    client
        .batch_execute(&format!(
            "BEGIN; CREATE INDEX {name} ON {table} (c); COMMIT"
        ))
        .await
        .unwrap();
    eventually(
        admin,
        &format!(
            "SELECT state FROM pgshift.deferred WHERE statement LIKE '%{name}%' ORDER BY id DESC LIMIT 1"
        ),
        "done",
    )
    .await;
    assert_eq!(
        one_value(
            admin,
            &format!(
                "SELECT indisvalid::text FROM pg_index WHERE indexrelid = '{index}'::regclass"
            )
        )
        .await,
        "true"
    );
}

/// Steps an attacker would like the service role to run, in every shape.
fn forged_steps(attacker: &str) -> Vec<String> {
    [
        format!("RESET ROLE; ALTER ROLE {attacker} SUPERUSER"),
        format!("SET ROLE postgres; ALTER ROLE {attacker} SUPERUSER"),
        format!("SET SESSION AUTHORIZATION postgres; ALTER ROLE {attacker} SUPERUSER"),
        format!("RESET ALL; ALTER ROLE {attacker} SUPERUSER"),
        format!("SELECT 1; ALTER ROLE {attacker} SUPERUSER"),
    ]
    .into_iter()
    .map(|sql| {
        serde_json::json!([{
            "sql": sql, "kind": "Sql", "lock": "AccessShare",
            "long": false, "placement": "OutsideTransaction"
        }])
        .to_string()
    })
    .collect()
}

/// 1. Rows in pgshift.deferred are never executed, and clients cannot write the
/// table at all: only `pgshift.defer` (which stores its arguments) is theirs.
#[tokio::test]
async fn forged_deferred_rows_run_nowhere() {
    let db = fresh_db("forged");
    let mallory = format!("{db}_mallory");
    let admin = connect(&direct(&db)).await;
    role(&admin, &mallory, "").await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE t (c int); GRANT ALL ON t TO {mallory}; GRANT CREATE ON SCHEMA public TO {mallory}"
        ))
        .await
        .unwrap();
    let p = proxy();
    // pgshift's schema exists once somebody deferred work.
    deferred_index(&through(&p, &db, "postgres").await, &admin, "t", "t_first").await;

    let m = through(&p, &db, &mallory).await;
    // What the attacker tries is collected first and judged after the superuser
    // check, so that on code that lets them in the test fails on the escalation.
    let mut refused = Vec::new();
    for steps in forged_steps(&mallory) {
        let insert = m
            .batch_execute(&format!(
                "INSERT INTO pgshift.deferred (statement, rule, steps, search_path) \
                 VALUES ('x', 'create-index', '{steps}', 'public')"
            ))
            .await;
        refused.push((
            "INSERT".to_string(),
            insert.err().and_then(|e| sqlstate(&e)),
        ));
        // The function records whatever it is given, as data, for a role the
        // caller may use; claiming another role records nothing.
        let _ = m
            .batch_execute(&format!(
                "SELECT pgshift.defer('x', 'create-index', '{steps}', 'public', '{mallory}')"
            ))
            .await;
        let claimed = m
            .simple_query(&format!(
                "SELECT pgshift.defer('x', 'create-index', '{steps}', 'public', 'postgres') IS NULL"
            ))
            .await;
        let nothing = matches!(claimed.as_deref(), Ok([_, tokio_postgres::SimpleQueryMessage::Row(r), ..]) if r.get(0) == Some("t"));
        refused.push((
            "defer as postgres".to_string(),
            nothing.then(|| "42501".to_string()),
        ));
    }
    for sql in [
        "UPDATE pgshift.deferred SET state = 'pending'",
        "DELETE FROM pgshift.deferred",
        "SELECT * FROM pgshift.deferred",
    ] {
        let e = m.batch_execute(sql).await.err();
        refused.push((sql.to_string(), e.and_then(|e| sqlstate(&e))));
    }
    drop(m);
    eventually(
        &admin,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{mallory}'"),
        "0",
    )
    .await;
    // Everything that could pick rows up: deferred work of others, a fresh proxy
    // that scans the database when it first sees it.
    deferred_index(&through(&p, &db, "postgres").await, &admin, "t", "t_second").await;
    drop(p);
    let fresh = proxy();
    let _someone = through(&fresh, &db, "postgres").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!is_superuser(&admin, &mallory).await);
    for (what, code) in refused {
        assert_eq!(code.as_deref(), Some("42501"), "{what}");
    }
    eventually(
        &admin,
        &format!("SELECT count(*) FROM pgshift.deferred WHERE username = '{mallory}' AND state = 'interrupted'"),
        "5",
    )
    .await;
    assert!(!is_superuser(&admin, &mallory).await);
    let ran = one_value(
        &admin,
        &format!("SELECT count(*) FROM pgshift.deferred WHERE username = '{mallory}' AND (next_step > 0 OR state = 'done')"),
    )
    .await;
    assert_eq!(ran, "0");
}

/// 2. A migration's own search_path, with functions named like the ones pgshift's
/// bookkeeping calls, must not reach the service connection.
#[tokio::test]
async fn a_migrations_search_path_never_reaches_the_service_role() {
    let db = fresh_db("spath");
    let app = format!("{db}_app");
    let admin = connect(&direct(&db)).await;
    role(&admin, &app, "").await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA app AUTHORIZATION {app}; CREATE TABLE app.t (c int); ALTER TABLE app.t OWNER TO {app}"
        ))
        .await
        .unwrap();
    let p = proxy();
    let client = through(&p, &db, &app).await;
    // Every function name pgshift's bookkeeping and in-band queries use, shadowed.
    let mut setup = String::from("SET search_path = app, pg_catalog;");
    for (name, args, returns) in [
        ("now", "", "timestamptz"),
        ("to_regclass", "text", "regclass"),
        ("current_setting", "text", "text"),
        ("set_config", "text, text, boolean", "text"),
        ("pg_backend_pid", "", "int"),
        ("format", "text, text", "text"),
        ("count", "", "bigint"),
        ("pg_try_advisory_xact_lock", "bigint", "boolean"),
    ] {
        setup.push_str(&trap("app", name, args, returns, &app));
    }
    client.batch_execute(&setup).await.unwrap();
    // An ordinary transaction-wrapped migration, run with that search_path.
    client
        .batch_execute("BEGIN; CREATE INDEX t_c ON t (c); COMMIT")
        .await
        .unwrap();
    eventually(
        &admin,
        "SELECT state FROM pgshift.deferred ORDER BY id DESC LIMIT 1",
        "done",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!is_superuser(&admin, &app).await);
    // The journal writer and a scan have had their turn too.
    client
        .batch_execute("CREATE INDEX t_c2 ON t (c)")
        .await
        .unwrap();
    eventually(&admin, "SELECT count(*) FROM pgshift.ddl_journal", "3").await;
    assert!(!is_superuser(&admin, &app).await);
    let recorded = one_value(&admin, "SELECT search_path FROM pgshift.deferred").await;
    assert_eq!(recorded, "app, pg_catalog");
}

/// 3. The author's own code inside a legitimate deferred step (a DEFAULT in a
/// backfill, a CHECK in a VALIDATE) runs in the author's session, where RESET ROLE
/// and its friends lead back to the author.
#[tokio::test]
async fn the_authors_code_in_deferred_steps_runs_as_the_author() {
    let db = fresh_db("author");
    let app = format!("{db}_app");
    let admin = connect(&direct(&db)).await;
    role(&admin, &app, "").await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA app AUTHORIZATION {app}; GRANT CREATE ON SCHEMA public TO {app}"
        ))
        .await
        .unwrap();
    let p = proxy();
    let client = through(&p, &db, &app).await;
    let escalate = format!(
        "BEGIN
           BEGIN EXECUTE 'RESET ROLE'; EXECUTE 'ALTER ROLE {app} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE 'SET SESSION AUTHORIZATION postgres'; EXECUTE 'ALTER ROLE {app} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE 'RESET ALL'; EXECUTE 'SET ROLE postgres'; EXECUTE 'ALTER ROLE {app} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
           RETURN 1;
         END"
    );
    client
        .batch_execute(&format!(
            "CREATE TABLE app.t (id int, c int);
             INSERT INTO app.t SELECT g, g FROM generate_series(1, 100) g;
             CREATE FUNCTION app.evil() RETURNS int LANGUAGE plpgsql VOLATILE AS $f${escalate}$f$;
             CREATE FUNCTION app.evil_check(int) RETURNS boolean LANGUAGE plpgsql AS $f$BEGIN PERFORM app.evil(); RETURN true; END$f$;"
        ))
        .await
        .unwrap();
    client
        .batch_execute(
            "BEGIN;
             ALTER TABLE app.t ADD COLUMN d int DEFAULT app.evil();
             ALTER TABLE app.t ADD CONSTRAINT t_ok CHECK (app.evil_check(c));
             COMMIT",
        )
        .await
        .unwrap();
    eventually(
        &admin,
        "SELECT string_agg(state, ',' ORDER BY id) FROM pgshift.deferred",
        "done,done",
    )
    .await;
    // The work was done, by the author.
    assert_eq!(
        one_value(&admin, "SELECT count(*) FROM app.t WHERE d = 1").await,
        "100"
    );
    assert_eq!(
        one_value(
            &admin,
            "SELECT convalidated::text FROM pg_constraint WHERE conname = 't_ok'"
        )
        .await,
        "true"
    );
    assert!(!is_superuser(&admin, &app).await);
}

/// 4. The database's owner sets the database's search_path and plants functions:
/// the service connection pins its own in the startup packet.
#[tokio::test]
async fn database_settings_do_not_reach_the_service_role() {
    let db = fresh_db("dbset");
    let owner = format!("{db}_owner");
    let admin = connect(&direct(&db)).await;
    role(&admin, &owner, "").await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} OWNER TO {owner}; GRANT CREATE ON SCHEMA public TO {owner}; \
             CREATE TABLE t (c int); ALTER TABLE t OWNER TO {owner}"
        ))
        .await
        .unwrap();
    let o = connect(&direct(&db).replace("user=postgres", &format!("user={owner}"))).await;
    let mut plant = format!("ALTER DATABASE {db} SET search_path = public, pg_catalog;");
    for (name, args, returns) in [
        ("to_regclass", "text", "regclass"),
        ("now", "", "timestamptz"),
        ("current_setting", "text", "text"),
        ("obj_description", "oid, name", "text"),
        ("format", "text, text", "text"),
    ] {
        plant.push_str(&trap("public", name, args, returns, &owner));
    }
    o.batch_execute(&plant).await.unwrap();
    // A fresh proxy: its first session scans, a deferral creates the schema, the
    // journal is written.
    let p = proxy();
    let client = through(&p, &db, &owner).await;
    let deferral = client
        .batch_execute("BEGIN; CREATE INDEX t_c ON t (c); COMMIT")
        .await;
    let _ = client.batch_execute("ROLLBACK").await;
    client
        .batch_execute("CREATE INDEX t_c2 ON t (c)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!is_superuser(&admin, &owner).await);
    deferral.unwrap();
    eventually(&admin, "SELECT count(*) FROM pgshift.ddl_journal", "3").await;
    assert!(!is_superuser(&admin, &owner).await);
}

/// 5. A schema named pgshift that pgshift did not make is refused: nothing is
/// written there, a client that needs it gets 58000 with a HINT.
#[tokio::test]
async fn a_squatted_schema_is_refused() {
    let db = fresh_db("squat");
    let squatter = format!("{db}_squatter");
    let admin = connect(&direct(&db)).await;
    role(&admin, &squatter, "").await;
    admin
        .batch_execute(&format!(
            "GRANT CREATE ON DATABASE {db} TO {squatter}; CREATE TABLE t (c int)"
        ))
        .await
        .unwrap();
    let s = connect(&direct(&db).replace("user=postgres", &format!("user={squatter}"))).await;
    s.batch_execute(&format!(
        "CREATE SCHEMA pgshift;
         CREATE TABLE pgshift.ddl_journal (id bigserial, at timestamptz, session_id bigint, username text,
             statement text, rule text, policy text, outcome text, steps jsonb, error text, duration_ms bigint);
         CREATE FUNCTION pgshift.gotcha() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
             EXECUTE 'ALTER ROLE {squatter} SUPERUSER';
           END IF;
           RETURN NEW;
         END $f$;
         CREATE TRIGGER gotcha BEFORE INSERT ON pgshift.ddl_journal FOR EACH ROW EXECUTE FUNCTION pgshift.gotcha();
         GRANT ALL ON SCHEMA pgshift TO PUBLIC; GRANT ALL ON ALL TABLES IN SCHEMA pgshift TO PUBLIC;"
    ))
    .await
    .unwrap();
    let p = proxy();
    let client = through(&p, &db, "postgres").await;
    // Journaled statements (autocommit rewrite) and a deferral.
    client
        .batch_execute("CREATE INDEX t_c ON t (c)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let deferral = client.batch_execute("CREATE INDEX t_c2 ON t (c)").await;
    client.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!is_superuser(&admin, &squatter).await);
    let e = deferral.unwrap_err();
    let db_err = e.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "58000", "{e:?}");
    assert!(
        db_err.message().contains("belongs to"),
        "{}",
        db_err.message()
    );
    assert!(db_err.hint().is_some_and(|h| h.contains("service role")));
    assert_eq!(
        one_value(&admin, "SELECT count(*) FROM pgshift.ddl_journal").await,
        "0"
    );
}

/// 5b. pgshift's own schema, with something added later that would run on its
/// writes (by a superuser here: nobody else could): refused all the same.
#[tokio::test]
async fn objects_pgshift_did_not_make_are_refused() {
    let db = fresh_db("planted");
    let admin = connect(&direct(&db)).await;
    admin.batch_execute("CREATE TABLE t (c int)").await.unwrap();
    let p = proxy();
    let client = through(&p, &db, "postgres").await;
    deferred_index(&client, &admin, "t", "t_c").await;
    drop(client);
    drop(p);
    admin
        .batch_execute(
            "CREATE FUNCTION public.noisy() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN RAISE NOTICE 'ran'; RETURN NEW; END$f$;
             CREATE TRIGGER noisy BEFORE INSERT ON pgshift.ddl_journal FOR EACH ROW EXECUTE FUNCTION public.noisy();
             ALTER TABLE pgshift.deferred ALTER COLUMN error SET DEFAULT 'x';
             CREATE TABLE public.kid () INHERITS (pgshift.deferred);
             CREATE EXTENSION citext SCHEMA pgshift;
             ALTER TABLE pgshift.ddl_journal DROP CONSTRAINT ddl_journal_pkey;
             CREATE UNIQUE INDEX ddl_journal_pkey ON pgshift.ddl_journal ((id + 0));",
        )
        .await
        .unwrap();
    let p = proxy();
    let client = through(&p, &db, "postgres").await;
    client.batch_execute("BEGIN").await.unwrap();
    let e = client
        .batch_execute("CREATE INDEX t_c2 ON t (c)")
        .await
        .unwrap_err();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&e).as_deref(), Some("58000"), "{e:?}");
    for planted in [
        "trigger noisy",
        "kid inherits from pgshift.deferred",
        "extension citext",
        "constraint ddl_journal_pkey is missing",
        "index CREATE UNIQUE INDEX ddl_journal_pkey ON pgshift.ddl_journal USING btree (((id + 0)))",
    ] {
        assert!(message.contains(planted), "{planted}: {message}");
    }
    assert!(
        message.contains("default 'x'::text on deferred.error"),
        "{message}"
    );
}

/// The recommended setup (README): a service role with no superuser, no
/// membership in application roles, CONNECT and CREATE on the database.
#[tokio::test]
async fn a_least_privilege_service_role_is_enough() {
    let db = fresh_db("leastpriv");
    let svc = format!("{db}_svc");
    let app = format!("{db}_app");
    let admin = connect(&direct(&db)).await;
    role(&admin, &svc, "NOSUPERUSER NOCREATEDB NOCREATEROLE").await;
    role(&admin, &app, "").await;
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
             GRANT CONNECT, CREATE ON DATABASE {db} TO {svc};
             GRANT CONNECT ON DATABASE {db} TO {app};
             CREATE SCHEMA app AUTHORIZATION {app}"
        ))
        .await
        .unwrap();
    let service_user = svc.clone();
    let p = Proxy::start_with(move |c| {
        c.upstream.service_user = service_user;
        c.ddl.lock_timeout_ms = 200;
    });
    let client = through(&p, &db, &app).await;
    client
        .batch_execute("SET search_path = app; CREATE TABLE t (c int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    deferred_index(&client, &admin, "app.t", "app.t_c").await;
    client
        .batch_execute("ALTER TABLE t ADD CONSTRAINT t_pos CHECK (c > 0)")
        .await
        .unwrap();
    eventually(&admin, "SELECT count(*) FROM pgshift.ddl_journal", "3").await;
    assert_eq!(
        one_value(
            &admin,
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgshift'"
        )
        .await,
        svc
    );
    assert_eq!(
        one_value(&admin, "SELECT username FROM pgshift.deferred").await,
        app
    );
}
