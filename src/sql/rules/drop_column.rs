//! `DROP COLUMN` is instant (ACCESS EXCLUSIVE, no rewrite), but application code and
//! ORM caches that still select or insert the column break. Warn, and run it under
//! lock_timeout.

use super::alter_table;
use super::{guarded, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::AlterTableType;
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "drop-column",
    about: "DROP COLUMN breaks application code that still uses the column",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let one = alter_table::single(node)?;
    if one.kind != AlterTableType::AtDropColumn {
        return None;
    }
    let table = one.table();
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!(
            "DROP COLUMN {} on {table} breaks running application code that still reads or writes it",
            ident::quote(&one.cmd.name)
        ),
        rewrite: Some(guarded(original(node, sql), Lock::AccessExclusive)),
        hint: "Deploy code that no longer uses the column first; drop its indexes and foreign keys concurrently before the column.".into(),
        table: Some(table),
        relations: Vec::new(),
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
        let sql = "ALTER TABLE \"Crm\".\"Contact\" DROP COLUMN IF EXISTS \"Fax\" CASCADE";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.default_policy),
            ("drop-column", "ALTER TABLE", Policy::Warn)
        );
        assert_eq!(f.table.as_deref(), Some("\"Crm\".\"Contact\""));
        assert!(f
            .problem
            .starts_with("DROP COLUMN \"Fax\" on \"Crm\".\"Contact\""));
        assert_eq!(step_sql(&f), [sql]);
        assert_eq!(f.rewrite.unwrap().steps[0].lock, Lock::AccessExclusive);
    }

    #[test]
    fn other_subcommands_pass() {
        let sql = "ALTER TABLE t DROP CONSTRAINT c";
        assert!(review(&parse_one(sql), sql).is_none());
    }
}
