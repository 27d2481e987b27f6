//! At most one alert per key per period, on the alerts' own event times, unless the level
//! rises: a block after a flag is news to the SIEM, a flag after a block is not (pure).
//!
//! Memory is bounded: at `capacity` keys the expired entries are swept, and if that frees
//! less than a quarter, the oldest entries go too until half is free. A key evicted before
//! its period ended may alert again early: a duplicate, never a lost first alert. Each sweep
//! is O(n) but leaves at least `capacity / 4` free slots, so its cost per alert stays O(1).

use std::collections::HashMap;

use super::alert::AlertLevel;

/// Default cap on the keys remembered.
pub const DEFAULT_DEDUP_KEYS: usize = 100_000;

/// Time and level of the last alert per key.
#[derive(Debug, Clone)]
pub struct Dedup {
    period_ms: i64,
    capacity: usize,
    last: HashMap<String, (i64, AlertLevel)>,
}

impl Dedup {
    /// Remembers up to `capacity` keys (at least 4) for `period_ms` each.
    pub fn new(period_ms: u64, capacity: usize) -> Self {
        Self {
            period_ms: i64::try_from(period_ms).unwrap_or(i64::MAX),
            capacity: capacity.max(4),
            last: HashMap::new(),
        }
    }

    /// True when `key` already alerted at `level` or above less than a period before (or
    /// after: events may arrive out of order) `ts_ms`. Does not record anything.
    pub fn is_duplicate(&self, key: &str, level: AlertLevel, ts_ms: i64) -> bool {
        self.last.get(key).is_some_and(|&(last, at)| {
            level <= at && ts_ms.abs_diff(last) < self.period_ms.unsigned_abs()
        })
    }

    /// Records that `key` alerted at `level` at `ts_ms`: a new period starts there.
    pub fn record(&mut self, key: &str, level: AlertLevel, ts_ms: i64) {
        if let Some(last) = self.last.get_mut(key) {
            *last = (ts_ms, level);
            return;
        }
        if self.last.len() >= self.capacity {
            self.sweep(ts_ms);
        }
        self.last.insert(key.to_owned(), (ts_ms, level));
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn sweep(&mut self, now_ms: i64) {
        let period = self.period_ms;
        self.last
            .retain(|_, &mut (last, _)| now_ms.saturating_sub(last) < period);
        if self.last.len() > self.capacity / 4 * 3 {
            // Keep the newest half: entries strictly newer than the median time.
            let mut times: Vec<i64> = self.last.values().map(|&(t, _)| t).collect();
            let keep = self.capacity / 2;
            let idx = times.len() - keep;
            let (_, &mut cut, _) = times.select_nth_unstable(idx);
            self.last.retain(|_, &mut (last, _)| last > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertLevel::{Block, Flag, Throttle};

    const HOUR: u64 = 3_600_000;

    #[test]
    fn one_alert_per_key_per_period() {
        let mut d = Dedup::new(HOUR, 100);
        assert!(!d.is_duplicate("alice", Block, 1_000));
        d.record("alice", Block, 1_000);
        assert!(d.is_duplicate("alice", Block, 1_000));
        assert!(d.is_duplicate("alice", Block, 1_000 + HOUR as i64 - 1));
        assert!(!d.is_duplicate("alice", Block, 1_000 + HOUR as i64));
        assert!(!d.is_duplicate("bob", Block, 1_000));
        // Out of order within the period is still the same incident.
        assert!(d.is_duplicate("alice", Block, 500));
    }

    #[test]
    fn a_higher_level_alerts_again_within_the_period() {
        let mut d = Dedup::new(HOUR, 100);
        d.record("k", Flag, 0);
        assert!(d.is_duplicate("k", Flag, 1_000));
        assert!(!d.is_duplicate("k", Throttle, 1_000));
        d.record("k", Throttle, 1_000);
        assert!(!d.is_duplicate("k", Block, 2_000));
        d.record("k", Block, 2_000);
        // Falling back and rising again within the period is the same incident.
        assert!(d.is_duplicate("k", Flag, 3_000));
        assert!(d.is_duplicate("k", Block, 4_000));
    }

    #[test]
    fn a_new_period_starts_at_the_next_alert() {
        let mut d = Dedup::new(1_000, 100);
        d.record("k", Block, 0);
        d.record("k", Block, 1_500);
        assert!(d.is_duplicate("k", Block, 2_000));
        assert!(!d.is_duplicate("k", Block, 2_500));
    }

    #[test]
    fn expired_keys_are_swept_at_the_cap() {
        let mut d = Dedup::new(1_000, 8);
        for i in 0..8 {
            d.record(&format!("old{i}"), Block, 0);
        }
        d.record("new", Block, 5_000);
        assert_eq!(d.len(), 1);
        assert!(d.is_duplicate("new", Block, 5_001));
    }

    #[test]
    fn memory_stays_bounded_when_nothing_has_expired() {
        let mut d = Dedup::new(HOUR, 100);
        for i in 0..10_000 {
            d.record(&format!("k{i}"), Block, i);
            assert!(d.len() <= 100);
        }
        // The most recent keys are still remembered.
        assert!(d.is_duplicate("k9999", Block, 10_000));
        assert!(d.is_duplicate("k9960", Block, 10_000));
    }
}
