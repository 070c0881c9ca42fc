//! `ALTER TYPE … ADD VALUE` takes no table lock and may run in a transaction block
//! since PG 12, but the new value cannot be used until that transaction commits. A
//! finding with the `allow` policy: it passes through, and `pgshift check` shows why a
//! later statement in the same migration may fail.

use super::{guarded, name_list, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "enum-add-value",
    about: "ALTER TYPE … ADD VALUE: the value is unusable until COMMIT",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let NodeEnum::AlterEnumStmt(stmt) = node else {
        return None;
    };
    if !stmt.old_val.is_empty() {
        return None; // RENAME VALUE
    }
    let type_name = name_list(&stmt.type_name);
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TYPE",
        lock: Lock::None,
        problem: format!(
            "ADD VALUE {} to {type_name} cannot be used by statements in the same transaction before it commits",
            ident::literal(&stmt.new_val)
        ),
        rewrite: Some(guarded(original(node, sql), Lock::None)),
        hint: "Add enum values in their own migration (or transaction) before the statements that use them; IF NOT EXISTS makes it rerunnable.".into(),
        table: None,
        relations: Vec::new(),
        precheck: None,
        default_policy: Policy::Allow,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;

    #[test]
    fn add_value_is_allowed_with_a_note() {
        let sql =
            "ALTER TYPE \"Shop\".\"OrderStatus\" ADD VALUE IF NOT EXISTS 'on_hold' AFTER 'paid'";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock, f.default_policy),
            ("enum-add-value", "ALTER TYPE", Lock::None, Policy::Allow)
        );
        assert!(f
            .problem
            .starts_with("ADD VALUE 'on_hold' to \"Shop\".\"OrderStatus\""));
        assert_eq!(step_sql(&f), [sql]);
    }

    #[test]
    fn rename_value_passes() {
        let sql = "ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'";
        assert!(review(&parse_one(sql), sql).is_none());
    }
}
