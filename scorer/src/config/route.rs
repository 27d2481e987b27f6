//! `[[limits.routes]]`: limits per API key and route, on top of the key's own policy.

use serde::Deserialize;

use super::{Algorithm, PolicyConfig, WindowConfig, is_valid_name, validate_policy};

/// A route policy: requests whose method and path match count, per API key, in these windows
/// as well as in the key's own (override or tier) policy, all or nothing. The first matching
/// route applies. Shown in `RateLimit-Policy` as `route:<name>` when its window is the
/// tightest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `[A-Za-z0-9_-]{1,64}`, unique among the routes.
    pub name: String,
    /// Matches this method only (`POST`); any method when unset.
    #[serde(default)]
    pub method: Option<String>,
    /// Matches paths starting with this (`/api/login`); must start with `/`.
    pub path_prefix: String,
    /// The windows, checked together with the key's.
    pub windows: Vec<WindowConfig>,
    /// As for tiers: unset = exact log up to a limit of 1,000, counter above.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Shadow mode: checked in a separate step; a would-be throttle is reported, never
    /// enforced (an extra Redis round trip for the requests it matches).
    #[serde(default)]
    pub shadow: bool,
}

impl RouteConfig {
    /// The windows as a policy.
    pub fn policy(&self) -> PolicyConfig {
        PolicyConfig {
            windows: self.windows.clone(),
            algorithm: self.algorithm,
            shadow: self.shadow,
        }
    }

    /// Whether a request with `method` and `path` matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method) && path.starts_with(&self.path_prefix)
    }
}

/// Appends every problem of `routes` to `p`, each naming its key.
pub fn validate(routes: &[RouteConfig], p: &mut Vec<String>) {
    let mut names = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let at = format!("limits.routes[{i}]");
        if names.contains(&&r.name) {
            p.push(format!("{at}.name: `{}` is used by another route", r.name));
        }
        names.push(&r.name);
        if !r.path_prefix.starts_with('/') {
            p.push(format!("{at}.path_prefix: must start with '/'"));
        }
        if let Some(m) = &r.method
            && !(1..=32).contains(&m.len())
        {
            p.push(format!("{at}.method: must be 1 to 32 characters"));
        }
        if !is_valid_name(&r.name) {
            p.push(format!("{at}.name: must match [A-Za-z0-9_-]{{1,64}}"));
        }
        validate_policy(&at, "route", &r.policy(), p);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    #[test]
    fn reports_every_problem_with_its_key() {
        let c = Config::from_toml_str(
            r#"
            [[limits.routes]]
            name = "login"
            path_prefix = "api/login"
            windows = []
            [[limits.routes]]
            name = "login"
            method = ""
            path_prefix = "/x"
            windows = [{ limit = 0, window = "1s" }]
            "#,
            "t",
        )
        .unwrap();
        let Err(ConfigError::Invalid(p)) = c.validate() else {
            panic!("expected invalid");
        };
        let all = p.join("\n");
        for needle in [
            "limits.routes[0].path_prefix: must start with '/'",
            "limits.routes[0].windows: at least one window",
            "limits.routes[1].name: `login` is used by another route",
            "limits.routes[1].method",
            "limits.routes[1].windows[0].limit: must be >= 1",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }
}
