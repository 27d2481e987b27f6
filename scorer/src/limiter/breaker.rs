//! A circuit breaker in front of Redis, so a dead Redis costs no timeout per request.
//!
//! Closed: every call goes through; `failures` consecutive failures open it. Open: no call
//! goes through for `open_for`; then it is half-open and lets one probe through (others keep
//! being refused). The probe's success closes it, its failure opens it again. A probe that
//! never reports (its caller went away) is replaced by another after `open_for`.
//!
//! Time comes in as an argument, so the state machine is tested without sleeping.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;

/// Where the breaker is; the gauge exports `as i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed = 0,
    /// Calls are refused until the open period ends.
    Open = 1,
    /// One probe is in flight; other calls are refused.
    HalfOpen = 2,
}

/// What the caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call Redis.
    Call,
    /// Call Redis as the half-open probe; report the result.
    Probe,
    /// Do not call: decide in the degraded mode.
    Skip,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    /// When it opened, or when the current probe started.
    since: Instant,
}

/// The breaker; cheap to consult (one uncontended lock).
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    failures: u32,
    open_for: Duration,
    gauge: Gauge,
}

impl Breaker {
    /// Opens after `failures` (>= 1) consecutive failures, for `open_for`; reports its state in
    /// `gauge`.
    pub fn new(failures: u32, open_for: Duration, gauge: Gauge, now: Instant) -> Self {
        gauge.set(BreakerState::Closed as i64);
        Self {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                since: now,
            }),
            failures: failures.max(1),
            open_for,
            gauge,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Whether a call may go to Redis at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.inner.lock();
        match s.state {
            BreakerState::Closed => Admission::Call,
            BreakerState::Open | BreakerState::HalfOpen
                if now.saturating_duration_since(s.since) >= self.open_for =>
            {
                self.set(&mut s, BreakerState::HalfOpen, now);
                Admission::Probe
            }
            BreakerState::Open | BreakerState::HalfOpen => Admission::Skip,
        }
    }

    /// A call (or the probe) succeeded.
    pub fn on_success(&self, now: Instant) {
        let mut s = self.inner.lock();
        s.consecutive_failures = 0;
        if s.state != BreakerState::Closed {
            self.set(&mut s, BreakerState::Closed, now);
        }
    }

    /// A call (or the probe) failed at `now`.
    pub fn on_failure(&self, now: Instant) {
        let mut s = self.inner.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let open = match s.state {
            BreakerState::Closed => s.consecutive_failures >= self.failures,
            // A failed probe, or a call admitted before the breaker opened.
            BreakerState::HalfOpen => true,
            BreakerState::Open => false,
        };
        if open {
            self.set(&mut s, BreakerState::Open, now);
        }
    }

    fn set(&self, s: &mut Inner, state: BreakerState, now: Instant) {
        if state != BreakerState::Closed {
            s.since = now;
        }
        s.state = state;
        self.gauge.set(state as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_millis(1_000);

    fn breaker(t0: Instant) -> Breaker {
        Breaker::new(3, OPEN, Gauge::default(), t0)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let b = breaker(t0);
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success(t0);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Admission::Call, "a success reset the count");
        b.on_failure(t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(t0 + OPEN / 2), Admission::Skip);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_recovers() {
        let t0 = Instant::now();
        let b = breaker(t0);
        for _ in 0..3 {
            b.on_failure(t0);
        }
        let t1 = t0 + OPEN;
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.admit(t1), Admission::Skip, "one probe at a time");
        b.on_success(t1);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(t1), Admission::Call);
        assert_eq!(b.gauge.get(), 0);
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_full_period() {
        let t0 = Instant::now();
        let b = breaker(t0);
        for _ in 0..3 {
            b.on_failure(t0);
        }
        let t1 = t0 + OPEN;
        assert_eq!(b.admit(t1), Admission::Probe);
        b.on_failure(t1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.gauge.get(), 1);
        assert_eq!(b.admit(t1 + OPEN / 2), Admission::Skip);
        assert_eq!(b.admit(t1 + OPEN), Admission::Probe);
    }

    #[test]
    fn a_lost_probe_is_replaced() {
        let t0 = Instant::now();
        let b = breaker(t0);
        for _ in 0..3 {
            b.on_failure(t0);
        }
        assert_eq!(b.admit(t0 + OPEN), Admission::Probe);
        // Its caller was cancelled: nothing is reported.
        assert_eq!(b.admit(t0 + OPEN + OPEN / 2), Admission::Skip);
        assert_eq!(b.admit(t0 + 2 * OPEN), Admission::Probe);
    }
}
