//! Peppered API-key digests.
//!
//! Raw API keys are never stored: the gateway keeps `HMAC-SHA256(pepper, raw_key)` and
//! compares digests in constant time. The pepper is a server-side secret kept apart from the
//! digest store, so a leaked digest table cannot be brute-forced offline without it.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::{KeyError, decode_hex, keyed_mac};

/// Minimum pepper length in bytes.
pub const MIN_PEPPER_LEN: usize = 16;

/// The server-side secret mixed into every API-key digest. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct Pepper(Hmac<Sha256>);

impl Pepper {
    /// Builds a pepper from at least [`MIN_PEPPER_LEN`] secret bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        keyed_mac(b, MIN_PEPPER_LEN).map(Self)
    }

    /// Builds a pepper from hex (as found in configuration).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_hex(s)?)
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// `HMAC-SHA256(pepper, raw_api_key)`: what the gateway stores and compares instead of the key.
///
/// `PartialEq` is an ordinary comparison, fine for map lookups; use [`KeyDigest::ct_eq`] when
/// comparing a digest derived from a presented key against a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::InvalidDigest)?;
        Ok(Self(out))
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl From<[u8; 32]> for KeyDigest {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// Digests a raw API key under the pepper.
#[must_use]
pub fn hash_api_key(pepper: &Pepper, raw_key: &[u8]) -> KeyDigest {
    let mut mac = pepper.0.clone();
    mac.update(raw_key);
    KeyDigest(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper(byte: u8) -> Pepper {
        Pepper::from_bytes(&[byte; 16]).unwrap()
    }

    #[test]
    fn hashing_is_deterministic() {
        let p = pepper(1);
        assert_eq!(
            hash_api_key(&p, b"pk_live_abc"),
            hash_api_key(&p, b"pk_live_abc")
        );
        assert_ne!(
            hash_api_key(&p, b"pk_live_abc"),
            hash_api_key(&p, b"pk_live_abd")
        );
    }

    #[test]
    fn different_peppers_give_different_digests() {
        assert_ne!(
            hash_api_key(&pepper(1), b"pk_live_abc"),
            hash_api_key(&pepper(2), b"pk_live_abc")
        );
    }

    #[test]
    fn matches_known_hmac_sha256() {
        // RFC 4231, test case 1.
        let p = Pepper::from_bytes(&[0x0b; 20]).unwrap();
        assert_eq!(
            hash_api_key(&p, b"Hi There").to_hex(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn ct_eq_agrees_with_eq() {
        let p = pepper(3);
        let a = hash_api_key(&p, b"one");
        let b = hash_api_key(&p, b"one");
        let c = hash_api_key(&p, b"two");
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = hash_api_key(&pepper(4), b"key");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(KeyDigest::from_hex(&hex).unwrap(), d);
        assert_eq!(KeyDigest::from_hex(&hex.to_uppercase()).unwrap(), d);
        assert_eq!(
            KeyDigest::from_hex(&hex[..62]),
            Err(KeyError::InvalidDigest)
        );
        assert_eq!(KeyDigest::from_hex("zz"), Err(KeyError::InvalidDigest));
    }

    #[test]
    fn pepper_requires_16_bytes() {
        assert!(matches!(
            Pepper::from_bytes(&[7; 15]),
            Err(KeyError::TooShort {
                min: 16,
                actual: 15
            })
        ));
        assert!(Pepper::from_hex(&"ab".repeat(16)).is_ok());
        assert!(matches!(Pepper::from_hex("abc"), Err(KeyError::InvalidHex)));
    }

    #[test]
    fn debug_is_redacted() {
        let p = Pepper::from_hex(&"5a".repeat(16)).unwrap();
        let shown = format!("{p:?} {p:#?}");
        assert!(shown.contains("Pepper(<redacted>)"));
        assert!(!shown.to_lowercase().contains("5a"));
        assert!(!shown.contains("90")); // 0x5a as decimal
    }
}
