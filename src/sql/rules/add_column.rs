//! `ADD COLUMN` is instant (catalog only) when the default is a constant or stable,
//! and `lock-timeout` guards those. This rule handles the forms that scan or rewrite
//! the table under ACCESS EXCLUSIVE:
//!
//! - a volatile default (`gen_random_uuid()`, `clock_timestamp()`, see `expr`) and
//!   serial types: add the column bare, SET DEFAULT (new rows get values from now
//!   on), backfill existing rows in batches, then NOT NULL the `set-not-null` way;
//! - inline CHECK, UNIQUE, PRIMARY KEY and REFERENCES: add the column without them,
//!   then add them the `add-check` / `add-unique` / `add-foreign-key` way;
//! - NOT NULL without a default: Postgres refuses it at the first row, or adds it
//!   to an empty table at once; left to Postgres (`lock-timeout` guards it);
//! - identity and stored generated columns rewrite the table with no online form in
//!   place: rejected.
//!
//! `ADD COLUMN IF NOT EXISTS` keeps its IF NOT EXISTS, but the later steps still run:
//! if the column existed, its NULLs get backfilled.

use super::alter_table::{self, One};
use super::{add_check, add_unique, backfill, deparse_expr, expr, set_not_null, Rule};
use crate::sql::ident;
use crate::sql::naming::{self, ConstraintNaming};
use crate::sql::plan::{Finding, Lock, OnlineFill, Plan, Policy, Precheck, Step, StepKind};
use pg_query::protobuf::{AlterTableType, ColumnDef, ConstrType, Constraint, Node, TypeName};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "add-column",
    about: "ADD COLUMN that rewrites or scans the table; add it bare, then backfill",
    review,
};

/// Serial type names and the integer type behind each.
const SERIALS: &[(&str, &str, &str)] = &[
    ("smallserial", "int2", "smallint"),
    ("serial2", "int2", "smallint"),
    ("serial", "int4", "integer"),
    ("serial4", "int4", "integer"),
    ("bigserial", "int8", "bigint"),
    ("serial8", "int8", "bigint"),
];

/// What the column definition asks for.
struct Column<'a> {
    def: &'a ColumnDef,
    default: Option<&'a Node>,
    not_null: bool,
    /// `Some("GENERATED … AS IDENTITY")` and the like: rejected outright.
    generated: Option<&'static str>,
    serial: Option<(&'static str, &'static str)>,
    checks: Vec<&'a Constraint>,
    keys: Vec<&'a Constraint>,
    /// Inline REFERENCES, with the DEFERRABLE and friends that followed each.
    foreign: Vec<Constraint>,
    /// DEFERRABLE and friends, which attach to the constraint before them.
    attributes: bool,
}

fn classify(def: &ColumnDef) -> Column<'_> {
    use ConstrType as C;
    let mut col = Column {
        def,
        default: None,
        not_null: def.is_not_null,
        generated: None,
        serial: None,
        checks: vec![],
        keys: vec![],
        foreign: vec![],
        attributes: false,
    };
    if let Some(t) = &def.type_name {
        if let [n] = t.names.as_slice() {
            let name = super::str_val(n).unwrap_or("");
            col.serial = SERIALS.iter().find(|s| s.0 == name).map(|s| (s.1, s.2));
        }
    }
    for c in &def.constraints {
        let Some(NodeEnum::Constraint(c)) = c.node.as_ref() else {
            continue;
        };
        match C::try_from(c.contype) {
            Ok(C::ConstrDefault) => col.default = c.raw_expr.as_deref(),
            Ok(C::ConstrNotnull) => col.not_null = true,
            Ok(C::ConstrIdentity) => col.generated = Some("GENERATED … AS IDENTITY"),
            Ok(C::ConstrGenerated) => col.generated = Some("GENERATED ALWAYS AS (…) STORED"),
            Ok(C::ConstrCheck) => col.checks.push(c),
            Ok(C::ConstrPrimary) => {
                col.not_null = true;
                col.keys.push(c);
            }
            Ok(C::ConstrUnique) => col.keys.push(c),
            Ok(C::ConstrForeign) => col.foreign.push((**c).clone()),
            Ok(
                kind @ (C::ConstrAttrDeferrable
                | C::ConstrAttrNotDeferrable
                | C::ConstrAttrDeferred
                | C::ConstrAttrImmediate),
            ) => {
                // They attach to the constraint just before them.
                match (last_foreign(def, c), col.foreign.last_mut()) {
                    (true, Some(fk)) => match kind {
                        C::ConstrAttrDeferrable => fk.deferrable = true,
                        C::ConstrAttrNotDeferrable => fk.deferrable = false,
                        C::ConstrAttrDeferred => fk.initdeferred = true,
                        _ => fk.initdeferred = false,
                    },
                    _ => col.attributes = true,
                }
            }
            _ => {}
        }
    }
    col
}

/// True when the constraint before `attr` in the column's list is a REFERENCES.
fn last_foreign(def: &ColumnDef, attr: &Constraint) -> bool {
    let mut previous: Option<i32> = None;
    for c in &def.constraints {
        let Some(NodeEnum::Constraint(c)) = c.node.as_ref() else {
            continue;
        };
        if std::ptr::eq(&**c, attr) {
            return previous == Some(ConstrType::ConstrForeign as i32);
        }
        let is_attr = matches!(
            ConstrType::try_from(c.contype),
            Ok(ConstrType::ConstrAttrDeferrable
                | ConstrType::ConstrAttrNotDeferrable
                | ConstrType::ConstrAttrDeferred
                | ConstrType::ConstrAttrImmediate)
        );
        if !is_attr {
            previous = Some(c.contype);
        }
    }
    false
}

fn reject(table: String, problem: String, hint: &str) -> Finding {
    Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem,
        rewrite: None,
        hint: hint.into(),
        table: Some(table),
        relations: Vec::new(),
        precheck: None,
        default_policy: Policy::Reject,
    }
}

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    let Some(NodeEnum::ColumnDef(def)) = one.cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
        return None;
    };
    if one.kind != AlterTableType::AtAddColumn {
        return None;
    }
    let col = classify(def);
    let table = one.table();
    let name = ident::quote(&def.colname);
    if let Some(what) = col.generated {
        return Some(reject(
            table.clone(),
            format!("ADD COLUMN {name} {what} rewrites all of {table} under ACCESS EXCLUSIVE: reads and writes wait for the rewrite"),
            "Add a plain column and backfill it in batches; for identity then run ALTER COLUMN … ADD GENERATED BY DEFAULT AS IDENTITY (no rewrite), for a generated column keep it filled with a trigger.",
        ));
    }
    let volatile = col.default.filter(|d| expr::is_volatile(d));
    let backfill = col.serial.is_some() || volatile.is_some();
    // NOT NULL without a DEFAULT: Postgres refuses it at the first row, or adds it
    // to an empty table at once. Its scan stops there: only the lock is a risk.
    if !backfill && col.checks.is_empty() && col.keys.is_empty() && col.foreign.is_empty() {
        return None;
    }
    let referenced: Vec<String> = col
        .foreign
        .iter()
        .filter_map(|f| f.pktable.as_ref().map(ident::relation))
        .collect();
    let problem = match (col.serial, volatile, col.checks.is_empty()) {
        (None, None, true) if col.keys.is_empty() => format!("ADD COLUMN {name} with REFERENCES checks every row of {table} against {} under ACCESS EXCLUSIVE: reads and writes wait for the scan", referenced.join(", ")),
        (Some(_), _, _) => format!("ADD COLUMN {name} with a serial type fills every row from a sequence, rewriting all of {table} under ACCESS EXCLUSIVE: reads and writes wait for the rewrite"),
        (None, Some(d), _) => format!("ADD COLUMN {name} with the volatile DEFAULT {} rewrites all of {table} under ACCESS EXCLUSIVE: reads and writes wait for the rewrite", deparse_expr(d)),
        (None, None, false) => format!("ADD COLUMN {name} with a CHECK scans all of {table} under ACCESS EXCLUSIVE: reads and writes wait for the scan"),
        (None, None, true) => format!("ADD COLUMN {name} with UNIQUE or PRIMARY KEY builds an index on {table} under ACCESS EXCLUSIVE: reads and writes wait for the build"),
    };
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem,
        rewrite: plan(&one, &col, backfill),
        hint: if backfill {
            "Add the column without the default, SET DEFAULT, backfill existing rows in batches, then add NOT NULL and constraints without long locks."
        } else {
            "Add the column without the constraint, then add a CHECK NOT VALID and VALIDATE it, or build the unique index CONCURRENTLY and attach it USING INDEX."
        }
        .into(),
        relations: if referenced.is_empty() {
            Vec::new()
        } else {
            std::iter::once(table.clone()).chain(referenced).collect()
        },
        // IF NOT EXISTS on a column that is there: Postgres does nothing, and
        // neither may the steps (a default, a fill, a constraint).
        precheck: one.cmd.missing_ok.then(|| Precheck {
            if_not_exists: true,
            column_of_relation: true,
            new_column: Some(def.colname.clone()),
            ..Precheck::of(&table)
        }),
        table: Some(table),
        default_policy: Policy::Rewrite,
    })
}

fn plan(one: &One<'_>, col: &Column<'_>, backfill: bool) -> Option<Plan> {
    if col.attributes && !col.keys.is_empty() {
        return None;
    }
    let stmt = one.stmt;
    let column = col.def.colname.as_str();
    let mut summary = vec!["ADD COLUMN without its constraints"];
    let mut bare = Step::quick(add_bare(one, col, backfill), Lock::AccessExclusive);
    if !one.cmd.missing_ok {
        // With IF NOT EXISTS the column may have been there before: keep it.
        let mut drop = alter_table::cmd(AlterTableType::AtDropColumn);
        drop.name = column.into();
        bare = bare.undone_by(alter_table::statement(stmt, drop));
    }
    let mut steps = vec![bare];
    if backfill {
        let default = match col.serial {
            Some((_, sql_type)) => {
                let (step, seq) = backfill::sequence(one, column, sql_type);
                steps.push(step);
                backfill::nextval(&seq)
            }
            None => col.default?.clone(),
        };
        let mut set = alter_table::cmd(AlterTableType::AtColumnDefault);
        set.name = column.into();
        set.def = Some(Box::new(default.clone()));
        steps.push(Step::quick(
            alter_table::statement(stmt, set),
            Lock::AccessExclusive,
        ));
        let mut fill = backfill::batch(one, column, &deparse_expr(&default));
        // A nullable column with nothing after the fill: the fill may run in the
        // background, once the column exists (`crate::rollout::fill`).
        let alone = col.serial.is_none()
            && !col.not_null
            && col.checks.is_empty()
            && col.keys.is_empty()
            && col.foreign.is_empty()
            && !one.cmd.missing_ok
            && col.def.coll_clause.is_none();
        if let (StepKind::Backfill { online, .. }, true, Some(ty)) =
            (&mut fill.kind, alone, col.def.type_name.as_ref())
        {
            *online = Some(OnlineFill {
                column: column.to_string(),
                type_sql: super::alter_column_type::type_sql(ty),
                value: deparse_expr(&default),
            });
        }
        steps.push(fill);
        summary.push("SET DEFAULT, then a batched backfill of existing rows");
        if col.not_null || col.serial.is_some() {
            steps.extend(set_not_null::steps(stmt, column));
            summary.push(set_not_null::SUMMARY);
        }
    }
    for check in &col.checks {
        steps.extend(add_check::steps(stmt, check));
        summary.push(add_check::SUMMARY);
    }
    for key in &col.keys {
        steps.extend(add_unique::steps(stmt, key, &[column])?);
        summary.push(add_unique::SUMMARY);
    }
    for fk in &col.foreign {
        let naming = fk.conname.is_empty().then(|| {
            let addition = naming::fkey_addition(&[column]);
            ConstraintNaming::new(&one.table(), &one.rel.relname, Some(&addition), "fkey")
        });
        let name = naming
            .as_ref()
            .map_or_else(|| fk.conname.clone(), |n| n.placeholder.clone());
        let mut not_valid = fk.clone();
        not_valid.conname = name.clone();
        not_valid.fk_attrs = vec![super::string_node(column)];
        not_valid.skip_validation = true;
        not_valid.initially_valid = false;
        steps.push(
            Step::quick(
                alter_table::add_constraint(stmt, not_valid),
                Lock::ShareRowExclusive,
            )
            .undone_by(alter_table::drop_constraint(stmt, &name))
            .naming(naming)
            .also_locks(fk.pktable.as_ref().map(ident::relation).unwrap_or_default()),
        );
        steps.push(alter_table::validate(stmt, &name));
        summary.push("REFERENCES added NOT VALID, then validated in its own transaction");
    }
    summary.dedup();
    Some(Plan {
        summary: summary.join("; "),
        steps,
    })
}

/// The ADD COLUMN without what the later steps add: the default and NOT NULL when
/// there is a backfill, and the checks and keys always. A primary key's NOT NULL
/// stays when the default fills every row, so USING INDEX need not scan.
fn add_bare(one: &One<'_>, col: &Column<'_>, backfill: bool) -> String {
    use ConstrType as C;
    let mut def = col.def.clone();
    def.constraints.retain(|c| {
        let Some(NodeEnum::Constraint(c)) = c.node.as_ref() else {
            return true;
        };
        let later = [
            C::ConstrCheck,
            C::ConstrUnique,
            C::ConstrPrimary,
            C::ConstrForeign,
        ];
        let attribute = [
            C::ConstrAttrDeferrable,
            C::ConstrAttrNotDeferrable,
            C::ConstrAttrDeferred,
            C::ConstrAttrImmediate,
        ];
        if !col.foreign.is_empty() && attribute.iter().any(|t| *t as i32 == c.contype) {
            // They went with the REFERENCES they followed.
            return false;
        }
        let filled = [C::ConstrDefault, C::ConstrNotnull];
        !later
            .iter()
            .chain(if backfill { &filled[..] } else { &[] })
            .any(|t| *t as i32 == c.contype)
    });
    if backfill {
        def.is_not_null = false;
    } else if col.not_null && !def.is_not_null && !has(&def, C::ConstrNotnull) {
        def.constraints.push(Node {
            node: Some(NodeEnum::Constraint(Box::new(Constraint {
                contype: C::ConstrNotnull as i32,
                location: -1,
                ..Default::default()
            }))),
        });
    }
    if let Some((int, _)) = col.serial {
        def.type_name = Some(TypeName {
            names: vec![super::string_node("pg_catalog"), super::string_node(int)],
            typemod: -1,
            location: -1,
            ..Default::default()
        });
    }
    let mut cmd = one.cmd.clone();
    cmd.def = Some(Box::new(Node {
        node: Some(NodeEnum::ColumnDef(Box::new(def))),
    }));
    alter_table::statement(one.stmt, cmd)
}

fn has(def: &ColumnDef, t: ConstrType) -> bool {
    def.constraints
        .iter()
        .any(|c| matches!(&c.node, Some(NodeEnum::Constraint(c)) if c.contype == t as i32))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;
    use crate::sql::plan::Placement;

    #[test]
    fn volatile_default_becomes_a_backfill() {
        let f = review_sql("ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()")
            .unwrap();
        assert_eq!(
            (f.rule, f.tag, f.default_policy),
            ("add-column", "ALTER TABLE", Policy::Rewrite)
        );
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE users ADD COLUMN token uuid",
                "ALTER TABLE users ALTER COLUMN token SET DEFAULT gen_random_uuid()",
                "UPDATE users SET token = gen_random_uuid() WHERE ctid = ANY (ARRAY(SELECT ctid FROM users WHERE token IS NULL LIMIT $1::bigint)) AND token IS NULL",
            ]
        );
        let fill = &f.rewrite.unwrap().steps[2];
        assert_eq!(
            (fill.placement, fill.long),
            (Placement::OwnTransaction, true)
        );
        assert_eq!(
            fill.kind,
            StepKind::Backfill {
                table: "users".into(),
                by_pages: "UPDATE users SET token = gen_random_uuid() WHERE ctid >= $1::tid AND ctid < $2::tid AND token IS NULL".into(),
                rest: "UPDATE users SET token = gen_random_uuid() WHERE token IS NULL".into(),
                online: Some(OnlineFill {
                    column: "token".into(),
                    type_sql: "uuid".into(),
                    value: "gen_random_uuid()".into(),
                }),
            }
        );
    }

    #[test]
    fn volatile_not_null_adds_the_not_null_sequence() {
        let f = review_sql("ALTER TABLE \"Auth\".\"User\" ADD \"sessionId\" uuid NOT NULL DEFAULT uuid_generate_v4()").unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE \"Auth\".\"User\" ADD COLUMN \"sessionId\" uuid",
                "ALTER TABLE \"Auth\".\"User\" ALTER COLUMN \"sessionId\" SET DEFAULT uuid_generate_v4()",
                "UPDATE \"Auth\".\"User\" SET \"sessionId\" = uuid_generate_v4() WHERE ctid = ANY (ARRAY(SELECT ctid FROM \"Auth\".\"User\" WHERE \"sessionId\" IS NULL LIMIT $1::bigint)) AND \"sessionId\" IS NULL",
                "ALTER TABLE \"Auth\".\"User\" ADD CONSTRAINT \"User_sessionId_not_null\" CHECK (\"sessionId\" IS NOT NULL) NOT VALID",
                "ALTER TABLE \"Auth\".\"User\" VALIDATE CONSTRAINT \"User_sessionId_not_null\"",
                "ALTER TABLE \"Auth\".\"User\" ALTER COLUMN \"sessionId\" SET NOT NULL",
                "ALTER TABLE \"Auth\".\"User\" DROP CONSTRAINT \"User_sessionId_not_null\"",
            ]
        );
    }

    #[test]
    fn serial_gets_a_sequence_after_the_column() {
        let f = review_sql("ALTER TABLE app.events ADD COLUMN seq bigserial").unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE app.events ADD COLUMN seq bigint",
                "CREATE SEQUENCE app.events_seq_seq AS bigint; ALTER SEQUENCE app.events_seq_seq OWNED BY app.events.seq",
                "ALTER TABLE app.events ALTER COLUMN seq SET DEFAULT nextval('app.events_seq_seq')",
                "UPDATE app.events SET seq = nextval('app.events_seq_seq') WHERE ctid = ANY (ARRAY(SELECT ctid FROM app.events WHERE seq IS NULL LIMIT $1::bigint)) AND seq IS NULL",
                "ALTER TABLE app.events ADD CONSTRAINT events_seq_not_null CHECK (seq IS NOT NULL) NOT VALID",
                "ALTER TABLE app.events VALIDATE CONSTRAINT events_seq_not_null",
                "ALTER TABLE app.events ALTER COLUMN seq SET NOT NULL",
                "ALTER TABLE app.events DROP CONSTRAINT events_seq_not_null",
            ]
        );
    }

    #[test]
    fn serial_primary_key_ends_with_a_concurrent_index() {
        let f = review_sql("ALTER TABLE \"Logs\" ADD COLUMN id serial PRIMARY KEY").unwrap();
        let sql = step_sql(&f);
        assert_eq!(sql[0], "ALTER TABLE \"Logs\" ADD COLUMN id int");
        assert_eq!(
            sql[1],
            "CREATE SEQUENCE \"Logs_id_seq\" AS integer; ALTER SEQUENCE \"Logs_id_seq\" OWNED BY \"Logs\".id"
        );
        assert_eq!(
            &sql[sql.len() - 2..],
            [
                "CREATE UNIQUE INDEX CONCURRENTLY \"Logs_pkey\" ON \"Logs\" USING btree (id)",
                "ALTER TABLE \"Logs\" ADD CONSTRAINT \"Logs_pkey\" PRIMARY KEY USING INDEX \"Logs_pkey\"",
            ]
        );
        assert_eq!(sql.len(), 10);
    }

    #[test]
    fn inline_check_is_added_not_valid() {
        let f =
            review_sql("ALTER TABLE orders ADD COLUMN qty int NOT NULL DEFAULT 1 CHECK (qty > 0)")
                .unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE orders ADD COLUMN qty int NOT NULL DEFAULT 1",
                "ALTER TABLE orders ADD CONSTRAINT orders_qty_check CHECK (qty > 0) NOT VALID",
                "ALTER TABLE orders VALIDATE CONSTRAINT orders_qty_check",
            ]
        );
    }

    #[test]
    fn inline_unique_is_built_concurrently() {
        let f = review_sql("ALTER TABLE users ADD COLUMN handle text UNIQUE").unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE users ADD COLUMN handle text",
                "CREATE UNIQUE INDEX CONCURRENTLY users_handle_key ON users USING btree (handle)",
                "ALTER TABLE users ADD CONSTRAINT users_handle_key UNIQUE USING INDEX users_handle_key",
            ]
        );
    }

    #[test]
    fn inline_references_are_added_not_valid_then_validated() {
        let f = review_sql(
            "ALTER TABLE orders ADD COLUMN customer_id int REFERENCES customers (id) ON DELETE CASCADE DEFERRABLE",
        )
        .unwrap();
        assert_eq!(f.rule, "add-column");
        assert_eq!(f.locked(), ["orders", "customers"]);
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE orders ADD COLUMN customer_id int",
                "ALTER TABLE orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE DEFERRABLE NOT VALID",
                "ALTER TABLE orders VALIDATE CONSTRAINT orders_customer_id_fkey",
            ]
        );
        let mut plan = f.rewrite.unwrap();
        crate::sql::naming::name_offline(&mut plan);
        let steps = plan.steps;
        assert_eq!(
            steps[1].undo.as_deref(),
            Some("ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey")
        );
        assert_eq!(
            steps[0].undo.as_deref(),
            Some("ALTER TABLE orders DROP customer_id")
        );
    }

    #[test]
    fn not_null_without_default_is_left_to_postgres() {
        // Postgres refuses it at the first row, or adds it to an empty table: the
        // statement runs as written, only its lock wait guarded.
        let sql = "ALTER TABLE t ADD COLUMN c int NOT NULL";
        assert!(review(&parse_one(sql), sql).is_none());
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.default_policy),
            ("lock-timeout", Policy::Rewrite)
        );
        assert_eq!(step_sql(&f), [sql]);
    }

    #[test]
    fn identity_and_stored_columns_are_rejected() {
        for sql in [
            "ALTER TABLE t ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY",
            "ALTER TABLE t ADD COLUMN id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "ALTER TABLE t ADD COLUMN total numeric GENERATED ALWAYS AS (price * qty) STORED",
        ] {
            let f = review_sql(sql).unwrap();
            assert_eq!(
                (f.rule, f.default_policy),
                ("add-column", Policy::Reject),
                "{sql}"
            );
            assert!(f.problem.contains("rewrites all of t"), "{sql}");
        }
    }

    #[test]
    fn instant_forms_are_left_to_lock_timeout() {
        for sql in [
            "ALTER TABLE t ADD COLUMN c text",
            "ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 0",
            "ALTER TABLE t ADD COLUMN c timestamptz NOT NULL DEFAULT now()",
            "ALTER TABLE t ADD COLUMN c jsonb DEFAULT '{}'::jsonb",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
