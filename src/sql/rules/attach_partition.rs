//! `ATTACH PARTITION` takes SHARE UPDATE EXCLUSIVE on the parent (PG 12+) but ACCESS
//! EXCLUSIVE on the partition, and scans the partition to check its bound unless a
//! validated CHECK already proves it. The key column is only in the parent's
//! definition, so the rule cannot write that CHECK: it warns, runs the statement under
//! lock_timeout, and the hint describes the pre-validated CHECK.

use super::alter_table;
use super::{guarded, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::AlterTableType;
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "attach-partition",
    about: "ATTACH PARTITION scans the partition under ACCESS EXCLUSIVE unless a CHECK proves its bound",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    if one.kind != AlterTableType::AtAttachPartition {
        return None;
    }
    let Some(NodeEnum::PartitionCmd(cmd)) = one.cmd.def.as_ref().and_then(|d| d.node.as_ref())
    else {
        return None;
    };
    let parent = one.table();
    let part = cmd.name.as_ref().map(ident::relation).unwrap_or_default();
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on {parent} and ACCESS EXCLUSIVE on {part}, and scans {part} to check its bound unless a validated CHECK already proves it"
        ),
        rewrite: Some(guarded(original(node, sql), Lock::AccessExclusive)),
        hint: format!(
            "Before attaching, ADD CONSTRAINT … CHECK (<key> IS NOT NULL AND <key> within the bound) NOT VALID on {part} and VALIDATE it, and build the parent's indexes on {part} CONCURRENTLY; ATTACH then skips the scan, and the CHECK can be dropped after."
        ),
        relations: vec![parent.clone(), part],
        table: Some(parent),
        precheck: None,
        default_policy: Policy::Warn,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql, step_sql};
    use super::*;

    #[test]
    fn attach_warns_and_is_guarded() {
        let sql = "ALTER TABLE \"Metrics\".\"Samples\" ATTACH PARTITION \"Metrics\".\"Samples_2024\" FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.default_policy),
            ("attach-partition", "ALTER TABLE", Policy::Warn)
        );
        assert_eq!(f.table.as_deref(), Some("\"Metrics\".\"Samples\""));
        assert!(f
            .problem
            .contains("ACCESS EXCLUSIVE on \"Metrics\".\"Samples_2024\""));
        assert_eq!(step_sql(&f), [sql]);
        let step = &f.rewrite.unwrap().steps[0];
        assert_eq!((step.lock, step.long), (Lock::AccessExclusive, false));
    }

    #[test]
    fn other_subcommands_pass() {
        let sql = "ALTER TABLE p DETACH PARTITION p1";
        assert!(review(&parse_one(sql), sql).is_none());
    }
}
