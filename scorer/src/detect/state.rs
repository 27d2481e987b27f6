//! Per-key detection state in Redis, so a restarted scorer, or another replica, carries on
//! with a key's profile instead of starting it afresh. The thin I/O adapter around the
//! detector's synchronous core ([`Detector::export_state`] / [`Detector::import_state`] and
//! the bytes of [`super::snapshot`]).
//!
//! - **Key**: `<prefix>{rl:<key id>}:profile`, the hash tag of the key's rate-limit windows
//!   (`limiter/redis.rs`), so a key's windows and its profile share one cluster slot. A window
//!   key always ends in `:<window ms>:<l|c>`, so the two never collide.
//! - **Read-through**: on a key's first sight the engine asks for its snapshot in the same
//!   round trip as the rate-limit script (a `GET` pipelined behind the `EVALSHA`), and
//!   installs it before the detection step. No extra round trip, and no wait beyond the
//!   limiter's own timeout.
//! - **Write-behind**: each time a key is scored its snapshot is queued (bounded: a full
//!   queue drops it, counted, and never blocks a Check); one task writes what is queued in
//!   batches, one pipeline per batch (`SET .. PX detect.idle_ms`), keeping only the newest
//!   snapshot of a key. It has its own connection, so a large batch never delays a Check's
//!   script on the limiter's connection.
//! - **Failure**: a load that fails (Redis down or slow, breaker open, an error reply) leaves
//!   the key to start fresh in memory, counted. Its writes are then held back, so a fresh
//!   state never overwrites the stored profile, and its load is retried at most every
//!   [`RETRY_AFTER`]. A snapshot that does not decode, is of another version or holds
//!   implausible values is counted as rejected; the key starts fresh and its next write
//!   replaces it.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::detector::{Detector, StateSink};
use crate::limiter::{
    Fetched,
    redis::{RedisStore, RedisStoreError},
};

/// How long a key whose load failed waits before its load is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Snapshots written per pipeline at most: small, because Redis runs one client's pipelined
/// commands back to back, and Checks' scripts from the limiter's connection wait behind them.
pub const BATCH: usize = 32;
/// Keys remembered as failed at most (beyond it, a failed key is not held back).
const MAX_FAILED: usize = 65_536;
/// Longest wait for one batch to be written (the writer has its own connection).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis key of `key_id`'s snapshot under `prefix`.
pub fn key(prefix: &str, key_id: &str) -> String {
    format!("{prefix}{{rl:{key_id}}}:profile")
}

/// Labels of `palisade_detect_state_loads_total` and `_writes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// loads: hit, miss, failed, rejected; writes: written, failed, held.
    pub result: String,
}

/// `palisade_detect_state_*`.
#[derive(Debug, Clone)]
pub struct StateMetrics {
    loads: Family<ResultLabels, Counter>,
    writes: Family<ResultLabels, Counter>,
    /// Snapshots found and valid: installed, or left out because the key got state in
    /// memory meanwhile or the snapshot is older than `detect.idle_ms`.
    pub hit: Counter,
    /// No snapshot stored: the key starts fresh.
    pub miss: Counter,
    /// Redis could not answer: the key starts fresh, its writes held back until a load works.
    pub failed: Counter,
    /// A stored snapshot that did not decode, was of another version or implausible.
    pub rejected: Counter,
    /// Snapshots written.
    pub written: Counter,
    /// Snapshots whose write failed (the key's next scoring writes again).
    pub write_failed: Counter,
    /// Snapshots not queued because the key's load had failed.
    pub held: Counter,
    /// Snapshots dropped because the write queue was full.
    pub dropped: Counter,
    /// Older snapshots of a key replaced in the queue by a newer one before being written.
    pub coalesced: Counter,
    /// Bytes of snapshots written.
    pub written_bytes: Counter,
    /// Size of one snapshot, bytes.
    pub snapshot_bytes: Histogram,
}

impl Default for StateMetrics {
    fn default() -> Self {
        let loads = Family::<ResultLabels, Counter>::default();
        let writes = Family::<ResultLabels, Counter>::default();
        let get = |f: &Family<ResultLabels, Counter>, r: &str| {
            f.get_or_create(&ResultLabels {
                result: r.to_owned(),
            })
            .clone()
        };
        Self {
            hit: get(&loads, "hit"),
            miss: get(&loads, "miss"),
            failed: get(&loads, "failed"),
            rejected: get(&loads, "rejected"),
            written: get(&writes, "written"),
            write_failed: get(&writes, "failed"),
            held: get(&writes, "held"),
            loads,
            writes,
            dropped: Counter::default(),
            coalesced: Counter::default(),
            written_bytes: Counter::default(),
            snapshot_bytes: Histogram::new(exponential_buckets(256.0, 2.0, 9)),
        }
    }
}

impl StateMetrics {
    /// Registers them in `registry` (prefix `palisade_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "detect_state_loads",
            "Key-state snapshot loads from Redis by result (hit, miss, failed, rejected)",
            m.loads.clone(),
        );
        registry.register(
            "detect_state_writes",
            "Key-state snapshot writes to Redis by result (written, failed, held)",
            m.writes.clone(),
        );
        registry.register(
            "detect_state_dropped",
            "Key-state snapshots dropped because the write queue was full",
            m.dropped.clone(),
        );
        registry.register(
            "detect_state_coalesced",
            "Queued key-state snapshots replaced by a newer one of the same key",
            m.coalesced.clone(),
        );
        registry.register(
            "detect_state_written_bytes",
            "Bytes of key-state snapshots written to Redis",
            m.written_bytes.clone(),
        );
        registry.register(
            "detect_state_snapshot_bytes",
            "Size of one key-state snapshot",
            m.snapshot_bytes.clone(),
        );
        m
    }
}

type Queued = (String, Vec<u8>);

/// Key state in Redis: what to load on a key's first sight, and the write-behind queue.
#[derive(Debug)]
pub struct StateStore {
    prefix: String,
    tx: Mutex<Option<mpsc::Sender<Queued>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Keys whose last load failed, and when.
    failed: Mutex<HashMap<String, Instant>>,
    /// `failed.len()`, read without the lock on every Check.
    failing: AtomicUsize,
    metrics: StateMetrics,
}

/// A load the engine is to make for one Check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// The Redis key to `GET`.
    pub key: String,
    /// Replace the state in memory (a retry after a failed load), rather than install only
    /// when the key has none.
    pub replace: bool,
}

impl StateStore {
    /// Starts the writer on `writer` (its own connection) with snapshots expiring after
    /// `ttl_ms`, queueing at most `queue` snapshots. Call inside a Tokio runtime.
    pub fn start(
        prefix: &str,
        writer: RedisStore,
        ttl_ms: u64,
        queue: usize,
        metrics: StateMetrics,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(write_behind(rx, writer, ttl_ms.max(1), metrics.clone()));
        Arc::new(Self {
            prefix: prefix.to_owned(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(task)),
            failed: Mutex::new(HashMap::new()),
            failing: AtomicUsize::new(0),
            metrics,
        })
    }

    /// The sink to give the detector: queues each scored key's snapshot.
    pub fn sink(self: &Arc<Self>) -> StateSink {
        let this = Arc::clone(self);
        Box::new(move |key_id: &str, bytes: Vec<u8>| this.enqueue(key_id, bytes))
    }

    /// What to load for `key_id` before its detection step, if anything: its snapshot when
    /// the detector has no state for it, or again once [`RETRY_AFTER`] has passed since its
    /// load failed. Costs one shard lookup on the common path (key known, nothing failing).
    pub fn wants(&self, detector: &Detector, key_id: &str) -> Option<Load> {
        // Detection turned off by a reload keeps no state: nothing to load it into.
        if !detector.config().enabled {
            return None;
        }
        let known = detector.knows(key_id);
        let retry = self.failing.load(Ordering::Relaxed) > 0
            && self
                .failed
                .lock()
                .get(key_id)
                .is_some_and(|at| at.elapsed() >= RETRY_AFTER);
        if known && !retry {
            return None;
        }
        Some(Load {
            key: key(&self.prefix, key_id),
            replace: known,
        })
    }

    /// Installs what the load for `key_id` fetched (before its detection step), counting the
    /// result. `now_ms` is the engine clock.
    pub fn install(
        &self,
        detector: &Detector,
        key_id: &str,
        load: &Load,
        fetched: Fetched,
        now_ms: i64,
    ) {
        let bytes = match fetched {
            Fetched::Failed | Fetched::NotAsked => {
                self.metrics.failed.inc();
                self.remember_failure(key_id);
                return;
            }
            Fetched::Value(None) => {
                self.metrics.miss.inc();
                self.forget_failure(key_id);
                return;
            }
            Fetched::Value(Some(bytes)) => bytes,
        };
        self.forget_failure(key_id);
        match detector.import_state(key_id, &bytes, now_ms, load.replace) {
            Ok(_) => {
                self.metrics.hit.inc();
            }
            Err(e) => {
                self.metrics.rejected.inc();
                tracing::debug!(key_id, error = %e, "stored key state refused; starting afresh");
            }
        }
    }

    fn remember_failure(&self, key_id: &str) {
        let mut failed = self.failed.lock();
        if failed.len() >= MAX_FAILED {
            failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
        }
        if failed.len() < MAX_FAILED {
            failed.insert(key_id.to_owned(), Instant::now());
        }
        self.failing.store(failed.len(), Ordering::Relaxed);
    }

    fn forget_failure(&self, key_id: &str) {
        if self.failing.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut failed = self.failed.lock();
        failed.remove(key_id);
        self.failing.store(failed.len(), Ordering::Relaxed);
    }

    /// Queues `key_id`'s snapshot without waiting: held back while its load is failed,
    /// dropped (counted) when the queue is full or the writer stopped.
    fn enqueue(&self, key_id: &str, bytes: Vec<u8>) {
        if self.failing.load(Ordering::Relaxed) > 0 && self.failed.lock().contains_key(key_id) {
            self.metrics.held.inc();
            return;
        }
        self.metrics.snapshot_bytes.observe(bytes.len() as f64);
        let queued = self
            .tx
            .lock()
            .as_ref()
            .map(|tx| tx.try_send((key(&self.prefix, key_id), bytes)));
        if !matches!(queued, Some(Ok(()))) {
            self.metrics.dropped.inc();
        }
    }

    /// Writes what is queued (waiting at most `within`) and stops the writer; later
    /// snapshots are dropped.
    pub async fn shutdown(&self, within: Duration) {
        drop(self.tx.lock().take());
        let task = self.writer.lock().take();
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!("key-state writer did not finish in time; queued snapshots lost");
        }
    }
}

/// The writer: takes what is queued (up to [`BATCH`] keys, the newest snapshot of each) and
/// writes it in one pipeline, until the queue is closed and empty.
async fn write_behind(
    mut rx: mpsc::Receiver<Queued>,
    store: RedisStore,
    ttl_ms: u64,
    metrics: StateMetrics,
) {
    let mut batch: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some((key, bytes)) = rx.recv().await {
        batch.insert(key, bytes);
        while batch.len() < BATCH {
            let Ok((key, bytes)) = rx.try_recv() else {
                break;
            };
            if batch.insert(key, bytes).is_some() {
                metrics.coalesced.inc();
            }
        }
        let entries: Vec<Queued> = batch.drain().collect();
        let bytes: usize = entries.iter().map(|(_, b)| b.len()).sum();
        let written = tokio::time::timeout(WRITE_TIMEOUT, store.set_many(&entries, ttl_ms))
            .await
            .unwrap_or(Err(RedisStoreError::Timeout));
        match written {
            Ok(()) => {
                metrics.written.inc_by(entries.len() as u64);
                metrics.written_bytes.inc_by(bytes as u64);
            }
            Err(e) => {
                metrics.write_failed.inc_by(entries.len() as u64);
                tracing::debug!(error = %e, n = entries.len(), "key-state snapshots not written");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::RedisConfig,
        detect::{DetectConfig, DetectMetrics, Observation, features::Outcome},
    };

    #[test]
    fn the_state_key_shares_the_windows_hash_tag() {
        assert_eq!(key("palisade:", "alice"), "palisade:{rl:alice}:profile");
    }

    fn observe(d: &Arc<Detector>, key_id: &str) {
        d.observe(&Observation {
            key_id,
            tier: "free",
            now_ms: 1_000,
            path: "/a",
            query: &[],
            client_ip: "10.0.0.1",
            user_agent: "ua",
            outcome: Outcome::Allowed,
        });
    }

    /// The bookkeeping around loads, without Redis (the writer's Redis is never reached).
    #[tokio::test]
    async fn a_failed_load_is_not_retried_at_once_and_holds_writes_back() {
        let writer = RedisStore::new(&RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            ..RedisConfig::default()
        })
        .unwrap();
        let m = StateMetrics::default();
        let store = StateStore::start("p:", writer, 60_000, 8, m.clone());
        let config = DetectConfig {
            min_requests: 1,
            score_every: 1,
            ..DetectConfig::default()
        };
        let d = Arc::new(
            Detector::new(&config, DetectMetrics::default()).with_state_sink(store.sink()),
        );

        let load = store.wants(&d, "k").expect("an unknown key is loaded");
        assert_eq!(
            load,
            Load {
                key: "p:{rl:k}:profile".into(),
                replace: false
            }
        );
        store.install(&d, "k", &load, Fetched::Failed, 1_000);
        observe(&d, "k");
        assert_eq!(store.wants(&d, "k"), None, "not again before RETRY_AFTER");
        assert_eq!((m.failed.get(), m.held.get(), m.dropped.get()), (1, 1, 0));

        // A key whose load worked is written behind.
        let load = store.wants(&d, "j").unwrap();
        store.install(&d, "j", &load, Fetched::Value(None), 1_000);
        observe(&d, "j");
        assert_eq!(store.wants(&d, "j"), None);
        assert_eq!((m.miss.get(), m.held.get()), (1, 1));

        // Detection off (a reload): nothing to load.
        d.reload(&DetectConfig {
            enabled: false,
            ..config
        });
        assert_eq!(store.wants(&d, "new"), None);
        // The writer tried `j`'s snapshot (and failed: no Redis there), then stopped.
        store.shutdown(Duration::from_secs(5)).await;
        assert_eq!((m.written.get(), m.write_failed.get()), (0, 1));
    }
}
