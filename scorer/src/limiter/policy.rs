//! Policies: the windows that apply to a request, resolved once per config load.

use std::{collections::HashMap, sync::Arc};

use crate::config::{
    AUTO_LOG_LIMIT, Algorithm, LimitsConfig, PolicyConfig, RouteConfig, UNAUTHENTICATED_POLICY,
};

use super::WindowSpec;

/// A named set of windows, checked together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Shown in `RateLimit-Policy`: the tier name, or `key:<id>` for an override.
    pub name: String,
    /// The windows, each with its algorithm resolved.
    pub windows: Vec<WindowSpec>,
    /// Would-be throttles are reported, not enforced.
    pub shadow: bool,
}

impl Policy {
    fn from_config(name: String, c: &PolicyConfig) -> Self {
        let windows = c
            .windows
            .iter()
            .map(|w| WindowSpec {
                limit: w.limit,
                window_ms: w.window.as_ms(),
                algorithm: c.algorithm.unwrap_or(if w.limit <= AUTO_LOG_LIMIT {
                    Algorithm::SlidingLog
                } else {
                    Algorithm::SlidingCounter
                }),
            })
            .collect();
        Self {
            name,
            windows,
            shadow: c.shadow,
        }
    }

    /// The longest window, in ms: state idle for longer can be forgotten.
    pub fn longest_window_ms(&self) -> u64 {
        self.windows.iter().map(|w| w.window_ms).max().unwrap_or(0)
    }
}

/// Every policy of one configuration.
#[derive(Debug, Clone)]
pub struct PolicyTable {
    tiers: HashMap<String, Arc<Policy>>,
    keys: HashMap<String, Arc<Policy>>,
    /// In file order: the first match applies.
    routes: Vec<(RouteConfig, Arc<Policy>)>,
    default: Arc<Policy>,
    /// Per client IP, for requests that failed authentication; `None`: never throttled.
    unauthenticated: Option<Arc<Policy>>,
}

impl PolicyTable {
    /// Builds the table from a validated config.
    pub fn from_config(c: &LimitsConfig) -> Self {
        let tiers: HashMap<_, _> = c
            .tiers
            .iter()
            .map(|(name, p)| (name.clone(), Arc::new(Policy::from_config(name.clone(), p))))
            .collect();
        let keys = c
            .keys
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    Arc::new(Policy::from_config(format!("key:{id}"), p)),
                )
            })
            .collect();
        let default = tiers.get(&c.default_tier).cloned().unwrap_or_else(|| {
            // validate() guarantees the default tier exists; an empty policy admits everything.
            Arc::new(Policy {
                name: c.default_tier.clone(),
                windows: Vec::new(),
                shadow: false,
            })
        });
        let routes = c
            .routes
            .iter()
            .map(|r| {
                let policy = Policy::from_config(format!("route:{}", r.name), &r.policy());
                (r.clone(), Arc::new(policy))
            })
            .collect();
        let unauthenticated = c
            .unauthenticated
            .as_ref()
            .map(|p| Arc::new(Policy::from_config(UNAUTHENTICATED_POLICY.to_owned(), p)));
        Self {
            tiers,
            keys,
            routes,
            default,
            unauthenticated,
        }
    }

    /// The policy for a request: the key's override, else its tier's, else the default tier's.
    pub fn resolve(&self, key_id: &str, tier: &str) -> &Arc<Policy> {
        self.keys
            .get(key_id)
            .or_else(|| self.tiers.get(tier))
            .unwrap_or(&self.default)
    }

    /// The route policy for a request, if one matches (counted per key, with its policy).
    pub fn route(&self, method: &str, path: &str) -> Option<&Arc<Policy>> {
        self.routes
            .iter()
            .find(|(r, _)| r.matches(method, path))
            .map(|(_, p)| p)
    }

    /// The per-client-IP policy for a request that failed authentication, if configured.
    /// Neither key nor route policies apply to such a request.
    pub fn unauthenticated(&self) -> Option<&Arc<Policy>> {
        self.unauthenticated.as_ref()
    }

    /// Every distinct policy name, for pre-registering metrics.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tiers
            .values()
            .chain(self.keys.values())
            .chain(self.routes.iter().map(|(_, p)| p))
            .chain(self.unauthenticated.iter())
            .map(|p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PolicyConfig, WindowConfig};

    #[test]
    fn resolves_override_then_tier_then_default() {
        let mut c = LimitsConfig::default();
        c.keys.insert(
            "vip".into(),
            PolicyConfig {
                windows: vec![WindowConfig::new(5_000, 1_000)],
                ..Default::default()
            },
        );
        let t = PolicyTable::from_config(&c);
        assert_eq!(t.resolve("vip", "free").name, "key:vip");
        assert_eq!(t.resolve("other", "standard").name, "standard");
        assert_eq!(t.resolve("other", "nonexistent").name, "free");
        assert_eq!(t.resolve("other", "").name, "free");
    }

    #[test]
    fn the_first_matching_route_applies() {
        let c = crate::Config::from_toml_str(
            r#"
            [[limits.routes]]
            name = "login"
            method = "POST"
            path_prefix = "/api/login"
            windows = [{ limit = 5, window = "1m" }]
            [[limits.routes]]
            name = "api"
            path_prefix = "/api/"
            windows = [{ limit = 100, window = "1s" }]
            "#,
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        let t = PolicyTable::from_config(&c.limits);
        assert_eq!(t.route("POST", "/api/login").unwrap().name, "route:login");
        assert_eq!(t.route("GET", "/api/login").unwrap().name, "route:api");
        assert!(t.route("GET", "/health").is_none());
        assert!(t.names().any(|n| n == "route:login"));
    }

    #[test]
    fn the_unauthenticated_policy_is_resolved_apart_from_keys() {
        let t = PolicyTable::from_config(&LimitsConfig::default());
        let u = t.unauthenticated().unwrap();
        assert_eq!(u.name, "unauthenticated");
        assert_eq!(u.windows[0].limit, 30);
        assert_eq!(u.windows[0].algorithm, Algorithm::SlidingLog);
        assert!(t.names().any(|n| n == "unauthenticated"));
        // A key id can never be this policy's name: key ids get `key:` prefixed.
        assert_eq!(t.resolve("unauthenticated", "").name, "free");
        let off = PolicyTable::from_config(&LimitsConfig {
            unauthenticated: None,
            ..LimitsConfig::default()
        });
        assert!(off.unauthenticated().is_none());
        assert!(!off.names().any(|n| n == "unauthenticated"));
    }

    #[test]
    fn auto_algorithm_depends_on_the_limit() {
        let t = PolicyTable::from_config(&LimitsConfig::default());
        let std = t.resolve("x", "standard");
        assert_eq!(std.windows[0].algorithm, Algorithm::SlidingLog);
        assert_eq!(std.windows[1].algorithm, Algorithm::SlidingCounter);
        assert_eq!(std.longest_window_ms(), 3_600_000);
    }
}
