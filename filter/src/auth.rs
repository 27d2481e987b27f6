//! API-key authentication: the table of known keys (stored only as peppered digests) and
//! the rule that exactly one non-empty key must be presented.

use std::collections::HashMap;
use std::fmt;

use palisade_token::{KeyDigest, Pepper, hash_api_key};

/// One configured API key.
#[derive(Clone)]
pub struct KeyEntry {
    /// HMAC-SHA256(pepper, raw key).
    pub digest: KeyDigest,
    /// Stable id sent to the scorer and the backend instead of the key.
    pub key_id: String,
    /// Tenant the key belongs to.
    pub tenant: String,
    /// Pricing / rate-limit tier of the key.
    pub tier: String,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key_id", &self.key_id)
            .field("tenant", &self.tenant)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

/// Who a request authenticated as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Key id.
    pub key_id: String,
    /// Tenant.
    pub tenant: String,
    /// Tier.
    pub tier: String,
}

impl From<&KeyEntry> for Identity {
    fn from(e: &KeyEntry) -> Self {
        Self {
            key_id: e.key_id.clone(),
            tenant: e.tenant.clone(),
            tier: e.tier.clone(),
        }
    }
}

/// Why a request did not authenticate. Every variant is answered with the same 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No API-key header.
    #[error("missing_api_key")]
    Missing,
    /// More than one API-key header.
    #[error("duplicate_api_key")]
    Duplicate,
    /// An empty API-key header.
    #[error("empty_api_key")]
    Empty,
    /// A key whose digest is not in the table.
    #[error("unknown_api_key")]
    Unknown,
}

impl AuthError {
    /// Short machine-readable reason, for outcome reports.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing_api_key",
            Self::Duplicate => "duplicate_api_key",
            Self::Empty => "empty_api_key",
            Self::Unknown => "unknown_api_key",
        }
    }
}

/// Known keys, bucketed by the first 8 digest bytes; a hit is confirmed by a constant-time
/// comparison of the full digest.
#[derive(Clone, Default)]
pub struct KeyTable {
    buckets: HashMap<u64, Vec<KeyEntry>>,
    len: usize,
}

impl fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self
            .buckets
            .values()
            .flatten()
            .map(|e| e.key_id.as_str())
            .collect();
        ids.sort_unstable();
        f.debug_struct("KeyTable").field("key_ids", &ids).finish()
    }
}

fn bucket(digest: &KeyDigest) -> u64 {
    let b = digest.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl KeyTable {
    /// A table of `entries` (validated by the configuration: unique digests and key ids).
    pub fn new(entries: Vec<KeyEntry>) -> Self {
        let len = entries.len();
        let mut buckets: HashMap<u64, Vec<KeyEntry>> = HashMap::with_capacity(len);
        for e in entries {
            buckets.entry(bucket(&e.digest)).or_default().push(e);
        }
        Self { buckets, len }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry whose digest is `digest`.
    pub fn find(&self, digest: &KeyDigest) -> Option<&KeyEntry> {
        self.buckets
            .get(&bucket(digest))?
            .iter()
            .find(|e| e.digest.ct_eq(digest))
    }

    /// Authenticates the values of every API-key header the client sent: exactly one,
    /// non-empty, known.
    pub fn authenticate(&self, pepper: &Pepper, values: &[&[u8]]) -> Result<&KeyEntry, AuthError> {
        let raw = match values {
            [] => return Err(AuthError::Missing),
            [one] => *one,
            _ => return Err(AuthError::Duplicate),
        };
        if raw.is_empty() {
            return Err(AuthError::Empty);
        }
        self.find(&hash_api_key(pepper, raw))
            .ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::test_support::{digest_hex, pepper};

    fn table() -> KeyTable {
        KeyTable::new(
            ["alice", "bob", "carol"]
                .into_iter()
                .map(|id| KeyEntry {
                    digest: KeyDigest::from_hex(&digest_hex(&format!("{id}-key"))).unwrap(),
                    key_id: id.into(),
                    tenant: "demo".into(),
                    tier: "standard".into(),
                })
                .collect(),
        )
    }

    #[test]
    fn known_key_authenticates() {
        let t = table();
        let e = t.authenticate(&pepper(), &[b"bob-key"]).unwrap();
        assert_eq!(e.key_id, "bob");
        assert_eq!(Identity::from(e).tenant, "demo");
    }

    #[test]
    fn missing_duplicate_empty_unknown_are_refused() {
        let t = table();
        let p = pepper();
        assert_eq!(t.authenticate(&p, &[]).unwrap_err(), AuthError::Missing);
        assert_eq!(
            t.authenticate(&p, &[b"bob-key", b"bob-key"]).unwrap_err(),
            AuthError::Duplicate
        );
        assert_eq!(t.authenticate(&p, &[b""]).unwrap_err(), AuthError::Empty);
        assert_eq!(
            t.authenticate(&p, &[b"bob-kez"]).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            t.authenticate(&p, &[b"BOB-KEY"]).unwrap_err(),
            AuthError::Unknown
        );
    }

    #[test]
    fn bucket_collisions_are_resolved_by_the_full_digest() {
        let mut a = [7u8; 32];
        let mut b = [7u8; 32];
        a[31] = 1;
        b[31] = 2;
        let entry = |d: [u8; 32], id: &str| KeyEntry {
            digest: KeyDigest::from(d),
            key_id: id.into(),
            tenant: String::new(),
            tier: String::new(),
        };
        let t = KeyTable::new(vec![entry(a, "a"), entry(b, "b")]);
        assert_eq!(t.buckets.len(), 1);
        assert_eq!(t.find(&KeyDigest::from(b)).unwrap().key_id, "b");
        assert_eq!(t.find(&KeyDigest::from(a)).unwrap().key_id, "a");
        let mut c = a;
        c[31] = 3;
        assert!(t.find(&KeyDigest::from(c)).is_none());
    }

    #[test]
    fn debug_shows_ids_not_digests() {
        let t = table();
        let shown = format!("{t:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains(&digest_hex("alice-key")[..16]));
    }
}
