//! The alert sink against a real HTTP receiver on loopback: signatures, Splunk HEC, retries,
//! de-duplication, permanent refusals and a receiver that is down.
//!
//! Every test ends with `shutdown_within`, which drains the queue (bounded), so the counters
//! and the receiver's log are final when the assertions run: no sleeps, no timing asserts.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use hmac::{Hmac, KeyInit, Mac};
use palisade_scorer::alerts::{
    Alert, AlertFormat, AlertLevel, AlertMetrics, AlertSink, AlertsConfig, Notified, Secret,
    WebhookUrl,
};
use sha2::Sha256;
use tokio::{net::TcpListener, sync::oneshot};

const SECRET: &str = "whsec_integration_0123456789";
const GRACE: Duration = Duration::from_secs(20);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug, Default)]
struct ReceiverState {
    log: Mutex<Vec<Received>>,
    /// Statuses to answer, in order; 200 once empty.
    script: Mutex<VecDeque<StatusCode>>,
}

/// An axum server on 127.0.0.1:0 that records every request; stopped on drop.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Self {
        let state = Arc::new(ReceiverState {
            log: Mutex::default(),
            script: Mutex::new(
                script
                    .iter()
                    .map(|&s| StatusCode::from_u16(s).unwrap())
                    .collect(),
            ),
        });
        let app = Router::new()
            .route("/{*path}", post(record))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            state,
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> WebhookUrl {
        WebhookUrl::new(format!("http://{}{path}", self.addr))
    }

    fn log(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state.log.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(StatusCode::OK)
}

/// Fast retries so the tests stay quick; everything else default.
fn config(url: WebhookUrl) -> AlertsConfig {
    AlertsConfig {
        url,
        backoff_initial_ms: 1,
        backoff_max_ms: 5,
        timeout_ms: 2_000,
        ..AlertsConfig::default()
    }
}

fn alert(key_id: &str, ts_ms: i64) -> Alert {
    Alert {
        key_id: key_id.to_owned(),
        tier: "standard".to_owned(),
        level: AlertLevel::Block,
        score: 0.91,
        risk: 0.86,
        model_version: "if-test-1".to_owned(),
        explanation: "id_sequential_ratio=1 (64%)".to_owned(),
        request_id: format!("req-{key_id}-{ts_ms}"),
        ts_ms,
        enforced: true,
    }
}

fn start(config: &AlertsConfig) -> (AlertSink, AlertMetrics) {
    let metrics = AlertMetrics::default();
    let sink = AlertSink::start(config, metrics.clone())
        .expect("the sink starts")
        .expect("a URL is set");
    (sink, metrics)
}

/// Drains the queue; fails the test if that takes longer than GRACE.
async fn finish(sink: AlertSink) {
    assert!(
        tokio::time::timeout(GRACE * 2, sink.shutdown_within(GRACE))
            .await
            .expect("shutdown is bounded"),
        "the queue did not drain"
    );
}

/// What a receiver does: recompute the HMAC over "<t>.<body>" and compare.
fn verify(secret: &str, header: &str, body: &[u8]) -> Result<i64, String> {
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (t, v1) = t.zip(v1).ok_or("malformed header")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).map_err(|_| "bad signature")?;
    Ok(t)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_json_alert_arrives_signed() {
    let receiver = Receiver::start(&[]).await;
    let mut c = config(receiver.url("/hooks/palisade"));
    c.hmac_secret = Secret::new(SECRET);
    let (sink, metrics) = start(&c);
    assert_eq!(
        sink.notify(alert("alice", 1_700_000_000_123)),
        Notified::Queued
    );
    finish(sink).await;

    let log = receiver.log();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.path, "/hooks/palisade");
    assert_eq!(r.headers["content-type"], "application/json");
    let header = r.headers["x-palisade-signature"].to_str().unwrap();
    let t = verify(SECRET, header, &r.body).expect("the signature verifies");
    assert!((t - unix_now()).abs() < 300, "t={t} is the sending time");
    assert!(verify("another-secret-0123456789", header, &r.body).is_err());
    let mut tampered = r.body.to_vec();
    tampered[10] ^= 1;
    assert!(verify(SECRET, header, &tampered).is_err());

    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["type"], "palisade.anomaly");
    assert_eq!(v["key_id"], "alice");
    assert_eq!(v["tier"], "standard");
    assert_eq!(v["level"], "block");
    assert_eq!(v["score"], 0.91);
    assert_eq!(v["risk"], 0.86);
    assert_eq!(v["model_version"], "if-test-1");
    assert_eq!(v["request_id"], "req-alice-1700000000123");
    assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["enforced"], true);
    assert!(r.headers.get("authorization").is_none());
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.failed.get() + metrics.retried.get(), 0);
}

#[tokio::test]
async fn splunk_hec_gets_its_envelope_and_token() {
    let receiver = Receiver::start(&[]).await;
    let mut c = config(receiver.url("/services/collector/event"));
    c.format = AlertFormat::SplunkHec;
    c.splunk_token = Secret::new("11111111-2222-3333-4444-555555555555");
    let (sink, metrics) = start(&c);
    assert_eq!(
        sink.notify(alert("bob", 1_700_000_000_500)),
        Notified::Queued
    );
    finish(sink).await;

    let log = receiver.log();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.path, "/services/collector/event");
    assert_eq!(
        r.headers["authorization"],
        "Splunk 11111111-2222-3333-4444-555555555555"
    );
    assert!(r.headers.get("x-palisade-signature").is_none());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["time"].as_f64(), Some(1_700_000_000.5));
    assert_eq!(v["sourcetype"], "palisade:anomaly");
    assert_eq!(v["source"], "palisade-scorer");
    assert_eq!(v["event"]["type"], "palisade.anomaly");
    assert_eq!(v["event"]["key_id"], "bob");
    assert_eq!(v["event"]["time"], "2023-11-14T22:13:20.500Z");
    assert_eq!(metrics.sent.get(), 1);
}

#[tokio::test]
async fn unavailable_twice_then_delivered_once() {
    let receiver = Receiver::start(&[503, 503]).await;
    let mut c = config(receiver.url("/a"));
    c.hmac_secret = Secret::new(SECRET);
    let (sink, metrics) = start(&c);
    sink.notify(alert("carol", 5_000));
    finish(sink).await;

    let log = receiver.log();
    assert_eq!(log.len(), 3, "two refused attempts and one accepted");
    // Every attempt is signed afresh and verifies.
    for r in &log {
        let header = r.headers["x-palisade-signature"].to_str().unwrap();
        verify(SECRET, header, &r.body).unwrap();
    }
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.retried.get(), 2);
    assert_eq!(metrics.failed.get(), 0);
}

#[tokio::test]
async fn one_alert_per_key_per_period_unless_the_level_rises() {
    let receiver = Receiver::start(&[]).await;
    let mut c = config(receiver.url("/a"));
    c.dedup_period_ms = 60_000;
    let (sink, metrics) = start(&c);
    assert_eq!(sink.notify(alert("dave", 1_000)), Notified::Queued);
    assert_eq!(sink.notify(alert("dave", 30_000)), Notified::Deduplicated);
    assert_eq!(sink.notify(alert("erin", 30_000)), Notified::Queued);
    // A period later (on the alerts' clock) the key alerts again.
    assert_eq!(sink.notify(alert("dave", 61_000)), Notified::Queued);
    // Within the period, only a higher level alerts again.
    let at = |ts_ms, level| Alert {
        level,
        ..alert("ivan", ts_ms)
    };
    assert_eq!(sink.notify(at(70_000, AlertLevel::Flag)), Notified::Queued);
    assert_eq!(sink.notify(at(71_000, AlertLevel::Block)), Notified::Queued);
    assert_eq!(
        sink.notify(at(72_000, AlertLevel::Throttle)),
        Notified::Deduplicated
    );
    finish(sink).await;

    let keys: Vec<String> = receiver
        .log()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            format!("{}@{}", v["key_id"].as_str().unwrap(), v["time"])
        })
        .collect();
    assert_eq!(
        keys,
        [
            "dave@\"1970-01-01T00:00:01.000Z\"",
            "erin@\"1970-01-01T00:00:30.000Z\"",
            "dave@\"1970-01-01T00:01:01.000Z\"",
            "ivan@\"1970-01-01T00:01:10.000Z\"",
            "ivan@\"1970-01-01T00:01:11.000Z\"",
        ]
    );
    assert_eq!(metrics.deduplicated.get(), 2);
    assert_eq!(metrics.sent.get(), 5);
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let receiver = Receiver::start(&[400]).await;
    let (sink, metrics) = start(&config(receiver.url("/a")));
    sink.notify(alert("frank", 0));
    finish(sink).await;

    assert_eq!(receiver.log().len(), 1);
    assert_eq!(metrics.failed.get(), 1);
    assert_eq!(metrics.retried.get(), 0);
    assert_eq!(metrics.sent.get(), 0);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_bounded_retries() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(WebhookUrl::new(format!("http://127.0.0.1:{port}/a")));
    c.max_attempts = 4;
    let (sink, metrics) = start(&c);
    sink.notify(alert("grace", 0));
    finish(sink).await;

    assert_eq!(metrics.retried.get(), 3);
    assert_eq!(metrics.failed.get(), 1);
    assert_eq!(metrics.sent.get(), 0);
}

#[tokio::test]
async fn a_full_queue_drops_instead_of_waiting() {
    let receiver = Receiver::start(&[]).await;
    let mut c = config(receiver.url("/a"));
    c.queue_capacity = 1;
    let (sink, metrics) = start(&c);
    // notify never yields, so the worker cannot take anything off the queue in between.
    let outcomes: Vec<Notified> = (0..5)
        .map(|i| sink.notify(alert(&format!("k{i}"), 0)))
        .collect();
    assert_eq!(outcomes[0], Notified::Queued);
    assert!(outcomes[1..].iter().all(|o| *o == Notified::DroppedFull));
    finish(sink).await;
    assert_eq!(metrics.dropped.get(), 4);
    assert_eq!(receiver.log().len(), 1);
}

/// Collects what `tracing` writes, for the test that checks log lines for secrets.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failures_are_logged_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Thread-local, and this runtime runs every task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let receiver = Receiver::start(&[503, 401]).await;
    let mut c = config(receiver.url("/hooks/S3CRET-PATH?token=QU3RY"));
    c.format = AlertFormat::SplunkHec;
    c.splunk_token = Secret::new("HEC-T0KEN-0000");
    c.hmac_secret = Secret::new(SECRET);
    let (sink, metrics) = start(&c);
    sink.notify(alert("heidi", 0));
    finish(sink).await;
    assert_eq!(metrics.retried.get(), 1);
    assert_eq!(metrics.failed.get(), 1);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("401"), "the status is named:\n{text}");
    assert!(text.contains("heidi"), "the key id is named:\n{text}");
    for secret in ["S3CRET-PATH", "QU3RY", "HEC-T0KEN", SECRET] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}
