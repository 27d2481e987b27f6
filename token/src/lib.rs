//! Gateway tokens, API-key hashing and replay protection for Palisade.
//!
//! The gateway (the proxy-wasm filter) signs every request it forwards with a short-lived
//! HMAC token bound to the request id, method and path; the protected backend verifies it
//! and accepts each request id once. The wire format is specified in
//! `docs/gateway-token.md`, which also carries a test vector for other-language
//! implementations.
//!
//! This crate is compiled into the `wasm32-wasip1` filter as well as into native services,
//! so it is pure computation: no I/O, no clock, no randomness, and no panics outside tests.
//! Time comes in as Unix seconds.
//!
//! ```
//! use palisade_token::{Claims, ReplayGuard, TokenKey, Verifier, DEFAULT_MAX_SKEW_SECS, sign};
//!
//! let key = TokenKey::from_hex(&"2f".repeat(32))?;
//! let now = 1_700_000_000;
//! let claims = Claims { timestamp: now, request_id: "req-1", method: "GET", path: "/api/health", key_id: "k1" };
//! let token = sign(&key, &claims)?;
//!
//! let verifier = Verifier::new(vec![key], DEFAULT_MAX_SKEW_SECS)?;
//! let mut replay = ReplayGuard::new(1_000, DEFAULT_MAX_SKEW_SECS);
//! let ok = verifier.verify(&token, "req-1", "GET", "/api/health", now + 2)?;
//! replay.check_and_insert("req-1", ok.timestamp, now + 2)?;
//! assert!(replay.check_and_insert("req-1", ok.timestamp, now + 3).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - [`secret`]: [`KeyError`] and the hex/length checks shared by all key material.
//! - [`key_hash`]: [`Pepper`] and [`KeyDigest`], the peppered HMAC-SHA256 of a raw API key,
//!   so API keys are stored and compared only as digests, in constant time.
//! - [`token`]: the v1 gateway token: [`TokenKey`], [`Claims`], [`sign`], and the
//!   [`Verifier`] that checks format, clock skew and signature under every configured key
//!   (current plus previous, for rotation).
//! - [`replay`]: [`ReplayGuard`], a bounded, fail-closed memory of request ids already
//!   accepted within their token's validity window.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod key_hash;
pub mod replay;
pub mod secret;
pub mod token;

pub use key_hash::{KeyDigest, Pepper, hash_api_key};
pub use replay::{ReplayError, ReplayGuard};
pub use secret::KeyError;
pub use token::{
    Claims, DEFAULT_MAX_SKEW_SECS, TOKEN_VERSION, TokenError, TokenKey, VerifiedToken, Verifier,
    sign,
};
