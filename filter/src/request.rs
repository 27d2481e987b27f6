//! What the filter knows about a request once its headers arrived: the header list as
//! Envoy delivered it, and the facts extracted from it for the scorer, the gateway token and
//! the outcome report.

use crate::query;

/// Longest `User-Agent` sent to the scorer.
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// The client's request headers (names lowercase, duplicates kept, values raw bytes).
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders(pub Vec<(String, Vec<u8>)>);

impl RequestHeaders {
    /// Every value of `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of `name`, as text (invalid UTF-8 replaced).
    pub fn text(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// The header names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
}

/// Facts about one request, gathered in `on_http_request_headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The id the gateway forwards.
    pub request_id: String,
    /// `:method`.
    pub method: String,
    /// `:path` as Envoy forwards it (normalised), query included.
    pub full_path: String,
    /// `:path` up to the `?`.
    pub path: String,
    /// Client IP without port; empty when Envoy's `source.address` is not an IP.
    pub client_ip: String,
    /// `User-Agent`, at most [`MAX_USER_AGENT_BYTES`].
    pub user_agent: String,
    /// When the headers arrived, nanoseconds since the Unix epoch.
    pub started_nanos: u64,
}

impl RequestFacts {
    /// Extracts the facts from the (pre-strip) header list.
    pub fn new(
        headers: &RequestHeaders,
        request_id: String,
        client_ip: String,
        started_nanos: u64,
    ) -> Self {
        let full_path = headers.text(":path");
        let path = query::split_path(&full_path).0.to_owned();
        let (user_agent, _) = query::bounded(headers.text("user-agent"), MAX_USER_AGENT_BYTES);
        Self {
            request_id,
            method: headers.text(":method"),
            full_path,
            path,
            client_ip,
            user_agent,
            started_nanos,
        }
    }

    /// When the headers arrived, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        i64::try_from(self.started_nanos / 1_000_000).unwrap_or(i64::MAX)
    }

    /// The raw query string, if any.
    pub fn raw_query(&self) -> Option<&str> {
        query::split_path(&self.full_path).1
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn headers(list: &[(&str, &[u8])]) -> RequestHeaders {
        RequestHeaders(
            list.iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
        )
    }

    #[test]
    fn facts_from_headers() {
        let long_ua = "u".repeat(600);
        let h = headers(&[
            (":method", b"GET"),
            (":path", b"/v1/items?id=7&x"),
            ("user-agent", long_ua.as_bytes()),
        ]);
        let f = RequestFacts::new(
            &h,
            "rid".into(),
            "10.0.0.1".into(),
            1_700_000_000_123_456_789,
        );
        assert_eq!(f.method, "GET");
        assert_eq!(f.path, "/v1/items");
        assert_eq!(f.full_path, "/v1/items?id=7&x");
        assert_eq!(f.raw_query(), Some("id=7&x"));
        assert_eq!(f.user_agent.len(), MAX_USER_AGENT_BYTES);
        assert_eq!(f.timestamp_ms(), 1_700_000_000_123);
    }

    #[test]
    fn values_are_all_collected_and_non_utf8_survives() {
        let h = headers(&[
            ("x-api-key", b"a"),
            ("X-Api-Key", b"b"),
            ("user-agent", b"\xffbot"),
        ]);
        assert_eq!(
            h.values("x-api-key"),
            vec![b"a".as_slice(), b"b".as_slice()]
        );
        assert_eq!(h.text("user-agent"), "\u{fffd}bot");
        assert_eq!(h.text("missing"), "");
    }
}
