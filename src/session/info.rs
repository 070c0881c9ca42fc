//! What the proxy knows about each live session, for the admin console's
//! SHOW CLIENTS and for the DDL engine (transaction status decides what may run).

use super::pause::{Pause, Pauses};
use super::terminate::Terminate;
use crate::stats::Traffic;
use crate::wire::backend::TxStatus;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug)]
pub struct SessionInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    pub tls: bool,
    pub connected_at: SystemTime,
    /// Its database's traffic counters.
    pub traffic: Arc<Traffic>,
    /// Fired by the console's KILL: the session ends at the next message boundary.
    pub kill: Terminate,
    /// The server backend's process id (0 until the server sent it).
    backend_pid: AtomicI32,
    /// Whether the upstream connection uses TLS.
    upstream_tls: AtomicBool,
    /// Last ReadyForQuery status: b'I' idle, b'T' in a transaction, b'E' failed one.
    tx_status: AtomicU8,
    /// Its database's PAUSE.
    pub pause: Arc<Pause>,
    /// A turn is out, or a transaction is open: what PAUSE waits for.
    busy: AtomicBool,
}

/// A copy of one session's info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub id: u64,
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    pub tls: bool,
    pub connected_at: SystemTime,
    pub tx_status: char,
    pub backend_pid: i32,
    pub upstream_tls: bool,
    pub busy: bool,
    /// Its database is paused.
    pub paused: bool,
}

impl SessionInfo {
    /// The server side is up: its backend's pid and whether it uses TLS.
    pub fn set_upstream(&self, backend_pid: i32, tls: bool) {
        self.backend_pid.store(backend_pid, Relaxed);
        self.upstream_tls.store(tls, Relaxed);
    }

    /// Whether a turn is out or a transaction open; stored only when it changes.
    pub fn set_busy(&self, busy: bool) {
        if self.busy.load(Relaxed) != busy {
            self.busy.store(busy, Relaxed);
        }
    }

    pub fn set_tx_status(&self, status: TxStatus) {
        let status = status.byte();
        if self.tx_status.load(Relaxed) != status {
            self.tx_status.store(status, Relaxed);
        }
    }
}

/// Live sessions by id, and the databases' pauses.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: DashMap<u64, Arc<SessionInfo>>,
    pub pauses: Pauses,
}

/// Removes its session from the registry when dropped.
pub struct Registered<'a> {
    sessions: &'a Sessions,
    pub info: Arc<SessionInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.sessions.by_id.remove(&self.info.id);
    }
}

impl Sessions {
    pub fn register(
        &self,
        id: u64,
        peer: SocketAddr,
        user: &str,
        database: &str,
        tls: bool,
        traffic: Arc<Traffic>,
    ) -> Registered<'_> {
        let info = Arc::new(SessionInfo {
            id,
            peer,
            user: user.to_string(),
            database: database.to_string(),
            tls,
            connected_at: SystemTime::now(),
            traffic,
            kill: Terminate::default(),
            backend_pid: AtomicI32::new(0),
            upstream_tls: AtomicBool::new(false),
            tx_status: AtomicU8::new(TxStatus::Idle.byte()),
            pause: self.pauses.of(database),
            busy: AtomicBool::new(false),
        });
        self.by_id.insert(id, info.clone());
        Registered {
            sessions: self,
            info,
        }
    }

    /// Ends session `id` at its next message boundary (the console's KILL);
    /// false when there is no such session.
    pub fn kill(&self, id: u64) -> bool {
        match self.by_id.get(&id) {
            Some(s) => {
                s.kill.fire();
                true
            }
            None => false,
        }
    }

    pub fn snapshot(&self) -> Vec<SessionSnapshot> {
        let mut out: Vec<SessionSnapshot> = self
            .by_id
            .iter()
            .map(|s| SessionSnapshot {
                id: s.id,
                peer: s.peer,
                user: s.user.clone(),
                database: s.database.clone(),
                tls: s.tls,
                connected_at: s.connected_at,
                backend_pid: s.backend_pid.load(Relaxed),
                upstream_tls: s.upstream_tls.load(Relaxed),
                tx_status: char::from(s.tx_status.load(Relaxed)),
                busy: s.busy.load(Relaxed),
                paused: s.pause.is_paused(),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }
}
