//! The filter's counters. Envoy shows them on its admin `/stats`, usually prefixed
//! `wasmcustom.`. A failing metric host call never affects a request: it is logged at debug
//! and ignored.

use palisade_proto::v1::Outcome;

use crate::host::Host;

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Forwarded on an allow verdict.
    RequestsAllowed,
    /// Forwarded with the flag header.
    RequestsFlagged,
    /// Answered 401.
    RequestsUnauthorized,
    /// Answered 429.
    RequestsThrottled,
    /// Answered 403.
    RequestsBlocked,
    /// Forwarded on a shadow throttle or shadow block.
    RequestsShadowed,
    /// No verdict from the scorer (dispatch failure, gRPC error, bad response).
    ScorerErrors,
    /// Forwarded without a verdict (`fail_open`).
    FailOpen,
    /// Answered 503 by the gateway (`fail_closed`, or a request it could not safely forward).
    FailClosed,
    /// Outcomes delivered to the scorer in successful `Report` calls.
    ReportsSent,
    /// Outcomes dropped: queue overflow or a failed `Report` call.
    ReportsDropped,
    /// Failed authentications answered 429 (the client address is over the scorer's
    /// `unauthenticated` policy). Also counted in [`Metric::RequestsThrottled`], so that
    /// counter stays "every 429"; this one tells credential stuffing apart.
    RequestsUnauthorizedThrottled,
}

impl Metric {
    /// Every counter, in definition order.
    pub const ALL: [Metric; 12] = [
        Metric::RequestsAllowed,
        Metric::RequestsFlagged,
        Metric::RequestsUnauthorized,
        Metric::RequestsThrottled,
        Metric::RequestsBlocked,
        Metric::RequestsShadowed,
        Metric::ScorerErrors,
        Metric::FailOpen,
        Metric::FailClosed,
        Metric::ReportsSent,
        Metric::ReportsDropped,
        Metric::RequestsUnauthorizedThrottled,
    ];

    /// The name Envoy exposes.
    pub fn name(self) -> &'static str {
        match self {
            Self::RequestsAllowed => "palisade_requests_allowed",
            Self::RequestsFlagged => "palisade_requests_flagged",
            Self::RequestsUnauthorized => "palisade_requests_unauthorized",
            Self::RequestsThrottled => "palisade_requests_throttled",
            Self::RequestsBlocked => "palisade_requests_blocked",
            Self::RequestsShadowed => "palisade_requests_shadowed",
            Self::ScorerErrors => "palisade_scorer_errors",
            Self::FailOpen => "palisade_fail_open",
            Self::FailClosed => "palisade_fail_closed",
            Self::ReportsSent => "palisade_reports_sent",
            Self::ReportsDropped => "palisade_reports_dropped",
            Self::RequestsUnauthorizedThrottled => "palisade_requests_unauthorized_throttled",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The request counters for how a request ended; scorer errors count on top of the
    /// fail-open / fail-closed counter.
    pub fn for_outcome(outcome: Outcome, scorer_error: bool) -> impl Iterator<Item = Metric> {
        let primary = match outcome {
            Outcome::Allowed => Some(Metric::RequestsAllowed),
            Outcome::Flagged => Some(Metric::RequestsFlagged),
            Outcome::Unauthorized => Some(Metric::RequestsUnauthorized),
            Outcome::Throttled => Some(Metric::RequestsThrottled),
            Outcome::Blocked => Some(Metric::RequestsBlocked),
            Outcome::ShadowThrottled | Outcome::ShadowBlocked => Some(Metric::RequestsShadowed),
            Outcome::FailOpen => Some(Metric::FailOpen),
            Outcome::FailClosed => Some(Metric::FailClosed),
            Outcome::Unspecified => None,
        };
        scorer_error
            .then_some(Metric::ScorerErrors)
            .into_iter()
            .chain(primary)
    }
}

/// Host ids of the counters, defined once per root context.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    ids: [Option<u32>; Metric::ALL.len()],
}

impl Counters {
    /// Defines every counter. A counter the host refuses is left out (and logged).
    pub fn define(host: &impl Host) -> Self {
        let mut ids = [None; Metric::ALL.len()];
        for m in Metric::ALL {
            match host.define_counter(m.name()) {
                Ok(id) => ids[m.index()] = Some(id),
                Err(e) => log::debug!("defining metric {}: {e}", m.name()),
            }
        }
        Self { ids }
    }

    /// Adds `by` to `metric`.
    pub fn add(&self, host: &impl Host, metric: Metric, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.ids[metric.index()]
            && let Err(e) = host.increment_counter(id, by)
        {
            log::debug!("incrementing metric {}: {e}", metric.name());
        }
    }

    /// Adds one to `metric`.
    pub fn incr(&self, host: &impl Host, metric: Metric) {
        self.add(host, metric, 1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn names_are_exact_and_indices_match() {
        let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "palisade_requests_allowed",
                "palisade_requests_flagged",
                "palisade_requests_unauthorized",
                "palisade_requests_throttled",
                "palisade_requests_blocked",
                "palisade_requests_shadowed",
                "palisade_scorer_errors",
                "palisade_fail_open",
                "palisade_fail_closed",
                "palisade_reports_sent",
                "palisade_reports_dropped",
                "palisade_requests_unauthorized_throttled",
            ]
        );
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn outcome_mapping() {
        let m = |o, e| Metric::for_outcome(o, e).collect::<Vec<_>>();
        assert_eq!(m(Outcome::Allowed, false), [Metric::RequestsAllowed]);
        assert_eq!(m(Outcome::ShadowBlocked, false), [Metric::RequestsShadowed]);
        assert_eq!(
            m(Outcome::FailOpen, true),
            [Metric::ScorerErrors, Metric::FailOpen]
        );
        assert_eq!(m(Outcome::FailClosed, false), [Metric::FailClosed]);
        assert!(m(Outcome::Unspecified, false).is_empty());
    }
}
