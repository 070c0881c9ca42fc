//! Drives one rollout from its row: backfill, verify, cutover, finish, rollback.
//! The driver's connection holds the rollout's advisory lock, so exactly one proxy
//! drives a rollout at a time; when that proxy dies its connection goes and
//! another proxy's standby takes the lock. Each transition is one transaction that
//! also updates the row: whatever point a proxy is killed at, the row is right.

use super::attached::attached_since;
use super::checks::CheckTwin;
use super::latency::Governor;
use super::model::{Phase, Request, Rollout, Twin, COLUMNS};
use super::twins::{constraint_on, pass_name, ForeignKey};
use super::{sql, Running};
use crate::config::When;
use crate::context::Settings;
use crate::engine::{service, Background};
use crate::sql::ident::{literal, quote};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// First key of the advisory locks that say who drives a rollout (the second is
/// its id).
const LOCK_CLASS: i32 = 0x7067_7368;
/// How often an idle driver or a standby looks at the row again.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Verify passes that may repair rows before the rollout is called failed.
const MAX_VERIFY_PASSES: u32 = 5;

pub struct Driver {
    pub(super) client: Client,
    pub id: i64,
    /// Statements the driver runs every batch, prepared once (a round trip less
    /// each time).
    cache: std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
    /// While it drives: the process's rollouts and the database, so that a step
    /// that changes what the table returns holds sessions for its lock window
    /// (see [`Running::swap`]).
    hold: Option<(Arc<Running>, String)>,
    /// The database it works in.
    pub(super) database: String,
}

/// Why a step did not happen: the server's words, and whether trying again later
/// may help (a lock not granted in time) or an operator must act.
#[derive(Debug)]
pub struct StepError {
    pub reason: String,
    pub retry: bool,
    pub broken: bool,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<tokio_postgres::Error> for StepError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_string());
        StepError {
            reason: service::db_reason(&e),
            retry: matches!(code.as_deref(), Some("55P03" | "40P01" | "40001" | "57014")),
            broken: e.as_db_error().is_none(),
        }
    }
}

pub(super) fn ours(reason: impl Into<String>) -> StepError {
    StepError {
        reason: reason.into(),
        retry: false,
        broken: false,
    }
}

/// What a lock window does to other tables than the rollout's: those a foreign
/// key it adds references (SHARE ROW EXCLUSIVE there), or those whose key it
/// drops or that a key it drops references (ACCESS EXCLUSIVE there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Linked {
    Untouched,
    AddsKey(Vec<u32>),
    DropsKey(Vec<u32>),
}

impl Linked {
    /// The other tables, and the lock modes (as `pg_locks` names them) the
    /// window's lock there conflicts with.
    fn conflicts(&self) -> (Vec<String>, Vec<&'static str>) {
        use crate::engine::blockers::conflicting;
        use crate::sql::plan::Lock;
        let (tables, lock) = match self {
            Linked::Untouched => return (Vec::new(), Vec::new()),
            Linked::AddsKey(tables) => (tables, Lock::ShareRowExclusive),
            Linked::DropsKey(tables) => (tables, Lock::AccessExclusive),
        };
        let oids = tables.iter().map(u32::to_string).collect();
        (oids, conflicting(lock).to_vec())
    }
}

impl Driver {
    /// A connection that holds rollout `id`'s lock (the caller just made the row).
    pub async fn connect(
        settings: &Settings,
        database: &str,
        rt: &tokio::runtime::Handle,
        id: i64,
    ) -> Result<Driver, String> {
        let client = service::connect(settings, database, rt)
            .await
            .map_err(|e| e.to_string())?;
        let d = Driver {
            client,
            id,
            database: database.to_string(),
            cache: Default::default(),
            hold: None,
        };
        if d.try_lock().await.map_err(|e| e.reason)? {
            Ok(d)
        } else {
            Err(format!("rollout {id} is driven by another session"))
        }
    }

    pub async fn try_lock(&self) -> Result<bool, StepError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock($1::int4, $2::int8::int4)",
                &[&LOCK_CLASS, &self.id],
            )
            .await?;
        Ok(row.get(0))
    }

    /// `sql` prepared on this connection, once.
    async fn prepared(&self, sql: &str) -> Result<tokio_postgres::Statement, StepError> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(sql).cloned()
        };
        if let Some(st) = cached {
            return Ok(st);
        }
        let st = self.client.prepare(sql).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 32 {
            cache.clear();
        }
        cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    pub async fn load(&self) -> Result<Rollout, StepError> {
        let row = self
            .client
            .query_opt(
                &self
                    .prepared(&format!(
                        "SELECT {COLUMNS} FROM pgshift.rollouts WHERE id = $1"
                    ))
                    .await?,
                &[&self.id],
            )
            .await?
            .ok_or_else(|| ours(format!("rollout {} is gone", self.id)))?;
        Ok(Rollout::from_row(&row))
    }

    /// The rollout is over (committed): sessions stop treating its table as
    /// under rollout now, not when this task next looks at the row (a client
    /// that saw the phase may change the column at once).
    fn over(&self) {
        if let Some((running, database)) = &self.hold {
            running.over(database, self.id);
        }
    }

    pub async fn set_phase(&self, phase: Phase, error: Option<&str>) -> Result<(), StepError> {
        self.client
            .execute(
                "UPDATE pgshift.rollouts SET phase = $2, error = $3, lock_window = NULL, updated = pg_catalog.now() \
                 WHERE id = $1 AND phase NOT IN ('finished', 'rolled_back')",
                &[&self.id, &phase.name(), &error],
            )
            .await?;
        Ok(())
    }

    /// A batch's error, with what to do where the server's words do not say it:
    /// a row that breaks a NOT VALID CHECK constraint cannot be updated by
    /// anyone, the backfill included (the ALTER itself would not have checked
    /// it, nor a fill's ADD COLUMN).
    async fn explained(&self, r: &Rollout, reason: &str) -> String {
        if !reason.ends_with("(23514)") {
            return reason.to_string();
        }
        // The server's message names the constraint, in the server's language
        // and quotes: the table's NOT VALID ones are looked for in it, the
        // longest name first.
        let not_valid = self
            .client
            .query(
                "SELECT conname::text, pg_catalog.pg_get_expr(conbin, conrelid) FROM pg_catalog.pg_constraint \
                 WHERE conrelid = $1::text::oid AND contype = 'c' AND NOT convalidated \
                 ORDER BY pg_catalog.length(conname) DESC",
                &[&r.table_oid.to_string()],
            )
            .await
            .unwrap_or_default();
        let found = not_valid
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
            .find(|(name, _)| crate::sql::mentions::mentions(reason, name));
        match found {
            Some((name, condition)) => format!(
                "{reason}: a row of {} breaks the NOT VALID constraint {}, and no UPDATE of such a row succeeds, the backfill's included; \
                 make those rows satisfy it (UPDATE … WHERE NOT ({condition})), then ROLLOUT RESUME {id}; or ROLLOUT ROLLBACK {id}",
                r.qualified(),
                quote(&name),
                id = r.id
            ),
            None => reason.to_string(),
        }
    }

    async fn note_error(&self, error: &str) -> Result<(), StepError> {
        self.client
            .execute(
                "UPDATE pgshift.rollouts SET error = $2, updated = pg_catalog.now() WHERE id = $1",
                &[&self.id, &error],
            )
            .await?;
        Ok(())
    }

    async fn clear_request(&self) -> Result<(), StepError> {
        self.client
            .execute(
                "UPDATE pgshift.rollouts SET request = NULL WHERE id = $1",
                &[&self.id],
            )
            .await?;
        Ok(())
    }

    /// The table's name now (it is followed by oid: a rename does not lose it),
    /// written back to the row when it changed.
    pub async fn refresh(&self, r: &mut Rollout) -> Result<(), StepError> {
        let row = self
            .client
            .query_opt(
                "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::oid",
                &[&r.table_oid.to_string()],
            )
            .await?
            .ok_or_else(|| ours(format!("table {} is gone", r.qualified())))?;
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        if schema != r.schema || table != r.table {
            self.client
                .execute(
                    "UPDATE pgshift.rollouts SET schema_name = $2, table_name = $3 WHERE id = $1",
                    &[&self.id, &schema, &table],
                )
                .await?;
            r.schema = schema;
            r.table = table;
        }
        Ok(())
    }

    /// Inside a transaction that locked the table: refuses to go on if the name
    /// no longer means the table, or if an UPDATE would run code pgshift did not
    /// write (see [`sql::FOREIGN_CODE`]). `trigger` and `function`: pgshift's own,
    /// allowed on it now; `new`: the column the rollout writes.
    pub(super) async fn check_locked(
        &self,
        r: &Rollout,
        trigger: &str,
        function: &str,
        new: &str,
    ) -> Result<(), StepError> {
        let mut pinned: Vec<String> = r.key_columns.clone();
        pinned.extend(r.uses.iter().cloned());
        pinned.push(new.to_string());
        let rows = self
            .client
            .query(
                &self.prepared(sql::FOREIGN_CODE).await?,
                &[
                    &r.table_oid.to_string(),
                    &trigger,
                    &function,
                    &r.qualified(),
                    &pinned,
                    &r.key_columns,
                    &"",
                ],
            )
            .await?;
        let renamed = "it was renamed, moved or replaced";
        if !rows.is_empty() && rows.iter().all(|x| x.get::<_, String>(0) == renamed) {
            // Renamed between the look by oid and the lock: look again.
            return Err(StepError {
                reason: format!("{} was renamed meanwhile", r.qualified()),
                retry: true,
                broken: false,
            });
        }
        if let Some(row) = rows.first() {
            let what: String = row.get(0);
            return Err(ours(format!(
                "pgshift stopped working on {}: {what} (an UPDATE by its service role would run code pgshift did not write, or act on another table)",
                r.qualified()
            )));
        }
        Ok(())
    }

    /// (Re)creates the mirror function: before the cutover (`lenient` once the
    /// rollout failed), or after it.
    pub async fn install_function(&self, r: &Rollout, mirror: Mirror) -> Result<(), StepError> {
        let names = r.names();
        let text = match mirror {
            _ if r.fill => super::fill::function(&names.function, &r.column, &r.transform),
            Mirror::AfterCutover => sql::after_cutover_function(
                &names.reverse_function,
                &r.column,
                &r.old_column(),
                Self::reversible(r),
            ),
            _ if Self::reversible(r) && sql::widening(&r.old_type, &r.new_type) => {
                sql::copy_function(&names.function, &r.column, &r.new_column)
            }
            _ => {
                let rows = self
                    .client
                    .query(super::start::VARS, &[&r.table_oid.to_string(), &r.uses])
                    .await?;
                let vars: Vec<(String, String)> =
                    rows.iter().map(|x| (x.get(0), x.get(1))).collect();
                let lenient = mirror == Mirror::Lenient;
                sql::trigger_function(&names.function, &vars, &r.new_column, &r.transform, lenient)
            }
        };
        self.client.batch_execute(&text).await?;
        Ok(())
    }

    /// The expand committed: the backfill begins. A fill's boundary is the one
    /// its trigger's WHEN clause names (see `fill::expand`), its last `age(…)`:
    /// a quoted column name could hold that text too, never after it.
    pub async fn expanded(&self, r: &Rollout) -> Result<(), StepError> {
        if r.fill {
            let set = self
                .client
                .execute(
                    "UPDATE pgshift.rollouts SET fill_before = b.xid FROM \
                     (SELECT pg_catalog.substring(pg_catalog.pg_get_triggerdef(tg.oid), '^.*age\\(''([0-9]+)''::xid\\)') AS xid \
                        FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = $2::text::oid AND tg.tgname = $3::text::name) b \
                     WHERE id = $1 AND b.xid IS NOT NULL",
                    &[&self.id, &r.table_oid.to_string(), &r.names().trigger],
                )
                .await?;
            if set == 0 {
                return Err(ours(format!("the trigger of rollout {} is gone", r.id)));
            }
        }
        self.set_phase(Phase::Backfilling, None).await
    }

    /// Once the expand committed in the client's session: marks the rollout
    /// expanded and hands it to a task that drives it. The client's statement
    /// took effect, so a failure here is not its failure: the row stays
    /// `planned` (the error noted) and the driver moves it on when it finds the
    /// trigger; a connection lost meanwhile goes to a standby that connects
    /// again (the rollout stays registered, so sessions keep hiding its column).
    pub async fn drive_started(
        self,
        r: &Rollout,
        bg: Background,
        database: String,
        running: Arc<Running>,
        entered: Option<super::Entered>,
    ) {
        let broken = match self.expanded(r).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(target: "pgshift::rollout", rollout = r.id, error = %e, "the rollout's column is in place but its row still says planned: its driver moves it on");
                let _ = self.note_error(&format!("will try again: {e}")).await;
                e.broken
            }
        };
        match broken {
            false => bg.spawn(run(self, bg.clone(), database, running, entered)),
            true => bg.spawn(standby(
                bg.settings(),
                database,
                r.id,
                bg.clone(),
                running,
                entered,
            )),
        }
    }

    /// A start that failed before the client got its answer: nothing of the
    /// rollout exists on the table (the expand is one transaction). Should the
    /// expand have committed after all (an answer lost with the connection), the
    /// trigger keeps the functions: the drop fails and the row stays `planned`
    /// for a driver to find the trigger and move on.
    pub async fn abandon(&self, r: &Rollout, why: &str) -> Result<(), StepError> {
        self.drop_functions(r).await?;
        self.set_phase(Phase::RolledBack, Some(&format!("the start failed: {why}")))
            .await
    }

    async fn drop_functions(&self, r: &Rollout) -> Result<(), StepError> {
        let n = r.names();
        self.client
            .batch_execute(&format!(
                "DROP FUNCTION IF EXISTS {}(); DROP FUNCTION IF EXISTS {}()",
                n.function, n.reverse_function
            ))
            .await?;
        Ok(())
    }

    /// After the phase is final: a failure leaves two unused functions behind
    /// (logged), and must not turn the phase back.
    async fn drop_leftover_functions(&self, r: &Rollout) {
        if let Err(e) = self.drop_functions(r).await {
            tracing::warn!(target: "pgshift::rollout", rollout = r.id, error = %e, "the rollout's functions were left behind");
        }
    }

    async fn column_exists(&self, r: &Rollout, name: &str) -> Result<bool, StepError> {
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = $1::text::oid AND attname = $2::text::name AND NOT attisdropped)",
                &[&r.table_oid.to_string(), &name],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn trigger_exists(&self, r: &Rollout, name: &str) -> Result<bool, StepError> {
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1::text::oid AND tgname = $2::text::name)",
                &[&r.table_oid.to_string(), &name],
            )
            .await?;
        Ok(row.get(0))
    }

    /// True when the rollout's table name still means its table (inside a
    /// transaction that locked it, the answer holds until commit).
    pub(super) async fn names_table(&self, r: &Rollout) -> Result<bool, StepError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_catalog.to_regclass($1::text) IS NOT DISTINCT FROM $2::text::oid",
                &[&r.qualified(), &r.table_oid.to_string()],
            )
            .await?;
        Ok(row.get(0))
    }

    /// One transaction: `body` under the given lock, with the row updated by
    /// `done` (SQL, `$1` = id) in the same commit.
    async fn in_lock(
        &self,
        r: &Rollout,
        lock_ms: u64,
        body: &str,
        done: &str,
        expect: Option<&Expected>,
    ) -> Result<(), StepError> {
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = 0; \
             LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            literal(&format!("{lock_ms}ms")),
            r.target(),
        );
        let result = async {
            self.client.batch_execute(&begin).await?;
            // The DDL runs no code of the table's owner, but it must act on this
            // table: under the lock, the name cannot change any more.
            let same = self.names_table(r).await?;
            if !same {
                return Err(StepError {
                    reason: format!("{} was renamed or replaced meanwhile", r.qualified()),
                    retry: true,
                    broken: false,
                });
            }
            if changes_phase(done) {
                self.refuse_detaching(r).await?;
            }
            if let Some(marks) = expect.and_then(|e| e.marks.as_ref()) {
                if self.column_marks(r, &r.column, &r.column).await? != *marks {
                    return Err(ours(format!(
                        "the privileges, comment or settings of {} changed while the window waited; ask again",
                        quote(&r.column)
                    )));
                }
            }
            if let Some(expected) = expect {
                for (key, definition) in &expected.leaf_keys {
                    if let Some(leaf) = self.leaves_keyed(r, key, definition).await? {
                        return Err(ours(format!(
                            "partition {leaf} has no validated twin {} of a foreign key as pgshift made it (made or changed meanwhile); ask again",
                            quote(key)
                        )));
                    }
                }
            }
            if let Some(expected) = expect.filter(|e| e.cutover) {
                // The cutover: nothing new uses the old column, its indexes are
                // the ones that have twins (one added since would be lost), and
                // the foreign keys on them are the ones read (one replaced since
                // would come back with its old definition).
                let users = self.column_users(r, &r.column).await?;
                let now = self.old_indexes(r).await?;
                let leaves: Vec<(u32, String)> = self
                    .leaf_own(r, &r.column)
                    .await?
                    .into_iter()
                    .map(|(oid, _, name)| (oid, name))
                    .collect();
                let oids: Vec<u32> = now.iter().map(|i| i.oid).collect();
                let mut fks = Vec::new();
                for unique in now.iter().filter(|i| i.unique) {
                    fks.extend(self.foreign_keys(r, unique.oid).await?);
                }
                let fks: Vec<(u32, String, String)> = fks
                    .into_iter()
                    .map(|f| (f.table_oid, f.name, f.definition))
                    .collect();
                let checks = self.checks_on(r, &r.column).await?;
                let mut on_new: Vec<String> = self
                    .checks_on(r, &r.new_column)
                    .await?
                    .into_iter()
                    .map(|f| f.name)
                    .collect();
                on_new.sort();
                if let Some((name, _)) = attached_since(&self.load().await?, &expected.verified).first() {
                    return Err(ours(format!(
                        "partition {} was attached during the cutover, its rows not verified; ask for the cutover again (a verify pass comes first)",
                        quote(name)
                    )));
                }
                if !users.is_empty()
                    || oids != expected.indexes
                    || leaves != expected.leaf_indexes
                    || fks != expected.foreign_keys
                    || checks != expected.checks
                    || on_new != expected.on_new
                {
                    return Err(ours(format!(
                        "{} gained users during the cutover ({}); ask for the cutover again",
                        quote(&r.column),
                        match users.is_empty() {
                            true =>
                                "an index, a foreign key or a CHECK constraint changed".to_string(),
                            false => users.join(", "),
                        }
                    )));
                }
            }
            let valid = expect.map_or(&[][..], |e| &e.valid[..]);
            if valid.is_empty() {
                self.client
                    .batch_execute(&format!("{body}; {done}; COMMIT"))
                    .await?;
                return Ok(());
            }
            self.client.batch_execute(body).await?;
            let invalid: Option<String> = self
                .client
                .query_one(
                    "SELECT pg_catalog.string_agg(n.name, ', ') FROM pg_catalog.unnest($1::text[]) AS n(name) \
                     JOIN pg_catalog.pg_index x ON x.indexrelid = pg_catalog.to_regclass(n.name) WHERE NOT x.indisvalid",
                    &[&valid],
                )
                .await?
                .get(0);
            if let Some(names) = invalid {
                return Err(ours(format!(
                    "a partition made meanwhile has no twin of {names} yet; ask again"
                )));
            }
            self.client
                .batch_execute(&format!("{done}; COMMIT"))
                .await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        result
    }

    /// Retries [`Driver::in_lock`] while the lock is not granted in time, for at
    /// most the DDL retry deadline, pausing between attempts.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn with_retries(
        &self,
        settings: &Settings,
        r: &Rollout,
        body: &str,
        done: &str,
        background: &Background,
        expect: Option<&Expected>,
        linked: Linked,
    ) -> Result<(), StepError> {
        let ddl = &settings.config.ddl;
        let lock_ms = match ddl.stall_budget_ms {
            0 => ddl.lock_timeout_ms,
            b => b.min(ddl.lock_timeout_ms),
        };
        let deadline = Instant::now() + Duration::from_millis(ddl.retry_deadline_ms);
        // A window that renames or drops the new column (the cutover, a
        // rollback before it) waits for sessions' turns that use statements
        // pgshift rewrote to name it, for half the retry deadline at most:
        // after that it goes ahead as it would without them (a rollback must
        // not wait for a session that never pauses).
        let renames_new = !r.fill
            && !matches!(
                r.phase,
                Phase::CutOver | Phase::Finished | Phase::RolledBack
            );
        let careful_until = Instant::now()
            + Duration::from_millis(if renames_new {
                ddl.retry_deadline_ms / 2
            } else {
                0
            });
        let mut pause = Duration::from_millis(ddl.retry_initial_ms.max(10));
        // The change count of a window that did not begin for such a turn: the
        // next attempt waits, outside any window, until those turns are over.
        let mut unsettled: Option<u64> = None;
        let waiting =
            crate::engine::waits::Waiting::new("rollout", &r.qualified(), "ACCESS EXCLUSIVE");
        let phase_change = changes_phase(done);
        loop {
            // A window that changes the phase: not while a partition is half
            // detached (checked again under the lock), nor any attempt at it.
            if phase_change {
                self.refuse_detaching(r).await?;
            }
            // Like the engine's steps: no attempt while a transaction that has
            // been open longer than the stall budget holds a lock on the table
            // (the attempt would queue behind it, and every query behind that).
            while let Some(held) = match ddl.stall_budget_ms {
                0 => None,
                budget => self.long_holder(r, budget, &linked).await?,
            } {
                waiting.blocked_by(Some((
                    String::new(),
                    format!(
                        "a transaction open longer than the stall budget ({} ms) on {held}",
                        ddl.stall_budget_ms
                    ),
                )));
                if Instant::now() >= deadline {
                    return Err(StepError {
                        reason: format!(
                            "a transaction open longer than {} ms held {held} until the retry deadline",
                            ddl.stall_budget_ms,
                        ),
                        retry: true,
                        broken: false,
                    });
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = background.stopped() => return Err(ours("pgshift is shutting down")),
                }
            }
            // A step that moves the rollout to another phase changes what the
            // table returns (cutover, rollback, finish): sessions about to use a
            // statement that reads it wait for this attempt to end, then renew it;
            // other proxies' too.
            // Other proxies hold their sessions too (see `watch`); a fill's
            // column is the application's own.
            let announced = match &self.hold {
                Some((running, database)) if phase_change && !r.fill => {
                    Some(super::watch::announce(&self.client, running, database, self.id).await)
                }
                _ => None,
            };
            let attempt = match announced {
                Some(Err(e)) => Err(e),
                announced => {
                    let announced = announced.and_then(Result::ok);
                    // Every lock window holds this proxy's sessions outside a
                    // transaction block that name the table (a step that adds a
                    // constraint too): they wait in pgshift, not in the server's
                    // lock queue behind the window's lock.
                    let swap = self
                        .hold
                        .as_ref()
                        .map(|(running, database)| match phase_change {
                            true => running.swap(database, &r.table, r.table_oid, &r.partitions),
                            false => running.hold(database, &r.table, r.table_oid, &r.partitions),
                        });
                    let careful = Instant::now() < careful_until;
                    let settled = match swap.as_ref().filter(|_| phase_change) {
                        Some(swap) => swap.settle(careful).await,
                        None => true,
                    };
                    if !settled {
                        unsettled = swap.as_ref().map(|s| s.count());
                    }
                    let attempt = match settled {
                        true => self.in_lock(r, lock_ms, body, done, expect).await,
                        // Its sessions go on; the window is tried again.
                        false => Err(StepError {
                            reason: format!(
                                "a session's turn that uses a statement pgshift rewrote (naming {}) was still at the server after {} ms",
                                quote(&r.new_column),
                                super::SETTLE_MAX.as_millis()
                            ),
                            retry: true,
                            broken: false,
                        }),
                    };
                    drop(swap);
                    if let (Err(_), Some(a)) = (&attempt, announced) {
                        a.withdraw(&self.client).await;
                    }
                    attempt
                }
            };
            waiting.blocked_by(None);
            if attempt.as_ref().is_err_and(|e| e.retry) {
                waiting.failed_attempt();
            }
            match attempt {
                Err(e) if e.retry && Instant::now() + pause < deadline => {
                    // Each window is announced to every proxy and makes their
                    // sessions renew their statements: none is opened again
                    // while the turns that stopped this one are still out.
                    if let (Some(count), Some((running, database))) = (unsettled.take(), &self.hold)
                    {
                        while Instant::now() < careful_until
                            && running.rewritten_turns_before(database, count, r.table_oid)
                        {
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                                _ = background.stopped() => return Err(ours("pgshift is shutting down")),
                            }
                        }
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = background.stopped() => return Err(ours("pgshift is shutting down")),
                    }
                    pause = (pause * 2).min(Duration::from_millis(ddl.retry_max_ms.max(10)));
                }
                other => return other,
            }
        }
    }

    /// The application's latency before the backfill: a second of this process's
    /// sessions' turns (up to 3 s while fewer than [`MIN_BASELINE_TURNS`] come).
    /// None when off, or too few turns came to tell.
    async fn governor(&self, factor: f64, bg: &Background) -> Option<Governor> {
        let (running, _) = self.hold.as_ref()?;
        if factor <= 0.0 {
            return None;
        }
        let start = running.latency();
        let began = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = bg.stopped() => return None,
            }
            let now = running.latency();
            let window = now.since(&start);
            let waited = began.elapsed();
            // An idle application (or one that barely asks) has nothing to
            // protect: the backfill does not wait longer for it.
            let few = window.total() < MIN_BASELINE_TURNS / 4;
            if waited >= Duration::from_secs(1) && (few || window.total() >= MIN_BASELINE_TURNS)
                || waited >= Duration::from_secs(3)
            {
                let governor = Governor::new(&window, factor, now, Instant::now());
                tracing::info!(target: "pgshift::rollout", rollout = self.id, turns = window.total(), p99_us = window.quantile(0.99).map(|d| d.as_micros() as u64), governs = governor.is_some(), "application latency before the backfill");
                return governor;
            }
        }
    }

    /// A table another session holds a lock on, in a transaction that began
    /// more than `budget_ms` ago (sessions of other roles count only where this
    /// role may see their transaction's start): the rollout's table, or another
    /// the window locks (`linked`) where the window's lock conflicts with it.
    async fn long_holder(
        &self,
        r: &Rollout,
        budget_ms: u64,
        linked: &Linked,
    ) -> Result<Option<String>, StepError> {
        let (tables, modes) = linked.conflicts();
        // The window locks every partition too.
        let partitions: Vec<String> = r
            .partitions
            .iter()
            .map(|(_, oid)| oid.to_string())
            .collect();
        let row = self
            .client
            .query_opt(
                "SELECT l.relation::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_locks l \
                 JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid() \
                 AND (l.relation = $1::text::oid OR l.relation = ANY ($5::text[]::oid[]) \
                      OR l.relation = ANY ($3::text[]::oid[]) AND l.mode = ANY ($4::text[])) \
                 AND a.xact_start < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $2::int8 / 1000.0) \
                 LIMIT 1",
                &[
                    &r.table_oid.to_string(),
                    &(budget_ms as i64),
                    &tables,
                    &modes,
                    &partitions,
                ],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// The other tables that the foreign keys of the rollout's table on
    /// `columns` reference.
    pub(super) async fn referenced_tables(
        &self,
        r: &Rollout,
        columns: &[&str],
    ) -> Result<Vec<u32>, StepError> {
        let rows = self
            .client
            .query(
                "SELECT DISTINCT k.confrelid::pg_catalog.text FROM pg_catalog.pg_constraint k \
                 WHERE k.conrelid = $1::text::oid AND k.contype = 'f' AND k.confrelid <> k.conrelid \
                 AND k.conkey && (SELECT pg_catalog.array_agg(a.attnum) FROM pg_catalog.pg_attribute a \
                     WHERE a.attrelid = $1::text::oid AND a.attname = ANY ($2::text[]::name[]) AND NOT a.attisdropped)",
                &[&r.table_oid.to_string(), &columns],
            )
            .await?;
        rows.iter()
            .map(|row| {
                row.get::<_, String>(0)
                    .parse()
                    .map_err(|_| ours("a table's oid did not read as a number"))
            })
            .collect()
    }

    fn done(phase: Phase) -> String {
        format!(
            "UPDATE pgshift.rollouts SET phase = '{}', request = NULL, error = NULL, lock_window = NULL, updated = pg_catalog.now() WHERE id = ",
            phase.name()
        )
    }

    /// Adds (NOT VALID) and validates CHECK (`column` IS NOT NULL), so that SET NOT
    /// NULL inside the short lock window needs no scan.
    async fn not_null_check(
        &self,
        settings: &Settings,
        r: &Rollout,
        column: &str,
        background: &Background,
    ) -> Result<(), StepError> {
        let name = r.names().not_null_check;
        let want = format!("CHECK (({} IS NOT NULL))", quote(column));
        let found: Option<String> = self
            .client
            .query_opt(
                "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint WHERE conrelid = $1::text::oid AND conname = $2::text::name",
                &[&r.table_oid.to_string(), &name],
            )
            .await?
            .map(|row| row.get(0));
        match found {
            None => {
                let add = format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
                    r.target(),
                    quote(&name),
                    quote(column)
                );
                self.with_retries(
                    settings,
                    r,
                    &add,
                    "SELECT 1",
                    background,
                    None,
                    Linked::Untouched,
                )
                .await?;
            }
            Some(def) if def == want || def == format!("{want} NOT VALID") => {}
            Some(def) => {
                return Err(ours(format!(
                    "{} has a constraint named {} that pgshift did not make ({def})",
                    r.qualified(),
                    quote(&name)
                )))
            }
        }
        // Validated under a lock that keeps the constraint and the table's name
        // as checked: the scan evaluates only pgshift's IS NOT NULL.
        let result = async {
            self.client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '10s'; \
                     LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
                    r.target()
                ))
                .await?;
            let ok: bool = self
                .client
                .query_one(
                    "SELECT pg_catalog.to_regclass($1::text) IS NOT DISTINCT FROM $2::text::oid AND \
                     (SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint \
                       WHERE conrelid = $2::text::oid AND conname = $3::text::name) IN ($4::text, $4::text || ' NOT VALID')",
                    &[&r.qualified(), &r.table_oid.to_string(), &name, &want],
                )
                .await?
                .get::<_, Option<bool>>(0)
                .unwrap_or(false);
            if !ok {
                return Err(ours(format!(
                    "{} or its constraint {} changed meanwhile",
                    r.qualified(),
                    quote(&name)
                )));
            }
            self.client
                .batch_execute(&format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {}; COMMIT",
                    r.target(),
                    quote(&name)
                ))
                .await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        result
    }

    /// Refuses to move a default whose text, parsed again, would run input
    /// functions that are not built in (literals of the owner's types).
    async fn default_is_built_in(&self, r: &Rollout, column: &str) -> Result<(), StepError> {
        let rows = self
            .client
            .query(sql::DEFAULT_CODE, &[&r.table_oid.to_string(), &column])
            .await?;
        if let Some(row) = rows.first() {
            let what: String = row.get(0);
            return Err(ours(format!(
                "the default of {} cannot be moved by pgshift: {what}; move it by hand (ALTER COLUMN … DROP DEFAULT), then ask again",
                quote(column)
            )));
        }
        Ok(())
    }

    /// The live NOT NULL and default of `column` (printed on this connection).
    async fn column_state(
        &self,
        r: &Rollout,
        column: &str,
    ) -> Result<(bool, Option<String>), StepError> {
        let row = self
            .client
            .query_opt(
                "SELECT a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attribute a \
                 LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = $1::text::oid AND a.attname = $2::text::name AND NOT a.attisdropped",
                &[&r.table_oid.to_string(), &column],
            )
            .await?
            .ok_or_else(|| ours(format!("column {} of {} is gone", quote(column), r.qualified())))?;
        Ok((row.get(0), row.get(1)))
    }

    pub(super) async fn attnum(&self, r: &Rollout, column: &str) -> Result<i32, StepError> {
        let row = self
            .client
            .query_opt(
                "SELECT attnum::int4 FROM pg_catalog.pg_attribute WHERE attrelid = $1::text::oid AND attname = $2::text::name AND NOT attisdropped",
                &[&r.table_oid.to_string(), &column],
            )
            .await?
            .ok_or_else(|| ours(format!("column {} is gone", quote(column))))?;
        Ok(row.get(0))
    }

    /// Objects other than its default and pgshift's trigger that use `column`:
    /// the swap would leave them on the old column.
    /// On a partitioned table, anything on it or its partitions (see
    /// [`super::start::PARTITIONS_USERS`]).
    async fn column_users(&self, r: &Rollout, column: &str) -> Result<Vec<String>, StepError> {
        let attnum = self.attnum(r, column).await?;
        let oid = r.table_oid.to_string();
        let rows = match r.partitioned {
            true => {
                self.client
                    .query(super::start::PARTITIONS_USERS, &[&oid, &attnum, &column])
                    .await?
            }
            false => {
                self.client
                    .query(super::start::USERS, &[&oid, &attnum])
                    .await?
            }
        };
        let n = r.names();
        let ours = [
            format!("trigger {} on ", n.trigger),
            format!("trigger {} on ", n.reverse_trigger),
        ];
        Ok(rows
            .iter()
            .map(|x| x.get::<_, Option<String>>(0).unwrap_or_default())
            .filter(|what| !ours.iter().any(|o| what.starts_with(o)))
            .collect())
    }

    /// True when the new value is the old one through an assignment cast, so
    /// that the reverse mirror (new to old, by assignment) gives the old value back.
    fn reversible(r: &Rollout) -> bool {
        r.transform == quote(&r.column)
    }

    /// A partitioned table's partitions as the start required them (see
    /// [`super::start::PARTITIONS`]): a partition created or changed since may
    /// belong to another role (the renames would fail on it) or carry its own
    /// NOT NULL or default for the column (the swap would lose it). A rollback
    /// (`owners_only`) needs only the first.
    async fn partitions_fit(&self, r: &Rollout, owners_only: bool) -> Result<(), StepError> {
        if !r.partitioned {
            return Ok(());
        }
        let found = self
            .client
            .query(
                super::start::PARTITIONS,
                &[&r.table_oid.to_string(), &r.column],
            )
            .await?;
        let found = found
            .iter()
            .find(|row| !owners_only || row.get::<_, String>(0) == "42501");
        match found {
            Some(row) => Err(ours(format!(
                "{}; change it back (or ALTER TABLE … OWNER TO the table's owner), then ask again",
                row.get::<_, String>(1)
            ))),
            None => Ok(()),
        }
    }

    /// Verified before this driver took over, or long ago (a write since may
    /// have stored NULL, a value that did not convert), or a partition came
    /// with rows that differ: one more pass right before the swap.
    async fn verify_again(&self, passes: &mut u32) -> Result<(), StepError> {
        self.client
            .execute(
                "UPDATE pgshift.rollouts SET phase = 'verifying', last_key = NULL, mismatches = 0 WHERE id = $1",
                &[&self.id],
            )
            .await?;
        *passes = 0;
        Ok(())
    }

    /// `verified`: the partitions' attachments whose rows were all verified.
    async fn cutover(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
        verified: Vec<(u32, u32)>,
    ) -> Result<(), StepError> {
        self.partitions_fit(r, false).await?;
        let users = self.column_users(r, &r.column).await?;
        if !users.is_empty() {
            return Err(ours(format!(
                "{} gained users during the rollout ({}); move them, then ask for the cutover again",
                quote(&r.column),
                users.join(", ")
            )));
        }
        let (not_null, default) = self.column_state(r, &r.column).await?;
        if default.is_some() {
            self.default_is_built_in(r, &r.column).await?;
        }
        let (indexes, fks, old_indexes, leaves) = self.build_indexes(settings, r).await?;
        let checks = self.build_checks(settings, r, bg).await?;
        let reversible = Self::reversible(r);
        self.install_function(r, Mirror::AfterCutover).await?;
        if not_null {
            self.not_null_check(settings, r, &r.new_column, bg).await?;
        }
        let t = format!("ALTER TABLE {}", r.target());
        let (c, new, old) = (
            quote(&r.column),
            quote(&r.new_column),
            quote(&r.old_column()),
        );
        let n = r.names();
        let sequences = self.owned_sequences(r, &r.column).await?;
        let marks = self.column_marks(r, &r.column, &r.column).await?;
        let mut body = Vec::new();
        // A partitioned table's index twins are made and attached now (their
        // partitions' twins are built); the partitions' take the old names.
        let mut part_renames = Vec::new();
        let mut part_marks = Vec::new();
        // A key or unique constraint is made again after the renames.
        let mut keys_made = Vec::new();
        if r.partitioned {
            for i in &old_indexes {
                if i.constraint.is_some() {
                    let (made, marks) = self.key_tree(r, i, |oid| n.new_index(oid)).await?;
                    keys_made.extend(made);
                    part_marks.extend(marks);
                    continue;
                }
                let [made, renames, marks] = self
                    .twin_tree(
                        r,
                        i,
                        &r.column,
                        &r.new_column,
                        |oid| n.new_index(oid),
                        |oid| n.old_index(oid),
                    )
                    .await?;
                body.extend(made);
                part_renames.extend(renames);
                part_marks.extend(marks);
            }
        }
        // A partitioned table's own foreign keys: dropped, their twins (on the
        // leaves) take the names, the table's key comes after the renames.
        let mut keys_after = Vec::new();
        let (part_keys, checks): (Vec<CheckTwin>, Vec<CheckTwin>) = checks
            .into_iter()
            .partition(|ck| r.partitioned && ck.foreign);
        for ck in &part_keys {
            let twin = n.new_check(ck.oid, true);
            let (before, after) = self
                .key_swap(r, ck.oid, &ck.name, &twin, &ck.definition)
                .await?;
            body.extend(before);
            keys_after.extend(after);
        }
        // A key or unique constraint moves to its twin; its old index goes with
        // it, and the foreign keys that reference it are added again on the twin.
        body.extend(fks.iter().map(ForeignKey::drop_sql));
        for tw in indexes.iter().filter(|tw| tw.constraint.is_some()) {
            body.push(format!("{t} DROP CONSTRAINT {}", quote(&tw.name)));
        }
        body.push(format!("{t} RENAME COLUMN {c} TO {old}"));
        body.push(format!("{t} RENAME COLUMN {new} TO {c}"));
        // The twins take the old indexes' names; the old ones go with the column.
        for tw in indexes.iter().filter(|tw| tw.constraint.is_none()) {
            body.extend(pass_name(r, tw, &n.old_index(tw.oid), &n.new_index(tw.oid)));
        }
        body.extend(part_renames);
        let (leaf_renames, leaf_marks) = Self::leaf_swap(r, &leaves);
        body.extend(leaf_renames);
        part_marks.extend(leaf_marks);
        // So do the CHECK constraints' twins.
        // The CHECK constraints and foreign keys: the old ones go (parked, a
        // write that breaks both would name pgshift's), the twins take their names.
        for ck in &checks {
            let name = quote(&ck.name);
            body.push(format!("{t} DROP CONSTRAINT {name}"));
            body.push(format!(
                "{t} RENAME CONSTRAINT {} TO {name}",
                quote(&n.new_check(ck.oid, ck.foreign))
            ));
        }
        body.extend(keys_after);
        if let Some(default) = &default {
            body.push(format!("{t} ALTER COLUMN {old} DROP DEFAULT"));
            body.push(format!("{t} ALTER COLUMN {c} SET DEFAULT {default}"));
        }
        if not_null {
            body.push(format!("{t} ALTER COLUMN {c} SET NOT NULL"));
            body.push(format!("{t} DROP CONSTRAINT {}", quote(&n.not_null_check)));
        }
        for tw in indexes.iter().filter(|_| !r.partitioned) {
            body.extend(constraint_on(&t, tw, &n.new_index(tw.oid)));
        }
        body.extend(keys_made);
        body.extend(fks.iter().map(ForeignKey::add_sql));
        // Privileges, comment and settings of the column go to the new one.
        body.extend(marks.iter().cloned());
        // The comments of what the twins replace go to them.
        let mut named: Vec<(u32, String)> = checks
            .iter()
            .chain(&part_keys)
            .map(|ck| (r.table_oid, ck.name.clone()))
            .collect();
        named.extend(fks.iter().map(|f| (f.table_oid, f.name.clone())));
        named.extend(
            indexes
                .iter()
                .filter(|tw| tw.constraint.is_some())
                .map(|tw| (r.table_oid, tw.name.clone())),
        );
        let old_oids: Vec<u32> = old_indexes
            .iter()
            .chain(leaves.iter().map(|l| &l.index))
            .map(|i| i.oid)
            .collect();
        body.extend(self.comments(&old_oids, &named).await?);
        // The replica identity and CLUSTER ON follow the name to the twin (then
        // the old column may lose its NOT NULL).
        for i in &old_indexes {
            body.extend(i.table_marks(&r.qualified()));
        }
        body.extend(part_marks);
        if not_null {
            body.push(format!("{t} ALTER COLUMN {old} DROP NOT NULL"));
        }
        // A `serial` sequence follows the column (the finish would drop it).
        for seq in &sequences {
            body.push(format!(
                "ALTER SEQUENCE {seq} OWNED BY {}.{c}",
                r.qualified()
            ));
        }
        body.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            quote(&n.trigger),
            r.qualified()
        ));
        // Writes after the cutover: positional INSERTs (the old column stands
        // where the column stood) and, for a plain cast, everything that sets the
        // column, so that a rollback loses nothing.
        let events = match reversible {
            true => format!("INSERT OR UPDATE OF {c}"),
            false => "INSERT".to_string(),
        };
        body.push(format!(
            "CREATE TRIGGER {} BEFORE {events} ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            quote(&n.reverse_trigger),
            r.qualified(),
            n.reverse_function
        ));
        body.push(format!(
            "{t} ENABLE ALWAYS TRIGGER {}",
            quote(&n.reverse_trigger)
        ));
        let done = format!("{}{}", Self::done(Phase::CutOver), r.id);
        let expected = Expected {
            verified,
            valid: match r.partitioned {
                true => indexes
                    .iter()
                    .map(|tw| crate::sql::ident::qualified(&r.schema, &tw.name))
                    .collect(),
                false => Vec::new(),
            },
            indexes: indexes.iter().map(|tw| tw.oid).collect(),
            leaf_indexes: {
                let mut own: Vec<(u32, String)> = leaves
                    .iter()
                    .map(|l| (l.index.oid, l.index.name.clone()))
                    .collect();
                own.sort();
                own
            },
            foreign_keys: fks
                .iter()
                .map(|f| (f.table_oid, f.name.clone(), f.definition.clone()))
                .collect(),
            cutover: true,
            marks: Some(marks),
            leaf_keys: part_keys
                .iter()
                .map(|ck| (n.new_check(ck.oid, true), ck.twin.clone()))
                .collect(),
            checks: {
                let mut found: Vec<_> = checks
                    .iter()
                    .chain(&part_keys)
                    .map(CheckTwin::found)
                    .collect();
                found.sort_by_key(|f| f.oid);
                found
            },
            on_new: {
                let mut names: Vec<String> = checks
                    .iter()
                    .map(|ck| n.new_check(ck.oid, ck.foreign))
                    .collect();
                if not_null {
                    names.push(n.not_null_check.clone());
                }
                names.sort();
                names
            },
        };
        // The keys that reference the column move (their tables), and its own
        // keys go from the old column (the tables they reference).
        let mut linked = self.referenced_tables(r, &[&r.column]).await?;
        linked.extend(fks.iter().map(|f| f.table_oid));
        self.with_retries(
            settings,
            r,
            &body.join("; "),
            &done,
            bg,
            Some(&expected),
            Linked::DropsKey(linked),
        )
        .await?;
        tracing::info!(target: "pgshift::rollout", rollout = r.id, "cut over: {}", r.describe());
        let pending: Vec<(u32, String)> =
            fks.iter().map(|f| (f.table_oid, f.name.clone())).collect();
        if let Err(e) = self.validate_foreign_keys(settings, &pending).await {
            tracing::warn!(target: "pgshift::rollout", rollout = r.id, error = %e, "a foreign key stays NOT VALID for now");
        }
        Ok(())
    }

    async fn finish(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
    ) -> Result<(), StepError> {
        let n = r.names();
        let body = match r.fill {
            true => format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote(&n.trigger),
                r.qualified()
            ),
            false => format!(
                "DROP TRIGGER IF EXISTS {} ON {t}; ALTER TABLE {only}{t} DROP COLUMN IF EXISTS {}",
                quote(&n.reverse_trigger),
                quote(&r.old_column()),
                t = r.qualified(),
                only = r.only(),
            ),
        };
        let done = format!("{}{}", Self::done(Phase::Finished), r.id);
        self.with_retries(settings, r, &body, &done, bg, None, Linked::Untouched)
            .await?;
        self.drop_leftover_functions(r).await;
        tracing::info!(target: "pgshift::rollout", rollout = r.id, "finished: {}", r.describe());
        self.over();
        Ok(())
    }

    async fn rollback(
        &self,
        settings: &Settings,
        r: &Rollout,
        bg: &Background,
    ) -> Result<(), StepError> {
        let t = format!("ALTER TABLE {}", r.target());
        let n = r.names();
        let (c, new, old) = (
            quote(&r.column),
            quote(&r.new_column),
            quote(&r.old_column()),
        );
        let mut body = Vec::new();
        // Foreign keys moved back with a primary key, validated after the move.
        let mut rollback_fks: Vec<(u32, String)> = Vec::new();
        // A partitioned table's foreign keys moving back onto the leaves'
        // twins: (name, definition), checked under the window's lock.
        let mut leaf_keys: Vec<(String, String)> = Vec::new();
        // A partitioned table's keys the window makes again (see `key_tree`):
        // valid only if every partition had its twin.
        let mut valid: Vec<String> = Vec::new();
        // What the column carries, as the window gives it back (see `Expected`).
        let mut column_marks: Option<Vec<String>> = None;
        // CHECK constraints and foreign keys of the column added again NOT
        // VALID: (name, definition, validated before, foreign key).
        let mut readded: Vec<(String, String, bool, bool)> = Vec::new();
        self.partitions_fit(r, true).await?;
        if r.phase == Phase::CutOver {
            // What was added to the new column since the cutover would go with it.
            let users = self.column_users(r, &r.column).await?;
            if !users.is_empty() {
                return Err(ours(format!(
                    "{} gained users since the cutover ({}); a rollback would drop them with the new column: move or drop them, then ask again",
                    quote(&r.column),
                    users.join(", ")
                )));
            }
            // CHECK constraints, foreign keys and indexes on the new column: the
            // twins pgshift made (by oid), and nothing else.
            let mut added: Vec<String> = self
                .checks_on(r, &r.column)
                .await?
                .into_iter()
                .filter(|f| {
                    // A partitioned table's foreign key was added in the
                    // window, under the old one's name (see `part_keys`).
                    !r.checks.iter().any(|(oid, name, foreign)| {
                        *oid == f.oid || (r.partitioned && *foreign && f.foreign && *name == f.name)
                    })
                })
                .map(|f| f.name)
                .collect();
            added.extend(
                self.indexes_on(r, &r.column)
                    .await?
                    .into_iter()
                    .filter(|i| !r.indexes.iter().any(|tw| tw.name == i.final_name()))
                    .map(|i| i.name),
            );
            added.extend(self.leaf_added(r).await?);
            if !added.is_empty() {
                return Err(ours(format!(
                    "{} gained constraints or indexes since the cutover ({}); a rollback would drop them with the new column: move or drop them, then ask again",
                    quote(&r.column),
                    added.join(", ")
                )));
            }
            if !Self::reversible(r) {
                return Err(ours(format!(
                    "rollout {} computed the new column with USING {}: pgshift has no inverse to carry the writes made since the cutover back into the old column, so a rollback would lose them",
                    r.id, r.transform
                )));
            }
            // Writes since the cutover reached the old column through the reverse
            // mirror; a value the old type cannot hold came through as NULL.
            // Under a lock that keeps the name; row_security off: a policy would
            // be the owner's code (it errors instead of applying one).
            self.client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '10s'; \
                     SET LOCAL row_security = off; LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
                    r.target()
                ))
                .await?;
            let same = self.names_table(r).await?;
            if !same {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(ours(format!(
                    "{} was renamed or replaced meanwhile",
                    r.qualified()
                )));
            }
            // Planning the count folds index expressions: only built-in code
            // may stand there (nobody can add an index under this lock).
            let function = format!("{}()", n.reverse_function);
            if let Err(e) = self
                .check_locked(r, &n.reverse_trigger, &function, &r.column)
                .await
            {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
            let counted = self
                .client
                .query_one(
                    &format!(
                        "SELECT pg_catalog.count(*) FROM {} WHERE {old} IS NULL AND {c} IS NOT NULL",
                        r.target()
                    ),
                    &[],
                )
                .await;
            let _ = self.client.batch_execute("COMMIT").await;
            let lost: i64 = counted?.get(0);
            if lost > 0 {
                return Err(ours(format!(
                    "{lost} rows written since the cutover hold values the old type {} cannot hold; rolling back would lose them",
                    r.old_type
                )));
            }
            let (not_null, default) = self.column_state(r, &r.column).await?;
            if default.is_some() {
                self.default_is_built_in(r, &r.column).await?;
            }
            if not_null {
                self.not_null_check(settings, r, &r.old_column(), bg)
                    .await?;
            }
            // Keys and unique constraints move back: first twins on the old
            // column; the foreign keys that reference the column's unique
            // indexes move with them.
            let constrained: Vec<&Twin> = r
                .indexes
                .iter()
                .filter(|tw| tw.constraint.is_some())
                .collect();
            let current = self.indexes_on(r, &r.column).await?;
            // A partitioned table's are made again level by level (see `key_tree`).
            let mut keys_made = Vec::new();
            let mut part_marks = Vec::new();
            for tw in &constrained {
                let behind: Vec<sql::OldIndex> = current
                    .iter()
                    .filter(|i| i.constraint.as_ref().is_some_and(|c| c.0 == tw.name))
                    .cloned()
                    .collect();
                let back = n.old_index(tw.oid);
                self.build_twins(settings, r, &behind, &r.column, &r.old_column(), |_| {
                    back.clone()
                })
                .await?;
                for i in behind.iter().filter(|_| r.partitioned) {
                    let (made, marks) = self.key_tree(r, i, |_| back.clone()).await?;
                    keys_made.extend(made);
                    part_marks.extend(marks);
                    valid.push(crate::sql::ident::qualified(&r.schema, &tw.name));
                }
            }
            let mut fks = Vec::new();
            for unique in current.iter().filter(|i| i.unique) {
                fks.extend(self.foreign_keys(r, unique.oid).await?);
            }
            let sequences = self.owned_sequences(r, &r.column).await?;
            let marks = self.column_marks(r, &r.column, &r.column).await?;
            body.push(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote(&n.reverse_trigger),
                r.qualified()
            ));
            body.extend(fks.iter().map(ForeignKey::drop_sql));
            for tw in &constrained {
                body.push(format!("{t} DROP CONSTRAINT {}", quote(&tw.name)));
            }
            // The old indexes take their names back; the twins go with the new column.
            for tw in r.indexes.iter().filter(|tw| tw.constraint.is_none()) {
                body.extend(pass_name(r, tw, &n.new_index(tw.oid), &n.old_index(tw.oid)));
                // A partitioned index's partitions' too.
                let twin = current.iter().find(|i| i.name == tw.name);
                if let Some(twin) = twin.filter(|_| r.partitioned) {
                    let (renames, marks) = self
                        .untwin_tree(tw.oid, twin.oid, |oid| n.new_index(oid))
                        .await?;
                    body.extend(renames);
                    part_marks.extend(marks);
                }
            }
            let (leaf_renames, leaf_marks) = self.leaf_unswap(r).await?;
            body.extend(leaf_renames);
            part_marks.extend(leaf_marks);
            // The CHECK constraints and foreign keys go back to the old column
            // (their text names `amount`, which it is again): NOT VALID in the
            // window, validated after it.
            let mut readd = Vec::new();
            let mut keys_after = Vec::new();
            for (oid, name, foreign) in &r.checks {
                if r.partitioned && *foreign {
                    // See `part_keys`: twins on the old column's leaves first.
                    if let Some((before, after, leaf)) =
                        self.key_back(settings, r, bg, name).await?
                    {
                        body.extend(before);
                        keys_after.extend(after);
                        leaf_keys.push(leaf);
                    }
                    continue;
                }
                // By the twin's oid: renamed since, it keeps its new name; one
                // dropped since stays dropped.
                let Some(name) = self.constraint_name(r, *oid).await? else {
                    continue;
                };
                body.push(format!("{t} DROP CONSTRAINT {}", quote(&name)));
                if let Some((def, valid)) = self.constraint_def(r, &name).await? {
                    readd.push((name, def, valid, *foreign));
                }
            }
            body.push(format!("{t} RENAME COLUMN {c} TO {new}"));
            body.push(format!("{t} RENAME COLUMN {old} TO {c}"));
            body.extend(keys_after);
            for (name, def, _, _) in readd.iter().filter(|x| !x.3) {
                body.push(format!(
                    "{t} ADD CONSTRAINT {} {def} NOT VALID",
                    quote(name)
                ));
            }
            if readd.iter().any(|x| x.3) {
                // A foreign key is the owner's to add (REFERENCES on the other table).
                body.push(format!("SET LOCAL ROLE {}", self.owner_of(r).await?));
                for (name, def, _, _) in readd.iter().filter(|x| x.3) {
                    body.push(format!(
                        "{t} ADD CONSTRAINT {} {def} NOT VALID",
                        quote(name)
                    ));
                }
                body.push("RESET ROLE".to_string());
            }
            readded = readd;
            for seq in &sequences {
                body.push(format!(
                    "ALTER SEQUENCE {seq} OWNED BY {}.{c}",
                    r.qualified()
                ));
            }
            if let Some(default) = &default {
                body.push(format!("{t} ALTER COLUMN {new} DROP DEFAULT"));
                body.push(format!("{t} ALTER COLUMN {c} SET DEFAULT {default}"));
            }
            if not_null {
                body.push(format!("{t} ALTER COLUMN {c} SET NOT NULL"));
            }
            for tw in constrained.iter().filter(|_| !r.partitioned) {
                body.extend(constraint_on(&t, tw, &n.old_index(tw.oid)));
            }
            body.extend(keys_made);
            body.extend(fks.iter().map(ForeignKey::add_sql));
            // What was dropped and added again keeps its comment (the plain
            // old indexes kept theirs).
            let mut named: Vec<(u32, String)> =
                readded.iter().map(|x| (r.table_oid, x.0.clone())).collect();
            named.extend(fks.iter().map(|f| (f.table_oid, f.name.clone())));
            named.extend(constrained.iter().map(|tw| (r.table_oid, tw.name.clone())));
            named.extend(
                r.checks
                    .iter()
                    .filter(|(_, _, foreign)| r.partitioned && *foreign)
                    .map(|(_, name, _)| (r.table_oid, name.clone())),
            );
            // A key's or unique constraint's index is built again too.
            let keyed: Vec<u32> = current
                .iter()
                .filter(|i| {
                    constrained
                        .iter()
                        .any(|tw| i.constraint.as_ref().is_some_and(|c| c.0 == tw.name))
                })
                .map(|i| i.oid)
                .collect();
            body.extend(self.comments(&keyed, &named).await?);
            for i in &current {
                body.extend(i.table_marks(&r.qualified()));
            }
            body.extend(part_marks);
            body.extend(marks.iter().cloned());
            column_marks = Some(marks);
            rollback_fks = fks.iter().map(|f| (f.table_oid, f.name.clone())).collect();
        } else {
            body.push(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote(&n.trigger),
                r.qualified()
            ));
        }
        body.push(format!(
            "{t} DROP CONSTRAINT IF EXISTS {}",
            quote(&n.not_null_check)
        ));
        // A fill of a column the client's transaction committed leaves it (with
        // what the application wrote into it since).
        if !r.column_committed {
            body.push(format!("{t} DROP COLUMN IF EXISTS {new}"));
        }
        let done = format!("{}{}", Self::done(Phase::RolledBack), r.id);
        // The keys that reference the column come back (their tables), and the
        // column's own keys on the dropped column go (the tables they reference).
        let dropped = match r.phase {
            Phase::CutOver => &r.column,
            _ => &r.new_column,
        };
        let mut linked = self.referenced_tables(r, &[dropped]).await?;
        linked.extend(rollback_fks.iter().map(|(oid, _)| *oid));
        if r.partitioned {
            // The new column's drop drops the leaves' twins of its keys.
            linked.extend(self.leaf_twin_keys(r).await?.into_iter().map(|k| k.1));
        }
        let expected = Expected {
            leaf_keys,
            valid,
            marks: column_marks,
            ..Default::default()
        };
        self.with_retries(
            settings,
            r,
            &body.join("; "),
            &done,
            bg,
            Some(&expected),
            Linked::DropsKey(linked),
        )
        .await?;
        for (name, _, _, foreign) in readded.iter().filter(|x| x.2) {
            let validated = match foreign {
                true => {
                    self.validate_foreign_keys(settings, &[(r.table_oid, name.clone())])
                        .await
                }
                // Its text as added: the new type printed it, the old reads it.
                false => match self.constraint_def(r, name).await {
                    Ok(Some((now, _))) => self.validate_check(r, name, &now, &r.column).await,
                    Ok(None) => Err(ours(format!("{} is gone", quote(name)))),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = validated {
                let left = format!(
                    "rolled back, but {} is still NOT VALID ({}): run ALTER TABLE … VALIDATE CONSTRAINT",
                    quote(name),
                    e.reason
                );
                tracing::warn!(target: "pgshift::rollout", rollout = r.id, "{left}");
                let _ = self.note_error(&left).await;
            }
        }
        // The rollout is over: nothing comes back for these, so a few tries now.
        let mut tries = 0;
        while let Err(e) = self.validate_foreign_keys(settings, &rollback_fks).await {
            tries += 1;
            if tries == 3 {
                let names: Vec<&str> = rollback_fks.iter().map(|(_, n)| n.as_str()).collect();
                let left = format!(
                    "rolled back, but foreign keys {} are still NOT VALID ({}): run ALTER TABLE … VALIDATE CONSTRAINT",
                    names.join(", "),
                    e.reason
                );
                tracing::warn!(target: "pgshift::rollout", rollout = r.id, "{left}");
                let _ = self.note_error(&left).await;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.drop_leftover_functions(r).await;
        tracing::info!(target: "pgshift::rollout", rollout = r.id, "rolled back: {}", r.describe());
        self.over();
        Ok(())
    }
}

/// The batch size, grown or shrunk toward the target duration.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub rows: u64,
}

/// The most and the fewest rows of a batch: an operator's `ROLLOUT BATCH`, or
/// `rollout.batch_rows`; never fewer than one, the fewest never above the most.
fn batch_limits(r: &Rollout, conf: &crate::config::Rollout) -> (u64, u64) {
    let most = r
        .batch_rows
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(conf.batch_rows)
        .max(1);
    (most, conf.min_batch_rows.clamp(1, most))
}

impl Pace {
    pub fn next(self, took: Duration, target: Duration, min: u64, max: u64) -> Pace {
        let took = took.as_secs_f64().max(0.001);
        let ideal = self.rows as f64 * target.as_secs_f64() / took;
        let rows = ideal
            .min(self.rows as f64 * 2.0)
            .max(self.rows as f64 / 4.0);
        Pace {
            rows: (rows as u64).clamp(min, max),
        }
    }
}

/// One backfill or verify batch; `Ok(None)` when the pass is over.
async fn batch(
    d: &Driver,
    r: &Rollout,
    keys: &[(String, String)],
    rows: u64,
    lock_ms: u64,
    verify: bool,
    bound: &mut Option<Vec<String>>,
) -> Result<Option<u64>, StepError> {
    let names = r.names();
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = '60s'; \
         LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE",
        literal(&format!("{lock_ms}ms")),
        r.target()
    );
    d.client.batch_execute(&begin).await?;
    let result = async {
        // Under this lock nobody can add a trigger, rule, index or constraint,
        // or rename the table: what was checked is what the UPDATE runs.
        let function = format!("{}()", names.function);
        d.check_locked(r, &names.trigger, &function, &r.new_column)
            .await?;
        if r.fill {
            // Ages stop being exact once the cluster's ids could come round.
            let next: i64 = d
                .client
                .query_one(super::fill::NEXT_XID, &[])
                .await?
                .get(0);
            if next >= super::fill::XIDS_FOR_AGES_END {
                let then = match r.column_committed {
                    true => format!("ROLLOUT ROLLBACK {} stops the fill and keeps the column; an UPDATE … SET {} = DEFAULT WHERE {} IS NULL fills the rest", r.id, quote(&r.column), quote(&r.column)),
                    false => format!("ROLLOUT ROLLBACK {} removes the column, as if the ALTER had not run; run the ALTER again and pgshift fills it in-band", r.id),
                };
                return Err(ours(format!(
                    "the cluster has used {next} transaction ids: past 2^31 the age of a row frozen long ago no longer tells it from the application's; {then}"
                )));
            }
        }
        // Without it, writes that bypass pgshift's rewrite leave the new
        // column behind, and nothing a batch does makes that good.
        if !d.trigger_exists(r, &names.trigger).await? {
            return Err(ours(format!(
                "its trigger {} on {} is gone (dropped by someone): writes are no longer copied; ROLLOUT ROLLBACK {} removes what is left",
                quote(&names.trigger),
                r.qualified(),
                r.id
            )));
        }
        if keys.is_empty() {
            return walk_pages(d, r, rows, verify, bound).await;
        }
        let after = r.last_key.clone();
        if after.is_none() || bound.is_none() {
            // A pass starts (or this driver took one over): it walks up to the
            // last key there is now.
            *bound = d
                .client
                .query_opt(&sql::last_key(r, keys), &[])
                .await?
                .map(|row| key_values(&row, keys.len()))
                .transpose()?;
        }
        let Some(last) = bound.as_ref() else {
            return Ok((false, 0)); // an empty table
        };
        let mut range: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(a) = &after {
            range.extend(a.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)));
        }
        range.extend(last.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)));
        let end = d
            .client
            .query_opt(&sql::batch_end(r, keys, after.is_some(), rows), &range)
            .await?
            .map(|row| key_values(&row, keys.len()))
            .transpose()?;
        // The pass ends with the batch that reaches its last key.
        let more = end.as_ref().is_some_and(|e| e != last);
        let upper = end.unwrap_or_else(|| last.clone());
        let mut fill_params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(a) = &after {
            fill_params.extend(a.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)));
        }
        fill_params.extend(upper.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)));
        let fill = d.prepared(&sql::fill(r, keys, after.is_some())).await?;
        let changed = d.client.execute(&fill, &fill_params).await?;
        let counter = if verify { "mismatches = COALESCE(mismatches, 0) + $3, repaired = COALESCE(repaired, 0) + $3" } else { "rows_done = rows_done + $3" };
        let checkpoint = d
            .prepared(&format!(
                "UPDATE pgshift.rollouts SET last_key = $2, {counter}, updated = pg_catalog.now(), heartbeat = pg_catalog.now() WHERE id = $1"
            ))
            .await?;
        // The checkpoint after the last batch is NULL: the next pass starts over.
        let upper = more.then_some(upper);
        d.client
            .execute(&checkpoint, &[&r.id, &upper, &(changed as i64)])
            .await?;
        Ok((more, changed))
    }
    .await;
    match result {
        Ok((more, changed)) => {
            d.client.batch_execute("COMMIT").await?;
            Ok(more.then_some(changed))
        }
        Err(e) => {
            let _ = d.client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// One batch of a table without a primary key, under the batch's lock: pages
/// from the checkpoint (`[next page, file node]`) on, as many as hold about
/// `rows` rows, up to the pages the table had when the pass began (`bound`:
/// every row after them was written with the mirror on). A row version the
/// mirror did not write stays on its page until it is updated (then the mirror
/// writes it) or the table is rewritten (VACUUM FULL, CLUSTER: a new file node,
/// and the pass starts over). Returns whether the pass goes on, and the rows
/// set.
async fn walk_pages(
    d: &Driver,
    r: &Rollout,
    rows: u64,
    verify: bool,
    bound: &mut Option<Vec<String>>,
) -> Result<(bool, u64), StepError> {
    let now = d
        .client
        .query_one(&d.prepared(sql::PAGES).await?, &[&r.table_oid.to_string()])
        .await?;
    let number = |i: usize| -> Result<u64, StepError> {
        now.get::<_, String>(i)
            .parse()
            .map_err(|_| ours("the table's size did not read as a number"))
    };
    let (pages, per_page, node) = (number(0)?, number(1)?.max(1), now.get::<_, String>(2));
    let start = match r.last_key.as_deref() {
        Some([next, from]) if *from == node => next
            .parse::<u64>()
            .map_err(|_| ours("the checkpoint did not read as a page"))?,
        // Not begun, or the table was rewritten since: from its first page.
        _ => {
            *bound = None;
            0
        }
    };
    if start == 0 || bound.is_none() {
        *bound = Some(vec![pages.to_string()]);
    }
    let last: u64 = bound
        .as_ref()
        .and_then(|b| b.first())
        .and_then(|p| p.parse().ok())
        .unwrap_or(pages);
    if start >= last {
        return Ok((false, 0));
    }
    let end = (start + rows.div_ceil(per_page).max(1)).min(last);
    let fill = d.prepared(&sql::fill_pages(r)).await?;
    let changed = d
        .client
        .execute(&fill, &[&start.to_string(), &end.to_string()])
        .await?;
    let more = end < last;
    let counter = if verify {
        "mismatches = COALESCE(mismatches, 0) + $3, repaired = COALESCE(repaired, 0) + $3"
    } else {
        "rows_done = rows_done + $3"
    };
    let checkpoint = d
        .prepared(&format!(
            "UPDATE pgshift.rollouts SET last_key = $2, {counter}, updated = pg_catalog.now(), heartbeat = pg_catalog.now() WHERE id = $1"
        ))
        .await?;
    let next = more.then(|| vec![end.to_string(), node]);
    d.client
        .execute(&checkpoint, &[&r.id, &next, &(changed as i64)])
        .await?;
    Ok((more, changed))
}

/// True for a window (its `done`) that moves the rollout to another phase:
/// a cutover, finish or rollback.
fn changes_phase(done: &str) -> bool {
    done.starts_with("UPDATE pgshift.rollouts SET phase")
}

/// What the cutover's lock window expects to find as it was read: the old
/// column's indexes (oids) and the foreign keys on them (table, name, definition).
/// A rollback's window uses only `leaf_keys`, `valid` and `marks`.
#[derive(Default)]
pub struct Expected {
    /// The partitions' attachments the verify pass saw (or checked since): one
    /// attached since has rows no pass compared.
    verified: Vec<(u32, u32)>,
    /// Partitioned indexes the window makes, by their names once it is done:
    /// valid only if every partition had its twin.
    valid: Vec<String>,
    /// Foreign keys' twins every leaf partition must have, validated, as
    /// pgshift made them: (name, definition).
    leaf_keys: Vec<(String, String)>,
    /// The cutover's window (a rollback's checks only `leaf_keys`).
    cutover: bool,
    /// What the column carries (privileges, comment, settings), as read for
    /// the window to give it to the other column: a GRANT or REVOKE since
    /// (the window may wait out long transactions, then retries the same
    /// statements) would be undone.
    marks: Option<Vec<String>>,
    indexes: Vec<u32>,
    /// The leaf partitions' own indexes on the old column (oid, name), by oid.
    leaf_indexes: Vec<(u32, String)>,
    foreign_keys: Vec<(u32, String, String)>,
    /// The old column's CHECK constraints and foreign keys, as read.
    checks: Vec<super::checks::Found>,
    /// The names of the CHECK constraints and foreign keys on the new column:
    /// the twins (and pgshift's NOT NULL check), sorted.
    on_new: Vec<String>,
}

/// Which mirror function a rollout needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror {
    /// Before the cutover: a value that does not convert fails the write.
    Strict,
    /// The rollout failed: a value that does not convert stores NULL.
    Lenient,
    /// From the cutover to the finish.
    AfterCutover,
}

/// A key read as text, one value per key column.
fn key_values(row: &tokio_postgres::Row, n: usize) -> Result<Vec<String>, StepError> {
    (0..n)
        .map(|i| row.get::<_, Option<String>>(i))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| ours("a primary key value is NULL"))
}

/// Drives the rollout until it is over, the connection breaks or pgshift stops.
/// `entered`: the rollout's registration, when the caller made it.
pub async fn run(
    d: Driver,
    bg: Background,
    database: String,
    running: Arc<Running>,
    entered: Option<super::Entered>,
) {
    let _registered = entered.or_else(|| running.enter(&database, d.id));
    // A lock window still announced was a driver's that died in it: the other
    // proxies' sessions need not wait for it any longer.
    if let Err(e) = d
        .client
        .execute(
            "UPDATE pgshift.rollouts SET lock_window = NULL WHERE id = $1 AND lock_window IS NOT NULL",
            &[&d.id],
        )
        .await
    {
        tracing::debug!(target: "pgshift::rollout", rollout = d.id, error = %e, "announced window not cleared");
    }
    let mut d = d;
    d.hold = Some((running.clone(), database.clone()));
    tracing::info!(target: "pgshift::rollout", rollout = d.id, database, "driving rollout");
    let mut pace: Option<Pace> = None;
    // Measured before this driver's first batch; Some(None): nothing to govern.
    let mut governor: Option<Option<Governor>> = None;
    let mut passes = 0u32;
    // A verify pass completed just now, in this driver: the cutover may follow,
    // if the table's partitions are those the pass began with.
    let mut verified: Option<Vec<(u32, u32)>> = None;
    // The partitions' attachments when the pass under way began, if this
    // driver began it.
    let mut pass_from: Option<Vec<(u32, u32)>> = None;
    // An automatic cutover or finish failed for a reason a retry cannot mend (the
    // column gained a user, say): no more automatic attempts until an operator asks.
    let mut auto_stopped = false;
    // The foreign keys a cut-over rollout moved are valid (this driver saw it).
    let mut fks_valid = false;
    let mut backoff_until: Option<Instant> = None;
    // The key's columns and types: the batch's check under its lock refuses a
    // changed primary key, so they are read once.
    let mut keys: Option<Vec<(String, String)>> = None;
    // The last key of the pass under way.
    let mut bound: Option<Vec<String>> = None;
    let mut replicas = Replicas::default();
    loop {
        let settings = bg.settings();
        let conf = &settings.config.rollout;
        let r = match d.load().await {
            Ok(mut r) => {
                if !r.phase.is_over() {
                    if let Err(e) = d.refresh(&mut r).await {
                        tracing::debug!(target: "pgshift::rollout", rollout = d.id, error = %e, "table not found by oid");
                    }
                }
                running.describe(&database, &r, true);
                r
            }
            Err(e) => {
                tracing::warn!(target: "pgshift::rollout", rollout = d.id, error = %e, "rollout driver stops");
                return;
            }
        };
        if r.phase.is_over() {
            return;
        }
        if r.request.is_some() {
            auto_stopped = false;
        }
        let outcome: Result<(), StepError> = async {
            match r.request {
                Some(Request::Rollback) => return d.rollback(&settings, &r, &bg).await,
                Some(Request::Pause) => {
                    d.client.execute("UPDATE pgshift.rollouts SET paused = true, request = NULL WHERE id = $1", &[&d.id]).await?;
                    return Ok(());
                }
                Some(Request::Resume) => {
                    d.client.execute("UPDATE pgshift.rollouts SET paused = false, request = NULL WHERE id = $1", &[&d.id]).await?;
                    if r.phase == Phase::Failed {
                        d.install_function(&r, Mirror::Strict).await?;
                        d.set_phase(Phase::Backfilling, None).await?;
                    }
                    return Ok(());
                }
                Some(Request::Verify) if r.phase == Phase::Verified => {
                    d.client.execute("UPDATE pgshift.rollouts SET phase = 'verifying', last_key = NULL, mismatches = 0, request = NULL WHERE id = $1", &[&d.id]).await?;
                    passes = 0;
                    return Ok(());
                }
                Some(Request::Verify) => {
                    d.clear_request().await?;
                    return Ok(());
                }
                _ => {}
            }
            if backoff_until.is_some_and(|t| Instant::now() < t) {
                return idle(&bg).await;
            }
            match r.phase {
                Phase::Planned => {
                    // The start did not finish: the expand committed or not at
                    // all. Its column without its trigger: someone dropped the
                    // trigger since, and the rollback removes what is left.
                    if d.trigger_exists(&r, &r.names().trigger).await? {
                        d.expanded(&r).await
                    } else if !r.column_committed && d.column_exists(&r, &r.new_column).await? {
                        let why = format!("its trigger {} was dropped after it started: ROLLOUT ROLLBACK {} removes its column", quote(&r.names().trigger), r.id);
                        d.set_phase(Phase::Failed, Some(&why)).await
                    } else {
                        d.abandon(&r, "pgshift stopped while starting it").await
                    }
                }
                Phase::Backfilling | Phase::Verifying if r.paused => idle(&bg).await,
                Phase::Backfilling | Phase::Verifying
                    if replicas.behind(&d, conf.max_replica_lag_bytes).await? =>
                {
                    idle(&bg).await
                }
                Phase::Backfilling | Phase::Verifying if r.fill && r.fill_before.is_none() => {
                    // Which rows are old is not known: a batch would take every
                    // row for the application's and fill none.
                    Err(ours(format!("rollout {} does not know which transaction added its column", r.id)))
                }
                Phase::Backfilling | Phase::Verifying => {
                    let verify = r.phase == Phase::Verifying;
                    if verify && r.last_key.is_none() {
                        pass_from = Some(r.attachments.clone());
                    }
                    if keys.is_none() {
                        keys = Some(key_types(&d, &r).await?);
                    }
                    let keys = keys.clone().unwrap_or_default();
                    if governor.is_none() {
                        governor = Some(d.governor(conf.latency_factor, &bg).await);
                    }
                    let (most, least) = batch_limits(&r, conf);
                    let p = pace.unwrap_or(Pace { rows: most.min(1000) });
                    let p = Pace { rows: p.rows.clamp(least, most) };
                    let lock_ms = settings.config.ddl.lock_timeout_ms.min(1000);
                    let started = Instant::now();
                    match batch(&d, &r, &keys, p.rows, lock_ms, verify, &mut bound).await {
                        Ok(Some(_)) => {
                            let took = started.elapsed();
                            pace = Some(p.next(took, Duration::from_millis(conf.batch_target_ms), least, most));
                            let extra = match (governor.as_mut(), &d.hold) {
                                (Some(Some(g)), Some((running, _))) => {
                                    let before = g.extra();
                                    let cap = took * super::latency::PAUSE_PER_BATCH;
                                    let extra = g.next(running.latency(), Instant::now(), cap);
                                    if extra != before {
                                        let ms = extra.as_millis() as i64;
                                        d.client.execute("UPDATE pgshift.rollouts SET throttle_ms = $2 WHERE id = $1", &[&d.id, &ms]).await?;
                                    }
                                    if extra.is_zero() != before.is_zero() {
                                        tracing::info!(target: "pgshift::rollout", rollout = d.id, pause_ms = extra.as_millis() as u64, target_p99_us = g.target().as_micros() as u64, "backfill pace set by the application's latency");
                                    }
                                    extra
                                }
                                _ => Duration::ZERO,
                            };
                            throttle(&r, p.rows, took, conf.pause_ms, extra, &bg).await;
                            Ok(())
                        }
                        Ok(None) if !verify => {
                            d.client.execute("UPDATE pgshift.rollouts SET phase = 'verifying', last_key = NULL, mismatches = 0, updated = pg_catalog.now() WHERE id = $1", &[&d.id]).await?;
                            passes = 0;
                            Ok(())
                        }
                        Ok(None) => {
                            let r = d.load().await?;
                            passes += 1;
                            if r.mismatches.unwrap_or(0) == 0 {
                                d.set_phase(Phase::Verified, None).await?;
                                verified = pass_from.take();
                                tracing::info!(target: "pgshift::rollout", rollout = d.id, "verified: every row's new value matches");
                            } else if passes >= MAX_VERIFY_PASSES {
                                d.install_function(&r, Mirror::Lenient).await?;
                                d.set_phase(Phase::Failed, Some(&format!("verify repaired rows in {passes} passes in a row: something writes the table without the mirror"))).await?;
                            } else {
                                d.client.execute("UPDATE pgshift.rollouts SET last_key = NULL, mismatches = 0 WHERE id = $1", &[&d.id]).await?;
                            }
                            Ok(())
                        }
                        Err(e) if e.retry => {
                            tracing::debug!(target: "pgshift::rollout", rollout = d.id, error = %e, rows = p.rows, "batch retried");
                            pace = Some(Pace { rows: (p.rows / 2).max(least) });
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                // A fill has nothing to swap: the trigger goes once verified.
                Phase::Verified if r.fill => d.finish(&settings, &r, &bg).await,
                Phase::Verified => {
                    let auto = conf.cutover == When::Auto && !auto_stopped;
                    if auto || r.request == Some(Request::Cutover) {
                        d.refuse_detaching(&r).await?;
                        let mut partitions = match verified.take() {
                            Some(v) => v,
                            None => return d.verify_again(&mut passes).await,
                        };
                        let attached = attached_since(&r, &partitions);
                        if !attached.is_empty() {
                            // Partitions came since the pass began, with rows of
                            // their own: checked on their own, or a whole pass.
                            let lock_ms = settings.config.ddl.lock_timeout_ms.min(1000);
                            if !d.attached_match(&r, &attached, lock_ms).await? {
                                return d.verify_again(&mut passes).await;
                            }
                            partitions.extend(attached.iter().map(|(_, a)| *a));
                        }
                        d.cutover(&settings, &r, &bg, partitions).await
                    } else {
                        idle(&bg).await
                    }
                }
                Phase::CutOver => {
                    if !fks_valid {
                        // Foreign keys the cutover added again NOT VALID: until
                        // they are valid there is no finish (retried as any step).
                        d.validate_foreign_keys(&settings, &r.foreign_keys).await?;
                        fks_valid = true;
                    }
                    let auto = conf.finish == When::Auto && !auto_stopped;
                    if auto || r.request == Some(Request::Finish) {
                        d.finish(&settings, &r, &bg).await
                    } else {
                        idle(&bg).await
                    }
                }
                Phase::Failed => idle(&bg).await,
                Phase::Finished | Phase::RolledBack => Ok(()),
            }
        }
        .await;
        match outcome {
            Ok(()) => backoff_until = None,
            Err(e) if e.broken => {
                tracing::warn!(target: "pgshift::rollout", rollout = d.id, error = %e, "rollout driver lost its connection");
                return;
            }
            Err(e) if e.retry => {
                // A lock window not granted within the deadline: say so, try later.
                let _ = d.note_error(&format!("will try again: {e}")).await;
                backoff_until = Some(Instant::now() + Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(target: "pgshift::rollout", rollout = d.id, error = %e, "rollout failed");
                let _ = d.clear_request().await;
                if !matches!(r.phase, Phase::CutOver | Phase::Verified) {
                    // The application must not pay for a rollout that stopped:
                    // writes the old type takes go on (the mirror stores NULL).
                    if let Err(e) = d.install_function(&r, Mirror::Lenient).await {
                        tracing::warn!(target: "pgshift::rollout", rollout = d.id, error = %e, "the mirror stays strict");
                    }
                }
                let (phase, reason) = if matches!(r.phase, Phase::CutOver | Phase::Verified) {
                    auto_stopped = true;
                    let next = match r.phase {
                        _ if r.request == Some(Request::Rollback) => "rollback",
                        Phase::Verified => "cutover",
                        _ => "finish",
                    };
                    (
                        r.phase,
                        format!("{}; ask for the {next} again once that is mended", e.reason),
                    )
                } else {
                    (Phase::Failed, d.explained(&r, &e.reason).await)
                };
                let _ = d.set_phase(phase, Some(&reason)).await;
                backoff_until = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        if bg.is_stopping() {
            return;
        }
    }
}

/// What the driver last saw of the replicas.
#[derive(Debug, Default)]
struct Replicas {
    /// Bytes the furthest replica had left to replay, as last written to the
    /// rollout's row.
    lag: Option<i64>,
    /// The backfill waits for them.
    waiting: bool,
    /// Said once: the service role cannot see their positions.
    blind: bool,
}

/// Bytes of WAL the furthest-behind WAL sender has yet to see replayed, and
/// the count of senders, and of those whose position the role may see
/// (pg_read_all_stats).
const REPLICA_LAG: &str = "
SELECT pg_catalog.max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.replay_lsn))::pg_catalog.int8,
       pg_catalog.count(*), pg_catalog.count(s.replay_lsn)
  FROM pg_catalog.pg_stat_replication s";

impl Replicas {
    /// True while a replica is more than `max` bytes behind (0: never looks).
    /// The lag goes to the rollout's row when it changes by 64 KiB or more, or
    /// the backfill starts or stops waiting.
    async fn behind(&mut self, d: &Driver, max: u64) -> Result<bool, StepError> {
        if max == 0 {
            return Ok(false);
        }
        let row = d
            .client
            .query_one(&d.prepared(REPLICA_LAG).await?, &[])
            .await?;
        let (lag, senders, visible): (Option<i64>, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if senders > visible && !self.blind {
            self.blind = true;
            tracing::warn!(target: "pgshift::rollout", rollout = d.id, "the service role cannot see how far replicas are behind (GRANT pg_read_all_stats TO it): the backfill does not wait for them");
        }
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let waiting = lag.is_some_and(|l| l > max);
        let moved = match (lag, self.lag) {
            (Some(a), Some(b)) => (a - b).abs() >= 64 << 10,
            (a, b) => a.is_some() != b.is_some(),
        };
        if moved || waiting != self.waiting {
            d.client
                .execute(
                    "UPDATE pgshift.rollouts SET replica_lag = $2 WHERE id = $1",
                    &[&d.id, &lag],
                )
                .await?;
            self.lag = lag;
        }
        if waiting != self.waiting {
            self.waiting = waiting;
            match waiting {
                true => {
                    tracing::info!(target: "pgshift::rollout", rollout = d.id, lag_bytes = lag, max_bytes = max, "the backfill waits for a replica to catch up")
                }
                false => {
                    tracing::info!(target: "pgshift::rollout", rollout = d.id, lag_bytes = lag, "replicas caught up: the backfill goes on")
                }
            }
        }
        Ok(waiting)
    }
}

async fn idle(bg: &Background) -> Result<(), StepError> {
    tokio::select! {
        _ = tokio::time::sleep(IDLE_POLL) => {}
        _ = bg.stopped() => {}
    }
    Ok(())
}

/// Turns the governor's baseline wants (it waits up to 3 s for them).
const MIN_BASELINE_TURNS: u64 = 200;

/// Keeps the rate under the rollout's rows per second, plus the fixed pause and
/// the governor's.
async fn throttle(
    r: &Rollout,
    rows: u64,
    took: Duration,
    pause_ms: u64,
    extra: Duration,
    bg: &Background,
) {
    let mut wait = Duration::from_millis(pause_ms) + extra;
    if r.rows_per_second > 0 {
        let should = Duration::from_secs_f64(rows as f64 / r.rows_per_second as f64);
        wait = wait.max(should.saturating_sub(took));
    }
    if !wait.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = bg.stopped() => {}
        }
    }
}

async fn key_types(d: &Driver, r: &Rollout) -> Result<Vec<(String, String)>, StepError> {
    let rows = d
        .client
        .query(
            super::start::VARS,
            &[&r.table_oid.to_string(), &r.key_columns],
        )
        .await?;
    let mut keys: Vec<(String, String)> = Vec::new();
    for k in &r.key_columns {
        let ty = rows
            .iter()
            .find(|x| x.get::<_, String>(0) == *k)
            .map(|x| x.get(1))
            .ok_or_else(|| ours(format!("key column {} is gone", quote(k))))?;
        keys.push((k.clone(), ty));
    }
    Ok(keys)
}

/// Waits for rollout `id` in `database` to need a driver here: takes its lock when
/// the proxy driving it goes, then drives it.
pub async fn standby(
    settings: Arc<Settings>,
    database: String,
    id: i64,
    bg: Background,
    running: Arc<Running>,
    entered: Option<super::Entered>,
) {
    let Some(registered) = entered.or_else(|| running.enter(&database, id)) else {
        return;
    };
    let rt = tokio::runtime::Handle::current();
    loop {
        let client = match service::connect(&settings, &database, &rt).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(target: "pgshift::rollout", rollout = id, error = %e, "standby cannot connect");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = bg.stopped() => return,
                }
            }
        };
        let d = Driver {
            client,
            id,
            database: database.clone(),
            cache: Default::default(),
            hold: None,
        };
        loop {
            match d.load().await {
                Ok(r) if r.phase.is_over() => return,
                Ok(r) => running.describe(&database, &r, false),
                Err(e) if e.broken => break,
                Err(_) => return,
            }
            match d.try_lock().await {
                Ok(true) => {
                    return Box::pin(run(d, bg, database, running, Some(registered))).await;
                }
                Ok(false) => {}
                Err(e) if e.broken => break,
                Err(_) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = bg.stopped() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{batch_limits, Pace};
    use std::time::Duration;

    #[test]
    fn an_operators_batch_size_bounds_the_pace() {
        let conf = crate::config::Rollout {
            batch_rows: 5_000,
            min_batch_rows: 100,
            ..Default::default()
        };
        let mut r = crate::rollout::sql::tests::sample();
        assert_eq!(batch_limits(&r, &conf), (5_000, 100));
        r.batch_rows = Some(50);
        let (most, least) = batch_limits(&r, &conf);
        assert_eq!((most, least), (50, 50));
        // A fast batch grows, but not past the operator's limit.
        let p = Pace { rows: 50 }.next(
            Duration::from_millis(1),
            Duration::from_millis(50),
            least,
            most,
        );
        assert_eq!(p.rows, 50);
        r.batch_rows = Some(0);
        assert_eq!(batch_limits(&r, &conf), (1, 1));
    }
}
