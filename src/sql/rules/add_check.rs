//! `ADD CHECK` scans the table under ACCESS EXCLUSIVE. Safe form: add it NOT VALID
//! (instant; new rows are checked from then on), then VALIDATE CONSTRAINT in its own
//! transaction (a scan under SHARE UPDATE EXCLUSIVE, which blocks no reads or writes).

use super::alter_table::{self, add_constraint, drop_constraint, validate};
use super::{expr, Rule};
use crate::sql::ident;
use crate::sql::naming::ConstraintNaming;
use crate::sql::plan::{Finding, Lock, Plan, Policy, Step};
use pg_query::protobuf::{AlterTableStmt, AlterTableType, ConstrType, Constraint};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "add-check",
    about: "ADD CHECK scans under ACCESS EXCLUSIVE; add it NOT VALID, then VALIDATE",
    review,
};

/// The check's name: its own, or a placeholder for the one Postgres would choose
/// (`t_col_check` when the condition reads one column, `t_check` otherwise,
/// numbered when taken), with the naming that picks it.
fn name_for(stmt: &AlterTableStmt, con: &Constraint) -> (String, Option<ConstraintNaming>) {
    if !con.conname.is_empty() {
        return (con.conname.clone(), None);
    }
    let Some(rel) = stmt.relation.as_ref() else {
        return (String::new(), None);
    };
    let cols = con
        .raw_expr
        .as_deref()
        .map(expr::columns)
        .unwrap_or_default();
    let name2 = match cols.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    let naming = ConstraintNaming::new(&ident::relation(rel), &rel.relname, name2, "check");
    (naming.placeholder.clone(), Some(naming))
}

/// ADD … NOT VALID, then VALIDATE: the two steps for a check on `stmt`'s table.
pub(super) fn steps(stmt: &AlterTableStmt, con: &Constraint) -> Vec<Step> {
    let (name, naming) = name_for(stmt, con);
    let mut not_valid = con.clone();
    not_valid.conname = name.clone();
    not_valid.skip_validation = true;
    not_valid.initially_valid = false;
    vec![
        Step::quick(add_constraint(stmt, not_valid), Lock::AccessExclusive)
            .undone_by(drop_constraint(stmt, &name))
            .naming(naming),
        validate(stmt, &name),
    ]
}

pub(super) const SUMMARY: &str = "CHECK added NOT VALID, then validated in its own transaction";

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    let con = one.constraint()?;
    if one.kind != AlterTableType::AtAddConstraint
        || con.contype != ConstrType::ConstrCheck as i32
        || con.skip_validation
    {
        return None;
    }
    let table = one.table();
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "ADD CHECK scans all of {table} under ACCESS EXCLUSIVE: reads and writes wait for the scan"
        ),
        rewrite: Some(Plan {
            summary: SUMMARY.into(),
            steps: steps(one.stmt, con),
        }),
        hint: "Add the constraint NOT VALID, then VALIDATE CONSTRAINT in a separate transaction."
            .into(),
        table: Some(table),
        relations: Vec::new(),
        precheck: None,
        default_policy: Policy::Rewrite,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;
    use crate::sql::plan::Placement;

    #[test]
    fn adds_not_valid_then_validates() {
        let f = review_sql("ALTER TABLE orders ADD CONSTRAINT positive_total CHECK (total >= 0)")
            .unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("add-check", "ALTER TABLE", Lock::AccessExclusive)
        );
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE orders ADD CONSTRAINT positive_total CHECK (total >= 0) NOT VALID",
                "ALTER TABLE orders VALIDATE CONSTRAINT positive_total",
            ]
        );
        let steps = f.rewrite.unwrap().steps;
        assert_eq!(
            (steps[0].lock, steps[0].long),
            (Lock::AccessExclusive, false)
        );
        assert_eq!(
            (steps[1].lock, steps[1].placement, steps[1].long),
            (Lock::ShareUpdateExclusive, Placement::OwnTransaction, true)
        );
    }

    #[test]
    fn names_unnamed_checks_like_postgres() {
        let f =
            review_sql("ALTER TABLE \"Billing\".\"Invoice\" ADD CHECK (\"Amount\" > 0)").unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE \"Billing\".\"Invoice\" ADD CONSTRAINT \"Invoice_Amount_check\" CHECK (\"Amount\" > 0) NOT VALID",
                "ALTER TABLE \"Billing\".\"Invoice\" VALIDATE CONSTRAINT \"Invoice_Amount_check\"",
            ]
        );
        let f = review_sql("ALTER TABLE ONLY t ADD CHECK (a < b) NO INHERIT").unwrap();
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE ONLY t ADD CONSTRAINT t_check CHECK (a < b) NO INHERIT NOT VALID",
                "ALTER TABLE ONLY t VALIDATE CONSTRAINT t_check",
            ]
        );
    }

    #[test]
    fn not_valid_checks_pass() {
        let sql = "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID";
        assert!(review(&parse_one(sql), sql).is_none());
    }
}
