//! Parser threads. pg_query's parse (the C grammar, its protobuf output, prost's
//! decode) and the rules recurse as deep as a statement nests, and take time that
//! grows with its size, so they never run on a session thread (which serves many
//! sessions, with the default 2 MiB stack): they run here, on two threads with a big
//! stack, and the session awaits the result without blocking its thread.
//!
//! Both threads take small jobs; at most one takes big ones, so a flood of big
//! statements never holds up the small ones every migration consists of. The queues
//! are bounded: when one is full, `submit` says so at once. The threads live as long
//! as the process and wait on a condition variable when idle.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Stack of a parser thread (address space; only pages a parse touches become
/// resident). The nesting bound (`super::nesting`, 10,000 tokens) keeps a parse under
/// ~4 MiB optimized and ~22 MiB unoptimized; 256 MiB would still hold the deepest
/// statement of 1 MiB, 1+1+…+1 nested 524,288 levels at ~0.4 KiB each, if that bound
/// were ever wrong.
pub const STACK_BYTES: usize = 256 << 20;

const THREADS: usize = 2;
/// Threads that may run big jobs at once: the others stay free for small ones.
const BIG_RUNNING: usize = 1;
/// A job over this many bytes of SQL is big (up to ~0.3 s of parsing; most DDL is
/// well under 10 KiB).
pub const BIG_JOB_BYTES: usize = 64 << 10;
/// After a job over this many bytes, the thread returns free memory to the system
/// (once the reply is sent: the session does not wait for it).
const TRIM_AFTER_BYTES: usize = 1 << 20;
/// Queued jobs per kind, at most; each holds its text.
const SMALL_QUEUE: usize = 1024;
const BIG_QUEUE: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pgshift's parser threads are all busy and their queue is full")]
    Busy,
    #[error("pgshift's parser threads could not start")]
    NoThreads,
    #[error("pgshift's parser failed (panicked) on this statement")]
    Panicked,
}

#[derive(Default)]
struct Queues {
    small: VecDeque<Job>,
    big: VecDeque<Job>,
    big_running: usize,
}

struct Pool {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs jobs forever: small ones first, big ones while fewer than BIG_RUNNING
    /// threads are on one.
    fn work(&self) {
        loop {
            let (job, big) = {
                let mut q = self.lock();
                loop {
                    if let Some(job) = q.small.pop_front() {
                        break (job, false);
                    }
                    if q.big_running < BIG_RUNNING {
                        if let Some(job) = q.big.pop_front() {
                            q.big_running += 1;
                            break (job, true);
                        }
                    }
                    q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            // A panicking job drops its reply sender: the waiter learns it failed.
            let _ = catch_unwind(AssertUnwindSafe(job));
            if big {
                self.lock().big_running -= 1;
                self.ready.notify_all();
            }
        }
    }
}

/// Returns the free memory a big job leaves in the allocator's arenas to the system.
/// glibc keeps a thread's peak for reuse: without this, one 10 MB statement left the
/// process ~150 MiB bigger for good. A trim walks the arenas (~8 ms after a 10 MB
/// statement here), small beside that statement's parse.
#[allow(unsafe_code)]
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Pool {
    /// Starts the threads; None when none could start.
    fn start(threads: usize) -> Option<Arc<Pool>> {
        let pool = Arc::new(Pool {
            queues: Mutex::default(),
            ready: Condvar::new(),
        });
        let mut started = 0;
        for n in 0..threads {
            let p = pool.clone();
            match std::thread::Builder::new()
                .name(format!("pgshift-parser-{n}"))
                .stack_size(STACK_BYTES)
                .spawn(move || p.work())
            {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "cannot start a parser thread"),
            }
        }
        (started > 0).then_some(pool)
    }

    fn submit<T, F>(&self, bytes: usize, f: F) -> Result<Pending<T>, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, reply) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return;
            }
            flag.store(true, Ordering::Release);
            let _ = tx.send(f());
            if bytes >= TRIM_AFTER_BYTES {
                give_back_memory();
            }
        });
        {
            let mut q = self.lock();
            let (queue, cap) = if bytes > BIG_JOB_BYTES {
                (&mut q.big, BIG_QUEUE)
            } else {
                (&mut q.small, SMALL_QUEUE)
            };
            if queue.len() >= cap {
                return Err(PoolError::Busy);
            }
            queue.push_back(job);
        }
        self.ready.notify_all();
        Ok(Pending { reply, started })
    }
}

/// The process's pool, started on first use; None when no thread could start.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Arc<Pool>>> = OnceLock::new();
    POOL.get_or_init(|| Pool::start(THREADS)).as_deref()
}

/// A submitted job's result, to await. Dropping it before the job started
/// withdraws the job.
#[derive(Debug)]
pub struct Pending<T> {
    reply: oneshot::Receiver<T>,
    started: Arc<AtomicBool>,
}

impl<T> Pending<T> {
    /// True once a parser thread has taken the job.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, PoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|r| r.map_err(|_| PoolError::Panicked))
    }
}

/// Queues `f` on a parser thread; `bytes` (the size of the SQL it works on) decides
/// whether it is a big job.
pub fn submit<T, F>(bytes: usize, f: F) -> Result<Pending<T>, PoolError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    pool().ok_or(PoolError::NoThreads)?.submit(bytes, f)
}

/// Runs `f` on a parser thread and waits for it, blocking the caller: for the
/// command line, never on a runtime thread.
pub fn run_blocking<T, F>(bytes: usize, f: F) -> Result<T, PoolError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    submit(bytes, f)?
        .reply
        .blocking_recv()
        .map_err(|_| PoolError::Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_on_big_stacks() {
        // Recursion that needs ~16 MiB: a session thread's 2 MiB would overflow.
        fn deep(n: usize) -> usize {
            let frame = std::hint::black_box([0u8; 1024]);
            if n == 0 {
                frame[0] as usize
            } else {
                deep(n - 1) + usize::from(frame[n % 1024])
            }
        }
        let name = run_blocking(10, || {
            deep(16_000);
            std::thread::current().name().map(String::from)
        });
        assert!(name.unwrap().unwrap().starts_with("pgshift-parser-"));
    }

    #[test]
    fn a_panicking_job_fails_alone() {
        let panicked = run_blocking(10, || -> u8 { panic!("test: a job that panics") });
        assert_eq!(panicked, Err(PoolError::Panicked));
        assert_eq!(run_blocking(10, || 7), Ok(7));
    }

    #[tokio::test]
    async fn big_jobs_leave_a_thread_to_small_ones() {
        let pool = Pool::start(THREADS).unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        // A big job that holds its thread until released; big jobs queue behind it.
        let held = pool
            .submit(BIG_JOB_BYTES + 1, move || {
                let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
            })
            .unwrap();
        let mut queued = Vec::new();
        let busy = loop {
            match pool.submit(BIG_JOB_BYTES + 1, || ()) {
                Ok(p) => queued.push(p),
                Err(e) => break e,
            }
            assert!(queued.len() <= BIG_QUEUE + 1, "the big queue is unbounded");
        };
        assert_eq!(busy, PoolError::Busy);
        // Small jobs still run at once.
        let small = tokio::time::timeout(Duration::from_secs(5), pool.submit(10, || 42).unwrap());
        assert_eq!(small.await.unwrap(), Ok(42));
        release.send(()).unwrap();
        held.await.unwrap();
        for p in queued {
            p.await.unwrap();
        }
    }

    #[tokio::test]
    async fn withdrawn_jobs_do_not_run() {
        let pool = Pool::start(THREADS).unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let held = pool
            .submit(BIG_JOB_BYTES + 1, move || {
                let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
            })
            .unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let withdrawn = pool.submit(BIG_JOB_BYTES + 1, move || r.store(true, Ordering::SeqCst));
        assert!(!withdrawn.as_ref().unwrap().started());
        drop(withdrawn);
        release.send(()).unwrap();
        held.await.unwrap();
        let after = pool.submit(BIG_JOB_BYTES + 1, || ()).unwrap();
        after.await.unwrap();
        assert!(!ran.load(Ordering::SeqCst));
    }
}
