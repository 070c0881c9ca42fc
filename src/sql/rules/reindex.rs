//! `REINDEX INDEX/TABLE` takes SHARE on the table and ACCESS EXCLUSIVE on each index
//! it rebuilds (queries planning with them wait too). Safe form since PG 12:
//! `REINDEX … CONCURRENTLY`, outside any transaction block; an interrupted run leaves
//! an INVALID `…_ccnew` index to drop. SCHEMA, DATABASE and SYSTEM reindexes touch
//! too much to rewrite: they get a warning.

use super::{concurrent, deparse, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{DefElem, DefElemAction, Node, ReindexObjectType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "reindex",
    about: "REINDEX blocks writes and index use; reindex CONCURRENTLY",
    review,
};

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    use ReindexObjectType as K;
    let NodeEnum::ReindexStmt(stmt) = node else {
        return None;
    };
    let already = stmt
        .params
        .iter()
        .any(|p| matches!(&p.node, Some(NodeEnum::DefElem(d)) if d.defname == "concurrently"));
    if already {
        return None;
    }
    let kind = K::try_from(stmt.kind).ok()?;
    let (what, table) = match (kind, &stmt.relation) {
        (K::ReindexObjectIndex, Some(r)) => (format!("index {}", ident::relation(r)), None),
        (K::ReindexObjectTable, Some(r)) => (
            format!("table {0}", ident::relation(r)),
            Some(ident::relation(r)),
        ),
        (K::ReindexObjectSchema, _) => (format!("schema {}", ident::quote(&stmt.name)), None),
        _ => ("every index of the database".to_string(), None),
    };
    let rewrite = matches!(kind, K::ReindexObjectIndex | K::ReindexObjectTable).then(|| {
        let mut safe = stmt.clone();
        safe.params.push(Node {
            node: Some(NodeEnum::DefElem(Box::new(DefElem {
                defname: "concurrently".into(),
                defaction: DefElemAction::DefelemUnspec as i32,
                location: -1,
                ..Default::default()
            }))),
        });
        let sql = deparse(NodeEnum::ReindexStmt(safe));
        concurrent(sql)
    });
    Some(Finding {
        rule: RULE.id,
        tag: "REINDEX",
        lock: Lock::Share,
        problem: format!(
            "REINDEX of {what} takes SHARE on each table and ACCESS EXCLUSIVE on each index: writes, and queries that plan with those indexes, wait for the rebuild"
        ),
        hint: match rewrite {
            Some(_) => "Use REINDEX … CONCURRENTLY outside a transaction block; if it is interrupted, drop the INVALID …_ccnew index it leaves.".into(),
            None => "Reindex the tables or indexes that need it one by one with REINDEX … CONCURRENTLY.".into(),
        },
        relations: Vec::new(),
        precheck: None,
        default_policy: if rewrite.is_some() { Policy::Rewrite } else { Policy::Warn },
        rewrite,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;
    use crate::sql::plan::Placement;

    #[test]
    fn reindexes_concurrently() {
        let f = review_sql("REINDEX INDEX index_users_on_email").unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock, f.default_policy),
            ("reindex", "REINDEX", Lock::Share, Policy::Rewrite)
        );
        assert_eq!(
            step_sql(&f),
            ["REINDEX (CONCURRENTLY) INDEX index_users_on_email"]
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
        let f = review_sql("REINDEX (VERBOSE) TABLE \"Sales\".\"Order\"").unwrap();
        assert_eq!(f.table.as_deref(), Some("\"Sales\".\"Order\""));
        assert_eq!(
            step_sql(&f),
            ["REINDEX (VERBOSE, CONCURRENTLY) TABLE \"Sales\".\"Order\""]
        );
    }

    #[test]
    fn wide_reindexes_only_warn() {
        for sql in [
            "REINDEX SCHEMA app",
            "REINDEX DATABASE shop",
            "REINDEX SYSTEM shop",
        ] {
            let f = review_sql(sql).unwrap();
            assert_eq!(f.default_policy, Policy::Warn, "{sql}");
            assert!(f.rewrite.is_none(), "{sql}");
        }
    }

    #[test]
    fn concurrent_reindexes_pass() {
        for sql in [
            "REINDEX INDEX CONCURRENTLY i",
            "REINDEX (CONCURRENTLY) TABLE t",
            "REINDEX SCHEMA CONCURRENTLY s",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
