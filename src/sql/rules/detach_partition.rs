//! `DETACH PARTITION` takes ACCESS EXCLUSIVE on the parent and the partition. Safe
//! form since PG 14: `DETACH PARTITION … CONCURRENTLY` (SHARE UPDATE EXCLUSIVE, outside
//! any transaction block). It is refused when the parent has a default partition;
//! an interrupted run is finished with `DETACH PARTITION … FINALIZE`.

use super::alter_table;
use super::{concurrent, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{AlterTableType, Node};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "detach-partition",
    about: "DETACH PARTITION blocks the parent; detach it CONCURRENTLY",
    review,
};

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    if one.kind != AlterTableType::AtDetachPartition {
        return None;
    }
    let Some(NodeEnum::PartitionCmd(cmd)) = one.cmd.def.as_ref().and_then(|d| d.node.as_ref())
    else {
        return None;
    };
    if cmd.concurrent {
        return None;
    }
    let parent = one.table();
    let part = cmd.name.as_ref().map(ident::relation).unwrap_or_default();
    let mut safe = cmd.clone();
    safe.concurrent = true;
    let mut detach = one.cmd.clone();
    detach.def = Some(Box::new(Node {
        node: Some(NodeEnum::PartitionCmd(safe)),
    }));
    let sql = alter_table::statement(one.stmt, detach);
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "DETACH PARTITION takes ACCESS EXCLUSIVE on {parent} and {part}: every query on the partitioned table waits"
        ),
        rewrite: Some(concurrent(sql)),
        hint: format!(
            "Use DETACH PARTITION … CONCURRENTLY outside a transaction block (not possible with a default partition); if it is interrupted, run ALTER TABLE {parent} DETACH PARTITION {part} FINALIZE."
        ),
        relations: vec![parent.clone(), part],
        table: Some(parent),
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
    fn detaches_concurrently() {
        let f = review_sql("ALTER TABLE IF EXISTS \"Metrics\".\"Samples\" DETACH PARTITION \"Metrics\".\"Samples_2020\"").unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("detach-partition", "ALTER TABLE", Lock::AccessExclusive)
        );
        assert_eq!(
            step_sql(&f),
            ["ALTER TABLE IF EXISTS \"Metrics\".\"Samples\" DETACH PARTITION \"Metrics\".\"Samples_2020\" CONCURRENTLY"]
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
    fn concurrent_and_finalize_pass() {
        for sql in [
            "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY",
            "ALTER TABLE p DETACH PARTITION p1 FINALIZE",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
