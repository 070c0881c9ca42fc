//! `ADD … EXCLUDE` builds its index under ACCESS EXCLUSIVE, and Postgres has no
//! NOT VALID or USING INDEX for exclusion constraints: there is no safe form in
//! place. Without this rule `lock-timeout` would pass it as a short statement.

use super::alter_table;
use super::Rule;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{AlterTableType, ConstrType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "add-exclusion",
    about: "ADD EXCLUDE builds an index under ACCESS EXCLUSIVE and has no online form",
    review,
};

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    let con = one.constraint()?;
    if one.kind != AlterTableType::AtAddConstraint
        || con.contype != ConstrType::ConstrExclusion as i32
    {
        return None;
    }
    let table = one.table();
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "ADD EXCLUDE builds an index on {table} under ACCESS EXCLUSIVE: reads and writes wait for the build"
        ),
        rewrite: None,
        hint: "Exclusion constraints cannot be added NOT VALID or USING INDEX: build a new table with the constraint and copy the rows over, or allow this rule for a small table."
            .into(),
        table: Some(table),
        relations: Vec::new(),
        precheck: None,
        default_policy: Policy::Reject,
    })
}

#[cfg(test)]
mod tests {
    use super::super::review_sql;
    use super::*;

    #[test]
    fn exclusion_constraints_are_rejected() {
        let f = review_sql(
            "ALTER TABLE \"Booking\".rooms ADD CONSTRAINT no_overlap EXCLUDE USING gist (room WITH =, during WITH &&)",
        )
        .unwrap();
        assert_eq!(
            (f.rule, f.default_policy),
            ("add-exclusion", Policy::Reject)
        );
        assert_eq!(f.table.as_deref(), Some("\"Booking\".rooms"));
        assert!(f.rewrite.is_none());
    }

    #[test]
    fn other_constraints_pass() {
        let sql = "ALTER TABLE t ADD CONSTRAINT k UNIQUE (a)";
        assert!(review(&super::super::parse_one(sql), sql).is_none());
    }
}
