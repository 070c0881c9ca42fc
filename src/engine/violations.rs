//! Inside a transaction block, the steps that read every row (a unique index
//! build, a VALIDATE) are deferred to after COMMIT. Directly, a row that breaks the
//! new rule fails the statement at once and the transaction with it; deferred, the
//! migration tool would record success and the failure would show up later in
//! `pgshift.deferred`. So before deferring, the rows are looked at in the client's
//! transaction, with Postgres' own SQLSTATE, message and DETAIL when one breaks it.
//!
//! The look is a plain query under ACCESS SHARE, taken before the transaction's
//! own steps (a NOT VALID constraint holds ACCESS EXCLUSIVE until COMMIT, and
//! the scan must not run under it), in a savepoint that is always rolled back
//! (its lock goes with it). A query that cannot run yet (it names a column the
//! same statement adds) is forgotten, and the deferred step checks the rows
//! after COMMIT as before; so is a look that could differ from the check or
//! hold others up (see [`FACTS`]). A cancel ends the statement; the client's
//! statement_timeout only the look.
//!
//! Rows written between the look and COMMIT by other sessions are not seen:
//! those still fail the deferred step, recorded on its row. Where several keys
//! are duplicated, the DETAIL names the smallest; Postgres names the first pair
//! its sort happens to compare, which may be another.

use super::conn::{Conn, ServerError};
use super::steps::Failure;
use crate::sql::ident;
use crate::sql::plan::{Step, StepKind};
use crate::wire::backend::PgError;
use pg_query::protobuf::{AlterTableType, ConstrType, IndexStmt, Node};
use pg_query::NodeEnum;

/// A query that returns one row for the first rule broken (its key as text, one
/// column each), and the error that row stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Look {
    /// Empty for a foreign key until `complete` knows the referenced columns.
    query: String,
    /// The table as SQL, then (after `complete`) its name for the message.
    table: String,
    /// The table's schema (after `complete`), for the error's fields.
    schema: String,
    broken: Broken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Broken {
    /// 23505 `could not create unique index`, `Key (…)=(…) is duplicated.`
    Unique { index: String, key: Vec<String> },
    /// 23514 `check constraint … is violated by some row`.
    Check { name: String },
    /// 23502 `column … contains null values` (the CHECK standing in for NOT NULL).
    Null { column: String },
    /// 23503, `Key (…)=(…) is not present in table "…".`
    Reference {
        name: String,
        key: Vec<String>,
        /// The referenced table: as SQL, then its name for the message.
        referenced: String,
        /// Empty when the statement left them out: the referenced table's key.
        referenced_key: Vec<String>,
    },
}

/// Looks at the rows for every step of `deferred` that would read them;
/// `in_tx` are the steps that run in the transaction before those. Not after a
/// step, or work deferred earlier (`rows_pending`), that writes the rows (a
/// fill): until it runs they are not what the check will see.
pub async fn look<C: Conn>(
    conn: &mut C,
    in_tx: &[Step],
    deferred: &[Step],
    rows_pending: bool,
) -> Result<(), Failure> {
    if rows_pending {
        return Ok(());
    }
    // The steps' SQL holds the client's expressions, as deep as it wrote them:
    // it is parsed on a parser thread, like every parse. A busy pool: no look.
    let (in_tx, deferred) = (in_tx.to_vec(), deferred.to_vec());
    let bytes = in_tx.iter().chain(&deferred).map(|s| s.sql.len()).sum();
    let looks = match crate::sql::parser::submit(bytes, move || looks_for(&in_tx, &deferred)) {
        Ok(pending) => pending.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    for look in looks {
        let Some(look) = complete(conn, look).await? else {
            continue;
        };
        if let Some(e) = run(conn, &look).await? {
            return Err(Failure::Server(fields(e, &look)));
        }
    }
    Ok(())
}

/// The looks the deferred steps need, up to one that writes rows.
fn looks_for(in_tx: &[Step], deferred: &[Step]) -> Vec<Look> {
    // Steps that change columns (a DROP and ADD of one name) make the rows
    // the look would read differ from those the check will read.
    if !in_tx.iter().all(adds_not_valid) {
        return Vec::new();
    }
    let all: Vec<&Step> = in_tx.iter().chain(deferred).collect();
    deferred
        .iter()
        .take_while(|s| !s.writes_rows())
        .filter_map(|s| look_for(s, &all))
        .collect()
}

/// The look a step needs, from its SQL (and the step that added its constraint).
fn look_for(step: &Step, all: &[&Step]) -> Option<Look> {
    match (&step.kind, statement(&step.sql)?) {
        (StepKind::ConcurrentIndex { .. }, NodeEnum::IndexStmt(ix)) if ix.unique => unique(&ix),
        (StepKind::Sql, NodeEnum::AlterTableStmt(alter)) => {
            let [cmd] = alter.cmds.as_slice() else {
                return None;
            };
            let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node else {
                return None;
            };
            if cmd.subtype() != AlterTableType::AtValidateConstraint {
                return None;
            }
            let (table, con) = added(all, &cmd.name)?;
            validation(step, table, con)
        }
        _ => None,
    }
}

/// An `ALTER TABLE … ADD CONSTRAINT … NOT VALID` and nothing else.
fn adds_not_valid(step: &Step) -> bool {
    let Some(NodeEnum::AlterTableStmt(alter)) = statement(&step.sql) else {
        return false;
    };
    alter.cmds.iter().all(|c| match &c.node {
        Some(NodeEnum::AlterTableCmd(cmd)) => {
            cmd.subtype() == AlterTableType::AtAddConstraint
                && matches!(cmd.def.as_ref().and_then(|d| d.node.as_ref()),
                    Some(NodeEnum::Constraint(con)) if con.skip_validation)
        }
        _ => false,
    })
}

fn statement(sql: &str) -> Option<NodeEnum> {
    let parsed = pg_query::parse(sql).ok()?;
    let [one] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    one.stmt.as_ref()?.node.clone()
}

/// The step that adds constraint `name` NOT VALID, its table and the constraint.
fn added(all: &[&Step], name: &str) -> Option<(String, pg_query::protobuf::Constraint)> {
    all.iter().find_map(|s| {
        let NodeEnum::AlterTableStmt(alter) = statement(&s.sql)? else {
            return None;
        };
        let rel = alter.relation.as_ref()?;
        // ONLY: the rows of the table alone (a look would read its children too).
        if !rel.inh {
            return None;
        }
        let table = ident::relation(rel);
        alter.cmds.iter().find_map(|c| {
            let Some(NodeEnum::AlterTableCmd(cmd)) = &c.node else {
                return None;
            };
            let Some(NodeEnum::Constraint(con)) = cmd.def.as_ref()?.node.as_ref() else {
                return None;
            };
            (cmd.subtype() == AlterTableType::AtAddConstraint
                && con.conname == name
                && con.skip_validation
                && !con.is_no_inherit)
                .then(|| (table.clone(), (**con).clone()))
        })
    })
}

fn names(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

fn unique(ix: &IndexStmt) -> Option<Look> {
    let rel = ix.relation.as_ref()?;
    if !rel.inh {
        return None;
    }
    let table = ident::relation(rel);
    let mut exprs = Vec::new();
    let mut key = Vec::new();
    for p in &ix.index_params {
        let Some(NodeEnum::IndexElem(e)) = &p.node else {
            return None;
        };
        // Another collation or operator class: its equality is not `GROUP BY`'s.
        if !e.collation.is_empty() || !e.opclass.is_empty() {
            return None;
        }
        match &e.expr {
            // Postgres words an expression as it deparses it, which may differ.
            Some(x) => {
                let x = crate::sql::rules::deparse_expr(x);
                exprs.push(format!("({x})"));
                key.push(format!("({x})"));
            }
            None => {
                exprs.push(ident::quote(&e.name));
                key.push(ident::quote(&e.name));
            }
        }
    }
    let mut wheres: Vec<String> = Vec::new();
    if let Some(p) = ix.where_clause.as_deref() {
        wheres.push(format!("({})", crate::sql::rules::deparse_expr(p)));
    }
    if !ix.nulls_not_distinct {
        wheres.extend(exprs.iter().map(|x| format!("{x} IS NOT NULL")));
    }
    // Grouped by the values (numeric 1.0 and 1.00 are one key), shown as text.
    let list: Vec<String> = (1..=exprs.len()).map(|i| i.to_string()).collect();
    let inner: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, x)| format!("{x} AS k{i}"))
        .collect();
    let shown: Vec<String> = (0..exprs.len()).map(|i| format!("d.k{i}")).collect();
    let query = format!(
        "SELECT {} FROM (SELECT {} FROM {table}{} GROUP BY {} HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1 ORDER BY {} LIMIT 1) d",
        texts(&shown),
        inner.join(", "),
        where_clause(&wheres),
        list.join(", "),
        list.join(", "),
    );
    Some(Look {
        query,
        table,
        schema: String::new(),
        broken: Broken::Unique {
            index: ix.idxname.clone(),
            key,
        },
    })
}

fn texts(exprs: &[String]) -> String {
    exprs
        .iter()
        .map(|x| format!("({x})::pg_catalog.text"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

fn validation(step: &Step, table: String, con: pg_query::protobuf::Constraint) -> Option<Look> {
    if con.contype == ConstrType::ConstrCheck as i32 {
        let cond = crate::sql::rules::deparse_expr(con.raw_expr.as_deref()?);
        // NOT NULL asks whether the value is null (a composite with a NULL field is
        // not), which `IS NOT DISTINCT FROM NULL` asks and `IS NULL` does not.
        let (broken, query) = match &step.null_column {
            Some(column) => (
                Broken::Null {
                    column: column.clone(),
                },
                format!(
                    "SELECT 1 FROM {table} WHERE {} IS NOT DISTINCT FROM NULL LIMIT 1",
                    ident::quote(column)
                ),
            ),
            None => (
                Broken::Check { name: con.conname },
                format!("SELECT 1 FROM {table} WHERE NOT ({cond}) LIMIT 1"),
            ),
        };
        return Some(Look {
            query,
            table,
            schema: String::new(),
            broken,
        });
    }
    // MATCH SIMPLE (the default) only: a row with a NULL in its key is not checked.
    if con.contype == ConstrType::ConstrForeign as i32 && con.fk_matchtype == "s" {
        return Some(Look {
            query: String::new(),
            table,
            schema: String::new(),
            broken: Broken::Reference {
                name: con.conname,
                key: names(&con.fk_attrs),
                referenced: ident::relation(con.pktable.as_ref()?),
                referenced_key: names(&con.pk_attrs)
                    .iter()
                    .map(|c| ident::quote(c))
                    .collect(),
            },
        });
    }
    None
}

/// A relation's name, then whether a look at it could differ from the check or
/// hold up others: a parent by plain inheritance (its index or foreign key
/// covers it alone), a lock of this transaction that blocks writers on a table
/// larger than [`LOCKED_SCAN_MAX`] (the scan would run under it; a small one is
/// read in milliseconds, as Postgres itself would read it under that lock), a
/// snapshot older than the check's (REPEATABLE READ, SERIALIZABLE), row
/// security (a foreign key's check sees every row).
/// Largest table (bytes) looked at while this transaction holds a lock on it
/// that blocks writers.
const LOCKED_SCAN_MAX: &str = "8388608";

/// Longest wait for the look's ACCESS SHARE lock, in ms.
const LOOK_LOCK_MS: u32 = 200;

const FACTS: &str = "\
SELECT c.relname::pg_catalog.text,
  (c.relkind OPERATOR(pg_catalog.=) 'r' AND EXISTS (SELECT FROM pg_catalog.pg_inherits i
     WHERE i.inhparent OPERATOR(pg_catalog.=) c.oid)
   OR EXISTS (SELECT FROM pg_catalog.pg_locks l WHERE l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
     AND l.locktype OPERATOR(pg_catalog.=) 'relation' AND l.relation OPERATOR(pg_catalog.=) c.oid AND l.granted
     AND l.mode OPERATOR(pg_catalog.=) ANY ('{ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'::pg_catalog.text[]))
     AND pg_catalog.pg_relation_size(c.oid) OPERATOR(pg_catalog.>) $2
   OR pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed'
   OR c.relrowsecurity)::pg_catalog.text,
  (SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) c.relnamespace)
FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)";

/// Fills in what only the catalog knows: the relations' names for the message
/// and a foreign key's referenced columns left out (the referenced table's
/// primary key). None when the look cannot be made.
async fn complete<C: Conn>(conn: &mut C, mut look: Look) -> Result<Option<Look>, Failure> {
    let Some((own, schema)) = relname(conn, &look.table).await? else {
        return Ok(None);
    };
    if let Broken::Reference {
        key,
        referenced,
        referenced_key,
        ..
    } = &mut look.broken
    {
        if referenced_key.is_empty() {
            *referenced_key = primary_key(conn, referenced).await?;
        }
        if referenced_key.len() != key.len() {
            return Ok(None);
        }
        let f: Vec<String> = key
            .iter()
            .map(|k| format!("f.{}", ident::quote(k)))
            .collect();
        let not_null: Vec<String> = f.iter().map(|k| format!("{k} IS NOT NULL")).collect();
        // `=` of the column types, found as the key's own operator is.
        let matches: Vec<String> = referenced_key
            .iter()
            .zip(&f)
            .map(|(r, k)| format!("r.{r} = {k}"))
            .collect();
        look.query = format!(
            "SELECT {} FROM {} f WHERE {} AND NOT EXISTS (SELECT FROM {referenced} r WHERE {}) LIMIT 1",
            texts(&f),
            look.table,
            not_null.join(" AND "),
            matches.join(" AND ")
        );
        let Some((name, _)) = relname(conn, referenced).await? else {
            return Ok(None);
        };
        *referenced = name;
    }
    look.table = own;
    look.schema = schema;
    Ok(Some(look))
}

/// `table`'s name, when a look at it can stand for the check (see [`FACTS`]).
/// Row security on the table itself only hides rows (a look misses what the
/// check finds, never the reverse), but it is left alone with the rest.
/// Its schema comes second.
async fn relname<C: Conn>(conn: &mut C, table: &str) -> Result<Option<(String, String)>, Failure> {
    let reply = conn.query_params(FACTS, &[table, LOCKED_SCAN_MAX]).await?;
    if reply.error.is_some() || reply.rows.is_empty() || reply.cell(1) != "false" {
        return Ok(None);
    }
    Ok(Some((reply.cell(0), reply.cell(2))))
}

async fn primary_key<C: Conn>(conn: &mut C, table: &str) -> Result<Vec<String>, Failure> {
    let reply = conn
        .query_params(
            "SELECT pg_catalog.quote_ident(a.attname::pg_catalog.text) FROM pg_catalog.pg_index i, \
             pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(n, o), pg_catalog.pg_attribute a \
             WHERE i.indrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1) AND i.indisprimary \
             AND a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.n ORDER BY k.o",
            &[table],
        )
        .await?;
    if reply.error.is_some() {
        return Ok(Vec::new());
    }
    Ok(reply.rows.iter().map(|r| super::conn::cell(r, 0)).collect())
}

/// Runs the look in a savepoint, rolled back whatever it found: its lock goes
/// with it (the transaction's next step asks for a stronger one; holding this
/// one could deadlock two sessions running the same migration), and a lock it
/// cannot have at once is not waited for. The error its row stands for, if any.
async fn run<C: Conn>(conn: &mut C, look: &Look) -> Result<Option<PgError>, Failure> {
    let opened = conn
        .query(&format!(
            "SAVEPOINT pgshift_look; SET LOCAL lock_timeout = {LOOK_LOCK_MS}"
        ))
        .await?;
    if let Some(e) = opened.error {
        return Err(Failure::Server(e));
    }
    let reply = conn.query(&look.query).await?;
    let back = conn
        .query("ROLLBACK TO SAVEPOINT pgshift_look; RELEASE SAVEPOINT pgshift_look")
        .await?;
    if let Some(e) = back.error {
        return Err(Failure::Server(e));
    }
    if let Some(e) = reply.error {
        // The client's cancel ends the statement; its statement_timeout ends only
        // the look (the check runs after COMMIT, as before).
        if e.code == "57014" && e.message.contains("user request") {
            return Err(Failure::Server(e));
        }
        tracing::debug!(target: "pgshift::ddl", query = %look.query, error = %e.message, "rows not looked at before deferring");
        return Ok(None);
    }
    let Some(row) = reply.rows.first() else {
        return Ok(None);
    };
    let values = || {
        row.iter()
            .map(|v| v.clone().unwrap_or_else(|| "null".into()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let table = &look.table;
    Ok(Some(match &look.broken {
        Broken::Unique { index, key } => PgError::error(
            "23505",
            format!("could not create unique index {}", quoted(index)),
        )
        .with_detail(format!(
            "Key ({})=({}) is duplicated.",
            key.join(", "),
            values()
        )),
        Broken::Check { name } => PgError::error(
            "23514",
            format!(
                "check constraint {} of relation {} is violated by some row",
                quoted(name),
                quoted(table)
            ),
        ),
        Broken::Null { column } => PgError::error(
            "23502",
            format!(
                "column {} of relation {} contains null values",
                quoted(column),
                quoted(table)
            ),
        ),
        Broken::Reference {
            name,
            key,
            referenced,
            ..
        } => PgError::error(
            "23503",
            format!(
                "insert or update on table {} violates foreign key constraint {}",
                quoted(table),
                quoted(name)
            ),
        )
        .with_detail(format!(
            "Key ({})=({}) is not present in table {}.",
            key.join(", "),
            values(),
            quoted(referenced)
        )),
    }))
}

/// `e` with the fields Postgres sends with it (schema, table, and the constraint
/// or the column), which client libraries match on.
fn fields(e: PgError, look: &Look) -> ServerError {
    let mut f: Vec<(u8, String)> = vec![
        (b'S', "ERROR".into()),
        (b'V', "ERROR".into()),
        (b'C', e.code.into()),
        (b'M', e.message),
    ];
    if let Some(d) = e.detail {
        f.push((b'D', d));
    }
    f.push((b's', look.schema.clone()));
    f.push((b't', look.table.clone()));
    match &look.broken {
        Broken::Unique { index: n, .. }
        | Broken::Check { name: n }
        | Broken::Reference { name: n, .. } => f.push((b'n', n.clone())),
        Broken::Null { column } => f.push((b'c', column.clone())),
    }
    ServerError::from_fields(f)
}

/// `"name"` as Postgres puts a name in a message (the name itself, unescaped).
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::plan::{Lock, Placement};

    fn step(sql: &str, kind: StepKind) -> Step {
        Step {
            kind,
            placement: Placement::OutsideTransaction,
            ..Step::quick(sql, Lock::ShareUpdateExclusive)
        }
    }

    fn index(sql: &str) -> Step {
        step(
            sql,
            StepKind::ConcurrentIndex {
                index: String::new(),
                table: String::new(),
                naming: None,
            },
        )
    }

    #[test]
    fn a_unique_build_looks_for_a_duplicated_key() {
        let s =
            index("CREATE UNIQUE INDEX CONCURRENTLY \"Uq\" ON app.t (a, lower(b)) WHERE active");
        let look = look_for(&s, &[&s]).unwrap();
        assert_eq!(
            look.query,
            "SELECT (d.k0)::pg_catalog.text, (d.k1)::pg_catalog.text FROM \
             (SELECT a AS k0, (lower(b)) AS k1 FROM app.t \
             WHERE (active) AND a IS NOT NULL AND (lower(b)) IS NOT NULL \
             GROUP BY 1, 2 HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1 ORDER BY 1, 2 LIMIT 1) d"
        );
        assert_eq!(
            look.broken,
            Broken::Unique {
                index: "Uq".into(),
                key: vec!["a".into(), "(lower(b))".into()]
            }
        );
        // NULLS NOT DISTINCT: a NULL key is a key like another.
        let s = index("CREATE UNIQUE INDEX CONCURRENTLY u ON t (a) NULLS NOT DISTINCT");
        assert!(!look_for(&s, &[&s]).unwrap().query.contains("IS NOT NULL"));
        // ONLY, a collation or an operator class of its own: not looked at.
        for sql in [
            "CREATE UNIQUE INDEX CONCURRENTLY u ON ONLY t (a)",
            "CREATE UNIQUE INDEX CONCURRENTLY u ON t (a COLLATE \"C\")",
            "CREATE UNIQUE INDEX CONCURRENTLY u ON t (a text_pattern_ops)",
        ] {
            let s = index(sql);
            assert_eq!(look_for(&s, &[&s]), None, "{sql}");
        }
        // Not unique: nothing to find.
        let s = index("CREATE INDEX CONCURRENTLY i ON t (a)");
        assert_eq!(look_for(&s, &[&s]), None);
    }

    #[test]
    fn a_validation_looks_with_the_constraint_its_transaction_added() {
        let add = Step::quick(
            "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID",
            Lock::AccessExclusive,
        );
        let validate = step("ALTER TABLE t VALIDATE CONSTRAINT c", StepKind::Sql);
        let look = look_for(&validate, &[&add, &validate]).unwrap();
        assert_eq!(look.query, "SELECT 1 FROM t WHERE NOT (a > 0) LIMIT 1");
        assert_eq!(look.broken, Broken::Check { name: "c".into() });
        // The CHECK standing in for NOT NULL reports the NULL.
        let validate = Step {
            null_column: Some("a".into()),
            ..validate
        };
        let look = look_for(&validate, &[&add, &validate]).unwrap();
        assert_eq!(look.broken, Broken::Null { column: "a".into() });
        assert_eq!(
            look.query,
            "SELECT 1 FROM t WHERE a IS NOT DISTINCT FROM NULL LIMIT 1"
        );
        // Another constraint's validation: nothing known to look for.
        let other = step("ALTER TABLE t VALIDATE CONSTRAINT d", StepKind::Sql);
        assert_eq!(look_for(&other, &[&add, &other]), None);
    }

    #[test]
    fn a_foreign_key_waits_for_its_referenced_columns() {
        let add = Step::quick(
            "ALTER TABLE o ADD CONSTRAINT o_fk FOREIGN KEY (\"A\", b) REFERENCES p NOT VALID",
            Lock::ShareRowExclusive,
        );
        let validate = step("ALTER TABLE o VALIDATE CONSTRAINT o_fk", StepKind::Sql);
        let look = look_for(&validate, &[&add, &validate]).unwrap();
        assert_eq!(
            look.broken,
            Broken::Reference {
                name: "o_fk".into(),
                key: vec!["A".into(), "b".into()],
                referenced: "p".into(),
                referenced_key: Vec::new(),
            }
        );
        // MATCH FULL checks rows a NULL lets through under MATCH SIMPLE: not looked at.
        let full = Step::quick(
            "ALTER TABLE o ADD CONSTRAINT o_fk FOREIGN KEY (a) REFERENCES p (id) MATCH FULL NOT VALID",
            Lock::ShareRowExclusive,
        );
        assert_eq!(look_for(&validate, &[&full, &validate]), None);
    }
}
