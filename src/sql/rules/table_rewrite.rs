//! Statements that copy the whole table under ACCESS EXCLUSIVE: `VACUUM FULL`,
//! `CLUSTER`, and ALTER TABLE `SET TABLESPACE`, `SET LOGGED`/`SET UNLOGGED` and `SET
//! ACCESS METHOD` (and `ALTER TABLE ALL IN TABLESPACE … SET TABLESPACE`). Postgres has
//! no online form before `REPACK (CONCURRENTLY)`: rejected, with pg_repack or a new
//! table and copy as the way out.

use super::alter_table;
use super::Rule;
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{AlterTableType, DefElem, ObjectType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "table-rewrite",
    about: "VACUUM FULL, CLUSTER, SET TABLESPACE, SET LOGGED/UNLOGGED rewrite the table under ACCESS EXCLUSIVE",
    review,
};

/// An option given without a value, or with a true one.
fn is_on(d: &DefElem) -> bool {
    match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
        None => true,
        Some(NodeEnum::Boolean(b)) => b.boolval,
        Some(NodeEnum::Integer(i)) => i.ival != 0,
        Some(NodeEnum::String(s)) => {
            !matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "0")
        }
        Some(_) => true,
    }
}

fn review(node: &NodeEnum, _sql: &str) -> Option<Finding> {
    let (tag, what, table) = match node {
        NodeEnum::VacuumStmt(v) if v.is_vacuumcmd => {
            let full = v.options.iter().any(|o| {
                matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname == "full" && is_on(d))
            });
            if !full {
                return None;
            }
            let table = v.rels.iter().find_map(|r| match r.node.as_ref()? {
                NodeEnum::VacuumRelation(r) => r.relation.as_ref().map(ident::relation),
                _ => None,
            });
            ("VACUUM", "VACUUM FULL", table)
        }
        NodeEnum::ClusterStmt(c) => (
            "CLUSTER",
            "CLUSTER",
            c.relation.as_ref().map(ident::relation),
        ),
        NodeEnum::AlterTableMoveAllStmt(m) if m.objtype == ObjectType::ObjectTable as i32 => (
            "ALTER TABLE",
            "ALTER TABLE ALL IN TABLESPACE … SET TABLESPACE",
            None,
        ),
        _ => {
            use AlterTableType as T;
            let one = alter_table::single(node)?;
            let what = match one.kind {
                T::AtSetTableSpace => "SET TABLESPACE",
                T::AtSetLogged => "SET LOGGED",
                T::AtSetUnLogged => "SET UNLOGGED",
                T::AtSetAccessMethod => "SET ACCESS METHOD",
                _ => return None,
            };
            ("ALTER TABLE", what, Some(one.table()))
        }
    };
    let target = table
        .clone()
        .unwrap_or_else(|| "every table it touches".into());
    Some(Finding {
        rule: RULE.id,
        tag,
        lock: Lock::AccessExclusive,
        problem: format!("{what} rewrites {target} under ACCESS EXCLUSIVE: reads and writes wait for the whole copy"),
        rewrite: None,
        hint: "Use pg_repack (online), or build a new table, copy the rows over in batches and swap the names.".into(),
        table,
        relations: Vec::new(),
        precheck: None,
        default_policy: Policy::Reject,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse_one, review_sql};
    use super::*;

    #[test]
    fn rewrites_are_rejected() {
        for (sql, tag, table) in [
            (
                "VACUUM FULL \"Big\".\"Events\"",
                "VACUUM",
                Some("\"Big\".\"Events\""),
            ),
            ("VACUUM (FULL, ANALYZE) events", "VACUUM", Some("events")),
            ("VACUUM FULL", "VACUUM", None),
            (
                "CLUSTER events USING events_pkey",
                "CLUSTER",
                Some("events"),
            ),
            ("CLUSTER", "CLUSTER", None),
            (
                "ALTER TABLE \"Big\".\"Events\" SET TABLESPACE fast",
                "ALTER TABLE",
                Some("\"Big\".\"Events\""),
            ),
            (
                "ALTER TABLE events SET LOGGED",
                "ALTER TABLE",
                Some("events"),
            ),
            (
                "ALTER TABLE events SET UNLOGGED",
                "ALTER TABLE",
                Some("events"),
            ),
            (
                "ALTER TABLE ALL IN TABLESPACE slow SET TABLESPACE fast",
                "ALTER TABLE",
                None,
            ),
        ] {
            let f = review_sql(sql).unwrap_or_else(|| panic!("{sql}"));
            assert_eq!(
                (f.rule, f.tag, f.default_policy),
                ("table-rewrite", tag, Policy::Reject),
                "{sql}"
            );
            assert_eq!(f.table.as_deref(), table, "{sql}");
            assert!(f.rewrite.is_none());
            assert!(f.hint.contains("pg_repack"));
        }
    }

    #[test]
    fn plain_vacuum_and_analyze_pass() {
        for sql in [
            "VACUUM events",
            "VACUUM (ANALYZE) events",
            "VACUUM (FULL false) events",
            "ANALYZE events",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
