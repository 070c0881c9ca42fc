//! Online column rollouts. A type change that would rewrite the table under
//! ACCESS EXCLUSIVE (`ALTER COLUMN amount TYPE bigint`) becomes: a new column, a
//! trigger that mirrors every write into it, a throttled keyset backfill, a verify
//! pass that repairs what it finds, a cutover in a short lock window that swaps
//! the names and turns the mirror around, and a finish that drops the old column;
//! a rollback undoes any of it without losing writes.
//!
//! The state lives in `pgshift.rollouts` in the target database. Background work
//! runs on the service connection and evaluates only the transform, which was
//! checked to be built-in and immutable; before each batch the table is checked
//! for code an UPDATE would run (triggers, rules, non-built-in functions in
//! constraints, indexes or generated columns), under a lock that keeps it so.

/// SQL: foreign key `k` compares with built-in operators only, and the
/// columns on both of its sides are of built-in types. Shared by the start's
/// look at what uses the column (`start::USERS`) and the check before a key's
/// validation (`twins`).
macro_rules! key_is_built_in {
    () => {
        "NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(k.conpfeqop OPERATOR(pg_catalog.||) k.conppeqop OPERATOR(pg_catalog.||) k.conffeqop) AS op(oid)
                    WHERE op.oid OPERATOR(pg_catalog.>=) 16384)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(k.conkey) AS ck(attnum)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ck.attnum
                    WHERE a.atttypid OPERATOR(pg_catalog.>=) 16384)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(k.confkey) AS fk(attnum)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = fk.attnum
                    WHERE a.atttypid OPERATOR(pg_catalog.>=) 16384)"
    };
}

/// SQL: index `x` uses its columns' default, built-in operator classes and
/// the columns' own collations: what `CREATE INDEX … (columns)` gives. Shared
/// by what pgshift builds again (`start::rebuildable!`) and the look at a twin
/// found under its name (`twins`).
macro_rules! default_classes {
    () => {
        "NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(x.indclass::pg_catalog.oid[]) AS o(oid)
                     JOIN pg_catalog.pg_opclass oc ON oc.oid = o.oid
                    WHERE NOT oc.opcdefault OR oc.oid OPERATOR(pg_catalog.>=) 16384)
   AND NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest(x.indkey::pg_catalog.int2[]), pg_catalog.unnest(x.indcollation::pg_catalog.oid[])) AS kc(attnum, coll)
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = kc.attnum
                    WHERE kc.coll OPERATOR(pg_catalog.<>) 0 AND kc.coll OPERATOR(pg_catalog.<>) a.attcollation)"
    };
}

mod attached;
pub(crate) mod checks;
pub mod driver;
pub mod fill;
mod key_tree;
pub mod latency;
mod leaf_indexes;
pub mod model;
mod own_keys;
mod part_keys;
mod shapes;
pub mod sql;
pub mod start;
mod twins;
pub mod watch;

pub use model::{Phase, Request, Rollout};

use crate::context::Settings;
use crate::engine::Background;
use crate::sql::ident::quote;
use crate::wire::activity::Activity;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What the client asked to change, as it wrote it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    /// The table as the statement names it (resolved with the client's search_path).
    pub table: String,
    /// The column's name (unquoted).
    pub column: String,
    /// The new type as SQL.
    pub target: String,
    /// The USING expression, deparsed.
    pub using: Option<String>,
}

impl Spec {
    /// The new column's value for a row: the USING clause, or the old column
    /// (stored through an assignment cast, as ALTER … TYPE does without USING).
    pub fn transform(&self) -> String {
        self.using.clone().unwrap_or_else(|| quote(&self.column))
    }
}

/// Rollouts this process drives or stands by for, with their table once known.
#[derive(Debug, Default)]
pub struct Running {
    /// This process among the proxies in front of a database
    /// (`pgshift.proxies.proxy`).
    me: watch::Me,
    /// Rollouts whose lock window this process announced (database, id): its
    /// own watcher does not hold for them (its sessions wait on the [`Swap`]).
    announced: Mutex<Vec<(String, i64)>>,
    /// Databases a watcher task looks at (see [`watch`]).
    watching: Mutex<Vec<String>>,
    set: Mutex<HashMap<(String, i64), Option<Table>>>,
    /// The tables whose old rows a fill is filling (database, id): kept apart
    /// from `set`, whose tables' writes and statements sessions look after; a
    /// fill's only need is that nobody changes the table's columns meanwhile.
    fills: Mutex<HashMap<(String, i64), Table>>,
    /// How many: sessions hold COPY statements while it is not zero.
    live: Arc<AtomicUsize>,
    /// Per database, counts the changes to tables under rollout that change what a
    /// statement returns (the new column added, the cutover, a rollback, the end):
    /// sessions compare it with the count their prepared statements were last
    /// renewed at.
    changes: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// The tables those changes were made to, by database (lowercase names, the
    /// most recent [`TOUCHED_MAX`]): the statements to renew mention one of them.
    touched: Mutex<Vec<(String, String, u32)>>,
    /// Tables whose lock window is open (a [`Swap`]), by database (lowercase),
    /// a partitioned table's partitions included.
    swapping: Mutex<Vec<(String, String)>>,
    /// Every session's turns at the server, by database (a [`Swap`] waits for
    /// those that started before it).
    sessions: Mutex<Vec<(String, Weak<Activity>)>>,
    /// The sessions' turn durations while a rollout is live.
    latency: Arc<crate::latency::Latency>,
    /// The names (lowercase) of the tables whose writes may set the new column
    /// themselves, in any database: a session holds an INSERT or UPDATE only
    /// when its text mentions one.
    repeating: Repeating,
}

/// The longest a lock window waits for turns already at the server before its
/// attempt (a turn longer than that is a query the ALTER would wait for anyway,
/// or one on another table).
pub const SETTLE_MAX: Duration = Duration::from_millis(250);

/// A lock window that changes what a table returns. While it lasts, sessions
/// about to use a prepared statement that reads the table wait (never longer than
/// the window); when it ends, committed or not, they renew their statements.
pub struct Swap {
    running: Arc<Running>,
    key: (String, String),
    /// A partitioned table's partitions, held and touched with it.
    partitions: model::Partitions,
    oid: u32,
    /// The change count it opened at.
    count: u64,
    /// It changes what the table returns (not only a step that adds a
    /// constraint, see [`Running::hold`]).
    shape: bool,
}

impl Swap {
    /// The change count the window opened at.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Waits (at most [`SETTLE_MAX`]) until no session of the database has a turn
    /// at the server that started before the window opened: such a turn's Bind
    /// could reach Postgres behind the ALTER and fail after it. With `strict`
    /// (a window that renames or drops the new column), false when a session
    /// that holds statements pgshift rewrote on this table still has one: its
    /// next Bind of one would fail with 42703, and the window should not begin.
    pub async fn settle(&self, strict: bool) -> bool {
        let deadline = tokio::time::Instant::now() + SETTLE_MAX;
        while self.running.turns_before(&self.key.0, self.count, None)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        !strict
            || !self
                .running
                .turns_before(&self.key.0, self.count, Some(self.oid))
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        if self.shape {
            // Before the window is seen closed: a write looked at from then on
            // must not name a new column the window renamed or dropped.
            self.running.stop_repeating(&self.key.0, self.oid);
        }
        let mut swapping = self
            .running
            .swapping
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let names = self.partitions.iter().map(|(n, _)| n.to_lowercase());
        for name in std::iter::once(self.key.1.clone()).chain(names) {
            let key = (self.key.0.clone(), name);
            if let Some(i) = swapping.iter().position(|k| *k == key) {
                swapping.remove(i);
            }
        }
        drop(swapping);
        if !self.shape {
            // Held sessions look again at their next turn.
            self.running
                .changes(&self.key.0)
                .fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Committed or not, the phase is the driver's to read again: until it
        // does, writes leave the new column (renamed or dropped now, perhaps)
        // to the trigger.
        self.running
            .changed(&self.key.0, &self.key.1, self.oid, &self.partitions);
    }
}

/// The tables (database, lowercase name) whose writes may set a rollout's new
/// column, swapped whole when they change.
pub type Repeating = Arc<arc_swap::ArcSwap<Vec<(String, String)>>>;

/// Tables remembered in [`Running::touched`] (partitions count; one change's
/// tables are all kept, however many). Sessions send the list to the server
/// when they renew their statements: a few hundred KB at most.
const TOUCHED_MAX: usize = 8192;

/// A table under rollout, and the names its columns have during it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub oid: u32,
    /// Its name (without schema) when the rollout was last read.
    pub name: String,
    /// The column being changed (the new one, after the cutover).
    pub column: String,
    /// The new column before the cutover.
    pub new_column: String,
    /// The old column after the cutover, where the column used to stand.
    pub old_column: String,
    /// The new column exists (past planned).
    pub expanded: bool,
    /// The new column has the column's name (cut over).
    pub cut_over: bool,
    /// Before the cutover, a write that sets the column may set the new column
    /// to the same value (a plain widening to a wider integer: the mirror
    /// trigger's WHEN clause then skips it). Only in the process that drives
    /// the rollout: the cutover's lock window stops it there at once.
    pub repeats: bool,
    /// Its schema.
    pub schema: String,
    /// The column's type before the rollout (`integer`).
    pub old_type: String,
    /// A partitioned table's partitions (name, oid): the same columns.
    pub partitions: model::Partitions,
}

impl Table {
    /// The table itself, or one of its partitions.
    pub fn covers(&self, oid: u32) -> bool {
        self.oid == oid || self.partitions.iter().any(|(_, p)| *p == oid)
    }

    /// The table's columns as the application knows them, in its order, from its
    /// columns now (`names`, in attnum order): pgshift's new column left out; after
    /// the cutover, the column where the old one stands.
    pub fn visible(&self, names: &[String]) -> Vec<String> {
        let cut_over = names.contains(&self.old_column);
        names
            .iter()
            .filter(|n| **n != self.new_column && !(cut_over && **n == self.column))
            .map(|n| match *n == self.old_column {
                true => self.column.clone(),
                false => n.clone(),
            })
            .collect()
    }
}

/// Registered while a task drives or stands by for a rollout.
pub struct Entered {
    running: Arc<Running>,
    key: (String, i64),
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.running
            .fills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        let mut set = self.running.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(table)) = set.remove(&self.key) {
            self.running
                .changed(&self.key.0, &table.name, table.oid, &table.partitions);
        }
        self.running.publish_repeating(&set);
        self.running.live.store(set.len(), Ordering::Relaxed);
    }
}

impl Running {
    /// None when a task of this process already has it.
    pub fn enter(self: &Arc<Self>, database: &str, id: i64) -> Option<Entered> {
        let key = (database.to_string(), id);
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains_key(&key) {
            return None;
        }
        set.insert(key.clone(), None);
        self.live.store(set.len(), Ordering::Relaxed);
        Some(Entered {
            running: self.clone(),
            key,
        })
    }

    pub fn contains(&self, database: &str, id: i64) -> bool {
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.contains_key(&(database.to_string(), id))
    }

    /// Notes the table of a rollout this process has entered.
    pub fn describe(&self, database: &str, r: &model::Rollout, driving: bool) {
        self.describe_fill(database, r);
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = set.get_mut(&(database.to_string(), r.id)) {
            // An ended rollout has no table here (see `over`).
            // A fill's column is the application's own: nothing to hide or renew.
            let now = (!r.phase.is_over() && !r.fill).then(|| Table {
                oid: r.table_oid,
                name: r.table.clone(),
                column: r.column.clone(),
                new_column: r.new_column.clone(),
                old_column: r.old_column(),
                expanded: r.phase != model::Phase::Planned,
                cut_over: r.phase == model::Phase::CutOver,
                schema: r.schema.clone(),
                old_type: r.old_type.clone(),
                partitions: r.partitions.clone(),
                repeats: driving
                    && r.repeatable()
                    && matches!(
                        r.phase,
                        model::Phase::Backfilling
                            | model::Phase::Verifying
                            | model::Phase::Verified
                    ),
            });
            // What the writes may do is not a change sessions renew statements for.
            let shape = |t: &Option<Table>| {
                t.clone().map(|t| Table {
                    repeats: false,
                    ..t
                })
            };
            if shape(table) != shape(&now) {
                self.changed(database, &r.table, r.table_oid, &r.partitions);
            }
            *table = now;
            self.publish_repeating(&set);
        }
    }

    fn describe_fill(&self, database: &str, r: &model::Rollout) {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        let key = (database.to_string(), r.id);
        if !r.fill || r.phase.is_over() {
            fills.remove(&key);
            return;
        }
        fills.insert(
            key,
            Table {
                oid: r.table_oid,
                name: r.table.clone(),
                column: r.column.clone(),
                new_column: r.new_column.clone(),
                old_column: r.old_column(),
                expanded: r.phase != model::Phase::Planned,
                cut_over: false,
                repeats: false,
                schema: r.schema.clone(),
                old_type: r.old_type.clone(),
                partitions: Vec::new(),
            },
        );
    }

    /// The tables of `database` whose old rows a fill is filling, with the
    /// column it fills.
    pub fn fills(&self, database: &str) -> Vec<Table> {
        let fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        fills
            .iter()
            .filter(|((db, _), _)| db == database)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// A rollout this process drives ended: its table is no longer under
    /// rollout here (the entry itself goes when the driving task does).
    pub fn over(&self, database: &str, id: i64) {
        self.fills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(database.to_string(), id));
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = set
            .get_mut(&(database.to_string(), id))
            .and_then(Option::take)
        {
            self.changed(database, &table.name, table.oid, &table.partitions);
        }
        self.publish_repeating(&set);
    }

    fn stop_repeating(&self, database: &str, oid: u32) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        for ((db, _), table) in set.iter_mut() {
            if let Some(t) = table.as_mut().filter(|t| db == database && t.oid == oid) {
                t.repeats = false;
            }
        }
        self.publish_repeating(&set);
    }

    fn publish_repeating(&self, set: &HashMap<(String, i64), Option<Table>>) {
        let names: Vec<(String, String)> = set
            .iter()
            .filter_map(|((db, _), t)| Some((db, t.as_ref()?)))
            .filter(|(_, t)| t.repeats)
            .map(|(db, t)| (db.clone(), t.name.to_lowercase()))
            .collect();
        if **self.repeating.load() != names {
            self.repeating.store(Arc::new(names));
        }
    }

    /// The tables (database, lowercase name) whose writes may set the new
    /// column, kept up to date (one atomic load per INSERT or UPDATE while a
    /// rollout is live).
    pub fn repeating(&self) -> Repeating {
        self.repeating.clone()
    }

    /// A new session's activity, timing its turns while a rollout is live, and
    /// noted for lock windows (kept while the session lasts).
    pub fn activity(
        &self,
        database: &str,
        traffic: Option<Arc<crate::stats::Traffic>>,
    ) -> Arc<Activity> {
        let mut activity = Activity::timed(self.live.clone(), self.latency.clone());
        if let Some(traffic) = traffic {
            activity = activity.counted(traffic);
        }
        let activity = Arc::new(activity);
        self.register(database, &activity);
        activity
    }

    /// The sessions' turn durations so far.
    pub fn latency(&self) -> crate::latency::Counts {
        self.latency.counts()
    }

    fn register(&self, database: &str, activity: &Arc<Activity>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= 64 && sessions.len().is_power_of_two() {
            sessions.retain(|(_, a)| a.strong_count() > 0);
        }
        sessions.push((database.to_string(), Arc::downgrade(activity)));
    }

    /// True while a session of `database` lasts (a pool's connections stay for
    /// hours: their proxy must keep looking for rollouts another proxy starts).
    pub fn has_sessions(&self, database: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .iter()
            .any(|(db, a)| db == database && a.strong_count() > 0)
    }

    /// True while a session of `database` has a turn at the server that started
    /// before change `count`.
    /// Whether a session of `database` that holds statements pgshift rewrote
    /// on table `oid` has a turn from before change `count` out.
    pub fn rewritten_turns_before(&self, database: &str, count: u64, oid: u32) -> bool {
        self.turns_before(database, count, Some(oid))
    }

    /// Whether a session of `database` (only those holding statements
    /// pgshift rewrote on table `rewritten`, when given) has a turn from
    /// before change `count` out.
    fn turns_before(&self, database: &str, count: u64, rewritten: Option<u32>) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|(_, a)| a.strong_count() > 0);
        sessions
            .iter()
            .filter(|(db, _)| db == database)
            .any(|(_, a)| {
                a.upgrade().is_some_and(|a| match rewritten {
                    Some(oid) => a.rewritten_before(count, oid),
                    None => a.before(count),
                })
            })
    }

    /// Returns the count after this change. A partitioned table's partitions
    /// (`partitions`) are touched with it, every one of them however many:
    /// only older changes' tables make room (the most recent stay).
    fn changed(&self, database: &str, table: &str, oid: u32, partitions: &[(String, u32)]) -> u64 {
        let mut entries: Vec<(String, String, u32)> = partitions
            .iter()
            .map(|(name, oid)| (database.to_string(), name.to_lowercase(), *oid))
            .collect();
        entries.push((database.to_string(), table.to_lowercase(), oid));
        let fresh: std::collections::HashSet<&(String, String, u32)> = entries.iter().collect();
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        touched.retain(|t| !fresh.contains(t));
        drop(fresh);
        let room = TOUCHED_MAX.max(entries.len());
        let over = (touched.len() + entries.len()).saturating_sub(room);
        let over = over.min(touched.len());
        touched.drain(..over);
        touched.extend(entries);
        self.changes(database).fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Opens a lock window on `table` of `database` (and on its partitions,
    /// `partitions`, which statements may name instead).
    fn window(
        self: &Arc<Self>,
        database: &str,
        table: &str,
        oid: u32,
        partitions: &[(String, u32)],
        shape: bool,
    ) -> Swap {
        let key = (database.to_string(), table.to_lowercase());
        {
            let mut swapping = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
            swapping.push(key.clone());
            let names = partitions.iter().map(|(n, _)| n.to_lowercase());
            swapping.extend(names.map(|n| (database.to_string(), n)));
        }
        let count = match shape {
            true => self.changed(database, table, oid, partitions),
            false => self.changes(database).fetch_add(1, Ordering::SeqCst) + 1,
        };
        Swap {
            running: self.clone(),
            key,
            partitions: partitions.to_vec(),
            oid,
            count,
            shape,
        }
    }

    /// Opens a lock window on `table` of `database`: sessions go stale at once (and
    /// wait for it at their next turn), and again when it closes.
    pub fn swap(
        self: &Arc<Self>,
        database: &str,
        table: &str,
        oid: u32,
        partitions: &[(String, u32)],
    ) -> Swap {
        self.window(database, table, oid, partitions, true)
    }

    /// Opens a lock window on `table` of `database` that changes nothing the
    /// table returns (a step that adds a constraint): sessions outside a
    /// transaction block hold their statements that name the table until it
    /// closes; nothing is renewed, and writes keep their rewrite.
    pub fn hold(
        self: &Arc<Self>,
        database: &str,
        table: &str,
        oid: u32,
        partitions: &[(String, u32)],
    ) -> Swap {
        self.window(database, table, oid, partitions, false)
    }

    /// The tables of `database` whose lock window is open (lowercase).
    pub fn swapping(&self, database: &str) -> Vec<String> {
        let swapping = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        swapping
            .iter()
            .filter(|(db, _)| db == database)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// The count of changes in `database` now.
    pub fn change_count(&self, database: &str) -> u64 {
        self.changes(database).load(Ordering::SeqCst)
    }

    /// The tables of `database` that changed under rollout lately (lowercase
    /// name, oid).
    pub fn touched(&self, database: &str) -> Vec<(String, u32)> {
        let touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        touched
            .iter()
            .filter(|(db, _, _)| db == database)
            .map(|(_, t, oid)| (t.clone(), *oid))
            .collect()
    }

    /// The count sessions of `database` compare their prepared statements with.
    pub fn changes(&self, database: &str) -> Arc<AtomicU64> {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        changes.entry(database.to_string()).or_default().clone()
    }

    /// The tables under rollout in `database` that this process knows of.
    pub fn tables(&self, database: &str) -> Vec<Table> {
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.iter()
            .filter(|((db, _), _)| db == database)
            .filter_map(|(_, t)| t.clone())
            .collect()
    }

    /// The tables under rollout in `database` named `name` whose writes may set
    /// the new column themselves, as far as this process knows, unless a lock
    /// window is open on that name (a statement written now must not reach the
    /// server after the cutover or a rollback renamed or dropped that column).
    pub fn repeats(&self, database: &str, name: &str) -> Vec<Table> {
        if self.swapping(database).contains(&name.to_lowercase()) {
            return Vec::new();
        }
        self.tables(database)
            .into_iter()
            .filter(|t| t.repeats && t.name == name)
            .collect()
    }

    /// The count sessions look at (one atomic load per COPY Query).
    pub fn live(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }
}

/// Looks for rollouts in `database` that are not over and that no task of this
/// process watches, and stands by for each (a rollout a dead proxy drove is taken
/// over at once).
pub async fn scan(
    book: &crate::engine::book::Book,
    settings: Arc<Settings>,
    bg: &Background,
    running: &Arc<Running>,
) {
    let rows = match book
        .scan_query(
            &settings,
            bg.runtime(),
            "SELECT id FROM pgshift.rollouts WHERE phase NOT IN ('finished', 'rolled_back') ORDER BY id",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(database = book.database(), error = %e, "rollout scan skipped");
            return;
        }
    };
    for row in rows {
        let id: i64 = row.get(0);
        if running.contains(book.database(), id) {
            continue;
        }
        let task = driver::standby(
            settings.clone(),
            book.database().to_string(),
            id,
            bg.clone(),
            running.clone(),
            None,
        );
        bg.spawn(task);
    }
}

/// Writes an operator's request ($2) on rollout $1 unless it is over; returns its phase.
pub const REQUEST_SQL: &str =
    "UPDATE pgshift.rollouts SET request = $2, updated = pg_catalog.now() \
     WHERE id = $1 AND phase NOT IN ('finished', 'rolled_back') RETURNING phase";

/// Sets rollout $1's backfill rate limit to $2 rows per second (0: none).
pub const THROTTLE_SQL: &str =
    "UPDATE pgshift.rollouts SET rows_per_second = $2, updated = pg_catalog.now() \
     WHERE id = $1 AND phase NOT IN ('finished', 'rolled_back') RETURNING phase";

/// Sets rollout $1's most rows per batch to $2 (`ROLLOUT BATCH`).
pub const BATCH_SQL: &str =
    "UPDATE pgshift.rollouts SET batch_rows = $2, updated = pg_catalog.now() \
     WHERE id = $1 AND phase NOT IN ('finished', 'rolled_back') RETURNING phase";

/// An operator's request (the admin console's ROLLOUT commands): written to the
/// row, acted on by whichever proxy drives the rollout. Returns the phase the
/// rollout was in, or an error saying why the request makes no sense.
pub async fn request(
    client: &tokio_postgres::Client,
    id: i64,
    what: Request,
) -> Result<Phase, String> {
    let row = client
        .query_opt(REQUEST_SQL, &[&id, &what.name()])
        .await
        .map_err(|e| crate::engine::service::db_reason(&e))?;
    match row {
        Some(r) => Ok(Phase::parse(r.get::<_, &str>(0)).unwrap_or(Phase::Failed)),
        None => Err(format!("rollout {id} does not exist or is over")),
    }
}

/// Sets a rollout's backfill rate limit (0: none).
pub async fn throttle(
    client: &tokio_postgres::Client,
    id: i64,
    rows_per_second: i64,
) -> Result<(), String> {
    let n = client
        .execute(THROTTLE_SQL, &[&id, &rows_per_second.max(0)])
        .await
        .map_err(|e| crate::engine::service::db_reason(&e))?;
    if n == 0 {
        return Err(format!("rollout {id} does not exist or is over"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Running, Table};
    use crate::wire::activity::Activity;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn a_change_touches_every_partition_however_many() {
        let running = Running::default();
        running.changed("a", "other", 7, &[]);
        let many: Vec<(String, u32)> = (0..super::TOUCHED_MAX as u32 + 5)
            .map(|i| (format!("Orders_{i}"), 1000 + i))
            .collect();
        running.changed("a", "Orders", 1, &many);
        let touched = running.touched("a");
        assert_eq!(touched.len(), many.len() + 1, "the older change made room");
        assert!(touched.contains(&("orders_0".to_string(), 1000)));
        assert!(touched.contains(&("orders".to_string(), 1)));
        // Touched again: no duplicates; a later change keeps it under the cap,
        // the oldest going first.
        running.changed("a", "Orders", 1, &many);
        assert_eq!(running.touched("a").len(), many.len() + 1);
        running.changed("a", "other", 7, &[]);
        let touched = running.touched("a");
        assert_eq!(touched.len(), super::TOUCHED_MAX);
        assert!(touched.contains(&("other".to_string(), 7)));
        assert!(touched.contains(&("orders".to_string(), 1)));
        assert!(!touched.contains(&("orders_0".to_string(), 1000)));
    }

    #[tokio::test]
    async fn a_lock_window_touches_only_its_own_database() {
        let running = Arc::new(Running::default());
        let (a, b) = (running.changes("a"), running.changes("b"));
        // A session of "b" with a turn out does not hold up a window in "a".
        let busy_b: Arc<Activity> = running.activity("b", None);
        busy_b.publish(&b);
        busy_b.sent();
        let began = std::time::Instant::now();
        let swap = running.swap("a", "orders", 1, &[]);
        swap.settle(true).await;
        assert!(began.elapsed() < super::SETTLE_MAX / 2);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 0));
        assert_eq!(running.swapping("a"), ["orders"]);
        assert!(running.swapping("b").is_empty());
        drop(swap);
        assert_eq!(running.change_count("a"), 2);
        // One of "a" is waited for, up to SETTLE_MAX.
        let busy_a = running.activity("a", None);
        busy_a.publish(&a);
        busy_a.sent();
        let began = std::time::Instant::now();
        assert!(
            swap_settles(&running).await,
            "only a session with rewritten statements stops it"
        );
        assert!(began.elapsed() >= super::SETTLE_MAX);
        // A session holding statements pgshift rewrote on another table.
        busy_a.set_rewritten(vec![2]);
        assert!(swap_settles(&running).await);
        // On this one (or one being rewritten), with a turn from before the
        // window still out: the window must not begin.
        busy_a.set_rewritten(vec![2, 1]);
        assert!(!swap_settles(&running).await);
        busy_a.set_rewritten(vec![0]);
        assert!(!swap_settles(&running).await);
        assert!(
            running.swap("a", "orders", 1, &[]).settle(false).await,
            "a window that leaves the new column alone"
        );
        busy_a.ended();
        busy_a.answered();
        assert!(swap_settles(&running).await, "its turn is over");
    }

    async fn swap_settles(running: &Arc<Running>) -> bool {
        running.swap("a", "orders", 1, &[]).settle(true).await
    }

    #[test]
    fn sessions_count_while_they_last() {
        let running = Running::default();
        assert!(!running.has_sessions("a"));
        let a = running.activity("a", None);
        let _b = running.activity("b", None);
        assert!(running.has_sessions("a") && running.has_sessions("b"));
        assert!(!running.has_sessions("c"));
        drop(a);
        assert!(!running.has_sessions("a"));
    }

    #[test]
    fn visible_columns_keep_the_applications_order() {
        let t = Table {
            oid: 1,
            name: "orders".into(),
            column: "amount".into(),
            new_column: "amount__pgshift_new".into(),
            old_column: "amount__pgshift_old".into(),
            expanded: true,
            cut_over: false,
            repeats: false,
            schema: "public".into(),
            old_type: "integer".into(),
            partitions: Vec::new(),
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let want = names(&["id", "amount", "note"]);
        assert_eq!(
            t.visible(&names(&["id", "amount", "note", "amount__pgshift_new"])),
            want
        );
        assert_eq!(
            t.visible(&names(&["id", "amount__pgshift_old", "note", "amount"])),
            want
        );
        assert_eq!(t.visible(&want), want);
    }
}
