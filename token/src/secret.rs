//! Key material parsing shared by [`Pepper`](crate::Pepper),
//! [`TokenKey`](crate::TokenKey) and [`KeyDigest`](crate::KeyDigest).
//!
//! Errors here never carry the offending input: a typo in a hex secret would otherwise put
//! (part of) the secret into a log line.

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

/// A problem with key material or a key digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key has fewer bytes than its type requires.
    #[error("key too short: need at least {min} bytes, got {actual}")]
    TooShort {
        /// Minimum length in bytes.
        min: usize,
        /// Length supplied, in bytes.
        actual: usize,
    },
    /// The text is not an even number of hex digits. The decoder's own error is dropped on
    /// purpose: it names the offending character, which is part of the secret.
    #[error("key is not valid hex (expected an even number of 0-9a-fA-F characters)")]
    InvalidHex,
    /// A [`KeyDigest`](crate::KeyDigest) must be exactly 32 bytes (64 hex digits).
    #[error("key digest must be exactly 64 hex characters")]
    InvalidDigest,
    /// A [`Verifier`](crate::Verifier) needs at least one key.
    #[error("at least one token key is required")]
    NoKeys,
}

/// Decodes hex key material. Whitespace is not trimmed: callers reading files trim lines.
pub(crate) fn decode_hex(s: &str) -> Result<Vec<u8>, KeyError> {
    hex::decode(s).map_err(|_| KeyError::InvalidHex)
}

/// Builds a keyed HMAC-SHA256 after checking the minimum length. Keeping the keyed state
/// (rather than the raw bytes) lets signing clone a ready MAC instead of re-keying, and
/// makes every later MAC computation infallible.
pub(crate) fn keyed_mac(bytes: &[u8], min: usize) -> Result<Hmac<Sha256>, KeyError> {
    if bytes.len() < min {
        return Err(KeyError::TooShort {
            min,
            actual: bytes.len(),
        });
    }
    // HMAC accepts keys of any length, so this cannot fail; map it anyway rather than unwrap.
    Hmac::<Sha256>::new_from_slice(bytes).map_err(|_| KeyError::TooShort {
        min,
        actual: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_errors_do_not_echo_input() {
        let err = decode_hex("zz-secret-zz").unwrap_err();
        assert_eq!(err, KeyError::InvalidHex);
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn odd_length_hex_is_rejected() {
        assert_eq!(decode_hex("abc"), Err(KeyError::InvalidHex));
    }

    #[test]
    fn short_keys_are_rejected() {
        assert_eq!(
            keyed_mac(&[0u8; 15], 16).err(),
            Some(KeyError::TooShort {
                min: 16,
                actual: 15
            })
        );
        assert!(keyed_mac(&[0u8; 16], 16).is_ok());
    }
}
