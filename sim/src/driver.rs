//! Sending the stream: a dispatcher shards requests by key (or client address) onto a fixed
//! number of workers, each sending its share one at a time, so requests of one key arrive in
//! order while many keys are in flight. Targets: the scorer's `Check`/`Report` directly
//! ([`ScorerTarget`]), the whole stack through Envoy ([`EnvoyTarget`]); direct calls go to the
//! backend ([`BackendTarget`]) in both.

use std::{
    collections::HashMap,
    future::Future,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use palisade_proto::v1::{
    CheckRequest, CheckResponse, Decision, Outcome, QueryParam, ReportRequest, RequestOutcome,
    scorer_client::ScorerClient,
};
use tokio::sync::{Mutex, mpsc};
use tonic::transport::Channel as GrpcChannel;

use crate::{
    request::{Channel, SimRequest},
    tally::{Tally, Verdict},
};

/// Where requests go.
pub trait Target: Send + Sync + 'static {
    /// Sends one request and says what became of it.
    fn send(&self, req: &SimRequest) -> impl Future<Output = Result<Verdict, String>> + Send;

    /// Sends whatever is still buffered (outcome reports).
    fn finish(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How the dispatcher paces the stream.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as the target answers (simulated time).
    Flat,
    /// Real time from `sim_start_ms`, never faster than `max_rate` requests per second.
    RealTime {
        /// Simulated time that maps to the start of the run.
        sim_start_ms: i64,
        /// Upper bound on the send rate.
        max_rate: f64,
    },
}

/// Sends `stream` to `target` with `workers` in flight; returns the merged tally.
pub async fn drive<T: Target>(
    target: Arc<T>,
    stream: impl Iterator<Item = SimRequest> + Send + 'static,
    workers: usize,
    pace: Pace,
) -> Tally {
    let workers = workers.clamp(1, 1_024);
    let mut senders = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::channel::<SimRequest>(64);
        senders.push(tx);
        let target = Arc::clone(&target);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while let Some(req) = rx.recv().await {
                let answer = target.send(&req).await;
                tally.observe(&req, answer.as_ref().map_err(Clone::clone));
            }
            tally
        }));
    }
    // Generating is CPU work: keep it off the workers' threads.
    let (feed_tx, mut feed_rx) = mpsc::channel::<SimRequest>(4_096);
    let generator = tokio::task::spawn_blocking(move || {
        for req in stream {
            if feed_tx.blocking_send(req).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut sent = 0u64;
    while let Some(req) = feed_rx.recv().await {
        if let Pace::RealTime {
            sim_start_ms,
            max_rate,
        } = pace
        {
            let due = Duration::from_millis((req.ts_ms - sim_start_ms).max(0) as u64);
            let floor = Duration::from_secs_f64(sent as f64 / max_rate.max(0.001));
            tokio::time::sleep_until((started + due.max(floor)).into()).await;
        }
        let shard = shard(req.order_key(), workers);
        sent += 1;
        if senders[shard].send(req).await.is_err() {
            break;
        }
    }
    drop(senders);
    let _ = generator.await;
    let mut tally = Tally::default();
    for t in tasks {
        if let Ok(part) = t.await {
            tally.merge(part);
        }
    }
    target.finish().await;
    tally
}

/// The worker for `key`: a stable hash, so one key always goes to the same worker.
pub fn shard(key: &str, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % workers.max(1) as u64) as usize
}

/// The decision's name in the report: the scorer's own metric label.
pub use palisade_scorer::verdict::decision_name;

/// The outcome and status the filter would report for `response` to `req`.
fn outcome(req: &SimRequest, response: &CheckResponse) -> (Outcome, u32) {
    let allowed_status = u32::from(req.status);
    match (&req.channel, Decision::try_from(response.decision)) {
        (Channel::WrongKey { .. }, Ok(Decision::Throttle)) => (Outcome::Throttled, 429),
        (Channel::WrongKey { .. }, _) => (Outcome::Unauthorized, 401),
        (_, Ok(Decision::Throttle)) => (Outcome::Throttled, 429),
        (_, Ok(Decision::Block)) => (Outcome::Blocked, 403),
        (_, Ok(Decision::Flag)) => (Outcome::Flagged, allowed_status),
        (_, Ok(Decision::ShadowThrottle)) => (Outcome::ShadowThrottled, allowed_status),
        (_, Ok(Decision::ShadowBlock)) => (Outcome::ShadowBlocked, allowed_status),
        _ => (Outcome::Allowed, allowed_status),
    }
}

/// `Check` and `Report` straight to a scorer, with the request's simulated timestamps.
#[derive(Debug)]
pub struct ScorerTarget {
    client: ScorerClient<GrpcChannel>,
    backend: Option<BackendTarget>,
    pending: Mutex<Vec<RequestOutcome>>,
    batch: usize,
    seq: std::sync::atomic::AtomicU64,
}

impl ScorerTarget {
    /// A client of the scorer at `addr` (`host:port` or a URL); direct calls go to `backend`.
    pub async fn connect(addr: &str, backend: Option<BackendTarget>) -> anyhow::Result<Self> {
        let url = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Self {
            client: ScorerClient::new(channel),
            backend,
            pending: Mutex::new(Vec::new()),
            batch: 512,
            seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    async fn report(&self, req: &SimRequest, request_id: String, response: &CheckResponse) {
        let (outcome, status) = outcome(req, response);
        let keyed = matches!(req.channel, Channel::Keyed);
        let o = RequestOutcome {
            request_id,
            key_id: req.key_id.clone(),
            tenant: if keyed {
                req.tenant.clone()
            } else {
                String::new()
            },
            tier: req.tier.to_owned(),
            client_ip: req.client_ip.clone(),
            method: req.method.to_owned(),
            path: req.path.clone(),
            user_agent: req.user_agent.clone(),
            outcome: outcome as i32,
            status,
            upstream_latency_us: if status < 400 || status == 404 {
                2_000
            } else {
                0
            },
            gateway_latency_us: 300,
            request_bytes: 200,
            response_bytes: 600,
            timestamp_ms: req.ts_ms,
            reason: response.reason.clone(),
            anomaly_score: response.anomaly_score,
            model_version: response.model_version.clone(),
            backend_latency_us: 1_500,
            route: String::new(),
        };
        let batch = {
            let mut p = self.pending.lock().await;
            p.push(o);
            if p.len() < self.batch {
                return;
            }
            std::mem::take(&mut *p)
        };
        self.send_report(batch).await;
    }

    async fn send_report(&self, outcomes: Vec<RequestOutcome>) {
        if outcomes.is_empty() {
            return;
        }
        // A failed report loses outcomes, as a real filter's would; Check results stand.
        let _ = self
            .client
            .clone()
            .report(ReportRequest {
                outcomes,
                dropped: 0,
            })
            .await;
    }
}

/// The Check a filter would send for `req`.
pub fn check_request(req: &SimRequest, request_id: String) -> CheckRequest {
    let unauthenticated = matches!(req.channel, Channel::WrongKey { .. });
    CheckRequest {
        request_id,
        key_id: if unauthenticated {
            String::new()
        } else {
            req.key_id.clone()
        },
        tenant: if unauthenticated {
            String::new()
        } else {
            req.tenant.clone()
        },
        tier: if unauthenticated {
            String::new()
        } else {
            req.tier.to_owned()
        },
        client_ip: req.client_ip.clone(),
        method: req.method.to_owned(),
        path: req.path.clone(),
        query: req
            .query
            .iter()
            .map(|(name, value)| QueryParam {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        user_agent: req.user_agent.clone(),
        timestamp_ms: req.ts_ms,
        query_truncated: false,
        unauthenticated,
    }
}

impl Target for ScorerTarget {
    async fn send(&self, req: &SimRequest) -> Result<Verdict, String> {
        if let Channel::Direct { .. } = req.channel {
            return BackendTarget::send_direct(self.backend.as_ref(), req).await;
        }
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = format!("sim-{n:x}");
        let response = self
            .client
            .clone()
            .check(check_request(req, request_id.clone()))
            .await
            .map_err(|s| format!("check: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        self.report(req, request_id, &response).await;
        Ok(Verdict {
            detected: response.decision != Decision::Allow as i32,
            decision: decision_name(response.decision).to_owned(),
            reason: response.reason,
            anomaly_score: response.anomaly_score,
        })
    }

    async fn finish(&self) {
        let rest = std::mem::take(&mut *self.pending.lock().await);
        self.send_report(rest).await;
    }
}

/// Direct calls to the backend; detected when refused (401 or 403).
#[derive(Debug, Clone)]
pub struct BackendTarget {
    http: reqwest::Client,
    url: String,
}

impl BackendTarget {
    /// A direct call through `backend`, or an error when there is none.
    async fn send_direct(backend: Option<&Self>, req: &SimRequest) -> Result<Verdict, String> {
        match backend {
            Some(b) => b.send(req).await,
            None => Err("a direct call needs a backend (--backend URL)".to_owned()),
        }
    }

    /// The backend at `url` (`http://host:port`).
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    /// Sends one direct call.
    pub async fn send(&self, req: &SimRequest) -> Result<Verdict, String> {
        let mut call = self
            .http
            .request(
                req.method.parse().unwrap_or(reqwest::Method::GET),
                format!("{}{}", self.url, req.target()),
            )
            .header("user-agent", &req.user_agent)
            .header("x-request-id", format!("direct-{}", req.ts_ms));
        if let Channel::Direct { token: Some(t) } = &req.channel {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            call = call.header("x-gateway-token", t.replace("{now}", &now.to_string()));
        }
        let status = call
            .send()
            .await
            .map_err(|e| format!("backend: {e}"))?
            .status()
            .as_u16();
        Ok(Verdict {
            detected: status == 401 || status == 403,
            decision: status.to_string(),
            reason: "direct call".to_owned(),
            anomaly_score: 0.0,
        })
    }
}

/// The whole stack through Envoy, judged by HTTP status: 429 and 403 are detections (and a
/// wrong key's 429); a wrong key's 401 is the normal answer, not a detection.
#[derive(Debug)]
pub struct EnvoyTarget {
    http: reqwest::Client,
    url: String,
    keys: Vec<(String, String)>,
    assigned: std::sync::Mutex<HashMap<String, usize>>,
    backend: Option<BackendTarget>,
}

impl EnvoyTarget {
    /// Envoy at `url`. Simulated keys are mapped onto `keys` (`(key id, raw key)`): with two
    /// or more, attackers' keys all use the last one and normal keys share the others round
    /// robin in order of first appearance; with one, everything uses it.
    pub fn new(url: &str, keys: Vec<(String, String)>, backend: Option<BackendTarget>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_owned(),
            keys,
            assigned: std::sync::Mutex::new(HashMap::new()),
            backend,
        }
    }

    fn raw_key(&self, req: &SimRequest) -> Option<String> {
        match &req.channel {
            Channel::WrongKey { presented } => Some(presented.clone()),
            _ if self.keys.is_empty() => None,
            _ if req.attack_scenario || self.keys.len() == 1 => {
                self.keys.last().map(|k| k.1.clone())
            }
            _ => {
                let mut a = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                let next = a.len() % (self.keys.len() - 1);
                let i = *a.entry(req.key_id.clone()).or_insert(next);
                Some(self.keys[i].1.clone())
            }
        }
    }
}

impl Target for EnvoyTarget {
    async fn send(&self, req: &SimRequest) -> Result<Verdict, String> {
        if let Channel::Direct { .. } = req.channel {
            return BackendTarget::send_direct(self.backend.as_ref(), req).await;
        }
        let mut call = self
            .http
            .request(
                req.method.parse().unwrap_or(reqwest::Method::GET),
                format!("{}{}", self.url, req.target()),
            )
            .header("user-agent", &req.user_agent);
        if let Some(k) = self.raw_key(req) {
            call = call.header("x-api-key", k);
        }
        let status = call
            .send()
            .await
            .map_err(|e| format!("envoy: {e}"))?
            .status()
            .as_u16();
        let detected = match req.channel {
            Channel::WrongKey { .. } => status == 429,
            _ => matches!(status, 401 | 403 | 429),
        };
        Ok(Verdict {
            detected,
            decision: status.to_string(),
            reason: format!("http {status}"),
            anomaly_score: 0.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioSet;

    /// Records arrival order; sleeps a little so workers interleave.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: std::sync::Mutex<Vec<(String, u32, i64)>>,
    }

    impl Target for Recorder {
        async fn send(&self, req: &SimRequest) -> Result<Verdict, String> {
            if req.ts_ms % 7 == 0 {
                tokio::task::yield_now().await;
            }
            self.seen
                .lock()
                .unwrap()
                .push((req.order_key().to_owned(), req.actor, req.ts_ms));
            Ok(Verdict {
                detected: req.malicious,
                decision: "allow".into(),
                reason: String::new(),
                anomaly_score: 0.0,
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_driver_keeps_each_keys_order_and_sends_everything() {
        let set = ScenarioSet::days(21, 0.5, 30);
        let expected = set.stream().count();
        let target = Arc::new(Recorder::default());
        let tally = drive(Arc::clone(&target), set.stream(), 16, Pace::Flat).await;
        assert_eq!(tally.requests as usize, expected);
        let seen = target.seen.lock().unwrap();
        assert_eq!(seen.len(), expected);
        let mut last: HashMap<String, i64> = HashMap::new();
        for (key, _actor, ts) in seen.iter() {
            let prev = last.insert(key.clone(), *ts);
            assert!(prev.is_none_or(|p| p <= *ts), "{key} went back in time");
        }
    }

    #[test]
    fn shards_are_stable() {
        assert_eq!(shard("abc", 16), shard("abc", 16));
        assert!(shard("abc", 16) < 16);
    }
}
