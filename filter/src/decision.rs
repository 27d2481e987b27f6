//! The decision policy: a verdict (or the failure to get one) plus the configuration, in;
//! what to do with the request, out. Pure: no host calls, time comes in as an argument.

use palisade_proto::v1::Outcome;
use palisade_token::{Claims, sign};
use serde::Serialize;

use crate::auth::AuthError;
use crate::config::{Config, FailureMode, HeaderNames};
use crate::verdict::{RateLimitInfo, ScorerFailure, Verdict, VerdictKind};

/// Header names of the rate-limit draft (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// See [`RATELIMIT_POLICY`].
pub const RATELIMIT: &str = "ratelimit";

const MAX_FLAG_BYTES: usize = 256;

/// The request a decision is about, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The request id the gateway forwards.
    pub request_id: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// `:path` with its query, exactly as forwarded.
    pub full_path: &'a str,
    /// The authenticated key id.
    pub key_id: &'a str,
    /// Current time, Unix seconds (the gateway token's timestamp).
    pub now_secs: u64,
}

/// Forward the request upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Set on the upstream request (replacing any value).
    pub request_headers: Vec<(String, String)>,
    /// Set on the upstream's response.
    pub response_headers: Vec<(String, String)>,
}

/// Answer the client from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body (small JSON).
    pub body: Vec<u8>,
}

/// Forward or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// See [`Forward`].
    Forward(Forward),
    /// See [`LocalResponse`].
    Respond(LocalResponse),
}

/// What to do with a request, and how it will be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Forward or answer.
    pub effect: Effect,
    /// How the request ends, for metrics and the outcome report.
    pub outcome: Outcome,
    /// Short machine-readable reason.
    pub reason: String,
    /// True when the scorer failed to give a verdict.
    pub scorer_error: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u32>,
}

/// Turns a verdict, or the scorer's failure to give one, into an action.
pub fn decide(
    verdict: Result<Verdict, ScorerFailure>,
    subject: &Subject<'_>,
    config: &Config,
) -> Action {
    let verdict = match verdict {
        Ok(v) => v,
        Err(failure) => return on_scorer_failure(&failure, subject, config),
    };
    let rate_limit = verdict.rate_limit.as_ref();
    let reason = verdict.reason.clone();
    match verdict.kind {
        VerdictKind::Allow => forward(subject, config, rate_limit, None, Outcome::Allowed, reason),
        VerdictKind::Flag => {
            let flag = flag_value(&verdict.reason);
            forward(
                subject,
                config,
                rate_limit,
                Some(flag),
                Outcome::Flagged,
                reason,
            )
        }
        VerdictKind::ShadowThrottle => forward(
            subject,
            config,
            rate_limit,
            None,
            Outcome::ShadowThrottled,
            reason,
        ),
        VerdictKind::ShadowBlock => forward(
            subject,
            config,
            rate_limit,
            None,
            Outcome::ShadowBlocked,
            reason,
        ),
        VerdictKind::Throttle {
            retry_after_seconds,
        } => {
            let retry_after = retry_after_seconds.max(1);
            let mut response = local(
                429,
                &config.headers,
                &ErrorBody {
                    error: "too_many_requests",
                    request_id: subject.request_id,
                    reason: Some(&verdict.reason),
                    retry_after_seconds: Some(retry_after),
                },
                rate_limit,
            );
            response
                .headers
                .push(("retry-after".into(), retry_after.to_string()));
            respond(response, Outcome::Throttled, reason, false)
        }
        VerdictKind::Block => {
            let response = local(
                403,
                &config.headers,
                &ErrorBody {
                    error: "forbidden",
                    request_id: subject.request_id,
                    reason: Some(&verdict.reason),
                    retry_after_seconds: None,
                },
                rate_limit,
            );
            respond(response, Outcome::Blocked, reason, false)
        }
    }
}

fn on_scorer_failure(failure: &ScorerFailure, subject: &Subject<'_>, config: &Config) -> Action {
    match config.failure_mode {
        FailureMode::FailClosed => Action {
            scorer_error: true,
            ..unavailable(subject.request_id, &failure.reason(), &config.headers)
        },
        FailureMode::FailOpen => {
            let action = forward(
                subject,
                config,
                None,
                None,
                Outcome::FailOpen,
                failure.reason(),
            );
            Action {
                // Forwarding failed too (unsignable request): that is not a scorer error.
                scorer_error: action.outcome == Outcome::FailOpen,
                ..action
            }
        }
    }
}

fn forward(
    subject: &Subject<'_>,
    config: &Config,
    rate_limit: Option<&RateLimitInfo>,
    flag: Option<String>,
    outcome: Outcome,
    reason: String,
) -> Action {
    let claims = Claims {
        timestamp: subject.now_secs,
        request_id: subject.request_id,
        method: subject.method,
        path: subject.full_path,
        key_id: subject.key_id,
    };
    let token = match sign(&config.token_key, &claims) {
        Ok(token) => token,
        // Never forward unsigned: the backend would (rightly) refuse it anyway.
        Err(e) => {
            log::warn!(
                "request {}: cannot sign gateway token ({e}); answering 503",
                subject.request_id
            );
            return unavailable(subject.request_id, "token_sign_failed", &config.headers);
        }
    };
    let h = &config.headers;
    let mut request_headers = vec![
        (h.gateway_token.clone(), token),
        (h.key_id.clone(), subject.key_id.to_owned()),
    ];
    if let Some(flag) = flag {
        request_headers.push((h.flag.clone(), flag));
    }
    Action {
        effect: Effect::Forward(Forward {
            request_headers,
            response_headers: rate_limit.map(rate_limit_headers).unwrap_or_default(),
        }),
        outcome,
        reason,
        scorer_error: false,
    }
}

fn respond(
    response: LocalResponse,
    outcome: Outcome,
    reason: String,
    scorer_error: bool,
) -> Action {
    Action {
        effect: Effect::Respond(response),
        outcome,
        reason,
        scorer_error,
    }
}

fn local(
    status: u32,
    names: &HeaderNames,
    body: &ErrorBody<'_>,
    rate_limit: Option<&RateLimitInfo>,
) -> LocalResponse {
    // Serializing these plain structs cannot fail; the fallback only avoids a panic path.
    let json = serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"internal"}"#.to_vec());
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (names.request_id.clone(), body.request_id.to_owned()),
    ];
    if let Some(r) = rate_limit {
        headers.extend(rate_limit_headers(r));
    }
    LocalResponse {
        status,
        headers,
        body: json,
    }
}

/// 401 for any authentication failure. The body never echoes the key.
pub fn unauthorized(request_id: &str, error: AuthError, headers: &HeaderNames) -> Action {
    let body = ErrorBody {
        error: "unauthorized",
        request_id,
        reason: None,
        retry_after_seconds: None,
    };
    respond(
        local(401, headers, &body, None),
        Outcome::Unauthorized,
        error.reason().to_owned(),
        false,
    )
}

/// Reason of a failed authentication answered 429.
pub const AUTH_FAILURES_RATE_LIMITED: &str = "auth_failures_rate_limited";

/// The answer to a failed authentication once the scorer's per-client-IP policy was asked:
/// 429 with `Retry-After` and the rate-limit headers on THROTTLE, else (ALLOW, any other
/// verdict, any scorer failure) the same 401 as without asking. Never forwards: a failed
/// authentication is the client's fault, so a scorer failure is not a 503 either.
pub fn unauthenticated(
    verdict: Result<Verdict, ScorerFailure>,
    request_id: &str,
    error: AuthError,
    headers: &HeaderNames,
) -> Action {
    let verdict = match verdict {
        Ok(v) => v,
        Err(_) => {
            return Action {
                scorer_error: true,
                ..unauthorized(request_id, error, headers)
            };
        }
    };
    let VerdictKind::Throttle {
        retry_after_seconds,
    } = verdict.kind
    else {
        return unauthorized(request_id, error, headers);
    };
    let retry_after = retry_after_seconds.max(1);
    let mut response = local(
        429,
        headers,
        &ErrorBody {
            error: "too_many_requests",
            request_id,
            reason: Some(AUTH_FAILURES_RATE_LIMITED),
            retry_after_seconds: Some(retry_after),
        },
        verdict.rate_limit.as_ref(),
    );
    response
        .headers
        .push(("retry-after".into(), retry_after.to_string()));
    respond(
        response,
        Outcome::Throttled,
        AUTH_FAILURES_RATE_LIMITED.to_owned(),
        false,
    )
}

/// 503: the gateway cannot decide safely (scorer down in fail_closed mode, a host call that
/// failed, an unsignable request).
pub fn unavailable(request_id: &str, reason: &str, headers: &HeaderNames) -> Action {
    let body = ErrorBody {
        error: "unavailable",
        request_id,
        reason: None,
        retry_after_seconds: None,
    };
    respond(
        local(503, headers, &body, None),
        Outcome::FailClosed,
        reason.to_owned(),
        false,
    )
}

/// `RateLimit-Policy: "<policy>";q=<limit>;w=<window>` and
/// `RateLimit: "<policy>";r=<remaining>;t=<reset>`.
pub fn rate_limit_headers(r: &RateLimitInfo) -> Vec<(String, String)> {
    let policy = sf_string(if r.policy.is_empty() {
        "default"
    } else {
        &r.policy
    });
    vec![
        (
            RATELIMIT_POLICY.to_owned(),
            format!("{policy};q={};w={}", r.limit, r.window_seconds),
        ),
        (
            RATELIMIT.to_owned(),
            format!("{policy};r={};t={}", r.remaining, r.reset_seconds),
        ),
    ]
}

/// A structured-field string (RFC 8941 §3.3.3): quoted, `\` and `"` escaped, anything
/// outside printable ASCII replaced with `_`.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

/// The flag header's value: the reason, limited to printable ASCII and 256 bytes.
fn flag_value(reason: &str) -> String {
    let v: String = reason
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '_' })
        .take(MAX_FLAG_BYTES)
        .collect();
    let v = v.trim();
    if v.is_empty() {
        "flagged".to_owned()
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::test_support::config_with;

    const NOW: u64 = 1_700_000_000;

    fn subject() -> Subject<'static> {
        Subject {
            request_id: "rid-1",
            method: "GET",
            full_path: "/v1/items?id=7",
            key_id: "alice",
            now_secs: NOW,
        }
    }

    fn closed() -> Config {
        config_with(serde_json::json!({}))
    }

    fn open() -> Config {
        config_with(serde_json::json!({ "failure_mode": "fail_open" }))
    }

    fn rl() -> RateLimitInfo {
        RateLimitInfo {
            limit: 100,
            remaining: 0,
            reset_seconds: 12,
            window_seconds: 60,
            policy: "free".into(),
        }
    }

    fn verdict(kind: VerdictKind, rate_limit: Option<RateLimitInfo>) -> Verdict {
        Verdict {
            kind,
            reason: "because".into(),
            rate_limit,
            anomaly_score: 0.0,
            model_version: String::new(),
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn forwarded(a: &Action) -> &Forward {
        match &a.effect {
            Effect::Forward(f) => f,
            Effect::Respond(r) => panic!("expected forward, got {r:?}"),
        }
    }

    fn responded(a: &Action) -> &LocalResponse {
        match &a.effect {
            Effect::Respond(r) => r,
            Effect::Forward(f) => panic!("expected local response, got {f:?}"),
        }
    }

    fn json(r: &LocalResponse) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn expected_token() -> String {
        sign(
            &closed().token_key,
            &Claims {
                timestamp: NOW,
                request_id: "rid-1",
                method: "GET",
                path: "/v1/items?id=7",
                key_id: "alice",
            },
        )
        .unwrap()
    }

    #[test]
    fn allow_forwards_with_signed_token_and_key_id() {
        let a = decide(Ok(verdict(VerdictKind::Allow, None)), &subject(), &closed());
        assert_eq!(a.outcome, Outcome::Allowed);
        assert!(!a.scorer_error);
        let f = forwarded(&a);
        assert_eq!(
            header(&f.request_headers, "x-gateway-token"),
            Some(expected_token().as_str())
        );
        assert_eq!(
            header(&f.request_headers, "x-palisade-key-id"),
            Some("alice")
        );
        assert_eq!(header(&f.request_headers, "x-palisade-flag"), None);
        assert!(f.response_headers.is_empty());
    }

    #[test]
    fn flag_forwards_with_flag_header() {
        let mut v = verdict(VerdictKind::Flag, Some(rl()));
        v.reason = "anomaly:0.93\r\nx-evil: 1".into();
        let a = decide(Ok(v), &subject(), &closed());
        assert_eq!(a.outcome, Outcome::Flagged);
        let f = forwarded(&a);
        assert_eq!(
            header(&f.request_headers, "x-palisade-flag"),
            Some("anomaly:0.93__x-evil: 1")
        );
        assert_eq!(
            header(&f.response_headers, "ratelimit"),
            Some(r#""free";r=0;t=12"#)
        );
    }

    #[test]
    fn shadow_verdicts_forward() {
        for (kind, outcome) in [
            (VerdictKind::ShadowThrottle, Outcome::ShadowThrottled),
            (VerdictKind::ShadowBlock, Outcome::ShadowBlocked),
        ] {
            let a = decide(Ok(verdict(kind, None)), &subject(), &closed());
            assert_eq!(a.outcome, outcome);
            let f = forwarded(&a);
            assert!(header(&f.request_headers, "x-gateway-token").is_some());
            assert_eq!(header(&f.request_headers, "x-palisade-flag"), None);
        }
    }

    #[test]
    fn failed_auth_throttle_answers_429_never_forwarding() {
        let names = HeaderNames::default();
        let throttle = VerdictKind::Throttle {
            retry_after_seconds: 0,
        };
        let a = unauthenticated(
            Ok(verdict(throttle, Some(rl()))),
            "rid-1",
            AuthError::Unknown,
            &names,
        );
        assert_eq!(a.outcome, Outcome::Throttled);
        assert_eq!(a.reason, "auth_failures_rate_limited");
        assert!(!a.scorer_error);
        let r = responded(&a);
        assert_eq!(r.status, 429);
        assert_eq!(header(&r.headers, "retry-after"), Some("1"));
        assert_eq!(header(&r.headers, "ratelimit"), Some(r#""free";r=0;t=12"#));
        assert_eq!(json(r)["reason"], "auth_failures_rate_limited");
        assert_eq!(json(r)["error"], "too_many_requests");
    }

    #[test]
    fn failed_auth_otherwise_answers_the_same_401() {
        let names = HeaderNames::default();
        let plain = unauthorized("rid-1", AuthError::Missing, &names);
        let verdicts = [
            VerdictKind::Allow,
            VerdictKind::Flag,
            VerdictKind::Block,
            VerdictKind::ShadowThrottle,
            VerdictKind::ShadowBlock,
        ]
        .into_iter()
        .map(|k| Ok(verdict(k, Some(rl()))));
        for v in verdicts {
            let a = unauthenticated(v.clone(), "rid-1", AuthError::Missing, &names);
            assert_eq!(a, plain, "{v:?}");
        }
        for failure in [
            ScorerFailure::Dispatch,
            ScorerFailure::Status(14),
            ScorerFailure::Undecodable,
            ScorerFailure::EmptyResponse,
        ] {
            let a = unauthenticated(Err(failure), "rid-1", AuthError::Missing, &names);
            assert_eq!(responded(&a).status, 401);
            assert_eq!(a.outcome, Outcome::Unauthorized);
            assert_eq!(a.reason, "missing_api_key");
            assert!(a.scorer_error, "counted as a scorer error");
            assert_eq!(a.effect, plain.effect);
        }
    }

    #[test]
    fn throttle_answers_429_with_retry_after_and_rate_limit() {
        let a = decide(
            Ok(verdict(
                VerdictKind::Throttle {
                    retry_after_seconds: 12,
                },
                Some(rl()),
            )),
            &subject(),
            &closed(),
        );
        assert_eq!(a.outcome, Outcome::Throttled);
        let r = responded(&a);
        assert_eq!(r.status, 429);
        assert_eq!(header(&r.headers, "retry-after"), Some("12"));
        assert_eq!(
            header(&r.headers, "ratelimit-policy"),
            Some(r#""free";q=100;w=60"#)
        );
        assert_eq!(header(&r.headers, "ratelimit"), Some(r#""free";r=0;t=12"#));
        assert_eq!(header(&r.headers, "x-request-id"), Some("rid-1"));
        assert_eq!(header(&r.headers, "content-type"), Some("application/json"));
        let body = json(r);
        assert_eq!(body["error"], "too_many_requests");
        assert_eq!(body["request_id"], "rid-1");
        assert_eq!(body["reason"], "because");
    }

    #[test]
    fn retry_after_is_at_least_one() {
        let a = decide(
            Ok(verdict(
                VerdictKind::Throttle {
                    retry_after_seconds: 0,
                },
                None,
            )),
            &subject(),
            &closed(),
        );
        let r = responded(&a);
        assert_eq!(header(&r.headers, "retry-after"), Some("1"));
        assert_eq!(header(&r.headers, "ratelimit"), None);
    }

    #[test]
    fn block_answers_403() {
        let a = decide(Ok(verdict(VerdictKind::Block, None)), &subject(), &closed());
        assert_eq!(a.outcome, Outcome::Blocked);
        let r = responded(&a);
        assert_eq!(r.status, 403);
        assert_eq!(
            json(r),
            serde_json::json!({"error": "forbidden", "request_id": "rid-1", "reason": "because"})
        );
    }

    #[test]
    fn every_failure_fails_closed_or_open() {
        let failures = [
            ScorerFailure::Dispatch,
            ScorerFailure::Status(14),
            ScorerFailure::Status(4),
            ScorerFailure::EmptyResponse,
            ScorerFailure::Undecodable,
            ScorerFailure::Unspecified,
            ScorerFailure::UnknownDecision(9),
        ];
        for failure in failures {
            let a = decide(Err(failure.clone()), &subject(), &closed());
            assert_eq!(a.outcome, Outcome::FailClosed, "{failure:?}");
            assert!(a.scorer_error);
            assert_eq!(a.reason, failure.reason());
            let r = responded(&a);
            assert_eq!(r.status, 503);
            assert_eq!(
                json(r),
                serde_json::json!({"error": "unavailable", "request_id": "rid-1"})
            );
            assert_eq!(header(&r.headers, "x-request-id"), Some("rid-1"));

            let a = decide(Err(failure.clone()), &subject(), &open());
            assert_eq!(a.outcome, Outcome::FailOpen, "{failure:?}");
            assert!(a.scorer_error);
            let f = forwarded(&a);
            assert_eq!(
                header(&f.request_headers, "x-gateway-token"),
                Some(expected_token().as_str())
            );
        }
    }

    #[test]
    fn unsignable_requests_are_never_forwarded() {
        let mut s = subject();
        s.method = "m-search";
        for config in [closed(), open()] {
            let a = decide(Ok(verdict(VerdictKind::Allow, None)), &s, &config);
            assert_eq!(responded(&a).status, 503);
            assert_eq!(a.outcome, Outcome::FailClosed);
            assert_eq!(a.reason, "token_sign_failed");
            assert!(!a.scorer_error);

            let a = decide(Err(ScorerFailure::Dispatch), &s, &config);
            assert_eq!(responded(&a).status, 503);
        }
    }

    #[test]
    fn unauthorized_body_never_echoes_the_key() {
        let a = unauthorized("rid-1", AuthError::Unknown, &HeaderNames::default());
        let r = responded(&a);
        assert_eq!(r.status, 401);
        assert_eq!(a.outcome, Outcome::Unauthorized);
        assert_eq!(a.reason, "unknown_api_key");
        assert_eq!(
            json(r),
            serde_json::json!({"error": "unauthorized", "request_id": "rid-1"})
        );
        assert_eq!(header(&r.headers, "x-request-id"), Some("rid-1"));
    }

    #[test]
    fn rate_limit_header_format() {
        let mut r = rl();
        assert_eq!(
            rate_limit_headers(&r),
            vec![
                (
                    "ratelimit-policy".to_owned(),
                    r#""free";q=100;w=60"#.to_owned()
                ),
                ("ratelimit".to_owned(), r#""free";r=0;t=12"#.to_owned()),
            ]
        );
        r.policy = String::new();
        assert_eq!(rate_limit_headers(&r)[0].1, r#""default";q=100;w=60"#);
        r.policy = "a\"b\\c\u{e9}\n".into();
        assert_eq!(rate_limit_headers(&r)[1].1, r#""a\"b\\c__";r=0;t=12"#);
    }

    #[test]
    fn flag_value_is_bounded_and_never_empty() {
        assert_eq!(flag_value(""), "flagged");
        assert_eq!(flag_value(&"x".repeat(1000)).len(), MAX_FLAG_BYTES);
    }
}
