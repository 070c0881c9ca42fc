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
    /// What the subcommand is to the order of the split.
    role: Role,
}

/// How a subcommand takes part in the order of a split statement run outside a
/// transaction block (in one, the subcommands run as written: the steps that
/// may run there do, the rest after COMMIT, and the transaction keeps the first
/// ones or not as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// DROP COLUMN or DROP CONSTRAINT (the name; `column`: which): it cannot be
    /// taken back, so it runs after the rest, unless another subcommand adds a
    /// column or constraint of that name (then first, as Postgres runs drops
    /// first).
    Drop {
        name: String,
        column: bool,
    },
    /// ADD COLUMN (the name): Postgres adds columns before the rest, and without
    /// IF NOT EXISTS a DROP COLUMN takes it back.
    AddColumn {
        name: String,
        if_not_exists: bool,
    },
    /// ADD CONSTRAINT (its name, when named): a PRIMARY KEY or UNIQUE (`key`) is
    /// built and attached before other constraints, as in Postgres: a FOREIGN KEY
    /// of the same statement may reference it.
    AddConstraint {
        name: Option<String>,
        key: bool,
    },
    /// A change that no row can make fail and that is not taken back (a
    /// default, statistics, storage, options, owner): after the rest too.
    Late,
    Other,
}

impl Role {
    fn of(cmd: &AlterTableCmd) -> Role {
        use AlterTableType as T;
        match T::try_from(cmd.subtype) {
            Ok(T::AtDropColumn) => Role::Drop {
                name: cmd.name.clone(),
                column: true,
            },
            Ok(T::AtDropConstraint) => Role::Drop {
                name: cmd.name.clone(),
                column: false,
            },
            Ok(T::AtAddColumn) => match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                Some(NodeEnum::ColumnDef(def)) => Role::AddColumn {
                    name: def.colname.clone(),
                    if_not_exists: cmd.missing_ok,
                },
                _ => Role::Other,
            },
            Ok(T::AtAddConstraint | T::AtAddIndex) => {
                match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                    Some(NodeEnum::Constraint(c)) => Role::AddConstraint {
                        name: (!c.conname.is_empty()).then(|| c.conname.clone()),
                        key: c.contype == ConstrType::ConstrPrimary as i32
                            || c.contype == ConstrType::ConstrUnique as i32,
                    },
                    _ => Role::Other,
                }
            }
            Ok(
                T::AtColumnDefault
                | T::AtSetStatistics
                | T::AtSetOptions
                | T::AtResetOptions
                | T::AtSetStorage
                | T::AtSetCompression
                | T::AtSetRelOptions
                | T::AtResetRelOptions
                | T::AtReplaceRelOptions
                | T::AtChangeOwner
                | T::AtClusterOn
                | T::AtDropCluster,
            ) => Role::Late,
            _ => Role::Other,
        }
    }

    /// True when this DROP frees the name `other` adds (a column, or a named
    /// constraint) or may free it (a constraint whose name is not known yet).
    fn frees_for(&self, other: &Role) -> bool {
        let Role::Drop { name: d, column } = self else {
            return false;
        };
        match other {
            Role::AddColumn { name, .. } => *column && d == name,
            Role::AddConstraint { name: Some(n), .. } => !*column && d == n,
            Role::AddConstraint { name: None, .. } => !*column,
            _ => false,
        }
    }

    /// The step's pass (see [`Step::pass`]): a freeing DROP, ADD COLUMN, keys,
    /// the rest (4, and 5 for what finishes a safe form), then DROPs and `Late`
    /// changes.
    fn pass(&self, frees: bool) -> u8 {
        match self {
            Role::Drop { .. } if frees => 1,
            Role::AddColumn { .. } => 2,
            Role::AddConstraint { key: true, .. } => 3,
            Role::Drop { .. } | Role::Late => 6,
            _ => 4,
        }
    }
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
        let role = Role::of(cmd);
        let one = NodeEnum::AlterTableStmt(AlterTableStmt {
            cmds: vec![c.clone()],
            ..bare.clone()
        });
        let sql = deparse(one.clone());
        let finding = review_one(&one, &sql);
        let lock = finding.as_ref().map_or(lock_of(cmd), |f| f.lock);
        parts.push(Part {
            sql,
            lock,
            finding,
            role,
        });
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
        match split_plan(&bare, &parts) {
            Ok(plan) => plan,
            Err(why) => {
                return Some(Finding {
                    rule: first.rule,
                    tag: "ALTER TABLE",
                    lock,
                    table: Some(table),
                    problem: format!("{problem}; {why}"),
                    rewrite: None,
                    hint: "Send the subcommands as separate ALTER TABLE statements: pgshift runs each one's safe form.".into(),
                    relations: Vec::new(),
                    precheck: None,
                    default_policy: Policy::Reject,
                });
            }
        }
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
/// no safe form. Postgres runs the whole statement in one transaction: when a
/// subcommand fails, none of them happened. Outside a transaction block the
/// split keeps that where it matters (see [`Role`] and [`Step::pass`]): ADD
/// COLUMNs and keys first, as in Postgres; DROPs, which cannot be taken back,
/// and changes that are not taken back, after every step that may fail; a failed
/// step takes back the columns and constraints before it. `Err`: why the
/// statement cannot be split safely.
fn split_plan(bare: &AlterTableStmt, parts: &[Part]) -> Result<Option<Plan>, String> {
    let mut summaries = Vec::new();
    let mut steps = Vec::new();
    for p in parts {
        let mut part_steps = match &p.finding {
            None => vec![Step::quick(p.sql.clone(), p.lock)],
            Some(f) => {
                let Some(plan) = f.rewrite.as_ref() else {
                    return Ok(None);
                };
                if !is_guarded(f) {
                    summaries.push(plan.summary.clone());
                }
                if f.precheck.as_ref().is_some_and(|c| c.if_not_exists) {
                    return Err(format!(
                        "whether \"{}\" does anything depends on the table, and the other subcommands cannot wait for it",
                        p.sql
                    ));
                }
                plan.steps.clone()
            }
        };
        if let (
            Role::AddColumn {
                name,
                if_not_exists: false,
            },
            [step],
        ) = (&p.role, &mut part_steps[..])
        {
            if step.undo.is_none() {
                let mut drop = cmd(AlterTableType::AtDropColumn);
                drop.name = name.clone();
                step.undo = Some(statement(bare, drop));
            }
        }
        let frees = parts.iter().any(|other| p.role.frees_for(&other.role));
        let pass = p.role.pass(frees);
        // What comes after a safe form's last step that may fail finishes it
        // (SET NOT NULL after its CHECK is validated): after every other
        // subcommand's steps that may fail, before the DROPs.
        let fallible = |s: &Step| s.long || !matches!(s.kind, StepKind::Sql);
        let finish_from = match pass {
            4 => part_steps.iter().rposition(fallible).map(|k| k + 1),
            _ => None,
        };
        for (k, step) in part_steps.iter_mut().enumerate() {
            step.pass = match finish_from {
                Some(from) if k >= from => 5,
                _ => pass,
            };
        }
        steps.extend(part_steps);
    }
    Ok(Some(Plan {
        summary: format!("one ALTER TABLE per subcommand; {}", summaries.join("; ")),
        steps,
    }))
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
                "ALTER TABLE ONLY \"Shop\".\"Order\" ADD CONSTRAINT \"Order_total_not_null\" CHECK (total IS NOT NULL) NO INHERIT NOT VALID",
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

    /// The steps' SQL and undo, in the order they run outside a transaction
    /// block (by pass).
    fn steps_and_undo(sql: &str) -> Vec<(String, Option<String>)> {
        let f = review_sql(sql).unwrap();
        let mut plan = f.rewrite.expect("a plan");
        crate::sql::naming::name_offline(&mut plan);
        plan.steps.sort_by_key(|s| s.pass);
        plan.steps.into_iter().map(|s| (s.sql, s.undo)).collect()
    }

    fn sql_of(steps: &[(String, Option<String>)]) -> Vec<&str> {
        steps.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn what_cannot_be_taken_back_runs_after_what_may_fail() {
        let sql = "ALTER TABLE t DROP COLUMN legacy, ALTER COLUMN s SET DEFAULT 'x', ADD COLUMN n int, ADD CONSTRAINT small CHECK (a < 50)";
        let got = steps_and_undo(sql);
        assert_eq!(
            sql_of(&got),
            [
                "ALTER TABLE t ADD COLUMN n int",
                "ALTER TABLE t ADD CONSTRAINT small CHECK (a < 50) NOT VALID",
                "ALTER TABLE t VALIDATE CONSTRAINT small",
                "ALTER TABLE t DROP legacy",
                "ALTER TABLE t ALTER COLUMN s SET DEFAULT 'x'",
            ]
        );
        // A failed validation takes back the column and the constraint.
        assert_eq!(got[0].1.as_deref(), Some("ALTER TABLE t DROP n"));
        assert_eq!(
            got[1].1.as_deref(),
            Some("ALTER TABLE t DROP CONSTRAINT small")
        );
        // In a transaction block they run as written.
        let written = step_sql(&review_sql(sql).unwrap());
        assert_eq!(written[0], "ALTER TABLE t DROP legacy");
    }

    #[test]
    fn keys_are_attached_before_the_constraints_that_may_reference_them() {
        let got =
            steps_and_undo("ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES t, ADD PRIMARY KEY (id)");
        let sql = sql_of(&got);
        assert!(
            sql[0].starts_with("CREATE UNIQUE INDEX CONCURRENTLY t_pkey"),
            "{sql:?}"
        );
        assert_eq!(
            sql[1],
            "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_pkey"
        );
        assert_eq!(
            got[1].1.as_deref(),
            Some("ALTER TABLE t DROP CONSTRAINT t_pkey")
        );
        assert!(
            sql[2].contains("FOREIGN KEY (a) REFERENCES t NOT VALID"),
            "{sql:?}"
        );
    }

    #[test]
    fn what_finishes_a_safe_form_waits_for_the_others_steps_that_may_fail() {
        let got = steps_and_undo(
            "ALTER TABLE t ALTER COLUMN a SET NOT NULL, ADD CONSTRAINT p CHECK (a > 100), DROP COLUMN z",
        );
        assert_eq!(
            sql_of(&got),
            [
                "ALTER TABLE t ADD CONSTRAINT t_a_not_null CHECK (a IS NOT NULL) NOT VALID",
                "ALTER TABLE t VALIDATE CONSTRAINT t_a_not_null",
                "ALTER TABLE t ADD CONSTRAINT p CHECK (a > 100) NOT VALID",
                "ALTER TABLE t VALIDATE CONSTRAINT p",
                "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
                "ALTER TABLE t DROP CONSTRAINT t_a_not_null",
                "ALTER TABLE t DROP z",
            ]
        );
    }

    #[test]
    fn a_dropped_column_frees_no_constraint_name() {
        let got = steps_and_undo("ALTER TABLE t DROP COLUMN legacy, ADD CHECK (a < 50)");
        assert_eq!(sql_of(&got).last(), Some(&"ALTER TABLE t DROP legacy"));
    }

    #[test]
    fn a_drop_that_frees_a_name_runs_first() {
        let got = steps_and_undo(
            "ALTER TABLE app.t ADD CONSTRAINT pos CHECK (x >= 1), DROP CONSTRAINT pos",
        );
        assert_eq!(
            sql_of(&got),
            [
                "ALTER TABLE app.t DROP CONSTRAINT pos",
                "ALTER TABLE app.t ADD CONSTRAINT pos CHECK (x >= 1) NOT VALID",
                "ALTER TABLE app.t VALIDATE CONSTRAINT pos",
            ]
        );
    }

    #[test]
    fn if_not_exists_with_a_safe_form_among_others_is_refused() {
        let f = review_sql(
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS r float8 DEFAULT random(), ADD COLUMN q int",
        )
        .unwrap();
        assert_eq!(f.default_policy, Policy::Reject);
        assert!(f.problem.contains("depends on the table"), "{}", f.problem);
    }

    #[test]
    fn safe_forms_together_pass() {
        assert!(review_sql("ALTER TABLE t VALIDATE CONSTRAINT a, VALIDATE CONSTRAINT b").is_none());
    }
}
