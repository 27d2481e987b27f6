//! [`AlertSink`]: de-duplicates and queues alerts on the request path without ever waiting,
//! and a task that POSTs them one at a time, retrying with backoff.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use reqwest::{
    StatusCode, Url,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    AlertMetrics, AlertsError,
    alert::Alert,
    backoff::Backoff,
    config::{AlertFormat, AlertsConfig, Secret, check_url},
    dedup::{DEFAULT_DEDUP_KEYS, Dedup},
    signature::{SIGNATURE_HEADER, sign},
};

/// How long [`AlertSink::shutdown`] lets the queue drain.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What [`AlertSink::notify`] did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// Queued for delivery.
    Queued,
    /// The key already alerted at this level or above within `dedup_period_ms`; counted,
    /// not sent.
    Deduplicated,
    /// The queue was full; counted as dropped, not sent.
    DroppedFull,
    /// The sink was shut down; counted as dropped, not sent.
    Closed,
}

/// Sends alerts to the configured receiver. Cheap to clone: clones share one queue, one
/// de-duplication map and one delivery task.
#[derive(Debug, Clone)]
pub struct AlertSink {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Alert>,
    dedup: Mutex<Dedup>,
    metrics: AlertMetrics,
    closing: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl AlertSink {
    /// Starts the delivery task; `Ok(None)` when `config.url` is empty (alerts off).
    /// Call inside a Tokio runtime, after [`AlertsConfig::validate`].
    pub fn start(
        config: &AlertsConfig,
        metrics: AlertMetrics,
    ) -> Result<Option<Self>, AlertsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AlertsError::NoRuntime)?;
        let delivery = Delivery::new(config, metrics.clone())?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (closing, closing_rx) = watch::channel(false);
        let worker = runtime.spawn(delivery.run(rx, closing_rx));
        Ok(Some(Self {
            shared: Arc::new(Shared {
                tx,
                dedup: Mutex::new(Dedup::new(config.dedup_period_ms, DEFAULT_DEDUP_KEYS)),
                metrics,
                closing,
                worker: Mutex::new(Some(worker)),
            }),
        }))
    }

    /// Queues `alert` unless its key already alerted at this level or above within the
    /// period (on the alerts' own `ts_ms`), or the queue is full. Never waits: safe on the
    /// request path.
    pub fn notify(&self, alert: Alert) -> Notified {
        let s = &self.shared;
        // Held across try_send so two alerts of one key cannot both pass the check.
        let mut dedup = s.dedup.lock();
        if dedup.is_duplicate(&alert.key_id, alert.level, alert.ts_ms) {
            s.metrics.deduplicated.inc();
            return Notified::Deduplicated;
        }
        let (key, level, ts_ms) = (alert.key_id.clone(), alert.level, alert.ts_ms);
        match s.tx.try_send(alert) {
            Ok(()) => {
                // Only a queued alert starts a period: a dropped one leaves the next free to go.
                dedup.record(&key, level, ts_ms);
                Notified::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.metrics.dropped.inc();
                Notified::DroppedFull
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                s.metrics.dropped.inc();
                Notified::Closed
            }
        }
    }

    /// Stops taking alerts and delivers those queued, waiting at most
    /// [`DEFAULT_SHUTDOWN_GRACE`].
    pub async fn shutdown(self) -> bool {
        self.shutdown_within(DEFAULT_SHUTDOWN_GRACE).await
    }

    /// Stops taking alerts (in every clone) and delivers those queued, waiting at most
    /// `grace`; then whatever is left is dropped and counted. True when the queue drained.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        let s = &self.shared;
        // The receiver may be gone already; there is nothing left to tell then.
        let _ = s.closing.send(true);
        let Some(mut worker) = s.worker.lock().take() else {
            return true; // another clone shut it down
        };
        if tokio::time::timeout(grace, &mut worker).await.is_ok() {
            return true;
        }
        worker.abort();
        // The queued ones, and the one being delivered (if any) may or may not have arrived.
        let lost = s.tx.max_capacity() - s.tx.capacity();
        s.metrics.dropped.inc_by(lost as u64);
        tracing::warn!(
            lost,
            grace_ms = grace.as_millis() as u64,
            "alert queue not drained before shutdown"
        );
        false
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Delivered,
    /// Worth retrying, with the receiver's `Retry-After` if it gave one.
    Retry(String, Option<Duration>),
    Permanent(String),
}

/// The delivery task's state: everything needed to POST one alert.
#[derive(Debug)]
struct Delivery {
    client: reqwest::Client,
    url: Url,
    origin: String,
    format: AlertFormat,
    hmac_secret: Secret,
    splunk_auth: Option<HeaderValue>,
    backoff: Backoff,
    backoff_max: Duration,
    max_attempts: u32,
    metrics: AlertMetrics,
}

impl Delivery {
    fn new(config: &AlertsConfig, metrics: AlertMetrics) -> Result<Self, AlertsError> {
        let url = check_url(config.url.expose()).map_err(AlertsError::Url)?;
        let splunk_auth = match config.format {
            AlertFormat::SplunkHec => {
                let mut v =
                    HeaderValue::from_str(&format!("Splunk {}", config.splunk_token.expose()))
                        .map_err(|_| AlertsError::SplunkToken)?;
                v.set_sensitive(true);
                Some(v)
            }
            AlertFormat::Json => None,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            // A redirect would carry the signature and the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(AlertsError::Client)?;
        Ok(Self {
            client,
            url,
            origin: config.url.origin(),
            format: config.format,
            hmac_secret: config.hmac_secret.clone(),
            splunk_auth,
            backoff: Backoff::new(config.backoff_initial_ms, config.backoff_max_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms.max(1)),
            max_attempts: config.max_attempts.max(1),
            metrics,
        })
    }

    async fn run(self, mut rx: mpsc::Receiver<Alert>, mut closing: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                biased;
                // Asked to stop, or every sink handle is gone: drain below.
                _ = closing.changed() => break,
                alert = rx.recv() => match alert {
                    Some(alert) => self.deliver(&alert).await,
                    None => return,
                },
            }
        }
        rx.close();
        while let Some(alert) = rx.recv().await {
            self.deliver(&alert).await;
        }
    }

    async fn deliver(&self, alert: &Alert) {
        let body = alert.body(self.format);
        let mut attempt = 1;
        loop {
            let why = match self.attempt(&body).await {
                Attempt::Delivered => {
                    self.metrics.sent.inc();
                    return;
                }
                Attempt::Permanent(why) => {
                    self.metrics.failed.inc();
                    tracing::warn!(
                        receiver = %self.origin,
                        key_id = %alert.key_id,
                        request_id = %alert.request_id,
                        error = %why,
                        "alert refused by the receiver, not retried"
                    );
                    return;
                }
                Attempt::Retry(why, retry_after) if attempt < self.max_attempts => {
                    let mut wait = self.backoff.delay(attempt, &mut rand::rng());
                    if let Some(asked) = retry_after {
                        wait = wait.max(asked.min(self.backoff_max));
                    }
                    tracing::debug!(
                        receiver = %self.origin,
                        attempt,
                        error = %why,
                        wait_ms = wait.as_millis() as u64,
                        "alert delivery failed, retrying"
                    );
                    self.metrics.retried.inc();
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                Attempt::Retry(why, _) => why,
            };
            self.metrics.failed.inc();
            tracing::warn!(
                receiver = %self.origin,
                key_id = %alert.key_id,
                request_id = %alert.request_id,
                attempts = attempt,
                error = %why,
                "alert not delivered, gave up"
            );
            return;
        }
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json");
        if !self.hmac_secret.is_empty() {
            let signature = sign(self.hmac_secret.expose().as_bytes(), unix_secs(), body);
            match HeaderValue::from_str(&signature) {
                Ok(v) => request = request.header(SIGNATURE_HEADER, v),
                // Digits and hex only: cannot happen, but never send an unsigned alert.
                Err(_) => return Attempt::Permanent("could not build the signature".to_owned()),
            }
        }
        if let Some(auth) = &self.splunk_auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        match request.body(body.to_vec()).send().await {
            Ok(response) => classify(response.status(), retry_after(response.headers())),
            // Connection refused or reset, timeouts: the receiver may be back soon. The URL
            // is stripped: it may carry a credential.
            Err(e) if e.is_builder() => Attempt::Permanent(error_chain(&e.without_url())),
            Err(e) => Attempt::Retry(error_chain(&e.without_url()), None),
        }
    }
}

/// Retry on 5xx, 429 and 408; anything else but 2xx is the receiver refusing this alert.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Attempt::Retry(format!("status {status}"), retry_after)
    } else {
        Attempt::Permanent(format!("status {status}"))
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored: the backoff applies then).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `error sending request: connection refused (os error 111)`: reqwest's message alone
/// hides the cause.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{alert::tests::alert, config::WebhookUrl};

    fn config(queue_capacity: usize) -> AlertsConfig {
        AlertsConfig {
            // Nothing listens on port 9 (discard) on loopback in the test environment; the
            // worker is never given time to deliver anyway.
            url: WebhookUrl::new("http://127.0.0.1:9/alerts"),
            queue_capacity,
            max_attempts: 1,
            ..AlertsConfig::default()
        }
    }

    #[test]
    fn status_classes() {
        assert!(matches!(classify(StatusCode::OK, None), Attempt::Delivered));
        assert!(matches!(
            classify(StatusCode::ACCEPTED, None),
            Attempt::Delivered
        ));
        for retry in [500, 502, 503, 504, 429, 408] {
            let s = StatusCode::from_u16(retry).unwrap();
            assert!(matches!(classify(s, None), Attempt::Retry(..)), "{retry}");
        }
        for permanent in [400, 401, 403, 404, 413, 301, 302] {
            let s = StatusCode::from_u16(permanent).unwrap();
            assert!(
                matches!(classify(s, None), Attempt::Permanent(..)),
                "{permanent}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_only() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 3 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn off_without_a_url_and_needs_a_runtime() {
        let off = AlertSink::start(&AlertsConfig::default(), AlertMetrics::default());
        assert!(matches!(off, Ok(None)));
        let on = AlertSink::start(&config(4), AlertMetrics::default());
        assert!(matches!(on, Err(AlertsError::NoRuntime)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn notify_dedups_and_drops_when_full_without_waiting() {
        // On a current-thread runtime the worker cannot run while this test does not
        // yield, so the queue fills deterministically.
        let metrics = AlertMetrics::default();
        let sink = AlertSink::start(&config(2), metrics.clone())
            .unwrap()
            .unwrap();
        assert_eq!(sink.notify(alert("a", 0)), Notified::Queued);
        assert_eq!(sink.notify(alert("a", 1_000)), Notified::Deduplicated);
        assert_eq!(sink.notify(alert("b", 0)), Notified::Queued);
        assert_eq!(sink.notify(alert("c", 0)), Notified::DroppedFull);
        // A dropped alert did not start a period for its key.
        assert_eq!(sink.notify(alert("c", 1)), Notified::DroppedFull);
        assert_eq!(metrics.deduplicated.get(), 1);
        assert_eq!(metrics.dropped.get(), 2);
        let other = sink.clone();
        // Port 9 refuses at once and max_attempts is 1: the two queued alerts fail fast.
        assert!(sink.shutdown_within(Duration::from_secs(10)).await);
        assert_eq!(metrics.failed.get() + metrics.sent.get(), 2);
        assert_eq!(other.notify(alert("d", 0)), Notified::Closed);
    }

    #[tokio::test]
    async fn splunk_tokens_must_fit_a_header() {
        let c = AlertsConfig {
            format: AlertFormat::SplunkHec,
            splunk_token: Secret::new("bad\ntoken"),
            ..config(4)
        };
        let err = AlertSink::start(&c, AlertMetrics::default()).unwrap_err();
        assert!(matches!(err, AlertsError::SplunkToken));
        assert!(!err.to_string().contains("bad"));
    }
}
