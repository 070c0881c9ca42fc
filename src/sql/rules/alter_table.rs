//! ALTER TABLE plumbing shared by the rules: the single subcommand a rule looks at,
//! one subcommand deparsed back into a statement (ONLY, IF EXISTS and the schema kept),
//! the lock each subcommand takes, and the split of statements with several
//! subcommands into one reviewed statement each.

use super::{deparse, lock_timeout, review_one};
use crate::sql::ident;
use crate::sql::plan::{Finding, Lock, Placement, Plan, Policy, Step, StepKind};
use pg_query::protobuf::{
    AlterTableCmd, AlterTableStmt, AlterTableType, ConstrType, Constraint, DropBehavior, Node,
    ObjectType, RangeVar,
};
use pg_query::NodeEnum;

/// An ALTER TABLE on a table with exactly one subcommand.
#[derive(Debug, Clone, Copy)]
pub(super) struct One<'a> {
    pub stmt: &'a AlterTableStmt,
    pub cmd: &'a AlterTableCmd,
    pub kind: AlterTableType,
    pub rel: &'a RangeVar,
}

impl One<'_> {
    /// The table as written, schema-qualified if it was.
    pub fn table(&self) -> String {
        ident::relation(self.rel)
    }

    /// The subcommand's definition as a constraint (ADD CONSTRAINT).
    pub fn constraint(&self) -> Option<&Constraint> {
        match self.cmd.def.as_ref()?.node.as_ref()? {
            NodeEnum::Constraint(c) => Some(c),
            _ => None,
        }
    }
}

fn on_table(node: &NodeEnum) -> Option<&AlterTableStmt> {
    match node {
        NodeEnum::AlterTableStmt(s) if s.objtype == ObjectType::ObjectTable as i32 => Some(s),
        _ => None,
    }
}

/// The statement's only subcommand, when it is an ALTER TABLE with exactly one.
pub(super) fn single(node: &NodeEnum) -> Option<One<'_>> {
    let stmt = on_table(node)?;
    let [cmd] = stmt.cmds.as_slice() else {
        return None;
    };
    let NodeEnum::AlterTableCmd(cmd) = cmd.node.as_ref()? else {
        return None;
    };
    Some(One {
        stmt,
        cmd,
        kind: AlterTableType::try_from(cmd.subtype).ok()?,
        rel: stmt.relation.as_ref()?,
    })
}

/// The statement, when it is an ALTER TABLE with several subcommands.
pub(super) fn several(node: &NodeEnum) -> Option<&AlterTableStmt> {
    on_table(node).filter(|s| s.cmds.len() > 1)
}

/// A subcommand of this type, to be filled in.
pub(super) fn cmd(kind: AlterTableType) -> AlterTableCmd {
    AlterTableCmd {
        subtype: kind as i32,
        behavior: DropBehavior::DropRestrict as i32,
        ..Default::default()
    }
}

fn node(n: NodeEnum) -> Node {
    Node { node: Some(n) }
}

/// `stmt` with `cmd` as its only subcommand, as SQL.
pub(super) fn statement(stmt: &AlterTableStmt, cmd: AlterTableCmd) -> String {
    deparse(NodeEnum::AlterTableStmt(AlterTableStmt {
        cmds: vec![node(NodeEnum::AlterTableCmd(Box::new(cmd)))],
        ..stmt.clone()
    }))
}

/// `ALTER TABLE … ADD <constraint>`.
pub(super) fn add_constraint(stmt: &AlterTableStmt, con: Constraint) -> String {
    let mut add = cmd(AlterTableType::AtAddConstraint);
    add.def = Some(Box::new(node(NodeEnum::Constraint(Box::new(con)))));
    statement(stmt, add)
}

/// `ALTER TABLE … VALIDATE CONSTRAINT <name>` as a long step in its own transaction.
pub(super) fn validate(stmt: &AlterTableStmt, name: &str) -> Step {
    let mut v = cmd(AlterTableType::AtValidateConstraint);
    v.name = name.into();
    Step::long(
        statement(stmt, v),
        Lock::ShareUpdateExclusive,
        Placement::OwnTransaction,
    )
}

/// `ALTER TABLE … DROP CONSTRAINT <name>`.
pub(super) fn drop_constraint(stmt: &AlterTableStmt, name: &str) -> String {
    let mut d = cmd(AlterTableType::AtDropConstraint);
    d.name = name.into();
    statement(stmt, d)
}

/// The table lock a subcommand takes (PG 15 `AlterTableGetLockLevel`, simplified;
/// triggers, SET (…), SET STATISTICS and ALTER CONSTRAINT checked in `pg_locks`).
pub(super) fn lock_of(cmd: &AlterTableCmd) -> Lock {
    use AlterTableType as T;
    let Ok(kind) = T::try_from(cmd.subtype) else {
        return Lock::AccessExclusive;
    };
    match kind {
        T::AtSetStatistics
        | T::AtSetOptions
        | T::AtResetOptions
        | T::AtSetRelOptions
        | T::AtResetRelOptions
        | T::AtClusterOn
        | T::AtDropCluster
        | T::AtValidateConstraint
        | T::AtAttachPartition
        | T::AtDetachPartitionFinalize => Lock::ShareUpdateExclusive,
        T::AtEnableTrig
        | T::AtEnableAlwaysTrig
        | T::AtEnableReplicaTrig
        | T::AtDisableTrig
        | T::AtEnableTrigAll
        | T::AtDisableTrigAll
        | T::AtEnableTrigUser
        | T::AtDisableTrigUser => Lock::ShareRowExclusive,
        T::AtAddConstraint => match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
            Some(NodeEnum::Constraint(c)) if c.contype == ConstrType::ConstrForeign as i32 => {
                Lock::ShareRowExclusive
            }
            _ => Lock::AccessExclusive,
        },
        T::AtDetachPartition => match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
            Some(NodeEnum::PartitionCmd(p)) if p.concurrent => Lock::ShareUpdateExclusive,
            _ => Lock::AccessExclusive,
        },
        _ => Lock::AccessExclusive,
    }
}

/// True when a plan is just the statement under lock_timeout: such subcommands can
/// stay together in one statement.
fn is_guarded(f: &Finding) -> bool {
    f.rewrite.as_ref().is_some_and(|p| {
        matches!(p.steps.as_slice(), [s] if !s.long && s.placement == Placement::Anywhere && s.kind == StepKind::Sql)
    })
}

/// True when the subcommand's plan is an online rollout, which runs only as a
/// statement of its own.
fn is_rollout(f: &Finding) -> bool {
    f.rewrite.as_ref().is_some_and(|p| {
        p.steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::Rollout { .. }))
    })
}

struct Part {
    sql: String,
    lock: Lock,
    finding: Option<Finding>,
}

/// Reviews each subcommand of `stmt` as a statement of its own. A rejected subcommand
/// rejects the whole statement; when every subcommand only needs lock_timeout the
/// original runs as one guarded step; otherwise the statement is split, one ALTER
/// TABLE per subcommand, and their plans run in order.
pub(super) fn review_split(stmt: &AlterTableStmt, sql: &str) -> Option<Finding> {
    let table = ident::relation(stmt.relation.as_ref()?);
    // The statement without its subcommands: cloning the whole of it for each one
    // made a statement with 3,000 subcommands take 100 s.
    let bare = AlterTableStmt {
        relation: stmt.relation.clone(),
        cmds: Vec::new(),
        objtype: stmt.objtype,
        missing_ok: stmt.missing_ok,
    };
    let mut parts = Vec::new();
    for c in &stmt.cmds {
        let NodeEnum::AlterTableCmd(cmd) = c.node.as_ref()? else {
            return None;
        };
        let one = NodeEnum::AlterTableStmt(AlterTableStmt {
            cmds: vec![c.clone()],
            ..bare.clone()
        });
        let sql = deparse(one.clone());
        let finding = review_one(&one, &sql);
        let lock = finding.as_ref().map_or(lock_of(cmd), |f| f.lock);
        parts.push(Part { sql, lock, finding });
    }
    let lock = parts
        .iter()
        .map(|p| p.lock)
        .max()
        .unwrap_or(Lock::AccessExclusive);
    let count = parts.len();
    if let Some((i, part)) = parts.iter().enumerate().find(|(_, p)| {
        p.finding
            .as_ref()
            .is_some_and(|f| f.default_policy == Policy::Reject || (count > 1 && is_rollout(f)))
    }) {
        let mut f = part.finding.clone()?;
        if is_rollout(&f) {
            f.hint = "pgshift runs a rewriting type change as an online rollout, but only as an ALTER TABLE of its own: send this subcommand as a separate statement.".into();
            f.default_policy = Policy::Reject;
        }
        f.problem = format!(
            "{} (subcommand {} of {count}: {})",
            f.problem,
            i + 1,
            part.sql
        );
        f.lock = lock;
        f.rewrite = None;
        return Some(f);
    }
    let findings: Vec<&Finding> = parts.iter().filter_map(|p| p.finding.as_ref()).collect();
    let notable: Vec<&Finding> = findings
        .iter()
        .copied()
        .filter(|f| f.rule != lock_timeout::RULE.id)
        .collect();
    let first = notable.first().or(findings.first())?;
    // lock-timeout's findings only decide the policy when nothing else was found.
    let ranked = if notable.is_empty() {
        &findings
    } else {
        &notable
    };
    let policy = if ranked.iter().any(|f| f.default_policy == Policy::Rewrite) {
        Policy::Rewrite
    } else if ranked.iter().any(|f| f.default_policy == Policy::Warn) {
        Policy::Warn
    } else {
        Policy::Allow
    };
    let problem = if notable.is_empty() {
        lock_timeout::problem(lock, &table)
    } else {
        notable
            .iter()
            .map(|f| f.problem.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let hint = if notable.is_empty() {
        first.hint.clone()
    } else {
        notable
            .iter()
            .map(|f| f.hint.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rewrite = if findings.iter().all(|f| is_guarded(f)) {
        let whole = NodeEnum::AlterTableStmt(stmt.clone());
        Some(super::guarded(super::original(&whole, sql), lock))
    } else {
        split_plan(&parts)
    };
    Some(Finding {
        rule: first.rule,
        tag: "ALTER TABLE",
        lock,
        table: Some(table),
        problem,
        rewrite,
        hint,
        relations: Vec::new(),
        precheck: None,
        default_policy: policy,
    })
}

/// One statement per subcommand, each with its own plan; none when a subcommand has
/// no safe form.
fn split_plan(parts: &[Part]) -> Option<Plan> {
    let mut steps = Vec::new();
    let mut summaries = Vec::new();
    for p in parts {
        match &p.finding {
            None => steps.push(Step::quick(p.sql.clone(), p.lock)),
            Some(f) => {
                let plan = f.rewrite.as_ref()?;
                steps.extend(plan.steps.iter().cloned());
                if !is_guarded(f) {
                    summaries.push(plan.summary.clone());
                }
            }
        }
    }
    Some(Plan {
        summary: format!("one ALTER TABLE per subcommand; {}", summaries.join("; ")),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{review_sql, step_sql};
    use super::*;

    #[test]
    fn short_subcommands_stay_one_guarded_statement() {
        let sql = "ALTER TABLE t ADD COLUMN a text, ALTER COLUMN b SET DEFAULT 0, ALTER c SET STATISTICS 100";
        let f = review_sql(sql).unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("lock-timeout", "ALTER TABLE", Lock::AccessExclusive)
        );
        assert_eq!(step_sql(&f), [sql]);
        assert_eq!(f.default_policy, Policy::Rewrite);
    }

    #[test]
    fn warnings_keep_the_statement_whole() {
        let sql = "ALTER TABLE t DROP COLUMN old, ADD COLUMN new text";
        let f = review_sql(sql).unwrap();
        assert_eq!((f.rule, f.default_policy), ("drop-column", Policy::Warn));
        assert_eq!(step_sql(&f), [sql]);
    }

    #[test]
    fn rewrites_split_the_statement() {
        let f = review_sql(
            "ALTER TABLE ONLY \"Shop\".\"Order\" ADD COLUMN \"userId\" bigint, ADD CONSTRAINT \"Order_userId_fkey\" FOREIGN KEY (\"userId\") REFERENCES \"Shop\".\"User\" (id), ALTER COLUMN total SET NOT NULL",
        )
        .unwrap();
        assert_eq!(
            (f.rule, f.tag, f.lock),
            ("add-foreign-key", "ALTER TABLE", Lock::AccessExclusive)
        );
        assert_eq!(f.default_policy, Policy::Rewrite);
        assert_eq!(
            step_sql(&f),
            [
                "ALTER TABLE ONLY \"Shop\".\"Order\" ADD COLUMN \"userId\" bigint",
                "ALTER TABLE ONLY \"Shop\".\"Order\" ADD CONSTRAINT \"Order_userId_fkey\" FOREIGN KEY (\"userId\") REFERENCES \"Shop\".\"User\" (id) NOT VALID",
                "ALTER TABLE ONLY \"Shop\".\"Order\" VALIDATE CONSTRAINT \"Order_userId_fkey\"",
                "ALTER TABLE ONLY \"Shop\".\"Order\" ADD CONSTRAINT \"Order_total_not_null\" CHECK (total IS NOT NULL) NOT VALID",
                "ALTER TABLE ONLY \"Shop\".\"Order\" VALIDATE CONSTRAINT \"Order_total_not_null\"",
                "ALTER TABLE ONLY \"Shop\".\"Order\" ALTER COLUMN total SET NOT NULL",
                "ALTER TABLE ONLY \"Shop\".\"Order\" DROP CONSTRAINT \"Order_total_not_null\"",
            ]
        );
        assert!(f.problem.contains("ADD FOREIGN KEY") && f.problem.contains("SET NOT NULL"));
    }

    #[test]
    fn one_rejected_subcommand_rejects_the_statement() {
        let f = review_sql("ALTER TABLE IF EXISTS t ADD COLUMN a int, ALTER COLUMN b TYPE bigint")
            .unwrap();
        assert_eq!(
            (f.rule, f.default_policy),
            ("alter-column-type", Policy::Reject)
        );
        assert!(f.rewrite.is_none());
        assert!(f
            .problem
            .ends_with("(subcommand 2 of 2: ALTER TABLE IF EXISTS t ALTER COLUMN b TYPE bigint)"));
    }

    #[test]
    fn a_subcommand_without_a_plan_leaves_no_plan() {
        let f = review_sql("ALTER TABLE t ADD COLUMN a int, ADD UNIQUE (b) DEFERRABLE").unwrap();
        assert_eq!(f.rule, "add-unique");
        assert!(f.rewrite.is_none());
    }

    #[test]
    fn safe_forms_together_pass() {
        assert!(review_sql("ALTER TABLE t VALIDATE CONSTRAINT a, VALIDATE CONSTRAINT b").is_none());
    }
}
