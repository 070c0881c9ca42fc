//! The catch-all, last in the registry: statements that are over in a moment but take
//! a strong table lock. They are only dangerous while they wait: queued behind a long
//! transaction, the lock request blocks every later query that conflicts with it. The
//! plan is the statement itself, run under `lock_timeout` with retries.
//!
//! Covers every ALTER TABLE subcommand no other rule claims (ADD COLUMN with a
//! constant default, SET/DROP DEFAULT, DROP CONSTRAINT, SET STATISTICS, ...),
//! CREATE TRIGGER, DROP TRIGGER and RENAME CONSTRAINT. VALIDATE CONSTRAINT and the
//! second half of DETACH PARTITION CONCURRENTLY are already the safe forms: no finding.

use super::alter_table::{self, lock_of};
use super::{guarded, name_list, original, Rule};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Policy};
use pg_query::protobuf::{AlterTableType, ObjectType};
use pg_query::NodeEnum;

pub const RULE: Rule = Rule {
    id: "lock-timeout",
    about: "short DDL that takes a strong lock: run it under lock_timeout with retries",
    review,
};

/// What waiting for `lock` does to the application.
pub(super) fn problem(lock: Lock, table: &str) -> String {
    let stalls = if lock.blocks_reads() {
        format!("every query on {table}")
    } else if lock.blocks_writes() {
        format!("every write to {table}")
    } else {
        format!("other schema changes and VACUUM on {table}")
    };
    format!("{lock} on {table}: queued behind a long transaction it stalls {stalls}")
}

fn finding(tag: &'static str, lock: Lock, table: String, sql: String) -> Finding {
    Finding {
        rule: RULE.id,
        tag,
        lock,
        problem: problem(lock, &table),
        rewrite: Some(guarded(sql, lock)),
        hint:
            "Run it with a short lock_timeout (e.g. SET lock_timeout = '2s') and retry on failure."
                .into(),
        table: Some(table),
        relations: Vec::new(),
        precheck: None,
        default_policy: Policy::Rewrite,
    }
}

fn review(node: &NodeEnum, sql: &str) -> Option<Finding> {
    let sql = || original(node, sql);
    if let Some(one) = alter_table::single(node) {
        use AlterTableType as T;
        let lock = lock_of(one.cmd);
        let safe_form = match one.kind {
            T::AtValidateConstraint | T::AtDetachPartitionFinalize => true,
            T::AtDetachPartition => lock == Lock::ShareUpdateExclusive, // CONCURRENTLY
            _ => false,
        };
        return (!safe_form).then(|| finding("ALTER TABLE", lock, one.table(), sql()));
    }
    match node {
        NodeEnum::CreateTrigStmt(t) => {
            let table = ident::relation(t.relation.as_ref()?);
            Some(finding(
                "CREATE TRIGGER",
                Lock::ShareRowExclusive,
                table,
                sql(),
            ))
        }
        NodeEnum::DropStmt(d) if d.remove_type == ObjectType::ObjectTrigger as i32 => {
            // objects: [[schema,] table, trigger]
            let NodeEnum::List(names) = d.objects.first()?.node.as_ref()? else {
                return None;
            };
            let (_, table) = names.items.split_last()?;
            Some(finding(
                "DROP TRIGGER",
                Lock::AccessExclusive,
                name_list(table),
                sql(),
            ))
        }
        NodeEnum::RenameStmt(r) if r.rename_type == ObjectType::ObjectTabconstraint as i32 => {
            let table = ident::relation(r.relation.as_ref()?);
            Some(finding("ALTER TABLE", Lock::AccessExclusive, table, sql()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{review_sql, step_sql};
    use super::*;

    fn check(sql: &str, tag: &str, lock: Lock, table: &str) {
        let f = review_sql(sql).unwrap_or_else(|| panic!("no finding for {sql}"));
        assert_eq!(f.rule, "lock-timeout", "{sql}");
        assert_eq!(f.tag, tag, "{sql}");
        assert_eq!(f.lock, lock, "{sql}");
        assert_eq!(f.table.as_deref(), Some(table), "{sql}");
        assert_eq!(step_sql(&f), [sql], "{sql}");
        let step = &f.rewrite.unwrap().steps[0];
        assert_eq!((step.lock, step.long), (lock, false), "{sql}");
    }

    #[test]
    fn short_alter_table_subcommands_are_guarded() {
        use Lock::*;
        let t = "app.\"Orders\"";
        for (sql, lock) in [
            ("ALTER TABLE app.\"Orders\" ADD COLUMN note text", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ADD COLUMN n int NOT NULL DEFAULT 0", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ADD COLUMN at timestamptz DEFAULT now()", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ALTER COLUMN n SET DEFAULT 1", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ALTER COLUMN n DROP DEFAULT", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ALTER COLUMN n DROP NOT NULL", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" DROP CONSTRAINT \"Orders_n_check\"", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ALTER COLUMN n SET STATISTICS 500", ShareUpdateExclusive),
            ("ALTER TABLE app.\"Orders\" SET (fillfactor = 70)", ShareUpdateExclusive),
            ("ALTER TABLE app.\"Orders\" DISABLE TRIGGER ALL", ShareRowExclusive),
            ("ALTER TABLE app.\"Orders\" ENABLE TRIGGER audit", ShareRowExclusive),
            (
                "ALTER TABLE app.\"Orders\" ADD CONSTRAINT fk FOREIGN KEY (p_id) REFERENCES p (id) NOT VALID",
                ShareRowExclusive,
            ),
            ("ALTER TABLE app.\"Orders\" ADD CONSTRAINT k UNIQUE USING INDEX k", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" OWNER TO app", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" ALTER CONSTRAINT fk DEFERRABLE", AccessExclusive),
            ("ALTER TABLE app.\"Orders\" RENAME CONSTRAINT a TO b", AccessExclusive),
        ] {
            check(sql, "ALTER TABLE", lock, t);
        }
    }

    #[test]
    fn triggers_are_guarded() {
        check(
            "CREATE TRIGGER audit AFTER UPDATE ON app.\"Orders\" FOR EACH ROW EXECUTE FUNCTION audit()",
            "CREATE TRIGGER",
            Lock::ShareRowExclusive,
            "app.\"Orders\"",
        );
        check(
            "DROP TRIGGER IF EXISTS audit ON app.\"Orders\"",
            "DROP TRIGGER",
            Lock::AccessExclusive,
            "app.\"Orders\"",
        );
    }

    #[test]
    fn problem_names_who_waits() {
        let f = review_sql("ALTER TABLE t ALTER c SET DEFAULT 0").unwrap();
        assert_eq!(
            f.problem,
            "ACCESS EXCLUSIVE on t: queued behind a long transaction it stalls every query on t"
        );
    }

    #[test]
    fn safe_forms_and_other_statements_pass() {
        for sql in [
            "ALTER TABLE t VALIDATE CONSTRAINT fk",
            "ALTER TABLE p DETACH PARTITION p1 FINALIZE",
            "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY",
            "COMMENT ON TABLE t IS 'x'",
            "CREATE TABLE t (id int)",
            "GRANT SELECT ON t TO app",
            "ALTER INDEX i RENAME TO j",
            "ALTER SEQUENCE s RESTART",
            "CREATE VIEW v AS SELECT 1",
        ] {
            assert!(review_sql(sql).is_none(), "{sql}");
        }
    }
}
