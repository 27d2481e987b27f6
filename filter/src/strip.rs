//! Which client-sent headers the filter removes before anything else: the ones only the
//! gateway may set (gateway token, key id, flag, the request id unless trusted), the
//! configured extra names, and every name with a configured prefix.

use std::collections::BTreeSet;

use crate::config::HeaderNames;

/// The removal rules, built once from the configuration.
#[derive(Debug, Clone)]
pub struct StripRules {
    /// Exact (lowercase) names, each with the config key it came from.
    exact: Vec<(String, String)>,
    /// Lowercase prefixes, each with the config key it came from.
    prefixes: Vec<(String, String)>,
}

impl StripRules {
    /// Rules for `headers` plus the extra `names` and `prefixes`; the request-id header is
    /// removed unless `trust_request_id`.
    pub fn new(
        headers: &HeaderNames,
        names: &[String],
        prefixes: &[String],
        trust_request_id: bool,
    ) -> Self {
        let mut exact = vec![
            (
                headers.gateway_token.clone(),
                "headers.gateway_token".to_owned(),
            ),
            (headers.key_id.clone(), "headers.key_id".to_owned()),
            (headers.flag.clone(), "headers.flag".to_owned()),
        ];
        if !trust_request_id {
            exact.push((headers.request_id.clone(), "headers.request_id".to_owned()));
        }
        exact.extend(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_ascii_lowercase(), format!("strip_headers[{i}]"))),
        );
        let prefixes = prefixes
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, p)| (p.to_ascii_lowercase(), format!("strip_prefixes[{i}]")))
            .collect();
        Self { exact, prefixes }
    }

    /// The config key of the first rule that removes `name`, if any.
    pub fn rule_for(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.exact
            .iter()
            .find(|(n, _)| *n == name)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| name.starts_with(p.as_str()))
            })
            .map(|(_, rule)| rule.as_str())
    }

    /// Whether `name` must be removed from a client request.
    pub fn strips(&self, name: &str) -> bool {
        self.rule_for(name).is_some()
    }

    /// The distinct names among `names` to remove (removing a name removes all its values).
    pub fn to_remove<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !n.starts_with(':') && self.strips(n))
            .map(str::to_ascii_lowercase)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn rules(trust: bool) -> StripRules {
        StripRules::new(
            &HeaderNames::default(),
            &["x-internal-secret".to_owned()],
            &["x-palisade-".to_owned(), "x-debug-".to_owned()],
            trust,
        )
    }

    #[test]
    fn removes_gateway_only_headers() {
        let r = rules(false);
        for name in [
            "x-gateway-token",
            "x-palisade-key-id",
            "x-palisade-flag",
            "x-request-id",
            "x-internal-secret",
            "x-palisade-anything-else",
            "x-debug-mode",
            "X-Gateway-Token",
        ] {
            assert!(r.strips(name), "{name} should be stripped");
        }
        for name in [
            "x-api-key",
            "user-agent",
            "x-palisade",
            "x-debugger",
            "accept",
        ] {
            assert!(!r.strips(name), "{name} should be kept");
        }
    }

    #[test]
    fn trusted_request_id_is_kept() {
        assert!(!rules(true).strips("x-request-id"));
        assert!(rules(true).strips("x-gateway-token"));
    }

    #[test]
    fn to_remove_dedupes_and_skips_pseudo_headers() {
        let r = rules(false);
        let names = [
            ":path",
            "x-gateway-token",
            "x-gateway-token",
            "x-palisade-a",
            "accept",
            "x-request-id",
        ];
        assert_eq!(
            r.to_remove(names),
            vec!["x-gateway-token", "x-palisade-a", "x-request-id"]
        );
    }

    #[test]
    fn rule_names_the_config_key() {
        let r = rules(false);
        assert_eq!(r.rule_for("x-palisade-key-id"), Some("headers.key_id"));
        assert_eq!(r.rule_for("x-debug-x"), Some("strip_prefixes[1]"));
        assert_eq!(r.rule_for("x-internal-secret"), Some("strip_headers[0]"));
    }
}
