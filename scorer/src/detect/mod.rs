//! Behavioural detection: an Isolation Forest over per-key feature vectors.
//!
//! # Layout
//! - [`forest`]: the Isolation Forest itself, flat trees, scores and per-feature explanations
//!   (pure).
//! - [`model`]: a forest bound to its feature schema, threshold and training metadata; the
//!   model file format.
//! - [`dataset`]: strict numeric CSV for the offline CLI.
//! - [`evaluation`]: ROC AUC and precision/recall against labels.

pub mod dataset;
pub mod evaluation;
pub mod forest;
pub mod model;

pub use forest::{ForestError, ForestParams, IsolationForest};
pub use model::{Model, ModelError, Schema, ThresholdSpec};
