//! Starting a rollout from an intercepted `ALTER COLUMN … TYPE`, in the client's
//! session (outside a transaction block): the statement is tried on an empty
//! temporary copy of the table (so Postgres itself checks the type and the USING
//! expression, and says whether the expression is immutable and what it uses),
//! the table is looked at on the service connection, the row is written, the new
//! column and its mirror trigger are added in one short step, and the client gets
//! its command tag while the backfill runs in the background.

use super::model::parked_name;
use super::{driver, sql, Spec};
use crate::engine::conn::{Conn, ServerError};
use crate::engine::steps::{self, Failure, Mode, StepContext};
use crate::engine::SessionCx;
use crate::sql::ident::{literal, quote};
use crate::sql::plan::{Lock, Step};

/// What the probe learned in the client's session.
struct Probe {
    table_oid: u32,
    type_oid: u32,
    typmod: i32,
    uses: Vec<String>,
}

/// An error for the client, shaped like the server's (any SQLSTATE).
pub fn refusal(code: &str, message: String, hint: &str) -> Failure {
    Failure::Server(ServerError::from_fields(vec![
        (b'S', "ERROR".into()),
        (b'V', "ERROR".into()),
        (b'C', code.into()),
        (b'M', message),
        (b'H', hint.into()),
    ]))
}

fn not_yet(what: String) -> Failure {
    refusal(
        "0A000",
        format!("pgshift cannot roll out this type change: {what}"),
        "Use an expand/contract migration by hand, or SET pgshift.bypass = on to run the ALTER as written (it rewrites the table under ACCESS EXCLUSIVE).",
    )
}

fn service_failure(e: impl std::fmt::Display) -> Failure {
    refusal(
        "58000",
        format!("pgshift could not record the rollout: {e}"),
        "pgshift keeps rollouts in schema pgshift through its service connection; the log says why it failed.",
    )
}

/// The rollout under way on the table `oid` (of `column`, when given), as the
/// table of rollouts says: its id and phase.
pub async fn live_rollout(
    cx: &SessionCx<'_>,
    oid: u32,
    column: Option<&str>,
) -> Result<Option<(String, String)>, crate::engine::service::ServiceError> {
    let book = cx.engine.books.get(cx.database);
    let rt = cx.engine.books.runtime().clone();
    let rows = book
        .service_query(
            cx.settings,
            &rt,
            "SELECT id::text, phase FROM pgshift.rollouts WHERE table_oid = $1::text::oid \
             AND ($2::text IS NULL OR column_name = $2) \
             AND phase NOT IN ('finished', 'rolled_back') ORDER BY id LIMIT 1",
            &[&oid.to_string(), &column],
        )
        .await?;
    Ok(rows.first().map(|r| (r.get(0), r.get(1))))
}

/// The refusal of a start while rollout `id` (in `phase`) of the column is
/// under way.
fn under_way((id, phase): (String, String), qualified: &str, column: &str) -> Failure {
    let hint = match phase.as_str() {
        "failed" => format!("It stopped on an error (SHOW ROLLOUT {id} on the console says which): ROLLOUT RESUME {id} or ROLLOUT ROLLBACK {id} first."),
        _ => format!("One rollout per column at a time: let it end, or ROLLOUT ROLLBACK {id}, first (SHOW ROLLOUT {id} on the console)."),
    };
    refusal(
        "55006",
        format!(
            "rollout {id} of {qualified}.{} is under way ({phase})",
            quote(column)
        ),
        &hint,
    )
}

/// `found`, what this start found in its way, unless a rollout of the column
/// is under way now: one another proxy or console started after this start
/// looked for one, whose column or trigger is what was found.
async fn raced(
    cx: &SessionCx<'_>,
    oid: u32,
    column: &str,
    qualified: &str,
    found: Failure,
) -> Failure {
    match live_rollout(cx, oid, Some(column)).await {
        Ok(Some(live)) => under_way(live, qualified, column),
        _ => found,
    }
}

/// A start whose INSERT wrote no row: another rollout of the column is under
/// way (`pgshift.rollouts_one_per_column`; two starts at the same moment,
/// through two proxies or two consoles, both passed their checks), or, when
/// none is found, another key stopped it and nothing was started.
pub(super) async fn column_taken(
    cx: &SessionCx<'_>,
    oid: u32,
    column: &str,
    qualified: &str,
) -> Failure {
    match live_rollout(cx, oid, Some(column)).await.ok().flatten() {
        Some(live) => under_way(live, qualified, column),
        None => refusal(
            "58000",
            format!(
                "pgshift could not record the rollout of {qualified}.{}: its row was not written",
                quote(column)
            ),
            "Nothing was started. Run the statement again; the log and pgshift.rollouts say more.",
        ),
    }
}

/// Runs `sql` in the client's session; a server error rolls the probe back.
pub(super) async fn probe_step<C: Conn>(
    io: &mut C,
    sql: &str,
) -> Result<crate::engine::conn::Reply, Failure> {
    let reply = io.query(sql).await?;
    if let Some(e) = reply.error.clone() {
        io.query("ROLLBACK").await?;
        return Err(Failure::Server(e.without_position()));
    }
    Ok(reply)
}

/// The refusal of a new value that uses objects pgshift did not find built in
/// (`reply`: their descriptions).
fn foreign_code(reply: &crate::engine::conn::Reply) -> Failure {
    let names: Vec<String> = reply
        .rows
        .iter()
        .map(|r| crate::engine::conn::cell(r, 0))
        .collect();
    refusal(
        "42501",
        format!(
            "pgshift cannot roll out this type change: its new value uses {}, which pgshift would run in the background as its service role",
            names.join(", ")
        ),
        "Only built-in functions, operators and types may compute the new value. Write the USING clause with built-in ones, or run the ALTER yourself with SET pgshift.bypass = on.",
    )
}

async fn probe<C: Conn>(io: &mut C, spec: &Spec, session: u64) -> Result<Probe, Failure> {
    let name = format!("pgshift_probe_{session}");
    let probe = format!("pg_temp.{name}");
    probe_step(io, "BEGIN").await?;
    probe_step(
        io,
        &format!("CREATE TEMPORARY TABLE {name} (LIKE {})", spec.table),
    )
    .await?;
    let cannot = |e: ServerError| {
        let hint = "pgshift evaluates the new value in the background for every row, so it must be an immutable expression over the row's own columns (a USING clause like amount::bigint or round(price * 100)::int).";
        refusal(
            &e.code,
            format!("pgshift cannot roll out this type change: {}", e.message),
            hint,
        )
    };
    // First a view: Postgres resolves the expression without planning it, so
    // nothing runs (planning folds immutable calls on constants, and inlines SQL
    // functions), and records what it uses. Only built-in objects go further: on
    // the console's connection this runs as pgshift's service role.
    let view = format!("{name}_view");
    let viewed = format!(
        "CREATE TEMPORARY VIEW {view} AS SELECT CAST(({}) AS {t}) AS v FROM {probe}",
        spec.transform(),
        t = spec.target,
    );
    if let Err(Failure::Server(e)) = probe_step(io, &viewed).await {
        return Err(cannot(e));
    }
    let eq = "OPERATOR(pg_catalog.=)";
    let used = probe_step(
        io,
        &format!(
            "SELECT DISTINCT pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) \
             FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r \
             ON d.classid {eq} 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid {eq} r.oid \
             WHERE r.ev_class {eq} 'pg_temp.{view}'::pg_catalog.regclass \
             AND NOT (d.refclassid {eq} 'pg_catalog.pg_class'::pg_catalog.regclass \
             AND d.refobjid IN ('{probe}'::pg_catalog.regclass, 'pg_temp.{view}'::pg_catalog.regclass))"
        ),
    )
    .await?;
    if !used.rows.is_empty() {
        io.query("ROLLBACK").await?;
        return Err(foreign_code(&used));
    }
    let added = format!(
        "ALTER TABLE {probe} ADD COLUMN pgshift_probe_value {t} GENERATED ALWAYS AS (CAST(({}) AS {t})) STORED",
        spec.transform(),
        t = spec.target,
    );
    if let Err(Failure::Server(e)) = probe_step(io, &added).await {
        return Err(cannot(e));
    }
    let value = "pgshift_probe_value";
    let from = format!(
        "FROM pg_catalog.pg_attrdef ad JOIN pg_catalog.pg_attribute v ON v.attrelid {eq} ad.adrelid \
         AND v.attnum {eq} ad.adnum AND v.attname {eq} '{value}' \
         JOIN pg_catalog.pg_depend d ON d.classid {eq} 'pg_catalog.pg_attrdef'::pg_catalog.regclass \
         AND d.objid {eq} ad.oid"
    );
    let own = format!(
        "d.refclassid {eq} 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid {eq} ad.adrelid"
    );
    let of_probe = format!("ad.adrelid {eq} '{probe}'::pg_catalog.regclass");
    // Built-in objects are pinned: Postgres records no dependency on them.
    let foreign = probe_step(
        io,
        &format!(
            "SELECT pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) {from} \
             WHERE {of_probe} AND NOT ({own})"
        ),
    )
    .await?;
    let uses = probe_step(
        io,
        &format!(
            "SELECT a.attname::pg_catalog.text, a.attnum::pg_catalog.text {from} \
             JOIN pg_catalog.pg_attribute a ON a.attrelid {eq} ad.adrelid AND a.attnum {eq} d.refobjsubid \
             WHERE {of_probe} AND {own} AND a.attname OPERATOR(pg_catalog.<>) '{value}'"
        ),
    )
    .await?;
    let facts = probe_step(
        io,
        &format!(
            "SELECT v.atttypid::pg_catalog.oid::pg_catalog.text, v.atttypmod::pg_catalog.text, \
             (SELECT c.oid::pg_catalog.text FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) {}::pg_catalog.regclass) \
             FROM pg_catalog.pg_attribute v WHERE v.attrelid OPERATOR(pg_catalog.=) '{probe}'::pg_catalog.regclass AND v.attname OPERATOR(pg_catalog.=) '{value}'",
            literal(&spec.table)
        ),
    )
    .await?;
    // The new type must be comparable with itself: the backfill skips rows
    // that already hold the right value.
    probe_step(
        io,
        &format!("SELECT {value} IS DISTINCT FROM {value} FROM {probe}"),
    )
    .await
    .map_err(|f| match f {
        Failure::Server(e) => not_yet(format!(
            "{} (the new type needs an equality operator)",
            e.message
        )),
        other => other,
    })?;
    io.query("ROLLBACK").await?;
    if !foreign.rows.is_empty() {
        return Err(foreign_code(&foreign));
    }
    if uses
        .rows
        .iter()
        .any(|r| crate::engine::conn::cell(r, 1).starts_with('-'))
    {
        return Err(not_yet(
            "the new value reads a system column (ctid, tableoid, …)".into(),
        ));
    }
    let parse = |s: String| s.parse().unwrap_or(0);
    Ok(Probe {
        type_oid: parse(facts.cell(0)),
        typmod: facts.cell(1).parse().unwrap_or(-1),
        table_oid: parse(facts.cell(2)),
        uses: uses
            .rows
            .iter()
            .map(|r| crate::engine::conn::cell(r, 0))
            .collect(),
    })
}

/// The table as the service connection sees it, or why a rollout cannot start.
const LOOK: &str = "
SELECT n.nspname::text, c.relname::text, c.relkind::text,
       pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE'),
       a.attnum::int4, a.attnotnull, a.attidentity::text, a.attgenerated::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
       pg_catalog.format_type($3::text::oid, $4::int4),
       (SELECT e.typtype::text FROM pg_catalog.pg_type t JOIN pg_catalog.pg_type e ON e.oid = t.typelem WHERE t.oid = $3::text::oid) AS element_kind,
       (SELECT t.typtype::text FROM pg_catalog.pg_type t WHERE t.oid = $3::text::oid) AS kind,
       EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class ch ON ch.oid = i.inhrelid
                WHERE i.inhrelid = c.oid OR (i.inhparent = c.oid AND NOT ch.relispartition)),
       CASE WHEN c.relkind = 'p'
            THEN (SELECT COALESCE(pg_catalog.sum(GREATEST(l.reltuples, 0)), 0)::int8
                    FROM pg_catalog.pg_partition_tree(c.oid) p JOIN pg_catalog.pg_class l ON l.oid = p.relid
                   WHERE p.isleaf)
            ELSE c.reltuples::int8 END,
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x WHERE x.attrelid = c.oid AND x.attname IN ($5::text::name, $6::text::name) AND NOT x.attisdropped)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2::text::name AND NOT a.attisdropped
  LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum AND a.attgenerated = ''
 WHERE c.oid = $1::text::oid";

/// Why a rollout of column $2 (name) of partitioned table $1 (oid) cannot start,
/// as (SQLSTATE, message) rows; none when it can. Every partition, at every
/// level, is looked at by the column's name there (its number may differ).
/// What a rollout does reaches every partition: the new column, the mirror
/// trigger's clones, the backfill's UPDATE through the partitioned table, the
/// renames and the drop. Of what stands on the column, only the table's plain
/// indexes get twins so far (see [`PARTITIONS_USERS`]).
pub const PARTITIONS: &str = "
WITH t AS (SELECT p.relid AS oid, p.relid = $1::text::oid AS root
             FROM pg_catalog.pg_partition_tree($1::text::oid::pg_catalog.regclass) p),
col AS (SELECT t.oid, t.root, a.attnum, a.attnotnull, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) AS def
          FROM t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attname = $2::text::name AND NOT a.attisdropped
          LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum)
SELECT '42P16', pg_catalog.format('cannot alter column \"%s\" because it is part of the partition key of relation \"%s\"', $2::text, c.relname)
  FROM col JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = col.oid
  JOIN pg_catalog.pg_class c ON c.oid = col.oid
 WHERE col.attnum = ANY (pt.partattrs::int2[])
    OR pt.partexprs::text ~ (':varattno ' || col.attnum || ' ')
UNION ALL
SELECT '42501', pg_catalog.format('pgshift''s service role cannot alter partition %s: the renames and the drop reach every partition', c.oid::pg_catalog.regclass)
  FROM t JOIN pg_catalog.pg_class c ON c.oid = t.oid
 WHERE NOT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
UNION ALL
SELECT '0A000', pg_catalog.format('partition %s has %s NOT NULL where the partitioned table has %s', col.oid::pg_catalog.regclass,
       CASE WHEN col.attnotnull THEN 'it' ELSE 'no' END, CASE WHEN col.attnotnull THEN 'none' ELSE 'it' END)
  FROM col, col r
 WHERE r.root AND NOT col.root AND col.attnotnull <> r.attnotnull
UNION ALL
SELECT '0A000', pg_catalog.format('partition %s has its own default for the column (%s)', col.oid::pg_catalog.regclass, COALESCE(col.def, 'none'))
  FROM col, col r
 WHERE r.root AND NOT col.root AND col.def IS DISTINCT FROM r.def
UNION ALL
SELECT '0A000', pg_catalog.format('partition %s has no such column', t.oid::pg_catalog.regclass)
  FROM t WHERE NOT EXISTS (SELECT 1 FROM col WHERE col.oid = t.oid)";

/// An index (`x`) of table $1 on column $2 (attnum) that pgshift builds again on
/// the new column: one with expressions or a predicate (see `shapes`) behind no
/// constraint, or one on plain columns, valid, behind
/// no constraint but the table's own non-deferrable primary key or unique
/// constraint and the foreign keys that reference it with built-in operators
/// and built-in column types only (validating one again compares and casts
/// with them; pgshift validates as the referencing table's owner besides), not
/// from a partitioned table (Postgres 15 cannot add its key NOT VALID),
/// not an exclusion constraint; built-in default operator classes and the
/// columns' own collations: exactly what `CREATE INDEX … (columns)` gives; its
/// columns of built-in types or enums (a composite's comparison would run the
/// comparisons of its fields' types in the build).
/// `rebuildable!()` for column $2; `rebuildable!("expression")` for the
/// column numbered by that expression (a partition's may differ).
macro_rules! rebuildable {
    () => {
        rebuildable!("$2::pg_catalog.int4")
    };
    ($attnum:literal) => {
        concat!("(", $attnum, " OPERATOR(pg_catalog.=) ANY (x.indkey::pg_catalog.int2[])
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend xd
                    WHERE xd.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND xd.objid = x.indexrelid
                      AND xd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND xd.refobjid = x.indrelid
                      AND xd.refobjsubid OPERATOR(pg_catalog.=) ", $attnum, "))
   AND ((x.indexprs IS NULL AND x.indpred IS NULL)
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = x.indexrelid))
   AND x.indisvalid
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = x.indexrelid
                      AND NOT (k.contype IN ('p', 'u') AND k.conrelid = x.indrelid AND NOT k.condeferrable)
                      AND NOT (k.contype = 'f' AND k.confrelid = x.indrelid
                               AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(k.conpfeqop OPERATOR(pg_catalog.||) k.conppeqop OPERATOR(pg_catalog.||) k.conffeqop) AS op(oid)
                                                WHERE op.oid OPERATOR(pg_catalog.>=) 16384)
                               AND (SELECT rc.relkind FROM pg_catalog.pg_class rc WHERE rc.oid = k.conrelid) OPERATOR(pg_catalog.<>) 'p'
                               AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(k.conkey) AS ck(attnum)
                                                 JOIN pg_catalog.pg_attribute fa ON fa.attrelid = k.conrelid AND fa.attnum = ck.attnum
                                                WHERE fa.atttypid OPERATOR(pg_catalog.>=) 16384)))
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(x.indkey::pg_catalog.int2[]) AS ik(attnum)
                     JOIN pg_catalog.pg_attribute ia ON ia.attrelid = x.indrelid AND ia.attnum = ik.attnum
                     JOIN pg_catalog.pg_type it ON it.oid = ia.atttypid
                    WHERE it.oid OPERATOR(pg_catalog.>=) 16384 AND it.typtype OPERATOR(pg_catalog.<>) 'e')
   AND ", default_classes!())
    };
}

/// A leaf partition's own plain indexes on the column (`col`: each table of
/// the tree with the column's number there; $1 the partitioned table), not
/// attached to an index of the table: the index's oid, its partition's.
macro_rules! own_indexes {
    () => {
        concat!(
            "SELECT x.indexrelid, col.oid FROM col
      JOIN pg_catalog.pg_class tc ON tc.oid = col.oid AND tc.relkind = 'r'
      JOIN pg_catalog.pg_index x ON x.indrelid = col.oid
     WHERE col.oid <> $1::text::oid AND x.indexprs IS NULL AND x.indpred IS NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = x.indexrelid)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = x.indexrelid)
       AND ",
            rebuildable!("col.attnum::pg_catalog.int4")
        )
    };
}

/// The leaf partitions' own plain indexes on column $2 (name) of partitioned
/// table $1 (oid), see `own_indexes!`: the index's oid, its partition's oid,
/// its name, by oid. `pg_inherits` takes no lock.
pub const LEAF_OWN: &str = concat!(
    "
WITH RECURSIVE t(oid) AS (
    SELECT $1::text::oid
    UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN t ON i.inhparent = t.oid),
col AS (SELECT t.oid, a.attnum FROM t
          JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attname = $2::text::name AND NOT a.attisdropped),
own(oid, tab) AS (",
    own_indexes!(),
    ")
SELECT own.oid::pg_catalog.text, own.tab::pg_catalog.text, c.relname::pg_catalog.text
  FROM own JOIN pg_catalog.pg_class c ON c.oid = own.oid
 ORDER BY own.oid"
);

/// What uses column $3 (name; $2 its number in the table) of partitioned
/// table $1 (oid) or of any of its partitions, other than the column's own
/// default, the table's indexes (rebuildable: on columns, or with
/// expressions or a predicate and no constraint, see `shapes`; behind no
/// constraint but the table's own primary key or unique constraint, see
/// `key_tree`: none a foreign key references) with their partitions' (and
/// their constraints), the table's `serial` sequence (it follows the column,
/// as on a plain table), a leaf partition's own plain indexes
/// (attached to none of the table's; see `leaf_indexes`), the table's CHECK constraints
/// with their partitions' inherited copies (a partition's own, even merged
/// with the table's, stays: dropping the table's would leave it), and the
/// table's own validated foreign keys to a table that is not partitioned
/// with their partitions' copies (see `part_keys`) (see [`PARTITIONS`]).
pub const PARTITIONS_USERS: &str = concat!(
    "
WITH RECURSIVE t AS (SELECT p.relid AS oid FROM pg_catalog.pg_partition_tree($1::text::oid::pg_catalog.regclass) p),
col AS (SELECT t.oid, a.attnum FROM t
          JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attname = $3::text::name AND NOT a.attisdropped),
plain(oid) AS (
    SELECT x.indexrelid FROM pg_catalog.pg_index x
     WHERE x.indrelid = $1::text::oid
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = x.indexrelid
                        AND NOT (k.contype IN ('p', 'u') AND k.conrelid = x.indrelid))
       AND ",
    rebuildable!(),
    "
    UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN plain ON i.inhparent = plain.oid),
own(oid, tab) AS (",
    own_indexes!(),
    "),
keys(oid) AS (
    SELECT k.oid FROM pg_catalog.pg_constraint k
     WHERE k.conrelid = $1::text::oid AND k.contype = 'f' AND k.conparentid = 0 AND $2::pg_catalog.int4 = ANY (k.conkey)
       AND k.convalidated AND k.confdelsetcols IS NULL AND k.confrelid <> k.conrelid
       AND (SELECT rc.relkind FROM pg_catalog.pg_class rc WHERE rc.oid = k.confrelid) <> 'p'
       AND ",
    key_is_built_in!(),
    "
    UNION SELECT k.oid FROM pg_catalog.pg_constraint k JOIN keys ON k.conparentid = keys.oid)
SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM col JOIN pg_catalog.pg_depend d
    ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = col.oid AND d.refobjsubid = col.attnum
 WHERE d.deptype <> 'i'
   AND NOT (d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
            AND d.objid IN (SELECT ad.oid FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid = col.oid AND ad.adnum = col.attnum))
   AND NOT (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid IN (SELECT plain.oid FROM plain))
   AND NOT (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid IN (SELECT own.oid FROM own))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid IN (SELECT keys.oid FROM keys))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
            AND d.objid IN (SELECT k.oid FROM pg_catalog.pg_constraint k JOIN plain ON k.conindid = plain.oid
                             WHERE k.contype IN ('p', 'u')))
   AND NOT (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'a' AND col.oid = $1::text::oid
            AND d.objid IN (SELECT s.oid FROM pg_catalog.pg_class s WHERE s.relkind = 'S'))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
            AND d.objid IN (SELECT k.oid FROM pg_catalog.pg_constraint k
                             WHERE k.contype = 'c'
                               AND (k.conrelid = $1::text::oid
                                    OR (NOT k.conislocal AND k.conrelid IN (SELECT t.oid FROM t)
                                        AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint rk
                                                     WHERE rk.conrelid = $1::text::oid AND rk.contype = 'c'
                                                       AND rk.conname = k.conname)))))
 ORDER BY 1"
);

/// Objects that use the column (other than its own default, what pgshift
/// builds again on the new column, and the table's CHECK constraints and the
/// column's own foreign keys with built-in types and operators, which get
/// twins: see `checks` and `own_keys`).
pub const USERS: &str = concat!(
    "
SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_catalog.pg_depend d
 WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = $1::text::oid AND d.refobjsubid = $2::int4
   AND d.deptype <> 'i'
   AND NOT (d.classid = 'pg_catalog.pg_attrdef'::regclass
            AND d.objid IN (SELECT ad.oid FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid = $1::text::oid AND ad.adnum = $2::int4))
   AND NOT (d.classid = 'pg_catalog.pg_class'::regclass
            AND d.objid IN (SELECT x.indexrelid FROM pg_catalog.pg_index x WHERE x.indrelid = $1::text::oid AND ",
    rebuildable!(),
    "))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::regclass
            AND d.objid IN (SELECT k.oid FROM pg_catalog.pg_constraint k
                              JOIN pg_catalog.pg_index x ON x.indexrelid = k.conindid
                             WHERE k.conrelid = $1::text::oid AND k.contype IN ('p', 'u') AND ",
    rebuildable!(),
    "))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::regclass
            AND d.objid IN (SELECT k.oid FROM pg_catalog.pg_constraint k
                              JOIN pg_catalog.pg_index x ON x.indexrelid = k.conindid
                             WHERE k.confrelid = $1::text::oid AND k.contype = 'f' AND x.indrelid = $1::text::oid AND ",
    rebuildable!(),
    "))
   AND NOT (d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'a'
            AND d.objid IN (SELECT s.oid FROM pg_catalog.pg_class s WHERE s.relkind = 'S'))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::regclass
            AND d.objid IN (SELECT k.oid FROM pg_catalog.pg_constraint k
                             WHERE k.conrelid = $1::text::oid AND k.contype = 'c'))
   AND NOT (d.classid = 'pg_catalog.pg_constraint'::regclass
            AND d.objid IN (SELECT k.oid FROM pg_catalog.pg_constraint k
                             WHERE k.conrelid = $1::text::oid AND k.contype = 'f' AND k.confdelsetcols IS NULL
                               AND NOT (k.confrelid = k.conrelid AND $2::int4 = ANY (k.confkey))
                               AND ",
    key_is_built_in!(),
    "))
 ORDER BY 1"
);

/// The foreign keys that reference index $2 (oid) of table $1: each one's table
/// (oid, and qualified), name, and definition (`FOREIGN KEY (…) REFERENCES …`,
/// without NOT VALID).
pub const FOREIGN_KEYS: &str = "
SELECT k.conrelid::pg_catalog.text, pg_catalog.format('%I.%I', n.nspname, c.relname), k.conname::pg_catalog.text,
       pg_catalog.regexp_replace(pg_catalog.pg_get_constraintdef(k.oid), ' NOT VALID$', '')
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE k.contype = 'f' AND k.confrelid = $1::text::oid AND k.conindid = $2::text::oid
   AND k.conparentid = 0
 ORDER BY k.oid";

/// The sequences owned by column $2 (attnum) of table $1 (`serial`), qualified.
pub const OWNED_SEQUENCES: &str = "
SELECT pg_catalog.format('%I.%I', n.nspname, s.relname)
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
 WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
   AND d.refobjid = $1::text::oid AND d.refobjsubid = $2::int4 AND d.deptype = 'a'
 ORDER BY 1";

/// The indexes of table $1 on column $2 (attnum) that pgshift builds again on the
/// new column, with what it takes to build them, and the name and kind (`p`,
/// `u`) of the constraint behind it, if one is.
pub const REBUILDABLE: &str = concat!(
    "
SELECT x.indexrelid::pg_catalog.text, c.relname::pg_catalog.text, am.amname::pg_catalog.text,
       x.indisunique, x.indnullsnotdistinct, x.indnkeyatts::pg_catalog.int4,
       ARRAY(SELECT a.attname::pg_catalog.text
               FROM pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
              ORDER BY k.ord),
       x.indoption::pg_catalog.int2[]::pg_catalog.int4[],
       COALESCE(c.reloptions, '{}')::pg_catalog.text[],
       t.spcname::pg_catalog.text,
       (SELECT k.conname::pg_catalog.text FROM pg_catalog.pg_constraint k
         WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u')),
       (SELECT k.contype::pg_catalog.text FROM pg_catalog.pg_constraint k
         WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u')),
       x.indisreplident, x.indisclustered,
       x.indexprs IS NOT NULL OR x.indpred IS NOT NULL
  FROM pg_catalog.pg_index x
  JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = c.relam
  LEFT JOIN pg_catalog.pg_tablespace t ON t.oid = c.reltablespace
 WHERE x.indrelid = $1::text::oid AND ",
    rebuildable!(),
    "
 ORDER BY x.indexrelid"
);

/// The primary key's columns and their types, in key order.
pub(super) const KEY: &str = "
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_index x
  CROSS JOIN LATERAL pg_catalog.unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
 WHERE x.indrelid = $1::text::oid AND x.indisprimary
 ORDER BY k.ord";

/// The columns the transform reads, with their types.
pub const VARS: &str = "
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = $1::text::oid AND a.attname::text = ANY ($2::text[]) AND NOT a.attisdropped
 ORDER BY a.attnum";

/// What `start` tells the client.
pub struct Started {
    pub id: i64,
    pub describe: String,
}

pub async fn start<C: Conn>(
    io: &mut C,
    cx: &SessionCx<'_>,
    step_cx: &StepContext<'_>,
    spec: &Spec,
    statement: &str,
) -> Result<Started, Failure> {
    let probe = probe(io, spec, cx.session_id).await?;
    let settings = cx.settings;
    let book = cx.engine.books.get(cx.database);
    let rt = cx.engine.books.runtime().clone();
    let new_column = parked_name(&spec.column, "__pgshift_new");
    let looked = book
        .service_query(
            settings,
            &rt,
            LOOK,
            &[
                &probe.table_oid.to_string(),
                &spec.column,
                &probe.type_oid.to_string(),
                &probe.typmod,
                &new_column,
                &parked_name(&spec.column, "__pgshift_old"),
            ],
        )
        .await
        .map_err(|e| refusal("58000", e.to_string(), e.hint()))?;
    let Some(row) = looked.first() else {
        return Err(not_yet(
            "the service connection does not see the table or column".into(),
        ));
    };
    let (schema, table, relkind): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let may_own: bool = row.get(3);
    let attnum: i32 = row.get(4);
    let not_null: bool = row.get(5);
    let (identity, generated): (String, String) = (row.get(6), row.get(7));
    let old_type: String = row.get(8);
    let column_default: Option<String> = row.get(9);
    let new_type: String = row.get(10);
    let (element_kind, kind): (Option<String>, Option<String>) = (row.get(11), row.get(12));
    let inherits: bool = row.get(13);
    let reltuples: i64 = row.get(14);
    let taken: bool = row.get(15);
    let service_user = &settings.config.upstream.service_user;
    let qualified = crate::sql::ident::qualified(&schema, &table);
    if relkind != "r" && relkind != "p" {
        return Err(not_yet(format!("{qualified} is not a table")));
    }
    if inherits {
        return Err(not_yet(format!(
            "{qualified} has inheritance parents or children"
        )));
    }
    if !identity.is_empty() || !generated.is_empty() {
        return Err(not_yet(format!(
            "{} is an identity or generated column",
            quote(&spec.column)
        )));
    }
    if kind.as_deref() == Some("d") || element_kind.as_deref() == Some("d") {
        return Err(not_yet(format!("the new type {new_type} is a domain, whose checks pgshift would run as its service role")));
    }
    if probe.type_oid >= 16384 {
        return Err(not_yet(format!(
            "the new type {new_type} is not built in (its casts and input functions would run as pgshift's service role)"
        )));
    }
    if taken {
        // Made by a rollout of the column another proxy started a moment ago.
        let found = not_yet(format!(
            "{qualified} already has a column named {}",
            quote(&new_column)
        ));
        return Err(raced(cx, probe.table_oid, &spec.column, &qualified, found).await);
    }
    if !may_own {
        return Err(refusal(
            "42501",
            format!("pgshift's service role {service_user:?} cannot alter {qualified}: the rollout's backfill, cutover and cleanup run on its connection"),
            &format!("Grant the table's owner role to it (GRANT <owner> TO {}), or run the ALTER with SET pgshift.bypass = on.", quote(service_user)),
        ));
    }
    let partitioned = relkind == "p";
    if partitioned {
        let found = book
            .service_query(
                settings,
                &rt,
                PARTITIONS,
                &[&probe.table_oid.to_string(), &spec.column],
            )
            .await
            .map_err(|e| refusal("58000", e.to_string(), e.hint()))?;
        if let Some(row) = found.first() {
            let (code, message): (String, String) = (row.get(0), row.get(1));
            return Err(match code.as_str() {
                // As the ALTER fails directly.
                "42P16" => Failure::Server(ServerError::from_fields(vec![
                    (b'S', "ERROR".into()),
                    (b'V', "ERROR".into()),
                    (b'C', code.clone()),
                    (b'M', message),
                ])),
                "42501" => refusal(
                    &code,
                    message,
                    &format!("Grant the partitions' owner roles to it (GRANT <owner> TO {}), or run the ALTER with SET pgshift.bypass = on.", quote(service_user)),
                ),
                _ => not_yet(message),
            });
        }
    }
    let users = match partitioned {
        true => {
            book.service_query(
                settings,
                &rt,
                PARTITIONS_USERS,
                &[&probe.table_oid.to_string(), &attnum, &spec.column],
            )
            .await
        }
        false => {
            book.service_query(
                settings,
                &rt,
                USERS,
                &[&probe.table_oid.to_string(), &attnum],
            )
            .await
        }
    }
    .map_err(|e| refusal("58000", e.to_string(), e.hint()))?;
    if !users.is_empty() {
        let list: Vec<String> = users
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect();
        let carried = match partitioned {
            true => "on a partitioned table, pgshift carries over the table's indexes, primary key and unique constraints (none referenced by a foreign key), its serial sequence, the leaf partitions' own plain indexes, the table's CHECK constraints and foreign keys only, so far",
            false => "pgshift carries over plain indexes, primary keys, unique constraints and the foreign keys that reference them, and CHECK constraints; other users of the column come later",
        };
        // The users may be a rollout's another proxy started a moment ago
        // (its trigger on the column).
        let found = not_yet(format!(
            "{} is used by {} ({carried})",
            quote(&spec.column),
            list.join(", ")
        ));
        return Err(raced(cx, probe.table_oid, &spec.column, &qualified, found).await);
    }
    let key = book
        .service_query(settings, &rt, KEY, &[&probe.table_oid.to_string()])
        .await
        .map_err(|e| refusal("58000", e.to_string(), e.hint()))?;
    // No primary key: the backfill walks the table by pages (see
    // `driver::walk_pages`).
    let key_columns: Vec<String> = key.iter().map(|r| r.get(0)).collect();
    if partitioned && key_columns.is_empty() {
        // Pages and row ids are each partition's own.
        return Err(not_yet(format!(
            "{qualified} is partitioned and has no primary key (pgshift walks a partitioned table by it)"
        )));
    }
    let transform = spec.transform();
    if transform.contains("$pgshift$") || probe.uses.iter().any(|c| sql::clashes_with_plpgsql(c)) {
        return Err(not_yet(
            "the new value's expression uses names pgshift's mirror function reserves".into(),
        ));
    }
    let mut pinned = key_columns.clone();
    pinned.extend(probe.uses.iter().cloned());
    let foreign = book
        .service_query(
            settings,
            &rt,
            sql::FOREIGN_CODE,
            &[
                &probe.table_oid.to_string(),
                &"",
                &"",
                &qualified,
                &pinned,
                &key_columns,
                &"",
            ],
        )
        .await
        .map_err(|e| refusal("58000", e.to_string(), e.hint()))?;
    if !foreign.is_empty() {
        let list: Vec<String> = foreign.iter().map(|r| r.get(0)).collect();
        return Err(refusal(
            "42501",
            format!(
                "pgshift cannot roll out a column of {qualified}: updating its rows as pgshift's service role would run code it did not write ({})",
                list.join("; ")
            ),
            "Triggers, rules and non-built-in functions in constraints, indexes or generated columns run with the privileges of whoever updates the row. Drop or disable them for the rollout, or run the ALTER with SET pgshift.bypass = on.",
        ));
    }
    let inserted = book
        .service_query(
            settings,
            &rt,
            "INSERT INTO pgshift.rollouts (username, statement, table_oid, schema_name, table_name, column_name, new_column, \
             old_type, new_type, transform, uses, key_columns, not_null, column_default, phase, paused, rows_per_second, rows_done, rows_total) \
             VALUES ($1, $2, $3::text::oid, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'planned', false, $15, 0, $16) ON CONFLICT DO NOTHING RETURNING id",
            &[
                &cx.user,
                &statement,
                &probe.table_oid.to_string(),
                &schema,
                &table,
                &spec.column,
                &new_column,
                &old_type,
                &new_type,
                &transform,
                &probe.uses,
                &key_columns,
                &not_null,
                &column_default,
                &(settings.config.rollout.rows_per_second as i64),
                &reltuples.max(0),
            ],
        )
        .await
        .map_err(service_failure)?;
    let Some(id) = inserted.first().map(|r| r.get::<_, i64>(0)) else {
        return Err(column_taken(cx, probe.table_oid, &spec.column, &qualified).await);
    };
    // The driver's connection holds the rollout's lock from now on: no other
    // proxy touches a rollout whose start is still running.
    let driver_conn = driver::Driver::connect(settings, cx.database, &rt, id)
        .await
        .map_err(service_failure)?;
    let rollout = driver_conn.load().await.map_err(service_failure)?;
    let expanded = async {
        // The column's CHECK constraints and shaped indexes must work with the
        // new type (their twins come before the cutover): the direct ALTER
        // fails at once.
        // Its foreign keys too (the ALTER adds them again over the new type).
        if let Some(misfit) = driver_conn.keys_fit(&rollout).await.map_err(|e| not_yet(e.reason))? {
            return Err(Failure::Server(ServerError::from_fields(vec![
                (b'S', "ERROR".into()),
                (b'V', "ERROR".into()),
                (b'C', "42804".into()),
                (b'M', misfit.message),
                (b'D', misfit.detail),
            ])));
        }
        let fit = match driver_conn.checks_fit(&rollout).await {
            Ok(()) => driver_conn.shapes_fit(&rollout).await,
            failed => failed,
        };
        if let Err(e) = fit {
            let e = match e {
                super::checks::CheckError::Server(e) => e,
                super::checks::CheckError::Foreign(what) => {
                    return Err(refusal(
                        "42501",
                        format!("pgshift cannot roll out this type change: a CHECK constraint or index on {} uses {what}, which pgshift would run as its service role", quote(&spec.column)),
                        "Only built-in functions, operators and types may stand in the column's CHECK constraints and indexes. Run the ALTER yourself with SET pgshift.bypass = on.",
                    ))
                }
                super::checks::CheckError::Step(e) => return Err(not_yet(e.reason)),
            };
            let service_user = &settings.config.upstream.service_user;
            return Err(match e.as_db_error() {
                // Not the constraint's fault: the look itself could not run.
                Some(db) if db.code().code() == "42501" => refusal(
                    "42501",
                    format!(
                        "pgshift could not check the CHECK constraints and indexes on {} against the new type: {} (it uses a temporary, empty copy of the table)",
                        quote(&spec.column),
                        db.message()
                    ),
                    &format!("Grant it: GRANT TEMPORARY ON DATABASE {} TO {}.", quote(cx.database), quote(service_user)),
                ),
                Some(db) if matches!(db.code().code(), "55P03" | "57014" | "40P01") => refusal(
                    db.code().code(),
                    format!(
                        "pgshift could not check the CHECK constraints and indexes on {} against the new type: {}",
                        quote(&spec.column),
                        db.message()
                    ),
                    "Another session held the table meanwhile; run the ALTER again.",
                ),
                Some(db) => refusal(
                    db.code().code(),
                    format!(
                        "pgshift cannot roll out this type change: a CHECK constraint or index on {} does not work with the new type: {}",
                        quote(&spec.column),
                        db.message()
                    ),
                    db.hint().unwrap_or(
                        "Directly, the ALTER fails the same way: change or drop the constraint first.",
                    ),
                ),
                None => service_failure(e),
            });
        }
        driver_conn
            .install_function(&rollout, driver::Mirror::Strict)
            .await
            .map_err(service_failure)?;
        let step = Step::quick(sql::expand(&rollout), Lock::AccessExclusive);
        let step_cx = StepContext {
            table: Some(&spec.table),
            original: "",
            ..step_cx.clone()
        };
        // Other proxies hold their sessions for it too (see `watch`).
        let _announced = super::watch::announce(
            &driver_conn.client,
            &cx.engine.rollouts,
            cx.database,
            rollout.id,
        )
        .await
        .map_err(|e| {
            refusal(
                "55P03",
                format!("pgshift could not start the rollout: {e}"),
                "Run the ALTER again in a moment.",
            )
        })?;
        // The new column changes what `SELECT *` returns: like the cutover, the
        // expand's lock window holds sessions about to use a statement that
        // reads the table, after those already sent.
        let swap = cx
            .engine
            .rollouts
            .swap(cx.database, &rollout.table, rollout.table_oid, &rollout.partitions);
        swap.settle(false).await;
        steps::run(io, &step, Mode::Autocommit, &step_cx).await?;
        // Known before the sessions held for the window go on, and before the
        // client hears of it: they hide the new column, and its next COPY gets
        // a column list.
        let running = &cx.engine.rollouts;
        let entered = running.enter(cx.database, id);
        running.describe(cx.database, &rollout, false);
        drop(swap);
        Ok::<_, Failure>(entered)
    }
    .await;
    match expanded {
        Ok(entered) => {
            let describe = rollout.describe();
            driver_conn
                .drive_started(
                    &rollout,
                    cx.engine.background().clone(),
                    cx.database.to_string(),
                    cx.engine.rollouts.clone(),
                    entered,
                )
                .await;
            Ok(Started { id, describe })
        }
        Err(f) => {
            let why = crate::engine::failure_text(&f);
            let _ = driver_conn.abandon(&rollout, &why).await;
            Err(f)
        }
    }
}
