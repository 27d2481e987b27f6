//! `[redis]`: the shared window store. Without a URL the in-process windows stay the store.

use serde::Deserialize;

/// Environment variable that turns Redis on (overrides `redis.url`).
pub const ENV_REDIS_URL: &str = "PALISADE_REDIS_URL";

/// What a Check decides while Redis cannot answer (breaker open, timeout, error).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DegradedMode {
    /// In-process windows of this replica. Every such decision is counted and flagged
    /// `degraded`; with N scorer replicas the effective limit becomes `limit x N`. These
    /// windows only see degraded decisions, so they start empty when Redis fails: a key may
    /// get up to one more full quota per replica during an outage.
    #[default]
    Local,
    /// Admit, flagged `degraded`, without quota headers.
    FailOpen,
    /// Refuse with THROTTLE (the filter answers 429, `Retry-After: 1`), reason
    /// `limiter_unavailable`, flagged `degraded`. A 429 tells clients to come back soon, which
    /// is true; the filter's own `failure_mode` stays for the case where the scorer is down.
    /// Shadow policies answer SHADOW_THROTTLE instead, so they still never refuse.
    FailClosed,
}

/// `[redis]`. Its `Debug` hides passwords in URLs.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` of a single Redis; empty = no Redis. Env: `PALISADE_REDIS_URL`.
    /// With `cluster = true`, the seed node of the cluster.
    pub url: String,
    /// Talk to a Redis Cluster (async cluster client) instead of a single Redis.
    pub cluster: bool,
    /// More seed nodes of the cluster (`redis://host:port`), besides `url`; implies `cluster`.
    pub cluster_nodes: Vec<String>,
    /// Longest wait for one Check's script, connecting included, in ms (default 15).
    pub timeout_ms: u64,
    /// Consecutive failures (timeouts, errors) that open the circuit breaker (default 5).
    pub breaker_failures: u32,
    /// How long the open breaker sends every Check to the degraded mode before letting one
    /// probe through (half-open), in ms (default 1000).
    pub breaker_open_ms: u64,
    /// What Checks decide while Redis cannot answer.
    pub degraded_mode: DegradedMode,
    /// Prefix of every key (default `palisade:`); keys are
    /// `<prefix>{rl:<key id>}:<policy>:<window_ms>:<l|c>` (the braces are the cluster hash tag).
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster: false,
            cluster_nodes: Vec::new(),
            timeout_ms: 15,
            breaker_failures: 5,
            breaker_open_ms: 1_000,
            degraded_mode: DegradedMode::default(),
            key_prefix: "palisade:".to_owned(),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("cluster", &self.cluster)
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>(),
            )
            .field("timeout_ms", &self.timeout_ms)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_ms", &self.breaker_open_ms)
            .field("degraded_mode", &self.degraded_mode)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`; URLs without a password unchanged.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl RedisConfig {
    /// True when a Redis (single or cluster) is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty() || !self.cluster_nodes.is_empty()
    }

    /// True when the cluster client is to be used.
    pub fn is_cluster(&self) -> bool {
        self.cluster || !self.cluster_nodes.is_empty()
    }

    /// Every seed node (`url` first).
    pub fn nodes(&self) -> Vec<String> {
        std::iter::once(&self.url)
            .filter(|u| !u.is_empty())
            .chain(&self.cluster_nodes)
            .cloned()
            .collect()
    }

    /// Appends every problem to `p`, each naming its key.
    pub fn validate(&self, p: &mut Vec<String>) {
        for (i, node) in self.nodes().iter().enumerate() {
            let at = if i == 0 && !self.url.is_empty() {
                "redis.url".to_owned()
            } else {
                format!(
                    "redis.cluster_nodes[{}]",
                    i - usize::from(!self.url.is_empty())
                )
            };
            if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                p.push(format!("{at}: must start with redis:// or rediss://"));
            }
        }
        if self.cluster && !self.enabled() {
            p.push("redis.cluster: needs redis.url or redis.cluster_nodes".to_owned());
        }
        if self.timeout_ms == 0 || self.timeout_ms > 10_000 {
            p.push("redis.timeout_ms: must be 1 to 10000".to_owned());
        }
        if self.breaker_failures == 0 {
            p.push("redis.breaker_failures: must be >= 1".to_owned());
        }
        if self.breaker_open_ms == 0 {
            p.push("redis.breaker_open_ms: must be > 0".to_owned());
        }
        if self.key_prefix.contains(['{', '}']) || self.key_prefix.len() > 64 {
            p.push("redis.key_prefix: at most 64 bytes, without { or } (hash tags)".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let c = RedisConfig::default();
        assert!(!c.enabled());
        let mut p = Vec::new();
        c.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let c = RedisConfig {
            url: "localhost:6379".into(),
            cluster_nodes: vec!["redis://a:1".into(), "http://b".into()],
            timeout_ms: 0,
            breaker_failures: 0,
            breaker_open_ms: 0,
            key_prefix: "x{".into(),
            ..RedisConfig::default()
        };
        let mut p = Vec::new();
        c.validate(&mut p);
        let all = p.join("\n");
        for needle in [
            "redis.url: must start",
            "redis.cluster_nodes[1]: must start",
            "redis.timeout_ms",
            "redis.breaker_failures",
            "redis.breaker_open_ms",
            "redis.key_prefix",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
        assert!(!all.contains("cluster_nodes[0]"), "{all}");
        assert!(c.is_cluster());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = RedisConfig {
            url: "redis://app:hunter2@127.0.0.1:6379/0".into(),
            ..RedisConfig::default()
        };
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://app:***@127.0.0.1:6379/0"), "{text}");
    }
}
