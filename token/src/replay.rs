//! Replay protection: each request id is accepted once while its token could still verify.
//!
//! A token verifies while `|now - timestamp| <= max_skew`, so a request id has to be
//! remembered until `timestamp + max_skew` (inclusive); build the guard with
//! `ttl_secs >= max_skew`. After that the verifier itself rejects the token as expired and the
//! entry can go.
//!
//! The guard is bounded. When it is full of live entries it refuses new ones
//! ([`ReplayError::Full`]) rather than evicting a live entry, which would reopen a replay
//! window: under a flood the backend fails closed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Why a request id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The id was already accepted and its token is still within its validity window.
    #[error("request id already used")]
    Replayed,
    /// Every slot holds a live entry; nothing can be admitted until some expire.
    #[error("replay store is full")]
    Full,
}

/// A bounded set of recently accepted request ids, each kept until its token expires.
///
/// Lookups go through a hash map; expiry goes through buckets keyed by expiry second, oldest
/// first. Each entry is inserted and evicted once (amortised O(1)), plus a lookup among the
/// live buckets, of which there are at most `2 * ttl + 1` for verified tokens whatever the
/// number of entries.
pub struct ReplayGuard {
    capacity: usize,
    ttl_secs: u64,
    expiry_of: HashMap<Box<str>, u64>,
    by_expiry: BTreeMap<u64, Vec<Box<str>>>,
}

impl ReplayGuard {
    /// A guard holding at most `capacity` ids, each until its token timestamp + `ttl_secs`.
    /// Memory grows with use, not up front.
    pub fn new(capacity: usize, ttl_secs: u64) -> Self {
        Self {
            capacity,
            ttl_secs,
            expiry_of: HashMap::new(),
            by_expiry: BTreeMap::new(),
        }
    }

    /// Records `request_id` (whose verified token carries `token_ts`) as used at `now_secs`.
    ///
    /// Evicts expired entries first, then: [`ReplayError::Replayed`] if the id is live,
    /// [`ReplayError::Full`] if every slot is live. An id whose window has already closed
    /// (`token_ts + ttl < now`) is not stored: no token for it can verify any more.
    pub fn check_and_insert(
        &mut self,
        request_id: &str,
        token_ts: u64,
        now_secs: u64,
    ) -> Result<(), ReplayError> {
        self.evict_expired(now_secs);
        if self.expiry_of.contains_key(request_id) {
            return Err(ReplayError::Replayed);
        }
        let expires_at = token_ts.saturating_add(self.ttl_secs);
        if expires_at < now_secs {
            return Ok(());
        }
        if self.expiry_of.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let id: Box<str> = request_id.into();
        self.by_expiry
            .entry(expires_at)
            .or_default()
            .push(id.clone());
        self.expiry_of.insert(id, expires_at);
        Ok(())
    }

    /// Number of remembered ids (live ones, plus expired ones not yet evicted).
    pub fn len(&self) -> usize {
        self.expiry_of.len()
    }

    /// Whether no ids are remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry_of.is_empty()
    }

    /// Maximum number of ids held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drops every entry whose window closed before `now_secs`.
    fn evict_expired(&mut self, now_secs: u64) {
        while let Some(bucket) = self.by_expiry.first_entry() {
            if *bucket.key() >= now_secs {
                break;
            }
            let (expires_at, ids) = bucket.remove_entry();
            for id in ids {
                if self.expiry_of.get(&id) == Some(&expires_at) {
                    self.expiry_of.remove(&id);
                }
            }
        }
    }
}

impl fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: u64 = 1_700_000_000;

    #[test]
    fn replay_is_rejected() {
        let mut g = ReplayGuard::new(10, 300);
        assert_eq!(g.check_and_insert("a", T, T), Ok(()));
        assert_eq!(
            g.check_and_insert("a", T, T + 1),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.check_and_insert("b", T, T + 1), Ok(()));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn entry_lives_through_its_last_second() {
        let mut g = ReplayGuard::new(10, 300);
        g.check_and_insert("a", T, T).unwrap();
        assert_eq!(
            g.check_and_insert("a", T, T + 300),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.check_and_insert("a", T, T + 301), Ok(()));
    }

    #[test]
    fn expired_entries_are_evicted_and_ids_reusable() {
        let mut g = ReplayGuard::new(10, 60);
        g.check_and_insert("a", T, T).unwrap();
        g.check_and_insert("b", T + 30, T + 30).unwrap();
        assert_eq!(g.len(), 2);
        // "a" expires after T + 60, "b" after T + 90.
        g.check_and_insert("c", T + 61, T + 61).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.check_and_insert("a", T + 61, T + 61), Ok(()));
        assert_eq!(
            g.check_and_insert("b", T + 61, T + 61),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn future_token_is_kept_until_its_own_expiry() {
        // Order of arrival is not order of expiry: a token from the future outlives later ones.
        let mut g = ReplayGuard::new(10, 300);
        g.check_and_insert("future", T + 300, T).unwrap();
        g.check_and_insert("past", T - 300, T).unwrap();
        assert_eq!(g.check_and_insert("x", T + 1, T + 1), Ok(()));
        assert_eq!(g.len(), 2, "past expired at T, future lives to T + 600");
        assert_eq!(
            g.check_and_insert("future", T + 300, T + 600),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn full_of_live_entries_fails_closed() {
        let mut g = ReplayGuard::new(2, 300);
        g.check_and_insert("a", T, T).unwrap();
        g.check_and_insert("b", T, T).unwrap();
        assert_eq!(g.check_and_insert("c", T, T + 1), Err(ReplayError::Full));
        // A replay is still reported as a replay, not as Full.
        assert_eq!(
            g.check_and_insert("a", T, T + 1),
            Err(ReplayError::Replayed)
        );
        // Nothing live was evicted to make room.
        assert_eq!(
            g.check_and_insert("b", T, T + 300),
            Err(ReplayError::Replayed)
        );
        // Once they expire there is room again.
        assert_eq!(g.check_and_insert("c", T + 301, T + 301), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn zero_capacity_admits_nothing_live() {
        let mut g = ReplayGuard::new(0, 300);
        assert_eq!(g.check_and_insert("a", T, T), Err(ReplayError::Full));
        assert!(g.is_empty());
    }

    #[test]
    fn already_closed_window_is_not_stored() {
        let mut g = ReplayGuard::new(1, 300);
        assert_eq!(g.check_and_insert("old", T - 301, T), Ok(()));
        assert!(g.is_empty());
        assert_eq!(g.check_and_insert("new", T, T), Ok(()));
    }

    #[test]
    fn saturating_expiry() {
        let mut g = ReplayGuard::new(4, 300);
        g.check_and_insert("max", u64::MAX, u64::MAX).unwrap();
        assert_eq!(
            g.check_and_insert("max", u64::MAX, u64::MAX),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn debug_shows_sizes_only() {
        let mut g = ReplayGuard::new(4, 300);
        g.check_and_insert("secret-looking-id", T, T).unwrap();
        let shown = format!("{g:?}");
        assert!(shown.contains("len: 1"));
        assert!(!shown.contains("secret-looking-id"));
    }

    #[derive(Debug, Clone)]
    struct Op {
        id: u8,
        ts_offset: i64,
        advance: u64,
    }

    fn op() -> impl Strategy<Value = Op> {
        (0u8..12, -20i64..=20, 0u64..8).prop_map(|(id, ts_offset, advance)| Op {
            id,
            ts_offset,
            advance,
        })
    }

    proptest! {
        /// Against a naive model: same answers, never more than `capacity` entries.
        #[test]
        fn matches_naive_model(ops in prop::collection::vec(op(), 1..200), capacity in 0usize..8) {
            let ttl = 20;
            let mut now = T;
            let mut guard = ReplayGuard::new(capacity, ttl);
            let mut model: Vec<(u8, u64)> = Vec::new();
            for op in ops {
                now += op.advance;
                let ts = now.saturating_add_signed(op.ts_offset);
                model.retain(|&(_, exp)| exp >= now);
                let expected = if model.iter().any(|&(id, _)| id == op.id) {
                    Err(ReplayError::Replayed)
                } else if ts + ttl < now {
                    Ok(())
                } else if model.len() >= capacity {
                    Err(ReplayError::Full)
                } else {
                    model.push((op.id, ts + ttl));
                    Ok(())
                };
                let got = guard.check_and_insert(&op.id.to_string(), ts, now);
                prop_assert_eq!(got, expected);
                prop_assert_eq!(guard.len(), model.len());
                prop_assert!(guard.len() <= capacity);
            }
        }
    }
}
