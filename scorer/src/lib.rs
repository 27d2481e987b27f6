//! `palisade-scorer`: the sidecar that decides on every request the Envoy filter authenticated.
//!
//! # Layout
//! - [`config`]: the TOML file, environment overrides and validation.
//! - [`limiter`]: rate-limit policies and window stores (pure algorithms in `limiter::window`).
//! - [`detect`]: behavioural features, the Isolation Forest and model files (pure).
//! - [`verdict`]: rule outcomes to the verdict the filter enforces (pure).
//! - [`events`]: security events: spool, Postgres writer, `events tail`.
//! - [`engine`]: validates a request and runs limiter and verdict; no I/O.
//! - [`service`]: the gRPC edge (`palisade.v1.Scorer`).
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `POST /admin/reload`.
//! - [`reload`]: re-reading the policies on SIGHUP or the admin endpoint.
//! - [`metrics`]: the Prometheus registry.
//! - [`server`]: wiring, graceful shutdown, and [`server::RunningScorer`] for tests.
//! - [`error`]: [`error::ScorerError`] and its mapping to gRPC status codes.

pub mod admin;
pub mod alerts;
pub mod config;
pub mod detect;
pub mod engine;
pub mod error;
pub mod events;
pub mod limiter;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod service;
pub mod verdict;

pub use config::Config;
pub use engine::Engine;
pub use error::ScorerError;
pub use server::RunningScorer;
