//! The shared limiter: the Redis store behind a command timeout and a circuit breaker.
//!
//! [`SharedLimiter::check`] answers `Some(outcome)` when Redis decided, `None` when it could
//! not (breaker open, timeout, error): the engine then decides in the configured
//! [`DegradedMode`]. Recovery is automatic: the breaker's half-open probe finds Redis again.

use std::time::{Duration, Instant};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::{
    Outcome, Policy,
    breaker::{Admission, Breaker},
    redis::{Fetched, RedisStore, RedisStoreError},
};
use crate::config::{DegradedMode, RedisConfig};

/// Error kinds of `palisade_redis_errors_total` (see [`RedisStoreError::kind`]).
const ERROR_KINDS: [&str; 7] = [
    "timeout", "io", "cluster", "script", "reply", "server", "config",
];

/// Labels of `palisade_redis_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// timeout, io, cluster, script, reply, server, config.
    pub kind: String,
}

/// Labels of `palisade_limiter_degraded_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DegradedLabels {
    /// local, fail_open, fail_closed.
    pub mode: String,
}

/// The shared limiter's metrics, registered with the scorer's.
#[derive(Debug, Clone)]
pub struct RedisMetrics {
    /// Time of one script call (successful or not), seconds.
    pub seconds: Histogram,
    errors: Family<ErrorLabels, Counter>,
    degraded: Family<DegradedLabels, Counter>,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Gauge,
    /// Checks that did not call Redis because the breaker was open.
    pub breaker_skipped: Counter,
}

impl RedisMetrics {
    /// Registers them in `registry` (prefix `palisade_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 16)),
            errors: Family::default(),
            degraded: Family::default(),
            breaker_state: Gauge::default(),
            breaker_skipped: Counter::default(),
        };
        registry.register(
            "redis_command_duration_seconds",
            "Time of one rate-limit script call to Redis",
            m.seconds.clone(),
        );
        registry.register(
            "redis_errors",
            "Failed rate-limit calls to Redis by kind",
            m.errors.clone(),
        );
        registry.register(
            "redis_breaker_state",
            "Redis circuit breaker: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        registry.register(
            "redis_breaker_skipped",
            "Checks decided without calling Redis because the breaker was open",
            m.breaker_skipped.clone(),
        );
        registry.register(
            "limiter_degraded_decisions",
            "Rate-limit decisions taken without Redis, by degraded mode",
            m.degraded.clone(),
        );
        for kind in ERROR_KINDS {
            m.error(kind);
        }
        m
    }

    /// The error counter of one kind.
    pub fn error(&self, kind: &str) -> Counter {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
            })
            .clone()
    }

    /// The degraded-decision counter of one mode.
    pub fn degraded(&self, mode: DegradedMode) -> Counter {
        let mode = match mode {
            DegradedMode::Local => "local",
            DegradedMode::FailOpen => "fail_open",
            DegradedMode::FailClosed => "fail_closed",
        };
        self.degraded
            .get_or_create(&DegradedLabels {
                mode: mode.to_owned(),
            })
            .clone()
    }
}

/// Redis windows behind a timeout and a breaker.
#[derive(Debug)]
pub struct SharedLimiter {
    store: RedisStore,
    breaker: Breaker,
    timeout: Duration,
    mode: DegradedMode,
    metrics: RedisMetrics,
    errors: [Counter; ERROR_KINDS.len()],
    degraded: Counter,
}

impl SharedLimiter {
    /// A limiter for an enabled `config`; does not connect yet.
    pub fn new(config: &RedisConfig, metrics: &RedisMetrics) -> Result<Self, RedisStoreError> {
        Ok(Self {
            store: RedisStore::new(config)?,
            breaker: Breaker::new(
                config.breaker_failures,
                Duration::from_millis(config.breaker_open_ms),
                metrics.breaker_state.clone(),
                Instant::now(),
            ),
            timeout: Duration::from_millis(config.timeout_ms),
            mode: config.degraded_mode,
            metrics: metrics.clone(),
            errors: ERROR_KINDS.map(|k| metrics.error(k)),
            degraded: metrics.degraded(config.degraded_mode),
        })
    }

    /// What to decide when [`check`](Self::check) answers `None`.
    pub fn degraded_mode(&self) -> DegradedMode {
        self.mode
    }

    /// Counts one decision taken in the degraded mode.
    pub fn count_degraded(&self) {
        self.degraded.inc();
    }

    /// The underlying store (tests and benchmarks look at its keys).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// Connects and loads the script, waiting at most `within`; a failure is logged and
    /// left to the breaker (the scorer serves degraded until Redis answers).
    pub async fn warm_up(&self, within: Duration) {
        match tokio::time::timeout(within, self.store.warm_up()).await {
            Ok(Ok(())) => tracing::info!("redis connected, script loaded"),
            Ok(Err(e)) => tracing::warn!(error = %e, "redis not reachable yet; serving degraded"),
            Err(_) => tracing::warn!("redis not reachable yet (timeout); serving degraded"),
        }
    }

    /// Redis' answer for `subject`, or `None` when Redis cannot answer within the timeout
    /// (or the breaker is open, in which case Redis is not called at all).
    pub async fn check(&self, subject: &str, policy: &Policy, now_ms: u64) -> Option<Outcome> {
        self.check_many(subject, &[policy], now_ms)
            .await
            .map(|(o, _)| o)
    }

    /// [`check`](Self::check) for several policies of one subject at once (all or nothing,
    /// one round trip); also says which policy owns the reported window.
    pub async fn check_many(
        &self,
        subject: &str,
        policies: &[&Policy],
        now_ms: u64,
    ) -> Option<(Outcome, usize)> {
        self.check_many_fetching(subject, policies, now_ms, None)
            .await
            .0
    }

    /// [`check_many`](Self::check_many), also fetching `fetch` (a key in `subject`'s hash
    /// slot) in the same round trip, under the same timeout and breaker.
    pub async fn check_many_fetching(
        &self,
        subject: &str,
        policies: &[&Policy],
        now_ms: u64,
        fetch: Option<&str>,
    ) -> (Option<(Outcome, usize)>, Fetched) {
        let failed = || Fetched::failed_if(fetch.is_some());
        if self.breaker.admit(Instant::now()) == Admission::Skip {
            self.metrics.breaker_skipped.inc();
            return (None, failed());
        }
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.timeout,
            self.store
                .check_many_fetching(subject, policies, now_ms, fetch),
        )
        .await
        .unwrap_or(Err(RedisStoreError::Timeout));
        let done = Instant::now();
        self.metrics
            .seconds
            .observe(done.duration_since(started).as_secs_f64());
        match result {
            Ok((outcome, fetched)) => {
                self.breaker.on_success(done);
                (Some(outcome), fetched)
            }
            Err(e) => {
                self.breaker.on_failure(done);
                let kind = e.kind();
                if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                    self.errors[i].inc();
                }
                tracing::debug!(error = %e, "redis limiter call failed");
                (None, failed())
            }
        }
    }
}
