//! Palisade's proxy-wasm filter for Envoy.
//!
//! For every request: remove the headers only the gateway may set, assign a request id,
//! authenticate the API key against a table of peppered digests (never failing open), get a
//! verdict for the request, and enforce it: forward with a signed gateway token, or answer
//! 401 / 403 / 429 / 503 from the gateway. When the stream ends, its outcome is queued and
//! sent to the scorer in batches, off the request path.
//!
//! Verdicts come from the scorer's `Check` RPC today. The decision policy does not care where
//! a verdict comes from, so a local fast path (leased quotas, cached verdicts) can slot in
//! next to [`check`] without touching [`decision`].
//!
//! # Layout
//!
//! - [`root`]: the root context: configuration, counters, the outcome-report tick.
//! - [`http`]: the HTTP context: the per-request flow above, as Envoy callbacks.
//! - [`host`]: the only code that calls Envoy, behind the small [`host::Host`] trait; every
//!   other module is plain Rust, unit-tested natively against an in-memory host.
//! - [`config`]: the plugin configuration: parse, defaults, validation naming every bad key.
//! - [`strip`]: which client headers are removed before anything else.
//! - [`request_id`]: UUIDv4 request ids, their fallback, and when a client's id is trusted.
//! - [`request`]: the facts about a request taken from its headers.
//! - [`auth`]: the API-key table and the exactly-one-known-key rule.
//! - [`peer`]: the client IP from Envoy's `source.address`.
//! - [`query`]: path/query split, percent-decoding and bounding of query parameters.
//! - [`verdict`]: the filter's own verdict type and scorer failures.
//! - [`check`]: the gRPC verdict source: `CheckRequest` out, `Verdict` in.
//! - [`decision`]: verdict (or failure) + configuration → forward or local response.
//! - [`metrics`]: the `palisade_*` counters.
//! - [`report`]: the bounded outcome queue behind `Scorer.Report`.
//!
//! The filter never panics on purpose: a panic traps the V8 VM and every later request on
//! that worker fails. `unwrap`, `expect` and `panic!` are denied outside tests; every host
//! call's failure has an explicit effect on the request.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod check;
pub mod config;
pub mod decision;
pub mod host;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod query;
pub mod report;
pub mod request;
pub mod request_id;
pub mod root;
pub mod server_timing;
pub mod strip;
pub mod verdict;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    host::install_logging();
    proxy_wasm::set_root_context(|_context_id| Box::new(root::Root::new(host::Envoy)));
}}

#[cfg(test)]
mod test_support {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    //! Shared fixtures for the unit tests.

    use palisade_token::{Pepper, hash_api_key};

    use crate::config::Config;

    /// 16-byte pepper.
    pub const PEPPER_HEX: &str = "00112233445566778899aabbccddeeff";
    /// 32-byte token key.
    pub const TOKEN_KEY_HEX: &str =
        "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

    /// The test pepper.
    pub fn pepper() -> Pepper {
        Pepper::from_hex(PEPPER_HEX).unwrap()
    }

    /// Digest of `raw` under the test pepper, as configured.
    pub fn digest_hex(raw: &str) -> String {
        hash_api_key(&pepper(), raw.as_bytes()).to_hex()
    }

    /// A valid configuration: keys `alice-key` (alice/demo/standard) and `bob-key`
    /// (bob/acme/free).
    pub fn config_json() -> serde_json::Value {
        serde_json::json!({
            "pepper": { "hex": PEPPER_HEX },
            "token_key": { "hex": TOKEN_KEY_HEX },
            "keys": [
                { "digest": digest_hex("alice-key"), "key_id": "alice", "tenant": "demo", "tier": "standard" },
                { "digest": digest_hex("bob-key"), "key_id": "bob", "tenant": "acme", "tier": "free" }
            ]
        })
    }

    /// [`config_json`] parsed, with `patch` merged in at the top level.
    pub fn config_with(patch: serde_json::Value) -> Config {
        let mut json = config_json();
        if let (Some(obj), Some(patch)) = (json.as_object_mut(), patch.as_object()) {
            for (k, v) in patch {
                obj.insert(k.clone(), v.clone());
            }
        }
        Config::parse(json.to_string().as_bytes(), &|_| None).unwrap()
    }
}
