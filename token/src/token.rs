//! The v1 gateway token: `v1.<timestamp>.<key_id>.<signature>`.
//!
//! The gateway signs `(timestamp, request id, method, path, key id)` with HMAC-SHA256 and
//! sends the result in `X-Gateway-Token`; the backend recomputes it under every configured
//! key. The canonical string and the exact verification order are specified in
//! `docs/gateway-token.md`; the `test_vector` test below pins both.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::secret::{KeyError, decode_hex, keyed_mac};

/// The only token version this crate produces and accepts.
pub const TOKEN_VERSION: &str = "v1";

/// Default allowed difference, in seconds, between a token's timestamp and the verifier's clock.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;

/// Minimum token key length in bytes.
pub const MIN_TOKEN_KEY_LEN: usize = 32;

/// Domain-separation prefix of the canonical string, so a token MAC can never be confused
/// with another HMAC computed under the same key.
const DOMAIN: &str = "palisade-gateway-token";

/// Longer than any valid v1 token (2 + 1 + 20 + 1 + 64 + 1 + 43 = 132 bytes); bounds the
/// work done on hostile input before anything else is looked at.
const MAX_TOKEN_LEN: usize = 256;

/// Length of an unpadded base64url encoding of 32 bytes.
const SIGNATURE_B64_LEN: usize = 43;

const MAX_REQUEST_ID_LEN: usize = 128;
const MAX_METHOD_LEN: usize = 32;
const MAX_PATH_LEN: usize = 8192;
const MAX_KEY_ID_LEN: usize = 64;

/// Why a token could not be signed or was rejected. Messages never include the token or keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `v1.<timestamp>.<key_id>.<signature>` with well-formed parts.
    #[error("malformed token")]
    Malformed,
    /// A well-formed version tag other than `v1`.
    #[error("unsupported token version")]
    UnsupportedVersion,
    /// A bound request field (`request_id`, `method`, `path`) or, when signing, the `key_id`
    /// is outside its allowed syntax.
    #[error("invalid {0}")]
    InvalidField(&'static str),
    /// The token timestamp is more than the allowed skew in the past.
    #[error("token expired")]
    Expired,
    /// The token timestamp is more than the allowed skew in the future.
    #[error("token timestamp is too far in the future")]
    FromFuture,
    /// The signature matches none of the configured keys.
    #[error("bad token signature")]
    BadSignature,
}

/// A token signing key (at least [`MIN_TOKEN_KEY_LEN`] random bytes). `Debug` is redacted.
#[derive(Clone)]
pub struct TokenKey(Hmac<Sha256>);

impl TokenKey {
    /// Builds a key from at least [`MIN_TOKEN_KEY_LEN`] secret bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        keyed_mac(b, MIN_TOKEN_KEY_LEN).map(Self)
    }

    /// Builds a key from hex (as found in configuration).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_hex(s)?)
    }

    /// HMAC-SHA256 of the canonical string. Fields must already be validated.
    fn tag(
        &self,
        timestamp: &str,
        request_id: &str,
        method: &str,
        path: &str,
        key_id: &str,
    ) -> [u8; 32] {
        let mut mac = self.0.clone();
        // Feeding the pieces in order is byte-for-byte the canonical string, without building it.
        for (i, part) in [
            DOMAIN,
            TOKEN_VERSION,
            timestamp,
            request_id,
            method,
            path,
            key_id,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// What a token binds: when it was issued, which request it is for, and which key signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims<'a> {
    /// Issue time, Unix seconds.
    pub timestamp: u64,
    /// The `X-Request-ID` the gateway forwards: 1..=128 visible ASCII characters.
    pub request_id: &'a str,
    /// HTTP method: 1..=32 uppercase ASCII letters.
    pub method: &'a str,
    /// The full `:path` (query included) as forwarded: starts with `/`, 1..=8192 bytes, no
    /// control characters.
    pub path: &'a str,
    /// Id of the API key the gateway authenticated (never the raw key): `[A-Za-z0-9_-]{1,64}`.
    pub key_id: &'a str,
}

/// Signs the claims, returning the `X-Gateway-Token` header value.
pub fn sign(key: &TokenKey, claims: &Claims<'_>) -> Result<String, TokenError> {
    validate_bindings(claims.request_id, claims.method, claims.path)?;
    if !is_valid_key_id(claims.key_id) {
        return Err(TokenError::InvalidField("key_id"));
    }
    let timestamp = claims.timestamp.to_string();
    let tag = key.tag(
        &timestamp,
        claims.request_id,
        claims.method,
        claims.path,
        claims.key_id,
    );
    Ok(format!(
        "{TOKEN_VERSION}.{timestamp}.{}.{}",
        claims.key_id,
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// A token that passed [`Verifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Issue time, Unix seconds (feed it to [`ReplayGuard`](crate::ReplayGuard)).
    pub timestamp: u64,
    /// The key id the token named. It is only a label: the signature was checked under every
    /// configured key, whichever this names.
    pub key_id: String,
}

/// Verifies tokens against one or more keys (current plus previous, during rotation).
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<TokenKey>,
    max_skew_secs: u64,
}

impl Verifier {
    /// A verifier accepting tokens signed by any of `keys` whose timestamp is within
    /// `max_skew_secs` of the verifier's clock. Needs at least one key.
    pub fn new(keys: Vec<TokenKey>, max_skew_secs: u64) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self {
            keys,
            max_skew_secs,
        })
    }

    /// The configured maximum clock skew, in seconds.
    pub fn max_skew_secs(&self) -> u64 {
        self.max_skew_secs
    }

    /// Checks `token` for the request `(request_id, method, path)` at `now_secs`.
    ///
    /// In order: strict parse, request-field validation, clock skew, then the signature under
    /// every key (all keys are always tried and the results combined in constant time).
    /// Replay is not checked here: pair this with a [`ReplayGuard`](crate::ReplayGuard).
    pub fn verify(
        &self,
        token: &str,
        request_id: &str,
        method: &str,
        path: &str,
        now_secs: u64,
    ) -> Result<VerifiedToken, TokenError> {
        let parsed = parse(token)?;
        validate_bindings(request_id, method, path)?;
        if now_secs >= parsed.timestamp {
            if now_secs - parsed.timestamp > self.max_skew_secs {
                return Err(TokenError::Expired);
            }
        } else if parsed.timestamp - now_secs > self.max_skew_secs {
            return Err(TokenError::FromFuture);
        }
        let mut matched = Choice::from(0);
        for key in &self.keys {
            let tag = key.tag(
                parsed.timestamp_str,
                request_id,
                method,
                path,
                parsed.key_id,
            );
            matched |= tag.ct_eq(&parsed.signature);
        }
        if bool::from(matched) {
            Ok(VerifiedToken {
                timestamp: parsed.timestamp,
                key_id: parsed.key_id.to_owned(),
            })
        } else {
            Err(TokenError::BadSignature)
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("max_skew_secs", &self.max_skew_secs)
            .finish()
    }
}

/// The pieces of a syntactically valid token.
struct Parsed<'t> {
    timestamp: u64,
    /// Exactly as sent; the parse guarantees it is the canonical decimal of `timestamp`.
    timestamp_str: &'t str,
    key_id: &'t str,
    signature: [u8; 32],
}

fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (version, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if version != TOKEN_VERSION {
        return Err(if is_version_tag(version) {
            TokenError::UnsupportedVersion
        } else {
            TokenError::Malformed
        });
    }
    let mut parts = rest.split('.');
    let (Some(timestamp_str), Some(key_id), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let timestamp = parse_timestamp(timestamp_str).ok_or(TokenError::Malformed)?;
    if !is_valid_key_id(key_id) {
        return Err(TokenError::Malformed);
    }
    Ok(Parsed {
        timestamp,
        timestamp_str,
        key_id,
        signature: decode_signature(signature).ok_or(TokenError::Malformed)?,
    })
}

/// `v` followed by 1..=5 digits: something a future version could be.
fn is_version_tag(s: &str) -> bool {
    s.strip_prefix('v')
        .is_some_and(|n| (1..=5).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Canonical decimal only (no sign, no leading zeros except "0" itself), so each timestamp
/// has exactly one encoding and the signed string is the sent string.
fn parse_timestamp(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Unpadded base64url of exactly 32 bytes. The engine rejects padding and non-zero trailing
/// bits, so each signature has exactly one accepted encoding.
fn decode_signature(s: &str) -> Option<[u8; 32]> {
    if s.len() != SIGNATURE_B64_LEN {
        return None;
    }
    URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()
}

fn validate_bindings(request_id: &str, method: &str, path: &str) -> Result<(), TokenError> {
    if !is_valid_request_id(request_id) {
        return Err(TokenError::InvalidField("request_id"));
    }
    if !is_valid_method(method) {
        return Err(TokenError::InvalidField("method"));
    }
    if !is_valid_path(path) {
        return Err(TokenError::InvalidField("path"));
    }
    Ok(())
}

fn is_valid_request_id(s: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn is_valid_method(s: &str) -> bool {
    (1..=MAX_METHOD_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase())
}

fn is_valid_path(s: &str) -> bool {
    (1..=MAX_PATH_LEN).contains(&s.len())
        && s.starts_with('/')
        && s.bytes().all(|b| b >= 0x20 && b != 0x7f)
}

fn is_valid_key_id(s: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;
    const RID: &str = "9b2f6c1e-4a7d-4e0b-8c3f-2d5a6b7c8d90";
    const PATH: &str = "/api/users/42?expand=orders";

    fn key(byte: u8) -> TokenKey {
        TokenKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn claims(timestamp: u64) -> Claims<'static> {
        Claims {
            timestamp,
            request_id: RID,
            method: "GET",
            path: PATH,
            key_id: "k1",
        }
    }

    fn verifier(keys: &[u8]) -> Verifier {
        Verifier::new(
            keys.iter().map(|&b| key(b)).collect(),
            DEFAULT_MAX_SKEW_SECS,
        )
        .unwrap()
    }

    fn token() -> String {
        sign(&key(1), &claims(NOW)).unwrap()
    }

    /// The vector published in docs/gateway-token.md. If this changes, the wire format changed.
    #[test]
    fn test_vector() {
        let key_bytes: Vec<u8> = (0u8..32).collect();
        assert_eq!(
            hex::encode(&key_bytes),
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        let key = TokenKey::from_hex(&hex::encode(&key_bytes)).unwrap();
        let claims = Claims {
            timestamp: 1_700_000_000,
            request_id: "9b2f6c1e-4a7d-4e0b-8c3f-2d5a6b7c8d90",
            method: "GET",
            path: "/api/users/42?expand=orders",
            key_id: "k2024-01",
        };
        let token = sign(&key, &claims).unwrap();
        assert_eq!(
            token,
            "v1.1700000000.k2024-01.2s-wuazyVUF1CIKG78PRbrK0Pqv7esAHR6UTu1YCitI"
        );
        // The canonical string and raw MAC, as printed in the spec.
        let canonical = "palisade-gateway-token\nv1\n1700000000\n9b2f6c1e-4a7d-4e0b-8c3f-2d5a6b7c8d90\nGET\n/api/users/42?expand=orders\nk2024-01";
        assert_eq!(canonical.len(), 114);
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key_bytes).unwrap();
        mac.update(canonical.as_bytes());
        let raw: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(
            hex::encode(raw),
            "dacfb0b9acf2554175088286efc3d16eb2b43eabfb7ac00747a513bb56028ad2"
        );
        assert!(token.ends_with(&URL_SAFE_NO_PAD.encode(raw)));
        let verified = Verifier::new(vec![key], DEFAULT_MAX_SKEW_SECS)
            .unwrap()
            .verify(&token, claims.request_id, "GET", claims.path, 1_700_000_100)
            .unwrap();
        assert_eq!(verified.timestamp, 1_700_000_000);
        assert_eq!(verified.key_id, "k2024-01");
    }

    #[test]
    fn round_trip() {
        let v = verifier(&[1])
            .verify(&token(), RID, "GET", PATH, NOW)
            .unwrap();
        assert_eq!(
            v,
            VerifiedToken {
                timestamp: NOW,
                key_id: "k1".into()
            }
        );
    }

    #[test]
    fn token_shape() {
        let t = token();
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "v1");
        assert_eq!(parts[1], NOW.to_string());
        assert_eq!(parts[2], "k1");
        assert_eq!(parts[3].len(), SIGNATURE_B64_LEN);
    }

    #[test]
    fn forged_with_wrong_key() {
        let forged = sign(&key(2), &claims(NOW)).unwrap();
        assert_eq!(
            verifier(&[1]).verify(&forged, RID, "GET", PATH, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_bindings_fail() {
        let v = verifier(&[1]);
        let t = token();
        let bad = Err(TokenError::BadSignature);
        assert_eq!(
            v.verify(&t, RID, "GET", "/api/users/43?expand=orders", NOW),
            bad
        );
        assert_eq!(v.verify(&t, RID, "GET", "/api/users/42", NOW), bad);
        assert_eq!(v.verify(&t, RID, "POST", PATH, NOW), bad);
        assert_eq!(v.verify(&t, "other-request", "GET", PATH, NOW), bad);
    }

    #[test]
    fn tampered_key_id_and_timestamp_fail() {
        let v = verifier(&[1]);
        let t = token();
        let sig = t.rsplit('.').next().unwrap();
        let other_kid = format!("v1.{NOW}.k2.{sig}");
        assert_eq!(
            v.verify(&other_kid, RID, "GET", PATH, NOW),
            Err(TokenError::BadSignature)
        );
        let other_ts = format!("v1.{}.k1.{sig}", NOW - 1);
        assert_eq!(
            v.verify(&other_ts, RID, "GET", PATH, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn skew_window_is_inclusive() {
        let v = verifier(&[1]);
        let t = token();
        assert!(
            v.verify(&t, RID, "GET", PATH, NOW + DEFAULT_MAX_SKEW_SECS)
                .is_ok()
        );
        assert!(
            v.verify(&t, RID, "GET", PATH, NOW - DEFAULT_MAX_SKEW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn expired() {
        let now = NOW + DEFAULT_MAX_SKEW_SECS + 1;
        assert_eq!(
            verifier(&[1]).verify(&token(), RID, "GET", PATH, now),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn from_the_future() {
        let now = NOW - DEFAULT_MAX_SKEW_SECS - 1;
        assert_eq!(
            verifier(&[1]).verify(&token(), RID, "GET", PATH, now),
            Err(TokenError::FromFuture)
        );
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let v = verifier(&[1]);
        let max = sign(&key(1), &claims(u64::MAX)).unwrap();
        assert_eq!(
            v.verify(&max, RID, "GET", PATH, 0),
            Err(TokenError::FromFuture)
        );
        assert!(v.verify(&max, RID, "GET", PATH, u64::MAX).is_ok());
        let zero = sign(&key(1), &claims(0)).unwrap();
        assert!(zero.starts_with("v1.0.k1."));
        assert_eq!(
            v.verify(&zero, RID, "GET", PATH, u64::MAX),
            Err(TokenError::Expired)
        );
        assert!(v.verify(&zero, RID, "GET", PATH, 0).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let v = verifier(&[1]);
        let t = token();
        let sig = t.rsplit('.').next().unwrap().to_owned();
        let cases = [
            String::new(),
            "v1".into(),
            format!("v1.{NOW}.k1"),
            format!("v1.{NOW}.k1.{sig}."),
            format!("v1.{NOW}.k1.{sig}.extra"),
            format!("v1..k1.{sig}"),
            format!("v1.{NOW}..{sig}"),
            format!("v1.{NOW}.k1."),
            format!("v1.abc.k1.{sig}"),
            format!("v1.-1.k1.{sig}"),
            format!("v1.+{NOW}.k1.{sig}"),
            format!("v1.0{NOW}.k1.{sig}"),
            format!("v1.99999999999999999999.k1.{sig}"),
            format!("v1.{NOW}.k!1.{sig}"),
            format!("v1.{NOW}.{}.{sig}", "k".repeat(65)),
            format!("v1.{NOW}.k1.{}", &sig[..42]),
            format!("v1.{NOW}.k1.{sig}A"),
            format!("v1.{NOW}.k1.{sig}="),
            format!("v1.{NOW}.k1.{}", sig.replace(|_: char| true, "*")),
            format!("v1.{NOW}.k1.{}", URL_SAFE_NO_PAD.encode([0u8; 31])),
            format!("v1.{NOW}.k1.{}", URL_SAFE_NO_PAD.encode([0u8; 33])),
            format!("V1.{NOW}.k1.{sig}"),
            format!("garbage.{NOW}.k1.{sig}"),
            format!(" v1.{NOW}.k1.{sig}"),
            format!("v1.{NOW}.k1.{sig} "),
            "x".repeat(10_000),
        ];
        for case in cases {
            assert_eq!(
                v.verify(&case, RID, "GET", PATH, NOW),
                Err(TokenError::Malformed),
                "{case:?}"
            );
        }
    }

    #[test]
    fn standard_base64_alphabet_is_rejected() {
        // Find a signature using a url-safe-only character and swap in its standard twin.
        let v = verifier(&[1]);
        let (ts, head, sig) = (NOW..NOW + 200)
            .find_map(|ts| {
                let t = sign(&key(1), &claims(ts)).unwrap();
                let (head, sig) = t.rsplit_once('.').unwrap();
                sig.contains(['-', '_'])
                    .then(|| (ts, head.to_owned(), sig.to_owned()))
            })
            .expect("a signature with - or _ within 200 tries");
        let standard = format!("{head}.{}", sig.replace('-', "+").replace('_', "/"));
        assert_eq!(
            v.verify(&standard, RID, "GET", PATH, ts),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn unsupported_version() {
        let v = verifier(&[1]);
        let t = token();
        for version in ["v0", "v2", "v10"] {
            let other = t.replacen("v1", version, 1);
            assert_eq!(
                v.verify(&other, RID, "GET", PATH, NOW),
                Err(TokenError::UnsupportedVersion)
            );
        }
        assert_eq!(
            v.verify("v2.anything", RID, "GET", PATH, NOW),
            Err(TokenError::UnsupportedVersion)
        );
    }

    #[test]
    fn rotation_accepts_every_listed_key() {
        let old = sign(&key(1), &claims(NOW)).unwrap();
        let new = sign(
            &key(2),
            &Claims {
                key_id: "k2",
                ..claims(NOW)
            },
        )
        .unwrap();
        let both = verifier(&[2, 1]);
        assert_eq!(
            both.verify(&old, RID, "GET", PATH, NOW).unwrap().key_id,
            "k1"
        );
        assert_eq!(
            both.verify(&new, RID, "GET", PATH, NOW).unwrap().key_id,
            "k2"
        );
        let retired = verifier(&[2]);
        assert_eq!(
            retired.verify(&old, RID, "GET", PATH, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn verifier_needs_a_key() {
        assert!(matches!(
            Verifier::new(Vec::new(), 300),
            Err(KeyError::NoKeys)
        ));
    }

    #[test]
    fn sign_validates_fields() {
        let k = key(1);
        let c = claims(NOW);
        let cases: [(Claims<'_>, &str); 15] = [
            (
                Claims {
                    request_id: "",
                    ..c
                },
                "request_id",
            ),
            (
                Claims {
                    request_id: "has space",
                    ..c
                },
                "request_id",
            ),
            (
                Claims {
                    request_id: "tab\t",
                    ..c
                },
                "request_id",
            ),
            (
                Claims {
                    request_id: "caf\u{e9}",
                    ..c
                },
                "request_id",
            ),
            (
                Claims {
                    request_id: &"r".repeat(129),
                    ..c
                },
                "request_id",
            ),
            (Claims { method: "", ..c }, "method"),
            (Claims { method: "get", ..c }, "method"),
            (
                Claims {
                    method: "M-SEARCH",
                    ..c
                },
                "method",
            ),
            (
                Claims {
                    method: &"G".repeat(33),
                    ..c
                },
                "method",
            ),
            (Claims { path: "", ..c }, "path"),
            (
                Claims {
                    path: "api/users",
                    ..c
                },
                "path",
            ),
            (Claims { path: "/a\nb", ..c }, "path"),
            (
                Claims {
                    path: "/a\u{7f}",
                    ..c
                },
                "path",
            ),
            (
                Claims {
                    path: &format!("/{}", "a".repeat(8192)),
                    ..c
                },
                "path",
            ),
            (Claims { key_id: "k.1", ..c }, "key_id"),
        ];
        for (bad, field) in cases {
            assert_eq!(
                sign(&k, &bad),
                Err(TokenError::InvalidField(field)),
                "{bad:?}"
            );
        }
        assert!(
            sign(
                &k,
                &Claims {
                    request_id: &"r".repeat(128),
                    ..c
                }
            )
            .is_ok()
        );
        assert!(
            sign(
                &k,
                &Claims {
                    path: &format!("/{}", "a".repeat(8191)),
                    ..c
                }
            )
            .is_ok()
        );
        assert!(
            sign(
                &k,
                &Claims {
                    key_id: &"K_-9".repeat(16),
                    ..c
                }
            )
            .is_ok()
        );
        assert!(
            sign(
                &k,
                &Claims {
                    key_id: &"k".repeat(65),
                    ..c
                }
            )
            .is_err()
        );
    }

    #[test]
    fn verify_validates_bindings() {
        let v = verifier(&[1]);
        let t = token();
        assert_eq!(
            v.verify(&t, "bad id", "GET", PATH, NOW),
            Err(TokenError::InvalidField("request_id"))
        );
        assert_eq!(
            v.verify(&t, RID, "get", PATH, NOW),
            Err(TokenError::InvalidField("method"))
        );
        assert_eq!(
            v.verify(&t, RID, "GET", "/x\r\n", NOW),
            Err(TokenError::InvalidField("path"))
        );
    }

    #[test]
    fn key_length_is_enforced() {
        assert!(matches!(
            TokenKey::from_bytes(&[0; 31]),
            Err(KeyError::TooShort {
                min: 32,
                actual: 31
            })
        ));
        assert!(TokenKey::from_hex(&"00".repeat(32)).is_ok());
        assert!(matches!(
            TokenKey::from_hex(&"0".repeat(63)),
            Err(KeyError::InvalidHex)
        ));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = TokenKey::from_hex(&"a7".repeat(32)).unwrap();
        let v = Verifier::new(vec![k.clone(), k.clone()], 60).unwrap();
        let shown = format!("{k:?} {k:#?} {v:?} {v:#?}");
        assert!(shown.contains("TokenKey(<redacted>)"));
        assert!(shown.contains("<2 redacted>"));
        assert!(!shown.to_lowercase().contains("a7"));
        assert!(!shown.contains("167")); // 0xa7 as decimal
    }

    #[test]
    fn errors_never_mention_the_token() {
        let v = verifier(&[2]);
        let t = token();
        let sig = t.rsplit('.').next().unwrap();
        for err in [
            v.verify(&t, RID, "GET", PATH, NOW).unwrap_err(),
            v.verify(&t[..t.len() - 1], RID, "GET", PATH, NOW)
                .unwrap_err(),
        ] {
            assert!(!err.to_string().contains(sig));
            assert!(!err.to_string().contains(&sig[..8]));
        }
    }

    proptest! {
        #[test]
        fn any_single_byte_change_fails(idx in any::<prop::sample::Index>(), c in any::<char>()) {
            let t = token();
            let i = idx.index(t.len());
            let original = char::from(t.as_bytes()[i]);
            prop_assume!(c != original);
            let mut changed = String::with_capacity(t.len() + 4);
            changed.push_str(&t[..i]);
            changed.push(c);
            changed.push_str(&t[i + 1..]);
            prop_assert!(verifier(&[1]).verify(&changed, RID, "GET", PATH, NOW).is_err());
        }

        #[test]
        fn deleting_a_byte_fails(idx in any::<prop::sample::Index>()) {
            let mut t = token();
            t.remove(idx.index(t.len()));
            prop_assert!(verifier(&[1]).verify(&t, RID, "GET", PATH, NOW).is_err());
        }

        #[test]
        fn valid_claims_round_trip(
            timestamp in any::<u64>(),
            request_id in "[!-~]{1,128}",
            method in "[A-Z]{1,32}",
            path in "/[ -~]{0,200}",
            key_id in "[A-Za-z0-9_-]{1,64}",
        ) {
            let claims = Claims { timestamp, request_id: &request_id, method: &method, path: &path, key_id: &key_id };
            let t = sign(&key(9), &claims).unwrap();
            let v = Verifier::new(vec![key(8), key(9)], 0).unwrap();
            let ok = v.verify(&t, &request_id, &method, &path, timestamp).unwrap();
            prop_assert_eq!(ok.timestamp, timestamp);
            prop_assert_eq!(ok.key_id, key_id);
        }

        #[test]
        fn arbitrary_input_never_verifies(s in ".{0,300}") {
            prop_assert!(verifier(&[1]).verify(&s, RID, "GET", PATH, NOW).is_err());
        }
    }
}
