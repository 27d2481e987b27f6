//! The two sliding-window algorithms, as pure state machines over a caller-supplied clock.
//!
//! - **Sliding log** (exact): the timestamps of admitted requests in the last `window` ms.
//!   A request is admitted when fewer than `limit` remain after pruning. Never admits more
//!   than `limit` in any window of length `window`. Memory in process: 8 bytes per admitted
//!   request in the window, so at most `8 * limit` bytes.
//! - **Sliding counter** (approximate): counts in two aligned buckets; the estimate is
//!   `prev * (window - elapsed) / window + curr`. Constant memory (16 bytes). It assumes the
//!   previous bucket's requests were spread evenly, so within any window of length `window`
//!   it may admit up to about `2 * limit` in the worst case (all of `prev` at its very end),
//!   and it is exact when arrivals are uniform.
//!
//! [`check_all`] applies several windows atomically: a request counts in every window only
//! when every window admits it.
//!
//! The Redis store (`limiter/lua/check.lua`) runs the same arithmetic in one script call;
//! there the log costs one sorted-set entry per admitted request in the window (about 37-49
//! bytes up to 128 entries, about 118 above, measured with `MEMORY USAGE`), the counter a
//! 4-field hash of 168 bytes whatever the limit. On bursty arrivals (0.2x-3x the limit) the
//! counter admitted 4.6% more than the log and at most 1.38x the limit in one window (see
//! docs/performance.md). Default: the log up to a limit of 1,000, the counter above.

use std::collections::VecDeque;

use crate::config::Algorithm;

/// One window of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length in ms (> 0).
    pub window_ms: u64,
    /// How it is counted.
    pub algorithm: Algorithm,
}

/// The state of one window for one subject.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowState {
    /// Admitted timestamps, oldest first.
    Log(VecDeque<u64>),
    /// Two aligned buckets.
    Counter {
        /// Start of the current bucket (a multiple of the window length).
        bucket_start: u64,
        /// Requests in the previous bucket.
        prev: u32,
        /// Requests in the current bucket.
        curr: u32,
    },
}

/// What one window says about admitting one more request at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    /// The window has room.
    pub admit: bool,
    /// Requests left in the window after this one is counted (0 when refused).
    pub remaining: u32,
    /// Ms until the window next frees capacity (the oldest counted request leaves it, or the
    /// current bucket rolls over).
    pub reset_ms: u64,
    /// When refused: ms until a request would be admitted (>= 1). 0 when admitted.
    pub retry_after_ms: u64,
}

/// The combined answer of every window of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Every window admitted the request, and it was counted in all of them.
    pub admitted: bool,
    /// The window reported to the client: the refusing one with the longest wait, or,
    /// when admitted, the one with the fewest requests left.
    pub limit: u32,
    /// Its window length in ms.
    pub window_ms: u64,
    /// Requests left in it.
    pub remaining: u32,
    /// Ms until it frees capacity.
    pub reset_ms: u64,
    /// Ms to wait before retrying; 0 when admitted.
    pub retry_after_ms: u64,
}

impl WindowState {
    /// Empty state for `spec`.
    pub fn new(spec: &WindowSpec) -> Self {
        match spec.algorithm {
            Algorithm::SlidingLog => WindowState::Log(VecDeque::new()),
            Algorithm::SlidingCounter => WindowState::Counter {
                bucket_start: 0,
                prev: 0,
                curr: 0,
            },
        }
    }

    /// Whether `spec` admits one more request at `now`. Prunes expired state; counts nothing.
    pub fn peek(&mut self, spec: &WindowSpec, now: u64) -> Peek {
        let w = spec.window_ms.max(1);
        match self {
            WindowState::Log(log) => {
                while log.front().is_some_and(|&t| t + w <= now) {
                    log.pop_front();
                }
                let count = u32::try_from(log.len()).unwrap_or(u32::MAX);
                let oldest_leaves = |t: u64| (t + w).saturating_sub(now).max(1);
                if count < spec.limit {
                    Peek {
                        admit: true,
                        remaining: spec.limit - count - 1,
                        reset_ms: log.front().map_or(w, |&t| oldest_leaves(t)),
                        retry_after_ms: 0,
                    }
                } else {
                    let wait = log.front().map_or(1, |&t| oldest_leaves(t));
                    Peek {
                        admit: false,
                        remaining: 0,
                        reset_ms: wait,
                        retry_after_ms: wait,
                    }
                }
            }
            WindowState::Counter {
                bucket_start,
                prev,
                curr,
            } => {
                roll(bucket_start, prev, curr, w, now);
                let elapsed = now - *bucket_start;
                let estimate = estimate(*prev, *curr, elapsed, w);
                let limit = f64::from(spec.limit);
                let to_rollover = (w - elapsed).max(1);
                if estimate + 1.0 <= limit {
                    Peek {
                        admit: true,
                        remaining: (limit - estimate - 1.0).floor() as u32,
                        reset_ms: to_rollover,
                        retry_after_ms: 0,
                    }
                } else {
                    let wait = counter_wait(*prev, *curr, elapsed, w, spec.limit);
                    Peek {
                        admit: false,
                        remaining: 0,
                        reset_ms: to_rollover,
                        retry_after_ms: wait,
                    }
                }
            }
        }
    }

    /// Counts one request at `now`. Call only after [`peek`](Self::peek) admitted it.
    pub fn record(&mut self, now: u64) {
        match self {
            WindowState::Log(log) => log.push_back(now),
            WindowState::Counter { curr, .. } => *curr = curr.saturating_add(1),
        }
    }

    /// Approximate heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        match self {
            WindowState::Log(log) => log.capacity() * std::mem::size_of::<u64>(),
            WindowState::Counter { .. } => 0,
        }
    }
}

fn roll(bucket_start: &mut u64, prev: &mut u32, curr: &mut u32, w: u64, now: u64) {
    let aligned = now - now % w;
    if aligned > *bucket_start {
        *prev = if aligned - *bucket_start == w {
            *curr
        } else {
            0
        };
        *curr = 0;
        *bucket_start = aligned;
    }
}

fn estimate(prev: u32, curr: u32, elapsed: u64, w: u64) -> f64 {
    let weight = (w - elapsed.min(w)) as f64 / w as f64;
    f64::from(prev) * weight + f64::from(curr)
}

/// Ms until the counter's estimate leaves room for one more request.
fn counter_wait(prev: u32, curr: u32, elapsed: u64, w: u64, limit: u32) -> u64 {
    let room = f64::from(limit) - 1.0;
    if f64::from(curr) <= room && prev > 0 {
        // Wait for the previous bucket's weight to decay: prev * (w - e) / w <= room - curr.
        let e = w as f64 * (1.0 - (room - f64::from(curr)) / f64::from(prev));
        return ((e.ceil() as u64).saturating_sub(elapsed)).max(1);
    }
    // Wait for the rollover; then `curr` becomes the decaying previous bucket.
    let to_rollover = w - elapsed;
    let after = if curr == 0 || f64::from(curr) <= room {
        0
    } else {
        (w as f64 * (1.0 - room / f64::from(curr))).ceil() as u64
    };
    (to_rollover + after).max(1)
}

/// Checks every window at `now`; counts the request in all of them only if all admit it.
///
/// `states[i]` belongs to `specs[i]`. Panics never; mismatched lengths check the shorter.
pub fn check_all(specs: &[WindowSpec], states: &mut [WindowState], now: u64) -> Outcome {
    let peeks: Vec<Peek> = specs
        .iter()
        .zip(states.iter_mut())
        .map(|(spec, state)| state.peek(spec, now))
        .collect();
    let outcome = combine(specs, &peeks);
    if outcome.admitted {
        for state in states.iter_mut() {
            state.record(now);
        }
    }
    outcome
}

/// The policy's answer from each window's [`Peek`] (`peeks[i]` belongs to `specs[i]`): admitted
/// only when every window admits. Shared by the local store and the Redis store, which
/// computes the peeks in its script, so both report the same window to the client.
pub fn combine(specs: &[WindowSpec], peeks: &[Peek]) -> Outcome {
    combine_indexed(specs, peeks).0
}

/// [`combine`], also saying which window the outcome reports (`None` without windows).
pub fn combine_indexed(specs: &[WindowSpec], peeks: &[Peek]) -> (Outcome, Option<usize>) {
    let mut admitted = true;
    let mut chosen: Option<(Peek, &WindowSpec, usize)> = None;
    for (i, (spec, &peek)) in specs.iter().zip(peeks).enumerate() {
        admitted &= peek.admit;
        let better = match &chosen {
            None => true,
            Some((c, _, _)) if !peek.admit => c.admit || peek.retry_after_ms > c.retry_after_ms,
            Some((c, _, _)) => {
                c.admit
                    && (peek.remaining, std::cmp::Reverse(peek.reset_ms))
                        < (c.remaining, std::cmp::Reverse(c.reset_ms))
            }
        };
        if better {
            chosen = Some((peek, spec, i));
        }
    }
    match chosen {
        Some((p, spec, i)) => (
            Outcome {
                admitted,
                limit: spec.limit,
                window_ms: spec.window_ms,
                remaining: if admitted { p.remaining } else { 0 },
                reset_ms: p.reset_ms,
                retry_after_ms: if admitted { 0 } else { p.retry_after_ms },
            },
            Some(i),
        ),
        None => (
            Outcome {
                admitted: true,
                limit: 0,
                window_ms: 0,
                remaining: 0,
                reset_ms: 0,
                retry_after_ms: 0,
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spec(limit: u32, window_ms: u64, algorithm: Algorithm) -> WindowSpec {
        WindowSpec {
            limit,
            window_ms,
            algorithm,
        }
    }

    #[test]
    fn log_admits_limit_then_refuses_until_the_oldest_leaves() {
        let s = spec(3, 1_000, Algorithm::SlidingLog);
        let mut st = [WindowState::new(&s)];
        for (t, left) in [(0, 2), (100, 1), (200, 0)] {
            let o = check_all(&[s], &mut st, t);
            assert!(o.admitted);
            assert_eq!(o.remaining, left);
        }
        let o = check_all(&[s], &mut st, 500);
        assert!(!o.admitted);
        assert_eq!(o.retry_after_ms, 500, "the request at 0 leaves at 1000");
        assert!(!check_all(&[s], &mut st, 999).admitted);
        assert!(check_all(&[s], &mut st, 1_000).admitted);
    }

    #[test]
    fn counter_weights_the_previous_bucket() {
        let s = spec(10, 1_000, Algorithm::SlidingCounter);
        let mut st = [WindowState::new(&s)];
        for i in 0..10 {
            assert!(check_all(&[s], &mut st, 500 + i).admitted);
        }
        assert!(!check_all(&[s], &mut st, 900).admitted);
        // At 1500 the previous bucket (10) weighs half: estimate 5, so 5 more fit.
        let admitted = (0..10)
            .filter(|i| check_all(&[s], &mut st, 1_500 + i).admitted)
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn counter_retry_after_is_when_room_appears() {
        let s = spec(4, 1_000, Algorithm::SlidingCounter);
        let mut st = [WindowState::new(&s)];
        for t in 0..4 {
            check_all(&[s], &mut st, t);
        }
        let o = check_all(&[s], &mut st, 10);
        assert!(!o.admitted);
        let retry = 10 + o.retry_after_ms;
        assert!(!check_all(&[s], &mut st, retry - 1).admitted || o.retry_after_ms == 1);
        assert!(
            check_all(&[s], &mut st, retry).admitted,
            "admitted at the announced time {retry}"
        );
    }

    #[test]
    fn windows_are_all_or_nothing() {
        let short = spec(2, 1_000, Algorithm::SlidingLog);
        let long = spec(3, 60_000, Algorithm::SlidingLog);
        let specs = [short, long];
        let mut st = [WindowState::new(&short), WindowState::new(&long)];
        assert!(check_all(&specs, &mut st, 0).admitted);
        assert!(check_all(&specs, &mut st, 1).admitted);
        let o = check_all(&specs, &mut st, 2);
        assert!(!o.admitted);
        assert_eq!(o.limit, 2, "the short window refused");
        // The refused request consumed nothing in the long window.
        assert!(check_all(&specs, &mut st, 1_500).admitted);
        let o = check_all(&specs, &mut st, 2_600);
        assert!(!o.admitted, "long window holds 3 by now");
        assert_eq!(o.limit, 3);
    }

    #[test]
    fn admitted_outcome_reports_the_tightest_window() {
        let a = spec(100, 1_000, Algorithm::SlidingLog);
        let b = spec(5, 60_000, Algorithm::SlidingLog);
        let mut st = [WindowState::new(&a), WindowState::new(&b)];
        let o = check_all(&[a, b], &mut st, 0);
        assert_eq!((o.limit, o.remaining), (5, 4));
    }

    /// Arrival gaps in ms, a limit and a window.
    fn arrivals() -> impl Strategy<Value = (Vec<u64>, u32, u64)> {
        (
            prop::collection::vec(0u64..300, 1..400),
            1u32..20,
            1u64..2_000,
        )
    }

    proptest! {
        #[test]
        fn sliding_log_never_exceeds_and_never_wrongly_refuses((gaps, limit, w) in arrivals()) {
            let s = spec(limit, w, Algorithm::SlidingLog);
            let mut st = [WindowState::new(&s)];
            let mut admitted: Vec<u64> = Vec::new();
            let mut now = 0;
            for g in gaps {
                now += g;
                let in_window = admitted.iter().filter(|&&t| t + w > now).count() as u32;
                let o = check_all(&[s], &mut st, now);
                // Admits exactly when the window (now - w, now] holds fewer than `limit`.
                prop_assert_eq!(o.admitted, in_window < limit);
                if o.admitted { admitted.push(now); }
            }
            // No window of length w holds more than `limit` admitted requests.
            for (i, &t) in admitted.iter().enumerate() {
                let n = admitted[i..].iter().take_while(|&&u| u < t + w).count() as u32;
                prop_assert!(n <= limit, "{} admitted in [{}, {})", n, t, t + w);
            }
        }

        #[test]
        fn sliding_counter_stays_within_twice_the_limit((gaps, limit, w) in arrivals()) {
            let s = spec(limit, w, Algorithm::SlidingCounter);
            let mut st = [WindowState::new(&s)];
            let mut admitted: Vec<u64> = Vec::new();
            let mut now = 0;
            for g in gaps {
                now += g;
                if check_all(&[s], &mut st, now).admitted { admitted.push(now); }
            }
            for (i, &t) in admitted.iter().enumerate() {
                let n = admitted[i..].iter().take_while(|&&u| u < t + w).count() as u32;
                prop_assert!(n <= 2 * limit);
            }
        }
    }
}
