//! `DROP INDEX` takes ACCESS EXCLUSIVE on the index's table. Safe form: `DROP INDEX
//! CONCURRENTLY IF EXISTS` (SHARE UPDATE EXCLUSIVE, outside any transaction block;
//! IF EXISTS makes a retry after a partial run harmless). Postgres only allows it for
//! one index without CASCADE, so other forms get no rewrite.

use super::{concurrent, deparse, dropped_names, guarded, original, Rule};
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{DropBehavior, ObjectType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "drop-index",
    about: "DROP INDEX blocks reads and writes; drop it CONCURRENTLY",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let NodeEnum::DropStmt(stmt) = node else {
        return None;
    };
    if stmt.remove_type != ObjectType::ObjectIndex as i32 || stmt.concurrent {
        return None;
    }
    let names = dropped_names(stmt);
    let cascade = stmt.behavior == DropBehavior::DropCascade as i32;
    let concurrently = names.len() == 1 && !cascade;
    // CONCURRENTLY takes one index and no CASCADE. The drop itself is instant
    // once it has its lock, so the other forms run as written, only the lock
    // wait guarded.
    let rewrite = Some(if concurrently {
        let mut safe = stmt.clone();
        safe.concurrent = true;
        safe.missing_ok = true;
        concurrent(deparse(NodeEnum::DropStmt(safe)))
    } else {
        guarded(original(node, sql), Lock::AccessExclusive)
    });
    Some(Finding {
        rule: RULE.id,
        tag: "DROP INDEX",
        lock: Lock::AccessExclusive,
        problem: format!(
            "DROP INDEX {} takes ACCESS EXCLUSIVE on its table: reads and writes wait behind it",
            names.join(", ")
        ),
        hint: if concurrently {
            "Use DROP INDEX CONCURRENTLY IF EXISTS outside a transaction block.".into()
        } else {
            "DROP INDEX CONCURRENTLY takes one index and no CASCADE: drop each index in its own statement, and what depends on it first.".into()
        },
        rewrite,
        table: None,
        relations: names,
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
    fn drops_concurrently() {
        let f = review_sql("DROP INDEX index_users_on_email").unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("drop-index", "DROP INDEX", Lock::AccessExclusive)
        );
        assert_eq!(
            step_sql(&f),
            ["DROP INDEX CONCURRENTLY IF EXISTS index_users_on_email"]
        );
        let step = &f.rewrite.unwrap().steps[0];
        assert_eq!(
            (step.lock, step.placement, step.long),
            (
                Lock::ShareUpdateExclusive,
                Placement::OutsideTransaction,
                true
            )
        );
    }

    #[test]
    fn keeps_schema_and_quotes() {
        let f = review_sql("DROP INDEX IF EXISTS \"Shop\".\"Order_Total_idx\" RESTRICT").unwrap();
        assert_eq!(
            step_sql(&f),
            ["DROP INDEX CONCURRENTLY IF EXISTS \"Shop\".\"Order_Total_idx\""]
        );
        assert!(f.problem.contains("\"Shop\".\"Order_Total_idx\""));
    }

    #[test]
    fn several_indexes_or_cascade_run_as_written_under_lock_timeout() {
        for sql in ["DROP INDEX a, b", "DROP INDEX a CASCADE"] {
            let f = review_sql(sql).unwrap();
            assert_eq!(step_sql(&f), [sql]);
            assert_eq!(f.rewrite.unwrap().steps[0].placement, Placement::Anywhere);
        }
    }

    #[test]
    fn concurrent_drops_and_tables_pass() {
        for sql in ["DROP INDEX CONCURRENTLY i", "DROP TABLE t", "DROP VIEW v"] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
