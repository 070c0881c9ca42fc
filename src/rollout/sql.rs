//! The SQL a rollout runs, built from its row. Every name is quoted and qualified;
//! every function pgshift creates pins its search_path; the transform is the one
//! expression vetted when the rollout started (built-in, immutable, over the row's
//! own columns).

use super::model::Rollout;
use crate::sql::ident::{literal, quote};

/// An identifier, always double-quoted (PL/pgSQL has reserved words of its own).
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The mirror function: a BEFORE row trigger that sets `target` from the row's
/// columns `vars` (name, type), which it copies into variables of the same names
/// so that `expr` reads them as written. A value that does not convert fails the
/// application's write with the server's own error, as it would once the type had
/// changed in place (storing NULL instead would let a cutover lose the value); a
/// `lenient` mirror (the rollout failed: the application must not pay for it)
/// stores NULL instead. A column renamed since stores NULL (SQLSTATE 42703 is
/// caught): writes go on, and the next batch or verify pass stops the rollout.
/// It runs as whoever writes, with search_path pinned to pg_catalog: the
/// transform's functions and operators are the built-in ones it was checked
/// with, whatever the writer's path holds (a `public.lower(varchar)` of another
/// user's would otherwise run as every writer).
pub fn trigger_function(
    name: &str,
    vars: &[(String, String)],
    target: &str,
    expr: &str,
    lenient: bool,
) -> String {
    let declare: String = vars
        .iter()
        .map(|(col, ty)| format!("    {} {ty};\n", quoted(col)))
        .collect();
    let assign: String = vars
        .iter()
        .map(|(col, _)| format!("        {} := NEW.{};\n", quoted(col), quoted(col)))
        .collect();
    let target = quoted(target);
    let caught = if lenient {
        "OTHERS"
    } else {
        "undefined_column"
    };
    let body = format!(
        "\nDECLARE\n{declare}BEGIN\n\
         \x20   BEGIN\n{assign}\
         \x20       NEW.{target} := ({expr});\n\
         \x20   EXCEPTION WHEN {caught} THEN\n\
         \x20       NEW.{target} := NULL;\n\
         \x20   END;\n\
         \x20   RETURN NEW;\n\
         END\n"
    );
    pinned_function(name, &body)
}

/// A trigger function with `body` (dollar-quoted with a tag that occurs nowhere
/// in it), SECURITY INVOKER, search_path pinned.
pub(super) fn pinned_function(name: &str, body: &str) -> String {
    let tag = dollar_tag(body);
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER \
         SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on \
         AS {tag}{body}{tag}"
    )
}

/// The mirror function after the cutover. An INSERT that puts a value into the
/// old column wrote by position (`INSERT INTO t VALUES (…)` in the table's old
/// order: the old column stands where the column stood, and nothing else names
/// it): the column gets that value, converted as the new type converts what is
/// stored into it (as a direct INSERT into the changed column would); a value it
/// cannot take fails the write. Otherwise, when the new value casts back
/// (`reversible`), the old column gets it cast back, or NULL when the old type
/// cannot hold it (a rollback then refuses: it would lose it).
pub fn after_cutover_function(
    name: &str,
    column: &str,
    old_column: &str,
    reversible: bool,
) -> String {
    let (column, old) = (quoted(column), quoted(old_column));
    let back = match reversible {
        true => format!(
            "    ELSE\n\
             \x20       BEGIN\n\
             \x20           NEW.{old} := NEW.{column};\n\
             \x20       EXCEPTION WHEN OTHERS THEN\n\
             \x20           NEW.{old} := NULL;\n\
             \x20       END;\n"
        ),
        false => String::new(),
    };
    let body = format!(
        "\nBEGIN\n\
         \x20   IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' AND NEW.{old} IS NOT NULL THEN\n\
         \x20       NEW.{column} := NEW.{old};\n\
         {back}\
         \x20   END IF;\n\
         \x20   RETURN NEW;\n\
         END\n"
    );
    pinned_function(name, &body)
}

/// The mirror function for a plain type change whose assignment cast cannot
/// fail (a wider integer, numeric, text…): the copy alone, no variables and no
/// exception block (a subtransaction per row).
pub fn copy_function(name: &str, source: &str, target: &str) -> String {
    let body = format!(
        "\nBEGIN\n    NEW.{} := NEW.{};\n    RETURN NEW;\nEND\n",
        quoted(target),
        quoted(source)
    );
    let tag = dollar_tag(&body);
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER \
         AS {tag}{body}{tag}"
    )
}

/// True when Postgres' assignment cast from `from` to `to` (types as
/// `format_type` prints them) never fails: a wider integer, an integer to
/// unconstrained numeric or double precision, real to double precision, a
/// string to text.
pub fn widening(from: &str, to: &str) -> bool {
    let ints = ["smallint", "integer", "bigint"];
    let rank = |t: &str| ints.iter().position(|i| *i == t);
    match (rank(from), rank(to)) {
        (Some(f), Some(t)) => return f <= t,
        (Some(_), None) => return matches!(to, "numeric" | "double precision"),
        _ => {}
    }
    let string =
        from.starts_with("character varying") || from.starts_with("character(") || from == "text";
    (from == "real" && to == "double precision") || (string && to == "text")
}

/// True when `from` widens to `to` among the integers, or to unconstrained
/// numeric: equality in the new type then means the same value (no collation,
/// no signed zero), so a trigger can skip a row whose new column is equal.
pub fn guarded(from: &str, to: &str) -> bool {
    let ints = ["smallint", "integer", "bigint"];
    ints.contains(&from) && (to == "numeric" || ints.contains(&to)) && widening(from, to)
}

/// A dollar-quote tag that does not occur in `body`.
pub fn dollar_tag(body: &str) -> String {
    let mut n: u64 = 0;
    loop {
        let tag = format!("$pgshift{n}$");
        if !body.contains(&tag) && !body.contains(&format!("$pgshift{n}")) {
            return tag;
        }
        n += 1;
    }
}

/// Names that would clash with PL/pgSQL's own inside the mirror function.
pub fn clashes_with_plpgsql(column: &str) -> bool {
    let lower = column.to_ascii_lowercase();
    matches!(lower.as_str(), "new" | "old" | "found") || lower.starts_with("tg_")
}

/// The expand step, in the client's session: the new column and the trigger that
/// mirrors every write of a column the transform reads (or of the key) into it,
/// in one transaction. ENABLE ALWAYS: it fires for logical replication's apply too.
pub fn expand(r: &Rollout) -> String {
    let n = r.names();
    // The key columns too: a row whose key changes may move behind the walk's
    // cursor, and its new value must be right without the walk.
    let mut of: Vec<String> = Vec::new();
    for c in r
        .uses
        .iter()
        .chain(&r.key_columns)
        .chain(std::iter::once(&r.column))
    {
        let q = quote(c);
        if !of.contains(&q) {
            of.push(q);
        }
    }
    // A row whose new column already holds the value (the statement set it, or
    // the backfill did) does not enter the function. Operators by their
    // pg_catalog names: the expand runs on the client's search_path.
    let when = match r.guarded() {
        true => format!(
            "WHEN ((NEW.{new} OPERATOR(pg_catalog.=) NEW.{old}) IS NOT TRUE \
             AND (NEW.{new} IS NOT NULL OR NEW.{old} IS NOT NULL)) ",
            new = quote(&r.new_column),
            old = quote(&r.column)
        ),
        false => String::new(),
    };
    format!(
        "ALTER TABLE {t} ADD COLUMN {new} {ty}; \
         CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OF {of} ON {t} FOR EACH ROW {when}EXECUTE FUNCTION {f}(); \
         ALTER TABLE {t} ENABLE ALWAYS TRIGGER {trigger}",
        t = r.qualified(),
        new = quote(&r.new_column),
        ty = r.new_type,
        trigger = quote(&n.trigger),
        of = of.join(", "),
        f = n.function,
    )
}

/// `(k1, k2)` and `(($1::text)::t1, ($2::text)::t2)` for keyset comparisons.
pub fn key_tuple(keys: &[(String, String)], first_param: usize) -> (String, String) {
    let cols: Vec<String> = keys.iter().map(|(k, _)| quote(k)).collect();
    let params: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("(${}::pg_catalog.text)::{ty}", first_param + i))
        .collect();
    (
        format!("({})", cols.join(", ")),
        format!("({})", params.join(", ")),
    )
}

/// The key columns as text, named apart from the columns: ORDER BY a bare name
/// means an output column first, and `id::text AS id` would sort the keys as text.
fn key_texts(keys: &[(String, String)]) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, (k, _))| format!("{}::pg_catalog.text AS pgshift_key_{i}", quote(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_order(keys: &[(String, String)], direction: &str) -> String {
    keys.iter()
        .map(|(k, _)| format!("{}{direction}", quote(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table's last key now, as text: a pass walks up to it. Every row with a
/// greater key was written after the mirror went on (the expand's lock waited
/// for every transaction that wrote the table), and the mirror set its value.
pub fn last_key(r: &Rollout, keys: &[(String, String)]) -> String {
    format!(
        "SELECT {} FROM {} ORDER BY {} LIMIT 1",
        key_texts(keys),
        r.target(),
        key_order(keys, " DESC"),
    )
}

/// The last key of the next batch of at most `rows` rows after the given key
/// (none: from the start) and up to the pass's last key. Parameters: the keys'
/// values as text, `after`'s first. The count is written into the text: with a
/// parameter there, the planner cannot tell the OFFSET is small and sorts the
/// whole table (a parallel scan per batch).
pub fn batch_end(r: &Rollout, keys: &[(String, String)], after: bool, rows: u64) -> String {
    let conds = key_range(keys, after);
    format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {} OFFSET {} LIMIT 1",
        key_texts(keys),
        r.target(),
        conds.join(" AND "),
        key_order(keys, ""),
        rows.max(1) - 1,
    )
}

/// Keys after `$1..` (when `after`) and up to the next parameters.
fn key_range(keys: &[(String, String)], after: bool) -> Vec<String> {
    let mut conds = Vec::new();
    let mut next = 1;
    if after {
        let (cols, params) = key_tuple(keys, next);
        conds.push(format!("{cols} OPERATOR(pg_catalog.>) {params}"));
        next += keys.len();
    }
    let (cols, params) = key_tuple(keys, next);
    conds.push(format!("{cols} OPERATOR(pg_catalog.<=) {params}"));
    conds
}

/// Sets the new column where it differs from the transform, for keys after
/// `$1..` (when `after`) and up to the next parameters.
pub fn fill(r: &Rollout, keys: &[(String, String)], after: bool) -> String {
    let mut conds = key_range(keys, after);
    let new = quote(&r.new_column);
    conds.push(pending(r));
    format!(
        "UPDATE {} SET {new} = ({}) WHERE {}",
        r.target(),
        r.transform,
        conds.join(" AND ")
    )
}

/// A table without a primary key, walked by pages: its pages now, its rows per
/// page (estimated; 100 before it was ever analyzed), and its file node (a
/// VACUUM FULL or CLUSTER between two batches moves rows: the pass starts over).
/// $1 the table's oid (text).
pub const PAGES: &str = "
SELECT (pg_catalog.pg_relation_size(c.oid) OPERATOR(pg_catalog./)
        pg_catalog.current_setting('block_size')::pg_catalog.int8)::pg_catalog.text,
       (CASE WHEN c.relpages OPERATOR(pg_catalog.>) 0 AND c.reltuples OPERATOR(pg_catalog.>) 0
             THEN pg_catalog.ceil(c.reltuples OPERATOR(pg_catalog./) c.relpages)::pg_catalog.int8
             ELSE 100 END)::pg_catalog.text,
       c.relfilenode::pg_catalog.text
  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.oid";

/// Sets the new column where it differs from the transform, on pages `$1` up
/// to (not including) `$2` (a TID range scan).
pub fn fill_pages(r: &Rollout) -> String {
    let new = quote(&r.new_column);
    format!(
        "UPDATE {} SET {new} = ({}) WHERE ctid OPERATOR(pg_catalog.>=) \
         pg_catalog.format('(%s,0)', $1::pg_catalog.text)::pg_catalog.tid \
         AND ctid OPERATOR(pg_catalog.<) pg_catalog.format('(%s,0)', $2::pg_catalog.text)::pg_catalog.tid \
         AND {}",
        r.target(),
        r.transform,
        pending(r)
    )
}

/// Whether any row of `table` (a partition, named as its `regclass` reads)
/// has a new value other than the transform's.
pub fn differs_in(r: &Rollout, table: &str) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {})", pending(r))
}

/// The rows a batch sets: where the new column differs from the transform; for
/// a fill, rows older than the column whose value is still NULL.
fn pending(r: &Rollout) -> String {
    let new = quote(&r.new_column);
    match (r.fill, r.fill_before) {
        (true, before) => format!(
            "{new} IS NULL AND pg_catalog.age(xmin) OPERATOR(pg_catalog.>) pg_catalog.age('{}'::pg_catalog.xid)",
            // The driver runs no batch of a fill without it; 0 fills nothing.
            before.unwrap_or(0)
        ),
        (false, _) => format!("{new} IS DISTINCT FROM {}", r.transform_cast()),
    }
}

/// One of the old column's indexes, as `REBUILDABLE` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldIndex {
    pub oid: u32,
    pub name: String,
    pub method: String,
    pub unique: bool,
    pub nulls_not_distinct: bool,
    /// Key columns first, then INCLUDE columns.
    pub columns: Vec<String>,
    pub key_columns: usize,
    /// Per key column: bit 1 DESC, bit 2 NULLS FIRST.
    pub options: Vec<i32>,
    /// `name=value` storage parameters.
    pub reloptions: Vec<String>,
    pub tablespace: Option<String>,
    /// The constraint standing on it (a primary key or unique constraint), by name.
    pub constraint: Option<(String, super::model::Constraint)>,
    /// The table's replica identity (REPLICA IDENTITY USING INDEX).
    pub replica_identity: bool,
    /// The index the table is clustered on (CLUSTER ON).
    pub clustered: bool,
    /// It has expressions or a predicate: its twin is built from `definition`.
    pub shaped: bool,
    /// A shaped index's twin, from `USING` on, as Postgres prints it once the
    /// column is renamed and of the new type (see `shapes`).
    pub definition: Option<String>,
}

impl OldIndex {
    /// The name its twin ends up with: the constraint's, or the index's own.
    pub fn final_name(&self) -> &str {
        self.constraint.as_ref().map_or(&self.name, |c| &c.0)
    }

    /// What the table says of this index besides the index itself (its replica
    /// identity, the index it is clustered on), for the twin that takes its name.
    pub fn table_marks(&self, table: &str) -> Vec<String> {
        index_marks(
            table,
            self.final_name(),
            self.replica_identity,
            self.clustered,
        )
    }
}

/// `table`'s REPLICA IDENTITY USING INDEX and CLUSTER ON, given to the index
/// named `name` (whichever holds that name when they run).
pub fn index_marks(
    table: &str,
    name: &str,
    replica_identity: bool,
    clustered: bool,
) -> Vec<String> {
    let name = quote(name);
    let mut marks = Vec::new();
    if replica_identity {
        marks.push(format!(
            "ALTER TABLE ONLY {table} REPLICA IDENTITY USING INDEX {name}"
        ));
    }
    if clustered {
        marks.push(format!("ALTER TABLE ONLY {table} CLUSTER ON {name}"));
    }
    marks
}

/// How a twin index is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `CONCURRENTLY`, on a table with rows.
    Concurrently,
    /// `ON ONLY` a partitioned table: the catalog entry its partitions'
    /// twins are attached to, in the cutover's lock window.
    Only,
}

/// `CREATE INDEX` of `old`'s twin named `name`, on `table` (qualified), with
/// column `to` in place of `from` (default operator classes and collations, as
/// the old index had).
pub fn twin_index(
    old: &OldIndex,
    name: &str,
    table: &str,
    build: Build,
    from: &str,
    to: &str,
) -> String {
    let (concurrently, only) = match build {
        Build::Concurrently => ("CONCURRENTLY ", ""),
        Build::Only => ("", "ONLY "),
    };
    let head = format!(
        "CREATE {}INDEX {concurrently}{} ON {only}{table}",
        if old.unique { "UNIQUE " } else { "" },
        quote(name),
    );
    if let Some(tail) = &old.definition {
        // Its tablespace is the session's default_tablespace (see `build_twins`):
        // TABLESPACE would have to stand before the predicate.
        return format!("{head} {tail}");
    }
    let column = |c: &String| match c == from {
        true => quote(to),
        false => quote(c),
    };
    let keys: Vec<String> = old.columns[..old.key_columns.min(old.columns.len())]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let o = old.options.get(i).copied().unwrap_or(0);
            let (desc, nulls_first) = (o & 1 != 0, o & 2 != 0);
            let mut k = column(c);
            if desc {
                k.push_str(" DESC");
            }
            if nulls_first != desc {
                k.push_str(if nulls_first {
                    " NULLS FIRST"
                } else {
                    " NULLS LAST"
                });
            }
            k
        })
        .collect();
    let include: Vec<String> = old.columns[old.key_columns.min(old.columns.len())..]
        .iter()
        .map(column)
        .collect();
    let mut sql = format!("{head} USING {} ({})", quote(&old.method), keys.join(", "));
    if !include.is_empty() {
        sql.push_str(&format!(" INCLUDE ({})", include.join(", ")));
    }
    if old.nulls_not_distinct {
        sql.push_str(" NULLS NOT DISTINCT");
    }
    let with: Vec<String> = old
        .reloptions
        .iter()
        .filter_map(|o| o.split_once('='))
        .map(|(k, v)| format!("{} = {}", quote(k), literal(v)))
        .collect();
    if !with.is_empty() {
        sql.push_str(&format!(" WITH ({})", with.join(", ")));
    }
    if let Some(space) = &old.tablespace {
        sql.push_str(&format!(" TABLESPACE {}", quote(space)));
    }
    sql
}

/// What would run as the service role when it updates the table, other than
/// built-in code and pgshift's own trigger: any row makes the rollout stop. Run
/// after the table is locked (SHARE UPDATE EXCLUSIVE or stronger: nobody can add
/// a trigger, rule, index or constraint, or rename the table, until commit).
/// A partitioned table is looked at whole: an UPDATE of it runs its
/// partitions' triggers, constraints and index expressions too (pgshift's
/// trigger has a clone on each, by the same name and function), and a lock
/// on it without ONLY locks them all.
///
/// Parameters: $1 the table's oid (text); $2 the name of pgshift's trigger allowed
/// on it now; $3 that trigger's function (regprocedure text, or empty); $4 the
/// name the statements use for the table; $5 columns whose type must be built in
/// (the keys, the new column, what the transform reads); $6 the primary key's
/// columns as the rollout walks them; $7 pgshift's own CHECK constraint. Other
/// rollouts' triggers on the table (their functions are pgshift's, in schema
/// pgshift, made by this role, for a rollout of this table) are allowed too:
/// two fills, or a fill and a type change, on one table.
///
/// Built-in means an oid below 16384 (FirstNormalObjectId): nobody but a
/// superuser can make a cast between built-in types, so the casts pgshift writes
/// are built-in too. Expressions stored in constraints, indexes, extended statistics (planning folds them) and generated
/// columns, and pgshift's trigger's WHEN clause, are read from their node trees:
/// every function, operator and type
/// they name must be built in, and functions immutable (a built-in that runs SQL
/// text, like query_to_xml, is not).
pub const FOREIGN_CODE: &str = r#"
WITH root AS (SELECT $1::pg_catalog.text::pg_catalog.oid AS oid),
-- The table, and its partitions at every level when it is partitioned; `at`
-- names a partition in what is found.
t AS (SELECT root.oid, '' AS at FROM root
      UNION ALL
      SELECT p.relid, pg_catalog.format(' of partition %s', p.relid::pg_catalog.regclass)
        FROM root, pg_catalog.pg_partition_tree(root.oid::pg_catalog.regclass) p
       WHERE p.relid OPERATOR(pg_catalog.<>) root.oid),
-- The mirror, reverse or fill function (pgshift's, in its own schema) of a
-- rollout of this very table: another table's would write columns this look
-- never pinned (their types' coercions could be the owner's code).
mine AS (SELECT p.oid FROM pg_catalog.pg_proc p, root
          WHERE p.pronamespace OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace('pgshift')::pg_catalog.oid
            AND p.proowner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
            AND p.proname OPERATOR(pg_catalog.~) '^(mirror|reverse)_[0-9]+$'
            AND EXISTS (SELECT 1 FROM pgshift.rollouts o
                         WHERE o.table_oid OPERATOR(pg_catalog.=) root.oid
                           AND o.id::pg_catalog.text OPERATOR(pg_catalog.=) pg_catalog.substring(p.proname::pg_catalog.text, '[0-9]+$'))),
trees(what, tree, own) AS (
    SELECT pg_catalog.format('constraint %s%s', k.conname, t.at), k.conbin::pg_catalog.text, false
      FROM pg_catalog.pg_constraint k, t
     WHERE k.conrelid OPERATOR(pg_catalog.=) t.oid AND k.conbin IS NOT NULL
       AND k.conname OPERATOR(pg_catalog.<>) $7::pg_catalog.text::pg_catalog.name
    UNION ALL
    SELECT pg_catalog.format('index %s', x.indexrelid::pg_catalog.regclass),
           COALESCE(x.indexprs::pg_catalog.text, '') OPERATOR(pg_catalog.||) COALESCE(x.indpred::pg_catalog.text, ''), false
      FROM pg_catalog.pg_index x, t WHERE x.indrelid OPERATOR(pg_catalog.=) t.oid
    UNION ALL
    SELECT pg_catalog.format('statistics object %s%s', s.stxname, t.at), COALESCE(s.stxexprs::pg_catalog.text, ''), false
      FROM pg_catalog.pg_statistic_ext s, t WHERE s.stxrelid OPERATOR(pg_catalog.=) t.oid
    UNION ALL
    SELECT pg_catalog.format('generated column %s%s', a.attname, t.at), ad.adbin::pg_catalog.text, false
      FROM pg_catalog.pg_attrdef ad, t, pg_catalog.pg_attribute a
     WHERE ad.adrelid OPERATOR(pg_catalog.=) t.oid AND a.attrelid OPERATOR(pg_catalog.=) ad.adrelid
       AND a.attnum OPERATOR(pg_catalog.=) ad.adnum AND a.attgenerated OPERATOR(pg_catalog.<>) ''
    UNION ALL
    SELECT pg_catalog.format('trigger %s%s', tg.tgname, t.at), tg.tgqual::pg_catalog.text,
           tg.tgname OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.name
           OR tg.tgfoid OPERATOR(pg_catalog.=) ANY (SELECT oid FROM mine)
      FROM pg_catalog.pg_trigger tg, t
     WHERE tg.tgrelid OPERATOR(pg_catalog.=) t.oid AND tg.tgqual IS NOT NULL),
refs AS (
    SELECT trees.what, m[1] AS kind, m[2]::pg_catalog.oid AS ref
      FROM trees, pg_catalog.regexp_matches(trees.tree, ':(funcid|opfuncid|hashfuncid|negfuncid|opno|[a-z_]*type|[a-z_]*typid|[a-z_]*typeid) ([0-9]+)', 'g') AS m
     -- A fill's trigger compares row versions' ages (stable: it reads the
     -- current transaction id, and runs no SQL).
     WHERE NOT (trees.own AND m[1] OPERATOR(pg_catalog.=) 'funcid'
                AND m[2]::pg_catalog.oid OPERATOR(pg_catalog.=) 'pg_catalog.age(pg_catalog.xid)'::pg_catalog.regprocedure::pg_catalog.oid))
SELECT 'it was renamed, moved or replaced'
  FROM root WHERE pg_catalog.to_regclass($4::pg_catalog.text) IS DISTINCT FROM root.oid
UNION ALL
SELECT pg_catalog.format('trigger %s%s', tg.tgname, t.at)
  FROM pg_catalog.pg_trigger tg, t
 WHERE tg.tgrelid OPERATOR(pg_catalog.=) t.oid AND NOT tg.tgisinternal
   AND NOT ((tg.tgname OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.name
             AND tg.tgfoid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(NULLIF($3::pg_catalog.text, ''))::pg_catalog.oid
             OR tg.tgfoid OPERATOR(pg_catalog.=) ANY (SELECT oid FROM mine))
            AND tg.tgenabled OPERATOR(pg_catalog.=) 'A'
            AND tg.tgoldtable IS NULL AND tg.tgnewtable IS NULL)
UNION ALL
SELECT pg_catalog.format('rule %s%s', w.rulename, t.at)
  FROM pg_catalog.pg_rewrite w, t
 WHERE w.ev_class OPERATOR(pg_catalog.=) t.oid AND w.ev_type OPERATOR(pg_catalog.<>) '1'
UNION ALL
SELECT 'it is a partition'
  FROM root
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) root.oid AND c.relispartition)
UNION ALL
SELECT pg_catalog.format('it%s has inheritance parents or children', t.at)
  FROM t
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                 JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
                WHERE (i.inhrelid OPERATOR(pg_catalog.=) t.oid OR i.inhparent OPERATOR(pg_catalog.=) t.oid)
                  AND NOT c.relispartition)
UNION ALL
SELECT pg_catalog.format('partition %s is not a table', c.oid::pg_catalog.regclass)
  FROM pg_catalog.pg_class c, t
 WHERE c.oid OPERATOR(pg_catalog.=) t.oid AND c.relkind NOT IN ('r', 'p')
UNION ALL
SELECT pg_catalog.format('row level security is forced on it%s', t.at)
  FROM pg_catalog.pg_class c, t
 WHERE c.oid OPERATOR(pg_catalog.=) t.oid AND c.relforcerowsecurity
UNION ALL
SELECT DISTINCT pg_catalog.format('column %s has type %s, which is not built in', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
  FROM pg_catalog.pg_attribute a, t
 WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($5::pg_catalog.text[])
   AND NOT a.attisdropped AND a.atttypid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
UNION ALL
SELECT pg_catalog.format('column %s is missing%s', c, t.at) FROM pg_catalog.unnest($5::pg_catalog.text[]) AS c, t
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) t.oid
                   AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) c AND NOT a.attisdropped)
UNION ALL
SELECT 'its primary key changed'
  FROM root
 WHERE (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.ord)
          FROM pg_catalog.pg_index x
          CROSS JOIN LATERAL pg_catalog.unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) x.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.attnum
         WHERE x.indrelid OPERATOR(pg_catalog.=) root.oid AND x.indisprimary) IS DISTINCT FROM NULLIF($6::pg_catalog.text[], '{}')
UNION ALL
SELECT DISTINCT pg_catalog.format('index %s uses an operator class that is not built in', x.indexrelid::pg_catalog.regclass)
  FROM pg_catalog.pg_index x, t
 WHERE x.indrelid OPERATOR(pg_catalog.=) t.oid
   AND EXISTS (SELECT 1 FROM pg_catalog.unnest(x.indclass::pg_catalog.oid[]) AS o WHERE o OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid)
UNION ALL
SELECT pg_catalog.format('index %s covers column %s of range type %s, whose subtype difference or canonical function is not built in',
       x.indexrelid::pg_catalog.regclass, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
  FROM pg_catalog.pg_index x, t, pg_catalog.pg_attribute a, pg_catalog.pg_type ty, pg_catalog.pg_range g
 WHERE x.indrelid OPERATOR(pg_catalog.=) t.oid AND a.attrelid OPERATOR(pg_catalog.=) x.indrelid
   AND a.attnum OPERATOR(pg_catalog.=) ANY (x.indkey::pg_catalog.int2[])
   AND ty.oid OPERATOR(pg_catalog.=) a.atttypid
   AND COALESCE(NULLIF(ty.typbasetype, 0::pg_catalog.oid), ty.oid) IN (g.rngtypid, g.rngmultitypid)
   AND (g.rngsubdiff::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
        OR g.rngcanonical::pg_catalog.oid OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid)
UNION ALL
SELECT pg_catalog.format('constraint %s%s uses an operator that is not built in', k.conname, t.at)
  FROM pg_catalog.pg_constraint k, t
 WHERE k.conrelid OPERATOR(pg_catalog.=) t.oid
   AND EXISTS (SELECT 1 FROM pg_catalog.unnest(k.conexclop) AS o WHERE o OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid)
UNION ALL
SELECT DISTINCT pg_catalog.format('%s uses %s %s', refs.what,
       CASE WHEN refs.kind IN ('funcid', 'opfuncid', 'hashfuncid', 'negfuncid') THEN 'function'
            WHEN refs.kind OPERATOR(pg_catalog.=) 'opno' THEN 'operator' ELSE 'type' END, refs.ref)
  FROM refs
 WHERE refs.ref OPERATOR(pg_catalog.>=) 16384::pg_catalog.oid
    OR (refs.kind IN ('funcid', 'opfuncid', 'hashfuncid', 'negfuncid') AND refs.ref OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
        AND (SELECT p.provolatile FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) refs.ref) IS DISTINCT FROM 'i')
    OR (refs.kind OPERATOR(pg_catalog.=) 'opno'
        AND (SELECT p.provolatile FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) o.oprcode
              WHERE o.oid OPERATOR(pg_catalog.=) refs.ref) IS DISTINCT FROM 'i')
"#;

/// What in the default of column $2 of table $1 (text oid, name) is not built in:
/// re-parsing the default's text (to move it at cutover) runs the input
/// functions of the types of its literals.
pub const DEFAULT_CODE: &str = r#"
SELECT pg_catalog.format('its default uses %s', m[2])
  FROM pg_catalog.pg_attrdef ad
  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum
  CROSS JOIN LATERAL pg_catalog.regexp_matches(ad.adbin::pg_catalog.text, ':([a-z_]+) ([0-9]+)', 'g') AS m
 WHERE ad.adrelid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.oid
   AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.name
   AND m[1] OPERATOR(pg_catalog.!~) '(typmod|location|len|varno|attno|levelsup|paramid|constvalue)'
   AND m[2]::pg_catalog.int8 OPERATOR(pg_catalog.>=) 16384
"#;

/// A statement's text as a literal, for the rows pgshift writes.
pub fn quoted_text(s: &str) -> String {
    literal(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rollout::model::{Phase, Rollout};

    pub(crate) fn sample() -> Rollout {
        Rollout {
            id: 7,
            table_oid: 1,
            schema: "app".into(),
            table: "Orders".into(),
            column: "amount".into(),
            new_column: "amount__pgshift_new".into(),
            old_type: "integer".into(),
            new_type: "bigint".into(),
            transform: "amount".into(),
            uses: vec!["amount".into()],
            key_columns: vec!["id".into()],
            not_null: false,
            column_default: None,
            phase: Phase::Backfilling,
            request: None,
            paused: false,
            rows_per_second: 0,
            rows_done: 0,
            rows_total: None,
            last_key: None,
            mismatches: None,
            error: None,
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
            checks: Vec::new(),
            leaf_indexes: Vec::new(),
            fill: false,
            column_committed: false,
            fill_before: None,
            batch_rows: None,
            partitioned: false,
            partitions: Vec::new(),
            attachments: Vec::new(),
        }
    }

    #[test]
    fn fill_reads_keys_as_text_parameters() {
        let r = sample();
        let keys = vec![("id".to_string(), "bigint".to_string())];
        assert_eq!(
            fill(&r, &keys, true),
            "UPDATE ONLY app.\"Orders\" SET amount__pgshift_new = (amount) WHERE (id) OPERATOR(pg_catalog.>) (($1::pg_catalog.text)::bigint) \
             AND (id) OPERATOR(pg_catalog.<=) (($2::pg_catalog.text)::bigint) AND amount__pgshift_new IS DISTINCT FROM CAST((amount) AS bigint)"
        );
        assert_eq!(
            batch_end(&r, &keys, false, 500),
            "SELECT id::pg_catalog.text AS pgshift_key_0 FROM ONLY app.\"Orders\" \
             WHERE (id) OPERATOR(pg_catalog.<=) (($1::pg_catalog.text)::bigint) ORDER BY id OFFSET 499 LIMIT 1"
        );
        assert!(batch_end(&r, &keys, true, 1).contains(
            "(($1::pg_catalog.text)::bigint) AND (id) OPERATOR(pg_catalog.<=) (($2::pg_catalog.text)::bigint) ORDER BY id OFFSET 0 LIMIT 1"
        ));
        assert_eq!(
            last_key(&r, &keys),
            "SELECT id::pg_catalog.text AS pgshift_key_0 FROM ONLY app.\"Orders\" ORDER BY id DESC LIMIT 1"
        );
    }

    #[test]
    fn an_index_twin_names_the_new_column_and_keeps_the_rest() {
        let r = sample();
        let old = OldIndex {
            oid: 1,
            name: "orders_amount".into(),
            method: "btree".into(),
            unique: true,
            nulls_not_distinct: true,
            columns: vec!["note".into(), "amount".into(), "id".into()],
            key_columns: 2,
            options: vec![3, 1],
            reloptions: vec!["fillfactor=70".into()],
            tablespace: None,
            constraint: None,
            replica_identity: false,
            clustered: false,
            shaped: false,
            definition: None,
        };
        assert_eq!(
            twin_index(&old, "pgshift_7_new_1", &r.qualified(), Build::Concurrently, "amount", "amount__pgshift_new"),
            "CREATE UNIQUE INDEX CONCURRENTLY pgshift_7_new_1 ON app.\"Orders\" USING btree \
             (note DESC, amount__pgshift_new DESC NULLS LAST) INCLUDE (id) NULLS NOT DISTINCT WITH (fillfactor = '70')"
        );
        assert_eq!(
            twin_index(&old, "pgshift_7_new_1", &r.qualified(), Build::Only, "amount", "amount__pgshift_new"),
            "CREATE UNIQUE INDEX pgshift_7_new_1 ON ONLY app.\"Orders\" USING btree \
             (note DESC, amount__pgshift_new DESC NULLS LAST) INCLUDE (id) NULLS NOT DISTINCT WITH (fillfactor = '70')"
        );
    }

    #[test]
    fn the_trigger_function_declares_what_the_transform_reads() {
        let f = trigger_function(
            "pgshift.mirror_7",
            &[("Amount".into(), "integer".into())],
            "amount__pgshift_new",
            "\"Amount\" * 100",
            false,
        );
        assert!(f.contains("\"Amount\" integer;"), "{f}");
        assert!(f.contains("WHEN undefined_column"), "{f}");
        assert!(f.contains("SET search_path = pg_catalog, pg_temp"), "{f}");
        assert!(f.contains("\"Amount\" := NEW.\"Amount\";"), "{f}");
        assert!(
            f.contains("NEW.\"amount__pgshift_new\" := (\"Amount\" * 100);"),
            "{f}"
        );
        assert!(f.contains("AS $pgshift0$"), "{f}");
        assert_eq!(dollar_tag("x $pgshift0$ y"), "$pgshift1$");
        assert!(f.contains("SECURITY INVOKER SET search_path"), "{f}");
        assert!(clashes_with_plpgsql("NEW") && clashes_with_plpgsql("tg_op"));
        assert!(!clashes_with_plpgsql("amount"));
        assert!(widening("integer", "bigint") && widening("smallint", "numeric"));
        assert!(widening("character varying(20)", "text"));
        assert!(!widening("bigint", "integer") && !widening("integer", "numeric(5,0)"));
        assert!(!widening("text", "integer") && !widening("numeric", "bigint"));
        let c = copy_function("pgshift.mirror_1", "amount", "amount__pgshift_new");
        assert!(
            c.contains("NEW.\"amount__pgshift_new\" := NEW.\"amount\";"),
            "{c}"
        );
        // A bare copy resolves no function or operator: no pinned path to pay for.
        assert!(c.contains("SECURITY INVOKER AS"), "{c}");
        let a = after_cutover_function("pgshift.reverse_1", "new", "new__pgshift_old", true);
        assert!(
            a.contains("NEW.\"new\" := NEW.\"new__pgshift_old\";"),
            "{a}"
        );
        assert!(!a.contains("DECLARE"), "no variable to shadow NEW: {a}");
    }
}
