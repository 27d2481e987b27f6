//! `[alerts]`: where anomaly alerts go, in which format, how they are signed, de-duplicated
//! and retried.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Webhook URL override (`http://siem.internal:8088/services/collector/event`).
/// An empty value turns alerts off.
pub const ENV_ALERTS_URL: &str = "PALISADE_ALERTS_URL";

/// Shortest `hmac_secret` accepted, bytes: a shorter one is guessable offline from any signed
/// request the receiver logs.
pub const MIN_HMAC_SECRET_BYTES: usize = 16;

/// Largest `max_attempts`: beyond this a dead receiver only holds up the queue.
pub const MAX_ATTEMPTS: u32 = 20;

/// A secret (HMAC key, HEC token): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: for signing and headers only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whether one is set is useful when reading a config dump; its value never is.
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// The receiver's URL. Webhook URLs often carry their credential in the path or query (a
/// token, a user:password), so `Debug` shows only scheme, host and port.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The whole URL: for sending only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no URL is set (alerts are off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `scheme://host:port`, safe for a log line; `<invalid url>` when it does not parse.
    pub fn origin(&self) -> String {
        match reqwest::Url::parse(&self.0) {
            Ok(u) => match (u.host_str(), u.port_or_known_default()) {
                (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
                (Some(h), None) => format!("{}://{h}", u.scheme()),
                _ => format!("{}://", u.scheme()),
            },
            Err(_) => "<invalid url>".to_owned(),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            write!(f, "\"{}/<redacted>\"", self.origin())
        }
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl From<&str> for WebhookUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for WebhookUrl {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

/// The body a receiver gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    /// One JSON object per alert (`"type": "palisade.anomaly"`).
    #[default]
    Json,
    /// Splunk HTTP Event Collector: the same object under `event`, with `time`, `source`
    /// and `sourcetype`, and `Authorization: Splunk <token>`.
    SplunkHec,
}

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where alerts are POSTed; empty: alerts are off. For Splunk the full
    /// `/services/collector/event` URL. `http://` only in this build. Env: `PALISADE_ALERTS_URL`.
    pub url: WebhookUrl,
    /// `json` or `splunk_hec`.
    pub format: AlertFormat,
    /// When set, each request carries `X-Palisade-Signature: t=<unix s>,v1=<hex>`, an
    /// HMAC-SHA256 under this secret over `"<t>.<body>"`.
    pub hmac_secret: Secret,
    /// The HEC token, sent as `Authorization: Splunk <token>`; required for `splunk_hec`.
    pub splunk_token: Secret,
    /// At most one alert per key per period (more if the level rises), ms, measured on the
    /// alerts' own event times.
    pub dedup_period_ms: u64,
    /// Longest one delivery attempt may take, ms.
    pub timeout_ms: u64,
    /// Attempts per alert, the first included, before it is given up.
    pub max_attempts: u32,
    /// Wait before the first retry, ms; doubles per retry, with jitter.
    pub backoff_initial_ms: u64,
    /// Cap on the wait between retries, ms.
    pub backoff_max_ms: u64,
    /// Alerts waiting for delivery; beyond this new alerts are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            url: WebhookUrl::default(),
            format: AlertFormat::Json,
            hmac_secret: Secret::default(),
            splunk_token: Secret::default(),
            dedup_period_ms: 3_600_000,
            timeout_ms: 2_000,
            max_attempts: 5,
            backoff_initial_ms: 200,
            backoff_max_ms: 10_000,
            queue_capacity: 1_024,
        }
    }
}

impl AlertsConfig {
    /// True when a URL is set.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Applies `PALISADE_ALERTS_URL` (an empty value turns alerts off).
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        if let Some(url) = env(ENV_ALERTS_URL) {
            self.url = WebhookUrl::new(url);
        }
    }

    /// Every problem found, each naming its key (`alerts.timeout_ms: must be > 0`).
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.enabled() {
            if let Err(why) = check_url(self.url.expose()) {
                p.push(format!("alerts.url: {why}"));
            }
            if self.format == AlertFormat::SplunkHec && self.splunk_token.is_empty() {
                p.push("alerts.splunk_token: required with format = \"splunk_hec\"".to_owned());
            }
        }
        if !self.hmac_secret.is_empty() && self.hmac_secret.expose().len() < MIN_HMAC_SECRET_BYTES {
            p.push(format!(
                "alerts.hmac_secret: must be at least {MIN_HMAC_SECRET_BYTES} bytes"
            ));
        }
        for (key, v) in [
            ("dedup_period_ms", self.dedup_period_ms),
            ("timeout_ms", self.timeout_ms),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            ("queue_capacity", self.queue_capacity as u64),
        ] {
            if v == 0 {
                p.push(format!("alerts.{key}: must be > 0"));
            }
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            p.push(format!("alerts.max_attempts: must be 1 to {MAX_ATTEMPTS}"));
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            p.push("alerts.backoff_max_ms: must be at least backoff_initial_ms".to_owned());
        }
        p
    }
}

/// Why `url` cannot be sent to, if it cannot.
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    match parsed.scheme() {
        "http" => {}
        // The HTTP client is built without TLS to keep the scorer small; a local forwarder
        // (or a collector on the loopback) takes plain http.
        "https" => {
            return Err(
                "https is not supported by this build (its HTTP client has no TLS); \
                 use http:// to a local forwarder"
                    .to_owned(),
            );
        }
        other => return Err(format!("scheme must be http, not `{other}`")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        alerts: AlertsConfig,
    }

    #[test]
    fn defaults_are_the_documented_ones_and_off() {
        let c = AlertsConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.dedup_period_ms, 3_600_000);
        assert_eq!(c.timeout_ms, 2_000);
        assert_eq!(c.max_attempts, 5);
        assert_eq!((c.backoff_initial_ms, c.backoff_max_ms), (200, 10_000));
        assert_eq!(c.queue_capacity, 1_024);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn parses_a_toml_section() {
        let f: File = toml::from_str(
            r#"
            [alerts]
            url = "http://127.0.0.1:8088/services/collector/event"
            format = "splunk_hec"
            splunk_token = "00000000-aaaa-bbbb-cccc-000000000000"
            hmac_secret = "0123456789abcdef0123"
            dedup_period_ms = 60000
            "#,
        )
        .unwrap();
        let c = f.alerts;
        assert_eq!(c.format, AlertFormat::SplunkHec);
        assert_eq!(c.dedup_period_ms, 60_000);
        assert_eq!(c.timeout_ms, 2_000);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn unknown_keys_and_formats_are_parse_errors() {
        let e = toml::from_str::<File>("[alerts]\nformat = \"xml\"\n").unwrap_err();
        assert!(e.to_string().contains("format"), "{e}");
        let e = toml::from_str::<File>("[alerts]\nurls = \"http://x\"\n").unwrap_err();
        assert!(e.to_string().contains("urls"), "{e}");
    }

    #[test]
    fn debug_never_shows_secrets_or_the_url_path() {
        let c = AlertsConfig {
            url: WebhookUrl::new("http://user:pw@siem.internal:8088/hooks/T0KEN?key=k3y"),
            hmac_secret: Secret::new("hmac-s3cret-0123456789"),
            splunk_token: Secret::new("hec-t0ken"),
            ..AlertsConfig::default()
        };
        let shown = format!("{c:?}");
        for secret in ["hmac-s3cret", "hec-t0ken", "pw", "T0KEN", "k3y"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("http://siem.internal:8088"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn validation_names_every_key() {
        let c = AlertsConfig {
            url: WebhookUrl::new("ftp://siem.internal/x"),
            format: AlertFormat::SplunkHec,
            hmac_secret: Secret::new("short"),
            dedup_period_ms: 0,
            timeout_ms: 0,
            max_attempts: 0,
            backoff_initial_ms: 0,
            backoff_max_ms: 0,
            queue_capacity: 0,
            ..AlertsConfig::default()
        };
        let all = c.validate().join("\n");
        for key in [
            "alerts.url: scheme must be http, not `ftp`",
            "alerts.splunk_token: required",
            "alerts.hmac_secret: must be at least 16 bytes",
            "alerts.dedup_period_ms: must be > 0",
            "alerts.timeout_ms: must be > 0",
            "alerts.max_attempts: must be 1 to 20",
            "alerts.backoff_initial_ms: must be > 0",
            "alerts.backoff_max_ms: must be > 0",
            "alerts.queue_capacity: must be > 0",
        ] {
            assert!(all.contains(key), "{key} missing in\n{all}");
        }
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        let problems = |url: &str| {
            AlertsConfig {
                url: WebhookUrl::new(url),
                ..AlertsConfig::default()
            }
            .validate()
        };
        assert!(problems("http://127.0.0.1:9/x").is_empty());
        assert!(problems("not a url")[0].starts_with("alerts.url: not a valid URL"));
        assert!(problems("https://siem.example/x")[0].contains("https is not supported"));
        let inverted = AlertsConfig {
            backoff_initial_ms: 500,
            backoff_max_ms: 100,
            ..AlertsConfig::default()
        };
        assert_eq!(
            inverted.validate(),
            ["alerts.backoff_max_ms: must be at least backoff_initial_ms"]
        );
    }

    #[test]
    fn the_env_sets_or_clears_the_url() {
        let mut c = AlertsConfig::default();
        c.apply_env(&|k| (k == ENV_ALERTS_URL).then(|| "http://10.0.0.1:8080/a".to_owned()));
        assert_eq!(c.url.expose(), "http://10.0.0.1:8080/a");
        c.apply_env(&|k| (k == ENV_ALERTS_URL).then(String::new));
        assert!(!c.enabled());
    }
}
