//! The plugin configuration: JSON from Envoy's `configuration` field, parsed and validated
//! into a [`Config`] the rest of the filter can trust.
//!
//! Parsing is pure: the only outside input, environment variables for `{"env": "VAR"}`
//! secrets, comes in as a lookup function. [`Config::parse`] reports *every* problem it
//! finds, each naming its key (`keys[2].key_id: must match [A-Za-z0-9_-]{1,64}`), so an
//! operator fixes a bad config in one round.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use palisade_token::{KeyDigest, Pepper, TokenKey};
use serde::Deserialize;

use crate::auth::{KeyEntry, KeyTable};
use crate::strip::StripRules;

/// What the filter does with a request when the scorer cannot give a verdict.
/// Authentication never fails open, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Answer 503.
    FailClosed,
    /// Forward the request as if allowed.
    FailOpen,
}

/// Names of the headers the filter reads and writes, all lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderNames {
    /// Where clients send their API key.
    pub api_key: String,
    /// The request id, set on the upstream request and on every response.
    pub request_id: String,
    /// The signed gateway token for the backend.
    pub gateway_token: String,
    /// The authenticated key id for the backend.
    pub key_id: String,
    /// Set (to the scorer's reason) when the scorer flags a request.
    pub flag: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            api_key: "x-api-key".into(),
            request_id: "x-request-id".into(),
            gateway_token: "x-gateway-token".into(),
            key_id: "x-palisade-key-id".into(),
            flag: "x-palisade-flag".into(),
        }
    }
}

/// Bounds on the query parameters forwarded to the scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    /// Parameters kept; the rest are dropped.
    pub max_params: usize,
    /// Bytes of a decoded name kept.
    pub max_name_bytes: usize,
    /// Bytes of a decoded value kept.
    pub max_value_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_params: 32,
            max_name_bytes: 64,
            max_value_bytes: 256,
        }
    }
}

/// Outcome reporting (`Scorer.Report`), off the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// Off: no outcomes are queued or sent.
    pub enabled: bool,
    /// Tick period of the root context, which sends one batch per tick.
    pub flush_interval_ms: u64,
    /// Outcomes per `Report` call.
    pub max_batch: usize,
    /// Outcomes queued per worker; beyond this the oldest are dropped (and counted).
    pub max_queue: usize,
    /// Timeout of one `Report` call.
    pub timeout_ms: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_interval_ms: 1000,
            max_batch: 256,
            max_queue: 4096,
            timeout_ms: 1000,
        }
    }
}

impl ReportConfig {
    /// Tick period.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Timeout of one `Report` call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The scorer's Envoy cluster and the `Check` timeout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerConfig {
    /// Envoy cluster name (an HTTP/2 cluster pointing at the scorer).
    pub cluster: String,
    /// Timeout of one `Check` call.
    pub timeout_ms: u64,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            cluster: "palisade_scorer".into(),
            timeout_ms: 100,
        }
    }
}

impl ScorerConfig {
    /// Timeout of one `Check` call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A secret given inline as hex or by the name of an environment variable holding the hex.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SecretSource {
    hex: Option<String>,
    env: Option<String>,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("hex", &self.hex.as_ref().map(|_| "<redacted>"))
            .field("env", &self.env)
            .finish()
    }
}

/// One entry of `keys`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawKey {
    digest: String,
    key_id: String,
    tenant: String,
    tier: String,
}

/// The JSON document, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    scorer: ScorerConfig,
    failure_mode: String,
    pepper: Option<SecretSource>,
    token_key: Option<SecretSource>,
    keys: Vec<RawKey>,
    headers: HeaderNames,
    strip_headers: Vec<String>,
    strip_prefixes: Vec<String>,
    trust_request_id: bool,
    ip_limits: bool,
    query: QueryLimits,
    report: ReportConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            scorer: ScorerConfig::default(),
            failure_mode: "fail_closed".into(),
            pepper: None,
            token_key: None,
            keys: Vec::new(),
            headers: HeaderNames::default(),
            strip_headers: Vec::new(),
            strip_prefixes: vec!["x-palisade-".into()],
            trust_request_id: false,
            ip_limits: true,
            query: QueryLimits::default(),
            report: ReportConfig::default(),
        }
    }
}

/// Why a configuration was rejected: every problem found, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One line per problem, `key: what is wrong`.
    pub problems: Vec<String>,
}

/// The validated configuration. Secrets are held as parsed keys and never printed.
pub struct Config {
    /// Scorer cluster and `Check` timeout.
    pub scorer: ScorerConfig,
    /// What a scorer failure does to a request.
    pub failure_mode: FailureMode,
    /// Pepper of the API-key digests.
    pub pepper: Pepper,
    /// Key that signs gateway tokens.
    pub token_key: TokenKey,
    /// The known API keys, by digest.
    pub keys: KeyTable,
    /// Header names.
    pub headers: HeaderNames,
    /// Client headers removed from every request.
    pub strip: StripRules,
    /// Keep a well-formed client request id instead of generating one.
    pub trust_request_id: bool,
    /// Ask the scorer about every failed authentication (`unauthenticated` Check, per client
    /// IP) and answer 429 instead of 401 once the address is over its limit. Default on.
    /// Never lets a request through: whatever the scorer says or fails to say, the answer is
    /// 401 or 429. Off: every failed authentication is a 401 with no scorer call.
    pub ip_limits: bool,
    /// Bounds on the query sent to the scorer.
    pub query: QueryLimits,
    /// Outcome reporting.
    pub report: ReportConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("scorer", &self.scorer)
            .field("failure_mode", &self.failure_mode)
            .field("pepper", &"<redacted>")
            .field("token_key", &"<redacted>")
            .field("keys", &self.keys)
            .field("headers", &self.headers)
            .field("strip", &self.strip)
            .field("trust_request_id", &self.trust_request_id)
            .field("ip_limits", &self.ip_limits)
            .field("query", &self.query)
            .field("report", &self.report)
            .finish()
    }
}

const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_LABEL_BYTES: usize = 128;

impl Config {
    /// Parses and validates the plugin configuration. `env` looks up environment variables
    /// for secrets given as `{"env": "VAR"}`.
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| ConfigError {
            problems: vec![format!("configuration: {e}")],
        })?;
        raw.validate(env)
    }
}

impl RawConfig {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();

        if self.scorer.cluster.is_empty() {
            problems.push("scorer.cluster: must not be empty".to_owned());
        }
        check_timeout("scorer.timeout_ms", self.scorer.timeout_ms, &mut problems);

        let failure_mode = match self.failure_mode.as_str() {
            "fail_closed" => Some(FailureMode::FailClosed),
            "fail_open" => Some(FailureMode::FailOpen),
            _ => {
                problems.push(r#"failure_mode: must be "fail_closed" or "fail_open""#.to_owned());
                None
            }
        };

        let pepper = secret("pepper", self.pepper.as_ref(), env, &mut problems).and_then(|hex| {
            Pepper::from_hex(hex.trim())
                .map_err(|e| problems.push(format!("pepper: {e}")))
                .ok()
        });
        let token_key =
            secret("token_key", self.token_key.as_ref(), env, &mut problems).and_then(|hex| {
                TokenKey::from_hex(hex.trim())
                    .map_err(|e| problems.push(format!("token_key: {e}")))
                    .ok()
            });

        let keys = validate_keys(&self.keys, &mut problems);
        validate_headers(&self.headers, &mut problems);
        for (i, name) in self.strip_headers.iter().enumerate() {
            if !is_header_name(name) {
                problems.push(format!(
                    "strip_headers[{i}]: must be a lowercase header name (not a pseudo-header)"
                ));
            }
        }
        for (i, prefix) in self.strip_prefixes.iter().enumerate() {
            if !is_header_name(prefix) {
                problems.push(format!(
                    "strip_prefixes[{i}]: must be a non-empty lowercase header-name prefix"
                ));
            }
        }
        let strip = StripRules::new(
            &self.headers,
            &self.strip_headers,
            &self.strip_prefixes,
            self.trust_request_id,
        );
        if let Some(rule) = strip.rule_for(&self.headers.api_key) {
            problems.push(format!(
                "headers.api_key: \"{}\" would be removed by {rule}",
                self.headers.api_key
            ));
        }
        if self.trust_request_id
            && let Some(rule) = strip.rule_for(&self.headers.request_id)
        {
            problems.push(format!(
                "headers.request_id: \"{}\" would be removed by {rule}, so trust_request_id has no effect",
                self.headers.request_id
            ));
        }

        validate_query(&self.query, &mut problems);
        validate_report(&self.report, &mut problems);

        match (failure_mode, pepper, token_key, keys) {
            (Some(failure_mode), Some(pepper), Some(token_key), Some(keys))
                if problems.is_empty() =>
            {
                Ok(Config {
                    scorer: self.scorer,
                    failure_mode,
                    pepper,
                    token_key,
                    keys,
                    headers: self.headers,
                    strip,
                    trust_request_id: self.trust_request_id,
                    ip_limits: self.ip_limits,
                    query: self.query,
                    report: self.report,
                })
            }
            _ => Err(ConfigError { problems }),
        }
    }
}

/// Resolves a secret to its hex text. Problems never include the secret itself.
fn secret(
    key: &str,
    source: Option<&SecretSource>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let Some(source) = source else {
        problems.push(format!(
            r#"{key}: required ({{"hex": "..."}} or {{"env": "VAR"}})"#
        ));
        return None;
    };
    match (&source.hex, &source.env) {
        (Some(hex), None) => Some(hex.clone()),
        (None, Some(var)) if var.is_empty() => {
            problems.push(format!("{key}.env: must name an environment variable"));
            None
        }
        (None, Some(var)) => match env(var) {
            Some(value) => Some(value),
            None => {
                problems.push(format!(
                    "{key}.env: environment variable \"{var}\" is not set in the VM \
                     (add it to vm_config.environment_variables)"
                ));
                None
            }
        },
        _ => {
            problems.push(format!(r#"{key}: give exactly one of "hex" or "env""#));
            None
        }
    }
}

fn check_timeout(key: &str, ms: u64, problems: &mut Vec<String>) {
    if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
        problems.push(format!("{key}: must be between 1 and {MAX_TIMEOUT_MS}"));
    }
}

fn validate_keys(raw: &[RawKey], problems: &mut Vec<String>) -> Option<KeyTable> {
    if raw.is_empty() {
        problems.push("keys: at least one key is required".to_owned());
        return None;
    }
    let before = problems.len();
    let mut entries = Vec::with_capacity(raw.len());
    let mut digests: HashMap<[u8; 32], usize> = HashMap::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, key) in raw.iter().enumerate() {
        let digest = match KeyDigest::from_hex(&key.digest) {
            Ok(d) => Some(d),
            Err(_) => {
                problems.push(format!(
                    "keys[{i}].digest: must be 64 hex characters (HMAC-SHA256 of the key under the pepper)"
                ));
                None
            }
        };
        if let Some(d) = &digest
            && let Some(first) = digests.insert(*d.as_bytes(), i)
        {
            problems.push(format!("keys[{i}].digest: duplicates keys[{first}].digest"));
        }
        if !is_key_id(&key.key_id) {
            problems.push(format!(
                "keys[{i}].key_id: must match [A-Za-z0-9_-]{{1,64}}"
            ));
        } else if let Some(first) = ids.insert(&key.key_id, i) {
            problems.push(format!("keys[{i}].key_id: duplicates keys[{first}].key_id"));
        }
        for (field, value) in [("tenant", &key.tenant), ("tier", &key.tier)] {
            if !is_label(value) {
                problems.push(format!(
                    "keys[{i}].{field}: must be at most {MAX_LABEL_BYTES} bytes without control characters"
                ));
            }
        }
        if let Some(digest) = digest {
            entries.push(KeyEntry {
                digest,
                key_id: key.key_id.clone(),
                tenant: key.tenant.clone(),
                tier: key.tier.clone(),
            });
        }
    }
    (problems.len() == before).then(|| KeyTable::new(entries))
}

fn validate_headers(headers: &HeaderNames, problems: &mut Vec<String>) {
    let named = [
        ("api_key", &headers.api_key),
        ("request_id", &headers.request_id),
        ("gateway_token", &headers.gateway_token),
        ("key_id", &headers.key_id),
        ("flag", &headers.flag),
    ];
    for (i, (field, name)) in named.iter().enumerate() {
        if !is_header_name(name) {
            problems.push(format!(
                "headers.{field}: must be a lowercase header name (not a pseudo-header)"
            ));
            continue;
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, n)| n == name) {
            problems.push(format!("headers.{field}: must differ from headers.{other}"));
        }
    }
}

fn validate_query(query: &QueryLimits, problems: &mut Vec<String>) {
    if query.max_params > 1024 {
        problems.push("query.max_params: must be at most 1024".to_owned());
    }
    if !(1..=8192).contains(&query.max_name_bytes) {
        problems.push("query.max_name_bytes: must be between 1 and 8192".to_owned());
    }
    if query.max_value_bytes > 8192 {
        problems.push("query.max_value_bytes: must be at most 8192".to_owned());
    }
}

fn validate_report(report: &ReportConfig, problems: &mut Vec<String>) {
    if !(10..=3_600_000).contains(&report.flush_interval_ms) {
        problems.push("report.flush_interval_ms: must be between 10 and 3600000".to_owned());
    }
    if !(1..=1_000_000).contains(&report.max_queue) {
        problems.push("report.max_queue: must be between 1 and 1000000".to_owned());
    }
    if report.max_batch == 0 || report.max_batch > report.max_queue.max(1) {
        problems.push("report.max_batch: must be between 1 and report.max_queue".to_owned());
    }
    check_timeout("report.timeout_ms", report.timeout_ms, problems);
}

/// `[A-Za-z0-9_-]{1,64}`, the gateway token's key-id alphabet.
pub fn is_key_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_BYTES && !s.chars().any(char::is_control)
}

/// A lowercase HTTP field name (RFC 9110 token characters), as Envoy hands them over.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::test_support::{PEPPER_HEX, TOKEN_KEY_HEX, digest_hex};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "pepper": { "hex": PEPPER_HEX },
            "token_key": { "hex": TOKEN_KEY_HEX },
            "keys": [ { "digest": digest_hex("alice-key"), "key_id": "alice", "tenant": "demo", "tier": "standard" } ],
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes(), &no_env)
    }

    fn problems(v: &serde_json::Value) -> Vec<String> {
        parse(v).expect_err("config should be rejected").problems
    }

    #[test]
    fn defaults_match_the_documented_schema() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.scorer.cluster, "palisade_scorer");
        assert_eq!(c.scorer.timeout(), Duration::from_millis(100));
        assert_eq!(c.failure_mode, FailureMode::FailClosed);
        assert_eq!(c.headers, HeaderNames::default());
        assert_eq!(c.headers.api_key, "x-api-key");
        assert_eq!(c.headers.request_id, "x-request-id");
        assert_eq!(c.headers.gateway_token, "x-gateway-token");
        assert_eq!(c.headers.key_id, "x-palisade-key-id");
        assert_eq!(c.headers.flag, "x-palisade-flag");
        assert!(!c.trust_request_id);
        assert!(c.ip_limits);
        assert_eq!(
            c.query,
            QueryLimits {
                max_params: 32,
                max_name_bytes: 64,
                max_value_bytes: 256
            }
        );
        assert_eq!(
            c.report,
            ReportConfig {
                enabled: true,
                flush_interval_ms: 1000,
                max_batch: 256,
                max_queue: 4096,
                timeout_ms: 1000
            }
        );
        assert!(c.strip.rule_for("x-palisade-anything").is_some());
        assert_eq!(c.keys.len(), 1);
    }

    #[test]
    fn full_schema_is_accepted() {
        let v = serde_json::json!({
            "scorer": { "cluster": "scorer", "timeout_ms": 250 },
            "failure_mode": "fail_open",
            "pepper": { "hex": PEPPER_HEX },
            "token_key": { "hex": TOKEN_KEY_HEX },
            "keys": [
                { "digest": digest_hex("a"), "key_id": "alice", "tenant": "demo", "tier": "standard" },
                { "digest": digest_hex("b"), "key_id": "bob", "tenant": "demo", "tier": "free" }
            ],
            "headers": { "api_key": "authorization-key", "request_id": "x-req", "gateway_token": "x-gw",
                         "key_id": "x-kid", "flag": "x-flag" },
            "strip_headers": ["x-internal"],
            "strip_prefixes": ["x-palisade-", "x-debug-"],
            "trust_request_id": true,
            "ip_limits": false,
            "query": { "max_params": 4, "max_name_bytes": 8, "max_value_bytes": 16 },
            "report": { "enabled": false, "flush_interval_ms": 500, "max_batch": 10, "max_queue": 100, "timeout_ms": 300 }
        });
        let c = parse(&v).unwrap();
        assert_eq!(c.failure_mode, FailureMode::FailOpen);
        assert_eq!(c.scorer.cluster, "scorer");
        assert!(c.trust_request_id);
        assert!(!c.ip_limits);
        assert_eq!(c.keys.len(), 2);
        assert!(!c.report.enabled);
        assert_eq!(c.report.max_batch, 10);
        assert!(c.strip.rule_for("x-internal").is_some());
        assert!(c.strip.rule_for("x-debug-foo").is_some());
        assert!(
            c.strip.rule_for("x-req").is_none(),
            "trusted request id is kept"
        );
    }

    #[test]
    fn required_fields_are_reported_together() {
        let p = problems(&serde_json::json!({}));
        assert!(p.iter().any(|s| s.starts_with("pepper: required")), "{p:?}");
        assert!(
            p.iter().any(|s| s.starts_with("token_key: required")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|s| s.starts_with("keys: at least one key")),
            "{p:?}"
        );
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn every_problem_names_its_key() {
        let v = serde_json::json!({
            "scorer": { "cluster": "", "timeout_ms": 0 },
            "failure_mode": "maybe",
            "pepper": { "hex": "abcd" },
            "token_key": { "hex": "zz" },
            "keys": [
                { "digest": digest_hex("a"), "key_id": "alice", "tenant": "demo", "tier": "standard" },
                { "digest": "nothex", "key_id": "bad id!", "tenant": "t\u{1}", "tier": "x" },
                { "digest": digest_hex("a"), "key_id": "alice" }
            ],
            "headers": { "api_key": "X-Api-Key", "flag": "x-palisade-key-id" },
            "strip_headers": [":path", "ok-header"],
            "strip_prefixes": [""],
            "query": { "max_params": 5000, "max_name_bytes": 0, "max_value_bytes": 100000 },
            "report": { "flush_interval_ms": 1, "max_batch": 0, "max_queue": 0, "timeout_ms": 999999 }
        });
        let p = problems(&v);
        let expect = [
            "scorer.cluster:",
            "scorer.timeout_ms:",
            "failure_mode:",
            "pepper: key too short",
            "token_key: key is not valid hex",
            "keys[1].digest:",
            "keys[1].key_id: must match [A-Za-z0-9_-]{1,64}",
            "keys[1].tenant:",
            "keys[2].digest: duplicates keys[0].digest",
            "keys[2].key_id: duplicates keys[0].key_id",
            "headers.api_key: must be a lowercase header name",
            "headers.flag: must differ from headers.key_id",
            "strip_headers[0]:",
            "strip_prefixes[0]:",
            "query.max_params:",
            "query.max_name_bytes:",
            "query.max_value_bytes:",
            "report.flush_interval_ms:",
            "report.max_batch:",
            "report.max_queue:",
            "report.timeout_ms:",
        ];
        for e in expect {
            assert!(
                p.iter().any(|s| s.starts_with(e)),
                "missing {e:?} in {p:#?}"
            );
        }
        assert!(
            !p.iter().any(|s| s.starts_with("strip_headers[1]")),
            "{p:#?}"
        );
    }

    #[test]
    fn api_key_header_must_survive_stripping() {
        let mut v = minimal();
        v["headers"] = serde_json::json!({ "api_key": "x-palisade-api-key" });
        let p = problems(&v);
        assert!(
            p.iter()
                .any(|s| s.starts_with("headers.api_key:") && s.contains("strip_prefixes[0]")),
            "{p:?}"
        );

        let mut v = minimal();
        v["strip_headers"] = serde_json::json!(["x-api-key"]);
        assert!(problems(&v).iter().any(|s| s.contains("strip_headers[0]")));
    }

    #[test]
    fn trusted_request_id_must_survive_stripping() {
        let mut v = minimal();
        v["trust_request_id"] = true.into();
        v["headers"] = serde_json::json!({ "request_id": "x-palisade-request-id" });
        assert!(
            problems(&v)
                .iter()
                .any(|s| s.starts_with("headers.request_id:"))
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = minimal();
        v["scorer"] = serde_json::json!({ "clustr": "x" });
        let p = problems(&v);
        assert!(p[0].contains("unknown field `clustr`"), "{p:?}");

        let mut v = minimal();
        v["extra"] = true.into();
        assert!(problems(&v)[0].contains("unknown field `extra`"));
    }

    #[test]
    fn malformed_json_is_one_problem() {
        let p = Config::parse(b"{not json", &no_env).unwrap_err().problems;
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("configuration:"));
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let mut v = minimal();
        v["pepper"] = serde_json::json!({ "env": "PALISADE_PEPPER" });
        v["token_key"] = serde_json::json!({ "env": "PALISADE_TOKEN_KEY" });
        let env = |name: &str| match name {
            "PALISADE_PEPPER" => Some(format!("{PEPPER_HEX}\n")),
            "PALISADE_TOKEN_KEY" => Some(TOKEN_KEY_HEX.to_owned()),
            _ => None,
        };
        let c = Config::parse(v.to_string().as_bytes(), &env).unwrap();
        assert!(c.keys.len() == 1);

        let p = Config::parse(v.to_string().as_bytes(), &no_env)
            .unwrap_err()
            .problems;
        assert!(
            p.iter()
                .any(|s| s.starts_with("pepper.env:") && s.contains("PALISADE_PEPPER"))
        );
        assert!(p.iter().any(|s| s.starts_with("token_key.env:")));
    }

    #[test]
    fn a_secret_has_exactly_one_source() {
        let mut v = minimal();
        v["pepper"] = serde_json::json!({ "hex": PEPPER_HEX, "env": "X" });
        v["token_key"] = serde_json::json!({});
        let p = problems(&v);
        assert!(p.iter().any(|s| s.starts_with("pepper: give exactly one")));
        assert!(
            p.iter()
                .any(|s| s.starts_with("token_key: give exactly one"))
        );
    }

    #[test]
    fn secrets_never_reach_debug_or_errors() {
        let c = parse(&minimal()).unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains(PEPPER_HEX), "{shown}");
        assert!(!shown.contains(TOKEN_KEY_HEX), "{shown}");
        assert!(shown.contains("<redacted>"));

        let mut v = minimal();
        let bad_pepper = "5ec2e75ec2e7"; // too short, but hex
        v["pepper"] = serde_json::json!({ "hex": bad_pepper });
        v["token_key"] = serde_json::json!({ "hex": "not-hex-secret" });
        let p = problems(&v).join("\n");
        assert!(
            !p.contains(bad_pepper) && !p.contains("not-hex-secret"),
            "{p}"
        );

        let source = SecretSource {
            hex: Some(PEPPER_HEX.into()),
            env: None,
        };
        assert!(!format!("{source:?}").contains(PEPPER_HEX));
    }

    #[test]
    fn key_id_alphabet() {
        assert!(is_key_id("alice_01-x"));
        assert!(is_key_id(&"a".repeat(64)));
        assert!(!is_key_id(&"a".repeat(65)));
        assert!(!is_key_id(""));
        assert!(!is_key_id("al ice"));
        assert!(!is_key_id("alicé"));
    }
}
