//! Cancel keys. Clients get a BackendKeyData issued by the proxy; a CancelRequest
//! on a new connection is looked up here and sent on to the right backend.

use crate::config::UpstreamAddr;
use crate::engine::CancelSignal;
use crate::net::upstream;
use crate::wire::startup::cancel_request;
use bytes::Bytes;
use dashmap::DashMap;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub struct CancelTarget {
    secret: Bytes,
    pub addr: UpstreamAddr,
    pub backend_pid: u32,
    pub backend_secret: Bytes,
    /// The session's own view of cancel requests (see [`CancelSignal`]).
    pub signal: Arc<CancelSignal>,
}

/// Proxy-issued process id → the backend it stands for.
#[derive(Debug, Clone, Default)]
pub struct CancelMap(Arc<DashMap<u32, CancelTarget>>);

/// Removes its key from the map when the session ends.
#[derive(Debug)]
pub struct CancelKey {
    map: CancelMap,
    pub pid: u32,
    pub secret: Bytes,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.map.0.remove(&self.pid);
    }
}

impl CancelMap {
    /// Issues a fresh key for a backend; `secret_len` is 4 for protocol 3.0.
    pub fn register(
        &self,
        addr: UpstreamAddr,
        backend_pid: u32,
        backend_secret: Bytes,
        secret_len: usize,
        signal: Arc<CancelSignal>,
    ) -> CancelKey {
        let mut rng = rand::thread_rng();
        let secret: Vec<u8> = (0..secret_len).map(|_| rng.gen()).collect();
        let secret = Bytes::from(secret);
        loop {
            // Positive i32 range: some clients read the pid as a signed int.
            let pid = rng.gen_range(1..=i32::MAX as u32);
            if let dashmap::Entry::Vacant(slot) = self.0.entry(pid) {
                slot.insert(CancelTarget {
                    secret: secret.clone(),
                    addr: addr.clone(),
                    backend_pid,
                    backend_secret: backend_secret.clone(),
                    signal: signal.clone(),
                });
                return CancelKey {
                    map: self.clone(),
                    pid,
                    secret,
                };
            }
        }
    }

    /// The backend behind a proxy key, if the secret matches.
    pub fn lookup(&self, pid: u32, secret: &[u8]) -> Option<CancelTarget> {
        let target = self.0.get(&pid)?;
        constant_time_eq(&target.secret, secret).then(|| target.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sends a client's CancelRequest on to the backend its key stands for, and
/// tells the session (which may be waiting itself, or running pgshift's own work
/// on that backend: then the request stops with the session). Unknown keys are
/// dropped silently, as Postgres does.
pub async fn forward(map: &CancelMap, pid: u32, secret: &[u8], timeout: Duration) {
    let Some(target) = map.lookup(pid, secret) else {
        debug!(pid, "cancel request with an unknown key");
        return;
    };
    let Some(_sending) = target.signal.request() else {
        info!(
            backend_pid = target.backend_pid,
            "cancel request kept from the backend: pgshift is waiting, or runs its own work there"
        );
        return;
    };
    let packet = cancel_request(target.backend_pid, &target.backend_secret);
    match upstream::connect_plain(&target.addr, timeout).await {
        // Deferred work may have started while the connection was made.
        Ok(_) if target.signal.own_work() => {}
        Ok(mut stream) => {
            if let Err(e) = stream.write_all(&packet).await {
                warn!(error = %e, "sending cancel upstream failed");
                return;
            }
            // Wait for the server to close: libpq takes that as "cancel processed".
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(timeout, stream.read(&mut sink)).await;
            info!(backend_pid = target.backend_pid, "cancel forwarded");
        }
        Err(e) => warn!(error = %e, "cancel: upstream connect failed"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_and_drop() {
        let map = CancelMap::default();
        let addr = UpstreamAddr::parse("127.0.0.1:1").unwrap();
        let key = map.register(addr, 77, Bytes::from_static(b"abcd"), 4, Default::default());
        assert_eq!(key.secret.len(), 4);
        let target = map.lookup(key.pid, &key.secret).unwrap();
        assert_eq!(target.backend_pid, 77);
        assert!(map.lookup(key.pid, b"nope").is_none());
        assert!(map.lookup(key.pid.wrapping_add(1), &key.secret).is_none());
        drop(key);
        assert!(map.is_empty());
    }
}
