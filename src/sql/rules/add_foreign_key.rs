//! `ADD FOREIGN KEY` takes SHARE ROW EXCLUSIVE on both tables and scans the table
//! while holding it. Safe form: add it NOT VALID (instant; new rows are checked from
//! then on), then VALIDATE CONSTRAINT in its own transaction, which scans under SHARE
//! UPDATE EXCLUSIVE and blocks no reads or writes. `ADD COLUMN … REFERENCES` does not
//! scan (the new column is empty) and is left to `lock-timeout`.

use super::alter_table::{self, add_constraint, drop_constraint, validate};
use super::{str_val, Rule};
use crate::sql::ident;
use crate::sql::naming::{self, ConstraintNaming};
use crate::sql::plan::{Finding, Lock, Plan, Policy, Step};
use pg_query::protobuf::{AlterTableType, ConstrType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "add-foreign-key",
    about: "ADD FOREIGN KEY blocks writes during a scan; add it NOT VALID, then VALIDATE",
    review,
};

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    let con = one.constraint()?;
    if one.kind != AlterTableType::AtAddConstraint
        || con.contype != ConstrType::ConstrForeign as i32
        || con.skip_validation
    {
        return None;
    }
    let table = one.table();
    let referenced = con
        .pktable
        .as_ref()
        .map(ident::relation)
        .unwrap_or_default();
    let naming = con.conname.is_empty().then(|| {
        let cols: Vec<&str> = con.fk_attrs.iter().filter_map(str_val).collect();
        let addition = naming::fkey_addition(&cols);
        ConstraintNaming::new(&table, &one.rel.relname, Some(&addition), "fkey")
    });
    let name = naming
        .as_ref()
        .map_or_else(|| con.conname.clone(), |n| n.placeholder.clone());
    let mut not_valid = con.clone();
    not_valid.conname = name.clone();
    not_valid.skip_validation = true;
    not_valid.initially_valid = false;
    let steps = vec![
        Step::quick(add_constraint(one.stmt, not_valid), Lock::ShareRowExclusive)
            .undone_by(drop_constraint(one.stmt, &name))
            .naming(naming)
            .also_locks(referenced.clone()),
        validate(one.stmt, &name),
    ];
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::ShareRowExclusive,
        problem: format!(
            "ADD FOREIGN KEY scans {table} holding SHARE ROW EXCLUSIVE on {table} and {referenced}: writes to both wait for the scan"
        ),
        rewrite: Some(Plan {
            summary: format!(
                "ADD CONSTRAINT {} … NOT VALID, then VALIDATE CONSTRAINT in its own transaction",
                ident::quote(&name)
            ),
            steps,
        }),
        hint: "Add the constraint NOT VALID, then VALIDATE CONSTRAINT in a separate transaction; index the referencing columns first (CONCURRENTLY). Partitioned tables need PG 18 for NOT VALID foreign keys."
            .into(),
        // The referenced table is locked too: a new table's FK to a busy one is
        // not a statement nobody else feels.
        relations: vec![table.clone(), referenced],
        table: Some(table),
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
        let f = review_sql(
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE",
        )
        .unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("add-foreign-key", "ALTER TABLE", Lock::ShareRowExclusive)
        );
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE NOT VALID",
                "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk",
            ]
        );
        let steps = f.rewrite.unwrap().steps;
        assert_eq!(
            (steps[0].lock, steps[0].long),
            (Lock::ShareRowExclusive, false)
        );
        assert_eq!(steps[1].placement, Placement::OwnTransaction);
        assert_eq!(steps[1].lock, Lock::ShareUpdateExclusive);
        assert!(steps[1].long);
    }

    #[test]
    fn names_unnamed_constraints_like_postgres() {
        let f = review_sql(
            "ALTER TABLE ONLY \"Shop\".\"LineItem\" ADD FOREIGN KEY (\"orderId\", line) REFERENCES \"Shop\".\"Order\" (id, line) DEFERRABLE INITIALLY DEFERRED",
        )
        .unwrap();
        assert_eq!(f.table.as_deref(), Some("\"Shop\".\"LineItem\""));
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE ONLY \"Shop\".\"LineItem\" ADD CONSTRAINT \"LineItem_orderId_line_fkey\" FOREIGN KEY (\"orderId\", line) REFERENCES \"Shop\".\"Order\" (id, line) DEFERRABLE INITIALLY DEFERRED NOT VALID",
                "ALTER TABLE ONLY \"Shop\".\"LineItem\" VALIDATE CONSTRAINT \"LineItem_orderId_line_fkey\"",
            ]
        );
    }

    #[test]
    fn not_valid_and_inline_references_are_left_alone() {
        for sql in [
            "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p_id) REFERENCES p (id) NOT VALID",
            "ALTER TABLE t ADD COLUMN p_id int REFERENCES p (id)",
            "CREATE TABLE t (p_id int REFERENCES p (id))",
            "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
