//! Behavioural detection: an Isolation Forest over per-key feature vectors.
//!
//! # Layout
//! - [`forest`]: the Isolation Forest itself, flat trees, scores and per-feature explanations
//!   (pure).
//! - [`model`]: a forest bound to its feature schema, threshold and training metadata; the
//!   model file format.
//! - [`features`]: per-key behavioural features over 1 min, 1 h and 24 h and against the
//!   key's own baseline (pure; time passed in).
//! - [`profile`]: object IDs per route, parameter and client diversity (low-and-slow signals).
//! - [`sketch`]: decayed counters, HyperLogLog and capped maps that bound memory per key.
//! - [`snapshot`]: a key's detection state as versioned, checksummed bytes (pure).
//! - [`state`]: key state in Redis: read-through on first sight, write-behind after scoring.
//! - [`detector`]: the Check path's detection step (features, cadence, risk, verdict) and
//!   retraining off the request path with its drift gate.
//! - [`config`]: the `detect` section of the configuration.
//! - [`risk`]: a key's decaying risk and the graduated, per-tier, shadow-by-default response.
//! - [`dataset`]: strict numeric CSV for the offline CLI.
//! - [`evaluation`]: ROC AUC and precision/recall against labels.

pub mod config;
pub mod dataset;
pub mod detector;
pub mod evaluation;
pub mod features;
pub mod forest;
pub mod model;
pub mod profile;
pub mod risk;
pub mod samples;
pub mod sketch;
pub mod snapshot;
pub mod state;
pub mod store;

pub use config::{DetectConfig, StateBackend, TrainingConfig};
pub use detector::{ActiveModel, Assessment, DetectMetrics, Detector, Observation, Retrained};
pub use forest::{ForestError, ForestParams, IsolationForest};
pub use model::{Model, ModelError, Schema, ThresholdSpec};
