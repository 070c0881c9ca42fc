//! What the proxy knows about each live session, for the admin console's
//! SHOW CLIENTS and for the DDL engine (transaction status decides what may run).

use crate::stats::Traffic;
use crate::wire::backend::TxStatus;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
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
    /// Last ReadyForQuery status: b'I' idle, b'T' in a transaction, b'E' failed one.
    tx_status: AtomicU8,
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
}

impl SessionInfo {
    pub fn set_tx_status(&self, status: TxStatus) {
        let status = status.byte();
        if self.tx_status.load(Relaxed) != status {
            self.tx_status.store(status, Relaxed);
        }
    }
}

/// Live sessions by id.
#[derive(Debug, Default)]
pub struct Sessions(DashMap<u64, Arc<SessionInfo>>);

/// Removes its session from the registry when dropped.
pub struct Registered<'a> {
    sessions: &'a Sessions,
    pub info: Arc<SessionInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.sessions.0.remove(&self.info.id);
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
            tx_status: AtomicU8::new(TxStatus::Idle.byte()),
        });
        self.0.insert(id, info.clone());
        Registered {
            sessions: self,
            info,
        }
    }

    pub fn snapshot(&self) -> Vec<SessionSnapshot> {
        let mut out: Vec<SessionSnapshot> = self
            .0
            .iter()
            .map(|s| SessionSnapshot {
                id: s.id,
                peer: s.peer,
                user: s.user.clone(),
                database: s.database.clone(),
                tls: s.tls,
                connected_at: s.connected_at,
                tx_status: char::from(s.tx_status.load(Relaxed)),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }
}
