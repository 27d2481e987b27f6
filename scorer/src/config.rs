//! Scorer configuration: a TOML file, then `PALISADE_*` environment overrides, then
//! [`Config::validate`], which reports every problem at once, each naming its key.
//!
//! Parsing is pure (`Config::from_toml_str`); reading files and the environment is done by
//! [`Config::load`], which takes the environment as an argument so tests stay hermetic.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, str::FromStr};

use serde::{Deserialize, Deserializer};

pub mod redis;
pub mod route;
pub use self::redis::{DegradedMode, ENV_REDIS_URL, RedisConfig};
pub use self::route::RouteConfig;

/// Environment variables that override the file.
pub const ENV_GRPC_LISTEN: &str = "PALISADE_GRPC_LISTEN";
/// Admin (health, metrics) listen address override.
pub const ENV_ADMIN_LISTEN: &str = "PALISADE_ADMIN_LISTEN";

/// Longest window a policy may have (30 days).
pub const MAX_WINDOW_MS: u64 = 30 * 24 * 3_600_000;
/// Largest limit the exact sliding log accepts: it stores one timestamp per admitted request.
pub const MAX_SLIDING_LOG_LIMIT: u32 = 100_000;
/// With `algorithm` unset, windows up to this limit use the exact log, larger ones the counter.
pub const AUTO_LOG_LIMIT: u32 = 1_000;

/// A configuration that failed to load: every problem found, each naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file (or `<inline>`).
        path: String,
        /// The parser's message, which names the offending key and line.
        message: String,
    },
    /// The file parsed but some values are not acceptable.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// The whole scorer configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen addresses and shutdown behaviour.
    pub server: ServerConfig,
    /// Rate-limit policies.
    pub limits: LimitsConfig,
    /// The shared window store; off unless a URL is set.
    pub redis: RedisConfig,
    /// Security events.
    pub events: crate::events::EventsConfig,
    /// Behavioural detection.
    pub detect: crate::detect::DetectConfig,
    /// SIEM alerts; off unless a URL is set.
    pub alerts: crate::alerts::AlertsConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC (Check, Report, health, reflection). Env: `PALISADE_GRPC_LISTEN`.
    pub grpc_listen: SocketAddr,
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics`. Env: `PALISADE_ADMIN_LISTEN`.
    pub admin_listen: SocketAddr,
    /// How long in-flight RPCs may take to finish after SIGTERM, in ms.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
            shutdown_grace_ms: 5_000,
        }
    }
}

/// Where the limiter's clock comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// Envoy's `timestamp_ms` from the CheckRequest (the scorer's clock when it is 0).
    /// Lets a simulator replay days of traffic in minutes; per key, time never runs backwards.
    #[default]
    Request,
    /// The scorer's own wall clock; request timestamps are ignored.
    Local,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Tier used when a request names no tier or an unknown one.
    pub default_tier: String,
    /// Clock for the windows.
    pub clock: ClockSource,
    /// Policies per tier, by tier name.
    pub tiers: BTreeMap<String, PolicyConfig>,
    /// Per-key overrides, by key id (replace the tier's policy for that key).
    pub keys: BTreeMap<String, PolicyConfig>,
    /// Per key and route limits, checked with the key's policy (`[[limits.routes]]`).
    pub routes: Vec<RouteConfig>,
    /// Per client IP limits for requests that failed authentication
    /// (`[limits.unauthenticated]`), policy name `unauthenticated`. Credential stuffing
    /// comes from few addresses and many wrong keys: the filter asks about each failure and
    /// answers 429 instead of 401 once an address is over this. `None` (only from code; a file
    /// can make it `shadow`): failed authentications are never throttled. Authenticated
    /// requests never count here.
    pub unauthenticated: Option<PolicyConfig>,
    /// How often idle per-key state is swept from memory, in ms.
    pub sweep_interval_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let mut tiers = BTreeMap::new();
        tiers.insert(
            "free".to_owned(),
            PolicyConfig {
                windows: vec![WindowConfig::new(5, 60_000)],
                ..PolicyConfig::default()
            },
        );
        tiers.insert(
            "standard".to_owned(),
            PolicyConfig {
                windows: vec![
                    WindowConfig::new(50, 1_000),
                    WindowConfig::new(10_000, 3_600_000),
                ],
                ..PolicyConfig::default()
            },
        );
        Self {
            default_tier: "free".to_owned(),
            clock: ClockSource::default(),
            tiers,
            keys: BTreeMap::new(),
            routes: Vec::new(),
            unauthenticated: Some(PolicyConfig {
                // A person mistyping a key, or a misconfigured client retrying a few times a
                // second, stays under 30 a minute; a stuffing run from one address is cut to
                // 300 guesses an hour (7,200 a day) instead of thousands a second. Both stay
                // under AUTO_LOG_LIMIT, so the exact log counts them.
                windows: vec![
                    WindowConfig::new(30, 60_000),
                    WindowConfig::new(300, 3_600_000),
                ],
                ..PolicyConfig::default()
            }),
            sweep_interval_ms: 30_000,
        }
    }
}

/// Name of the per-client-IP policy for failed authentications (metrics, `RateLimit-Policy`).
pub const UNAUTHENTICATED_POLICY: &str = "unauthenticated";

/// Window-counting algorithm.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Exact: one timestamp per admitted request in the window. Memory O(limit) per key.
    SlidingLog,
    /// Approximate: two fixed buckets, the previous one weighted by its overlap. Memory O(1).
    SlidingCounter,
}

/// One policy: every window must admit a request for it to count.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The windows, checked together atomically.
    pub windows: Vec<WindowConfig>,
    /// Unset: exact log for limits up to 1,000, counter above.
    pub algorithm: Option<Algorithm>,
    /// Shadow mode: a would-be throttle is counted and reported, the request passes.
    pub shadow: bool,
}

/// `{ limit = 20, window = "1s" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length: `"250ms"`, `"1s"`, `"5m"`, `"1h"`, `"1d"`, or a number of ms.
    pub window: WindowLength,
}

impl WindowConfig {
    /// A window of `limit` requests per `window_ms`.
    pub fn new(limit: u32, window_ms: u64) -> Self {
        Self {
            limit,
            window: WindowLength(window_ms),
        }
    }
}

/// A window length in milliseconds, written as a duration string or a number of ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLength(pub u64);

impl WindowLength {
    /// Milliseconds.
    pub fn as_ms(self) -> u64 {
        self.0
    }
}

impl fmt::Display for WindowLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

impl FromStr for WindowLength {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a duration like 500ms, 1s, 5m, 1h or 1d"))?;
        let factor = match unit {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}` (use ms, s, m, h or d)"
                ));
            }
        };
        n.checked_mul(factor)
            .map(WindowLength)
            .ok_or_else(|| format!("`{s}` is too long"))
    }
}

impl<'de> Deserialize<'de> for WindowLength {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(WindowLength(ms)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// True for names usable as tier names and key ids: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Config {
    /// Parses TOML without touching the environment.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads `path` (defaults when `None`), applies `PALISADE_*` overrides from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::from_toml_str(&text, &p.display().to_string())?
            }
            None => Self::default(),
        };
        let mut problems = config.apply_env(env);
        if let Err(ConfigError::Invalid(more)) = config.validate() {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Applies environment overrides; returns the problems found in them.
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut addr = |var: &str, slot: &mut SocketAddr| {
            if let Some(v) = env(var) {
                match v.parse() {
                    Ok(a) => *slot = a,
                    Err(_) => problems.push(format!(
                        "{var}: `{v}` is not an address like 127.0.0.1:50051"
                    )),
                }
            }
        };
        addr(ENV_GRPC_LISTEN, &mut self.server.grpc_listen);
        addr(ENV_ADMIN_LISTEN, &mut self.server.admin_listen);
        if let Some(url) = env(ENV_REDIS_URL) {
            self.redis.url = url;
        }
        self.events.apply_env(&env);
        self.detect.apply_env(&env);
        self.alerts.apply_env(&env);
        problems
    }

    /// Checks every value; the error lists all problems, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.server.grpc_listen == self.server.admin_listen
            && self.server.grpc_listen.port() != 0
        {
            p.push("server.admin_listen: must differ from server.grpc_listen".to_owned());
        }
        let l = &self.limits;
        if l.tiers.is_empty() {
            p.push("limits.tiers: at least one tier is required".to_owned());
        } else if !l.tiers.contains_key(&l.default_tier) {
            p.push(format!(
                "limits.default_tier: `{}` is not one of limits.tiers ({})",
                l.default_tier,
                l.tiers.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if l.sweep_interval_ms == 0 {
            p.push("limits.sweep_interval_ms: must be > 0".to_owned());
        }
        for (name, policy) in &l.tiers {
            validate_policy(&format!("limits.tiers.{name}"), name, policy, &mut p);
        }
        if l.tiers.contains_key(UNAUTHENTICATED_POLICY) {
            p.push(format!(
                "limits.tiers.{UNAUTHENTICATED_POLICY}: the name is reserved for limits.unauthenticated"
            ));
        }
        for (name, policy) in &l.keys {
            validate_policy(&format!("limits.keys.{name}"), name, policy, &mut p);
        }
        if let Some(policy) = &l.unauthenticated {
            validate_policy(
                "limits.unauthenticated",
                UNAUTHENTICATED_POLICY,
                policy,
                &mut p,
            );
        }
        route::validate(&l.routes, &mut p);
        self.redis.validate(&mut p);
        self.events.validate(&mut p);
        self.detect.validate(&mut p);
        p.extend(self.alerts.validate());
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }
}

fn validate_policy(at: &str, name: &str, policy: &PolicyConfig, p: &mut Vec<String>) {
    if !is_valid_name(name) {
        p.push(format!("{at}: the name must match [A-Za-z0-9_-]{{1,64}}"));
    }
    if policy.windows.is_empty() {
        p.push(format!("{at}.windows: at least one window is required"));
    }
    let mut seen = Vec::new();
    for (i, w) in policy.windows.iter().enumerate() {
        let ms = w.window.as_ms();
        if w.limit == 0 {
            p.push(format!("{at}.windows[{i}].limit: must be >= 1"));
        }
        if ms == 0 {
            p.push(format!("{at}.windows[{i}].window: must be > 0"));
        } else if ms > MAX_WINDOW_MS {
            p.push(format!("{at}.windows[{i}].window: must be at most 30 days"));
        }
        if seen.contains(&ms) {
            p.push(format!(
                "{at}.windows[{i}].window: another window has the same length"
            ));
        }
        seen.push(ms);
        if policy.algorithm == Some(Algorithm::SlidingLog) && w.limit > MAX_SLIDING_LOG_LIMIT {
            p.push(format!(
                "{at}.windows[{i}].limit: sliding_log stores one entry per request; use \
                 sliding_counter above {MAX_SLIDING_LOG_LIMIT}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> Vec<String> {
        match Config::from_toml_str(text, "t").map(|c| c.validate()) {
            Ok(Err(ConfigError::Invalid(p))) => p,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml_str("", "t").unwrap(), Config::default());
    }

    #[test]
    fn parses_durations_in_every_unit() {
        for (s, ms) in [
            ("250ms", 250),
            ("1s", 1_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("42", 42),
        ] {
            assert_eq!(s.parse::<WindowLength>().unwrap().as_ms(), ms, "{s}");
        }
        assert!("1w".parse::<WindowLength>().is_err());
        assert!("s".parse::<WindowLength>().is_err());
        assert!("99999999999999999999d".parse::<WindowLength>().is_err());
    }

    #[test]
    fn parses_a_full_file() {
        let c = Config::from_toml_str(
            r#"
            [server]
            grpc_listen = "127.0.0.1:6000"
            [limits]
            default_tier = "gold"
            clock = "local"
            [limits.tiers.gold]
            windows = [{ limit = 20, window = "1s" }, { limit = 5000, window = 3600000 }]
            algorithm = "sliding_counter"
            [limits.keys.alice]
            windows = [{ limit = 1, window = "1m" }]
            shadow = true
            "#,
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.grpc_listen.port(), 6000);
        assert_eq!(c.limits.clock, ClockSource::Local);
        assert_eq!(c.limits.tiers["gold"].windows[1].window.as_ms(), 3_600_000);
        assert!(c.limits.keys["alice"].shadow);
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let p = invalid(
            r#"
            [limits]
            default_tier = "missing"
            [limits.tiers.free]
            windows = [{ limit = 0, window = "1s" }, { limit = 5, window = "1000ms" }]
            [limits.tiers."bad name"]
            windows = []
            [limits.keys.bob]
            algorithm = "sliding_log"
            windows = [{ limit = 200000, window = "40d" }]
            "#,
        );
        let all = p.join("\n");
        for needle in [
            "limits.default_tier: `missing`",
            "limits.tiers.free.windows[0].limit: must be >= 1",
            "limits.tiers.free.windows[1].window: another window has the same length",
            "limits.tiers.bad name: the name must match",
            "limits.tiers.bad name.windows: at least one window",
            "limits.keys.bob.windows[0].window: must be at most 30 days",
            "limits.keys.bob.windows[0].limit: sliding_log stores one entry",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }

    #[test]
    fn the_unauthenticated_policy_is_on_by_default_and_validated() {
        let d = LimitsConfig::default();
        let windows = &d.unauthenticated.as_ref().unwrap().windows;
        assert_eq!(windows[0], WindowConfig::new(30, 60_000));
        let c = Config::from_toml_str(
            "[limits.unauthenticated]\nwindows = [{ limit = 3, window = \"1m\" }]\nshadow = true\n",
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        let u = c.limits.unauthenticated.unwrap();
        assert_eq!(u.windows, [WindowConfig::new(3, 60_000)]);
        assert!(u.shadow);
        let all = invalid(
            r#"
            [limits.unauthenticated]
            windows = [{ limit = 0, window = "1s" }, { limit = 5, window = "0ms" }]
            "#,
        )
        .join("\n");
        for needle in [
            "limits.unauthenticated.windows[0].limit: must be >= 1",
            "limits.unauthenticated.windows[1].window: must be > 0",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
        let reserved =
            invalid("[limits.tiers.unauthenticated]\nwindows = [{ limit = 1, window = \"1s\" }]\n")
                .join("\n");
        assert!(
            reserved.contains("limits.tiers.unauthenticated: the name is reserved"),
            "{reserved}"
        );
        let empty = invalid("[limits.unauthenticated]\n").join("\n");
        assert!(
            empty.contains("limits.unauthenticated.windows: at least one window"),
            "{empty}"
        );
    }

    #[test]
    fn unknown_keys_are_parse_errors_naming_the_key() {
        let err = Config::from_toml_str("[limits]\ndefault_teir = \"x\"\n", "f.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("default_teir"), "{msg}");
        assert!(msg.contains("f.toml"), "{msg}");
    }

    #[test]
    fn env_overrides_apply_and_bad_ones_are_reported() {
        let c = Config::load(None, |k| {
            (k == ENV_GRPC_LISTEN).then(|| "127.0.0.1:7001".to_owned())
        })
        .unwrap();
        assert_eq!(c.server.grpc_listen.port(), 7001);
        let err =
            Config::load(None, |k| (k == ENV_ADMIN_LISTEN).then(|| "nope".to_owned())).unwrap_err();
        assert!(err.to_string().contains("PALISADE_ADMIN_LISTEN"), "{err}");
    }
}
