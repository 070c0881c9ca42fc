//! Exponential backoff with jitter, bounded by attempts and a deadline.

use crate::config::Ddl;
use rand::Rng;
use std::time::{Duration, Instant};

/// Most pgshift sleeps between attempts inside a client's transaction: the locks
/// it already holds stay held meanwhile.
const IN_TX_MAX_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Backoff {
    pub attempts: u32,
    max_attempts: u32,
    next: Duration,
    max: Duration,
    started: Instant,
    deadline: Duration,
}

impl Backoff {
    pub fn new(ddl: &Ddl, in_tx: bool) -> Self {
        let max = Duration::from_millis(ddl.retry_max_ms);
        Backoff {
            attempts: 0,
            max_attempts: ddl.max_attempts,
            next: Duration::from_millis(ddl.retry_initial_ms),
            max: if in_tx { max.min(IN_TX_MAX_PAUSE) } else { max },
            started: Instant::now(),
            deadline: Duration::from_millis(ddl.retry_deadline_ms),
        }
    }

    /// Counts an attempt that failed; returns the pause before the next one, or
    /// None when attempts or time are used up.
    pub fn failed(&mut self) -> Option<Duration> {
        self.attempts += 1;
        if self.attempts >= self.max_attempts {
            return None;
        }
        let base = self.next.min(self.max);
        self.next = self.next.saturating_mul(2);
        // Full spread between half and one and a half of the base: proxies and
        // sessions retrying together drift apart.
        let pause = base.mul_f64(rand::thread_rng().gen_range(0.5..1.5));
        (self.started.elapsed() + pause < self.deadline).then_some(pause)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_stops() {
        let ddl = Ddl {
            max_attempts: 5,
            retry_initial_ms: 100,
            retry_max_ms: 300,
            ..Ddl::default()
        };
        let mut b = Backoff::new(&ddl, false);
        let pauses: Vec<_> = std::iter::from_fn(|| b.failed()).collect();
        assert_eq!(pauses.len(), 4);
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(150));
        assert!(
            pauses[3] <= Duration::from_millis(450),
            "capped: {pauses:?}"
        );
        assert_eq!(b.attempts, 5);
    }

    #[test]
    fn the_deadline_ends_retries() {
        let ddl = Ddl {
            retry_initial_ms: 1_000,
            retry_deadline_ms: 100,
            ..Ddl::default()
        };
        assert!(Backoff::new(&ddl, false).failed().is_none());
    }
}
