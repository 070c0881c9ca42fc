//! `TRUNCATE` takes ACCESS EXCLUSIVE on every table it empties; with CASCADE that
//! includes every table referencing them, which is easy to underestimate. Warn, and
//! run it under lock_timeout.

use super::{guarded, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::DropBehavior;
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "truncate",
    about: "TRUNCATE takes ACCESS EXCLUSIVE (and CASCADE reaches further)",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let NodeEnum::TruncateStmt(stmt) = node else {
        return None;
    };
    let tables: Vec<String> = stmt
        .relations
        .iter()
        .filter_map(|r| match r.node.as_ref()? {
            NodeEnum::RangeVar(r) => Some(ident::relation(r)),
            _ => None,
        })
        .collect();
    let list = tables.join(", ");
    let problem = if stmt.behavior == DropBehavior::DropCascade as i32 {
        format!("TRUNCATE … CASCADE takes ACCESS EXCLUSIVE on {list} and empties every table that references them too: queries on all of them wait")
    } else {
        format!("TRUNCATE takes ACCESS EXCLUSIVE on {list}: queries on it wait")
    };
    Some(Finding {
        rule: RULE.id,
        tag: "TRUNCATE TABLE",
        lock: Lock::AccessExclusive,
        problem,
        rewrite: Some(guarded(original(node, sql), Lock::AccessExclusive)),
        hint: "List every table explicitly instead of CASCADE; for a big live table delete in batches instead.".into(),
        table: tables.first().cloned(),
        relations: tables,
        precheck: None,
        default_policy: Policy::Warn,
    })
}

#[cfg(test)]
mod tests {
    use super::super::review_sql;
    use super::super::step_sql;
    use super::*;

    #[test]
    fn truncate_warns() {
        let sql = "TRUNCATE TABLE \"Staging\".\"Import\"";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.default_policy),
            ("truncate", "TRUNCATE TABLE", Policy::Warn)
        );
        assert_eq!(
            f.problem,
            "TRUNCATE takes ACCESS EXCLUSIVE on \"Staging\".\"Import\": queries on it wait"
        );
        assert_eq!(step_sql(&f), [sql]);
    }

    #[test]
    fn cascade_is_called_out() {
        let f = review_sql("TRUNCATE a, b RESTART IDENTITY CASCADE").unwrap();
        assert!(f
            .problem
            .starts_with("TRUNCATE … CASCADE takes ACCESS EXCLUSIVE on a, b"));
        assert_eq!(f.table.as_deref(), Some("a"));
    }
}
