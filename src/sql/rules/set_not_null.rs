//! `ALTER COLUMN c SET NOT NULL` scans the whole table under ACCESS EXCLUSIVE. Since
//! PG 12 a validated `CHECK (c IS NOT NULL)` lets it skip the scan, so the safe form
//! adds that check NOT VALID (instant), validates it in its own transaction (a scan
//! under SHARE UPDATE EXCLUSIVE), sets NOT NULL (instant) and drops the check.

use super::alter_table::{self, add_constraint, drop_constraint, validate};
use super::Rule;
use crate::sql::ident;
use crate::sql::naming::ConstraintNaming;
use crate::sql::plan::{Finding, Lock, Plan, Policy, Precheck, Step};
use pg_query::protobuf::{
    AlterTableStmt, AlterTableType, ColumnRef, ConstrType, Constraint, Node, NullTest, NullTestType,
};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "set-not-null",
    about: "SET NOT NULL scans the table under ACCESS EXCLUSIVE; prove it with a CHECK first",
    review,
};

/// The four steps that set NOT NULL on `column` of `stmt`'s table without a locked scan.
pub(super) fn steps(stmt: &AlterTableStmt, column: &str) -> Vec<Step> {
    // pgshift's own check, dropped at the end: any free name will do, and
    // Postgres' rules give one in the same style.
    let naming = stmt
        .relation
        .as_ref()
        .map(|r| ConstraintNaming::new(&ident::relation(r), &r.relname, Some(column), "not_null"));
    let name = naming
        .as_ref()
        .map_or(String::new(), |n| n.placeholder.clone());
    let test = NullTest {
        arg: Some(Box::new(Node {
            node: Some(NodeEnum::ColumnRef(ColumnRef {
                fields: vec![super::string_node(column)],
                location: -1,
            })),
        })),
        nulltesttype: NullTestType::IsNotNull as i32,
        location: -1,
        ..Default::default()
    };
    let check = Constraint {
        contype: ConstrType::ConstrCheck as i32,
        conname: name.clone(),
        raw_expr: Some(Box::new(Node {
            node: Some(NodeEnum::NullTest(Box::new(test))),
        })),
        skip_validation: true,
        // ONLY: the table's own NOT NULL, not its inheritance children's
        // (Postgres refuses an inherited CHECK added with ONLY while there are
        // children; a partitioned table's goes as written, see `only`).
        is_no_inherit: only(stmt),
        location: -1,
        ..Default::default()
    };
    let mut set = alter_table::cmd(AlterTableType::AtSetNotNull);
    set.name = column.into();
    vec![
        Step::quick(add_constraint(stmt, check), Lock::AccessExclusive)
            .undone_by(drop_constraint(stmt, &name))
            .naming(naming),
        validate(stmt, &name).reports_null_in(column),
        Step::quick(alter_table::statement(stmt, set), Lock::AccessExclusive),
        Step::quick(drop_constraint(stmt, &name), Lock::AccessExclusive),
    ]
}

/// `ALTER TABLE ONLY …`: the statement leaves the table's children alone.
fn only(stmt: &AlterTableStmt) -> bool {
    stmt.relation.as_ref().is_some_and(|r| !r.inh)
}

/// Whether `plan` is this rule's for `ALTER TABLE ONLY` (its CHECK is NO
/// INHERIT). On a partitioned table it would fail (Postgres refuses a NO
/// INHERIT constraint there), and the statement as written scans nothing
/// (the partitioned table holds no rows): it runs as written.
pub fn only_table(plan: &Plan) -> bool {
    plan.steps
        .first()
        .is_some_and(|s| s.sql.ends_with(" NO INHERIT NOT VALID"))
}

pub(super) const SUMMARY: &str =
    "NOT NULL proved by a CHECK (… IS NOT NULL) NOT VALID, validated in its own transaction, then set without a scan";

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    if one.kind != AlterTableType::AtSetNotNull {
        return None;
    }
    let table = one.table();
    let column = one.cmd.name.as_str();
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "SET NOT NULL scans all of {table} under ACCESS EXCLUSIVE: reads and writes wait for the scan"
        ),
        rewrite: Some(Plan {
            summary: SUMMARY.into(),
            steps: steps(one.stmt, column),
        }),
        hint: format!(
            "Add CHECK ({} IS NOT NULL) NOT VALID, VALIDATE it in a separate transaction, then SET NOT NULL.",
            ident::quote(column)
        ),
        table: Some(table.clone()),
        relations: Vec::new(),
        precheck: Some(Precheck {
            columns: vec![column.to_string()],
            column_of_relation: true,
            action: Some("ALTER COLUMN ... SET NOT NULL"),
            no_system_column: true,
            ..Precheck::of(&table)
        }),
        default_policy: Policy::Rewrite,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{review_sql, step_sql};
    use super::*;
    use crate::sql::plan::Placement;

    #[test]
    fn only_proves_it_for_the_table_alone() {
        let f = review_sql("ALTER TABLE ONLY par ALTER COLUMN a SET NOT NULL").unwrap();
        let plan = f.rewrite.as_ref().unwrap();
        assert_eq!(
            step_sql(&f)[0],
            "ALTER TABLE ONLY par ADD CONSTRAINT par_a_not_null CHECK (a IS NOT NULL) NO INHERIT NOT VALID"
        );
        assert!(only_table(plan));
        let f = review_sql("ALTER TABLE par ALTER COLUMN a SET NOT NULL").unwrap();
        assert!(!only_table(f.rewrite.as_ref().unwrap()));
    }

    #[test]
    fn proves_not_null_with_a_check() {
        let f = review_sql("ALTER TABLE users ALTER COLUMN email SET NOT NULL").unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("set-not-null", "ALTER TABLE", Lock::AccessExclusive)
        );
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID",
                "ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null",
                "ALTER TABLE users ALTER COLUMN email SET NOT NULL",
                "ALTER TABLE users DROP CONSTRAINT users_email_not_null",
            ]
        );
        let steps = f.rewrite.unwrap().steps;
        assert_eq!(steps[1].lock, Lock::ShareUpdateExclusive);
        assert_eq!(steps[1].placement, Placement::OwnTransaction);
        assert!(steps[1].long);
        assert!(steps
            .iter()
            .enumerate()
            .all(|(i, s)| i == 1 || (!s.long && s.lock == Lock::AccessExclusive)));
    }

    #[test]
    fn keeps_schema_quotes_and_only() {
        let f =
            review_sql("ALTER TABLE IF EXISTS ONLY \"App\".\"User\" ALTER \"Email\" SET NOT NULL")
                .unwrap();
        assert_eq!(f.table.as_deref(), Some("\"App\".\"User\""));
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE IF EXISTS ONLY \"App\".\"User\" ADD CONSTRAINT \"User_Email_not_null\" CHECK (\"Email\" IS NOT NULL) NO INHERIT NOT VALID",
                "ALTER TABLE IF EXISTS ONLY \"App\".\"User\" VALIDATE CONSTRAINT \"User_Email_not_null\"",
                "ALTER TABLE IF EXISTS ONLY \"App\".\"User\" ALTER COLUMN \"Email\" SET NOT NULL",
                "ALTER TABLE IF EXISTS ONLY \"App\".\"User\" DROP CONSTRAINT \"User_Email_not_null\"",
            ]
        );
    }

    #[test]
    fn other_statements_pass() {
        assert!(review(
            &super::super::parse_one("ALTER TABLE t ALTER c DROP NOT NULL"),
            ""
        )
        .is_none());
    }
}
