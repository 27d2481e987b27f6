//! The wait before each retry (pure: the randomness comes in as an argument).

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": retry `n` (1-based) waits a random time in
/// `[b/2, b]` where `b = min(initial * 2^(n-1), max)`. The jitter spreads retries of many
/// scorers after a receiver outage; the lower bound keeps the backoff meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// `initial_ms` doubling up to `max_ms` (both at least 1, `max_ms >= initial_ms`).
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        let initial_ms = initial_ms.max(1);
        Self {
            initial_ms,
            max_ms: max_ms.max(initial_ms),
        }
    }

    /// The upper bound of retry `retry`'s wait, before jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(63);
        let ms = self
            .initial_ms
            .checked_mul(1_u64 << doublings)
            .map_or(self.max_ms, |ms| ms.min(self.max_ms));
        Duration::from_millis(ms)
    }

    /// The wait before retry `retry` (1 = the first retry).
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_millis() as u64;
        let half = ceiling / 2;
        Duration::from_millis(half + rng.random_range(0..=ceiling - half))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(200, 10_000);
        let ceilings: Vec<u64> = (1..=8).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(
            ceilings,
            [200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]
        );
        assert_eq!(b.ceiling(1_000), Duration::from_millis(10_000));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let b = Backoff::new(200, 10_000);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for retry in 1..=10 {
            let ceiling = b.ceiling(retry);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = b.delay(retry, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "{retry}: {d:?}");
                seen.insert(d);
            }
            assert!(seen.len() > 1, "no jitter at retry {retry}");
        }
    }

    #[test]
    fn degenerate_settings_stay_sane() {
        let b = Backoff::new(0, 0);
        assert_eq!(b.ceiling(1), Duration::from_millis(1));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        assert!(b.delay(64, &mut rng) <= Duration::from_millis(1));
    }
}
