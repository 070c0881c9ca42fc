//! A minimal HTTP/1.1 endpoint for `/metrics` and `/healthz`: one request per
//! connection, read with a deadline and a size cap, answered and closed.

use super::Scrape;
use crate::context::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Requests served at once; more are answered 503 at once.
const CONNECTIONS: usize = 16;
/// Longest request head read.
const HEAD_MAX: usize = 8 * 1024;
/// Time a client has to send its request.
const READ_WAIT: Duration = Duration::from_secs(2);
/// Longest one request may take, answer included (a scrape waits up to 3 s
/// for each database's rollouts, all at once).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

pub struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Listener {
    /// Binds `metrics.listen`; None when it is empty.
    pub async fn bind(shared: &Arc<Shared>) -> Result<Option<Listener>, crate::server::StartError> {
        let listen = shared.settings.load().config.metrics.listen.clone();
        if listen.is_empty() {
            return Ok(None);
        }
        let listener =
            TcpListener::bind(&listen)
                .await
                .map_err(|source| crate::server::StartError::Bind {
                    addr: listen.clone(),
                    source,
                })?;
        Ok(Some(Listener {
            listener,
            shared: shared.clone(),
        }))
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until shutdown.
    pub async fn serve(self) {
        let shutdown = self.shared.shutdown.clone();
        let slots = Arc::new(Semaphore::new(CONNECTIONS));
        let cache = Arc::new(super::GaugeCache::default());
        let tracker = TaskTracker::new();
        tracing::info!(target: "pgshift::metrics", addr = %self.local_addr(), "metrics listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let Ok((tcp, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // Full: answered at once, so idle connections cannot stall the
            // accept loop (and with it /healthz).
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracker.spawn(async move {
                    let mut tcp = tcp;
                    let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n";
                    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(busy)).await;
                });
                continue;
            };
            let shared = self.shared.clone();
            let cache = cache.clone();
            tracker.spawn(async move {
                let _ = tokio::time::timeout(ANSWER_WAIT, answer(tcp, &shared, &cache)).await;
                drop(slot);
            });
        }
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
}

/// What a request line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    Health,
    NotFound,
    NotAllowed,
    Bad,
}

fn asked(head: &[u8]) -> Asked {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Asked::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Asked::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Asked::NotAllowed;
    }
    match target.split('?').next().unwrap_or_default() {
        "/metrics" => Asked::Metrics,
        "/healthz" => Asked::Health,
        _ => Asked::NotFound,
    }
}

async fn answer(
    mut tcp: TcpStream,
    shared: &Shared,
    cache: &super::GaugeCache,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_WAIT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_MAX {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let head_only = head.starts_with(b"HEAD ");
    let (status, content_type, body) = match asked(&head) {
        Asked::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            Scrape::gather(shared, cache).await.render(),
        ),
        Asked::Health if shared.shutdown.is_cancelled() => (
            "503 Service Unavailable",
            "text/plain",
            "shutting down\n".into(),
        ),
        Asked::Health => ("200 OK", "text/plain", "ok\n".into()),
        Asked::NotFound => (
            "404 Not Found",
            "text/plain",
            "/metrics or /healthz\n".into(),
        ),
        Asked::NotAllowed => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
        Asked::Bad => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    tcp.write_all(&response).await?;
    tcp.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_read_strictly() {
        assert_eq!(
            asked(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Asked::Metrics
        );
        assert_eq!(asked(b"GET /healthz?x=1 HTTP/1.0\r\n\r\n"), Asked::Health);
        assert_eq!(asked(b"GET / HTTP/1.1\r\n\r\n"), Asked::NotFound);
        assert_eq!(asked(b"POST /metrics HTTP/1.1\r\n\r\n"), Asked::NotAllowed);
        assert_eq!(asked(b"GET /metrics\r\n\r\n"), Asked::Bad);
        assert_eq!(asked(b"\x16\x03\x01"), Asked::Bad);
    }
}
