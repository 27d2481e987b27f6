//! SIEM alerts: when a key turns anomalous, a webhook (generic JSON or Splunk HEC), signed,
//! de-duplicated per key, queued off the request path and retried with backoff.
//! See the "Alerts" section of `docs/detection.md`.
//!
//! # Layout
//! - [`config`]: the `alerts` section of the configuration.
//! - [`alert`]: the alert and the bodies receivers get (pure).
//! - [`signature`]: `X-Palisade-Signature` (pure).
//! - [`dedup`]: one alert per key per period unless the level rises, in bounded memory (pure).
//! - [`backoff`]: the wait before each retry (pure).
//! - [`sink`]: [`AlertSink`], the queue and the task that delivers.

pub mod alert;
pub mod backoff;
pub mod config;
pub mod dedup;
pub mod signature;
pub mod sink;

use prometheus_client::{metrics::counter::Counter, registry::Registry};

pub use alert::{Alert, AlertLevel};
pub use config::{AlertFormat, AlertsConfig, ENV_ALERTS_URL, Secret, WebhookUrl};
pub use sink::{AlertSink, Notified};

/// Why the alert sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// `alerts.url` cannot be sent to.
    #[error("alerts.url: {0}")]
    Url(String),
    /// `alerts.splunk_token` cannot go into an HTTP header.
    #[error("alerts.splunk_token: not a valid header value (control characters?)")]
    SplunkToken,
    /// The HTTP client could not be built.
    #[error("building the alert HTTP client")]
    Client(#[source] reqwest::Error),
    /// [`AlertSink::start`] was called outside a Tokio runtime.
    #[error("the alert sink needs a Tokio runtime")]
    NoRuntime,
}

/// The alerts' metrics (`palisade_alerts_*_total` in the scorer's registry).
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    /// Alerts the receiver accepted (2xx).
    pub sent: Counter,
    /// Attempts retried after a 5xx, 429, 408, timeout or connection error.
    pub retried: Counter,
    /// Alerts given up: a permanent refusal (other 4xx, 3xx) or out of attempts.
    pub failed: Counter,
    /// Alerts not sent because the key already alerted at that level or above within
    /// `dedup_period_ms`.
    pub deduplicated: Counter,
    /// Alerts dropped because the queue was full or the sink shut down.
    pub dropped: Counter,
}

impl AlertMetrics {
    /// Registers the counters under `alerts_` in `registry` (prefixed `palisade_` by the
    /// scorer's registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("alerts");
        r.register("sent", "Alerts the receiver accepted", m.sent.clone());
        r.register(
            "retried",
            "Alert delivery attempts that were retried",
            m.retried.clone(),
        );
        r.register(
            "failed",
            "Alerts given up after a permanent error or the last attempt",
            m.failed.clone(),
        );
        r.register(
            "deduplicated",
            "Alerts skipped because the key already alerted within the period",
            m.deduplicated.clone(),
        );
        r.register(
            "dropped",
            "Alerts dropped because the queue was full or shut down",
            m.dropped.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_have_the_documented_names() {
        let mut registry = Registry::with_prefix("palisade");
        let m = AlertMetrics::register(&mut registry);
        m.sent.inc();
        m.dropped.inc_by(3);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            "palisade_alerts_sent_total 1",
            "palisade_alerts_retried_total 0",
            "palisade_alerts_failed_total 0",
            "palisade_alerts_deduplicated_total 0",
            "palisade_alerts_dropped_total 3",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }
}
