//! `ALTER COLUMN TYPE` always takes ACCESS EXCLUSIVE, and rewrites the table and its
//! indexes unless the old type is binary-coercible to the new one (`varchar(n)` to a
//! wider varchar or text, `numeric(p,s)` to a wider precision or plain numeric,
//! timestamp/time/interval/varbit to a higher precision, `cidr` to `inet`).
//!
//! The rule sees only SQL, not the column's current type, so it judges by the target:
//! to text, varchar, numeric, timestamp[tz], time[tz], interval, varbit or inet,
//! without USING or COLLATE, the change may be catalog-only and the plan is the
//! statement itself as a short guarded step; the executor checks the current type
//! before it runs it. Every other change (int to bigint, text to int, anything with
//! USING) rewrites the table and is rejected until online column rollouts exist.

use super::alter_table;
use super::{deparse_expr, guarded, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Placement, Policy, StepKind};
use pg_query::protobuf::{AConst, AlterTableType, Node, TypeCast, TypeName};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "alter-column-type",
    about: "ALTER COLUMN TYPE rewrites the table unless the change is binary-coercible",
    review,
};

/// Target types that some source type reaches without a rewrite.
const MAYBE_COERCIBLE: &[&str] = &[
    "text",
    "varchar",
    "numeric",
    "timestamp",
    "timestamptz",
    "time",
    "timetz",
    "interval",
    "varbit",
    "inet",
];

fn maybe_coercible(t: &TypeName) -> bool {
    let names: Vec<&str> = t.names.iter().filter_map(super::str_val).collect();
    let name = match names.as_slice() {
        [name] | ["pg_catalog", name] => *name,
        _ => return false,
    };
    t.array_bounds.is_empty() && MAYBE_COERCIBLE.contains(&name)
}

/// The type modifier Postgres stores for `t` (atttypmod), or -1 when unconstrained:
/// varchar(n) and numeric keep VARHDRSZ (4) in it; numeric packs precision and scale.
fn typmod(t: &TypeName) -> i32 {
    let mods: Vec<i32> = t
        .typmods
        .iter()
        .filter_map(|m| match m.node.as_ref()? {
            NodeEnum::AConst(AConst {
                val: Some(pg_query::protobuf::a_const::Val::Ival(i)),
                ..
            }) => Some(i.ival),
            _ => None,
        })
        .collect();
    let name = t.names.iter().rev().find_map(super::str_val).unwrap_or("");
    match (name, mods.as_slice()) {
        (_, []) => -1,
        ("varchar" | "bpchar", [n]) => n + 4,
        ("numeric", [p]) => (p << 16) + 4,
        ("numeric", [p, s]) => ((p << 16) | s) + 4,
        (_, [n]) => *n,
        _ => -1,
    }
}

/// A type name as SQL.
pub(super) fn type_sql(t: &TypeName) -> String {
    let cast = TypeCast {
        arg: Some(Box::new(Node {
            node: Some(NodeEnum::AConst(AConst {
                isnull: true,
                location: -1,
                ..Default::default()
            })),
        })),
        type_name: Some(t.clone()),
        location: -1,
    };
    let sql = deparse_expr(&Node {
        node: Some(NodeEnum::TypeCast(Box::new(cast))),
    });
    sql.strip_prefix("NULL::").unwrap_or(&sql).to_string()
}

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    if one.kind != AlterTableType::AtAlterColumnType {
        return None;
    }
    let Some(NodeEnum::ColumnDef(def)) = one.cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
        return None;
    };
    let target = def.type_name.as_ref()?;
    let table = one.table();
    let column = ident::quote(&one.cmd.name);
    let to = type_sql(target);
    let plain = def.raw_default.is_none() && def.coll_clause.is_none();
    let finding = if plain && maybe_coercible(target) {
        Finding {
            rule: RULE.id,
            tag: "ALTER TABLE",
            lock: Lock::AccessExclusive,
            problem: format!("ALTER COLUMN {column} TYPE {to} takes ACCESS EXCLUSIVE on {table}: instant if the current type is binary-coercible to {to}, a full table rewrite otherwise"),
            rewrite: Some({
                let mut plan = guarded(original(node, sql), Lock::AccessExclusive);
                plan.steps[0].kind = StepKind::TypeChange {
                    table: table.clone(),
                    column: one.cmd.name.clone(),
                    target: to.clone(),
                    typmod: typmod(target),
                };
                plan
            }),
            hint: format!("pgshift runs this only after checking that the current type of {column} is binary-coercible to {to} (e.g. varchar(n) to a wider varchar or text); otherwise use an expand/contract migration."),
            table: Some(table),
            relations: Vec::new(),
            precheck: None,
            default_policy: Policy::Rewrite,
        }
    } else {
        let using = def.raw_default.as_deref().map(deparse_expr);
        let mut plan = guarded(original(node, sql), Lock::AccessExclusive);
        plan.summary = format!("ALTER COLUMN {column} TYPE {to} runs as an online rollout: a new column, mirrored and backfilled in the background, swapped in at cutover");
        plan.steps[0].kind = StepKind::Rollout {
            table: table.clone(),
            column: one.cmd.name.clone(),
            target: to.clone(),
            using,
        };
        // Inside a client's transaction it starts after COMMIT (deferred).
        plan.steps[0].placement = Placement::OutsideTransaction;
        Finding {
            rule: RULE.id,
            tag: "ALTER TABLE",
            lock: Lock::AccessExclusive,
            problem: format!("ALTER COLUMN {column} TYPE {to} rewrites all of {table} and its indexes under ACCESS EXCLUSIVE: reads and writes wait for the rewrite"),
            rewrite: Some(plan),
            hint: "pgshift runs it as an online rollout (outside a transaction block): a new column kept in sync by a trigger, backfilled in batches, verified, then swapped in; or use an expand/contract migration by hand.".into(),
            table: Some(table),
            relations: Vec::new(),
            precheck: None,
            default_policy: Policy::Rewrite,
        }
    };
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;

    #[test]
    fn possibly_coercible_targets_are_guarded() {
        for sql in [
            "ALTER TABLE users ALTER COLUMN name TYPE varchar(255)",
            "ALTER TABLE users ALTER COLUMN name TYPE text",
            "ALTER TABLE users ALTER COLUMN name SET DATA TYPE character varying",
            "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12, 2)",
            "ALTER TABLE orders ALTER COLUMN total TYPE numeric",
            "ALTER TABLE events ALTER COLUMN at TYPE timestamptz(6)",
            "ALTER TABLE events ALTER COLUMN at TYPE timestamp(3) without time zone",
            "ALTER TABLE flags ALTER COLUMN bits TYPE bit varying(64)",
            "ALTER TABLE hosts ALTER COLUMN addr TYPE inet",
        ] {
            let f = review_sql(sql).unwrap();
            assert_eq!(
                (f.rule, f.default_policy),
                ("alter-column-type", Policy::Rewrite),
                "{sql}"
            );
            assert_eq!(step_sql(&f), [sql], "{sql}");
            assert_eq!(f.rewrite.unwrap().steps[0].lock, Lock::AccessExclusive);
        }
    }

    #[test]
    fn keeps_quoted_names() {
        let sql = "ALTER TABLE \"Crm\".\"Contact\" ALTER COLUMN \"FullName\" TYPE varchar(200)";
        let f = review_sql(sql).unwrap();
        assert_eq!(f.table.as_deref(), Some("\"Crm\".\"Contact\""));
        assert!(f.problem.starts_with("ALTER COLUMN \"FullName\" TYPE varchar(200) takes ACCESS EXCLUSIVE on \"Crm\".\"Contact\""));
        assert_eq!(step_sql(&f), [sql]);
    }

    #[test]
    fn rewriting_changes_become_rollouts() {
        for sql in [
            "ALTER TABLE t ALTER COLUMN id TYPE bigint",
            "ALTER TABLE t ALTER COLUMN n TYPE int USING n::int",
            "ALTER TABLE t ALTER COLUMN s TYPE varchar(10) USING left(s, 10)",
            "ALTER TABLE t ALTER COLUMN s TYPE text COLLATE \"C\"",
            "ALTER TABLE t ALTER COLUMN s TYPE text[]",
            "ALTER TABLE t ALTER COLUMN s TYPE char(10)",
            "ALTER TABLE t ALTER COLUMN s TYPE app.text",
        ] {
            let f = review_sql(sql).unwrap();
            assert_eq!(
                (f.rule, f.default_policy),
                ("alter-column-type", Policy::Rewrite),
                "{sql}"
            );
            let plan = f.rewrite.expect(sql);
            assert!(
                matches!(&plan.steps[0].kind, StepKind::Rollout { table, .. } if table == "t"),
                "{sql}"
            );
            assert!(f.problem.contains("rewrites all of t"), "{sql}");
        }
    }

    #[test]
    fn the_rollout_gets_the_using_clause() {
        let f = review_sql(
            "ALTER TABLE app.t ALTER COLUMN \"Amount\" TYPE bigint USING \"Amount\" * 100",
        )
        .unwrap();
        assert_eq!(
            f.rewrite.unwrap().steps[0].kind,
            StepKind::Rollout {
                table: "app.t".into(),
                column: "Amount".into(),
                target: "bigint".into(),
                using: Some("\"Amount\" * 100".into()),
            }
        );
    }

    #[test]
    fn other_subcommands_pass() {
        let sql = "ALTER TABLE t ALTER COLUMN c SET DEFAULT 0";
        assert!(review(&parse_one(sql), sql).is_none());
    }
}

#[cfg(test)]
mod typmod_tests {
    use super::super::review_sql;
    use crate::sql::plan::StepKind;

    #[test]
    fn the_executor_gets_the_target_and_its_modifier() {
        for (sql, target, typmod) in [
            (
                "ALTER TABLE t ALTER COLUMN c TYPE varchar(40)",
                "varchar(40)",
                44,
            ),
            (
                "ALTER TABLE t ALTER COLUMN c TYPE numeric(12, 2)",
                "numeric(12, 2)",
                (12 << 16 | 2) + 4,
            ),
            ("ALTER TABLE t ALTER COLUMN c TYPE text", "text", -1),
            (
                "ALTER TABLE t ALTER COLUMN c TYPE timestamp(3)",
                "timestamp(3)",
                3,
            ),
        ] {
            let f = review_sql(sql).unwrap();
            let kind = f.rewrite.unwrap().steps[0].kind.clone();
            assert_eq!(
                kind,
                StepKind::TypeChange {
                    table: "t".into(),
                    column: "c".into(),
                    target: target.into(),
                    typmod
                },
                "{sql}"
            );
        }
    }
}
