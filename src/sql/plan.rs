//! What a rule returns: a finding about one statement and, when a safe form exists,
//! a plan of ordered steps for the executor (`crate::engine`). Plans are data: the
//! executor decides how to run each step from its placement, lock and flags.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Postgres table-level lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lock {
    None,
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl Lock {
    pub fn name(self) -> &'static str {
        match self {
            Lock::None => "no table lock",
            Lock::AccessShare => "ACCESS SHARE",
            Lock::RowShare => "ROW SHARE",
            Lock::RowExclusive => "ROW EXCLUSIVE",
            Lock::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            Lock::Share => "SHARE",
            Lock::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            Lock::Exclusive => "EXCLUSIVE",
            Lock::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// True when queueing for this lock stalls application writes (and, for
    /// ACCESS EXCLUSIVE, reads): such steps run under `lock_timeout` with retries.
    pub fn blocks_writes(self) -> bool {
        self >= Lock::Share
    }

    pub fn blocks_reads(self) -> bool {
        self == Lock::AccessExclusive
    }
}

impl fmt::Display for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a step may run relative to transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Anywhere, including inside the client's transaction block.
    Anywhere,
    /// In a transaction of its own, after everything before it committed
    /// (VALIDATE CONSTRAINT: in the same transaction the strong lock taken by the
    /// ADD would be held during the scan).
    OwnTransaction,
    /// Outside any transaction block (CONCURRENTLY).
    OutsideTransaction,
}

/// What a step does, beyond running its SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    /// Run `sql` once.
    Sql,
    /// `CREATE [UNIQUE] INDEX CONCURRENTLY`: a failure can leave `index` (quoted,
    /// qualified as the statement qualified `table`) INVALID; the executor drops it
    /// concurrently before retrying, but only an index of `table`: an unqualified
    /// name may resolve elsewhere through search_path.
    /// `naming`: the statement left the index unnamed; `index` and the name in
    /// `sql` are [`crate::sql::naming::PLACEHOLDER`] until the executor picks the
    /// name Postgres would have picked (it needs the catalog).
    ConcurrentIndex {
        index: String,
        table: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        naming: Option<crate::sql::naming::IndexNaming>,
    },
    /// Batched backfill of existing rows of `table`, one transaction per batch.
    /// `by_pages` is the UPDATE of the rows in a range of heap pages (bind
    /// parameters `$1` and `$2`, tids); the executor walks the table's pages with it,
    /// so the work stays linear in the table size. `sql` is then repeated (bind
    /// parameter `$1`, a row limit) until it updates fewer rows than that, for rows
    /// that moved past the last page while the backfill ran.
    ///
    /// `rest` (when not empty) is the plain `UPDATE … WHERE col IS NULL` that ends
    /// the backfill once a sweep finds fewer rows than a batch: a row the
    /// application updated while the sweep ran moved to another ctid, which the
    /// sweep's `ctid = ANY (…)` no longer matches; a plain UPDATE follows the row to
    /// its new version.
    Backfill {
        table: String,
        by_pages: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        rest: String,
        /// Set when the backfill may run in the background as a rollout instead
        /// (`crate::rollout::fill`): the steps before it add the column and its
        /// default, and nothing after it needs the rows filled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        online: Option<OnlineFill>,
    },
    /// `ALTER COLUMN … TYPE` that is catalog-only only if the column's current type
    /// is binary-coercible to `target` (with type modifier `typmod`, -1 for none):
    /// the executor checks the catalog first and refuses a change that would rewrite.
    TypeChange {
        table: String,
        column: String,
        target: String,
        typmod: i32,
    },
    /// A type change that rewrites the table: started as an online rollout
    /// (`crate::rollout`), which needs the client idle (not in a transaction).
    /// `column` unquoted; `target` and `using` as SQL.
    Rollout {
        table: String,
        column: String,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        using: Option<String>,
    },
}

/// What a background fill needs of an `ADD COLUMN … DEFAULT <volatile>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineFill {
    /// The column, unquoted.
    pub column: String,
    /// Its type as SQL.
    pub type_sql: String,
    /// The default, as SQL.
    pub value: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub sql: String,
    /// The strongest table lock the step takes.
    pub lock: Lock,
    pub placement: Placement,
    /// Long but not blocking application traffic (CONCURRENTLY, VALIDATE, backfill):
    /// runs with the long-step statement timeout instead of the session's.
    pub long: bool,
    pub kind: StepKind,
    /// SQL that takes this step back when a later step of the plan fails, so that
    /// a statement that fails leaves nothing behind, as it would directly
    /// (the NOT VALID constraint of a VALIDATE that found a bad row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
    /// When this step finds a row that breaks a CHECK pgshift added in place of
    /// NOT NULL: the column whose NULL the original would have reported
    /// (`column "c" of relation "t" contains null values`, 23502).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_column: Option<String>,
    /// Constraints this step adds that the statement left unnamed: their SQL holds
    /// a placeholder until the executor picks Postgres' name (see
    /// `naming::ConstraintNaming`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<super::naming::ConstraintNaming>,
    /// Other relations this step takes the same lock on (a foreign key's
    /// referenced table): the stall budget waits out long holders there too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    /// Outside a transaction block, steps run in the order of their pass (in
    /// the plan's order within one): a statement with several subcommands runs
    /// the ones that may fail before those that cannot be taken back. 0 for
    /// every step of other plans.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pass: u8,
    /// The sequence of a serial column this step creates: its SQL (and that of
    /// the steps after it) holds [`crate::sql::naming::SEQUENCE_PLACEHOLDER`]
    /// until the executor picks Postgres' name in the table's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<super::naming::SequenceNaming>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl Step {
    /// True for a step that writes the table's rows (a fill, a type change's
    /// rollout): until it has run, the rows are not those a check would see.
    pub fn writes_rows(&self) -> bool {
        matches!(
            self.kind,
            StepKind::Backfill { .. } | StepKind::Rollout { .. }
        )
    }

    /// A step that may run anywhere and is over quickly.
    pub fn quick(sql: impl Into<String>, lock: Lock) -> Self {
        Step {
            sql: sql.into(),
            lock,
            placement: Placement::Anywhere,
            long: false,
            kind: StepKind::Sql,
            undo: None,
            null_column: None,
            names: Vec::new(),
            also: Vec::new(),
            pass: 0,
            sequence: None,
        }
    }

    /// A long step that does not block application traffic.
    pub fn long(sql: impl Into<String>, lock: Lock, placement: Placement) -> Self {
        Step {
            sql: sql.into(),
            lock,
            placement,
            long: true,
            kind: StepKind::Sql,
            undo: None,
            null_column: None,
            names: Vec::new(),
            also: Vec::new(),
            pass: 0,
            sequence: None,
        }
    }

    /// Sets the SQL that takes this step back (see [`Step::undo`]).
    pub fn undone_by(mut self, sql: String) -> Self {
        self.undo = Some(sql);
        self
    }

    /// Sets the column a violation of this step is reported on (see
    /// [`Step::null_column`]).
    pub fn reports_null_in(mut self, column: &str) -> Self {
        self.null_column = Some(column.to_string());
        self
    }

    /// Marks this step as adding the unnamed constraint `naming` describes.
    pub fn naming(mut self, naming: Option<super::naming::ConstraintNaming>) -> Self {
        self.names.extend(naming);
        self
    }

    /// Marks `relation` as locked by this step too, with the step's lock.
    pub fn also_locks(mut self, relation: String) -> Self {
        self.also.push(relation);
        self
    }

    pub fn with_kind(mut self, kind: StepKind) -> Self {
        self.kind = kind;
        self
    }

    /// Lock-taking steps run under `lock_timeout` and are retried on 55P03.
    pub fn needs_lock_retry(&self) -> bool {
        self.lock.blocks_writes() || self.lock == Lock::ShareUpdateExclusive && !self.long
    }
}

/// The safe form of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One line for the NOTICE and `pgshift check`: what pgshift runs instead.
    pub summary: String,
    pub steps: Vec<Step>,
}

/// What a rule has to say about one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Rule id, as used in config (`[rules]`) and output, e.g. `create-index`.
    pub rule: &'static str,
    /// The command tag Postgres returns for the original, e.g. `CREATE INDEX`: the
    /// client gets it whatever pgshift ran instead.
    pub tag: &'static str,
    /// The lock the original statement takes, and on what.
    pub lock: Lock,
    pub table: Option<String>,
    /// Every relation the original locks, when that is more than `table` (DROP of
    /// several tables, DROP INDEX's indexes): pgshift judges the risk by all of them.
    pub relations: Vec<String>,
    /// What to check in the client's transaction before deferring the safe form,
    /// so that an error Postgres would raise at once is raised at once.
    pub precheck: Option<Precheck>,
    /// Why the original is unsafe, in one sentence.
    pub problem: String,
    /// The safe plan, when one exists.
    pub rewrite: Option<Plan>,
    /// What a person should do when pgshift rejects the statement.
    pub hint: String,
    /// The policy that applies when config says nothing about this rule.
    pub default_policy: Policy,
}

impl Finding {
    /// The relations the original statement locks, as written.
    pub fn locked(&self) -> Vec<&str> {
        if self.relations.is_empty() {
            self.table.iter().map(String::as_str).collect()
        } else {
            self.relations.iter().map(String::as_str).collect()
        }
    }
}

/// What the safe form needs to hold, checked in the client's session before it
/// runs or is deferred, so that Postgres' own error comes at once, in its words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Precheck {
    /// The table, as SQL.
    pub table: String,
    /// Plain columns the index names (Postgres: `column "c" does not exist`).
    pub columns: Vec<String>,
    /// A query that resolves the index's expressions and predicate on the table
    /// without reading a row (`SELECT … FROM t WHERE … LIMIT 0`), when it has any.
    pub probe: Option<String>,
    /// The index's name (unquoted, in the table's schema), when it is named.
    pub index: Option<String>,
    /// IF NOT EXISTS: a taken name is a NOTICE and nothing done, not an error.
    pub if_not_exists: bool,
    /// `ADD COLUMN IF NOT EXISTS`: the column's name. When it is there, nothing
    /// is done (no default set, no fill), as Postgres does nothing.
    pub new_column: Option<String>,
    /// A missing column is reported with its table, as ALTER TABLE reports it
    /// (`column "c" of relation "t" does not exist`), not as CREATE INDEX does.
    pub column_of_relation: bool,
    /// A missing column is reported as a key's (`column "c" named in key does
    /// not exist`), as ADD UNIQUE reports it.
    pub named_in_key: bool,
    /// ALTER TABLE's action, as its error names it (`ADD CONSTRAINT`): on a
    /// relation other than a table, Postgres refuses with 42809 before anything.
    pub action: Option<&'static str>,
    /// A system column is refused (`cannot alter system column "ctid"`).
    pub no_system_column: bool,
}

impl Precheck {
    /// What every check of `table` starts from: nothing to look for.
    pub fn of(table: &str) -> Self {
        Precheck {
            table: table.to_string(),
            columns: Vec::new(),
            probe: None,
            index: None,
            if_not_exists: false,
            new_column: None,
            column_of_relation: false,
            named_in_key: false,
            action: None,
            no_system_column: false,
        }
    }
}

/// What pgshift does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Run the safe plan (falls back to `reject` when there is none).
    Rewrite,
    /// Run the original under lock_timeout with retries, with a NOTICE.
    Warn,
    /// Refuse with an ErrorResponse and a HINT.
    Reject,
    /// Pass the original through untouched.
    Allow,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Rewrite => "rewrite",
            Policy::Warn => "warn",
            Policy::Reject => "reject",
            Policy::Allow => "allow",
        }
    }
}
