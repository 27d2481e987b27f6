//! The detection step of a Check: per-key features updated in place, a key rescored now and
//! then with the model in use, a decaying risk, and the graduated verdict. Training runs off
//! the request path on a blocking thread and swaps the model atomically; a drift gate holds a
//! retrain whose baseline moved too far.
//!
//! Cost on the Check path: one `observe` of the key's features (under one shard's lock) on
//! every request; a feature vector and one forest score every `score_every` requests or
//! `score_interval_ms`; an explanation only when the score crosses the flag threshold. The
//! bench `detect_check` in `benches/forest.rs` measures it.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use ndarray::Array2;
use palisade_proto::v1::Decision;
use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::verdict;

use super::{
    config::{DetectConfig, TrainingConfig},
    features::{self, Event, FEATURE_NAMES, KeyFeatures, Outcome},
    forest::ForestParams,
    model::{GroupSpec, Model, ModelError, Schema, TailParams, ThresholdSpec},
    risk::{self, ModelVerdict, Risk},
    samples::{Sample, SampleMetrics, SampleQueue, SampleStore},
    sketch::plausible_ms,
    snapshot::{self, SnapshotError},
};

const SHARDS: usize = 64;
const N: usize = FEATURE_NAMES.len();

/// Features whose values span orders of magnitude (counts, rates, variances, distinct
/// counts). The model sees `ln(1 + x)` of them, so a key ten times busier than the median is
/// not isolated in one split just for being busy; ratios and divergences are left as they are.
const LOG_SCALED: [&str; 16] = [
    "requests_1m",
    "unique_endpoints_1m",
    "interarrival_var_1m",
    "requests_1h",
    "unique_endpoints_1h",
    "interarrival_var_1h",
    "requests_24h",
    "unique_endpoints_24h",
    "interarrival_var_24h",
    "distinct_ips",
    "distinct_user_agents",
    "param_distinct_max",
    "ids_distinct_max",
    "id_spread",
    "id_enumeration",
    "rps_1m",
];

/// The feature groups the detector fits one forest each on, by what they describe. A key is
/// as anomalous as its most anomalous group: an attack that is ordinary in volume but
/// unusual in the objects it reads is not averaged away by thirty ordinary columns.
pub const GROUPS: [(&str, &[&str]); 6] = [
    (
        "volume",
        &[
            "requests_1m",
            "rps_1m",
            "blocked_ratio_1m",
            "throttled_ratio_1m",
            "requests_1h",
            "rps_1h",
            "blocked_ratio_1h",
            "throttled_ratio_1h",
            "requests_24h",
            "rps_24h",
            "blocked_ratio_24h",
            "throttled_ratio_24h",
        ],
    ),
    (
        "endpoints",
        &[
            "unique_endpoints_1m",
            "endpoint_entropy_1m",
            "unique_endpoints_1h",
            "endpoint_entropy_1h",
            "unique_endpoints_24h",
            "endpoint_entropy_24h",
            "endpoint_divergence",
        ],
    ),
    (
        "timing",
        &[
            "interarrival_var_1m",
            "interarrival_var_1h",
            "interarrival_var_24h",
            "time_of_day_divergence",
            "timing_regularity",
        ],
    ),
    ("clients", &["distinct_ips", "distinct_user_agents"]),
    (
        "responses",
        &["error_ratio_1h", "error_ratio_24h", "denied_ratio_24h"],
    ),
    (
        "objects",
        &[
            "param_distinct_max",
            "ids_distinct_max",
            "id_spread",
            "id_sequential_ratio",
            "id_coverage",
            "id_novelty",
            "id_enumeration",
        ],
    ),
];

/// Features the tails leave to the forest (and the rate limits):
/// - the one-minute horizon: a batch job's busiest minute is as extreme as an abuser's, and
///   short bursts are what the limits are for;
/// - divergences from the key's own baseline: a change of habits is what real integrations do
///   now and then (a new client release), so an extreme one alone is no evidence.
const NOT_IN_TAILS: [&str; 9] = [
    "requests_1m",
    "unique_endpoints_1m",
    "interarrival_var_1m",
    "rps_1m",
    "endpoint_entropy_1m",
    "blocked_ratio_1m",
    "throttled_ratio_1m",
    "endpoint_divergence",
    "time_of_day_divergence",
];

/// The columns of [`FEATURE_NAMES`] the model's tails are fitted on.
pub fn tail_columns() -> Vec<usize> {
    (0..N)
        .filter(|i| !NOT_IN_TAILS.contains(&FEATURE_NAMES[*i]))
        .collect()
}

/// [`GROUPS`] as column indices of [`FEATURE_NAMES`].
pub fn group_specs() -> Vec<GroupSpec> {
    GROUPS
        .iter()
        .map(|(name, features)| GroupSpec {
            name: (*name).to_owned(),
            columns: features
                .iter()
                .filter_map(|f| FEATURE_NAMES.iter().position(|n| n == f))
                .collect(),
        })
        .collect()
}

/// The schema the detector's models are trained on: the feature names, log-scaled ones
/// marked, so a model fitted on raw features (the offline CLI) is refused rather than misread.
pub fn model_schema() -> Schema {
    Schema::new(
        FEATURE_NAMES
            .iter()
            .map(|n| {
                if LOG_SCALED.contains(n) {
                    format!("log1p({n})")
                } else {
                    (*n).to_owned()
                }
            })
            .collect(),
    )
}

/// The model input for a raw feature vector.
pub fn model_input(raw: &[f64; N]) -> [f64; N] {
    let mut x = *raw;
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        if LOG_SCALED.contains(name) {
            x[i] = raw[i].max(0.0).ln_1p();
        }
    }
    x
}

/// Labels of `palisade_detect_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    /// flag, throttle, block, shadow_throttle, shadow_block.
    pub decision: String,
}

/// Labels of `palisade_detect_retrains_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetrainLabels {
    /// adopted, held (drift gate), failed, deferred (the reservoir too young after a restart).
    pub result: String,
}

/// `palisade_detect_*`.
#[derive(Debug, Clone)]
pub struct DetectMetrics {
    /// Keys with feature state in memory.
    pub keys: Gauge,
    /// Keys forgotten to stay within `max_keys`.
    pub evicted: Counter,
    /// Scores computed on the Check path.
    pub scored: Counter,
    /// Time of one scoring (vector, score, explanation), seconds.
    pub score_seconds: Histogram,
    /// Model verdicts by decision.
    pub decisions: Family<LevelLabels, Counter>,
    /// `decisions`' counters by `Decision` value, resolved once: the Check path only bumps.
    by_decision: [Counter; 7],
    /// Retrains by result.
    pub retrains: Family<RetrainLabels, Counter>,
    /// Training vectors in the reservoir.
    pub reservoir: Gauge,
    /// 1 when a model is in use.
    pub model_loaded: Gauge,
    /// When the model in use was trained, seconds since the Unix epoch.
    pub model_trained_at: Gauge,
    /// Share of the last retrain's vectors the previous model called anomalous, per mille.
    pub drift_permille: Gauge,
    /// Stored models that could not be loaded or were refused.
    pub load_failures: Counter,
}

impl Default for DetectMetrics {
    fn default() -> Self {
        let decisions = Family::<LevelLabels, Counter>::default();
        let by_decision = std::array::from_fn(|i| {
            decisions
                .get_or_create(&LevelLabels {
                    decision: verdict::decision_name(i as i32).to_owned(),
                })
                .clone()
        });
        Self {
            keys: Gauge::default(),
            evicted: Counter::default(),
            scored: Counter::default(),
            score_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 14)),
            decisions,
            by_decision,
            retrains: Family::default(),
            reservoir: Gauge::default(),
            model_loaded: Gauge::default(),
            model_trained_at: Gauge::default(),
            drift_permille: Gauge::default(),
            load_failures: Counter::default(),
        }
    }
}

impl DetectMetrics {
    /// Registers every detection metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "detect_keys",
            "Keys with behavioural state in memory",
            m.keys.clone(),
        );
        registry.register(
            "detect_keys_evicted",
            "Keys forgotten to stay within detect.max_keys",
            m.evicted.clone(),
        );
        registry.register(
            "detect_scored",
            "Per-key scores computed on the Check path",
            m.scored.clone(),
        );
        registry.register(
            "detect_score_duration_seconds",
            "Time of one per-key scoring (features, forest, explanation)",
            m.score_seconds.clone(),
        );
        registry.register(
            "detect_decisions",
            "Model verdicts by decision",
            m.decisions.clone(),
        );
        registry.register(
            "detect_retrains",
            "Model retrains by result (adopted, held, failed)",
            m.retrains.clone(),
        );
        registry.register(
            "detect_reservoir_vectors",
            "Feature vectors kept for training",
            m.reservoir.clone(),
        );
        registry.register(
            "detect_model_loaded",
            "1 when a model scores requests",
            m.model_loaded.clone(),
        );
        registry.register(
            "detect_model_trained_at_seconds",
            "When the model in use was trained",
            m.model_trained_at.clone(),
        );
        registry.register(
            "detect_model_load_failures",
            "Stored models that could not be loaded or were refused",
            m.load_failures.clone(),
        );
        registry.register(
            "detect_drift_permille",
            "Share of the last retrain's vectors the model in use called anomalous",
            m.drift_permille.clone(),
        );
        m
    }

    fn retrain(&self, result: &str) {
        self.retrains
            .get_or_create(&RetrainLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// A model in use and its version.
#[derive(Debug)]
pub struct ActiveModel {
    /// The model.
    pub model: Model,
    /// `iforest-<12 hex of its bytes' SHA-256>`: names it in verdicts, events and the store.
    pub version: Arc<str>,
}

impl ActiveModel {
    /// Wraps `model` after checking it was trained on [`model_schema`].
    pub fn new(model: Model) -> Result<Self, ModelError> {
        model.score(&model_schema(), &[0.0; N])?;
        let version = super::store::version_of(&model.to_bytes()?).into();
        Ok(Self { model, version })
    }
}

/// One request of a key, as the detector sees it.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The key.
    pub key_id: &'a str,
    /// Its tier (picks the thresholds).
    pub tier: &'a str,
    /// Engine clock, ms.
    pub now_ms: i64,
    /// Normalised path without the query string.
    pub path: &'a str,
    /// Query parameters.
    pub query: &'a [(&'a str, &'a str)],
    /// Client address.
    pub client_ip: &'a str,
    /// User-Agent.
    pub user_agent: &'a str,
    /// What the rules made of it.
    pub outcome: Outcome,
}

/// The model's say on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The key's latest anomaly score.
    pub score: f64,
    /// The key's risk now (decayed peak).
    pub risk: f64,
    /// The graduated decision and its explanation.
    pub verdict: ModelVerdict,
    /// The model that scored it.
    pub model_version: Arc<str>,
    /// For a throttle: seconds until the risk decays below the throttle threshold.
    pub retry_after_seconds: u32,
    /// True when this request raised the key to a higher level than it was at (alert once).
    pub escalated: bool,
}

/// What the detector keeps per key; also what a snapshot carries ([`Detector::export_state`]).
#[derive(Debug, bincode::Encode, bincode::Decode)]
struct KeyState {
    features: KeyFeatures,
    risk: Risk,
    requests: u64,
    since_score: u32,
    last_score_ms: i64,
    score: f64,
    /// Exponentially smoothed score (`score_smoothing`); what the risk follows.
    smoothed: f64,
    explanation: String,
    last_seen_ms: i64,
    first_seen_ms: i64,
    /// When the key last gave a training vector.
    last_sample_ms: i64,
    /// 0 allow, 1 flag, 2 throttle, 3 block: the level last reported.
    level: u8,
}

impl KeyState {
    fn new(now: i64) -> Self {
        Self {
            features: KeyFeatures::default(),
            risk: Risk::default(),
            requests: 0,
            since_score: 0,
            last_score_ms: now,
            score: 0.0,
            smoothed: 0.0,
            explanation: String::new(),
            last_seen_ms: now,
            first_seen_ms: now,
            last_sample_ms: i64::MIN,
            level: 0,
        }
    }

    /// A restored state holds what this code writes (see [`KeyFeatures::is_plausible`]).
    fn is_plausible(&self) -> bool {
        self.features.is_plausible()
            && self.risk.is_plausible()
            && [self.last_score_ms, self.last_seen_ms, self.first_seen_ms]
                .into_iter()
                .all(plausible_ms)
            && self.requests < 1 << 62
            && self.since_score < u32::MAX / 2
            && self.score.is_finite()
            && self.smoothed.is_finite()
            && self.level <= 3
    }
}

/// Called with a key and its encoded state ([`snapshot`]) each time the key is scored, after
/// the shard's lock is released: the write-behind to Redis. Must not block.
pub type StateSink = Box<dyn Fn(&str, Vec<u8>) + Send + Sync>;

/// Training vectors: a uniform reservoir sample (algorithm R) of the vectors seen at scoring.
#[derive(Debug)]
struct Training {
    vectors: Vec<[f64; N]>,
    /// Whose each vector is (a hash of the key), for calibration by key.
    owners: Vec<u64>,
    seen: u64,
    rng: Xoshiro256PlusPlus,
    next_fit_ms: Option<i64>,
    /// When the first vector since start was offered: how much history the reservoir spans.
    started_ms: Option<i64>,
    fits: u64,
}

/// What a retrain did.
#[derive(Debug, Clone, PartialEq)]
pub enum Retrained {
    /// The new model is in use.
    Adopted {
        /// Its version.
        version: Arc<str>,
        /// Share of its vectors the previous model called anomalous (0 with none).
        drift: f64,
    },
    /// The drift gate kept the previous model.
    Held {
        /// The held model's version.
        version: Arc<str>,
        /// Share of its vectors the previous model called anomalous.
        drift: f64,
    },
    /// Too few vectors yet.
    NotEnoughData {
        /// Vectors in the reservoir.
        have: usize,
        /// Vectors needed.
        need: usize,
    },
}

/// Called with every model a retrain produced: adopted (`true`) or held (`false`); persists it.
pub type ModelSink = Box<dyn Fn(&ActiveModel, bool) + Send + Sync>;

/// Per-key behavioural state, the model in use and its training.
pub struct Detector {
    config: ArcSwap<DetectConfig>,
    shards: Box<[Mutex<HashMap<String, KeyState>>]>,
    hasher: BuildHasherDefault<DefaultHasher>,
    model: ArcSwapOption<ActiveModel>,
    training: Mutex<Training>,
    fitting: AtomicBool,
    schema: Schema,
    metrics: DetectMetrics,
    sink: Option<ModelSink>,
    state_sink: Option<StateSink>,
    samples: Option<(SampleStore, SampleQueue, SampleMetrics)>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field(
                "model",
                &self.model.load().as_ref().map(|m| m.version.clone()),
            )
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector for `config` with no model yet.
    pub fn new(config: &DetectConfig, metrics: DetectMetrics) -> Self {
        let seed = config.training.seed;
        Self {
            config: ArcSwap::from_pointee(config.clone()),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: BuildHasherDefault::default(),
            model: ArcSwapOption::empty(),
            training: Mutex::new(Training {
                vectors: Vec::new(),
                owners: Vec::new(),
                seen: 0,
                rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x005e_ed0f_7e5e_4701),
                next_fit_ms: None,
                started_ms: None,
                fits: 0,
            }),
            fitting: AtomicBool::new(false),
            schema: model_schema(),
            metrics,
            sink: None,
            state_sink: None,
            samples: None,
        }
    }

    /// Writes training vectors to `store` through `queue` as well as to the reservoir, and
    /// fits on a sample of the store's (falling back to the reservoir).
    pub fn with_samples(
        mut self,
        store: SampleStore,
        queue: SampleQueue,
        metrics: SampleMetrics,
    ) -> Self {
        self.samples = Some((store, queue, metrics));
        self
    }

    /// Calls `sink` with a key's encoded state each time the key is scored.
    pub fn with_state_sink(mut self, sink: StateSink) -> Self {
        self.state_sink = Some(sink);
        self
    }

    fn shard(&self, key_id: &str) -> &Mutex<HashMap<String, KeyState>> {
        &self.shards[(self.hasher.hash_one(key_id) as usize) % SHARDS]
    }

    /// Requests seen from `key_id` (restored ones included), when it has state in memory.
    pub fn key_requests(&self, key_id: &str) -> Option<u64> {
        self.shard(key_id).lock().get(key_id).map(|s| s.requests)
    }

    /// True when `key_id` has state in memory.
    pub fn knows(&self, key_id: &str) -> bool {
        self.shard(key_id).lock().contains_key(key_id)
    }

    /// `key_id`'s state as a snapshot, when it has state in memory.
    pub fn export_state(&self, key_id: &str) -> Option<Result<Vec<u8>, SnapshotError>> {
        self.shard(key_id).lock().get(key_id).map(snapshot::encode)
    }

    /// Installs `key_id`'s state from `bytes` (a snapshot of [`export_state`](Self::export_state)):
    /// only when the key has no state in memory, unless `replace`. A snapshot that does not
    /// decode or holds implausible values is an error and changes nothing; one idle for
    /// `idle_ms` at `now_ms` is ignored. Returns whether it was installed.
    pub fn import_state(
        &self,
        key_id: &str,
        bytes: &[u8],
        now_ms: i64,
        replace: bool,
    ) -> Result<bool, SnapshotError> {
        let state: KeyState = snapshot::decode(bytes)?;
        if !state.is_plausible() {
            return Err(SnapshotError::Implausible);
        }
        let config = self.config.load();
        if now_ms.saturating_sub(state.last_seen_ms) >= config.idle_ms as i64 {
            return Ok(false);
        }
        let mut keys = self.shard(key_id).lock();
        match keys.get_mut(key_id) {
            Some(current) if replace => *current = state,
            Some(_) => return Ok(false),
            None => {
                self.make_room(&mut keys, &config, now_ms);
                keys.insert(key_id.to_owned(), state);
            }
        }
        Ok(true)
    }

    /// Calls `sink` with every model a retrain produces (to persist it).
    pub fn with_sink(mut self, sink: ModelSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Thresholds, enforcement and cadence from a reloaded configuration; state is kept.
    pub fn reload(&self, config: &DetectConfig) {
        self.config.store(Arc::new(config.clone()));
    }

    /// The configuration in use.
    pub fn config(&self) -> Arc<DetectConfig> {
        self.config.load_full()
    }

    /// The model in use.
    pub fn model(&self) -> Option<Arc<ActiveModel>> {
        self.model.load_full()
    }

    /// Puts `model` in use (loaded at start, or adopted by a retrain).
    pub fn install(&self, model: Arc<ActiveModel>) {
        self.metrics.model_loaded.set(1);
        self.metrics
            .model_trained_at
            .set((model.model.meta().trained_at_ms / 1000) as i64);
        self.model.store(Some(model));
        // A model loaded at start after the first vectors arrived: resume its schedule.
        let mut tr = self.training.lock();
        if let (0, Some(started)) = (tr.fits, tr.started_ms) {
            tr.next_fit_ms = Some(self.first_fit_ms(started, &self.config.load().training));
        }
    }

    /// Counts a stored model that could not be loaded.
    pub fn count_load_failure(&self) {
        self.metrics.load_failures.inc();
    }

    /// Keys with state in memory.
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Records one request of a key and returns the model's say on it: `None` while the key
    /// is too young, no model is in use, or detection is off. May start a retrain in the
    /// background (never on this thread).
    pub fn observe(self: &Arc<Self>, o: &Observation<'_>) -> Option<Assessment> {
        let config = self.config.load();
        if !config.enabled {
            return None;
        }
        let model = self.model.load();
        let mut vector = None;
        let owner = self.hasher.hash_one(o.key_id);
        let mut exported = None;
        let assessment = {
            let mut keys = self.shards[(owner as usize) % SHARDS].lock();
            if !keys.contains_key(o.key_id) {
                self.make_room(&mut keys, &config, o.now_ms);
                keys.insert(o.key_id.to_owned(), KeyState::new(o.now_ms));
            }
            let state = keys.get_mut(o.key_id)?;
            state.features.observe(&Event {
                ts_ms: o.now_ms,
                path: o.path,
                query: o.query,
                client_ip: o.client_ip,
                user_agent: o.user_agent,
                outcome: o.outcome,
            });
            state.requests += 1;
            state.since_score += 1;
            state.last_seen_ms = state.last_seen_ms.max(o.now_ms);
            let due = state.requests >= config.min_requests
                && (state.since_score >= config.score_every
                    || o.now_ms - state.last_score_ms >= config.score_interval_ms as i64);
            if due {
                state.since_score = 0;
                state.last_score_ms = o.now_ms;
                let raw = state.features.vector(o.now_ms);
                let x = model_input(&raw);
                if let Some(m) = model.as_ref() {
                    self.score(m, &config, state, o, &raw, &x);
                }
                // One voice per key per sampling interval: a busy key (or a flooding
                // attacker) does not outweigh the population in the baseline.
                let t = &config.training;
                if o.now_ms - state.first_seen_ms >= t.min_key_age_ms as i64
                    && o.now_ms.saturating_sub(state.last_sample_ms) >= t.sample_interval_ms as i64
                {
                    state.last_sample_ms = o.now_ms;
                    vector = Some(x);
                }
            }
            let assessment = model
                .as_ref()
                .filter(|_| state.requests >= config.min_requests)
                .map(|m| assess(&config, m, state, o));
            if due && self.state_sink.is_some() {
                exported = snapshot::encode(&*state).ok();
            }
            assessment
        };
        if let (Some(sink), Some(bytes)) = (&self.state_sink, exported) {
            sink(o.key_id, bytes);
        }
        if let Some(x) = vector {
            self.offer(x, owner, o.now_ms, &config);
        }
        if let Some(a) = &assessment
            && a.verdict.decision != Decision::Allow
            && let Some(c) = self.metrics.by_decision.get(a.verdict.decision as usize)
        {
            c.inc();
        }
        assessment
    }

    /// Records the status the backend gave a forwarded request of `key_id` (from the
    /// filter's outcome reports); a key without state here is ignored.
    pub fn observe_response(&self, key_id: &str, now_ms: i64, status: u16) {
        if !self.config.load().enabled {
            return;
        }
        let shard = &self.shards[(self.hasher.hash_one(key_id) as usize) % SHARDS];
        if let Some(state) = shard.lock().get_mut(key_id) {
            state.features.observe_response(now_ms, status);
        }
    }

    fn score(
        &self,
        m: &ActiveModel,
        config: &DetectConfig,
        state: &mut KeyState,
        o: &Observation<'_>,
        raw: &[f64; N],
        x: &[f64; N],
    ) {
        let started = Instant::now();
        // The schema was checked when the model was installed.
        let Ok((score, _)) = m.model.score_row(x) else {
            return;
        };
        state.score = score;
        let a = config.score_smoothing;
        state.smoothed = if state.smoothed > 0.0 {
            state.smoothed + a * (score - state.smoothed)
        } else {
            score
        };
        state
            .risk
            .update(o.now_ms, config.risk_half_life_ms as f64, state.smoothed);
        let thresholds = config.thresholds(o.tier);
        if state.smoothed >= effective_flag(thresholds, m.model.meta().threshold) {
            state.explanation = explain(m, raw, x, config.explain_top);
        }
        self.metrics.scored.inc();
        self.metrics
            .score_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Keeps the shard within its share of `max_keys`: idle keys go first, then the least
    /// recently seen eighth.
    fn make_room(&self, keys: &mut HashMap<String, KeyState>, config: &DetectConfig, now: i64) {
        let cap = config.max_keys.div_ceil(SHARDS).max(1);
        if keys.len() < cap {
            self.metrics.keys.inc();
            return;
        }
        let before = keys.len();
        let idle = config.idle_ms as i64;
        keys.retain(|_, s| now - s.last_seen_ms < idle);
        if keys.len() >= cap {
            let mut seen: Vec<i64> = keys.values().map(|s| s.last_seen_ms).collect();
            let cut = seen.len() / 8;
            seen.select_nth_unstable(cut);
            let oldest = seen[cut];
            let mut budget = cut.max(1);
            keys.retain(|_, s| {
                if budget > 0 && s.last_seen_ms <= oldest {
                    budget -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let removed = before - keys.len();
        self.metrics.evicted.inc_by(removed as u64);
        self.metrics
            .keys
            .set(self.metrics.keys.get() - removed as i64 + 1);
    }

    /// Forgets keys idle longer than `idle_ms` at `now_ms`; returns how many.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let idle = self.config.load().idle_ms as i64;
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut keys = shard.lock();
            let before = keys.len();
            keys.retain(|_, s| now_ms - s.last_seen_ms < idle);
            removed += before - keys.len();
        }
        self.metrics.keys.set(self.keys() as i64);
        removed
    }

    /// Adds a training vector; starts a retrain when one is due.
    fn offer(self: &Arc<Self>, x: [f64; N], owner: u64, now: i64, config: &DetectConfig) {
        let t = &config.training;
        let due = {
            let mut tr = self.training.lock();
            tr.seen += 1;
            if tr.vectors.len() < t.reservoir {
                tr.vectors.push(x);
                tr.owners.push(owner);
            } else {
                let seen = tr.seen;
                let j = tr.rng.random_range(0..seen) as usize;
                if j < tr.vectors.len() {
                    tr.vectors[j] = x;
                    tr.owners[j] = owner;
                }
            }
            self.metrics.reservoir.set(tr.vectors.len() as i64);
            if let Some((_, queue, _)) = &self.samples {
                queue.push(Sample {
                    owner,
                    at_ms: now,
                    vector: x.to_vec(),
                });
            }
            let started = *tr.started_ms.get_or_insert(now);
            let next = *tr
                .next_fit_ms
                .get_or_insert_with(|| self.first_fit_ms(started, t));
            now >= next && tr.vectors.len() >= t.min_samples
        };
        if !due || self.fitting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.fitting.store(false, Ordering::Release);
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let stored = this.stored_training(now).await;
            let need = this.config.load().training.fit_rows();
            if stored.as_ref().is_none_or(|rows| rows.len() < need) && this.defer_young_fit(now) {
                this.fitting.store(false, Ordering::Release);
                return;
            }
            let fit = Arc::clone(&this);
            let done = tokio::task::spawn_blocking(move || fit.retrain_with(now, stored)).await;
            match done {
                Ok(Ok(r)) => tracing::info!(?r, "detection model retrained"),
                Ok(Err(e)) => tracing::error!("detection model retrain failed: {e}"),
                Err(e) => tracing::error!("detection model retrain did not finish: {e}"),
            }
            this.fitting.store(false, Ordering::Release);
        });
    }

    /// When the first retrain since start is due. The reservoir starts empty, so by default
    /// the first fit waits until it spans a whole daily cycle (`training.min_history_ms`): a
    /// baseline of one night's traffic calls every morning anomalous. A scorer that loaded a
    /// model and keeps its training vectors in Postgres has that history already, and resumes
    /// the loaded model's schedule (`trained_at + training.interval_ms`, at the latest that wait).
    fn first_fit_ms(&self, started: i64, t: &TrainingConfig) -> i64 {
        let fresh = started.saturating_add(t.interval_ms.max(t.min_history_ms) as i64);
        match (self.model.load().as_ref(), &self.samples) {
            (Some(m), Some(_)) => (m.model.meta().trained_at_ms.min(i64::MAX as u64) as i64)
                .saturating_add(t.interval_ms as i64)
                .min(fresh),
            _ => fresh,
        }
    }

    /// A retrain that must fall back to the reservoir while it spans less than
    /// `training.min_history_ms` (Postgres did not answer after a restart) is put off until it
    /// does, and counted (`result="deferred"`): the model in use stays. Returns whether it was.
    fn defer_young_fit(&self, now: i64) -> bool {
        let t = &self.config.load().training;
        let mut tr = self.training.lock();
        let started = tr.started_ms.unwrap_or(now);
        let ready = started.saturating_add(t.min_history_ms as i64);
        if now >= ready {
            return false;
        }
        tr.next_fit_ms = Some(ready);
        drop(tr);
        self.metrics.retrain("deferred");
        tracing::warn!(
            since_start_ms = now - started,
            min_history_ms = t.min_history_ms,
            "retrain deferred: no stored training vectors and the reservoir is too young"
        );
        true
    }

    /// A uniform sample of the stored training vectors of the last `training.window_ms`, at
    /// most `training.reservoir` of them, when a store is configured and answers; older ones
    /// are deleted. `None` (the reservoir is used) without a store or when it fails.
    pub async fn stored_training(&self, now_ms: i64) -> Option<Vec<Sample>> {
        let (store, _, metrics) = self.samples.as_ref()?;
        let t = &self.config.load().training;
        let since = now_ms.saturating_sub(t.window_ms as i64);
        match store.sample(since, t.reservoir).await {
            Ok(rows) => {
                if let Err(e) = store.prune(since).await {
                    tracing::warn!("old training vectors not deleted: {e}");
                }
                Some(rows)
            }
            Err(e) => {
                tracing::warn!("training vectors not read from postgres, using the reservoir: {e}");
                metrics.samples("read_failed", 1);
                None
            }
        }
    }

    /// Fits a model on the reservoir now (blocking: call it off the request path), runs the
    /// drift gate and adopts or holds the result. `now_ms` is the engine clock.
    pub fn retrain(&self, now_ms: i64) -> Result<Retrained, ModelError> {
        self.retrain_with(now_ms, None)
    }

    /// [`Detector::retrain`] on `stored` vectors (from [`Detector::stored_training`]) when
    /// there are at least `training.min_samples` of them, else on the reservoir.
    pub fn retrain_with(
        &self,
        now_ms: i64,
        stored: Option<Vec<Sample>>,
    ) -> Result<Retrained, ModelError> {
        let config = self.config.load_full();
        let t = &config.training;
        let need = t.fit_rows();
        let stored = stored.filter(|rows| rows.len() >= need);
        if let Some((_, _, metrics)) = &self.samples {
            metrics.source(if stored.is_some() {
                "postgres"
            } else {
                "reservoir"
            });
        }
        let (data, owners, seed) = {
            let mut tr = self.training.lock();
            tr.next_fit_ms = Some(now_ms + t.interval_ms as i64);
            let (rows, flat, owners): (usize, Vec<f64>, Vec<u64>) = match &stored {
                Some(rows) => (
                    rows.len(),
                    rows.iter().flat_map(|s| s.vector.iter().copied()).collect(),
                    rows.iter().map(|s| s.owner).collect(),
                ),
                None => {
                    if tr.vectors.len() < need {
                        return Ok(Retrained::NotEnoughData {
                            have: tr.vectors.len(),
                            need,
                        });
                    }
                    (
                        tr.vectors.len(),
                        tr.vectors.iter().flatten().copied().collect(),
                        tr.owners.clone(),
                    )
                }
            };
            tr.fits += 1;
            (
                Array2::from_shape_vec((rows, N), flat)
                    .map_err(|e| ModelError::BadThreshold(format!("training data: {e}")))?,
                owners,
                t.seed.wrapping_add(tr.fits - 1),
            )
        };
        let params = ForestParams {
            trees: t.trees,
            sample_size: t.sample_size,
            seed,
        };
        let fitted = Model::fit_grouped(
            self.schema.clone(),
            data.view(),
            &owners,
            &if config.feature_groups {
                group_specs()
            } else {
                vec![GroupSpec {
                    name: "all".into(),
                    columns: (0..N).collect(),
                }]
            },
            config
                .tails
                .then(|| TailParams {
                    quantile: config.tail_quantile,
                    scale: config.tail_scale,
                    columns: tail_columns(),
                })
                .as_ref(),
            &params,
            ThresholdSpec::Contamination(t.contamination),
            now_ms.max(0) as u64,
            &mut |_, _| {},
        );
        let model = match fitted {
            Ok(m) => Arc::new(ActiveModel::new(m)?),
            Err(e) => {
                self.metrics.retrain("failed");
                return Err(e);
            }
        };
        let drift = match self.model.load_full() {
            Some(current) => {
                let scores = current.model.score_batch(&self.schema, data.view())?;
                let cut = current.model.meta().threshold;
                scores.iter().filter(|s| **s > cut).count() as f64 / scores.len() as f64
            }
            None => 0.0,
        };
        self.metrics
            .drift_permille
            .set((drift * 1000.0).round() as i64);
        let adopt = drift <= t.max_drift;
        if let Some(sink) = &self.sink {
            sink(&model, adopt);
        }
        let version = model.version.clone();
        if adopt {
            self.install(model);
            self.metrics.retrain("adopted");
            Ok(Retrained::Adopted { version, drift })
        } else {
            self.metrics.retrain("held");
            tracing::warn!(
                %version,
                drift,
                max_drift = t.max_drift,
                "retrained model held by the drift gate"
            );
            Ok(Retrained::Held { version, drift })
        }
    }
}

/// The verdict for a key from its risk now.
fn assess(
    config: &DetectConfig,
    m: &ActiveModel,
    state: &mut KeyState,
    o: &Observation<'_>,
) -> Assessment {
    let half_life = config.risk_half_life_ms as f64;
    let risk = state.risk.get(o.now_ms, half_life);
    let mut thresholds = *config.thresholds(o.tier);
    thresholds.flag = effective_flag(&thresholds, m.model.meta().threshold);
    let verdict = risk::decide(risk, &thresholds, config.enforce, &state.explanation);
    let level = match verdict.decision {
        Decision::Flag => 1,
        Decision::Throttle | Decision::ShadowThrottle => 2,
        Decision::Block | Decision::ShadowBlock => 3,
        _ => 0,
    };
    let escalated = level > state.level;
    state.level = level;
    let retry_after_seconds = if verdict.decision == Decision::Throttle && risk > 0.0 {
        // risk * 2^(-t / half_life) < throttle  <=>  t > half_life * log2(risk / throttle)
        let ms = half_life * (risk / thresholds.throttle).log2();
        ((ms / 1000.0).ceil() as u32).clamp(1, 86_400)
    } else {
        0
    };
    Assessment {
        score: state.score,
        risk,
        verdict,
        model_version: m.version.clone(),
        retry_after_seconds,
        escalated,
    }
}

/// The flag threshold in force: never below what the model itself calls anomalous (its
/// `cut`), never above the throttle threshold. Scoring explains from here on, and the
/// verdict flags from here on, so no verdict is without its explanation.
fn effective_flag(thresholds: &risk::TierThresholds, cut: f64) -> f64 {
    thresholds.flag.max(cut).min(thresholds.throttle)
}

/// `group: name=value (share%), ...` for the group that decided the score and the features
/// that drove it most, raw values shown.
fn explain(m: &ActiveModel, raw: &[f64; N], x: &[f64; N], top: usize) -> String {
    let Ok((shares, group)) = m.model.explain_row(x) else {
        return String::new();
    };
    let part = m.model.part_name(group);
    let mut order: Vec<usize> = (0..N).filter(|i| shares[*i] > 0.0).collect();
    order.sort_by(|a, b| shares[*b].total_cmp(&shares[*a]));
    let drivers = order
        .iter()
        .take(top)
        .map(|&i| {
            format!(
                "{}={} ({:.0}%)",
                FEATURE_NAMES[i],
                readable(raw[i]),
                shares[i] * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if m.model.groups().len() > 1 || group >= m.model.groups().len() {
        format!("{part}: {drivers}")
    } else {
        drivers
    }
}

fn readable(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e9) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The schema of the raw feature vector (for CSV export and the offline CLI).
pub fn raw_schema() -> Schema {
    features::schema()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn config() -> DetectConfig {
        let mut c = DetectConfig {
            min_requests: 30,
            score_every: 8,
            ..DetectConfig::default()
        };
        c.training.min_samples = 64;
        c.training.min_key_age_ms = 60 * MIN as u64;
        c.training.sample_interval_ms = 0;
        c.training.min_history_ms = 0;
        // The mechanics, not the calibration (palisade-sim measures that).
        c.default_thresholds = risk::TierThresholds {
            flag: 0.6,
            throttle: 0.7,
            block: 0.8,
        };
        c.training.interval_ms = u64::MAX / 4;
        c
    }

    /// A key's request at `t`: `path`, optional `page`, from `ip` with `ua`.
    fn send(
        d: &Arc<Detector>,
        key: &str,
        t: i64,
        path: &str,
        ip: &str,
        ua: &str,
    ) -> Option<Assessment> {
        d.observe(&Observation {
            key_id: key,
            tier: "standard",
            now_ms: t,
            path,
            query: &[],
            client_ip: ip,
            user_agent: ua,
            outcome: Outcome::Allowed,
        })
    }

    /// `keys` ordinary integrations for `hours`: a handful of endpoints, a small working set of
    /// object IDs, irregular think times, one address and agent each.
    /// Returns the keys the model said anything but allow to.
    fn normal_traffic(
        d: &Arc<Detector>,
        keys: usize,
        from: i64,
        hours: i64,
        seed: u64,
    ) -> std::collections::BTreeSet<String> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let endpoints = [
            "/api/users/{}",
            "/api/orders/{}",
            "/api/items",
            "/api/search",
            "/api/health",
        ];
        let mut events = Vec::new();
        for k in 0..keys {
            let mut t = from + rng.random_range(0..MIN);
            let favourite = rng.random_range(0..endpoints.len());
            while t < from + hours * 60 * MIN {
                let e = if rng.random_bool(0.6) {
                    favourite
                } else {
                    rng.random_range(0..endpoints.len())
                };
                let id = 100 + rng.random_range(0..12u32) * 7;
                // A key is used from a few addresses and clients (home, office, phone).
                let client = rng.random_range(0..3u32);
                events.push((t, k, endpoints[e].replace("{}", &id.to_string()), client));
                t += rng.random_range(5_000..120_000);
            }
        }
        events.sort();
        let mut flagged = std::collections::BTreeSet::new();
        for (t, k, path, client) in events {
            let ip = format!("10.{}.{}.{client}", k / 200, k % 200);
            let ua = format!("client/1.{}", client % 2);
            let key = format!("key-{k}");
            if let Some(a) = send(d, &key, t, &path, &ip, &ua)
                && a.verdict.decision != Decision::Allow
            {
                flagged.insert(format!("{key}: {}", a.verdict.reason));
            }
        }
        flagged
    }

    fn trained() -> (Arc<Detector>, i64) {
        let d = Arc::new(Detector::new(&config(), DetectMetrics::default()));
        normal_traffic(&d, 40, 0, 30, 7);
        let now = 30 * 60 * MIN;
        let r = d.retrain(now).unwrap();
        assert!(d.training.lock().vectors.len() >= 64);
        assert!(
            matches!(r, Retrained::Adopted { drift, .. } if drift == 0.0),
            "{r:?}"
        );
        (d, now)
    }

    #[test]
    fn groups_cover_every_feature_once() {
        let mut columns: Vec<usize> = group_specs().into_iter().flat_map(|g| g.columns).collect();
        let named: usize = GROUPS.iter().map(|(_, f)| f.len()).sum();
        assert_eq!(columns.len(), named, "a group names an unknown feature");
        columns.sort_unstable();
        assert_eq!(columns, (0..N).collect::<Vec<_>>());
    }

    #[test]
    fn silent_without_a_model_and_for_young_keys() {
        let d = Arc::new(Detector::new(&config(), DetectMetrics::default()));
        for i in 0..100 {
            assert_eq!(send(&d, "a", i * 1000, "/x", "10.0.0.1", "ua"), None);
        }
        assert_eq!(d.keys(), 1);
        let (d, now) = trained();
        assert_eq!(
            send(&d, "newcomer", now, "/api/items", "10.9.9.9", "ua"),
            None
        );
    }

    #[test]
    fn an_enumerating_key_is_caught_and_explained_while_normal_keys_pass() {
        let (d, start) = trained();
        let mut first = None;
        for i in 0..240 {
            let t = start + i * 30_000;
            let path = format!("/api/orders/{}", 5_000 + i);
            if let Some(a) = send(
                &d,
                "scraper",
                t + 4 * 60 * MIN,
                &path,
                "10.7.7.7",
                "client/1.0",
            ) && a.verdict.decision != Decision::Allow
                && first.is_none()
            {
                first = Some(a);
            }
        }
        let a = first.expect("the enumerating key is never flagged");
        assert!(
            a.verdict.reason.starts_with("anomaly:"),
            "{}",
            a.verdict.reason
        );
        // Explained by named features with their values and shares (which ones lead depends
        // on the fit: its timing is as regular as its IDs are sequential).
        let named = FEATURE_NAMES
            .iter()
            .any(|f| a.verdict.reason.contains(&format!("{f}=")));
        assert!(
            named && a.verdict.reason.contains('%'),
            "{}",
            a.verdict.reason
        );
        assert!(a.escalated);
        assert!(a.model_version.starts_with("iforest-"));
        // Shadow mode: never an enforced throttle or block.
        assert!(!matches!(
            a.verdict.decision,
            Decision::Throttle | Decision::Block
        ));

        // The same normal population, four more hours: at most one of 40 keys flagged.
        let flagged = normal_traffic(&d, 40, start, 4, 7);
        assert!(flagged.len() <= 1, "normal keys flagged: {flagged:?}");
    }

    #[test]
    fn enforcement_blocks_and_risk_decays() {
        let (d, start) = trained();
        let mut c = config();
        c.enforce = true;
        c.risk_half_life_ms = 10 * MIN as u64;
        // No rescoring on the next request: the risk alone must decay.
        c.score_interval_ms = 24 * 60 * MIN as u64;
        d.reload(&c);
        let mut worst = Decision::Allow;
        let mut peak: f64 = 0.0;
        let mut t = start;
        for i in 0..300 {
            t = start + i * 1_000;
            let ip = format!("198.51.{}.{}", i % 250, i % 7);
            let ua = format!("agent-{i}");
            if let Some(a) = send(&d, "stolen", t, "/api/admin/export", &ip, &ua) {
                peak = peak.max(a.risk);
                if severity(a.verdict.decision) > severity(worst) {
                    worst = a.verdict.decision;
                }
            }
        }
        assert!(
            matches!(worst, Decision::Throttle | Decision::Block),
            "{worst:?} at a peak risk of {peak}"
        );
        // Hours later, quiet: the risk has decayed and the key is let through again.
        let later = send(
            &d,
            "stolen",
            t + 6 * 60 * MIN,
            "/api/items",
            "198.51.0.0",
            "agent-0",
        )
        .expect("scored key");
        assert!(later.risk < 0.1, "{}", later.risk);
        assert_eq!(later.verdict.decision, Decision::Allow);
    }

    fn severity(d: Decision) -> u8 {
        verdict::severity(d as i32)
    }

    #[test]
    fn the_drift_gate_holds_a_poisoned_baseline() {
        let (d, start) = trained();
        let version = d.model().unwrap().version.clone();
        let mut c = config();
        c.training.min_key_age_ms = 0;
        d.reload(&c);
        // The reservoir fills with one scraper's vectors: a retrain would learn it as normal.
        {
            let mut tr = d.training.lock();
            tr.vectors.clear();
            tr.owners.clear();
        }
        for k in 0..20 {
            for i in 0..200 {
                let t = start + i * 2_000;
                let path = format!("/api/orders/{}", k * 10_000 + i);
                send(
                    &d,
                    &format!("bot-{k}"),
                    t,
                    &path,
                    &format!("203.0.113.{i}"),
                    &format!("ua{i}"),
                );
            }
        }
        let r = d.retrain(start + 60 * MIN).unwrap();
        assert!(
            matches!(r, Retrained::Held { drift, .. } if drift > 0.1),
            "{r:?}"
        );
        assert_eq!(
            d.model().unwrap().version,
            version,
            "the held model is not in use"
        );
        let held = d
            .metrics
            .retrains
            .get_or_create(&RetrainLabels {
                result: "held".into(),
            })
            .get();
        assert_eq!(held, 1);
    }

    #[test]
    fn a_model_of_another_schema_is_refused() {
        let data = Array2::from_shape_fn((64, N), |(i, j)| (i * j) as f64);
        let raw = Model::fit(
            raw_schema(),
            data.view(),
            &ForestParams::default(),
            ThresholdSpec::Contamination(0.1),
            0,
            &mut |_, _| {},
        )
        .unwrap();
        let err = ActiveModel::new(raw).unwrap_err().to_string();
        assert!(err.contains("schema"), "{err}");
    }

    /// The scraper of `an_enumerating_key_is_caught...`: request `i`.
    fn scrape(d: &Arc<Detector>, start: i64, i: i64) -> Option<Assessment> {
        let path = format!("/api/orders/{}", 5_000 + i);
        send(
            d,
            "scraper",
            start + i * 30_000,
            &path,
            "10.7.7.7",
            "client/1.0",
        )
    }

    #[test]
    fn an_exported_state_resumes_where_it_left_off() {
        let (d, start) = trained();
        for i in 0..100 {
            scrape(&d, start, i);
        }
        let bytes = d.export_state("scraper").unwrap().unwrap();
        // Another process with the same model: only the key's snapshot crosses over.
        let (resumed, _) = trained();
        assert!(
            resumed
                .import_state("scraper", &bytes, start + 100 * 30_000, false)
                .unwrap()
        );
        assert_eq!(resumed.key_requests("scraper"), Some(100));
        for i in 100..240 {
            let (a, b) = (scrape(&d, start, i), scrape(&resumed, start, i));
            let (a, b) = (a.expect("scored"), b.expect("scored"));
            assert!((a.score - b.score).abs() < 1e-9, "at {i}: {a:?} vs {b:?}");
            assert!((a.risk - b.risk).abs() < 1e-9, "at {i}: {a:?} vs {b:?}");
            assert_eq!(a.verdict.decision, b.verdict.decision, "at {i}");
        }
        // Not over a key that already has state, unless asked to.
        let other = Arc::new(Detector::new(&config(), DetectMetrics::default()));
        send(&other, "scraper", start, "/x", "10.0.0.1", "ua");
        assert!(!other.import_state("scraper", &bytes, start, false).unwrap());
        assert_eq!(other.key_requests("scraper"), Some(1));
        assert!(other.import_state("scraper", &bytes, start, true).unwrap());
        assert_eq!(other.key_requests("scraper"), Some(100));
    }

    #[test]
    fn implausible_and_stale_snapshots_are_not_installed() {
        let d = Arc::new(Detector::new(&config(), DetectMetrics::default()));
        let mut state = KeyState::new(1_000);
        state.first_seen_ms = i64::MIN;
        let bytes = snapshot::encode(&state).unwrap();
        assert!(matches!(
            d.import_state("k", &bytes, 2_000, false),
            Err(SnapshotError::Implausible)
        ));
        let bytes = snapshot::encode(&KeyState::new(1_000)).unwrap();
        let idle = config().idle_ms as i64;
        assert!(!d.import_state("k", &bytes, 1_000 + idle, false).unwrap());
        assert!(d.import_state("k", &bytes, 2_000, false).unwrap());
        assert_eq!(d.keys(), 1);
    }

    /// The encoding of a fixed state. When this fails and an encoded type changed shape, bump
    /// `snapshot::VERSION` (so older snapshots are refused, not misread); when only the values
    /// changed (features computed differently), the layout is the same: update the figures.
    #[test]
    fn layout_is_pinned() {
        let d = Arc::new(Detector::new(&config(), DetectMetrics::default()));
        for i in 0..64 {
            let path = format!("/api/users/{}", i % 9);
            send(&d, "k", i * 1_000, &path, "10.0.0.1", "ua/1");
        }
        let bytes = d.export_state("k").unwrap().unwrap();
        assert_eq!(
            (bytes.len(), crc32fast::hash(&bytes)),
            (1126, 634_485_656),
            "key-state snapshot layout changed: bump snapshot::VERSION"
        );
    }

    #[test]
    fn scoring_hands_the_state_to_the_sink() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        let d = Arc::new(
            Detector::new(&config(), DetectMetrics::default()).with_state_sink(Box::new(
                move |k: &str, b: Vec<u8>| kept.lock().push((k.to_owned(), b)),
            )),
        );
        // Scored at its 30th request (min_requests) and every 8th after.
        for i in 0..46 {
            send(&d, "k", i * 1_000, "/a", "10.0.0.1", "ua");
        }
        let seen = seen.lock();
        assert_eq!(seen.len(), 3);
        let fresh = Arc::new(Detector::new(&config(), DetectMetrics::default()));
        fresh.import_state("k", &seen[2].1, 46_000, false).unwrap();
        assert_eq!(fresh.key_requests("k"), Some(46));
    }

    #[test]
    fn memory_stays_within_max_keys() {
        let c = DetectConfig {
            max_keys: 640,
            ..config()
        };
        let d = Arc::new(Detector::new(&c, DetectMetrics::default()));
        for k in 0..5_000 {
            send(&d, &format!("k{k}"), k, "/a", "10.0.0.1", "ua");
        }
        assert!(d.keys() <= 640, "{}", d.keys());
        assert!(d.metrics.evicted.get() >= 4_000);
        let kept = d.keys();
        assert_eq!(d.sweep(0), 0, "nothing is idle yet");
        assert_eq!(d.sweep(30 * 86_400_000), kept);
        assert_eq!(d.keys(), 0);
    }
}
