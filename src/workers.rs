//! Session threads. Each runs its own single-threaded tokio runtime, and a session
//! lives on one of them from accept to close: its client and server sockets are
//! registered with that thread's reactor, so a wake-up never crosses threads
//! (a work-stealing runtime costs ~10 µs per round trip here for that hop,
//! bench/RESULTS.md §9). The accepting thread hands each new connection to the
//! thread serving the fewest sessions.
//!
//! With one worker there are no extra threads: sessions run on the caller's runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

type Session = Pin<Box<dyn Future<Output = ()> + Send>>;
/// Runs on the worker thread, inside its runtime, and builds the session there
/// (so its socket registers with that thread's reactor).
type Job = Box<dyn FnOnce() -> Session + Send>;

pub struct Workers {
    lanes: Vec<Lane>,
    next: usize,
}

/// Sessions waiting to be picked up by a thread; it takes each at once, so the
/// queue only fills if the thread is stuck.
const LANE_QUEUE: usize = 1024;

struct Lane {
    jobs: mpsc::Sender<Job>,
    live: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `count` session threads (none when `count` is 1).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut lanes = Vec::new();
        if count > 1 {
            for n in 0..count {
                lanes.push(Lane::start(n)?);
            }
        }
        Ok(Workers { lanes, next: 0 })
    }

    /// Runs `session(tcp)` on the least busy thread, the socket moved to that
    /// thread's reactor; with one worker, on the caller's runtime as it is.
    pub fn spawn<F, S>(&mut self, tcp: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> S + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        let Some(lane) = self.pick() else {
            tokio::spawn(session(tcp));
            return;
        };
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => return tracing::warn!(error = %e, "cannot hand the connection over"),
        };
        let live = lane.live.clone();
        live.fetch_add(1, Relaxed);
        let job: Job = Box::new(move || {
            let guard = Live(live);
            Box::pin(async move {
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => session(tcp).await,
                    Err(e) => tracing::warn!(error = %e, "cannot register the connection"),
                }
                drop(guard);
            })
        });
        if let Err(e) = lane.jobs.try_send(job) {
            // Only a bug could stop or stall a session thread; serve here rather
            // than drop the client.
            let job = match e {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            tracing::error!(
                "a session thread is not taking sessions; serving on the accepting thread"
            );
            tokio::spawn(job());
        }
    }

    /// The lane with the fewest live sessions; ties go round-robin.
    fn pick(&mut self) -> Option<&Lane> {
        let n = self.lanes.len();
        if n == 0 {
            return None;
        }
        let start = self.next;
        self.next = (self.next + 1) % n;
        let best = (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.lanes[i].live.load(Relaxed))?;
        Some(&self.lanes[best])
    }

    /// Live sessions per thread, for tests and the admin console.
    pub fn load(&self) -> Vec<usize> {
        self.lanes.iter().map(|l| l.live.load(Relaxed)).collect()
    }
}

impl Lane {
    fn start(n: usize) -> std::io::Result<Lane> {
        let (jobs, mut rx) = mpsc::channel::<Job>(LANE_QUEUE);
        let (built, started) = std::sync::mpsc::channel();
        // The runtime is built on its own thread: dropping one inside the caller's
        // runtime (if the thread could not start) would panic.
        std::thread::Builder::new()
            .name(format!("pgshift-worker-{n}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(built.send(Err(e))),
                };
                let _ = built.send(Ok(()));
                runtime.block_on(async move {
                    // Ends when the server drops its Workers, after every session ended.
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job());
                    }
                });
            })?;
        started
            .recv()
            .map_err(|_| std::io::Error::other("session thread ended while starting"))??;
        Ok(Lane {
            jobs,
            live: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// Counts a session as live on its thread until the session ends or is dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A client socket connected to a throwaway listener.
    async fn connected() -> TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _ = listener.accept().await.unwrap();
        tcp
    }

    #[tokio::test]
    async fn sessions_spread_over_threads_and_run_there() {
        let mut workers = Workers::start(2).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        for _ in 0..4 {
            let tx = tx.clone();
            let mut hold = hold_rx.clone();
            workers.spawn(connected().await, move |_tcp| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tx.send(name).unwrap();
                let _ = hold.wait_for(|&go| go).await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(rx.recv().await.unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "pgshift-worker-0",
                "pgshift-worker-0",
                "pgshift-worker-1",
                "pgshift-worker-1"
            ]
        );
        assert_eq!(workers.load(), [2, 2]);
        hold_tx.send(true).unwrap();
        for _ in 0..100 {
            if workers.load() == [0, 0] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("sessions not counted down: {:?}", workers.load());
    }

    #[tokio::test]
    async fn one_worker_runs_on_the_callers_runtime() {
        let mut workers = Workers::start(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        workers.spawn(connected().await, move |_tcp| async move {
            let _ = tx.send(std::thread::current().name().map(String::from));
        });
        let name = rx.await.unwrap();
        assert_ne!(name.as_deref(), Some("pgshift-worker-0"));
        assert!(workers.load().is_empty());
    }
}
