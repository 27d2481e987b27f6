//! Prometheus metrics of the scorer, registered once; the per-request path only bumps
//! pre-resolved atomics (no label hashing or allocation per Check).

use std::collections::HashMap;

use crate::limiter::RedisMetrics;

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

/// Labels of `palisade_check_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow, throttle, block, flag, shadow_throttle, shadow_block.
    pub decision: String,
}

/// Labels of `palisade_limiter_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy name (tier or `key:<id>`): bounded by the config.
    pub policy: String,
    /// allowed, throttled, shadow_throttled.
    pub outcome: String,
}

/// Labels of `palisade_outcomes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The filter's outcome (allowed, throttled, unauthorized, ...).
    pub outcome: String,
}

/// Per-policy counters, resolved when the policy table is (re)loaded.
#[derive(Debug, Clone, Default)]
pub struct PolicyCounters {
    /// Admitted by every window.
    pub allowed: Counter,
    /// Refused and enforced.
    pub throttled: Counter,
    /// Refused, but the policy is in shadow mode.
    pub shadow_throttled: Counter,
}

/// Every metric the scorer exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    limiter: Family<PolicyLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    /// Check calls rejected as invalid input.
    pub check_invalid: Counter,
    /// Time spent inside Check, seconds.
    pub check_seconds: Histogram,
    /// Outcomes reported by filters.
    pub reports_received: Counter,
    /// Reported outcomes that failed validation and were skipped.
    pub reports_invalid: Counter,
    /// Outcomes filters said they dropped before reporting.
    pub reports_dropped_by_filter: Counter,
    /// Upstream latency from outcome reports, seconds.
    pub upstream_seconds: Histogram,
    /// Gateway latency (filter + Check) from outcome reports, seconds.
    pub gateway_seconds: Histogram,
    /// Subjects whose windows are held in memory.
    pub tracked_subjects: Gauge,
    /// The Redis store: latency, errors, breaker, degraded decisions.
    pub redis: RedisMetrics,
    /// `palisade_events_*`.
    pub events: crate::events::EventMetrics,
    /// `palisade_detect_*`.
    pub detect: crate::detect::DetectMetrics,
    /// `palisade_detect_state_*`: key state in Redis.
    pub detect_state: crate::detect::state::StateMetrics,
    /// `palisade_detect_samples_*`, `palisade_detect_training_source_*`: training vectors in
    /// Postgres.
    pub detect_samples: crate::detect::samples::SampleMetrics,
    /// `palisade_alerts_*`.
    pub alerts: crate::alerts::AlertMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let limiter = Family::<PolicyLabels, Counter>::default();
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        let check_invalid = Counter::default();
        let check_seconds = Histogram::new(exponential_buckets(2e-6, 2.0, 16));
        let reports_received = Counter::default();
        let reports_invalid = Counter::default();
        let reports_dropped_by_filter = Counter::default();
        let upstream_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 18));
        let gateway_seconds = Histogram::new(exponential_buckets(1e-4, 2.0, 18));
        let tracked_subjects = Gauge::default();
        registry.register(
            "check_decisions",
            "Check verdicts by decision",
            decisions.clone(),
        );
        registry.register(
            "check_invalid",
            "Check calls rejected as invalid input",
            check_invalid.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time spent inside Check",
            check_seconds.clone(),
        );
        registry.register(
            "limiter_decisions",
            "Rate-limit decisions by policy and outcome",
            limiter.clone(),
        );
        registry.register(
            "outcomes",
            "Request outcomes reported by filters",
            outcomes.clone(),
        );
        registry.register(
            "reports_received",
            "Outcomes received in Report calls",
            reports_received.clone(),
        );
        registry.register(
            "reports_invalid",
            "Reported outcomes skipped as invalid",
            reports_invalid.clone(),
        );
        registry.register(
            "reports_dropped_by_filter",
            "Outcomes filters dropped before they could report them",
            reports_dropped_by_filter.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Upstream latency seen by the gateway",
            upstream_seconds.clone(),
        );
        registry.register(
            "gateway_latency_seconds",
            "Time the gateway spent before forwarding or answering",
            gateway_seconds.clone(),
        );
        registry.register(
            "limiter_tracked_subjects",
            "Subjects with window state in memory",
            tracked_subjects.clone(),
        );
        let redis = RedisMetrics::register(&mut registry);
        let events = crate::events::EventMetrics::register(&mut registry);
        let detect = crate::detect::DetectMetrics::register(&mut registry);
        let detect_state = crate::detect::state::StateMetrics::register(&mut registry);
        let detect_samples = crate::detect::samples::SampleMetrics::register(&mut registry);
        let alerts = crate::alerts::AlertMetrics::register(&mut registry);
        Self {
            registry,
            decisions,
            limiter,
            outcomes,
            check_invalid,
            check_seconds,
            reports_received,
            reports_invalid,
            reports_dropped_by_filter,
            upstream_seconds,
            gateway_seconds,
            tracked_subjects,
            redis,
            events,
            detect,
            detect_state,
            detect_samples,
            alerts,
        }
    }

    /// The counter of one Check decision (resolve once, keep the handle).
    pub fn decision(&self, decision: &str) -> Counter {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: decision.to_owned(),
            })
            .clone()
    }

    /// The counters of every policy in `names`.
    pub fn policies<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> HashMap<String, PolicyCounters> {
        names
            .map(|name| {
                let c = |outcome: &str| {
                    self.limiter
                        .get_or_create(&PolicyLabels {
                            policy: name.to_owned(),
                            outcome: outcome.to_owned(),
                        })
                        .clone()
                };
                let counters = PolicyCounters {
                    allowed: c("allowed"),
                    throttled: c("throttled"),
                    shadow_throttled: c("shadow_throttled"),
                };
                (name.to_owned(), counters)
            })
            .collect()
    }

    /// The counter of one reported outcome.
    pub fn outcome(&self, outcome: &str) -> Counter {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .clone()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
