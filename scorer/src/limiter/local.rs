//! The in-process limiter: per-subject window state in sharded maps.
//!
//! It is exact for one scorer process. With several replicas each keeps its own windows, so
//! the effective limit becomes `limit x replicas`; the Redis store is the shared one.
//!
//! Time per subject never runs backwards: a timestamp older than the subject's last one is
//! treated as that last one, so out-of-order arrivals from several Envoy workers are safe.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;

use super::{
    Outcome, Policy, WindowState,
    window::{check_all, combine_indexed},
};

const SHARDS: usize = 64;

#[derive(Debug)]
struct Subject {
    /// The policy the state was built for; a different one (after a reload) starts afresh.
    policy: Arc<Policy>,
    windows: Vec<WindowState>,
    last_ms: u64,
}

/// In-process sliding windows for any number of subjects.
#[derive(Debug)]
pub struct LocalLimiter {
    shards: Box<[Mutex<HashMap<String, Subject>>]>,
    hasher: RandomState,
    newest_ms: AtomicU64,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            newest_ms: AtomicU64::new(0),
        }
    }

    fn shard(&self, subject: &str) -> &Mutex<HashMap<String, Subject>> {
        &self.shards[self.shard_index(subject)]
    }

    fn shard_index(&self, entry: &str) -> usize {
        (self.hasher.hash_one(entry) as usize) % SHARDS
    }

    /// [`check`](Self::check) against every window of several policies of `subject` at once:
    /// counted in all of them only when all admit. Returns the outcome and the index of the
    /// policy owning the reported window. Each (subject, policy) pair keeps its own state, so
    /// a tier's windows are shared by every route of the key.
    pub fn check_many(
        &self,
        subject: &str,
        policies: &[&Arc<Policy>],
        now_ms: u64,
    ) -> (Outcome, usize) {
        if let [policy] = policies {
            let entry = format!("{subject}\u{0}{}", policy.name);
            return (self.check(&entry, policy, now_ms), 0);
        }
        self.newest_ms.fetch_max(now_ms, Ordering::Relaxed);
        let entries: Vec<String> = policies
            .iter()
            .map(|p| format!("{subject}\u{0}{}", p.name))
            .collect();
        // Lock every shard involved, in index order (no deadlock with other callers).
        let mut shard_ids: Vec<usize> = entries.iter().map(|e| self.shard_index(e)).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        let mut guards: Vec<_> = shard_ids
            .iter()
            .map(|&i| (i, self.shards[i].lock()))
            .collect();
        let mut now = now_ms;
        let mut specs = Vec::new();
        let mut peeks = Vec::new();
        for (entry, policy) in entries.iter().zip(policies) {
            let Some(map) = guards
                .iter_mut()
                .find(|(g, _)| *g == self.shard_index(entry))
                .map(|(_, m)| &mut **m)
            else {
                continue;
            };
            if let Some(state) = fresh_entry(map, entry, policy) {
                now = now.max(state.last_ms);
            }
        }
        for (entry, policy) in entries.iter().zip(policies) {
            let Some(state) = guards
                .iter_mut()
                .find(|(g, _)| *g == self.shard_index(entry))
                .and_then(|(_, m)| m.get_mut(entry.as_str()))
            else {
                continue;
            };
            for (spec, window) in policy.windows.iter().zip(state.windows.iter_mut()) {
                specs.push(*spec);
                peeks.push(window.peek(spec, now));
            }
        }
        let (outcome, window) = combine_indexed(&specs, &peeks);
        for entry in &entries {
            if let Some(state) = guards
                .iter_mut()
                .find(|(g, _)| *g == self.shard_index(entry))
                .and_then(|(_, m)| m.get_mut(entry.as_str()))
            {
                state.last_ms = now;
                if outcome.admitted {
                    for w in state.windows.iter_mut() {
                        w.record(now);
                    }
                }
            }
        }
        let refs: Vec<&Policy> = policies.iter().map(|p| &***p).collect();
        (outcome, super::redis::owner(&refs, window))
    }

    /// Checks `subject` (a key id, or `ip:<addr>`) against `policy` at `now_ms`, counting the
    /// request in every window when all admit it.
    pub fn check(&self, subject: &str, policy: &Arc<Policy>, now_ms: u64) -> Outcome {
        self.newest_ms.fetch_max(now_ms, Ordering::Relaxed);
        let mut shard = self.shard(subject).lock();
        let Some(entry) = fresh_entry(&mut shard, subject, policy) else {
            // Inserted above under the same lock; kept total rather than panicking.
            let mut windows: Vec<_> = policy.windows.iter().map(WindowState::new).collect();
            return check_all(&policy.windows, &mut windows, now_ms);
        };
        let now = now_ms.max(entry.last_ms);
        entry.last_ms = now;
        check_all(&policy.windows, &mut entry.windows, now)
    }

    /// Forgets subjects idle for longer than their policy's longest window, measured against
    /// the newest timestamp seen. Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let newest = self.newest_ms.load(Ordering::Relaxed);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, s| s.last_ms + s.policy.longest_window_ms() > newest);
            removed += before - map.len();
        }
        removed
    }

    /// Subjects currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when no subject is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entry `key`, created afresh when missing or built for another policy (a reload).
/// The key is copied only when an entry is created, not on every request. `None` cannot
/// happen (the entry is inserted under the caller's lock); callers stay total anyway.
fn fresh_entry<'a>(
    map: &'a mut HashMap<String, Subject>,
    key: &str,
    policy: &Arc<Policy>,
) -> Option<&'a mut Subject> {
    let stale = map
        .get(key)
        .is_none_or(|s| !Arc::ptr_eq(&s.policy, policy) && *s.policy != **policy);
    if stale {
        let fresh = Subject {
            policy: Arc::clone(policy),
            windows: policy.windows.iter().map(WindowState::new).collect(),
            last_ms: 0,
        };
        map.insert(key.to_owned(), fresh);
    }
    map.get_mut(key)
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::{config::Algorithm, limiter::WindowSpec};

    fn policy(limit: u32, window_ms: u64) -> Arc<Policy> {
        Arc::new(Policy {
            name: "t".into(),
            windows: vec![WindowSpec {
                limit,
                window_ms,
                algorithm: Algorithm::SlidingLog,
            }],
            shadow: false,
        })
    }

    #[test]
    fn subjects_are_independent() {
        let l = LocalLimiter::new();
        let p = policy(1, 1_000);
        assert!(l.check("a", &p, 0).admitted);
        assert!(!l.check("a", &p, 1).admitted);
        assert!(l.check("b", &p, 1).admitted);
    }

    #[test]
    fn time_never_runs_backwards_per_subject() {
        let l = LocalLimiter::new();
        let p = policy(1, 1_000);
        assert!(l.check("a", &p, 5_000).admitted);
        assert!(
            !l.check("a", &p, 100).admitted,
            "an older timestamp counts as the newest"
        );
    }

    #[test]
    fn a_new_policy_starts_fresh_state() {
        let l = LocalLimiter::new();
        assert!(l.check("a", &policy(1, 1_000), 0).admitted);
        assert!(
            !l.check("a", &policy(1, 1_000), 0).admitted,
            "equal policy keeps state"
        );
        assert!(
            l.check("a", &policy(2, 1_000), 0).admitted,
            "changed policy resets"
        );
    }

    #[test]
    fn sweep_forgets_idle_subjects_only() {
        let l = LocalLimiter::new();
        let p = policy(5, 1_000);
        l.check("old", &p, 0);
        l.check("new", &p, 1_500);
        assert_eq!(l.sweep(), 1);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn several_policies_are_all_or_nothing_and_keep_their_own_state() {
        let l = LocalLimiter::new();
        let tier = policy(3, 60_000);
        let route = Arc::new(Policy {
            name: "route:login".into(),
            ..(*policy(1, 60_000)).clone()
        });
        let (o, owner) = l.check_many("k", &[&tier, &route], 0);
        assert!(o.admitted);
        assert_eq!(owner, 1, "the route's window is the tightest");
        let (o, owner) = l.check_many("k", &[&tier, &route], 1);
        assert!(!o.admitted);
        assert_eq!(owner, 1, "the route refused");
        // The refused request consumed nothing in the tier: 2 of 3 left there, for requests
        // on other routes too.
        assert!(l.check_many("k", &[&tier], 2).0.admitted);
        assert!(l.check_many("k", &[&tier], 3).0.admitted);
        assert!(!l.check_many("k", &[&tier], 4).0.admitted);
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_limit() {
        let l = Arc::new(LocalLimiter::new());
        let p = policy(1_000, 60_000);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (l, p) = (Arc::clone(&l), Arc::clone(&p));
                thread::spawn(move || (0..1_000).filter(|i| l.check("k", &p, *i).admitted).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1_000);
    }
}
