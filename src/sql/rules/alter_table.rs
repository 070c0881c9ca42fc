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
    /// A constraint added under a stand-in name while the one it replaces (a
    /// DROP of the same statement) is still there: `RENAME CONSTRAINT` from the
    /// first to the second once that DROP has run.
    rename: Option<(String, String)>,
}

/// The name a constraint is built under while a DROP of the same statement has
/// yet to free its own.
fn stand_in(name: &str) -> String {
    let mut base = name.to_string();
    while base.len() > 63 - "_pgshift".len() {
        base.pop();
    }
    format!("{base}_pgshift")
}

/// `ALTER TABLE … RENAME CONSTRAINT from TO to` on `bare`'s table.
fn rename_constraint(bare: &AlterTableStmt, from: &str, to: &str) -> String {
    // Parsed, so that every field holds what the parser puts there.
    let parsed = pg_query::parse("ALTER TABLE t RENAME CONSTRAINT a TO b").ok();
    let node = parsed
        .and_then(|p| p.protobuf.stmts.into_iter().next())
        .and_then(|s| s.stmt)
        .and_then(|n| n.node);
    let Some(NodeEnum::RenameStmt(mut r)) = node else {
        return String::new();
    };
    r.relation = bare.relation.clone();
    r.subname = from.into();
    r.newname = to.into();
    r.missing_ok = bare.missing_ok;
    deparse(NodeEnum::RenameStmt(r))
}

/// How a subcommand takes part in the order of a split statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// DROP COLUMN or DROP CONSTRAINT (the name): it cannot be taken back, so
    /// it runs once every step that may fail is done.
    Drop(String),
    /// ADD COLUMN (the name): Postgres adds columns before the rest, and
    /// without IF NOT EXISTS a DROP COLUMN takes it back.
    AddColumn {
        name: String,
        if_not_exists: bool,
    },
    /// ADD CONSTRAINT (its name when named; a primary key's counts as unnamed):
    /// the name may be one a DROP in the same statement frees. A key (`key`:
    /// PRIMARY KEY or UNIQUE) has its index built before other constraints, as
    /// in Postgres: a FOREIGN KEY of the same statement may reference it.
    AddConstraint {
        name: Option<String>,
        key: bool,
    },
    /// A change no other subcommand depends on and no row can make fail (a
    /// default, statistics, storage, options, triggers, owner): it runs after
    /// the steps that may fail, since it cannot be taken back.
    Late,
    Other,
}

impl Role {
    fn of(cmd: &AlterTableCmd) -> Role {
        use AlterTableType as T;
        match T::try_from(cmd.subtype) {
            Ok(T::AtDropColumn | T::AtDropConstraint) => Role::Drop(cmd.name.clone()),
            Ok(T::AtAddColumn) => match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                Some(NodeEnum::ColumnDef(def)) => Role::AddColumn {
                    name: def.colname.clone(),
                    if_not_exists: cmd.missing_ok,
                },
                _ => Role::Other,
            },
            Ok(T::AtAddConstraint | T::AtAddIndex) => {
                match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                    Some(NodeEnum::Constraint(c)) => {
                        let primary = c.contype == ConstrType::ConstrPrimary as i32;
                        Role::AddConstraint {
                            name: (!c.conname.is_empty() && !primary).then(|| c.conname.clone()),
                            key: primary || c.contype == ConstrType::ConstrUnique as i32,
                        }
                    }
                    _ => Role::AddConstraint {
                        name: None,
                        key: true,
                    },
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
                | T::AtDropCluster
                | T::AtEnableTrig
                | T::AtEnableAlwaysTrig
                | T::AtEnableReplicaTrig
                | T::AtDisableTrig
                | T::AtEnableTrigAll
                | T::AtDisableTrigAll
                | T::AtEnableTrigUser
                | T::AtDisableTrigUser
                | T::AtEnableRule
                | T::AtEnableAlwaysRule
                | T::AtEnableReplicaRule
                | T::AtDisableRule
                | T::AtGenericOptions,
            ) => Role::Late,
            _ => Role::Other,
        }
    }

    /// True when this DROP must run before `other`, as Postgres runs it: `other`
    /// adds what it removes (a column of that name; a constraint of that name, or
    /// one whose name is not known yet).
    fn frees_for(&self, other: &Role) -> bool {
        match (self, other) {
            (Role::Drop(d), Role::AddColumn { name, .. }) => d == name,
            (
                Role::Drop(d),
                Role::AddConstraint {
                    name: Some(name), ..
                },
            ) => d == name,
            (Role::Drop(_), Role::AddConstraint { name: None, .. }) => true,
            _ => false,
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
    let roles: Vec<Role> = stmt
        .cmds
        .iter()
        .filter_map(|c| match c.node.as_ref() {
            Some(NodeEnum::AlterTableCmd(cmd)) => Some(Role::of(cmd)),
            _ => None,
        })
        .collect();
    let dropped: Vec<&str> = roles
        .iter()
        .filter_map(|r| match r {
            Role::Drop(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut parts = Vec::new();
    for c in &stmt.cmds {
        let NodeEnum::AlterTableCmd(cmd) = c.node.as_ref()? else {
            return None;
        };
        let mut c = c.clone();
        let mut role = Role::of(cmd);
        let mut rename = None;
        // A named constraint replacing one the statement drops is built under a
        // stand-in name first: the DROP runs only once nothing can fail.
        if let Role::AddConstraint {
            name: Some(name),
            key,
        } = &role
        {
            if dropped.contains(&name.as_str()) {
                let temporary = stand_in(name);
                if let Some(NodeEnum::AlterTableCmd(cmd)) = c.node.as_mut() {
                    if let Some(NodeEnum::Constraint(con)) =
                        cmd.def.as_mut().and_then(|d| d.node.as_mut())
                    {
                        con.conname = temporary.clone();
                    }
                }
                rename = Some((temporary.clone(), name.clone()));
                role = Role::AddConstraint {
                    name: Some(temporary),
                    key: *key,
                };
            }
        }
        let one = NodeEnum::AlterTableStmt(AlterTableStmt {
            cmds: vec![c],
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
            rename,
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
/// subcommand fails, none of them happened. The split runs in separate steps, so
/// it keeps that where it matters: the steps that may fail on the table's rows (a
/// validation, a concurrent build, a fill) run first, with ADD COLUMNs before the
/// rest as in Postgres; then the DROPs and the changes that cannot be taken back
/// (in the order written); then what finishes each safe form. A failed step takes back the ADD COLUMNs and NOT VALID
/// constraints before it. `Err`: why the statement cannot be split safely.
fn split_plan(bare: &AlterTableStmt, parts: &[Part]) -> Result<Option<Plan>, String> {
    let mut summaries = Vec::new();
    let mut plans: Vec<(&Part, Vec<Step>)> = Vec::new();
    for p in parts {
        let mut steps = match &p.finding {
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
        ) = (&p.role, &mut steps[..])
        {
            if step.undo.is_none() {
                let mut drop = cmd(AlterTableType::AtDropColumn);
                drop.name = name.clone();
                step.undo = Some(statement(bare, drop));
            }
        }
        plans.push((p, steps));
    }
    let fallible = |s: &Step| s.long || !matches!(s.kind, StepKind::Sql);
    // A DROP that frees a name a later subcommand takes runs first, as in
    // Postgres; then nothing that may fail can come after it.
    let first_drops: Vec<usize> = (0..plans.len())
        .filter(|&i| {
            let role = &plans[i].0.role;
            matches!(role, Role::Drop(_)) && plans.iter().any(|(p, _)| role.frees_for(&p.role))
        })
        .collect();
    if let Some(&i) = first_drops.first() {
        if plans.iter().any(|(_, steps)| steps.iter().any(fallible)) {
            return Err(format!(
                "\"{}\" must run before a later subcommand, and a step after it may fail, when it could not be taken back",
                plans[i].0.sql
            ));
        }
    }
    let mut early = Vec::new();
    let mut keys = Vec::new();
    let mut prepare = Vec::new();
    // DROPs and `Role::Late` changes.
    let mut drops = Vec::new();
    let mut finish = Vec::new();
    for (i, (part, steps)) in plans.into_iter().enumerate() {
        if first_drops.contains(&i) {
            early.extend(steps);
            continue;
        }
        if matches!(part.role, Role::Drop(_) | Role::Late) {
            drops.extend(steps);
            continue;
        }
        // What comes after a safe form's last step that may fail finishes it.
        let cut = steps
            .iter()
            .rposition(fallible)
            .map_or(steps.len(), |k| k + 1);
        let mut steps = steps;
        let mut tail = steps.split_off(cut);
        if let Some((from, to)) = &part.rename {
            tail.push(Step::quick(
                rename_constraint(bare, from, to),
                Lock::AccessExclusive,
            ));
        }
        match part.role {
            Role::AddColumn { .. } => early.extend(steps),
            Role::AddConstraint { key: true, .. } => keys.extend(steps),
            _ => prepare.extend(steps),
        }
        finish.extend(tail);
    }
    let steps: Vec<Step> = [early, keys, prepare, drops, finish].concat();
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
        let f = review_sql("ALTER TABLE t ADD COLUMN a int, ADD EXCLUDE USING gist (b WITH &&)")
            .unwrap();
        assert_eq!(f.rule, "add-exclusion");
        assert!(f.rewrite.is_none());
    }

    /// The steps' SQL and undo, in the order they run.
    fn steps_and_undo(sql: &str) -> Vec<(String, Option<String>)> {
        let f = review_sql(sql).unwrap();
        let mut plan = f.rewrite.expect("a plan");
        crate::sql::naming::name_offline(&mut plan);
        plan.steps.into_iter().map(|s| (s.sql, s.undo)).collect()
    }

    #[test]
    fn what_cannot_be_taken_back_runs_after_what_may_fail() {
        let got = steps_and_undo(
            "ALTER TABLE t DROP COLUMN legacy, ALTER COLUMN s SET DEFAULT 'x', ADD COLUMN n int, ADD CONSTRAINT small CHECK (a < 50)",
        );
        let sql: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            sql,
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
    }

    #[test]
    fn keys_are_built_before_the_constraints_that_may_reference_them() {
        let sql = step_sql(
            &review_sql(
                "ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES t (id), ADD PRIMARY KEY (id)",
            )
            .unwrap(),
        );
        assert!(
            sql[0].starts_with("CREATE UNIQUE INDEX CONCURRENTLY t_pkey"),
            "{sql:?}"
        );
        assert!(
            sql[1].contains("FOREIGN KEY (a) REFERENCES t (id) NOT VALID"),
            "{sql:?}"
        );
        assert_eq!(
            sql.last().unwrap(),
            "ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY USING INDEX t_pkey"
        );
    }

    #[test]
    fn a_constraint_replaced_in_one_statement_is_built_under_a_stand_in_name() {
        let sql = step_sql(
            &review_sql("ALTER TABLE app.t DROP CONSTRAINT pos, ADD CONSTRAINT pos CHECK (x >= 1)")
                .unwrap(),
        );
        assert_eq!(
            sql,
            [
                "ALTER TABLE app.t ADD CONSTRAINT pos_pgshift CHECK (x >= 1) NOT VALID",
                "ALTER TABLE app.t VALIDATE CONSTRAINT pos_pgshift",
                "ALTER TABLE app.t DROP CONSTRAINT pos",
                "ALTER TABLE app.t RENAME CONSTRAINT pos_pgshift TO pos",
            ]
        );
    }

    #[test]
    fn a_split_that_could_not_be_taken_back_is_refused() {
        // The unnamed key may take the name the DROP frees: the DROP runs first,
        // and the build after it may fail.
        let f = review_sql("ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (a, b)").unwrap();
        assert_eq!(f.default_policy, Policy::Reject);
        assert!(f.rewrite.is_none());
        assert!(
            f.problem.contains("must run before a later subcommand"),
            "{}",
            f.problem
        );
        // IF NOT EXISTS on a column that may be there: the rest cannot wait.
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
