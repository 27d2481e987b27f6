//! The HTTP context: one per request. Strips gateway-only headers, assigns the request id,
//! authenticates the API key, asks the scorer, enforces the decision, decorates the response
//! and records the outcome when the stream ends.

use std::rc::Rc;

use palisade_proto::v1::{CheckRequest, Outcome, RequestOutcome};
use palisade_proto::{CHECK_METHOD, SERVICE};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action as HostAction;

use crate::auth::{AuthError, Identity};
use crate::check;
use crate::config::HeaderNames;
use crate::decision::{self, Action, Effect, Subject};
use crate::host::{Host, decode_int_property};
use crate::metrics::Metric;
use crate::peer;
use crate::request::{RequestFacts, RequestHeaders};
use crate::request_id;
use crate::root::Shared;
use crate::verdict::{ScorerFailure, Verdict};

/// Where an action is applied: synchronously in the request-headers callback (forwarding
/// means returning `Continue`) or later, from a callout (forwarding means resuming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Headers,
    Callout,
}

/// How the request ended, once decided.
#[derive(Debug, Clone)]
struct Decided {
    outcome: Outcome,
    reason: String,
}

/// The HTTP context of one request.
#[derive(Debug)]
pub struct Http<H: Host> {
    host: H,
    /// `None` only if the plugin never got a valid configuration: every request gets 503.
    shared: Option<Rc<Shared>>,
    facts: Option<RequestFacts>,
    identity: Option<Identity>,
    /// Why authentication failed, while the scorer is asked whether the client address is
    /// over its failed-authentication limit.
    auth_error: Option<AuthError>,
    /// Token of the `Check` call being waited for.
    pending: Option<u32>,
    decided: Option<Decided>,
    /// Headers to set on the upstream's response (rate limit).
    response_headers: Vec<(String, String)>,
    /// When the request was forwarded upstream, ns.
    forwarded_at: Option<u64>,
    /// When the gateway was done with the request (forwarded or answered), ns.
    done_at: Option<u64>,
    upstream_latency_us: u64,
    /// The backend's own time from its `Server-Timing` header, µs.
    backend_latency_us: u64,
    /// The scorer's anomaly score and model version, for the outcome report.
    score: (f64, String),
    local_status: Option<u32>,
    response_status: Option<u32>,
}

impl<H: Host> Http<H> {
    /// A context for one stream.
    pub fn new(host: H, shared: Option<Rc<Shared>>) -> Self {
        Self {
            host,
            shared,
            facts: None,
            identity: None,
            auth_error: None,
            pending: None,
            decided: None,
            response_headers: Vec::new(),
            forwarded_at: None,
            done_at: None,
            upstream_latency_us: 0,
            backend_latency_us: 0,
            score: (0.0, String::new()),
            local_status: None,
            response_status: None,
        }
    }

    fn request_headers(&mut self) -> HostAction {
        let started = self.host.now_nanos();
        let Some(shared) = self.shared.clone() else {
            log::error!("no valid configuration; answering 503");
            let id = self.new_request_id(None);
            let action = decision::unavailable(&id, "not_configured", &HeaderNames::default());
            return self.apply(action, Phase::Headers);
        };
        let config = &shared.config;
        let headers = match self.host.request_headers() {
            Ok(h) => RequestHeaders(h),
            Err(e) => {
                log::error!("cannot read request headers ({e}); answering 503");
                let id = self.new_request_id(Some(&shared));
                return self.host_failure(id, Phase::Headers);
            }
        };
        let request_id = self.choose_request_id(&headers, &shared);
        let facts = RequestFacts::new(&headers, request_id, self.client_ip(), started);

        // 1. Nothing a client sends in a gateway-only header survives, whatever happens next.
        for name in config.strip.to_remove(headers.names()) {
            if let Err(e) = self.host.remove_request_header(&name) {
                log::error!("cannot remove header {name} ({e}); answering 503");
                return self.host_failure_with(facts, Phase::Headers);
            }
        }

        // 2. The request id, also bound into the gateway token.
        if let Err(e) = self
            .host
            .set_request_header(&config.headers.request_id, &facts.request_id)
        {
            log::error!("cannot set the request id ({e}); answering 503");
            return self.host_failure_with(facts, Phase::Headers);
        }

        // 3. Authentication. Never fails open.
        let values = headers.values(&config.headers.api_key);
        let identity = match config.keys.authenticate(&config.pepper, &values) {
            Ok(entry) => Identity::from(entry),
            Err(e) => return self.unauthenticated(facts, e, &shared),
        };

        // 4. The verdict.
        let request = check::check_request(&facts, &identity, &config.query);
        self.facts = Some(facts);
        self.identity = Some(identity);
        self.ask_scorer(&shared, &request)
    }

    /// A failed authentication: 401, or, with `ip_limits`, whatever the scorer's
    /// per-client-IP policy makes of it (429 or 401). Never forwarded.
    fn unauthenticated(
        &mut self,
        facts: RequestFacts,
        e: AuthError,
        shared: &Shared,
    ) -> HostAction {
        let config = &shared.config;
        // Without an address there is nothing to count against.
        if !config.ip_limits || facts.client_ip.is_empty() {
            let action = decision::unauthorized(&facts.request_id, e, &config.headers);
            self.facts = Some(facts);
            return self.apply(action, Phase::Headers);
        }
        let request = check::unauthenticated_request(&facts);
        self.facts = Some(facts);
        self.auth_error = Some(e);
        self.ask_scorer(shared, &request)
    }

    /// Sends `request` to the scorer and pauses for the answer; applies the failure at once
    /// when it cannot be sent.
    fn ask_scorer(&mut self, shared: &Shared, request: &CheckRequest) -> HostAction {
        let config = &shared.config;
        match self.host.dispatch_grpc(
            &config.scorer.cluster,
            SERVICE,
            CHECK_METHOD,
            &check::encode(request),
            config.scorer.timeout(),
        ) {
            Ok(token) => {
                self.pending = Some(token);
                HostAction::Pause
            }
            Err(e) => {
                self.note_scorer_health(Some(&format!("{} ({e})", ScorerFailure::Dispatch)));
                self.enforce(Err(ScorerFailure::Dispatch), Phase::Headers)
            }
        }
    }

    /// Logs scorer failures at warn when they start and at debug while they last, so an
    /// outage does not flood Envoy's log with one line per request.
    fn note_scorer_health(&self, failure: Option<&str>) {
        let Some(shared) = &self.shared else {
            return;
        };
        match failure {
            Some(e) if !shared.scorer_failing.replace(true) => log::warn!(
                "scorer failing: {e} (request {}, {:?}); further failures are logged at debug \
                 until it answers again",
                self.request_id(),
                shared.config.failure_mode
            ),
            Some(e) => log::debug!("scorer failing: {e} (request {})", self.request_id()),
            None if shared.scorer_failing.replace(false) => log::info!("scorer answering again"),
            None => {}
        }
    }

    /// 503 after a failed host call, for a request known by `facts`.
    fn host_failure_with(&mut self, facts: RequestFacts, phase: Phase) -> HostAction {
        let id = facts.request_id.clone();
        self.facts = Some(facts);
        self.host_failure(id, phase)
    }

    /// 503 after a failed host call.
    fn host_failure(&mut self, request_id: String, phase: Phase) -> HostAction {
        let action = decision::unavailable(&request_id, "host_error", &self.header_names());
        self.apply(action, phase)
    }

    fn check_done(&mut self, token: u32, grpc_status: u32, size: usize) {
        if self.pending != Some(token) {
            log::debug!("ignoring answer to unknown call {token}");
            return;
        }
        self.pending = None;
        let body = if grpc_status == 0 {
            self.host.grpc_response_body(size).unwrap_or_else(|e| {
                log::warn!("cannot read the scorer's answer ({e})");
                None
            })
        } else {
            None
        };
        let verdict = check::verdict_from_response(grpc_status, body.as_deref());
        self.note_scorer_health(verdict.as_ref().err().map(ToString::to_string).as_deref());
        self.enforce(verdict, Phase::Callout);
    }

    /// Decides on a verdict source's answer and applies the decision.
    fn enforce(&mut self, verdict: Result<Verdict, ScorerFailure>, phase: Phase) -> HostAction {
        if let Some(error) = self.auth_error {
            let action =
                decision::unauthenticated(verdict, self.request_id(), error, &self.header_names());
            if action.outcome == Outcome::Throttled
                && let Some(shared) = &self.shared
            {
                shared
                    .counters
                    .incr(&self.host, Metric::RequestsUnauthorizedThrottled);
            }
            return self.apply(action, phase);
        }
        let (Some(shared), Some(facts), Some(identity)) =
            (&self.shared, &self.facts, &self.identity)
        else {
            // Unreachable: a verdict is only sought for an authenticated request.
            let id = self.request_id().to_owned();
            let action = decision::unavailable(&id, "internal", &self.header_names());
            return self.apply(action, phase);
        };
        if let Ok(v) = &verdict {
            self.score = (v.anomaly_score, v.model_version.clone());
        }
        let subject = Subject {
            request_id: &facts.request_id,
            method: &facts.method,
            full_path: &facts.full_path,
            key_id: &identity.key_id,
            now_secs: self.host.now_nanos() / 1_000_000_000,
        };
        let action = decision::decide(verdict, &subject, &shared.config);
        self.apply(action, phase)
    }

    /// Carries out an action, then counts it.
    fn apply(&mut self, action: Action, phase: Phase) -> HostAction {
        let result = match action.effect {
            Effect::Forward(forward) => {
                for (name, value) in &forward.request_headers {
                    if let Err(e) = self.host.set_request_header(name, value) {
                        // Never forward a request without its gateway headers.
                        log::error!("cannot set header {name} ({e}); answering 503");
                        return self.host_failure(self.request_id().to_owned(), phase);
                    }
                }
                let now = self.host.now_nanos();
                self.forwarded_at = Some(now);
                self.done_at = Some(now);
                self.response_headers = forward.response_headers;
                match phase {
                    Phase::Headers => HostAction::Continue,
                    Phase::Callout => {
                        if let Err(e) = self.host.resume_request() {
                            log::error!("cannot resume request {}: {e}", self.request_id());
                        }
                        HostAction::Pause
                    }
                }
            }
            Effect::Respond(response) => {
                let headers: Vec<(&str, &str)> = response
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                if let Err(e) = self
                    .host
                    .send_response(response.status, &headers, &response.body)
                {
                    // Nothing safer is left: the request stays paused until Envoy times it out.
                    log::error!(
                        "cannot answer request {} with {} ({e})",
                        self.request_id(),
                        response.status
                    );
                }
                self.local_status = Some(response.status);
                self.done_at = Some(self.host.now_nanos());
                HostAction::Pause
            }
        };
        if let Some(shared) = &self.shared {
            for m in Metric::for_outcome(action.outcome, action.scorer_error) {
                shared.counters.incr(&self.host, m);
            }
        }
        self.decided = Some(Decided {
            outcome: action.outcome,
            reason: action.reason,
        });
        result
    }

    fn response_headers(&mut self) -> HostAction {
        let now = self.host.now_nanos();
        if let Some(at) = self.forwarded_at
            && self.upstream_latency_us == 0
        {
            self.upstream_latency_us = now.saturating_sub(at) / 1_000;
        }
        match self.host.response_header("server-timing") {
            Ok(Some(v)) => {
                self.backend_latency_us = crate::server_timing::app_duration_us(&v).unwrap_or(0);
            }
            Ok(None) => {}
            Err(e) => log::debug!("cannot read server-timing ({e})"),
        }
        match self.host.response_header(":status") {
            Ok(Some(s)) => {
                self.response_status = std::str::from_utf8(&s).ok().and_then(|s| s.parse().ok());
            }
            Ok(None) => {}
            Err(e) => log::debug!("cannot read :status ({e})"),
        }
        let Some(shared) = self.shared.clone() else {
            return HostAction::Continue;
        };
        if self.forwarded_at.is_some() {
            for (name, value) in &self.response_headers {
                if let Err(e) = self.host.set_response_header(name, value) {
                    log::warn!("cannot set response header {name} ({e})");
                }
            }
        }
        if let Some(facts) = &self.facts
            && let Err(e) = self
                .host
                .set_response_header(&shared.config.headers.request_id, &facts.request_id)
        {
            log::warn!("cannot set the response request id ({e})");
        }
        HostAction::Continue
    }

    /// Body and trailers flow only once the request was forwarded.
    fn hold_body(&self) -> HostAction {
        if self.forwarded_at.is_some() {
            HostAction::Continue
        } else {
            HostAction::Pause
        }
    }

    /// Records the outcome of the finished stream for the next report.
    fn log(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if !shared.config.report.enabled {
            return;
        }
        let outcome = self.take_outcome();
        if shared.outcomes.borrow_mut().push(outcome) {
            shared.counters.incr(&self.host, Metric::ReportsDropped);
        }
    }

    /// The outcome record. `status` is Envoy's `response.code` (what the client got),
    /// `request_bytes` / `response_bytes` are Envoy's `request.total_size` /
    /// `response.total_size` (headers plus body, as Envoy counted them).
    ///
    /// Called once, from `on_log`, the stream's last callback: it moves the request's facts
    /// into the record instead of copying them.
    fn take_outcome(&mut self) -> RequestOutcome {
        let facts = self.facts.take().unwrap_or_default();
        let identity = self.identity.take().unwrap_or_default();
        let (outcome, reason) = match self.decided.take() {
            Some(d) => (d.outcome, d.reason),
            None if self.pending.is_some() => (Outcome::Unspecified, "aborted_during_check".into()),
            None => (Outcome::Unspecified, "incomplete".into()),
        };
        let status = self
            .int_property(&["response", "code"])
            .filter(|s| *s > 0)
            .and_then(|s| u32::try_from(s).ok())
            .or(self.response_status)
            .or(self.local_status)
            .unwrap_or(0);
        let gateway_latency_us = match (self.done_at, facts.started_nanos) {
            (Some(done), started) if started > 0 => done.saturating_sub(started) / 1_000,
            _ => 0,
        };
        let timestamp_ms = facts.timestamp_ms();
        RequestOutcome {
            request_id: facts.request_id,
            key_id: identity.key_id,
            tenant: identity.tenant,
            tier: identity.tier,
            client_ip: facts.client_ip,
            method: facts.method,
            path: facts.path,
            user_agent: facts.user_agent,
            outcome: outcome as i32,
            status,
            upstream_latency_us: self.upstream_latency_us,
            gateway_latency_us,
            request_bytes: self.size_property("request"),
            response_bytes: self.size_property("response"),
            timestamp_ms,
            reason,
            anomaly_score: self.score.0,
            model_version: std::mem::take(&mut self.score.1),
            backend_latency_us: self.backend_latency_us,
            route: String::new(),
        }
    }

    fn size_property(&self, which: &str) -> u64 {
        self.int_property(&[which, "total_size"])
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    fn int_property(&self, path: &[&str]) -> Option<i64> {
        match self.host.property(path) {
            Ok(Some(bytes)) => decode_int_property(&bytes),
            Ok(None) => None,
            Err(e) => {
                log::debug!("cannot read property {} ({e})", path.join("."));
                None
            }
        }
    }

    fn client_ip(&self) -> String {
        match self.host.property(&["source", "address"]) {
            Ok(Some(bytes)) => peer::client_ip(&String::from_utf8_lossy(&bytes))
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            Ok(None) => String::new(),
            Err(e) => {
                log::debug!("cannot read source.address ({e})");
                String::new()
            }
        }
    }

    fn header_names(&self) -> HeaderNames {
        self.shared
            .as_ref()
            .map_or_else(HeaderNames::default, |s| s.config.headers.clone())
    }

    fn request_id(&self) -> &str {
        self.facts.as_ref().map_or("", |f| f.request_id.as_str())
    }

    /// The client's id if trusted and well-formed, else a new one.
    fn choose_request_id(&self, headers: &RequestHeaders, shared: &Shared) -> String {
        let config = &shared.config;
        if config.trust_request_id
            && let [one] = headers.values(&config.headers.request_id)[..]
            && request_id::is_acceptable(one)
        {
            return String::from_utf8_lossy(one).into_owned();
        }
        self.new_request_id(Some(shared))
    }

    fn new_request_id(&self, shared: Option<&Shared>) -> String {
        let mut bytes = [0u8; 16];
        match self.host.random_fill(&mut bytes) {
            Ok(()) => request_id::uuid_v4(bytes),
            Err(e) => {
                log::debug!("no randomness for the request id ({e}); using the clock");
                let n = shared.map_or(0, |s| {
                    let n = s.fallback_ids.get().wrapping_add(1);
                    s.fallback_ids.set(n);
                    n
                });
                request_id::uuid_v8_fallback(self.host.now_nanos(), n)
            }
        }
    }
}

impl<H: Host> Context for Http<H> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.check_done(token_id, status_code, response_size);
    }
}

impl<H: Host> HttpContext for Http<H> {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        self.request_headers()
    }

    // While the verdict is pending (or after a local answer), the body and trailers must not
    // let the stream continue: in Envoy, `Continue` from the body callback resumes a request
    // whose headers were paused, forwarding it without a verdict. `Pause` buffers the body
    // until `resume_http_request` (subject to Envoy's buffer limit).
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> HostAction {
        self.hold_body()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> HostAction {
        self.hold_body()
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        self.response_headers()
    }

    fn on_log(&mut self) {
        self.log();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    //! The HTTP context driven end to end through its Envoy callbacks, against the in-memory
    //! host. (The real Envoy runs in the e2e suite.)

    use std::time::Duration;

    use palisade_proto::v1::{CheckRequest, CheckResponse, Decision, Outcome, RateLimit};
    use palisade_token::{Claims, TokenKey, sign};
    use prost::Message;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::Action as HostAction;

    use super::Http;
    use crate::host::Host;
    use crate::host::fake::FakeHost;
    use crate::root::Root;
    use crate::test_support::{TOKEN_KEY_HEX, config_json};

    type Headers<'a> = Vec<(&'a str, &'a [u8])>;

    struct Gateway {
        host: FakeHost,
        root: Root<FakeHost>,
    }

    fn gateway(patch: serde_json::Value) -> Gateway {
        let host = FakeHost::new();
        let mut json = config_json();
        for (k, v) in patch.as_object().unwrap() {
            json[k] = v.clone();
        }
        host.state().configuration = Some(json.to_string().into_bytes());
        host.state()
            .properties
            .insert("source.address".into(), b"[2001:db8::9]:40123".to_vec());
        let mut root = Root::new(host.clone());
        assert!(root.on_configure(0));
        Gateway { host, root }
    }

    fn base_headers<'a>(extra: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
        let mut h: Vec<(&str, &[u8])> = vec![
            (":method", b"GET"),
            (":path", b"/v1/items?id=7&q=a%20b"),
            (":authority", b"api.example"),
            ("user-agent", b"curl/8"),
        ];
        h.extend_from_slice(extra);
        h
    }

    impl Gateway {
        /// A new stream whose request headers are `headers`, after `on_http_request_headers`.
        fn request(&self, headers: &[(&str, &[u8])]) -> (Http<FakeHost>, HostAction) {
            self.host.new_stream(headers);
            let mut http = self.root.http();
            let action = http.on_http_request_headers(headers.len(), true);
            (http, action)
        }

        /// A request with the given API key(s) plus `extra` headers.
        fn keyed(&self, extra: &[(&str, &[u8])]) -> (Http<FakeHost>, HostAction) {
            let mut extra = extra.to_vec();
            extra.push(("x-api-key", b"alice-key"));
            self.request(&base_headers(&extra))
        }

        fn answer(&self, http: &mut Http<FakeHost>, response: &CheckResponse) {
            let body = response.encode_to_vec();
            let token = self.host.last_call().token;
            self.host.state().grpc_response = Some(body.clone());
            http.on_grpc_call_response(token, 0, body.len());
        }

        fn check_request(&self) -> CheckRequest {
            let call = self.host.last_call();
            assert_eq!(call.method, "Check");
            CheckRequest::decode(call.message.as_slice()).unwrap()
        }

        fn upstream_responds(
            &self,
            http: &mut Http<FakeHost>,
            headers: &[(&str, &str)],
        ) -> HostAction {
            self.host.state().response_headers = headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect();
            http.on_http_response_headers(headers.len(), false)
        }

        fn finish(
            &self,
            http: &mut Http<FakeHost>,
            code: i64,
        ) -> palisade_proto::v1::RequestOutcome {
            {
                let mut s = self.host.state();
                s.properties
                    .insert("response.code".into(), code.to_le_bytes().to_vec());
                s.properties
                    .insert("request.total_size".into(), 321i64.to_le_bytes().to_vec());
                s.properties
                    .insert("response.total_size".into(), 654i64.to_le_bytes().to_vec());
            }
            http.on_log();
            let shared = self.root.shared().unwrap();
            let mut q = shared.outcomes.borrow_mut();
            let batch = q.take_batch(usize::MAX).expect("an outcome was queued");
            assert_eq!(batch.outcomes.len(), 1);
            batch.outcomes.into_iter().next().unwrap()
        }
    }

    fn decision(d: Decision) -> CheckResponse {
        CheckResponse {
            decision: d as i32,
            reason: "ok".into(),
            ..Default::default()
        }
    }

    fn rate_limit() -> RateLimit {
        RateLimit {
            limit: 60,
            remaining: 0,
            reset_seconds: 9,
            window_seconds: 60,
            policy: "standard".into(),
        }
    }

    // --- Header stripping ---------------------------------------------------------------

    #[test]
    fn strips_every_gateway_only_header_even_when_unauthenticated() {
        let gw = gateway(serde_json::json!({
            "strip_headers": ["x-internal"],
            "strip_prefixes": ["x-palisade-", "x-debug-"],
            "ip_limits": false
        }));
        let spoofed: &[(&str, &[u8])] = &[
            ("x-gateway-token", b"v1.forged"),
            ("x-palisade-key-id", b"admin"),
            ("x-palisade-flag", b"no"),
            ("x-palisade-anything", b"1"),
            ("x-debug-mode", b"on"),
            ("x-internal", b"1"),
            ("x-request-id", b"client-chosen"),
            ("accept", b"*/*"),
        ];
        let (_http, action) = gw.request(&base_headers(spoofed));
        assert_eq!(action, HostAction::Pause);
        assert_eq!(gw.host.sent().unwrap().status, 401);
        let s = gw.host.state();
        let names: Vec<&str> = s.request_headers.iter().map(|(n, _)| n.as_str()).collect();
        for gone in [
            "x-gateway-token",
            "x-palisade-key-id",
            "x-palisade-flag",
            "x-palisade-anything",
            "x-debug-mode",
            "x-internal",
        ] {
            assert!(!names.contains(&gone), "{gone} survived: {names:?}");
        }
        assert!(names.contains(&"accept"));
        drop(s);
        assert_ne!(
            gw.host.request_header("x-request-id").unwrap(),
            "client-chosen"
        );
    }

    #[test]
    fn spoofed_gateway_headers_are_replaced_not_duplicated() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[
            ("x-palisade-key-id", b"admin"),
            ("x-gateway-token", b"v1.forged"),
        ]);
        gw.answer(&mut http, &decision(Decision::Allow));
        // request_header asserts the name appears once.
        assert_eq!(
            gw.host.request_header("x-palisade-key-id").unwrap(),
            "alice"
        );
        assert!(gw.host.request_header("x-gateway-token").unwrap() != "v1.forged");
    }

    // --- Request ids --------------------------------------------------------------------

    fn is_uuid(id: &str, version: char) -> bool {
        id.len() == 36 && id.as_bytes()[14] as char == version && id.matches('-').count() == 4
    }

    #[test]
    fn request_ids_are_generated_unless_trusted() {
        let gw = gateway(serde_json::json!({ "ip_limits": false }));
        gw.request(&base_headers(&[("x-request-id", b"mine")]));
        let id = gw.host.request_header("x-request-id").unwrap();
        assert!(is_uuid(&id, '4'), "{id}");
        let sent = gw.host.sent().unwrap();
        assert_eq!(sent.header("x-request-id"), Some(id.as_str()));
        assert_eq!(sent.json()["request_id"], id.as_str());

        let gw = gateway(serde_json::json!({ "trust_request_id": true, "ip_limits": false }));
        gw.request(&base_headers(&[("x-request-id", b"trace-abc.123")]));
        assert_eq!(
            gw.host.request_header("x-request-id").unwrap(),
            "trace-abc.123"
        );

        for bad in [
            vec![("x-request-id", b"has space".as_slice())],
            vec![("x-request-id", b"".as_slice())],
            vec![
                ("x-request-id", b"a".as_slice()),
                ("x-request-id", b"b".as_slice()),
            ],
        ] {
            gw.request(&base_headers(&bad));
            let id = gw.host.request_header("x-request-id").unwrap();
            assert!(is_uuid(&id, '4'), "{bad:?} gave {id}");
        }
    }

    #[test]
    fn request_id_falls_back_without_randomness() {
        let gw = gateway(serde_json::json!({}));
        gw.host.state().random = None;
        gw.request(&base_headers(&[]));
        let a = gw.host.request_header("x-request-id").unwrap();
        gw.request(&base_headers(&[]));
        let b = gw.host.request_header("x-request-id").unwrap();
        assert!(is_uuid(&a, '8') && is_uuid(&b, '8'), "{a} {b}");
        assert_ne!(a, b);
    }

    // --- Authentication -----------------------------------------------------------------

    #[test]
    fn missing_duplicate_empty_and_unknown_keys_get_401_without_echo() {
        let gw = gateway(serde_json::json!({ "ip_limits": false }));
        let cases: Vec<(Headers<'_>, &str)> = vec![
            (vec![], "missing_api_key"),
            (
                vec![("x-api-key", b"alice-key"), ("x-api-key", b"alice-key")],
                "duplicate_api_key",
            ),
            (vec![("x-api-key", b"")], "empty_api_key"),
            (
                vec![("x-api-key", b"sk_live_secret_guess")],
                "unknown_api_key",
            ),
        ];
        for (n, (extra, reason)) in cases.into_iter().enumerate() {
            let (mut http, action) = gw.request(&base_headers(&extra));
            assert_eq!(action, HostAction::Pause);
            let sent = gw.host.sent().unwrap();
            assert_eq!(sent.status, 401, "{reason}");
            assert_eq!(sent.header("content-type"), Some("application/json"));
            let body = String::from_utf8(sent.body.clone()).unwrap();
            assert!(
                !body.contains("sk_live") && !body.contains("alice-key"),
                "{body}"
            );
            assert_eq!(sent.json()["error"], "unauthorized");
            assert!(
                gw.host.state().calls.is_empty(),
                "no scorer call for {reason}"
            );
            assert_eq!(
                gw.host.counter("palisade_requests_unauthorized"),
                n as u64 + 1
            );

            let o = gw.finish(&mut http, 401);
            assert_eq!(o.outcome, Outcome::Unauthorized as i32);
            assert_eq!(o.reason, reason);
            assert_eq!(o.status, 401);
            assert_eq!(o.key_id, "");
            assert_eq!(o.upstream_latency_us, 0);
        }
    }

    /// A request with a wrong key, after `on_http_request_headers`: paused on its Check.
    fn failed_auth(gw: &Gateway) -> Http<FakeHost> {
        let (http, action) = gw.request(&base_headers(&[("x-api-key", b"sk_live_guess")]));
        assert_eq!(action, HostAction::Pause);
        assert!(gw.host.sent().is_none(), "no answer before the scorer's");
        http
    }

    #[test]
    fn failed_authentication_asks_about_the_client_ip_without_the_key() {
        let gw = gateway(serde_json::json!({}));
        let mut http = failed_auth(&gw);
        let r = gw.check_request();
        assert!(r.unauthenticated);
        assert_eq!(r.client_ip, "2001:db8::9");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/v1/items"));
        assert_eq!(r.user_agent, "curl/8");
        assert!(r.key_id.is_empty() && r.tenant.is_empty() && r.tier.is_empty());
        assert!(r.query.is_empty());
        assert!(
            !gw.host
                .last_call()
                .message
                .windows(5)
                .any(|w| w == b"sk_li")
        );

        gw.answer(&mut http, &decision(Decision::Allow));
        let sent = gw.host.sent().unwrap();
        assert_eq!(sent.status, 401);
        assert_eq!(sent.json()["error"], "unauthorized");
        assert_eq!(gw.host.state().resumed, 0);
        assert!(gw.host.request_header("x-gateway-token").is_none());
        assert_eq!(gw.host.counter("palisade_requests_unauthorized"), 1);
        assert_eq!(gw.host.counter("palisade_requests_allowed"), 0);
        let o = gw.finish(&mut http, 401);
        assert_eq!(o.outcome, Outcome::Unauthorized as i32);
        assert_eq!(o.reason, "unknown_api_key");
        assert_eq!(o.key_id, "");
    }

    #[test]
    fn failed_authentication_over_the_ip_limit_gets_429() {
        let gw = gateway(serde_json::json!({}));
        let mut http = failed_auth(&gw);
        gw.answer(
            &mut http,
            &CheckResponse {
                decision: Decision::Throttle as i32,
                reason: "rate_limited:unauthenticated".into(),
                retry_after_seconds: 30,
                rate_limit: Some(RateLimit {
                    policy: "unauthenticated".into(),
                    ..rate_limit()
                }),
                ..Default::default()
            },
        );
        let sent = gw.host.sent().unwrap();
        assert_eq!(sent.status, 429);
        assert_eq!(sent.header("retry-after"), Some("30"));
        assert_eq!(
            sent.header("ratelimit"),
            Some(r#""unauthenticated";r=0;t=9"#)
        );
        assert_eq!(sent.json()["reason"], "auth_failures_rate_limited");
        assert_eq!(gw.host.state().resumed, 0);
        assert_eq!(gw.host.counter("palisade_requests_throttled"), 1);
        assert_eq!(
            gw.host.counter("palisade_requests_unauthorized_throttled"),
            1
        );
        assert_eq!(gw.host.counter("palisade_requests_unauthorized"), 0);
        let o = gw.finish(&mut http, 429);
        assert_eq!(o.outcome, Outcome::Throttled as i32);
        assert_eq!(o.reason, "auth_failures_rate_limited");
        assert_eq!(o.key_id, "");
    }

    #[test]
    fn failed_authentication_never_fails_open() {
        for mode in ["fail_closed", "fail_open"] {
            let gw = gateway(serde_json::json!({ "failure_mode": mode }));
            // Verdicts other than THROTTLE, a gRPC error, a garbage answer.
            for d in [Decision::Block, Decision::Flag, Decision::ShadowThrottle] {
                let mut http = failed_auth(&gw);
                gw.answer(&mut http, &decision(d));
                assert_eq!(gw.host.sent().unwrap().status, 401, "{mode} {d:?}");
            }
            let mut http = failed_auth(&gw);
            http.on_grpc_call_response(gw.host.last_call().token, 14, 0);
            assert_eq!(gw.host.sent().unwrap().status, 401, "{mode} unavailable");
            let mut http = failed_auth(&gw);
            gw.host.state().grpc_response = Some(b"\xff\xff\xff".to_vec());
            http.on_grpc_call_response(gw.host.last_call().token, 0, 3);
            assert_eq!(gw.host.sent().unwrap().status, 401, "{mode} garbage");
            // The Check cannot even be sent: answered at once.
            gw.host.state().fail_dispatch = true;
            let (_http, action) = gw.request(&base_headers(&[("x-api-key", b"nope")]));
            assert_eq!(action, HostAction::Pause);
            assert_eq!(gw.host.sent().unwrap().status, 401, "{mode} dispatch");

            assert_eq!(gw.host.state().resumed, 0, "{mode}");
            assert!(gw.host.request_header("x-gateway-token").is_none());
            assert_eq!(gw.host.counter("palisade_requests_unauthorized"), 6);
            assert_eq!(gw.host.counter("palisade_scorer_errors"), 3);
            assert_eq!(gw.host.counter("palisade_fail_open"), 0);
            assert_eq!(gw.host.counter("palisade_fail_closed"), 0);
        }
    }

    #[test]
    fn failed_authentication_without_a_client_address_is_just_401() {
        let gw = gateway(serde_json::json!({}));
        gw.host.state().properties.remove("source.address");
        let (_http, action) = gw.request(&base_headers(&[("x-api-key", b"nope")]));
        assert_eq!(action, HostAction::Pause);
        assert_eq!(gw.host.sent().unwrap().status, 401);
        assert!(gw.host.state().calls.is_empty());
    }

    #[test]
    fn a_custom_api_key_header_is_honoured() {
        let gw = gateway(serde_json::json!({ "headers": { "api_key": "x-key" } }));
        let (_http, action) = gw.request(&base_headers(&[("x-key", b"bob-key")]));
        assert_eq!(action, HostAction::Pause);
        assert!(gw.host.sent().is_none());
        assert_eq!(gw.check_request().key_id, "bob");
    }

    // --- The Check call -----------------------------------------------------------------

    #[test]
    fn known_key_asks_the_scorer() {
        let gw =
            gateway(serde_json::json!({ "scorer": { "cluster": "scorer_c", "timeout_ms": 80 } }));
        let (_http, action) = gw.keyed(&[]);
        assert_eq!(action, HostAction::Pause);
        let call = gw.host.last_call();
        assert_eq!(call.cluster, "scorer_c");
        assert_eq!(call.service, "palisade.v1.Scorer");
        assert_eq!(call.timeout, Duration::from_millis(80));
        let r = gw.check_request();
        assert_eq!(r.key_id, "alice");
        assert_eq!(r.tenant, "demo");
        assert_eq!(r.tier, "standard");
        assert_eq!(r.client_ip, "2001:db8::9");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v1/items");
        let q: Vec<(&str, &str)> = r
            .query
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(q, [("id", "7"), ("q", "a b")]);
        assert!(!r.query_truncated);
        assert_eq!(r.user_agent, "curl/8");
        assert_eq!(r.timestamp_ms, 1_700_000_000_000);
        assert_eq!(
            r.request_id,
            gw.host.request_header("x-request-id").unwrap()
        );
    }

    #[test]
    fn hostile_header_bytes_do_not_break_anything() {
        let gw = gateway(serde_json::json!({}));
        let (_http, action) = gw.request(&[
            (":method", b"GET"),
            (":path", b"/caf\xc3\xa9?\xff=\xfe"),
            ("user-agent", b"\xff\xfebot\x00"),
            ("x-api-key", b"alice-key"),
        ]);
        assert_eq!(action, HostAction::Pause);
        let r = gw.check_request();
        assert_eq!(r.user_agent, "\u{fffd}\u{fffd}bot\0");
        assert_eq!(r.path, "/café");
        assert_eq!(r.query[0].name, "\u{fffd}");
    }

    // --- Verdicts -----------------------------------------------------------------------

    fn expected_token(gw: &Gateway, method: &str, path: &str) -> String {
        let id = gw.host.request_header("x-request-id").unwrap();
        sign(
            &TokenKey::from_hex(TOKEN_KEY_HEX).unwrap(),
            &Claims {
                timestamp: gw.host.now_nanos() / 1_000_000_000,
                request_id: &id,
                method,
                path,
                key_id: "alice",
            },
        )
        .unwrap()
    }

    #[test]
    fn allow_forwards_signed_and_decorates_the_response() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        gw.host.advance(Duration::from_millis(3));
        let mut response = decision(Decision::Allow);
        response.rate_limit = Some(RateLimit {
            remaining: 41,
            ..rate_limit()
        });
        response.anomaly_score = 0.25;
        response.model_version = "iforest-1".into();
        gw.answer(&mut http, &response);

        assert_eq!(gw.host.state().resumed, 1);
        assert!(gw.host.sent().is_none());
        assert_eq!(
            gw.host.request_header("x-gateway-token").unwrap(),
            expected_token(&gw, "GET", "/v1/items?id=7&q=a%20b")
        );
        assert_eq!(
            gw.host.request_header("x-palisade-key-id").unwrap(),
            "alice"
        );
        assert_eq!(gw.host.request_header("x-palisade-flag"), None);
        assert_eq!(gw.host.counter("palisade_requests_allowed"), 1);

        gw.host.advance(Duration::from_millis(20));
        let served = [(":status", "200"), ("server-timing", "app;dur=12.5")];
        assert_eq!(
            gw.upstream_responds(&mut http, &served),
            HostAction::Continue
        );
        assert_eq!(
            gw.host.response_header("ratelimit-policy").unwrap(),
            r#""standard";q=60;w=60"#
        );
        assert_eq!(
            gw.host.response_header("ratelimit").unwrap(),
            r#""standard";r=41;t=9"#
        );
        assert_eq!(
            gw.host.response_header("x-request-id"),
            gw.host.request_header("x-request-id")
        );

        let o = gw.finish(&mut http, 200);
        assert_eq!(o.outcome, Outcome::Allowed as i32);
        assert_eq!(o.status, 200);
        assert_eq!(o.key_id, "alice");
        assert_eq!(o.tenant, "demo");
        assert_eq!(o.tier, "standard");
        assert_eq!(o.client_ip, "2001:db8::9");
        assert_eq!(o.path, "/v1/items");
        assert_eq!(o.gateway_latency_us, 3_000);
        assert_eq!(o.upstream_latency_us, 20_000);
        assert_eq!(o.backend_latency_us, 12_500);
        assert_eq!(o.anomaly_score, 0.25);
        assert_eq!(o.model_version, "iforest-1");
        assert_eq!(o.request_bytes, 321);
        assert_eq!(o.response_bytes, 654);
        assert_eq!(o.timestamp_ms, 1_700_000_000_000);
        assert_eq!(o.reason, "ok");
    }

    #[test]
    fn flag_sets_the_flag_header() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        let mut response = decision(Decision::Flag);
        response.reason = "anomaly:0.97".into();
        gw.answer(&mut http, &response);
        assert_eq!(gw.host.state().resumed, 1);
        assert_eq!(
            gw.host.request_header("x-palisade-flag").unwrap(),
            "anomaly:0.97"
        );
        assert_eq!(gw.host.counter("palisade_requests_flagged"), 1);
        assert_eq!(gw.finish(&mut http, 200).outcome, Outcome::Flagged as i32);
    }

    #[test]
    fn shadow_verdicts_forward_and_count_as_shadowed() {
        let gw = gateway(serde_json::json!({}));
        for (d, o) in [
            (Decision::ShadowThrottle, Outcome::ShadowThrottled),
            (Decision::ShadowBlock, Outcome::ShadowBlocked),
        ] {
            let (mut http, _) = gw.keyed(&[]);
            gw.answer(&mut http, &decision(d));
            assert_eq!(gw.host.state().resumed, 1);
            assert!(gw.host.sent().is_none());
            assert_eq!(gw.finish(&mut http, 200).outcome, o as i32);
        }
        assert_eq!(gw.host.counter("palisade_requests_shadowed"), 2);
    }

    #[test]
    fn throttle_answers_429() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        let mut response = decision(Decision::Throttle);
        response.reason = "rate_limited:standard".into();
        response.retry_after_seconds = 9;
        response.rate_limit = Some(rate_limit());
        gw.answer(&mut http, &response);
        assert_eq!(gw.host.state().resumed, 0);
        let sent = gw.host.sent().unwrap();
        assert_eq!(sent.status, 429);
        assert_eq!(sent.header("retry-after"), Some("9"));
        assert_eq!(sent.header("ratelimit"), Some(r#""standard";r=0;t=9"#));
        assert_eq!(
            sent.header("ratelimit-policy"),
            Some(r#""standard";q=60;w=60"#)
        );
        assert_eq!(
            sent.header("x-request-id").map(str::to_owned),
            gw.host.request_header("x-request-id")
        );
        assert_eq!(sent.json()["reason"], "rate_limited:standard");
        assert_eq!(gw.host.request_header("x-gateway-token"), None);
        assert_eq!(gw.host.counter("palisade_requests_throttled"), 1);

        let o = gw.finish(&mut http, 429);
        assert_eq!(o.outcome, Outcome::Throttled as i32);
        assert_eq!(o.status, 429);
        assert_eq!(o.upstream_latency_us, 0);
    }

    #[test]
    fn block_answers_403() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        let mut response = decision(Decision::Block);
        response.reason = "blocklist".into();
        gw.answer(&mut http, &response);
        let sent = gw.host.sent().unwrap();
        assert_eq!(sent.status, 403);
        assert_eq!(sent.json()["error"], "forbidden");
        assert_eq!(sent.json()["reason"], "blocklist");
        assert_eq!(gw.host.counter("palisade_requests_blocked"), 1);
        assert_eq!(gw.finish(&mut http, 403).outcome, Outcome::Blocked as i32);
    }

    // --- Scorer failures ----------------------------------------------------------------

    #[test]
    fn scorer_failures_fail_closed() {
        let gw = gateway(serde_json::json!({}));
        // gRPC error.
        let (mut http, _) = gw.keyed(&[]);
        http.on_grpc_call_response(gw.host.last_call().token, 14, 0);
        assert_eq!(gw.host.sent().unwrap().status, 503);
        assert_eq!(gw.host.sent().unwrap().json()["error"], "unavailable");
        let o = gw.finish(&mut http, 503);
        assert_eq!(o.outcome, Outcome::FailClosed as i32);
        assert_eq!(o.reason, "scorer_grpc_status_14");

        // Empty body, undecodable body, unspecified decision.
        for body in [
            vec![],
            vec![0xff, 0xff],
            decision(Decision::Unspecified).encode_to_vec(),
        ] {
            let (mut http, _) = gw.keyed(&[]);
            gw.host.state().grpc_response = Some(body.clone());
            http.on_grpc_call_response(gw.host.last_call().token, 0, body.len());
            assert_eq!(gw.host.sent().unwrap().status, 503);
            assert_eq!(gw.host.state().resumed, 0);
        }

        // Dispatch failure: answered synchronously.
        gw.host.state().fail_dispatch = true;
        let (_http, action) = gw.keyed(&[]);
        assert_eq!(action, HostAction::Pause);
        assert_eq!(gw.host.sent().unwrap().status, 503);

        assert_eq!(gw.host.counter("palisade_scorer_errors"), 5);
        assert_eq!(gw.host.counter("palisade_fail_closed"), 5);
        assert_eq!(gw.host.counter("palisade_fail_open"), 0);
    }

    #[test]
    fn scorer_failures_fail_open_but_authentication_does_not() {
        let gw = gateway(serde_json::json!({ "failure_mode": "fail_open" }));
        let (mut http, _) = gw.keyed(&[]);
        http.on_grpc_call_response(gw.host.last_call().token, 4, 0);
        assert_eq!(gw.host.state().resumed, 1);
        assert!(gw.host.sent().is_none());
        assert!(gw.host.request_header("x-gateway-token").is_some());
        assert_eq!(gw.finish(&mut http, 200).outcome, Outcome::FailOpen as i32);

        gw.host.state().fail_dispatch = true;
        let (_http, action) = gw.keyed(&[]);
        assert_eq!(action, HostAction::Continue, "forwarded synchronously");
        assert!(gw.host.request_header("x-gateway-token").is_some());
        assert_eq!(gw.host.state().resumed, 0);

        // The failed authentication's own Check cannot be sent either: still 401.
        let (_http, _) = gw.request(&base_headers(&[("x-api-key", b"nope")]));
        assert_eq!(gw.host.sent().unwrap().status, 401);
        assert!(gw.host.request_header("x-gateway-token").is_none());

        assert_eq!(gw.host.counter("palisade_fail_open"), 2);
        assert_eq!(gw.host.counter("palisade_scorer_errors"), 3);
        assert_eq!(gw.host.counter("palisade_requests_allowed"), 0);
    }

    #[test]
    fn the_body_waits_for_the_verdict() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        assert_eq!(http.on_http_request_body(10, false), HostAction::Pause);
        assert_eq!(http.on_http_request_trailers(1), HostAction::Pause);
        gw.answer(&mut http, &decision(Decision::Allow));
        assert_eq!(http.on_http_request_body(10, true), HostAction::Continue);
        assert_eq!(http.on_http_request_trailers(1), HostAction::Continue);

        let (mut http, _) = gw.keyed(&[]);
        gw.answer(&mut http, &decision(Decision::Block));
        assert_eq!(http.on_http_request_body(10, true), HostAction::Pause);

        let (mut http, _) = gw.request(&base_headers(&[]));
        assert_eq!(
            http.on_http_request_body(10, true),
            HostAction::Pause,
            "401"
        );
    }

    #[test]
    fn answers_to_other_calls_are_ignored() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        let token = gw.host.last_call().token;
        http.on_grpc_call_response(token + 1, 0, 0);
        assert!(gw.host.sent().is_none());
        assert_eq!(gw.host.state().resumed, 0);
        gw.answer(&mut http, &decision(Decision::Allow));
        // A duplicate answer changes nothing.
        http.on_grpc_call_response(token, 14, 0);
        assert!(gw.host.sent().is_none());
        assert_eq!(gw.host.state().resumed, 1);
    }

    #[test]
    fn unsignable_requests_get_503() {
        let gw = gateway(serde_json::json!({}));
        let headers = [
            (":method", b"M-SEARCH".as_slice()),
            (":path", b"/x"),
            ("x-api-key", b"alice-key"),
        ];
        let (mut http, _) = gw.request(&headers);
        gw.answer(&mut http, &decision(Decision::Allow));
        assert_eq!(gw.host.sent().unwrap().status, 503);
        assert_eq!(gw.host.state().resumed, 0);
        assert_eq!(gw.finish(&mut http, 503).reason, "token_sign_failed");
    }

    // --- Host failures ------------------------------------------------------------------

    #[test]
    fn failing_header_mutations_fail_closed() {
        let gw = gateway(serde_json::json!({ "failure_mode": "fail_open" }));
        gw.host.state().fail_remove = true;
        let (_http, action) = gw.keyed(&[("x-gateway-token", b"forged")]);
        assert_eq!(action, HostAction::Pause);
        assert_eq!(gw.host.sent().unwrap().status, 503);
        assert!(gw.host.state().calls.is_empty());

        gw.host.state().fail_remove = false;
        gw.host.state().fail_set = true;
        let (_http, action) = gw.keyed(&[]);
        assert_eq!(action, HostAction::Pause);
        assert_eq!(gw.host.sent().unwrap().status, 503);
    }

    #[test]
    fn unconfigured_plugin_answers_503() {
        let host = FakeHost::new();
        let root = Root::new(host.clone());
        host.new_stream(&base_headers(&[("x-api-key", b"alice-key")]));
        let mut http = root.http();
        assert_eq!(http.on_http_request_headers(5, true), HostAction::Pause);
        assert_eq!(host.sent().unwrap().status, 503);
        http.on_log();
    }

    #[test]
    fn metric_failures_are_ignored() {
        let host = FakeHost::new();
        host.state().fail_metrics = true;
        host.state().configuration = Some(config_json().to_string().into_bytes());
        let mut root = Root::new(host.clone());
        assert!(root.on_configure(0));
        host.new_stream(&base_headers(&[]));
        let mut http = root.http();
        assert_eq!(http.on_http_request_headers(4, true), HostAction::Pause);
        assert_eq!(host.sent().unwrap().status, 401);
    }

    // --- Outcome reports ----------------------------------------------------------------

    #[test]
    fn every_request_is_queued_and_overflow_is_counted() {
        let gw = gateway(serde_json::json!({ "report": { "max_queue": 2, "max_batch": 2 } }));
        for _ in 0..3 {
            let (mut http, _) = gw.request(&base_headers(&[]));
            http.on_log();
        }
        let shared = gw.root.shared().unwrap();
        assert_eq!(shared.outcomes.borrow().len(), 2);
        assert_eq!(gw.host.counter("palisade_reports_dropped"), 1);
    }

    #[test]
    fn abandoned_requests_are_still_reported() {
        let gw = gateway(serde_json::json!({}));
        let (mut http, _) = gw.keyed(&[]);
        // The client went away while the Check was in flight.
        http.on_log();
        let shared = gw.root.shared().unwrap();
        let batch = shared.outcomes.borrow_mut().take_batch(10).unwrap();
        let o = &batch.outcomes[0];
        assert_eq!(o.outcome, Outcome::Unspecified as i32);
        assert_eq!(o.reason, "aborted_during_check");
        assert_eq!(o.key_id, "alice");
        assert_eq!(o.gateway_latency_us, 0);
    }

    #[test]
    fn disabled_reporting_queues_nothing() {
        let gw = gateway(serde_json::json!({ "report": { "enabled": false } }));
        let (mut http, _) = gw.request(&base_headers(&[]));
        http.on_log();
        assert!(gw.root.shared().unwrap().outcomes.borrow().is_empty());
    }
}
