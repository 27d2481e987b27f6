//! `palisade-sim`: the attack simulator's command line.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{ArgGroup, Parser};
use palisade_sim::{
    driver::{self, BackendTarget, EnvoyTarget, Pace},
    report::{Report, RunInfo},
    run_via_scorer,
    scenario::{Attack, ScenarioSet},
    spawn::{LocalBackend, start_scorer},
};

/// Seeded normal populations and attacks, replayed through Palisade; prints a detection
/// table and writes a JSON report.
#[derive(Debug, Parser)]
#[command(name = "palisade-sim", version)]
#[command(group(ArgGroup::new("driver").required(true).args(["via_scorer", "spawn_scorer", "via_envoy"])))]
struct Args {
    /// Call Check and Report on the scorer at ADDR (host:port) with simulated timestamps.
    #[arg(long, value_name = "ADDR")]
    via_scorer: Option<String>,
    /// Start a scorer in this process with the TOML file CONFIG and replay through it.
    #[arg(long, value_name = "CONFIG")]
    spawn_scorer: Option<PathBuf>,
    /// Drive the whole stack through Envoy at URL in real time.
    #[arg(long, value_name = "URL")]
    via_envoy: Option<String>,
    /// Simulated days (scorer drivers).
    #[arg(long, default_value_t = 7.0)]
    days: f64,
    /// Seed of every population and attack.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Normal keys.
    #[arg(long, default_value_t = 200)]
    normal_keys: usize,
    /// Attack scenarios, comma-separated (default: all of them; `none` for none).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// The backend for direct (bypass) calls; the scorer drivers start one in-process if unset.
    #[arg(long, value_name = "URL")]
    backend: Option<String>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/sim/report.json")]
    report: PathBuf,
    /// Requests in flight (keys are spread over this many senders, each in order).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Via Envoy: at most this many requests per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Via Envoy: seconds of real time to run.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Via Envoy: a key the gateway knows, `KEY_ID=RAW_KEY` (repeatable); the simulated keys
    /// are mapped onto these. Default: the demo keys of `just up`.
    #[arg(long = "api-key", value_name = "KEY_ID=RAW_KEY")]
    api_keys: Vec<String>,
}

fn attacks(names: &[String]) -> anyhow::Result<Vec<Attack>> {
    if names.is_empty() {
        return Ok(Attack::ALL.to_vec());
    }
    if names.len() == 1 && names[0] == "none" {
        return Ok(Vec::new());
    }
    names
        .iter()
        .map(|n| n.trim().parse::<Attack>().map_err(anyhow::Error::msg))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.days > 0.0 && args.days <= 90.0) {
        bail!("--days: must be in (0, 90]");
    }
    let mut set = ScenarioSet::days(args.seed, args.days, args.normal_keys);
    set.attacks = attacks(&args.scenarios)?;
    let wants_backend = set.attacks.contains(&Attack::Bypass);
    let local_backend = match (&args.backend, wants_backend) {
        (None, true) => Some(LocalBackend::start(args.seed).await?),
        _ => None,
    };
    let backend = args
        .backend
        .clone()
        .or_else(|| local_backend.as_ref().map(|b| b.url.clone()));

    let report = if let Some(url) = &args.via_envoy {
        via_envoy(&args, set, url, backend).await?
    } else if let Some(config) = &args.spawn_scorer {
        let scorer = start_scorer(config).await?;
        let addr = scorer.grpc_addr.to_string();
        eprintln!(
            "scorer from {} on {addr}; replaying {} simulated days, {} normal keys, {} attacks",
            config.display(),
            args.days,
            args.normal_keys,
            set.attacks.len()
        );
        let r = run_via_scorer(&set, &addr, backend.as_deref(), args.concurrency).await;
        scorer.stop().await.context("stopping the scorer")?;
        r?
    } else {
        let addr = args.via_scorer.as_deref().unwrap_or_default();
        run_via_scorer(&set, addr, backend.as_deref(), args.concurrency).await?
    };
    drop(local_backend);

    print!("{}", report.table());
    if let Some(dir) = args.report.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.report, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.report.display()))?;
    println!("report: {}", args.report.display());
    if report.requests > 0 && report.errors == report.requests {
        bail!("every request failed");
    }
    Ok(())
}

async fn via_envoy(
    args: &Args,
    mut set: ScenarioSet,
    url: &str,
    backend: Option<String>,
) -> anyhow::Result<Report> {
    let keys: Vec<(String, String)> = if args.api_keys.is_empty() {
        vec![
            ("alice".to_owned(), "pk_demo_alice".to_owned()),
            ("bob".to_owned(), "pk_demo_bob".to_owned()),
        ]
    } else {
        args.api_keys
            .iter()
            .map(|k| {
                k.split_once('=')
                    .map(|(id, raw)| (id.to_owned(), raw.to_owned()))
                    .with_context(|| format!("--api-key `{k}`: expected KEY_ID=RAW_KEY"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    set.start_ms = now_ms;
    set.span_ms = (args.duration.max(1) * 1_000) as i64;
    set.warmup_ms = set.span_ms * 2 / 7;
    let started = Instant::now();
    let target = EnvoyTarget::new(url, keys, backend.as_deref().map(BackendTarget::new));
    let pace = Pace::RealTime {
        sim_start_ms: now_ms,
        max_rate: args.rate,
    };
    let tally = driver::drive(Arc::new(target), set.stream(), args.concurrency, pace).await;
    Ok(Report::build(
        tally,
        RunInfo {
            driver: format!("via-envoy {url}"),
            seed: set.seed,
            simulated_days: set.span_ms as f64 / 86_400_000.0,
            wall_time_s: started.elapsed().as_secs_f64(),
        },
    ))
}
