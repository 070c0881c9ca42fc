//! A rollout as pgshift keeps it in `pgshift.rollouts`: what changes, how far it
//! got, and what an operator asked for. Every transition is one transaction that
//! also updates the row, so a proxy killed at any point finds the row saying
//! exactly what is done.

use crate::sql::ident::{self, quote};
use tokio_postgres::Row;

/// Where a rollout is. `Planned` → `Backfilling` → `Verifying` → `Verified` →
/// `CutOver` → `Finished`, or `RolledBack` from any of them; `Failed` waits for an
/// operator (resume or rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The row exists; the new column and the mirror may not yet.
    Planned,
    /// The new column exists, every write mirrors into it, old rows are filled.
    Backfilling,
    /// Every row is compared (and repaired) until a pass finds nothing to repair.
    Verifying,
    Verified,
    /// The new column has the old one's name; writes mirror back into the old one.
    CutOver,
    /// The old column is gone.
    Finished,
    RolledBack,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Planned,
        Phase::Backfilling,
        Phase::Verifying,
        Phase::Verified,
        Phase::CutOver,
        Phase::Finished,
        Phase::RolledBack,
        Phase::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Backfilling => "backfilling",
            Phase::Verifying => "verifying",
            Phase::Verified => "verified",
            Phase::CutOver => "cut_over",
            Phase::Finished => "finished",
            Phase::RolledBack => "rolled_back",
            Phase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Nothing more will happen to it.
    pub fn is_over(self) -> bool {
        matches!(self, Phase::Finished | Phase::RolledBack)
    }
}

/// What an operator asked for; the proxy driving the rollout acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Pause,
    Resume,
    Verify,
    Cutover,
    Finish,
    Rollback,
}

impl Request {
    pub const ALL: [Request; 6] = [
        Request::Pause,
        Request::Resume,
        Request::Verify,
        Request::Cutover,
        Request::Finish,
        Request::Rollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::Verify => "verify",
            Request::Cutover => "cutover",
            Request::Finish => "finish",
            Request::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Request> {
        Request::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// A partitioned table's partitions: (name without schema, oid).
pub type Partitions = Vec<(String, u32)>;

/// One row of `pgshift.rollouts`.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub id: i64,
    pub table_oid: u32,
    pub schema: String,
    pub table: String,
    pub column: String,
    pub new_column: String,
    /// Types as SQL, printed on the service connection (qualified where needed).
    pub old_type: String,
    pub new_type: String,
    /// The value of the new column, an expression over the row's columns by their
    /// bare names: the USING clause, or the old column itself (assignment cast).
    pub transform: String,
    /// The columns `transform` reads.
    pub uses: Vec<String>,
    pub key_columns: Vec<String>,
    pub not_null: bool,
    /// The old column's default, as SQL printed on the service connection.
    pub column_default: Option<String>,
    pub phase: Phase,
    pub request: Option<Request>,
    pub paused: bool,
    pub rows_per_second: i64,
    pub rows_done: i64,
    pub rows_total: Option<i64>,
    pub last_key: Option<Vec<String>>,
    pub mismatches: Option<i64>,
    pub error: Option<String>,
    /// The old column's indexes pgshift built again on the new column.
    pub indexes: Vec<Twin>,
    /// The foreign keys that referenced the primary key when it moved: (their
    /// table's oid, their name), validated after the move.
    pub foreign_keys: Vec<(u32, String)>,
    /// The old column's CHECK constraints and foreign keys that have a twin on
    /// the new column: (the twin's oid, the name it takes at the cutover,
    /// whether it is a foreign key), recorded before the cutover.
    pub checks: Vec<(u32, String, bool)>,
    /// Leaf partitions' own indexes on the old column that have a twin: (the
    /// index's oid, its partition's oid, the name its twin takes at the
    /// cutover), recorded before the cutover.
    pub leaf_indexes: Vec<(u32, u32, String)>,
    /// A fill (`ADD COLUMN … DEFAULT <volatile>`, see `super::fill`): `column`
    /// and `new_column` are the added column, `transform` its default, and no
    /// cutover follows the verify.
    pub fill: bool,
    /// A fill of a column a client's transaction committed (see
    /// [`FILL_COMMITTED`]).
    pub column_committed: bool,
    /// A fill's boundary: the transaction that added the column. Rows whose
    /// version is older and whose column is NULL are the ones to fill.
    pub fill_before: Option<u32>,
    /// The most rows per batch an operator set (`ROLLOUT BATCH`); None:
    /// `rollout.batch_rows`.
    pub batch_rows: Option<i64>,
    /// The table is partitioned: what pgshift runs on it reaches every
    /// partition (no ONLY), and the backfill walks it by its primary key.
    pub partitioned: bool,
    /// A partitioned table's partitions at every level (name without schema,
    /// oid), as they were when the row was read: statements that name one read
    /// the table's columns too.
    pub partitions: Partitions,
    /// Each partition's attachment, in `partitions`' order: (oid, the id of the
    /// transaction that attached it). A partition detached and attached again
    /// keeps its oid, not its attachment.
    pub attachments: Vec<(u32, u32)>,
}

/// `pgshift.rollouts.kind` of a fill (NULL: a type change).
pub const FILL: &str = "fill";

/// `pgshift.rollouts.kind` of a fill whose column a client's transaction added
/// and committed (deferred from a transaction block): a rollback leaves the
/// column, and drops only what the fill added.
pub const FILL_COMMITTED: &str = "fill-committed";

/// The columns [`Rollout::from_row`] reads, in order. The partitions are
/// listed from `pg_inherits`, which takes no lock (`pg_partition_tree` waits
/// for a lock on each, and a partition held by VACUUM FULL would stop the
/// driver reading its row), with the `xmin` of their `pg_inherits` row: an
/// ATTACH writes a new one (freezing keeps the raw `xmin`).
pub const COLUMNS: &str = "id, table_oid, schema_name, table_name, column_name, new_column, \
     old_type, new_type, transform, uses, key_columns, not_null, column_default, phase, request, \
     paused, rows_per_second, rows_done, rows_total, last_key, mismatches, error, indexes, \
     kind, fill_before, batch_rows, \
     COALESCE((SELECT c.relkind OPERATOR(pg_catalog.=) 'p' FROM pg_catalog.pg_class c \
               WHERE c.oid OPERATOR(pg_catalog.=) table_oid), false), \
     ARRAY(WITH RECURSIVE tree(oid, at) AS ( \
               SELECT i.inhrelid, i.xmin::pg_catalog.text FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) table_oid \
               UNION SELECT i.inhrelid, i.xmin::pg_catalog.text FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.oid) \
           SELECT pg_catalog.format('%s %s %s', c.oid, tree.at, c.relname) \
             FROM tree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.oid)";

/// The partitions as [`COLUMNS`] lists them: (name, oid, attaching transaction).
fn partitions(r: &Row) -> impl Iterator<Item = (String, u32, u32)> {
    r.get::<_, Vec<String>>(27).into_iter().filter_map(|p| {
        let mut parts = p.splitn(3, ' ');
        let oid = parts.next()?.parse().ok()?;
        let at = parts.next()?.parse().ok()?;
        Some((parts.next()?.to_string(), oid, at))
    })
}

impl Rollout {
    pub fn from_row(r: &Row) -> Rollout {
        let phase: String = r.get(13);
        let request: Option<String> = r.get(14);
        Rollout {
            id: r.get(0),
            table_oid: r.get(1),
            schema: r.get(2),
            table: r.get(3),
            column: r.get(4),
            new_column: r.get(5),
            old_type: r.get(6),
            new_type: r.get(7),
            transform: r.get(8),
            uses: r.get(9),
            key_columns: r.get(10),
            not_null: r.get(11),
            column_default: r.get(12),
            phase: Phase::parse(&phase).unwrap_or(Phase::Failed),
            request: request.as_deref().and_then(Request::parse),
            paused: r.get(15),
            rows_per_second: r.get(16),
            rows_done: r.get(17),
            rows_total: r.get(18),
            last_key: r.get(19),
            mismatches: r.get(20),
            error: r.get(21),
            indexes: entries(r).iter().filter_map(|e| Twin::parse(e)).collect(),
            foreign_keys: entries(r).iter().filter_map(|e| foreign_key(e)).collect(),
            checks: entries(r).iter().filter_map(|e| check(e)).collect(),
            leaf_indexes: entries(r).iter().filter_map(|e| leaf_index(e)).collect(),
            fill: matches!(
                r.get::<_, Option<String>>(23).as_deref(),
                Some(FILL | FILL_COMMITTED)
            ),
            column_committed: r.get::<_, Option<String>>(23).as_deref() == Some(FILL_COMMITTED),
            fill_before: r.get::<_, Option<String>>(24).and_then(|x| x.parse().ok()),
            batch_rows: r.get(25),
            partitioned: r.get(26),
            partitions: partitions(r).map(|(name, oid, _)| (name, oid)).collect(),
            attachments: partitions(r).map(|(_, oid, at)| (oid, at)).collect(),
        }
    }

    /// The table, schema-qualified and quoted.
    pub fn qualified(&self) -> String {
        ident::qualified(&self.schema, &self.table)
    }

    /// `ONLY ` before the table's name in what pgshift runs on it; nothing for
    /// a partitioned table, whose rows, columns and triggers are its
    /// partitions' (Postgres refuses ONLY there for most of it).
    pub fn only(&self) -> &'static str {
        match self.partitioned {
            true => "",
            false => "ONLY ",
        }
    }

    /// The table as statements that read or write its rows name it: `ONLY
    /// schema.table`, or the partitioned table whole.
    pub fn target(&self) -> String {
        format!("{}{}", self.only(), self.qualified())
    }

    /// The name the old column has between cutover and finish.
    pub fn old_column(&self) -> String {
        parked_name(&self.column, "__pgshift_old")
    }

    pub fn names(&self) -> Names {
        Names::of(self.id)
    }

    /// The transform as the type of the new column (an explicit cast: for
    /// comparisons; stores go through assignment).
    pub fn transform_cast(&self) -> String {
        format!("CAST(({}) AS {})", self.transform, self.new_type)
    }

    /// A plain integer widening (no USING): the mirror trigger has a WHEN
    /// clause that skips rows whose new column already holds the value, and
    /// writes may set it themselves.
    pub fn guarded(&self) -> bool {
        self.transform == crate::sql::ident::quote(&self.column)
            && super::sql::guarded(&self.old_type, &self.new_type)
    }

    /// [`Self::guarded`] to a wider integer: a write may set the new column
    /// itself (to numeric it could store another scale, `5.0`, that the
    /// guard's `=` would take for the same value).
    pub fn repeatable(&self) -> bool {
        self.guarded() && matches!(self.new_type.as_str(), "smallint" | "integer" | "bigint")
    }

    pub fn describe(&self) -> String {
        if self.fill {
            return format!(
                "{}.{} with {}",
                self.qualified(),
                quote(&self.column),
                self.transform
            );
        }
        format!(
            "{}.{} from {} to {}",
            self.qualified(),
            quote(&self.column),
            self.old_type,
            self.new_type
        )
    }
}

fn entries(r: &Row) -> Vec<String> {
    r.get::<_, Option<Vec<String>>>(22).unwrap_or_default()
}

/// `f:<table oid>:<name>`, as `indexes` stores a foreign key.
pub fn foreign_key(e: &str) -> Option<(u32, String)> {
    let rest = e.strip_prefix("f:")?;
    let (oid, name) = rest.split_once(':')?;
    Some((oid.parse().ok()?, name.to_string()))
}

/// `l:<index oid>:<partition oid>:<name>`, as `indexes` stores a leaf
/// partition's own index.
pub fn leaf_index(e: &str) -> Option<(u32, u32, String)> {
    let mut parts = e.strip_prefix("l:")?.splitn(3, ':');
    let oid = parts.next()?.parse().ok()?;
    let table = parts.next()?.parse().ok()?;
    Some((oid, table, parts.next()?.to_string()))
}

/// `c:<twin's oid>:<name>`, as `indexes` stores a CHECK constraint's twin, or
/// `k:…` a twin of a foreign key of the column's own (the flag).
pub fn check(e: &str) -> Option<(u32, String, bool)> {
    let (foreign, rest) = match e.split_at_checked(2)? {
        ("c:", rest) => (false, rest),
        ("k:", rest) => (true, rest),
        _ => return None,
    };
    let (oid, name) = rest.split_once(':')?;
    Some((oid.parse().ok()?, name.to_string(), foreign))
}

/// The constraint an index stands behind, which moves with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    Primary,
    Unique,
}

impl Constraint {
    /// As `ADD CONSTRAINT … <this> USING INDEX` writes it.
    pub fn sql(self) -> &'static str {
        match self {
            Constraint::Primary => "PRIMARY KEY",
            Constraint::Unique => "UNIQUE",
        }
    }

    /// From `pg_constraint.contype`.
    pub fn of(contype: &str) -> Option<Constraint> {
        match contype {
            "p" => Some(Constraint::Primary),
            "u" => Some(Constraint::Unique),
            _ => None,
        }
    }
}

/// One of the old column's indexes that has a twin on the new column: its oid,
/// the name it had (the twin takes it at the cutover; a constraint's name when
/// one stands on it), and that constraint's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    pub oid: u32,
    pub name: String,
    pub constraint: Option<Constraint>,
}

impl Twin {
    /// `i:<oid>:<name>`, `p:…` or `u:…`, as `indexes` stores it.
    pub fn entry(&self) -> String {
        let kind = match self.constraint {
            None => 'i',
            Some(Constraint::Primary) => 'p',
            Some(Constraint::Unique) => 'u',
        };
        format!("{kind}:{}:{}", self.oid, self.name)
    }

    pub fn parse(e: &str) -> Option<Twin> {
        let (kind, rest) = e.split_once(':')?;
        let (oid, name) = rest.split_once(':')?;
        Some(Twin {
            oid: oid.parse().ok()?,
            name: name.to_string(),
            constraint: match kind {
                "i" => None,
                k => Some(Constraint::of(k)?),
            },
        })
    }
}

/// `column` with `suffix`, cut so the whole fits in 63 bytes.
pub fn parked_name(column: &str, suffix: &str) -> String {
    let room = ident::MAX_IDENT - suffix.len();
    format!("{}{suffix}", ident::clip(column, room))
}

/// The names of what a rollout installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Trigger on the table: old → new, until cutover.
    pub trigger: String,
    /// Trigger on the table: new → old, from cutover to finish.
    pub reverse_trigger: String,
    /// `pgshift.mirror_<id>()` and `pgshift.reverse_<id>()`, qualified.
    pub function: String,
    pub reverse_function: String,
    /// CHECK (… IS NOT NULL) that lets SET NOT NULL skip its scan.
    pub not_null_check: String,
    id: i64,
}

impl Names {
    pub fn of(id: i64) -> Names {
        Names {
            trigger: format!("pgshift_mirror_{id}"),
            reverse_trigger: format!("pgshift_reverse_{id}"),
            function: format!("pgshift.mirror_{id}"),
            reverse_function: format!("pgshift.reverse_{id}"),
            not_null_check: format!("pgshift_not_null_{id}"),
            id,
        }
    }

    /// The index built on the new column for the old column's index `oid`, until
    /// the cutover gives it that index's name.
    pub fn new_index(&self, oid: u32) -> String {
        format!("{}{oid}", self.new_index_prefix())
    }

    /// What every [`Names::new_index`] of this rollout starts with.
    pub fn new_index_prefix(&self) -> String {
        format!("pgshift_{}_new_", self.id)
    }

    /// The old column's index `oid` from the cutover on (dropped with the column).
    pub fn old_index(&self, oid: u32) -> String {
        format!("pgshift_{}_old_{oid}", self.id)
    }

    /// The twin on the new column of the old column's CHECK constraint (or
    /// `foreign` key) `oid`, until the cutover gives it that constraint's name.
    pub fn new_check(&self, oid: u32, foreign: bool) -> String {
        let kind = if foreign { "fk" } else { "check" };
        format!("pgshift_{}_{kind}_{oid}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.name()), Some(p));
        }
        for r in Request::ALL {
            assert_eq!(Request::parse(r.name()), Some(r));
        }
        assert_eq!(Phase::parse("nope"), None);
    }

    #[test]
    fn twins_round_trip() {
        for t in [
            Twin {
                oid: 7,
                name: "a:b".into(),
                constraint: Some(Constraint::Primary),
            },
            Twin {
                oid: 8,
                name: "u".into(),
                constraint: Some(Constraint::Unique),
            },
            Twin {
                oid: 16400,
                name: "i".into(),
                constraint: None,
            },
        ] {
            assert_eq!(Twin::parse(&t.entry()), Some(t));
        }
        assert_eq!(Twin::parse("x:1:n"), None);
    }

    #[test]
    fn parked_names_fit() {
        assert_eq!(
            parked_name("amount", "__pgshift_old"),
            "amount__pgshift_old"
        );
        let long = "é".repeat(40);
        let n = parked_name(&long, "__pgshift_new");
        assert!(n.len() <= 63 && n.ends_with("__pgshift_new"), "{n}");
    }
}
