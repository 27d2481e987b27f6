//! Turning rule outcomes into the verdict the filter enforces. Pure: plain data in and out.

use palisade_proto::v1::{CheckResponse, Decision, RateLimit};

use crate::limiter::{Outcome, Policy};

/// A decision's metric label and report name (`allow`, `throttle`, `block`, `flag`,
/// `shadow_throttle`, `shadow_block`; anything else `unspecified`).
pub fn decision_name(d: i32) -> &'static str {
    match Decision::try_from(d) {
        Ok(Decision::Allow) => "allow",
        Ok(Decision::Throttle) => "throttle",
        Ok(Decision::Block) => "block",
        Ok(Decision::Flag) => "flag",
        Ok(Decision::ShadowThrottle) => "shadow_throttle",
        Ok(Decision::ShadowBlock) => "shadow_block",
        _ => "unspecified",
    }
}

/// How much a decision does to the request: allow < flag < shadow throttle < shadow block <
/// throttle < block. Of two verdicts on one request, the more severe stands.
pub fn severity(decision: i32) -> u8 {
    match Decision::try_from(decision) {
        Ok(Decision::Flag) => 1,
        Ok(Decision::ShadowThrottle) => 2,
        Ok(Decision::ShadowBlock) => 3,
        Ok(Decision::Throttle) => 4,
        Ok(Decision::Block) => 5,
        _ => 0,
    }
}

/// Whole seconds, rounded up, so a client never retries too early.
pub fn ceil_secs(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1_000)).unwrap_or(u32::MAX)
}

/// The verdict for a request that went through `policy` with `outcome`.
pub fn from_limit(policy: &Policy, outcome: &Outcome) -> CheckResponse {
    let rate_limit = (outcome.limit > 0).then(|| RateLimit {
        limit: outcome.limit,
        remaining: outcome.remaining,
        reset_seconds: ceil_secs(outcome.reset_ms),
        window_seconds: ceil_secs(outcome.window_ms),
        policy: policy.name.clone(),
    });
    let (decision, reason, retry_after_seconds) = if outcome.admitted {
        (Decision::Allow, "ok".to_owned(), 0)
    } else {
        let retry = ceil_secs(outcome.retry_after_ms).max(1);
        if policy.shadow {
            (
                Decision::ShadowThrottle,
                format!("rate_limited:{}", policy.name),
                retry,
            )
        } else {
            (
                Decision::Throttle,
                format!("rate_limited:{}", policy.name),
                retry,
            )
        }
    };
    CheckResponse {
        decision: decision as i32,
        reason,
        retry_after_seconds,
        rate_limit,
        anomaly_score: 0.0,
        model_version: String::new(),
        degraded: false,
    }
}

/// The outcome standing in for the windows when Redis cannot answer and the degraded mode is
/// `fail_open` (`admitted`) or `fail_closed`: no quota to report (no `RateLimit` headers),
/// retry after one second.
pub fn unavailable(admitted: bool) -> Outcome {
    Outcome {
        admitted,
        limit: 0,
        window_ms: 0,
        remaining: 0,
        reset_ms: 0,
        retry_after_ms: if admitted { 0 } else { 1_000 },
    }
}

/// Flags a verdict built from [`unavailable`]: degraded, reason `limiter_unavailable`.
pub fn mark_unavailable(response: &mut CheckResponse) {
    response.degraded = true;
    response.reason = "limiter_unavailable".to_owned();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Algorithm, limiter::WindowSpec};

    fn policy(shadow: bool) -> Policy {
        Policy {
            name: "free".into(),
            windows: vec![WindowSpec {
                limit: 5,
                window_ms: 60_000,
                algorithm: Algorithm::SlidingLog,
            }],
            shadow,
        }
    }

    fn refused() -> Outcome {
        Outcome {
            admitted: false,
            limit: 5,
            window_ms: 60_000,
            remaining: 0,
            reset_ms: 1_200,
            retry_after_ms: 1_200,
        }
    }

    #[test]
    fn throttle_rounds_retry_after_up() {
        let r = from_limit(&policy(false), &refused());
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(r.retry_after_seconds, 2);
        let rl = r.rate_limit.unwrap();
        assert_eq!(
            (rl.limit, rl.remaining, rl.reset_seconds, rl.window_seconds),
            (5, 0, 2, 60)
        );
        assert_eq!(rl.policy, "free");
        assert_eq!(r.reason, "rate_limited:free");
    }

    #[test]
    fn shadow_policies_pass_but_say_so() {
        let r = from_limit(&policy(true), &refused());
        assert_eq!(r.decision, Decision::ShadowThrottle as i32);
    }

    #[test]
    fn allow_carries_the_quota() {
        let o = Outcome {
            admitted: true,
            remaining: 3,
            retry_after_ms: 0,
            ..refused()
        };
        let r = from_limit(&policy(false), &o);
        assert_eq!(r.decision, Decision::Allow as i32);
        assert_eq!(r.retry_after_seconds, 0);
        assert_eq!(r.rate_limit.unwrap().remaining, 3);
    }

    #[test]
    fn fail_closed_throttles_for_a_second_without_quota_headers() {
        let mut r = from_limit(&policy(false), &unavailable(false));
        mark_unavailable(&mut r);
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(r.retry_after_seconds, 1);
        assert!(r.rate_limit.is_none());
        assert!(r.degraded);
        assert_eq!(r.reason, "limiter_unavailable");
        let shadow = from_limit(&policy(true), &unavailable(false));
        assert_eq!(shadow.decision, Decision::ShadowThrottle as i32);
        let open = from_limit(&policy(false), &unavailable(true));
        assert_eq!(open.decision, Decision::Allow as i32);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let o = Outcome {
            retry_after_ms: 1,
            ..refused()
        };
        assert_eq!(from_limit(&policy(false), &o).retry_after_seconds, 1);
    }
}
