//! The filter's own view of a decision, independent of where it came from. Today every
//! verdict comes from a gRPC `Check` ([`crate::check`]); a local fast path (leased quotas,
//! cached verdicts) will produce the same type, and [`crate::decision`] will not notice.

use palisade_proto::v1::{CheckResponse, Decision, RateLimit};

/// The rate-limit state a verdict carries, for the `RateLimit` / `RateLimit-Policy` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Quota of the window.
    pub limit: u32,
    /// Requests left in it.
    pub remaining: u32,
    /// Seconds until it has room again.
    pub reset_seconds: u32,
    /// Its length in seconds.
    pub window_seconds: u32,
    /// Policy name.
    pub policy: String,
}

impl From<RateLimit> for RateLimitInfo {
    fn from(r: RateLimit) -> Self {
        Self {
            limit: r.limit,
            remaining: r.remaining,
            reset_seconds: r.reset_seconds,
            window_seconds: r.window_seconds,
            policy: r.policy,
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    /// Forward.
    Allow,
    /// Forward, telling the backend the request looks suspicious.
    Flag,
    /// Answer 429.
    Throttle {
        /// Seconds the client should wait (the filter sends at least 1).
        retry_after_seconds: u32,
    },
    /// Answer 403.
    Block,
    /// Forward; a throttle would have applied but its policy is in shadow mode.
    ShadowThrottle,
    /// Forward; a block would have applied but its policy is in shadow mode.
    ShadowBlock,
}

/// A decision about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What to do.
    pub kind: VerdictKind,
    /// Short machine-readable reason, e.g. `rate_limited:free`.
    pub reason: String,
    /// Rate-limit state, when a policy applied.
    pub rate_limit: Option<RateLimitInfo>,
    /// The scorer's anomaly score (0: not scored), for the outcome report.
    pub anomaly_score: f64,
    /// The model behind the score, for the outcome report.
    pub model_version: String,
}

/// Why no verdict could be had from the scorer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScorerFailure {
    /// The host refused to start the call (unknown cluster, ...).
    #[error("scorer call could not be dispatched")]
    Dispatch,
    /// The call ended with a non-OK gRPC status (14 unavailable, 4 deadline exceeded, ...).
    #[error("scorer call failed with grpc status {0}")]
    Status(u32),
    /// OK status but no message.
    #[error("scorer sent an empty response")]
    EmptyResponse,
    /// OK status but the message does not decode.
    #[error("scorer sent an undecodable response")]
    Undecodable,
    /// `DECISION_UNSPECIFIED`.
    #[error("scorer sent no decision")]
    Unspecified,
    /// A decision this filter does not know (a newer scorer?).
    #[error("scorer sent unknown decision {0}")]
    UnknownDecision(i32),
}

impl ScorerFailure {
    /// Short machine-readable reason, for outcome reports.
    pub fn reason(&self) -> String {
        match self {
            Self::Dispatch => "scorer_dispatch_failed".into(),
            Self::Status(code) => format!("scorer_grpc_status_{code}"),
            Self::EmptyResponse => "scorer_empty_response".into(),
            Self::Undecodable => "scorer_bad_response".into(),
            Self::Unspecified => "scorer_unspecified_decision".into(),
            Self::UnknownDecision(_) => "scorer_unknown_decision".into(),
        }
    }
}

impl TryFrom<CheckResponse> for Verdict {
    type Error = ScorerFailure;

    fn try_from(r: CheckResponse) -> Result<Self, ScorerFailure> {
        let kind = match Decision::try_from(r.decision) {
            Ok(Decision::Allow) => VerdictKind::Allow,
            Ok(Decision::Flag) => VerdictKind::Flag,
            Ok(Decision::Throttle) => VerdictKind::Throttle {
                retry_after_seconds: r.retry_after_seconds,
            },
            Ok(Decision::Block) => VerdictKind::Block,
            Ok(Decision::ShadowThrottle) => VerdictKind::ShadowThrottle,
            Ok(Decision::ShadowBlock) => VerdictKind::ShadowBlock,
            Ok(Decision::Unspecified) => return Err(ScorerFailure::Unspecified),
            Err(_) => return Err(ScorerFailure::UnknownDecision(r.decision)),
        };
        Ok(Self {
            kind,
            reason: r.reason,
            rate_limit: r.rate_limit.map(RateLimitInfo::from),
            anomaly_score: r.anomaly_score,
            model_version: r.model_version,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn response(decision: Decision) -> CheckResponse {
        CheckResponse {
            decision: decision as i32,
            reason: "why".into(),
            retry_after_seconds: 7,
            rate_limit: Some(RateLimit {
                limit: 10,
                remaining: 0,
                reset_seconds: 3,
                window_seconds: 60,
                policy: "free".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_decision_converts() {
        let cases = [
            (Decision::Allow, VerdictKind::Allow),
            (Decision::Flag, VerdictKind::Flag),
            (
                Decision::Throttle,
                VerdictKind::Throttle {
                    retry_after_seconds: 7,
                },
            ),
            (Decision::Block, VerdictKind::Block),
            (Decision::ShadowThrottle, VerdictKind::ShadowThrottle),
            (Decision::ShadowBlock, VerdictKind::ShadowBlock),
        ];
        for (decision, kind) in cases {
            let v = Verdict::try_from(response(decision)).unwrap();
            assert_eq!(v.kind, kind);
            assert_eq!(v.reason, "why");
            assert_eq!(v.rate_limit.unwrap().policy, "free");
        }
    }

    #[test]
    fn unspecified_and_unknown_are_failures() {
        assert_eq!(
            Verdict::try_from(response(Decision::Unspecified)),
            Err(ScorerFailure::Unspecified)
        );
        let mut r = response(Decision::Allow);
        r.decision = 42;
        assert_eq!(
            Verdict::try_from(r),
            Err(ScorerFailure::UnknownDecision(42))
        );
    }
}
