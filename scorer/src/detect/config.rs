//! `[detect]`: the behavioural model on the Check path, its training and its thresholds.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use super::risk::TierThresholds;

/// `[detect]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Keep per-key features and score them at all.
    pub enabled: bool,
    /// Let the model throttle and block. Off (the default) is shadow mode: would-be throttles
    /// and blocks are answered `SHADOW_THROTTLE` / `SHADOW_BLOCK`, logged and counted, and the
    /// request goes through. Flagging (a header to the backend) applies either way.
    pub enforce: bool,
    /// A key is scored once it has made this many requests (younger keys have no profile yet).
    pub min_requests: u64,
    /// A key is rescored after this many requests...
    pub score_every: u32,
    /// ...or this long after its last score, ms on the engine clock, whichever comes first.
    pub score_interval_ms: u64,
    /// Weight of the newest score in a key's smoothed score, in (0, 1]: 1 takes every score as
    /// it is; lower needs an anomaly to persist over a few scorings before it counts, so a
    /// one-off odd minute of an ordinary key is not flagged.
    pub score_smoothing: f64,
    /// A key's risk halves over this long without new evidence, ms.
    pub risk_half_life_ms: u64,
    /// Keys tracked at most (about 40 KiB each at the caps); past it the least recently seen
    /// are forgotten first.
    pub max_keys: usize,
    /// Keys idle this long are forgotten, ms.
    pub idle_ms: u64,
    /// Drivers named in a verdict's explanation.
    pub explain_top: usize,
    /// Fit one forest per feature group ([`super::detector::GROUPS`]) instead of one over
    /// every feature. Catches more classes in the simulator, at more false positives so far
    /// (docs/detection.md); off by default until it flags as few ordinary keys.
    pub feature_groups: bool,
    /// Also fit the tail of each feature over the population (an exponential above
    /// `tail_quantile`), and score a key by how improbable its most extreme feature is, where
    /// that says more than the forest: the forest cannot see a value beyond the most extreme
    /// training row, nor one extreme feature among thirty-five (docs/detection.md, "Tails").
    pub tails: bool,
    /// The quantile each fitted tail starts at, in (0, 1).
    pub tail_quantile: f64,
    /// A tail evidence `L` (the value is as rare as 1 in `10^L`) scores `L / (L +
    /// tail_scale)`: with 2.6, 1 in 10^6.7 reaches 0.72 (flag), 10^9.2 0.78, 10^14.7 0.85.
    pub tail_scale: f64,
    /// Where trained models are kept (one file per model and an `ACTIVE` pointer); the active
    /// one is loaded at start. Unset: in Postgres (`palisade_models`) when
    /// `events.database_url` is set, else in memory only (a restart trains anew).
    /// Env: `PALISADE_MODEL_DIR`.
    pub model_dir: Option<PathBuf>,
    /// Retired and held models kept in the store besides the active one.
    pub models_kept: usize,
    /// Where per-key state outlives the process: `redis` (the default) snapshots each key to
    /// Redis when `[redis]` is configured (in memory only without it), `memory` never does.
    /// Needs a restart to change.
    pub state: StateBackend,
    /// Key snapshots queued for writing to Redis at most; beyond it they are dropped and
    /// counted (the Check path never waits). Needs a restart to change.
    pub state_queue: usize,
    /// Training.
    pub training: TrainingConfig,
    /// Thresholds of tiers not listed in `tiers` (defaults 0.72 / 0.78 / 0.85: above the
    /// highest score ordinary keys reached in the seven-day simulation, docs/detection.md;
    /// with `feature_groups`, 0.78 / 0.84 / 0.90).
    pub default_thresholds: TierThresholds,
    /// Thresholds per tier, by tier name.
    pub tiers: BTreeMap<String, TierThresholds>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            enforce: false,
            min_requests: 30,
            score_every: 16,
            score_interval_ms: 60_000,
            score_smoothing: 0.3,
            risk_half_life_ms: 3_600_000,
            max_keys: 50_000,
            idle_ms: 7 * 86_400_000,
            explain_top: 3,
            feature_groups: false,
            tails: true,
            tail_quantile: 0.9,
            tail_scale: 2.6,
            model_dir: None,
            models_kept: 10,
            state: StateBackend::Redis,
            state_queue: 4_096,
            training: TrainingConfig::default(),
            default_thresholds: TierThresholds::default(),
            tiers: BTreeMap::new(),
        }
    }
}

/// `detect.state`: where per-key detection state is kept besides memory.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    /// In Redis when `[redis]` is configured (read on a key's first sight, written after each
    /// scoring), so restarts and replicas share profiles; else in memory only.
    #[default]
    Redis,
    /// In memory only: a restart or another replica starts every profile afresh.
    Memory,
}

/// `[detect.training]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Retrain this often, ms on the engine clock (request time with `limits.clock =
    /// "request"`, so a replayed week retrains as a live one would).
    pub interval_ms: u64,
    /// Feature vectors needed before the first fit.
    pub min_samples: usize,
    /// Feature vectors kept for training (a uniform reservoir sample per key and time).
    pub reservoir: usize,
    /// Only keys at least this old give training vectors, ms: a key's first requests say
    /// little about its habits yet.
    pub min_key_age_ms: u64,
    /// A key gives at most one training vector per this interval, ms, so the baseline is a
    /// sample of keys, not of requests: a busy key or a flooding attacker does not outweigh
    /// the population.
    pub sample_interval_ms: u64,
    /// The first fit waits this long after the first training vector, ms (later fits follow
    /// `interval_ms`): a baseline should span a whole daily cycle.
    pub min_history_ms: u64,
    /// Trees per forest.
    pub trees: usize,
    /// Subsample size per tree.
    pub sample_size: usize,
    /// Share of training vectors taken as anomalous: sets the model's threshold.
    pub contamination: f64,
    /// Seed of the first fit; each retrain uses the next one.
    pub seed: u64,
    /// The drift gate: a retrain is held (and counted) rather than adopted when more than this
    /// share of its training vectors scores anomalous under the model in use: a baseline
    /// moving that far is as likely slow poisoning as a change of habits.
    pub max_drift: f64,
    /// With `events.database_url` set, training vectors are also written to Postgres
    /// (`palisade_training_samples`) and fits read a uniform sample of this many ms of them
    /// (every scorer's), falling back to the reservoir; older ones are deleted after a fit.
    pub window_ms: u64,
}

impl TrainingConfig {
    /// The fewest vectors a fit takes, from Postgres or the reservoir.
    pub fn fit_rows(&self) -> usize {
        self.min_samples.max(2)
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            interval_ms: 6 * 3_600_000,
            min_samples: 256,
            reservoir: 4_096,
            min_key_age_ms: 3_600_000,
            sample_interval_ms: 3_600_000,
            min_history_ms: 86_400_000,
            trees: 100,
            sample_size: 256,
            contamination: 0.01,
            seed: 1,
            max_drift: 0.1,
            window_ms: 7 * 86_400_000,
        }
    }
}

/// Model directory override.
pub const ENV_MODEL_DIR: &str = "PALISADE_MODEL_DIR";

impl DetectConfig {
    /// Applies `PALISADE_MODEL_DIR`.
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        if let Some(dir) = env(ENV_MODEL_DIR).filter(|d| !d.is_empty()) {
            self.model_dir = Some(PathBuf::from(dir));
        }
    }

    /// The thresholds of `tier`.
    pub fn thresholds(&self, tier: &str) -> &TierThresholds {
        self.tiers.get(tier).unwrap_or(&self.default_thresholds)
    }

    /// Pushes every problem, each naming its key.
    pub fn validate(&self, p: &mut Vec<String>) {
        for (key, v) in [
            ("min_requests", self.min_requests),
            ("score_every", u64::from(self.score_every)),
            ("score_interval_ms", self.score_interval_ms),
            ("risk_half_life_ms", self.risk_half_life_ms),
            ("max_keys", self.max_keys as u64),
            ("models_kept", self.models_kept as u64),
            ("state_queue", self.state_queue as u64),
            ("idle_ms", self.idle_ms),
            ("training.interval_ms", self.training.interval_ms),
            ("training.trees", self.training.trees as u64),
            ("training.window_ms", self.training.window_ms),
        ] {
            if v == 0 {
                p.push(format!("detect.{key}: must be > 0"));
            }
        }
        if !(self.tail_quantile > 0.0 && self.tail_quantile < 1.0) {
            p.push("detect.tail_quantile: must be in (0, 1)".to_owned());
        }
        if !(self.tail_scale > 0.0 && self.tail_scale.is_finite()) {
            p.push("detect.tail_scale: must be > 0".to_owned());
        }
        if !(self.score_smoothing > 0.0 && self.score_smoothing <= 1.0) {
            p.push("detect.score_smoothing: must be in (0, 1]".to_owned());
        }
        let t = &self.training;
        if t.sample_size < 2 {
            p.push("detect.training.sample_size: must be at least 2".to_owned());
        }
        if t.min_samples < t.sample_size.clamp(2, 16) {
            p.push(
                "detect.training.min_samples: must be at least 2 (and 16 for real use)".to_owned(),
            );
        }
        if t.reservoir < t.min_samples {
            p.push("detect.training.reservoir: must be at least training.min_samples".to_owned());
        }
        if !(t.contamination > 0.0 && t.contamination <= 0.5) {
            p.push("detect.training.contamination: must be in (0, 0.5]".to_owned());
        }
        if !(t.max_drift > 0.0 && t.max_drift <= 1.0) {
            p.push("detect.training.max_drift: must be in (0, 1]".to_owned());
        }
        if self
            .model_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            p.push("detect.model_dir: must not be empty".to_owned());
        }
        if let Err(e) = self
            .default_thresholds
            .validate("detect.default_thresholds")
        {
            p.push(e);
        }
        for (name, t) in &self.tiers {
            if let Err(e) = t.validate(&format!("detect.tiers.{name}")) {
                p.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_shadow() {
        let c = DetectConfig::default();
        let mut p = Vec::new();
        c.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        assert!(c.enabled && !c.enforce);
        assert_eq!(c.state, StateBackend::Redis);
        let m: DetectConfig = toml::from_str("state = \"memory\"").unwrap();
        assert_eq!(m.state, StateBackend::Memory);
        assert!(toml::from_str::<DetectConfig>("state = \"disk\"").is_err());
    }

    #[test]
    fn validation_names_every_key() {
        let mut c = DetectConfig {
            score_every: 0,
            ..DetectConfig::default()
        };
        c.training.contamination = 0.7;
        c.training.max_drift = 0.0;
        c.tiers.insert(
            "free".into(),
            TierThresholds {
                flag: 0.9,
                throttle: 0.5,
                block: 0.95,
            },
        );
        let mut p = Vec::new();
        c.validate(&mut p);
        let all = p.join("\n");
        for key in [
            "detect.score_every",
            "detect.training.contamination",
            "detect.training.max_drift",
            "detect.tiers.free",
        ] {
            assert!(all.contains(key), "{key} missing in {all}");
        }
    }

    #[test]
    fn tiers_fall_back_to_the_default() {
        let c: DetectConfig = toml::from_str(
            "enforce = true\n[tiers.free]\nflag = 0.5\nthrottle = 0.6\nblock = 0.7\n",
        )
        .unwrap();
        assert!(c.enforce);
        assert_eq!(c.thresholds("free").flag, 0.5);
        assert_eq!(c.thresholds("standard"), &TierThresholds::default());
    }
}
