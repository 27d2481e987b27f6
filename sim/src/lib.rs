//! `palisade-sim`: seeded, labelled populations of normal clients and attackers, replayed
//! through the scorer (simulated time, a week in minutes) or the whole stack through Envoy
//! (real time), and a detection-quality report.
//!
//! # Layout
//! - [`dist`]: the seeded generator and the distributions (log-normal, Pareto, Zipf).
//! - [`catalogue`]: the API the populations call (endpoints, ID spaces, parameters).
//! - [`request`]: [`request::SimRequest`], one labelled request.
//! - [`normal`]: normal keys (interactive, integrations, pollers; drifting habits).
//! - [`attack`]: the attackers, one actor each.
//! - [`scenario`]: a [`scenario::ScenarioSet`] built into actors and merged into one
//!   time-ordered stream (pure).
//! - [`driver`]: sends the stream with bounded concurrency, each key's requests in order:
//!   to the scorer (`Check` + `Report`), through Envoy, or straight to the backend.
//! - [`tally`]: what came back, per scenario and per key.
//! - [`report`]: precision, recall, false-positive rate, time to detection; JSON and a table.
//! - [`spawn`]: an in-process scorer (from a TOML file) and backend.

pub mod attack;
pub mod catalogue;
pub mod dist;
pub mod driver;
pub mod normal;
pub mod report;
pub mod request;
pub mod scenario;
pub mod spawn;
pub mod tally;

use std::{sync::Arc, time::Instant};

use driver::{BackendTarget, Pace, ScorerTarget};
use report::{Report, RunInfo};
use scenario::ScenarioSet;

/// Replays `set` through the scorer at `addr` in simulated time, direct calls to `backend`.
pub async fn run_via_scorer(
    set: &ScenarioSet,
    addr: &str,
    backend: Option<&str>,
    workers: usize,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let target = ScorerTarget::connect(addr, backend.map(BackendTarget::new)).await?;
    let tally = driver::drive(Arc::new(target), set.stream(), workers, Pace::Flat).await;
    Ok(Report::build(
        tally,
        RunInfo {
            driver: format!("via-scorer {addr}"),
            seed: set.seed,
            simulated_days: set.span_ms as f64 / 86_400_000.0,
            wall_time_s: started.elapsed().as_secs_f64(),
        },
    ))
}
