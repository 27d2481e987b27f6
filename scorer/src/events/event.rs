//! The security event: one per request the gateway saw, built from the filter's outcome
//! report. Pure: the clock and the id come in as arguments, text is bounded and escaped here
//! so nothing downstream (spool, Postgres, a terminal) can be broken by what a client sent.

use palisade_proto::v1::{Outcome, RequestOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest stored path, in bytes (after escaping).
pub const MAX_PATH: usize = 2_048;
/// Longest stored user agent, in bytes.
pub const MAX_USER_AGENT: usize = 512;
/// Longest stored request id, reason, model version, route, in bytes.
pub const MAX_SHORT: usize = 256;
/// How far in the future a request timestamp may be before the receive time replaces it.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60_000;

/// What the gateway did with the request (the `decision` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Answered 429.
    Throttle,
    /// Answered 403.
    Block,
    /// Forwarded with a suspicion header.
    Flag,
    /// Answered 401 by the filter (no, unknown or duplicated key).
    Unauthorized,
    /// Scorer unavailable, forwarded (fail_open).
    FailOpen,
    /// Scorer unavailable, answered 503 (fail_closed).
    FailClosed,
    /// A throttle in shadow mode: forwarded.
    ShadowThrottle,
    /// A block in shadow mode: forwarded.
    ShadowBlock,
    /// An outcome this scorer does not know.
    Unspecified,
}

impl Decision {
    /// The decision of a filter outcome.
    pub fn from_outcome(outcome: i32) -> Self {
        match Outcome::try_from(outcome) {
            Ok(Outcome::Allowed) => Self::Allow,
            Ok(Outcome::Throttled) => Self::Throttle,
            Ok(Outcome::Blocked) => Self::Block,
            Ok(Outcome::Unauthorized) => Self::Unauthorized,
            Ok(Outcome::FailClosed) => Self::FailClosed,
            Ok(Outcome::FailOpen) => Self::FailOpen,
            Ok(Outcome::Flagged) => Self::Flag,
            Ok(Outcome::ShadowThrottled) => Self::ShadowThrottle,
            Ok(Outcome::ShadowBlocked) => Self::ShadowBlock,
            _ => Self::Unspecified,
        }
    }

    /// The value stored in the `decision` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Throttle => "THROTTLE",
            Self::Block => "BLOCK",
            Self::Flag => "FLAG",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::FailOpen => "FAIL_OPEN",
            Self::FailClosed => "FAIL_CLOSED",
            Self::ShadowThrottle => "SHADOW_THROTTLE",
            Self::ShadowBlock => "SHADOW_BLOCK",
            Self::Unspecified => "UNSPECIFIED",
        }
    }
}

/// One security event, as spooled (NDJSON) and stored (one `events` row).
/// Empty strings and zero latencies mean "absent" and are stored as NULL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7 whose timestamp is `time_ms`; generated once, so replays are idempotent.
    pub event_id: Uuid,
    /// When the request headers arrived (Envoy's clock), ms since the Unix epoch.
    pub time_ms: i64,
    /// When the scorer received the report, ms since the Unix epoch.
    pub received_ms: i64,
    /// X-Request-ID.
    pub request_id: String,
    /// The filter's key id (never the raw key); empty when not authenticated.
    pub key_id: String,
    /// Tenant of the key.
    pub tenant: String,
    /// Tier of the key.
    pub tier: String,
    /// Client address; empty when absent or not an IP address.
    pub client_ip: String,
    /// HTTP method.
    pub method: String,
    /// Path without the query string, bounded and escaped.
    pub path: String,
    /// Envoy's route name, else the path with id-like segments replaced by `:id`.
    pub route: String,
    /// User agent, bounded and escaped.
    pub user_agent: String,
    /// What the gateway did.
    pub decision: Decision,
    /// Machine-readable reason.
    pub reason: String,
    /// Final HTTP status.
    pub status: u16,
    /// Anomaly score in (0, 1]; 0 when not scored.
    pub anomaly_score: f64,
    /// Model version behind the score.
    pub model_version: String,
    /// Time the gateway spent before forwarding or answering, µs.
    pub gateway_latency_us: u64,
    /// Forwarding to the upstream's response headers, µs; 0 when not forwarded.
    pub upstream_latency_us: u64,
    /// The backend's own processing time (Server-Timing), µs; 0 when not reported.
    pub backend_latency_us: u64,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

/// Rules applied to client-controlled text before it is stored.
#[derive(Debug, Clone, Default)]
pub struct Sanitizer {
    /// Tokens starting with one of these (e.g. `pk_`) are API-key shaped and replaced by
    /// `<prefix>[redacted]`, in case a client put its key where the gateway logs text.
    pub redact_prefixes: Vec<String>,
}

impl Sanitizer {
    /// A sanitizer redacting tokens with these prefixes.
    pub fn new(redact_prefixes: Vec<String>) -> Self {
        Self { redact_prefixes }
    }

    /// The event of one outcome. `received_ms` is the scorer's clock; `random` seeds the
    /// id's random bits (the caller's RNG, so tests are deterministic).
    pub fn event(&self, o: &RequestOutcome, received_ms: i64, random: u128) -> Event {
        let time_ms = if o.timestamp_ms <= 0 || o.timestamp_ms > received_ms + MAX_CLOCK_SKEW_MS {
            received_ms
        } else {
            o.timestamp_ms
        };
        let path = self.text(&o.path, MAX_PATH);
        let route = if o.route.is_empty() {
            route_of(&path)
        } else {
            self.text(&o.route, MAX_SHORT)
        };
        let client_ip = if o.client_ip.parse::<std::net::IpAddr>().is_ok() {
            o.client_ip.clone()
        } else {
            String::new()
        };
        Event {
            event_id: uuid_v7(time_ms, random),
            time_ms,
            received_ms,
            request_id: self.text(&o.request_id, MAX_SHORT),
            key_id: self.text(&o.key_id, MAX_SHORT),
            tenant: self.text(&o.tenant, MAX_SHORT),
            tier: self.text(&o.tier, MAX_SHORT),
            client_ip,
            method: self.text(&o.method, 32),
            path,
            route,
            user_agent: self.text(&o.user_agent, MAX_USER_AGENT),
            decision: Decision::from_outcome(o.outcome),
            reason: self.text(&o.reason, MAX_SHORT),
            status: u16::try_from(o.status).unwrap_or(0),
            anomaly_score: if o.anomaly_score.is_finite() {
                o.anomaly_score.clamp(0.0, 1.0)
            } else {
                0.0
            },
            model_version: self.text(&o.model_version, MAX_SHORT),
            gateway_latency_us: o.gateway_latency_us.min(i64::MAX as u64),
            upstream_latency_us: o.upstream_latency_us.min(i64::MAX as u64),
            backend_latency_us: o.backend_latency_us.min(i64::MAX as u64),
            request_bytes: o.request_bytes.min(i64::MAX as u64),
            response_bytes: o.response_bytes.min(i64::MAX as u64),
        }
    }

    /// `s` with key-shaped tokens redacted, escaped, and cut to at most `max` bytes.
    pub fn text(&self, s: &str, max: usize) -> String {
        let redacted = redact(s, &self.redact_prefixes);
        bounded(&escape(&redacted), max)
    }
}

/// A UUIDv7 for `time_ms` with the low bits of `random`.
fn uuid_v7(time_ms: i64, random: u128) -> Uuid {
    let ms = time_ms.max(0) as u128 & ((1 << 48) - 1);
    let rand_a = (random >> 64) & 0xfff;
    let rand_b = random & ((1 << 62) - 1);
    let v = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
    Uuid::from_u128(v)
}

/// Control characters (C0, DEL, C1) and backslashes as `\xNN` / `\u{NN}` / `\\`: NUL would
/// make Postgres reject the row, the others could forge lines in a terminal or a log.
pub fn escape(s: &str) -> String {
    if !s.chars().any(|c| c == '\\' || c.is_control()) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut at a char boundary to at most `max` bytes; a cut string ends in `…`.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].to_owned();
    out.push('…');
    out
}

/// Replaces every token that starts with one of `prefixes` at a word boundary and goes on
/// with at least four key characters by `<prefix>[redacted]`.
pub fn redact(s: &str, prefixes: &[String]) -> String {
    let is_key_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let bytes = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || !is_key_char(bytes[i - 1]);
        let hit = at_boundary
            .then(|| {
                prefixes
                    .iter()
                    .find(|p| !p.is_empty() && bytes[i..].starts_with(p.as_bytes()))
            })
            .flatten();
        if let Some(p) = hit {
            let tail = bytes[i + p.len()..]
                .iter()
                .take_while(|&&b| is_key_char(b))
                .count();
            if tail >= 4 {
                out.push_str(&s[copied..i]);
                out.push_str(p);
                out.push_str("[redacted]");
                i += p.len() + tail;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return s.to_owned();
    }
    out.push_str(&s[copied..]);
    out
}

/// The path with segments that look like ids (digits, UUIDs, long hex) replaced by `:id`.
pub fn route_of(path: &str) -> String {
    let looks_like_id = |seg: &str| {
        !seg.is_empty()
            && (seg.bytes().all(|b| b.is_ascii_digit())
                || (seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')))
    };
    path.split('/')
        .map(|seg| if looks_like_id(seg) { ":id" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> RequestOutcome {
        RequestOutcome {
            request_id: "r-1".into(),
            key_id: "alice".into(),
            method: "GET".into(),
            path: "/api/users/42".into(),
            client_ip: "10.0.0.7".into(),
            outcome: Outcome::Blocked as i32,
            status: 403,
            timestamp_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn builds_an_event_with_a_v7_id_of_its_time() {
        let e = Sanitizer::default().event(&outcome(), 1_700_000_000_500, 7);
        assert_eq!(e.decision, Decision::Block);
        assert_eq!(e.route, "/api/users/:id");
        assert_eq!(e.event_id.get_version_num(), 7);
        let (secs, nanos) = e.event_id.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs * 1000 + u64::from(nanos) / 1_000_000,
            1_700_000_000_000
        );
        assert_ne!(
            e.event_id,
            Sanitizer::default()
                .event(&outcome(), 1_700_000_000_500, 8)
                .event_id
        );
    }

    #[test]
    fn future_or_missing_timestamps_take_the_receive_time() {
        let s = Sanitizer::default();
        let mut o = outcome();
        o.timestamp_ms = 0;
        assert_eq!(s.event(&o, 5_000, 1).time_ms, 5_000);
        o.timestamp_ms = 5_000 + MAX_CLOCK_SKEW_MS + 1;
        assert_eq!(s.event(&o, 5_000, 1).time_ms, 5_000);
    }

    #[test]
    fn escapes_bounds_and_redacts_client_text() {
        let s = Sanitizer::new(vec!["pk_".into()]);
        assert_eq!(s.text("a\0b\nc\\d\u{85}", 100), "a\\x00b\\x0ac\\\\d\\u{85}");
        let long = "é".repeat(5_000);
        let cut = s.text(&long, MAX_PATH);
        assert!(cut.len() <= MAX_PATH && cut.ends_with('…'));
        assert_eq!(
            s.text("/x/pk_live_SECRET123?k=pk_ab", 100),
            "/x/pk_[redacted]?k=pk_ab"
        );
        assert_eq!(s.text("curl pk_demo_alice", 100), "curl pk_[redacted]");
        assert_eq!(s.text("xpk_demo_alice", 100), "xpk_demo_alice");
    }

    #[test]
    fn bad_addresses_and_scores_are_dropped_not_stored() {
        let mut o = outcome();
        o.client_ip = "not an ip".into();
        o.anomaly_score = f64::NAN;
        o.status = 70_000;
        let e = Sanitizer::default().event(&o, 1_700_000_000_000, 1);
        assert_eq!(e.client_ip, "");
        assert_eq!(e.anomaly_score, 0.0);
        assert_eq!(e.status, 0);
    }
}
