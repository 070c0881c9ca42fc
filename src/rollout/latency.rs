//! The application's latency as this proxy sees it, and the backfill's governor
//! that keeps it near what it was before the backfill began.
//!
//! While a rollout is live, each session times its turns (first message sent to
//! the ReadyForQuery that answers it) into one histogram per process
//! ([`crate::latency`]).
//! Before its first batch, the backfill reads a second of it as the baseline (the
//! mirror is on by then, the backfill not yet); after each batch it compares the
//! recent p99 with the baseline times `rollout.latency_factor` and doubles or
//! halves a pause of its own.

use crate::latency::Counts;
use std::time::{Duration, Instant};

/// Fewest turns a look needs before it judges.
const MIN_TURNS: u64 = 50;
/// Shortest time between two judgements.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Longest pause the governor adds after a batch.
pub const MAX_EXTRA: Duration = Duration::from_secs(2);
/// The governor's pause after a batch is at most this many times the batch's own
/// duration: however slow the application, the backfill keeps at least a fifth
/// of its pace (an application slow for reasons of its own would stall it
/// forever otherwise).
pub const PAUSE_PER_BATCH: u32 = 4;

/// Decides the pause after each batch from the application's recent p99.
#[derive(Debug)]
pub struct Governor {
    /// The p99 the backfill may push the application's to.
    target: Duration,
    extra: Duration,
    last: Counts,
    last_at: Instant,
}

impl Governor {
    /// From the baseline (turns before the backfill) and the factor; None when
    /// too few turns came to tell (nothing to protect), or the factor is 0.
    pub fn new(baseline: &Counts, factor: f64, counts: Counts, now: Instant) -> Option<Self> {
        if factor <= 0.0 || baseline.total() < MIN_TURNS {
            return None;
        }
        let base = baseline.quantile(0.99)?;
        // Below half a millisecond, the ratio says little.
        let target = base.mul_f64(factor).max(base + Duration::from_micros(500));
        Some(Governor {
            target,
            extra: Duration::ZERO,
            last: counts,
            last_at: now,
        })
    }

    pub fn target(&self) -> Duration {
        self.target
    }

    /// The pause it adds now.
    pub fn extra(&self) -> Duration {
        self.extra
    }

    /// The pause to add after a batch, given the histogram now; never over `cap`
    /// (so that a backfill always moves: see [`PAUSE_PER_BATCH`]).
    pub fn next(&mut self, counts: Counts, now: Instant, cap: Duration) -> Duration {
        let cap = cap.clamp(Duration::from_millis(10), MAX_EXTRA);
        self.extra = self.extra.min(cap);
        if now.duration_since(self.last_at) < LOOK_EVERY {
            return self.extra;
        }
        let window = counts.since(&self.last);
        if window.total() < MIN_TURNS && now.duration_since(self.last_at) < 8 * LOOK_EVERY {
            return self.extra;
        }
        self.last = counts;
        self.last_at = now;
        let p99 = window.quantile(0.99);
        tracing::debug!(target: "pgshift::rollout", turns = window.total(), p99_us = p99.map(|d| d.as_micros() as u64), target_us = self.target.as_micros() as u64, "the application's recent p99");
        match p99 {
            Some(p99) if p99 > self.target => {
                self.extra = (self.extra * 2).clamp(Duration::from_millis(10), cap);
            }
            // Well under the target (or nobody asked anything): ease off.
            p99 if p99.is_none_or(|p| p < self.target.mul_f64(0.8)) => {
                self.extra /= 2;
                if self.extra < Duration::from_millis(5) {
                    self.extra = Duration::ZERO;
                }
            }
            _ => {}
        }
        self.extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(samples: &[(u64, u64)]) -> Counts {
        Counts::of(samples)
    }

    #[test]
    fn the_governor_backs_off_while_p99_is_over_and_eases_when_under() {
        let t0 = Instant::now();
        let base = counts(&[(900, 100)]);
        let mut g = Governor::new(&base, 2.0, base.clone(), t0).unwrap();
        assert!(g.target() >= Duration::from_micros(1800));
        let mut total = base.clone();
        let mut at = t0;
        let mut step = |slow: bool, g: &mut Governor| {
            let more = counts(&[(if slow { 4_000 } else { 900 }, 100)]);
            total = Counts(std::array::from_fn(|i| total.0[i] + more.0[i]));
            at += Duration::from_millis(300);
            g.next(total.clone(), at, MAX_EXTRA)
        };
        assert_eq!(step(true, &mut g), Duration::from_millis(10));
        assert_eq!(step(true, &mut g), Duration::from_millis(20));
        assert_eq!(step(true, &mut g), Duration::from_millis(40));
        assert_eq!(step(false, &mut g), Duration::from_millis(20));
        assert_eq!(step(false, &mut g), Duration::from_millis(10));
        assert_eq!(step(false, &mut g), Duration::from_millis(5));
        assert_eq!(step(false, &mut g), Duration::ZERO);
        for _ in 0..20 {
            step(true, &mut g);
        }
        assert_eq!(step(true, &mut g), MAX_EXTRA);
        // Capped by the batch's own duration.
        let more = counts(&[(4_000, 100)]);
        let total = Counts(std::array::from_fn(|i| total.0[i] + more.0[i]));
        let at = at + Duration::from_secs(1);
        assert_eq!(
            g.next(total, at, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
        // Too few turns to tell: no governor.
        assert!(Governor::new(&counts(&[(900, 10)]), 2.0, base.clone(), t0).is_none());
        assert!(Governor::new(&base, 0.0, base.clone(), t0).is_none());
    }
}
