//! Subcommands of the `palisade-scorer` binary beyond `serve`.
//!
//! - [`model`]: `model fit | score | eval`, the offline Isolation Forest tools.

pub mod model;
