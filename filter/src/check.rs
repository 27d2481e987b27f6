//! The gRPC verdict source: `Scorer.Check` through Envoy's `dispatch_grpc_call`. Builds the
//! `CheckRequest` and turns whatever comes back into a [`Verdict`] or a [`ScorerFailure`],
//! in this one place.

use palisade_proto::v1::{CheckRequest, CheckResponse};
use prost::Message;

use crate::auth::Identity;
use crate::config::QueryLimits;
use crate::query;
use crate::request::RequestFacts;
use crate::verdict::{ScorerFailure, Verdict};

/// The `CheckRequest` for an authenticated request.
pub fn check_request(
    facts: &RequestFacts,
    identity: &Identity,
    limits: &QueryLimits,
) -> CheckRequest {
    let q = facts
        .raw_query()
        .map(|raw| query::parse(raw, limits))
        .unwrap_or_default();
    CheckRequest {
        request_id: facts.request_id.clone(),
        key_id: identity.key_id.clone(),
        tenant: identity.tenant.clone(),
        tier: identity.tier.clone(),
        client_ip: facts.client_ip.clone(),
        method: facts.method.clone(),
        path: facts.path.clone(),
        query: q.params,
        user_agent: facts.user_agent.clone(),
        timestamp_ms: facts.timestamp_ms(),
        query_truncated: q.truncated,
        unauthenticated: false,
    }
}

/// The `CheckRequest` for a request that failed authentication: no key, tenant, tier or
/// query, only what the scorer's per-client-IP policy (and the event record) needs.
pub fn unauthenticated_request(facts: &RequestFacts) -> CheckRequest {
    CheckRequest {
        request_id: facts.request_id.clone(),
        client_ip: facts.client_ip.clone(),
        method: facts.method.clone(),
        path: facts.path.clone(),
        user_agent: facts.user_agent.clone(),
        timestamp_ms: facts.timestamp_ms(),
        unauthenticated: true,
        ..CheckRequest::default()
    }
}

/// Encodes a `CheckRequest` for the wire.
pub fn encode(request: &CheckRequest) -> Vec<u8> {
    request.encode_to_vec()
}

/// The verdict in a `Check` response: gRPC status `grpc_status` and the message `body`.
pub fn verdict_from_response(
    grpc_status: u32,
    body: Option<&[u8]>,
) -> Result<Verdict, ScorerFailure> {
    if grpc_status != 0 {
        return Err(ScorerFailure::Status(grpc_status));
    }
    let body = match body {
        Some(b) if !b.is_empty() => b,
        _ => return Err(ScorerFailure::EmptyResponse),
    };
    let response = CheckResponse::decode(body).map_err(|_| ScorerFailure::Undecodable)?;
    Verdict::try_from(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use palisade_proto::v1::Decision;

    use super::*;
    use crate::verdict::VerdictKind;

    #[test]
    fn request_carries_identity_and_bounded_query() {
        let facts = RequestFacts {
            request_id: "rid".into(),
            method: "GET".into(),
            full_path: "/a?x=1&y=2&z=3".into(),
            path: "/a".into(),
            client_ip: "10.0.0.1".into(),
            user_agent: "curl".into(),
            started_nanos: 5_000_000,
        };
        let id = Identity {
            key_id: "alice".into(),
            tenant: "demo".into(),
            tier: "standard".into(),
        };
        let limits = QueryLimits {
            max_params: 2,
            ..QueryLimits::default()
        };
        let r = check_request(&facts, &id, &limits);
        assert_eq!(r.key_id, "alice");
        assert_eq!(r.tenant, "demo");
        assert_eq!(r.tier, "standard");
        assert_eq!(r.path, "/a");
        assert_eq!(r.query.len(), 2);
        assert!(r.query_truncated);
        assert_eq!(r.timestamp_ms, 5);
        let decoded = CheckRequest::decode(encode(&r).as_slice()).unwrap();
        assert_eq!(decoded, r);
    }

    #[test]
    fn unauthenticated_request_carries_no_identity() {
        let facts = RequestFacts {
            request_id: "rid".into(),
            method: "POST".into(),
            full_path: "/login?user=x".into(),
            path: "/login".into(),
            client_ip: "10.0.0.1".into(),
            user_agent: "curl".into(),
            started_nanos: 5_000_000,
        };
        let r = unauthenticated_request(&facts);
        assert!(r.unauthenticated);
        assert!(r.key_id.is_empty() && r.tenant.is_empty() && r.tier.is_empty());
        assert!(r.query.is_empty());
        assert_eq!(
            (r.client_ip.as_str(), r.method.as_str(), r.path.as_str()),
            ("10.0.0.1", "POST", "/login")
        );
        assert_eq!(r.user_agent, "curl");
        assert_eq!(r.timestamp_ms, 5);
    }

    #[test]
    fn response_failures() {
        assert_eq!(
            verdict_from_response(14, None),
            Err(ScorerFailure::Status(14))
        );
        assert_eq!(
            verdict_from_response(4, Some(b"x")),
            Err(ScorerFailure::Status(4))
        );
        assert_eq!(
            verdict_from_response(0, None),
            Err(ScorerFailure::EmptyResponse)
        );
        assert_eq!(
            verdict_from_response(0, Some(b"")),
            Err(ScorerFailure::EmptyResponse)
        );
        assert_eq!(
            verdict_from_response(0, Some(b"\xff\xff\xff")),
            Err(ScorerFailure::Undecodable)
        );
        let unspecified = CheckResponse {
            reason: "x".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            verdict_from_response(0, Some(&unspecified)),
            Err(ScorerFailure::Unspecified)
        );
    }

    #[test]
    fn response_ok() {
        let body = CheckResponse {
            decision: Decision::Allow as i32,
            reason: "ok".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let v = verdict_from_response(0, Some(&body)).unwrap();
        assert_eq!(v.kind, VerdictKind::Allow);
        assert_eq!(v.reason, "ok");
    }
}
