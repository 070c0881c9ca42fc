//! `RENAME COLUMN` and `RENAME TABLE` are instant (ACCESS EXCLUSIVE, catalog only), but
//! application code still running against the old name breaks the moment they
//! commit. There is no safe form in place: warn, and run it under lock_timeout.

use super::{guarded, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::ObjectType;
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "rename",
    about: "RENAME COLUMN/TABLE breaks application code still using the old name",
    review,
};

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let NodeEnum::RenameStmt(stmt) = node else {
        return None;
    };
    let table = ident::relation(stmt.relation.as_ref()?);
    let new = ident::quote(&stmt.newname);
    let (what, hint) = if stmt.rename_type == ObjectType::ObjectColumn as i32
        && stmt.relation_type == ObjectType::ObjectTable as i32
    {
        (
            format!("RENAME COLUMN {} TO {new} on {table}", ident::quote(&stmt.subname)),
            "Add the new column, write both, backfill, switch reads, then drop the old column; or keep the old name in the database.",
        )
    } else if stmt.rename_type == ObjectType::ObjectTable as i32 {
        (
            format!("RENAME TABLE {table} TO {new}"),
            "Rename the table and create a view with the old name in the same transaction; drop the view after the deploy.",
        )
    } else {
        return None;
    };
    Some(Finding {
        rule: RULE.id,
        tag: "ALTER TABLE",
        lock: Lock::AccessExclusive,
        problem: format!("{what} breaks running application code that still uses the old name"),
        rewrite: Some(guarded(original(node, sql), Lock::AccessExclusive)),
        hint: hint.into(),
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
    fn column_renames_warn() {
        let sql = "ALTER TABLE \"Crm\".\"Contact\" RENAME COLUMN \"eMail\" TO email";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.default_policy),
            ("rename", "ALTER TABLE", Policy::Warn)
        );
        assert_eq!(
            f.problem,
            "RENAME COLUMN \"eMail\" TO email on \"Crm\".\"Contact\" breaks running application code that still uses the old name"
        );
        assert_eq!(step_sql(&f), [sql]);
        assert_eq!(f.rewrite.unwrap().steps[0].lock, Lock::AccessExclusive);
    }

    #[test]
    fn table_renames_warn() {
        let f = review_sql("ALTER TABLE IF EXISTS app.users RENAME TO accounts").unwrap();
        assert_eq!(f.table.as_deref(), Some("app.users"));
        assert_eq!(
            step_sql(&f),
            ["ALTER TABLE IF EXISTS app.users RENAME TO accounts"]
        );
    }

    #[test]
    fn other_renames_pass() {
        for sql in [
            "ALTER INDEX i RENAME TO j",
            "ALTER TABLE t RENAME CONSTRAINT a TO b",
            "ALTER VIEW v RENAME TO w",
        ] {
            assert!(review(&parse_one(sql), sql).is_none(), "{sql}");
        }
    }
}
