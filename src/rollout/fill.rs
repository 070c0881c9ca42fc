//! `ADD COLUMN … DEFAULT <volatile>` through the rollout machinery: the client
//! gets its answer once the column exists with its default (new rows get their
//! values from Postgres) and a trigger fills the old rows the application
//! updates; the driver fills the rest in throttled batches, verifies, and drops
//! the trigger.
//!
//! Which rows are old: those whose row version was written by a transaction that
//! ended before the one adding the column had its lock (below the xmax of a
//! snapshot it took then: `pgshift.rollouts.fill_before`) and whose column is
//! still NULL. A row written since is the application's: a NULL there was written on
//! purpose and stays. The trigger's WHEN clause compares the same way, so an
//! UPDATE of an old row fills it (without the trigger the new version would
//! look like the application's NULL). One case differs from the table rewrite:
//! `UPDATE … SET col = NULL` on an old row not filled yet gets a value.
//!
//! The driver evaluates the default as pgshift's service role, so the default
//! may only use built-in immutable functions and operators, plus the clocks,
//! `random()` and `gen_random_uuid()`, none of which reads a setting the author's
//! session could set differently (a time zone, a date style). Anything else is
//! filled in-band by the engine, in the author's session, as before.

use super::model::{FILL, FILL_COMMITTED};
use super::start::{probe_step, refusal, Started};
use super::{driver, sql};
use crate::engine::conn::Conn;
use crate::engine::steps::{self, Failure, Mode, StepContext};
use crate::engine::SessionCx;
use crate::sql::ident::{literal, quote};
use crate::sql::plan::{Lock, OnlineFill, Step};

/// What the engine hands over: the plan's first two steps and its fill.
pub struct FillSpec<'a> {
    /// The table as the statement names it.
    pub table: &'a str,
    pub online: &'a OnlineFill,
    /// `ALTER TABLE … ADD COLUMN` without the default.
    pub add: &'a str,
    /// `ALTER TABLE … ALTER COLUMN … SET DEFAULT …`.
    pub set_default: &'a str,
    /// The column was added (with its default) by a transaction that has
    /// committed since (`add` and `set_default` are not run): the fill deferred
    /// from a transaction block, or the console's `ROLLOUT FILL`.
    pub exists: bool,
    /// The table's oid, with `online.value` read and checked from the catalog
    /// as the background evaluates it (the console's `ROLLOUT FILL`): no probe
    /// evaluates anything, and a constant default is filled too (an ADD COLUMN
    /// gives old rows a constant itself, the console's column got it later).
    pub known_oid: Option<u32>,
}

/// Functions the background may call besides immutable ones: their value does
/// not depend on the session's settings.
const VOLATILE_OK: &str = "'random', 'gen_random_uuid', 'clock_timestamp', 'now', \
     'statement_timestamp', 'transaction_timestamp'";

/// What in the default of `column` of `table` (SQL names, unquoted column) the
/// background cannot evaluate, one line each; it reads the stored expression,
/// never evaluates it. Built-in objects have oids below 16384.
pub fn unfit_query(table: &str, column: &str) -> String {
    format!(
        r#"
WITH e AS (SELECT ad.adbin::pg_catalog.text AS tree
             FROM pg_catalog.pg_attrdef ad
             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum
            WHERE ad.adrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass({table})
              AND a.attname OPERATOR(pg_catalog.=) {column}),
refs AS (SELECT m[1] AS kind, m[2]::pg_catalog.int8 AS ref
           FROM e CROSS JOIN LATERAL pg_catalog.regexp_matches(e.tree, ':([a-z_]+) ([0-9]+)', 'g') AS m
          WHERE m[1] OPERATOR(pg_catalog.!~) '(typmod|location|len|varno|attno|levelsup|paramid|constvalue)')
SELECT pg_catalog.format('it uses %s', pg_catalog.lower(m[1]))
  FROM e CROSS JOIN LATERAL pg_catalog.regexp_matches(e.tree,
       '\{{(COERCEVIAIO|SQLVALUEFUNCTION|SUBLINK|NEXTVALUEEXPR|XMLEXPR|COERCETODOMAIN|CONVERTROWTYPEEXPR|ARRAYCOERCEEXPR)', 'g') AS m
UNION ALL
SELECT pg_catalog.format('it uses %s %s, which is not built in', refs.kind, refs.ref)
  FROM refs WHERE refs.ref OPERATOR(pg_catalog.>=) 16384
UNION ALL
SELECT pg_catalog.format('it calls %s, whose value depends on more than its arguments', p.oid::pg_catalog.regprocedure)
  FROM refs JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) refs.ref::pg_catalog.oid
 WHERE refs.kind IN ('funcid', 'opfuncid', 'hashfuncid', 'negfuncid')
   AND p.provolatile OPERATOR(pg_catalog.<>) 'i'
   AND p.proname::pg_catalog.text NOT IN ({VOLATILE_OK})
UNION ALL
SELECT pg_catalog.format('it uses operator %s, whose value depends on more than its arguments', o.oid::pg_catalog.regoperator)
  FROM refs JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) refs.ref::pg_catalog.oid
  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) o.oprcode
 WHERE refs.kind OPERATOR(pg_catalog.=) 'opno' AND p.provolatile OPERATOR(pg_catalog.<>) 'i'
"#,
        table = literal(table),
        column = literal(column),
    )
}

/// The cluster's next transaction id, 64 bits (epoch included): how many ids
/// it has used.
macro_rules! next_xid {
    () => {
        "pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::int8"
    };
}

/// [`next_xid!`] alone, for the driver's check before each batch of a fill.
pub const NEXT_XID: &str = concat!("SELECT ", next_xid!());

/// The table as the service connection sees it: schema, name, kind, whether
/// pgshift's role may alter it, inheritance, estimated rows, whether the
/// column is there already, and the cluster's next transaction id.
const LOOK: &str = concat!(
    "
SELECT n.nspname::text, c.relname::text, c.relkind::text,
       pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE'),
       EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid OR i.inhrelid = c.oid),
       c.reltuples::int8, c.relpersistence::text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x WHERE x.attrelid = c.oid AND x.attname = $2::text::name AND NOT x.attisdropped),
       ",
    next_xid!(),
    "
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = $1::text::oid"
);

/// The fill tells old rows from the application's by the age of their xmin.
/// Freezing keeps a row's xmin as it was; once the cluster has used more than
/// 2^31 transaction ids, the xmin of a row frozen that long ago reads as any
/// age, as young as a row written since the column (and an age can read
/// negative for a row the reader's own subtransaction, or a later transaction,
/// wrote, so a negative age does not tell either). Under this count no xid has
/// come round: every age is exact. The margin (2^28 ids) is the fill's to use;
/// a fill that reaches [`XIDS_FOR_AGES_END`] stops (see the driver).
pub const XIDS_FOR_AGES: i64 = (1 << 31) - (1 << 28);
/// Past this count the oldest ids could come round: a fill stops.
pub const XIDS_FOR_AGES_END: i64 = (1 << 31) - (1 << 20);

/// In the client's session: the table's oid, and the default as the service
/// connection evaluates it (printed with search_path pg_catalog, so every name
/// not from there is qualified), or why the background cannot evaluate it.
async fn probe<C: Conn>(
    io: &mut C,
    spec: &FillSpec<'_>,
    session: u64,
) -> Result<Result<Probed, String>, Failure> {
    let name = format!("pgshift_probe_{session}");
    let probe = format!("pg_temp.{name}");
    let failed = |f: Failure| match f {
        Failure::Server(e) => Ok(Err(e.message)),
        other => Err(other),
    };
    probe_step(io, "BEGIN").await?;
    let oid = match probe_step(
        io,
        &format!(
            "SELECT {}::pg_catalog.regclass::pg_catalog.oid::pg_catalog.text",
            literal(spec.table)
        ),
    )
    .await
    {
        Ok(reply) => reply.cell(0),
        Err(f) => return failed(f),
    };
    let made = async {
        // One row: Postgres keeps a non-volatile default as the rows' missing
        // value (atthasmissing) only where there are rows.
        probe_step(
            io,
            &format!("CREATE TEMPORARY TABLE {name} (pgshift_probe_row int)"),
        )
        .await?;
        probe_step(io, &format!("INSERT INTO {probe} VALUES (1)")).await?;
        probe_step(
            io,
            &format!(
                "ALTER TABLE {probe} ADD COLUMN pgshift_probe_value {} DEFAULT ({})",
                spec.online.type_sql, spec.online.value
            ),
        )
        .await?;
        // Printed as the service connection and the trigger function read it
        // back: names qualified, strings standard, dates ISO, floats exact.
        for set in [
            "search_path = pg_catalog, pg_temp",
            "standard_conforming_strings = on",
            "DateStyle = 'ISO, MDY'",
            "IntervalStyle = postgres",
            "extra_float_digits = 3",
            "TimeZone = 'UTC'",
        ] {
            probe_step(io, &format!("SET LOCAL {set}")).await?;
        }
        let missing = probe_step(
            io,
            &format!(
                "SELECT a.atthasmissing::pg_catalog.text FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid OPERATOR(pg_catalog.=) {}::pg_catalog.regclass \
                 AND a.attname OPERATOR(pg_catalog.=) 'pgshift_probe_value'",
                literal(&probe)
            ),
        )
        .await?;
        if missing.cell(0) == "true" {
            return Ok(None);
        }
        let unfit = probe_step(io, &unfit_query(&probe, "pgshift_probe_value")).await?;
        let printed = probe_step(
            io,
            &format!(
                "SELECT pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) FROM pg_catalog.pg_attrdef ad \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum \
                 WHERE ad.adrelid OPERATOR(pg_catalog.=) {}::pg_catalog.regclass AND a.attname OPERATOR(pg_catalog.=) 'pgshift_probe_value'",
                literal(&probe)
            ),
        )
        .await?;
        Ok::<_, Failure>(Some((unfit, printed)))
    }
    .await;
    let made = match made {
        Ok(x) => x,
        Err(f) => return failed(f),
    };
    io.query("ROLLBACK").await?;
    let Some((unfit, printed)) = made else {
        return Ok(Ok(Probed::Constant));
    };
    if !unfit.rows.is_empty() {
        let why: Vec<String> = unfit
            .rows
            .iter()
            .map(|r| crate::engine::conn::cell(r, 0))
            .collect();
        return Ok(Err(why.join("; ")));
    }
    let value = printed.cell(0);
    if value.is_empty() || value.contains("$pgshift$") {
        return Ok(Err("its default did not read back".into()));
    }
    Ok(oid
        .parse()
        .map(|oid| Probed::Background(oid, value))
        .map_err(|_| "the table's oid did not read back".to_string()))
}

/// What the probe found the default to be.
enum Probed {
    /// Postgres evaluates it once and rewrites nothing: the statement runs as
    /// written.
    Constant,
    /// The table's oid and the default as the background evaluates it.
    Background(u32, String),
}

/// How the engine adds the column.
pub enum Fill {
    /// The column exists; a rollout fills its old rows.
    Started(Started),
    /// The default needs the author's session (or the table is out of the
    /// background's reach, as said): the engine fills in-band.
    InBand(String),
    /// The default is not volatile after all (Postgres stores it once): the
    /// statement runs as written.
    AsWritten,
}

/// The function the trigger runs: the default, evaluated as whoever writes.
pub fn function(name: &str, column: &str, value: &str) -> String {
    let body = format!(
        "\nBEGIN\n    NEW.{} := ({value});\n    RETURN NEW;\nEND\n",
        sql::quoted(column)
    );
    sql::pinned_function(name, &body)
}

/// The expand, in the client's session and one transaction: the column, its
/// default, and the trigger whose WHEN clause names the boundary (known only
/// inside it, so the trigger is made by a DO block). ENABLE ALWAYS: it fires
/// for logical replication's apply too.
///
/// The boundary is the xmax of a snapshot taken once the ADD COLUMN holds its
/// lock, not this transaction's id: ALTER TABLE takes its id before it waits
/// for the lock, and a writer that held the table then (without the trigger)
/// may take a later id and commit before the lock is granted. Every such
/// writer has committed by then, so its rows fall below the boundary and count
/// as old (measured: 1 run in 5 left such a row unfilled with the id).
pub fn expand(
    spec: &FillSpec<'_>,
    qualified: &str,
    oid: u32,
    trigger: &str,
    function: &str,
) -> String {
    let c = quote(&spec.online.column);
    // format()'s text: names with `%` doubled, then the one placeholder.
    let before = format!(
        "CREATE TRIGGER {} BEFORE UPDATE ON {qualified} FOR EACH ROW \
         WHEN ((OLD.{c} IS NULL) AND (NEW.{c} IS NULL) AND \
         (pg_catalog.age(OLD.xmin) OPERATOR(pg_catalog.>) pg_catalog.age(",
        quote(trigger)
    );
    let after = format!("::pg_catalog.xid))) EXECUTE FUNCTION {function}()");
    let create = format!(
        "{}%L{}",
        before.replace('%', "%%"),
        after.replace('%', "%%")
    );
    // Under the lock the name must still mean the table pgshift looked at (a
    // rename and a new table of that name would get the trigger otherwise).
    let block = format!(
        "DECLARE t pg_catalog.oid := pg_catalog.to_regclass({name}); \
         BEGIN IF t IS NULL OR NOT t OPERATOR(pg_catalog.=) {oid}::pg_catalog.oid THEN \
         RAISE EXCEPTION '% is no longer the table pgshift looked at', {name} USING ERRCODE = '55000'; END IF; \
         EXECUTE pg_catalog.format({}, (pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::pg_catalog.text::pg_catalog.int8 \
         OPERATOR(pg_catalog.%) 4294967296)::pg_catalog.text); END",
        literal(&create),
        name = literal(qualified),
    );
    let tag = sql::dollar_tag(&block);
    let trigger = format!(
        "DO {tag}{block}{tag}; ALTER TABLE {qualified} ENABLE ALWAYS TRIGGER {}",
        quote(trigger)
    );
    match spec.exists {
        // The boundary is taken once no writer can be in the table: a writer
        // the trigger's lock waited for would write after the snapshot,
        // without the trigger.
        true => format!("LOCK TABLE {qualified} IN SHARE ROW EXCLUSIVE MODE; {trigger}"),
        false => format!("{}; {}; {trigger}", spec.add, spec.set_default),
    }
}

/// Adds the column and starts its fill, or says how the engine adds it instead
/// (when the background cannot evaluate the default, the reason is logged).
pub async fn start<C: Conn>(
    io: &mut C,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    spec: &FillSpec<'_>,
    statement: &str,
) -> Result<Fill, Failure> {
    let unfit = |why: String| {
        tracing::info!(target: "pgshift::rollout", statement, reason = %why, "the backfill runs in-band");
        Ok(Fill::InBand(why))
    };
    let probed = match spec.known_oid {
        Some(oid) => Ok(Probed::Background(oid, spec.online.value.clone())),
        None => probe(io, spec, cx.session_id).await?,
    };
    let (oid, value) = match probed {
        Ok(Probed::Background(oid, value)) => (oid, value),
        Ok(Probed::Constant) => return Ok(Fill::AsWritten),
        Err(why) => return unfit(why),
    };
    let settings = cx.settings;
    let book = cx.engine.books.get(cx.database);
    let rt = cx.engine.books.runtime().clone();
    let service =
        |e: crate::engine::service::ServiceError| refusal("58000", e.to_string(), e.hint());
    let column = &spec.online.column;
    let looked = book
        .service_query(settings, &rt, LOOK, &[&oid.to_string(), column])
        .await
        .map_err(service)?;
    let Some(row) = looked.first() else {
        return unfit("the service connection does not see the table".into());
    };
    let (schema, table, relkind): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let (may_own, inherits, reltuples, persistence, taken): (bool, bool, i64, String, bool) =
        (row.get(3), row.get(4), row.get(5), row.get(6), row.get(7));
    let next_xid: i64 = row.get(8);
    if next_xid >= XIDS_FOR_AGES {
        return unfit(format!(
            "the cluster has used {next_xid} transaction ids: a row frozen more than 2^31 of them ago can read as younger than the column, and the background would leave it NULL"
        ));
    }
    // Another session's temporary table is out of the service connection's reach.
    if relkind != "r" || inherits || !may_own || taken != spec.exists || persistence == "t" {
        return unfit(format!(
            "{schema}.{table}: kind {relkind}, persistence {persistence}, inheritance {inherits}, pgshift may alter it {may_own}, column there {taken}"
        ));
    }
    let qualified = crate::sql::ident::qualified(&schema, &table);
    let key = book
        .service_query(settings, &rt, super::start::KEY, &[&oid.to_string()])
        .await
        .map_err(service)?;
    let key_columns: Vec<String> = key.iter().map(|r| r.get(0)).collect();
    let foreign = book
        .service_query(
            settings,
            &rt,
            sql::FOREIGN_CODE,
            &[
                &oid.to_string(),
                &"",
                &"",
                &qualified,
                &key_columns,
                &key_columns,
                &"",
            ],
        )
        .await
        .map_err(service)?;
    if !foreign.is_empty() {
        let list: Vec<String> = foreign.iter().map(|r| r.get(0)).collect();
        return unfit(list.join("; "));
    }
    let no_uses: Vec<String> = Vec::new();
    let inserted = book
        .service_query(
            settings,
            &rt,
            "INSERT INTO pgshift.rollouts (username, statement, table_oid, schema_name, table_name, column_name, new_column, \
             old_type, new_type, transform, uses, key_columns, not_null, column_default, phase, paused, rows_per_second, rows_done, rows_total, kind) \
             VALUES ($1, $2, $3::text::oid, $4, $5, $6, $6, $7, $7, $8, $9, $10, false, NULL, 'planned', false, $11, 0, $12, $13) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &cx.user,
                &statement,
                &oid.to_string(),
                &schema,
                &table,
                column,
                &spec.online.type_sql,
                &value,
                &no_uses,
                &key_columns,
                &(settings.config.rollout.rows_per_second as i64),
                &reltuples.max(0),
                &if spec.exists { FILL_COMMITTED } else { FILL },
            ],
        )
        .await
        .map_err(|e| refusal("58000", format!("pgshift could not record the rollout: {e}"), e.hint()))?;
    let Some(id) = inserted.first().map(|r| r.get::<_, i64>(0)) else {
        if !spec.exists {
            // Another session adds the same column at this moment. Directly,
            // the later ALTER waits for the first and gets 42701 (IF NOT EXISTS:
            // a notice): the engine runs this one as written, and Postgres
            // says which.
            return unfit(format!(
                "another session's fill of {qualified}.{} began first",
                quote(column)
            ));
        }
        return Err(super::start::column_taken(cx, oid, column, &qualified).await);
    };
    let recorded = |e: String| {
        refusal("58000", format!("pgshift could not record the rollout: {e}"), "pgshift keeps rollouts in schema pgshift through its service connection; the log says why it failed.")
    };
    let d = driver::Driver::connect(settings, cx.database, &rt, id)
        .await
        .map_err(recorded)?;
    let rollout = d.load().await.map_err(|e| recorded(e.reason))?;
    let names = rollout.names();
    let expanded = async {
        d.install_function(&rollout, driver::Mirror::Strict)
            .await
            .map_err(|e| recorded(e.reason))?;
        // Without the ADD COLUMN (deferred from a block) the step needs only
        // the trigger's lock.
        let lock = match spec.exists {
            true => Lock::ShareRowExclusive,
            false => Lock::AccessExclusive,
        };
        let step = Step::quick(
            expand(spec, &qualified, oid, &names.trigger, &names.function),
            lock,
        );
        let step_cx = StepContext {
            table: Some(spec.table),
            original: "",
            ..step_cx.clone()
        };
        steps::run(io, &step, Mode::Autocommit, &step_cx).await
    }
    .await;
    if let Err(f) = expanded {
        let why = crate::engine::failure_text(&f);
        let _ = d.abandon(&rollout, &why).await;
        return Err(f);
    }
    let describe = rollout.describe();
    let running = cx.engine.rollouts.clone();
    // Known before the client hears of it: its next rewrite of the table waits.
    let entered = running.enter(cx.database, id);
    running.describe(cx.database, &rollout, false);
    d.drive_started(
        &rollout,
        cx.engine.background().clone(),
        cx.database.to_string(),
        running,
        entered,
    )
    .await;
    Ok(Fill::Started(Started { id, describe }))
}
