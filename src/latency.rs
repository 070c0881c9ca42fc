//! A histogram of durations that many threads add to at once: log-scale buckets
//! with 8 steps per doubling, so a quantile is known to within 12.5 %. Sessions
//! time their turns into one while a rollout is live (see `rollout::latency`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Buckets: 0-7 µs one each, then 8 per doubling up to ~30 s.
pub(crate) const BUCKETS: usize = 8 + 8 * 22;

fn index(micros: u64) -> usize {
    if micros < 8 {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros() as usize;
    let sub = ((micros >> (msb - 3)) & 7) as usize;
    (8 * (msb - 2) + sub).min(BUCKETS - 1)
}

/// The smallest value bucket `i` holds.
fn lower(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let (msb, sub) = (i / 8 + 2, (i % 8) as u64);
    (8 + sub) << (msb - 3)
}

/// Microseconds since the first call in this process (0 is never returned).
pub fn now_micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_micros(1));
    epoch.elapsed().as_micros() as u64
}

/// Turn durations of every session of the process.
#[derive(Debug)]
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Latency {
    pub fn record(&self, micros: u64) {
        self.buckets[index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.buckets[i].load(Ordering::Relaxed)
        }))
    }
}

/// The histogram at one moment; two of them give the turns between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub(crate) [u64; BUCKETS]);

impl Default for Counts {
    fn default() -> Self {
        Counts([0; BUCKETS])
    }
}

impl Counts {
    /// The turns per bucket with each bucket's upper end in microseconds
    /// (the last one's is unbounded: u64::MAX).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().enumerate().map(|(i, n)| {
            let upper = if i + 1 < BUCKETS {
                lower(i + 1)
            } else {
                u64::MAX
            };
            (upper, *n)
        })
    }

    /// Approximate sum of the turns in microseconds: each counted at its
    /// bucket's middle, so within about 6 % of the truth.
    pub fn sum_micros(&self) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let middle = match i {
                    i if i < 8 || i + 1 >= BUCKETS => lower(i),
                    i => (lower(i) + lower(i + 1)) / 2,
                };
                middle.saturating_mul(*n)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// A histogram of `n` turns of `micros` each, per pair (for tests).
    #[cfg(test)]
    pub(crate) fn of(samples: &[(u64, u64)]) -> Counts {
        let l = Latency::default();
        for &(micros, n) in samples {
            for _ in 0..n {
                l.record(micros);
            }
        }
        l.counts()
    }

    /// The turns recorded after `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile, as the upper end of its bucket; None without turns.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(lower(i + 1)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_in_order_and_hold_their_lower_ends() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(index(lower(i)), i, "bucket {i}");
            assert!(lower(i + 1) > lower(i));
            assert_eq!(index(lower(i + 1) - 1), i, "top of bucket {i}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        // Within 12.5 %.
        assert!(lower(index(1000) + 1) <= 1125);
    }

    #[test]
    fn quantiles() {
        let c = Counts::of(&[(100, 98), (5_000, 2)]);
        assert!(c.quantile(0.5).unwrap() <= Duration::from_micros(113));
        let p99 = c.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(5) && p99 < Duration::from_micros(5_700));
        assert_eq!(Counts([0; BUCKETS]).quantile(0.99), None);
    }
}
