//! One generated request, labelled with the scenario that produced it.

/// How a request reaches the system under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// Through the gateway with a valid key: a keyed `Check`.
    Keyed,
    /// Through the gateway with a wrong key: an unauthenticated `Check` on the client IP.
    WrongKey {
        /// The (wrong) key presented, for the via-Envoy driver.
        presented: String,
    },
    /// Straight to the backend, around the gateway.
    Direct {
        /// The `X-Gateway-Token` sent, if any (always forged).
        token: Option<String>,
    },
}

/// A generated request. Everything the gateway or the backend would see, plus the labels the
/// report needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    /// Simulated wall clock, ms since the Unix epoch.
    pub ts_ms: i64,
    /// The scenario that produced it (`normal_interactive`, `scraper`, ...).
    pub scenario: &'static str,
    /// Whether the scenario is an attack (normal populations: false).
    pub attack_scenario: bool,
    /// Whether this request is part of the attack itself (an attacker key's normal phase and
    /// a stolen key's owner are not).
    pub malicious: bool,
    /// The actor that produced it: requests of one actor are in time order.
    pub actor: u32,
    /// Key id (empty for wrong-key and direct requests).
    pub key_id: String,
    /// Tenant of the key.
    pub tenant: String,
    /// Tier of the key (empty for wrong-key and direct requests).
    pub tier: &'static str,
    /// Client address.
    pub client_ip: String,
    /// User agent.
    pub user_agent: String,
    /// HTTP method.
    pub method: &'static str,
    /// Path without the query string.
    pub path: String,
    /// Query parameters in order.
    pub query: Vec<(String, String)>,
    /// The status the backend would answer if the gateway lets it through.
    pub status: u16,
    /// How it is sent.
    pub channel: Channel,
}

impl SimRequest {
    /// The subject whose requests must stay in order: the key, else the client address.
    pub fn order_key(&self) -> &str {
        if self.key_id.is_empty() {
            &self.client_ip
        } else {
            &self.key_id
        }
    }

    /// Path and query as one request target.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        format!("{}?{}", self.path, q.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
