//! Several proxies in front of one database. A lock window that changes what a
//! table returns (the expand, the cutover, a rollback, the finish) must be seen
//! by every proxy's sessions, not only by those of the proxy that drives it:
//! otherwise a session of another proxy runs a statement it prepared before the
//! change and gets "cached plan must not change result type", or reads pgshift's
//! column.
//!
//! So each proxy with a session open to a database runs a watcher there: every
//! [`TICK`] it reads the rollouts whose lock window is announced
//! (`pgshift.rollouts.lock_window`), holds its own sessions for each (the same
//! [`Swap`] the driving proxy opens for its sessions) and says so in its
//! heartbeat row (`pgshift.proxies.holding`). The proxy about to open a window
//! announces it and waits until every live proxy (a heartbeat younger than
//! [`LIVE`]) holds for it, at most [`ACK_WAIT`]; without every answer the
//! attempt does not happen (it is retried like a lock not granted). The phase
//! change commits with the announcement cleared; each watcher then reads the
//! rollout again, so its sessions renew their statements for the new shape, and
//! lets them go. A proxy that stops answering is not waited for once its
//! heartbeat is older than [`LIVE`]; a window held longer than [`HOLD_MAX`] is
//! let go (its driver died mid-window).

use super::driver::{ours, StepError};
use super::model::{Rollout, COLUMNS};
use super::{Running, Swap};
use crate::engine::book::Book;
use crate::engine::Background;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::Client;

/// How often a watcher reads the announced windows.
const TICK: Duration = Duration::from_millis(25);
/// A proxy whose heartbeat is older than this is not waited for.
const LIVE: &str = "2 seconds";
/// How often a watcher writes its heartbeat when nothing changes.
const BEAT: Duration = Duration::from_millis(500);
/// The longest an announcement waits for every live proxy to hold.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// The longest a watcher holds its sessions for one window: the announcement's
/// wait, the driver's wait for turns under way, and one lock attempt fit in it.
const HOLD_MAX: Duration = Duration::from_secs(4);
/// A watcher whose proxy has had no session open to the database this long stops.
const IDLE_STOP: Duration = Duration::from_secs(30);

/// This process's name in `pgshift.proxies`: unique per [`Running`] (tests run
/// several proxies in one process).
#[derive(Debug)]
pub struct Me(String);

impl Default for Me {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Me(format!(
            "pid {} at {started} #{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

/// What a proxy writes in `holding` for window `window` of rollout `id`.
fn tag(id: i64, window: i64) -> String {
    format!("{id}:{window}")
}

/// An announced window; the caller clears it (the phase change's commit, or
/// [`Announced::withdraw`]).
pub struct Announced {
    running: Arc<Running>,
    key: (String, i64),
    pub window: i64,
}

impl Drop for Announced {
    fn drop(&mut self) {
        let mut announced = self
            .running
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(i) = announced.iter().position(|k| *k == self.key) {
            announced.remove(i);
        }
    }
}

impl Announced {
    /// Clears the announcement: the attempt did not happen, or failed.
    pub async fn withdraw(self, client: &Client) {
        let cleared = client
            .execute(
                "UPDATE pgshift.rollouts SET lock_window = NULL WHERE id = $1 AND lock_window = $2",
                &[&self.key.1, &self.window],
            )
            .await;
        if let Err(e) = cleared {
            tracing::warn!(target: "pgshift::rollout", rollout = self.key.1, error = %e, "a lock window's announcement stays until the next phase change");
        }
    }
}

/// Announces a lock window on rollout `id` and waits until every other live
/// proxy holds its sessions for it (a retryable error after [`ACK_WAIT`]).
pub async fn announce(
    client: &Client,
    running: &Arc<Running>,
    database: &str,
    id: i64,
) -> Result<Announced, StepError> {
    let window = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(1);
    running
        .announced
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((database.to_string(), id));
    let announced = Announced {
        running: running.clone(),
        key: (database.to_string(), id),
        window,
    };
    client
        .execute(
            "UPDATE pgshift.rollouts SET lock_window = $2 WHERE id = $1",
            &[&id, &window],
        )
        .await?;
    let waiting = format!(
        "SELECT COALESCE(pg_catalog.array_agg(p.proxy ORDER BY p.proxy), '{{}}') FROM pgshift.proxies p \
         WHERE p.proxy <> $1 AND p.heartbeat > pg_catalog.clock_timestamp() - interval '{LIVE}' \
         AND NOT (p.holding @> ARRAY[$2::text])"
    );
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        let missing: Vec<String> = client
            .query_one(&waiting, &[&running.me(), &tag(id, window)])
            .await?
            .get(0);
        if missing.is_empty() {
            return Ok(announced);
        }
        if Instant::now() >= deadline {
            announced.withdraw(client).await;
            return Err(StepError {
                reason: format!(
                    "other proxies did not hold their sessions for the lock window within {} ms: {}",
                    ACK_WAIT.as_millis(),
                    missing.join(", ")
                ),
                retry: true,
                broken: false,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Running {
    /// This process's name among the proxies.
    pub fn me(&self) -> &str {
        &self.me.0
    }

    fn announced_here(&self, database: &str, id: i64) -> bool {
        let announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        announced.iter().any(|(db, i)| db == database && *i == id)
    }

    /// Starts the watcher of `book`'s database unless one runs.
    pub fn watch(self: &Arc<Self>, book: Arc<Book>, bg: &Background) {
        {
            let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
            if watching.iter().any(|d| d == book.database()) {
                return;
            }
            watching.push(book.database().to_string());
        }
        bg.spawn(watcher(bg.clone(), book, self.clone()));
    }

    fn unwatch(&self, database: &str) {
        let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        watching.retain(|d| d != database);
    }
}

/// A window this proxy's sessions are held for.
struct Held {
    window: i64,
    _swap: Swap,
    since: Instant,
}

/// The announced windows, by rollout.
const OPEN: &str = "SELECT id, lock_window FROM pgshift.rollouts \
     WHERE lock_window IS NOT NULL AND phase NOT IN ('finished', 'rolled_back')";

/// Reads and writes through the database's checked service connection (the
/// schema is pgshift's, or nothing runs).
struct Look<'a> {
    book: &'a Book,
    bg: &'a Background,
}

impl Look<'_> {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StepError> {
        self.book
            .scan_query(&self.bg.settings(), self.bg.runtime(), sql, params)
            .await
            .map_err(|e| ours(e.to_string()))
    }

    async fn load(&self, id: i64) -> Result<Rollout, StepError> {
        let rows = self
            .query(
                &format!("SELECT {COLUMNS} FROM pgshift.rollouts WHERE id = $1"),
                &[&id],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| ours(format!("rollout {id} is gone")))?;
        Ok(Rollout::from_row(row))
    }
}

/// Watches the database while this proxy has sessions open there (see the
/// module). Until the database has pgshift's schema it looks once a second.
async fn watcher(bg: Background, book: Arc<Book>, running: Arc<Running>) {
    let database = book.database().to_string();
    let look = Look {
        book: &book,
        bg: &bg,
    };
    let mut held: HashMap<i64, Held> = HashMap::new();
    // Windows let go after HOLD_MAX: not held again.
    let mut expired: Vec<(i64, i64)> = Vec::new();
    let mut idle_since: Option<Instant> = None;
    let mut last_beat: Option<Instant> = None;
    loop {
        if running.has_sessions(&database) {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() > IDLE_STOP {
            let _ = look
                .query(
                    "DELETE FROM pgshift.proxies WHERE proxy = $1",
                    &[&running.me()],
                )
                .await;
            break;
        }
        let pause = match tick(&look, &database, &running, &mut held, &mut expired).await {
            Ok(changed) => {
                let due = match last_beat {
                    Some(t) => t.elapsed() >= BEAT,
                    None => true,
                };
                if changed || due {
                    let holding: Vec<String> =
                        held.iter().map(|(id, h)| tag(*id, h.window)).collect();
                    let beat = look
                        .query(
                            "INSERT INTO pgshift.proxies (proxy, heartbeat, holding) \
                             VALUES ($1, pg_catalog.clock_timestamp(), $2) ON CONFLICT (proxy) \
                             DO UPDATE SET heartbeat = EXCLUDED.heartbeat, holding = EXCLUDED.holding",
                            &[&running.me(), &holding],
                        )
                        .await;
                    if beat.is_ok() {
                        last_beat = Some(Instant::now());
                    }
                }
                match book.is_ready() {
                    true => TICK,
                    false => Duration::from_secs(1),
                }
            }
            Err(e) => {
                tracing::debug!(target: "pgshift::rollout", database, error = %e, "watcher waits");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = bg.stopped() => break,
        }
    }
    // Dropping the holds lets this proxy's sessions go.
    held.clear();
    running.unwatch(&database);
}

/// One look at the announced windows: holds new ones, lets go of closed ones.
/// True when what this proxy holds changed.
async fn tick(
    look: &Look<'_>,
    database: &str,
    running: &Arc<Running>,
    held: &mut HashMap<i64, Held>,
    expired: &mut Vec<(i64, i64)>,
) -> Result<bool, StepError> {
    let open: Vec<(i64, i64)> = look
        .query(OPEN, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut changed = false;
    let closed: Vec<i64> = held
        .iter()
        .filter(|(id, h)| !open.contains(&(**id, h.window)) || h.since.elapsed() > HOLD_MAX)
        .map(|(id, _)| *id)
        .collect();
    for id in closed {
        if let Some(h) = held.remove(&id) {
            if h.since.elapsed() > HOLD_MAX {
                expired.push((id, h.window));
            }
            // The phase it changed to, before the sessions renew for it.
            if let Ok(r) = look.load(id).await {
                running.describe(database, &r, false);
            }
            changed = true;
        }
    }
    expired.retain(|e| open.contains(e));
    for (id, window) in open {
        if held.contains_key(&id)
            || expired.contains(&(id, window))
            || running.announced_here(database, id)
        {
            continue;
        }
        let r = look.load(id).await?;
        if r.fill {
            // Its column is the application's own: nothing to hold for.
            continue;
        }
        if let Some(entered) = running.enter(database, id) {
            look.bg.spawn(super::driver::standby(
                look.bg.settings(),
                database.to_string(),
                id,
                look.bg.clone(),
                running.clone(),
                Some(entered),
            ));
        }
        running.describe(database, &r, false);
        let swap = running.swap(database, &r.table, r.table_oid, &r.partitions);
        swap.settle(false).await;
        held.insert(
            id,
            Held {
                window,
                _swap: swap,
                since: Instant::now(),
            },
        );
        changed = true;
    }
    Ok(changed)
}
