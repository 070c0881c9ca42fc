//! `DROP TABLE` takes ACCESS EXCLUSIVE on the table and on every table its foreign
//! keys reference (dropping the FK touches both). Instant once it has the locks, but
//! code still using the table breaks. Warn, and run it under lock_timeout.

use super::{dropped_names, guarded, original, Rule};
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{DropBehavior, ObjectType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "drop-table",
    about: "DROP TABLE locks the table and every table it references",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let NodeEnum::DropStmt(stmt) = node else {
        return None;
    };
    if stmt.remove_type != ObjectType::ObjectTable as i32 {
        return None;
    }
    let tables = dropped_names(stmt);
    let cascade = if stmt.behavior == DropBehavior::DropCascade as i32 {
        ", and CASCADE drops whatever depends on it"
    } else {
        ""
    };
    Some(Finding {
        rule: RULE.id,
        tag: "DROP TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "DROP TABLE takes ACCESS EXCLUSIVE on {} and on every table its foreign keys reference: queries on all of them wait{cascade}",
            tables.join(", ")
        ),
        rewrite: Some(guarded(original(node, sql), Lock::AccessExclusive)),
        hint: "Deploy code that no longer uses the table first; drop its foreign keys one by one (each under lock_timeout) before the table.".into(),
        table: tables.first().cloned(),
        relations: tables,
        precheck: None,
        default_policy: Policy::Warn,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;

    #[test]
    fn drops_warn() {
        let sql = "DROP TABLE IF EXISTS \"Legacy\".\"OldOrders\", audit_log CASCADE";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.default_policy),
            ("drop-table", "DROP TABLE", Policy::Warn)
        );
        assert_eq!(f.table.as_deref(), Some("\"Legacy\".\"OldOrders\""));
        assert!(f.problem.contains("\"Legacy\".\"OldOrders\", audit_log"));
        assert!(f.problem.contains("CASCADE"));
        assert_eq!(step_sql(&f), [sql]);
    }

    #[test]
    fn other_drops_pass() {
        for sql in [
            "DROP VIEW v",
            "DROP INDEX CONCURRENTLY i",
            "DROP FUNCTION f()",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
