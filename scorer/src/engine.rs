//! The scorer's decision engine: validates a request, runs the rate-limit policies and turns
//! the result into a verdict. Its only I/O is the optional Redis store of the windows
//! ([`SharedLimiter`]), which on a key's first sight also fetches the key's detection state
//! in the same round trip ([`StateStore`]); the gRPC service is a thin adapter over it.

use std::{
    borrow::Cow,
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use arc_swap::ArcSwap;
use palisade_proto::v1::{
    CheckRequest, CheckResponse, Decision, Outcome as WireOutcome, ReportRequest, ReportResponse,
    RequestOutcome,
};
use prometheus_client::metrics::counter::Counter;

use crate::{
    alerts::{Alert, AlertLevel, AlertSink},
    config::{ClockSource, DegradedMode, LimitsConfig, is_valid_name},
    detect::{
        Detector, Observation, features,
        state::{Load, StateStore},
    },
    error::ScorerError,
    events::EventSink,
    limiter::{Fetched, LocalLimiter, Outcome, Policy, PolicyTable, SharedLimiter},
    metrics::{Metrics, PolicyCounters},
    verdict,
};

/// Most outcomes accepted in one Report call.
pub const MAX_REPORT_BATCH: usize = 10_000;

/// Policies and their counters, swapped as one on reload.
#[derive(Debug)]
struct Policies {
    table: PolicyTable,
    counters: HashMap<String, PolicyCounters>,
    clock: ClockSource,
}

/// Everything a Check or Report needs, shared by all connections.
#[derive(Debug)]
pub struct Engine {
    policies: ArcSwap<Policies>,
    limiter: LocalLimiter,
    /// Redis windows shared by every replica; `None`: the in-process windows decide.
    shared: Option<SharedLimiter>,
    metrics: Arc<Metrics>,
    decisions: [Counter; 7],
    outcomes: [Counter; 10],
    events: Option<Arc<EventSink>>,
    /// Behavioural detection; `None` when `[detect] enabled = false`.
    detector: Option<Arc<Detector>>,
    /// SIEM webhooks when a key's level rises.
    alerts: Option<AlertSink>,
    /// Detection state in Redis (read on a key's first sight, written behind).
    state: Option<Arc<StateStore>>,
}

impl Engine {
    /// An engine for `limits`, reporting into `metrics`.
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        let decisions = std::array::from_fn(|i| metrics.decision(verdict::decision_name(i as i32)));
        let outcomes = std::array::from_fn(|i| metrics.outcome(outcome_name(i as i32)));
        let engine = Self {
            policies: ArcSwap::from_pointee(Self::policies(limits, &metrics)),
            limiter: LocalLimiter::new(),
            shared: None,
            metrics,
            decisions,
            outcomes,
            events: None,
            detector: None,
            alerts: None,
            state: None,
        };
        engine.metrics.tracked_subjects.set(0);
        engine
    }

    /// Keeps the windows in Redis; the in-process windows then serve only the `local`
    /// degraded mode.
    pub fn with_shared(mut self, shared: SharedLimiter) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The Redis limiter, when configured.
    pub fn shared(&self) -> Option<&SharedLimiter> {
        self.shared.as_ref()
    }

    fn policies(limits: &LimitsConfig, metrics: &Metrics) -> Policies {
        let table = PolicyTable::from_config(limits);
        let counters = metrics.policies(table.names());
        Policies {
            table,
            counters,
            clock: limits.clock,
        }
    }

    /// Replaces the policies (config reload); window state of unchanged policies is kept.
    pub fn reload(&self, limits: &LimitsConfig) {
        self.policies
            .store(Arc::new(Self::policies(limits, &self.metrics)));
    }

    /// Records a security event for every valid reported outcome into `sink`.
    pub fn with_events(mut self, sink: Option<Arc<EventSink>>) -> Self {
        self.events = sink;
        self
    }

    /// Scores keys' behaviour with `detector`.
    pub fn with_detector(mut self, detector: Arc<Detector>) -> Self {
        self.detector = Some(detector);
        self
    }

    /// Loads each key's detection state from `state` on first sight (the detector's state
    /// sink writes it back).
    pub fn with_state(mut self, state: Option<Arc<StateStore>>) -> Self {
        self.state = state;
        self
    }

    /// Writes the queued key-state snapshots (bounded wait) and stops their writer.
    pub async fn shutdown_state(&self) {
        if let Some(state) = &self.state {
            state.shutdown(std::time::Duration::from_secs(2)).await;
        }
    }

    /// Sends an alert to `alerts` whenever a key's model level rises.
    pub fn with_alerts(mut self, alerts: Option<AlertSink>) -> Self {
        self.alerts = alerts;
        self
    }

    /// Delivers queued alerts (bounded wait) and stops the alert worker.
    pub async fn shutdown_alerts(&self) {
        if let Some(sink) = self.alerts.clone() {
            sink.shutdown().await;
        }
    }

    /// The detector, when detection is on.
    pub fn detector(&self) -> Option<&Arc<Detector>> {
        self.detector.as_ref()
    }

    /// The event sink, when events are recorded.
    pub fn events(&self) -> Option<&Arc<EventSink>> {
        self.events.as_ref()
    }

    /// Flushes and stops event recording (after the last Report).
    pub async fn shutdown_events(&self) {
        if let Some(sink) = &self.events {
            sink.shutdown().await;
        }
    }

    /// The metrics this engine reports into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides one request. `local_now_ms` is the scorer's wall clock.
    pub async fn check(
        &self,
        req: &CheckRequest,
        local_now_ms: u64,
    ) -> Result<CheckResponse, ScorerError> {
        if let Err(e) = validate_check(req) {
            self.metrics.check_invalid.inc();
            return Err(e);
        }
        // An owned snapshot: the Redis call below awaits.
        let policies = self.policies.load_full();
        let now = match policies.clock {
            ClockSource::Request if req.timestamp_ms > 0 => req.timestamp_ms as u64,
            _ => local_now_ms,
        };
        // A failed authentication counts against its client address alone; key and route
        // policies apply only to authenticated requests. The key's policy and a matching
        // route's are checked together, all or nothing; a shadow policy next to an enforcing
        // one is checked on its own, never refusing.
        let (subject, all): (Cow<'_, str>, Vec<&Arc<Policy>>) = if req.unauthenticated {
            let Some(policy) = policies.table.unauthenticated() else {
                return Ok(self.not_limited());
            };
            // validate_check guarantees a parseable address.
            let ip = req.client_ip.parse().map_err(|_| {
                ScorerError::InvalidArgument("client_ip: must be an IPv4 or IPv6 address".into())
            })?;
            (Cow::Owned(ip_subject(ip)), vec![policy])
        } else {
            let key_policy = policies.table.resolve(&req.key_id, &req.tier);
            let route = policies.table.route(&req.method, &req.path);
            (
                Cow::Borrowed(req.key_id.as_str()),
                std::iter::once(key_policy).chain(route).collect(),
            )
        };
        let (main, shadows): (Vec<&Arc<Policy>>, Vec<&Arc<Policy>>) =
            if all.iter().all(|p| p.shadow) {
                (all, Vec::new())
            } else {
                all.into_iter().partition(|p| !p.shadow)
            };
        // A key seen for the first time: its detection state rides along with the script.
        let load: Option<Load> = match (&self.state, &self.detector) {
            (Some(state), Some(detector)) if !req.unauthenticated => {
                state.wants(detector, &req.key_id)
            }
            _ => None,
        };
        let (limited, fetched) = self
            .limit(&subject, &main, now, load.as_ref().map(|l| l.key.as_str()))
            .await;
        let (outcome, policy) = match limited {
            Limited::Decided(outcome, _, owner) => (outcome, main[owner.min(main.len() - 1)]),
            Limited::Admitted => (verdict::unavailable(true), main[0]),
            Limited::Refused => (verdict::unavailable(false), main[0]),
        };
        count(&policies, policy, outcome.admitted);
        let mut response = verdict::from_limit(policy, &outcome);
        match limited {
            Limited::Decided(_, false, _) => {}
            Limited::Decided(_, true, _) => response.degraded = true,
            Limited::Admitted | Limited::Refused => verdict::mark_unavailable(&mut response),
        }
        if outcome.admitted && matches!(limited, Limited::Decided(..)) {
            for shadow in shadows {
                if let (Limited::Decided(o, degraded, _), _) =
                    self.limit(&subject, &[shadow], now, None).await
                {
                    count(&policies, shadow, o.admitted);
                    if !o.admitted {
                        response = verdict::from_limit(shadow, &o);
                        response.degraded = degraded;
                        break;
                    }
                }
            }
        }
        if !req.unauthenticated
            && let Some(detector) = &self.detector
        {
            if let (Some(state), Some(load)) = (&self.state, &load) {
                let now_ms = i64::try_from(now).unwrap_or(i64::MAX);
                state.install(detector, &req.key_id, load, fetched, now_ms);
            }
            detect(detector, self.alerts.as_ref(), req, &mut response, now);
        }
        if let Some(c) = self.decisions.get(response.decision as usize) {
            c.inc();
        }
        Ok(response)
    }

    /// ALLOW without a quota: no policy applies (a failed authentication with
    /// `limits.unauthenticated` unset).
    fn not_limited(&self) -> CheckResponse {
        let response = CheckResponse {
            decision: Decision::Allow as i32,
            reason: "ok".to_owned(),
            ..CheckResponse::default()
        };
        if let Some(c) = self.decisions.get(response.decision as usize) {
            c.inc();
        }
        response
    }

    /// The windows' answer for `policies` of `subject` (all or nothing): Redis when configured
    /// and answering, else the degraded mode; and `fetch`, a key of the subject's hash slot,
    /// read in the same round trip.
    async fn limit(
        &self,
        subject: &str,
        policies: &[&Arc<Policy>],
        now: u64,
        fetch: Option<&str>,
    ) -> (Limited, Fetched) {
        let local = || self.limiter.check_many(subject, policies, now);
        let Some(shared) = &self.shared else {
            let (outcome, owner) = local();
            return (
                Limited::Decided(outcome, false, owner),
                Fetched::failed_if(fetch.is_some()),
            );
        };
        let refs: Vec<&Policy> = policies.iter().map(|p| &***p).collect();
        let (decided, fetched) = shared.check_many_fetching(subject, &refs, now, fetch).await;
        if let Some((outcome, owner)) = decided {
            return (Limited::Decided(outcome, false, owner), fetched);
        }
        shared.count_degraded();
        let limited = match shared.degraded_mode() {
            DegradedMode::Local => {
                let (outcome, owner) = local();
                Limited::Decided(outcome, true, owner)
            }
            DegradedMode::FailOpen => Limited::Admitted,
            DegradedMode::FailClosed => Limited::Refused,
        };
        (limited, fetched)
    }

    /// Takes a batch of outcomes; invalid entries are skipped and counted, never fatal.
    pub fn report(&self, req: &ReportRequest) -> Result<ReportResponse, ScorerError> {
        if req.outcomes.len() > MAX_REPORT_BATCH {
            return Err(ScorerError::InvalidArgument(format!(
                "outcomes: {} entries, at most {MAX_REPORT_BATCH} per call",
                req.outcomes.len()
            )));
        }
        self.metrics.reports_dropped_by_filter.inc_by(req.dropped);
        let mut accepted = 0u32;
        let request_clock = self.policies.load().clock == ClockSource::Request;
        let local_now = crate::service::now_ms() as i64;
        for o in &req.outcomes {
            if validate_outcome(o).is_err() {
                self.metrics.reports_invalid.inc();
                continue;
            }
            accepted += 1;
            if let Some(c) = self.outcomes.get(o.outcome as usize) {
                c.inc();
            }
            if o.upstream_latency_us > 0 {
                self.metrics
                    .upstream_seconds
                    .observe(o.upstream_latency_us as f64 / 1e6);
            }
            self.metrics
                .gateway_seconds
                .observe(o.gateway_latency_us as f64 / 1e6);
            if let Some(detector) = &self.detector
                && !o.key_id.is_empty()
                && forwarded(o.outcome)
            {
                let now = if request_clock && o.timestamp_ms > 0 {
                    o.timestamp_ms
                } else {
                    local_now
                };
                let status = u16::try_from(o.status).unwrap_or(u16::MAX);
                detector.observe_response(&o.key_id, now, status);
            }
        }
        self.metrics.reports_received.inc_by(u64::from(accepted));
        if let Some(sink) = &self.events {
            sink.record(req.outcomes.iter().filter(|o| validate_outcome(o).is_ok()))?;
        }
        Ok(ReportResponse { accepted })
    }

    /// Drops idle window state; returns how many subjects were forgotten.
    pub fn sweep(&self) -> usize {
        let removed = self.limiter.sweep();
        self.metrics.tracked_subjects.set(self.limiter.len() as i64);
        removed
    }
}

/// Runs the detection step for an authenticated request and folds the model's verdict into
/// `response`: the more severe of the two stands, with its reason.
fn detect(
    detector: &Arc<Detector>,
    alerts: Option<&AlertSink>,
    req: &CheckRequest,
    response: &mut CheckResponse,
    now: u64,
) {
    let query: Vec<(&str, &str)> = req
        .query
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    let path = req
        .path
        .split_once('?')
        .map_or(req.path.as_str(), |(p, _)| p);
    let outcome = match Decision::try_from(response.decision) {
        Ok(Decision::Throttle) => features::Outcome::Throttled,
        Ok(Decision::Block) => features::Outcome::Blocked,
        _ => features::Outcome::Allowed,
    };
    let Some(a) = detector.observe(&Observation {
        key_id: &req.key_id,
        tier: &req.tier,
        now_ms: i64::try_from(now).unwrap_or(i64::MAX),
        path,
        query: &query,
        client_ip: &req.client_ip,
        user_agent: &req.user_agent,
        outcome,
    }) else {
        return;
    };
    if a.escalated
        && let (Some(sink), Some((level, enforced))) =
            (alerts, AlertLevel::from_decision(a.verdict.decision))
    {
        sink.notify(Alert {
            key_id: req.key_id.clone(),
            tier: req.tier.clone(),
            level,
            score: a.score,
            risk: a.risk,
            model_version: a.model_version.to_string(),
            explanation: a.verdict.reason.clone(),
            request_id: req.request_id.clone(),
            ts_ms: i64::try_from(now).unwrap_or(i64::MAX),
            enforced,
        });
    }
    response.anomaly_score = a.score;
    response.model_version = a.model_version.to_string();
    let model = a.verdict.decision;
    if verdict::severity(model as i32) > verdict::severity(response.decision) {
        response.decision = model as i32;
        response.reason = a.verdict.reason;
        response.retry_after_seconds = a.retry_after_seconds;
    }
}

/// What the windows said.
#[derive(Debug, Clone, Copy)]
enum Limited {
    /// An outcome; `true` when the in-process windows stood in for Redis; the index of the
    /// policy owning the reported window.
    Decided(Outcome, bool, usize),
    /// Redis could not answer, `fail_open`.
    Admitted,
    /// Redis could not answer, `fail_closed`.
    Refused,
}

/// Counts one limiter outcome under `policy`.
fn count(policies: &Policies, policy: &Policy, admitted: bool) {
    if let Some(c) = policies.counters.get(&policy.name) {
        match (admitted, policy.shadow) {
            (true, _) => c.allowed.inc(),
            (false, false) => c.throttled.inc(),
            (false, true) => c.shadow_throttled.inc(),
        };
    }
}

/// True for outcomes whose request reached the backend (its status is the backend's).
fn forwarded(o: i32) -> bool {
    matches!(
        WireOutcome::try_from(o),
        Ok(WireOutcome::Allowed
            | WireOutcome::FailOpen
            | WireOutcome::Flagged
            | WireOutcome::ShadowThrottled
            | WireOutcome::ShadowBlocked)
    )
}

fn outcome_name(o: i32) -> &'static str {
    match WireOutcome::try_from(o) {
        Ok(WireOutcome::Allowed) => "allowed",
        Ok(WireOutcome::Throttled) => "throttled",
        Ok(WireOutcome::Blocked) => "blocked",
        Ok(WireOutcome::Unauthorized) => "unauthorized",
        Ok(WireOutcome::FailClosed) => "fail_closed",
        Ok(WireOutcome::FailOpen) => "fail_open",
        Ok(WireOutcome::Flagged) => "flagged",
        Ok(WireOutcome::ShadowThrottled) => "shadow_throttled",
        Ok(WireOutcome::ShadowBlocked) => "shadow_blocked",
        _ => "unspecified",
    }
}

fn invalid(field: &str, why: &str) -> ScorerError {
    ScorerError::InvalidArgument(format!("{field}: {why}"))
}

fn is_visible_ascii(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The limiter subject of a failed authentication: `ip:<address>` for IPv4 (an IPv4-mapped
/// IPv6 address counts as its IPv4 address), `ip:<prefix>/64` for IPv6. A host is usually
/// given a whole /64, so counting single IPv6 addresses would let it rotate through 2^64 of
/// them and never be throttled; the cost is that hosts sharing a /64 share the quota, as
/// hosts behind one IPv4 NAT do. Never contains `{` or `}`, so it is safe inside the Redis
/// hash tag, and never equals a key id (those cannot contain `:`).
pub fn ip_subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("ip:{prefix}/64")
        }
    }
}

fn validate_check(r: &CheckRequest) -> Result<(), ScorerError> {
    if !is_visible_ascii(&r.request_id, 128) {
        return Err(invalid(
            "request_id",
            "must be 1 to 128 visible ASCII characters",
        ));
    }
    if r.unauthenticated {
        // No identity: the client address is the subject.
        if !r.key_id.is_empty() {
            return Err(invalid("key_id", "must be empty when unauthenticated"));
        }
        if !r.tier.is_empty() {
            return Err(invalid("tier", "must be empty when unauthenticated"));
        }
        if r.client_ip.parse::<IpAddr>().is_err() {
            return Err(invalid(
                "client_ip",
                "must be an IPv4 or IPv6 address when unauthenticated",
            ));
        }
    } else if !is_valid_name(&r.key_id) {
        return Err(invalid("key_id", "must match [A-Za-z0-9_-]{1,64}"));
    }
    if !r.tier.is_empty() && !is_valid_name(&r.tier) {
        return Err(invalid("tier", "must match [A-Za-z0-9_-]{1,64}"));
    }
    if !is_visible_ascii(&r.method, 32) {
        return Err(invalid(
            "method",
            "must be 1 to 32 visible ASCII characters",
        ));
    }
    if !r.path.starts_with('/') || r.path.len() > 8_192 {
        return Err(invalid(
            "path",
            "must start with '/' and be at most 8192 bytes",
        ));
    }
    if !r.client_ip.is_empty() && r.client_ip.parse::<IpAddr>().is_err() {
        return Err(invalid("client_ip", "must be an IPv4 or IPv6 address"));
    }
    if r.timestamp_ms < 0 {
        return Err(invalid("timestamp_ms", "must not be negative"));
    }
    Ok(())
}

fn validate_outcome(o: &RequestOutcome) -> Result<(), ScorerError> {
    if !is_visible_ascii(&o.request_id, 128) {
        return Err(invalid(
            "request_id",
            "must be 1 to 128 visible ASCII characters",
        ));
    }
    if WireOutcome::try_from(o.outcome).is_err() {
        return Err(invalid("outcome", "unknown value"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, tier: &str, t: i64) -> CheckRequest {
        CheckRequest {
            request_id: "r-1".into(),
            key_id: key.into(),
            tier: tier.into(),
            method: "GET".into(),
            path: "/api/users/1".into(),
            client_ip: "127.0.0.1".into(),
            timestamp_ms: t,
            ..Default::default()
        }
    }

    fn engine() -> Engine {
        Engine::new(&LimitsConfig::default(), Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn free_tier_throttles_after_its_limit_using_request_time() {
        let e = engine();
        for i in 0..5 {
            let r = e.check(&req("bob", "free", 1_000 + i), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32, "request {i}");
        }
        let r = e.check(&req("bob", "free", 2_000), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(
            r.retry_after_seconds, 59,
            "at 2000, the first request (1000) leaves at 61000"
        );
        let later = e.check(&req("bob", "free", 61_000), 0).await.unwrap();
        assert_eq!(later.decision, Decision::Allow as i32);
        let text = e.metrics().render();
        assert!(
            text.contains(
                r#"palisade_limiter_decisions_total{policy="free",outcome="throttled"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"palisade_check_decisions_total{decision="throttle"} 1"#),
            "{text}"
        );
    }

    fn with_route(shadow: bool) -> Engine {
        let mut limits = LimitsConfig::default();
        limits.routes.push(crate::config::RouteConfig {
            name: "login".into(),
            method: Some("POST".into()),
            path_prefix: "/api/login".into(),
            windows: vec![crate::config::WindowConfig::new(2, 60_000)],
            algorithm: None,
            shadow,
        });
        Engine::new(&limits, Arc::new(Metrics::new()))
    }

    fn post_login(t: i64) -> CheckRequest {
        CheckRequest {
            method: "POST".into(),
            path: "/api/login".into(),
            ..req("bob", "free", t)
        }
    }

    #[tokio::test]
    async fn route_and_tier_limits_apply_together() {
        let e = with_route(false);
        for t in 0..2 {
            let r = e.check(&post_login(t), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32);
        }
        let r = e.check(&post_login(2), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(r.rate_limit.unwrap().policy, "route:login");
        // The two logins counted in the tier too (5 per minute): 3 left for other routes.
        for t in 3..6 {
            let r = e.check(&req("bob", "free", t), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32, "at {t}");
        }
        let r = e.check(&req("bob", "free", 6), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(r.rate_limit.unwrap().policy, "free");
        // Another key has its own route quota.
        let r = e
            .check(
                &CheckRequest {
                    key_id: "carol".into(),
                    ..post_login(7)
                },
                0,
            )
            .await
            .unwrap();
        assert_eq!(r.decision, Decision::Allow as i32);
    }

    #[tokio::test]
    async fn a_shadow_route_reports_but_never_refuses() {
        let e = with_route(true);
        let decisions: Vec<i32> = {
            let mut v = Vec::new();
            for t in 0..4 {
                v.push(e.check(&post_login(t), 0).await.unwrap().decision);
            }
            v
        };
        let (allow, shadow) = (Decision::Allow as i32, Decision::ShadowThrottle as i32);
        assert_eq!(decisions, [allow, allow, shadow, shadow]);
        // Every one of them counted in the enforcing tier (5 per minute): one left.
        assert_eq!(
            e.check(&req("bob", "free", 5), 0).await.unwrap().decision,
            allow
        );
        let r = e.check(&req("bob", "free", 6), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        let text = e.metrics().render();
        assert!(
            text.contains(
                r#"palisade_limiter_decisions_total{policy="route:login",outcome="shadow_throttled"} 2"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn local_clock_ignores_request_time() {
        let limits = LimitsConfig {
            clock: ClockSource::Local,
            ..LimitsConfig::default()
        };
        let e = Engine::new(&limits, Arc::new(Metrics::new()));
        for _ in 0..5 {
            e.check(&req("bob", "free", 1), 10).await.unwrap();
        }
        let r = e.check(&req("bob", "free", 999_999_999), 10).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
    }

    #[tokio::test]
    async fn invalid_requests_name_the_field() {
        let e = engine();
        for (mutate, field) in [
            (
                Box::new(|r: &mut CheckRequest| r.request_id.clear())
                    as Box<dyn Fn(&mut CheckRequest)>,
                "request_id",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.key_id = "pk_live_secret value".into()),
                "key_id",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.path = "relative".into()),
                "path",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.client_ip = "10.0.0.1:443".into()),
                "client_ip",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.method = String::new()),
                "method",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.timestamp_ms = -1),
                "timestamp_ms",
            ),
        ] {
            let mut r = req("bob", "free", 1);
            mutate(&mut r);
            let err = e.check(&r, 0).await.unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(
            e.metrics()
                .render()
                .contains("palisade_check_invalid_total 6")
        );
    }

    fn failed_auth(ip: &str, t: i64) -> CheckRequest {
        CheckRequest {
            key_id: String::new(),
            tier: String::new(),
            client_ip: ip.into(),
            unauthenticated: true,
            ..req("", "", t)
        }
    }

    fn with_unauthenticated(limit: u32) -> Engine {
        let limits = LimitsConfig {
            unauthenticated: Some(crate::config::PolicyConfig {
                windows: vec![crate::config::WindowConfig::new(limit, 60_000)],
                ..Default::default()
            }),
            ..LimitsConfig::default()
        };
        Engine::new(&limits, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn failed_authentications_are_limited_per_client_ip() {
        let e = with_unauthenticated(3);
        for t in 0..3 {
            let r = e.check(&failed_auth("10.0.0.1", t), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32, "at {t}");
        }
        let r = e.check(&failed_auth("10.0.0.1", 3), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(r.reason, "rate_limited:unauthenticated");
        assert_eq!(r.retry_after_seconds, 60);
        let rl = r.rate_limit.unwrap();
        assert_eq!(
            (rl.policy.as_str(), rl.limit, rl.remaining),
            ("unauthenticated", 3, 0)
        );
        // Another address has its own quota.
        let other = e.check(&failed_auth("10.0.0.2", 4), 0).await.unwrap();
        assert_eq!(other.decision, Decision::Allow as i32);
        // Authenticated traffic from the throttled address is not punished for its failures.
        for t in 5..10 {
            let r = e.check(&req("bob", "free", t), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32, "at {t}");
            assert_eq!(r.rate_limit.unwrap().policy, "free");
        }
        let text = e.metrics().render();
        assert!(
            text.contains(
                r#"palisade_limiter_decisions_total{policy="unauthenticated",outcome="throttled"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"palisade_limiter_decisions_total{policy="unauthenticated",outcome="allowed"} 4"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failed_authentications_ignore_key_and_route_policies() {
        let mut limits = LimitsConfig::default();
        limits.routes.push(crate::config::RouteConfig {
            name: "everything".into(),
            method: None,
            path_prefix: "/".into(),
            windows: vec![crate::config::WindowConfig::new(1, 60_000)],
            algorithm: None,
            shadow: false,
        });
        let e = Engine::new(&limits, Arc::new(Metrics::new()));
        // The default 30 per minute applies, not the route's 1 or the free tier's 5.
        for t in 0..30 {
            let r = e.check(&failed_auth("10.0.0.1", t), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32, "at {t}");
        }
        let r = e.check(&failed_auth("10.0.0.1", 30), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
    }

    #[tokio::test]
    async fn the_unauthenticated_policy_reloads() {
        let e = with_unauthenticated(3);
        let r = e.check(&failed_auth("10.0.0.1", 0), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Allow as i32);
        e.reload(&LimitsConfig {
            unauthenticated: Some(crate::config::PolicyConfig {
                windows: vec![crate::config::WindowConfig::new(1, 60_000)],
                ..Default::default()
            }),
            ..LimitsConfig::default()
        });
        let r = e.check(&failed_auth("10.0.0.1", 1), 0).await.unwrap();
        assert_eq!(
            r.decision,
            Decision::Allow as i32,
            "in-process windows restart"
        );
        let r = e.check(&failed_auth("10.0.0.1", 2), 0).await.unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        assert_eq!(r.rate_limit.unwrap().limit, 1);
    }

    #[tokio::test]
    async fn ipv6_clients_are_limited_per_64_prefix() {
        let e = with_unauthenticated(2);
        for (t, ip) in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"]
            .iter()
            .enumerate()
        {
            let r = e.check(&failed_auth(ip, t as i64), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32, "{ip}");
        }
        let r = e
            .check(&failed_auth("2001:db8:1:2:abcd::1", 2), 0)
            .await
            .unwrap();
        assert_eq!(r.decision, Decision::Throttle as i32);
        let r = e
            .check(&failed_auth("2001:db8:1:3::1", 3), 0)
            .await
            .unwrap();
        assert_eq!(r.decision, Decision::Allow as i32);
    }

    #[test]
    fn ip_subjects_are_normalised() {
        let s = |ip: &str| ip_subject(ip.parse().unwrap());
        assert_eq!(s("192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(s("::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(s("2001:DB8:0:0:1:2:3:4"), "ip:2001:db8::/64");
        assert_eq!(s("2001:db8:a:b::"), "ip:2001:db8:a:b::/64");
        for ip in ["192.0.2.7", "2001:db8::1"] {
            assert!(!s(ip).contains(['{', '}']));
        }
    }

    #[tokio::test]
    async fn without_the_policy_failed_authentications_are_not_throttled() {
        let limits = LimitsConfig {
            unauthenticated: None,
            ..LimitsConfig::default()
        };
        let e = Engine::new(&limits, Arc::new(Metrics::new()));
        for t in 0..100 {
            let r = e.check(&failed_auth("10.0.0.1", t), 0).await.unwrap();
            assert_eq!(r.decision, Decision::Allow as i32);
            assert!(r.rate_limit.is_none());
        }
    }

    #[tokio::test]
    async fn unauthenticated_requests_must_carry_an_address_and_no_identity() {
        let e = engine();
        for (mutate, needle) in [
            (
                Box::new(|r: &mut CheckRequest| r.key_id = "bob".into())
                    as Box<dyn Fn(&mut CheckRequest)>,
                "key_id: must be empty",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.tier = "free".into()),
                "tier: must be empty",
            ),
            (
                Box::new(|r: &mut CheckRequest| r.client_ip.clear()),
                "client_ip: must be an IPv4 or IPv6 address when unauthenticated",
            ),
        ] {
            let mut r = failed_auth("10.0.0.1", 1);
            mutate(&mut r);
            let err = e.check(&r, 0).await.unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn report_counts_valid_outcomes_and_skips_bad_ones() {
        let e = engine();
        let ok = RequestOutcome {
            request_id: "r-1".into(),
            outcome: WireOutcome::Throttled as i32,
            status: 429,
            upstream_latency_us: 0,
            gateway_latency_us: 300,
            ..Default::default()
        };
        let bad = RequestOutcome {
            request_id: String::new(),
            ..ok.clone()
        };
        let r = e
            .report(&ReportRequest {
                outcomes: vec![ok.clone(), bad, ok],
                dropped: 3,
            })
            .unwrap();
        assert_eq!(r.accepted, 2);
        let text = e.metrics().render();
        assert!(
            text.contains(r#"palisade_outcomes_total{outcome="throttled"} 2"#),
            "{text}"
        );
        assert!(text.contains("palisade_reports_invalid_total 1"), "{text}");
        assert!(
            text.contains("palisade_reports_dropped_by_filter_total 3"),
            "{text}"
        );
    }

    #[test]
    fn oversized_report_is_rejected_whole() {
        let e = engine();
        let outcomes = vec![RequestOutcome::default(); MAX_REPORT_BATCH + 1];
        assert!(matches!(
            e.report(&ReportRequest {
                outcomes,
                dropped: 0
            }),
            Err(ScorerError::InvalidArgument(_))
        ));
    }
}
