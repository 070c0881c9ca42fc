//! The `pgshift` schema in each target database: its tables, created (or brought
//! up to date) by the service role, and the check that runs before pgshift reads or
//! writes anything there. A schema pgshift does not own, or one that carries a
//! trigger, rule, policy, default, constraint, index or function pgshift did not
//! create, is refused: writing to it could run someone else's code as the service
//! role.

use super::service::{self, ServiceError};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Marks the schema's layout; an older one is upgraded in place.
const VERSION: &str = "pgshift state, schema version 10";

/// Advisory lock (transaction scope) that serializes creating and upgrading the
/// schema between proxies. Anyone can take it, so it is only ever tried.
const SCHEMA_LOCK: i64 = 0x7067_7368_0000_0001;

/// How long pgshift tries to get [`SCHEMA_LOCK`] before giving up.
const SCHEMA_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The body of `pgshift.defer`, compared character by character when verifying.
/// A client's session calls it inside its own transaction, so the row exists
/// exactly when that transaction (and savepoint) commits. It only stores its
/// arguments, size-limited, and only a role the caller may act as: nothing ever
/// executes a row. (The state, `recorded`, is one no older pgshift runs.)
pub const DEFER_BODY: &str = "
INSERT INTO pgshift.deferred (username, role, search_path, statement, rule, steps, backend_pid, backend_start)
SELECT session_user, $5, $4, $1, $2, $3, pg_catalog.pg_backend_pid(),
       (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid())
WHERE pg_catalog.pg_has_role(session_user, $5, 'MEMBER')
  AND pg_catalog.octet_length($1) + pg_catalog.octet_length($3::pg_catalog.text) <= 33554432
RETURNING id
";

/// One rollout under way per column: two proxies (or two consoles) starting
/// one at the same moment both pass their checks, and the second INSERT finds
/// the first's row in this index.
const ONE_PER_COLUMN: &str = "CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_per_column \
     ON pgshift.rollouts (table_oid, column_name) WHERE phase NOT IN ('finished', 'rolled_back')";

/// Whether [`ONE_PER_COLUMN`] exists, and the ids of the rollouts that keep it
/// out (two or more under way on one column, left by such a race before it).
const ONE_PER_COLUMN_STATE: &str = "
SELECT pg_catalog.to_regclass('pgshift.rollouts_one_per_column') IS NOT NULL,
       (SELECT pg_catalog.string_agg(ids, '; ') FROM (
            SELECT pg_catalog.string_agg(id::text, ', ' ORDER BY id) AS ids FROM pgshift.rollouts
             WHERE phase NOT IN ('finished', 'rolled_back') GROUP BY table_oid, column_name HAVING count(*) > 1) t)";

/// Builds [`ONE_PER_COLUMN`] where it is missing, unless rollouts keep it out
/// (logged: each check of the schema tries again, so it is built once all but
/// one of them are over). A failure (a lock not granted in time, another proxy
/// building it too) is logged and tried again at the next check. Where it
/// exists, one read and nothing locked.
pub async fn one_per_column(client: &Client, database: &str) {
    let state = match service::query(client, ONE_PER_COLUMN_STATE, &[]).await {
        Ok(rows) => rows
            .first()
            .map(|r| (r.get::<_, bool>(0), r.get::<_, Option<String>>(1))),
        Err(e) => {
            tracing::warn!(database, reason = %e.reason, "pgshift could not read whether it keeps one rollout per column; it looks again at the next check");
            return;
        }
    };
    match state {
        Some((true, _)) | None => {}
        Some((false, Some(ids))) => {
            tracing::warn!(database, rollouts = %ids, "more than one rollout is under way on one column (started together before pgshift kept one per column): roll back all but one; until then two starts of one column are not kept apart");
        }
        Some((false, None)) => {
            if let Err(e) = batch(client, ONE_PER_COLUMN).await {
                tracing::warn!(database, reason = %e.reason, "pgshift could not build its index of one rollout per column; it tries again at the next check");
            }
        }
    }
}

/// Everything pgshift keeps, idempotent: a fresh schema and one from version 1
/// (whose client-writable table and trigger are removed) end the same.
fn script() -> String {
    format!(
        "
CREATE TABLE IF NOT EXISTS pgshift.ddl_journal (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    session_id bigint,
    username text,
    statement text NOT NULL,
    rule text,
    policy text,
    outcome text NOT NULL,
    steps jsonb NOT NULL DEFAULT '[]',
    error text,
    duration_ms bigint
);
CREATE TABLE IF NOT EXISTS pgshift.deferred (
    id bigserial PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT pg_catalog.now(),
    username text NOT NULL,
    search_path text NOT NULL,
    statement text NOT NULL,
    rule text NOT NULL,
    steps jsonb NOT NULL,
    state text NOT NULL DEFAULT 'recorded',
    next_step int NOT NULL DEFAULT 0,
    error text,
    updated timestamptz
);
DROP TRIGGER IF EXISTS deferred_author ON pgshift.deferred;
DROP FUNCTION IF EXISTS pgshift.deferred_author();
ALTER TABLE pgshift.deferred
    ALTER COLUMN username DROP DEFAULT,
    ALTER COLUMN search_path DROP DEFAULT,
    ALTER COLUMN state SET DEFAULT 'recorded',
    ADD COLUMN IF NOT EXISTS role text,
    ADD COLUMN IF NOT EXISTS backend_pid int,
    ADD COLUMN IF NOT EXISTS backend_start timestamptz,
    DROP CONSTRAINT IF EXISTS deferred_state_check;
-- Version 1 ran rows in states pending and running on the service connection;
-- nothing runs them now, and no row is ever in those states again.
UPDATE pgshift.deferred SET state = 'interrupted' WHERE state NOT IN ('done', 'failed');
ALTER TABLE pgshift.deferred ADD CONSTRAINT deferred_state_check
    CHECK (state IN ('recorded', 'working', 'done', 'failed', 'interrupted'));
CREATE INDEX IF NOT EXISTS deferred_open ON pgshift.deferred (id) WHERE state IN ('recorded', 'working');
CREATE TABLE IF NOT EXISTS pgshift.rollouts (
    id bigserial PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated timestamptz,
    username text NOT NULL,
    statement text NOT NULL,
    table_oid oid NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    column_name text NOT NULL,
    new_column text NOT NULL,
    old_type text NOT NULL,
    new_type text NOT NULL,
    transform text NOT NULL,
    uses text[] NOT NULL,
    key_columns text[] NOT NULL,
    not_null boolean NOT NULL,
    column_default text,
    phase text NOT NULL,
    request text,
    paused boolean NOT NULL,
    rows_per_second bigint NOT NULL,
    rows_done bigint NOT NULL,
    rows_total bigint,
    last_key text[],
    mismatches bigint,
    driver text,
    heartbeat timestamptz,
    error text
);
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS indexes text[];
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS throttle_ms bigint;
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS repaired bigint;
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS replica_lag bigint;
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS kind text;
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS fill_before text;
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS lock_window bigint;
ALTER TABLE pgshift.rollouts ADD COLUMN IF NOT EXISTS batch_rows bigint;
CREATE TABLE IF NOT EXISTS pgshift.proxies (
    proxy text PRIMARY KEY,
    heartbeat timestamptz NOT NULL,
    holding text[] NOT NULL
);
REVOKE ALL ON ALL TABLES IN SCHEMA pgshift FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgshift FROM PUBLIC;
CREATE OR REPLACE FUNCTION pgshift.defer(text, text, jsonb, text, text) RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $pgshift${DEFER_BODY}$pgshift$;
REVOKE ALL ON FUNCTION pgshift.defer(text, text, jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshift.defer(text, text, jsonb, text, text) TO PUBLIC;
GRANT USAGE ON SCHEMA pgshift TO PUBLIC;
COMMENT ON SCHEMA pgshift IS '{VERSION}';
"
    )
}

/// What a database's schema looks like before pgshift touches it.
enum Found {
    Missing,
    Foreign(String),
    Current,
    Older,
}

async fn found(client: &Client, owner: &str, database: &str) -> Result<Found, ServiceError> {
    let rows = service::query(
        client,
        "SELECT r.rolname::text, pg_catalog.obj_description(n.oid, 'pg_namespace') \
         FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner \
         WHERE n.nspname = 'pgshift'",
        &[],
    )
    .await
    .map_err(|e| query_failed(database, e))?;
    let Some(row) = rows.first() else {
        return Ok(Found::Missing);
    };
    let (schema_owner, comment): (String, Option<String>) = (row.get(0), row.get(1));
    Ok(if schema_owner != owner {
        Found::Foreign(format!(
            "schema pgshift belongs to {schema_owner:?}, not to {owner:?}"
        ))
    } else if comment.as_deref() == Some(VERSION) {
        Found::Current
    } else if version_of(comment.as_deref()) > version_of(Some(VERSION)) {
        // Written back to this version's, a newer pgshift would upgrade it again
        // (and the two would take turns).
        Found::Foreign(format!(
            "schema pgshift is {:?}, made by a newer pgshift than this one ({VERSION:?})",
            comment.unwrap_or_default()
        ))
    } else {
        Found::Older
    })
}

/// The number in a schema comment such as [`VERSION`] (0 when it has none).
fn version_of(comment: Option<&str>) -> u32 {
    comment
        .and_then(|c| c.strip_prefix("pgshift state, schema version "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Creates or upgrades the schema if needed, then verifies it. `owner` is the
/// role the schema and everything in it must belong to.
pub async fn ensure(client: &Client, owner: &str, database: &str) -> Result<(), ServiceError> {
    match found(client, owner, database).await? {
        Found::Current => {}
        Found::Foreign(reason) => return Err(refused(database, reason)),
        Found::Missing | Found::Older => prepare(client, owner, database).await?,
    }
    one_per_column(client, database).await;
    verify(client, owner, database).await
}

/// The check alone: anything in schema pgshift that pgshift did not make refuses
/// the database.
pub async fn verify(client: &Client, owner: &str, database: &str) -> Result<(), ServiceError> {
    let problems = problems(client, owner, database).await?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refused(database, problems.join("; ")))
    }
}

/// True when the schema exists and passes the check (for the scan, which must not
/// create the schema in every database a client visits).
pub async fn present(client: &Client, owner: &str, database: &str) -> Result<bool, ServiceError> {
    match found(client, owner, database).await? {
        Found::Missing => Ok(false),
        _ => ensure(client, owner, database).await.map(|()| true),
    }
}

/// Runs the script in one transaction holding [`SCHEMA_LOCK`]. The lock is only
/// tried, and a DDL that waits longer than the connection's lock_timeout is rolled
/// back; both are retried until [`SCHEMA_LOCK_WAIT`] is over.
async fn prepare(client: &Client, owner: &str, database: &str) -> Result<(), ServiceError> {
    let started = Instant::now();
    let fail = |e: BatchError| ServiceError::Schema {
        database: database.into(),
        reason: e.reason,
    };
    loop {
        let locked = batch(
            client,
            &format!("BEGIN; SELECT pg_catalog.pg_try_advisory_xact_lock({SCHEMA_LOCK})::text"),
        )
        .await
        .map_err(fail)?;
        let outcome = if locked.as_deref() == Some("true") {
            // Looked at again under the lock: another proxy may have just made it.
            match found(client, owner, database).await {
                Ok(Found::Current) => Ok(()),
                Ok(Found::Foreign(reason)) => Err(Err(refused(database, reason))),
                Ok(Found::Missing) => match batch(client, "CREATE SCHEMA pgshift").await {
                    Ok(_) => batch(client, &script()).await.map(drop).map_err(Ok),
                    Err(e) => Err(Ok(e)),
                },
                Ok(Found::Older) => batch(client, &script()).await.map(drop).map_err(Ok),
                Err(e) => Err(Err(e)),
            }
        } else {
            Err(Ok(BatchError {
                reason: format!(
                    "another session holds pgshift's schema lock (advisory lock {SCHEMA_LOCK})"
                ),
                code: Some("55P03".into()),
            }))
        };
        let end = if outcome.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        batch(client, end).await.map_err(fail)?;
        match outcome {
            Ok(()) => {
                tracing::info!(database, "pgshift schema ready");
                return Ok(());
            }
            Err(Ok(e)) if e.code.as_deref() == Some("55P03") => {
                if started.elapsed() >= SCHEMA_LOCK_WAIT {
                    return Err(fail(BatchError {
                        reason: format!("{} for {} s", e.reason, SCHEMA_LOCK_WAIT.as_secs()),
                        code: e.code,
                    }));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Ok(e)) => return Err(fail(e)),
            Err(Err(e)) => return Err(e),
        }
    }
}

/// A failed batch: the server's message and SQLSTATE, if it answered.
#[derive(Debug)]
struct BatchError {
    reason: String,
    code: Option<String>,
}

/// Runs a simple-protocol batch; returns the first value of the last row.
async fn batch(client: &Client, sql: &str) -> Result<Option<String>, BatchError> {
    use tokio_postgres::SimpleQueryMessage as M;
    let limit = service::STATEMENT_TIMEOUT + Duration::from_secs(2);
    let messages = tokio::time::timeout(limit, client.simple_query(sql))
        .await
        .map_err(|_| BatchError {
            reason: format!("no answer within {} s", limit.as_secs()),
            code: None,
        })?
        .map_err(|e| BatchError {
            reason: service::db_reason(&e),
            code: e.code().map(|c| c.code().to_string()),
        })?;
    Ok(messages.iter().rev().find_map(|m| match m {
        M::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    }))
}

fn refused(database: &str, reason: String) -> ServiceError {
    tracing::error!(
        database,
        reason,
        "pgshift refuses its schema in this database"
    );
    ServiceError::Refused {
        database: database.into(),
        reason,
    }
}

fn query_failed(database: &str, e: service::QueryError) -> ServiceError {
    ServiceError::Query {
        database: database.into(),
        reason: e.reason,
    }
}

/// Everything in schema pgshift that pgshift did not make, one line each.
async fn problems(
    client: &Client,
    owner: &str,
    database: &str,
) -> Result<Vec<String>, ServiceError> {
    let rows = service::query(client, CHECK, &[&owner, &DEFER_BODY])
        .await
        .map_err(|e| query_failed(database, e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// One row per problem. $1: the owner every object must have; $2: DEFER_BODY.
/// Only the objects pgshift uses can run code when it writes (its two tables, their
/// sequences and indexes, and `pgshift.defer`); objects of other owners anywhere in
/// the schema, tables inheriting from pgshift's and extensions living there are
/// refused too, since pgshift never made them.
const CHECK: &str = r#"
WITH s AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgshift'),
ours(relname, relkind) AS (VALUES
    ('ddl_journal', 'r'), ('ddl_journal_id_seq', 'S'), ('ddl_journal_pkey', 'i'),
    ('rollouts', 'r'), ('rollouts_id_seq', 'S'), ('rollouts_pkey', 'i'), ('rollouts_one_per_column', 'i'),
    ('deferred', 'r'), ('deferred_id_seq', 'S'), ('deferred_pkey', 'i'), ('deferred_open', 'i'),
    ('proxies', 'r'), ('proxies_pkey', 'i')),
tables AS (SELECT c.oid FROM pg_catalog.pg_class c, s
           WHERE c.relnamespace = s.oid AND c.relname IN ('ddl_journal', 'deferred', 'rollouts', 'proxies')),
defaults(relname, attname, expr) AS (VALUES
    ('ddl_journal', 'id', 'nextval(''pgshift.ddl_journal_id_seq''::regclass)'),
    ('ddl_journal', 'at', 'now()'),
    ('ddl_journal', 'steps', '''[]''::jsonb'),
    ('deferred', 'id', 'nextval(''pgshift.deferred_id_seq''::regclass)'),
    ('deferred', 'created', 'now()'),
    ('deferred', 'state', '''recorded''::text'),
    ('deferred', 'next_step', '0'),
    ('rollouts', 'id', 'nextval(''pgshift.rollouts_id_seq''::regclass)'),
    ('rollouts', 'created', 'now()')),
constraints(conname, def) AS (VALUES
    ('ddl_journal_pkey', 'PRIMARY KEY (id)'),
    ('deferred_pkey', 'PRIMARY KEY (id)'),
    ('rollouts_pkey', 'PRIMARY KEY (id)'),
    ('proxies_pkey', 'PRIMARY KEY (proxy)'),
    ('deferred_state_check', 'CHECK ((state = ANY (ARRAY[''recorded''::text, ''working''::text, ''done''::text, ''failed''::text, ''interrupted''::text])))')),
indexes(relname, def) AS (VALUES
    ('ddl_journal_pkey', 'CREATE UNIQUE INDEX ddl_journal_pkey ON pgshift.ddl_journal USING btree (id)'),
    ('deferred_pkey', 'CREATE UNIQUE INDEX deferred_pkey ON pgshift.deferred USING btree (id)'),
    ('rollouts_pkey', 'CREATE UNIQUE INDEX rollouts_pkey ON pgshift.rollouts USING btree (id)'),
    ('proxies_pkey', 'CREATE UNIQUE INDEX proxies_pkey ON pgshift.proxies USING btree (proxy)'),
    ('rollouts_one_per_column', 'CREATE UNIQUE INDEX rollouts_one_per_column ON pgshift.rollouts USING btree (table_oid, column_name) WHERE (phase <> ALL (ARRAY[''finished''::text, ''rolled_back''::text]))'),
    ('deferred_open', 'CREATE INDEX deferred_open ON pgshift.deferred USING btree (id) WHERE (state = ANY (ARRAY[''recorded''::text, ''working''::text]))')),
found_constraints AS (SELECT k.conname::text AS conname, pg_catalog.pg_get_constraintdef(k.oid) AS def
    FROM pg_catalog.pg_constraint k JOIN tables ON k.conrelid = tables.oid),
found_indexes AS (SELECT c.relname::text AS relname, pg_catalog.pg_get_indexdef(x.indexrelid) AS def
    FROM pg_catalog.pg_index x JOIN tables ON x.indrelid = tables.oid
    JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid)
SELECT pg_catalog.format('%s %s belongs to %s', CASE c.relkind WHEN 'r' THEN 'table' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' WHEN 'v' THEN 'view' ELSE 'relation' END, c.relname, r.rolname)
  FROM pg_catalog.pg_class c JOIN s ON c.relnamespace = s.oid JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
 WHERE r.rolname <> $1
UNION ALL
SELECT pg_catalog.format('relation %s is of kind %s, expected %s', c.relname, c.relkind, o.relkind)
  FROM pg_catalog.pg_class c JOIN s ON c.relnamespace = s.oid JOIN ours o ON o.relname = c.relname
 WHERE c.relkind::text <> o.relkind
UNION ALL
SELECT pg_catalog.format('function %s belongs to %s', p.oid::pg_catalog.regprocedure, r.rolname)
  FROM pg_catalog.pg_proc p JOIN s ON p.pronamespace = s.oid JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
 WHERE r.rolname <> $1
UNION ALL
SELECT pg_catalog.format('type %s belongs to %s', t.typname, r.rolname)
  FROM pg_catalog.pg_type t JOIN s ON t.typnamespace = s.oid JOIN pg_catalog.pg_roles r ON r.oid = t.typowner
 WHERE r.rolname <> $1
UNION ALL
SELECT pg_catalog.format('extension %s lives in schema pgshift', e.extname)
  FROM pg_catalog.pg_extension e JOIN s ON e.extnamespace = s.oid
UNION ALL
SELECT pg_catalog.format('function %s is not the one pgshift made', p.oid::pg_catalog.regprocedure)
  FROM pg_catalog.pg_proc p JOIN s ON p.pronamespace = s.oid
 WHERE p.proname = 'defer' AND (NOT p.prosecdef OR p.prosrc <> $2
       OR p.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp']
       OR p.prolang <> (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'sql'))
UNION ALL
SELECT 'function pgshift.defer is missing'
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN s ON p.pronamespace = s.oid WHERE p.proname = 'defer')
UNION ALL
SELECT pg_catalog.format('table %s is missing', o.relname) FROM ours o
 WHERE o.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN s ON c.relnamespace = s.oid WHERE c.relname = o.relname)
UNION ALL
SELECT pg_catalog.format('%s inherits from %s', i.inhrelid::pg_catalog.regclass, i.inhparent::pg_catalog.regclass)
  FROM pg_catalog.pg_inherits i
 WHERE i.inhparent IN (SELECT oid FROM tables) OR i.inhrelid IN (SELECT oid FROM tables)
UNION ALL
SELECT pg_catalog.format('trigger %s on %s', t.tgname, t.tgrelid::pg_catalog.regclass)
  FROM pg_catalog.pg_trigger t JOIN tables ON t.tgrelid = tables.oid
UNION ALL
SELECT pg_catalog.format('rule %s on %s', w.rulename, w.ev_class::pg_catalog.regclass)
  FROM pg_catalog.pg_rewrite w JOIN tables ON w.ev_class = tables.oid
UNION ALL
SELECT pg_catalog.format('policy %s on %s', p.polname, p.polrelid::pg_catalog.regclass)
  FROM pg_catalog.pg_policy p JOIN tables ON p.polrelid = tables.oid
UNION ALL
SELECT pg_catalog.format('row level security is on for %s', c.oid::pg_catalog.regclass)
  FROM pg_catalog.pg_class c JOIN tables ON c.oid = tables.oid
 WHERE c.relrowsecurity OR c.relforcerowsecurity
UNION ALL
SELECT pg_catalog.format('default %s on %s.%s', pg_catalog.pg_get_expr(d.adbin, d.adrelid), c.relname, a.attname)
  FROM pg_catalog.pg_attrdef d JOIN tables ON d.adrelid = tables.oid
  JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
 WHERE (c.relname::text, a.attname::text, pg_catalog.pg_get_expr(d.adbin, d.adrelid)) NOT IN (SELECT * FROM defaults)
UNION ALL
SELECT pg_catalog.format('constraint %s: %s', f.conname, f.def)
  FROM found_constraints f WHERE (f.conname, f.def) NOT IN (SELECT * FROM constraints)
UNION ALL
SELECT pg_catalog.format('constraint %s is missing', k.conname)
  FROM constraints k WHERE (k.conname, k.def) NOT IN (SELECT * FROM found_constraints)
UNION ALL
SELECT pg_catalog.format('index %s', f.def)
  FROM found_indexes f WHERE (f.relname, f.def) NOT IN (SELECT * FROM indexes)
UNION ALL
SELECT pg_catalog.format('index %s is missing', x.relname)
  FROM indexes x WHERE (x.relname, x.def) NOT IN (SELECT * FROM found_indexes)
   AND x.relname <> 'rollouts_one_per_column'
UNION ALL
SELECT pg_catalog.format('column %s.%s has type %s', c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
  FROM pg_catalog.pg_attribute a JOIN tables ON a.attrelid = tables.oid
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE a.attnum > 0 AND NOT a.attisdropped
   AND (t.typnamespace <> (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog')
        OR a.attcollation NOT IN (0, 100))
"#;

#[cfg(test)]
mod tests {
    use super::{version_of, VERSION};

    #[test]
    fn versions_are_read_as_numbers() {
        assert_eq!(version_of(Some("pgshift state, schema version 9")), 9);
        assert!(version_of(Some("pgshift state, schema version 11")) > version_of(Some(VERSION)));
        assert!(version_of(Some("pgshift state, schema version 9")) < version_of(Some(VERSION)));
        assert_eq!(version_of(Some("something else")), 0);
        assert_eq!(version_of(None), 0);
    }
}
