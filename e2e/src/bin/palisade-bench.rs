//! `palisade-bench`: the figures behind `just bench` and docs/performance.md.
//!
//! `gateway`: latency at a fixed rate through the real Envoy with the Palisade filter and
//! scorer, and through the same Envoy config with the wasm filter removed, in one run,
//! alternating the two so drift on a shared machine hits both alike.
//!
//! `check`: the Check RPC over tonic, in-process windows or (`--redis URL`) Redis ones; with
//! Redis it also measures Redis commands per Check from `INFO commandstats`.
//!
//! `limiter-algorithms`: the exact sliding log against the approximate sliding counter in
//! Redis: script calls and Redis commands per second, bytes per key, and the counter's
//! admission error against the log on the same arrivals.

use std::{fs, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use palisade_e2e::{
    ScorerMode, Stack, StackOptions, limiter_bench,
    load::{self, LoadReport, LoadSpec},
    scorer_config, workspace_root,
};
use palisade_proto::v1::scorer_client::ScorerClient;
use palisade_scorer::{
    config::{PolicyConfig, WindowConfig},
    detect::StateBackend,
};

#[derive(Debug, Parser)]
#[command(about = "Palisade benchmarks (loopback only)")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Added latency of the filter + scorer at a fixed request rate.
    Gateway {
        /// Requests per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Seconds of measurement per round.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds (each measures baseline then filter).
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Envoy worker threads.
        #[arg(long, default_value_t = 1)]
        concurrency: u32,
    },
    /// Check RPC over tonic: latency at a fixed rate, and throughput with a closed loop.
    Check {
        /// Scorer address; an in-process scorer on a free port when omitted.
        #[arg(long)]
        addr: Option<String>,
        /// Requests per second of the fixed-rate run.
        #[arg(long, default_value_t = 5_000)]
        rate: u32,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent callers of the throughput run.
        #[arg(long, default_value_t = 64)]
        callers: usize,
        /// Keep the windows in this Redis (`redis://127.0.0.1:6390`); in-process when omitted.
        /// Use a private Redis: command counts are read from its `INFO commandstats`.
        #[arg(long)]
        redis: Option<String>,
        /// The scorer's Redis command timeout (`redis.timeout_ms`).
        #[arg(long, default_value_t = 15)]
        redis_timeout_ms: u64,
        /// Turn behavioural detection off in the in-process scorer (`detect.enabled = false`),
        /// to compare with the default (on).
        #[arg(long)]
        no_detect: bool,
        /// Keep detection state in memory only (`detect.state = "memory"`), to compare with
        /// the default (snapshots in Redis when `--redis` is given).
        #[arg(long)]
        detect_state_memory: bool,
    },
    /// Exact log vs approximate counter in Redis.
    LimiterAlgorithms {
        /// A private Redis (its statistics are reset).
        #[arg(long)]
        redis: String,
        /// Seconds of each throughput run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Security events: events/s into Postgres, Check latency with recording on vs off,
    /// spool replay after an outage.
    Events {
        /// Postgres whose user may create a scratch database.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Outcomes per Report call.
        #[arg(long, default_value_t = 500)]
        report_batch: usize,
        /// Concurrent Report senders.
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// Check calls per second in the on/off comparison.
        #[arg(long, default_value_t = 5_000)]
        check_rate: u32,
        /// Background events per second during the on/off comparison.
        #[arg(long, default_value_t = 5_000)]
        background_events: u32,
        /// Rounds of (off, on).
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Events spooled during the simulated outage.
        #[arg(long, default_value_t = 500_000)]
        outage_events: u64,
        /// `events.batch_size` of the scorer.
        #[arg(long, default_value_t = 5_000)]
        batch_size: usize,
        /// `events.writers` of the scorer.
        #[arg(long, default_value_t = 3)]
        writers: usize,
    },
    /// A fixed-rate load against any loopback URL (e.g. the `just up` gateway).
    Load {
        /// Target URL.
        #[arg(long)]
        url: String,
        /// Requests per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `name: value` headers.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Gateway {
            rate,
            seconds,
            rounds,
            concurrency,
        } => gateway(rate, seconds, rounds, concurrency).await,
        Bench::Check {
            addr,
            rate,
            seconds,
            callers,
            redis,
            redis_timeout_ms,
            no_detect,
            detect_state_memory,
        } => {
            check(
                addr,
                rate,
                seconds,
                callers,
                redis,
                redis_timeout_ms,
                (!no_detect).then_some(if detect_state_memory {
                    StateBackend::Memory
                } else {
                    StateBackend::Redis
                }),
            )
            .await
        }
        Bench::LimiterAlgorithms { redis, seconds } => {
            let figures = limiter_bench::run(&redis, seconds).await?;
            let out = workspace_root().join("target/bench");
            fs::create_dir_all(&out)?;
            let path = out.join("limiter-algorithms.json");
            fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
            println!("written {}", path.display());
            Ok(())
        }
        Bench::Events {
            database_url,
            seconds,
            report_batch,
            senders,
            check_rate,
            background_events,
            rounds,
            outage_events,
            batch_size,
            writers,
        } => {
            let report = palisade_e2e::telemetry::run(&palisade_e2e::telemetry::TelemetryBench {
                database_url,
                seconds,
                report_batch,
                senders,
                check_rate,
                background_events,
                rounds,
                outage_events,
                batch_size,
                writers,
            })
            .await?;
            let dir = workspace_root().join("target/bench");
            fs::create_dir_all(&dir)?;
            fs::write(
                dir.join("events.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            println!(
                "events into Postgres: {:.0}/s sustained ({} events; Report ingest {:.0}/s)",
                report.persisted_per_s, report.events, report.ingest_per_s
            );
            for (i, (off, on)) in report.check_off.iter().zip(&report.check_on).enumerate() {
                println!(
                    "Check at {check_rate}/s, round {i}: recording off p50 {} p99 {} ms | on p50 {} p99 {} ms",
                    ms(off.p50_us),
                    ms(off.p99_us),
                    ms(on.p50_us),
                    ms(on.p99_us)
                );
            }
            println!(
                "spool replay after an outage: {:.0} events/s ({} events)",
                report.replay_per_s, report.replayed
            );
            Ok(())
        }
        Bench::Load {
            url,
            rate,
            seconds,
            headers,
        } => {
            let headers = headers
                .iter()
                .map(|h| {
                    h.split_once(':')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .with_context(|| format!("header `{h}` is not `name: value`"))
                })
                .collect::<anyhow::Result<_>>()?;
            let r = load::run(&LoadSpec {
                url,
                rate,
                duration: Duration::from_secs(seconds),
                headers,
                max_in_flight: 256,
                timeout: Duration::from_secs(5),
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
    }
}

async fn measure(
    with_filter: bool,
    rate: u32,
    seconds: u64,
    concurrency: u32,
) -> anyhow::Result<LoadReport> {
    // A bench key whose limit the load never reaches, so every request takes the full path.
    let mut scorer = scorer_config();
    scorer.limits.keys.insert(
        "alice".into(),
        PolicyConfig {
            windows: vec![WindowConfig::new(1_000_000, 1_000)],
            ..PolicyConfig::default()
        },
    );
    let stack = Stack::start(StackOptions {
        with_filter,
        concurrency,
        scorer: ScorerMode::Real(Box::new(scorer)),
        log_level: "warn",
        ..StackOptions::default()
    })
    .await?;
    let spec = |secs| LoadSpec {
        url: format!("{}/api/health", stack.url),
        rate,
        duration: Duration::from_secs(secs),
        headers: vec![("x-api-key".into(), "pk_demo_alice".into())],
        max_in_flight: 256,
        timeout: Duration::from_secs(5),
    };
    // Warm-up: connections, the wasm VM, the scorer's HTTP/2 connection.
    load::run(&spec(2)).await?;
    let report = load::run(&spec(seconds)).await?;
    // Without the filter nothing signs a gateway token, so the zero-trust backend answers
    // 401 to every request: that is the baseline's expected answer (the backend's refusal
    // skips one HMAC, a few microseconds). Anything else makes the figures meaningless.
    let expected = if with_filter { 200 } else { 401 };
    anyhow::ensure!(
        report.statuses.get(&expected) == Some(&report.sent),
        "expected {} answers {expected}, got {:?} and {} errors\n{}",
        report.sent,
        report.statuses,
        report.errors,
        stack.envoy_log()
    );
    Ok(report)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

async fn gateway(rate: u32, seconds: u64, rounds: u32, concurrency: u32) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for with_filter in [false, true] {
            let r = measure(with_filter, rate, seconds, concurrency).await?;
            let name = if with_filter {
                "envoy + palisade filter + scorer"
            } else {
                "envoy, no filter (baseline)"
            };
            println!(
                "round {round}  {name:<34} p50 {:>7} ms  p90 {:>7} ms  p99 {:>7} ms  p99.9 {:>7} ms  max {:>7} ms  ({} req, {:.0} req/s)",
                ms(r.p50_us),
                ms(r.p90_us),
                ms(r.p99_us),
                ms(r.p999_us),
                ms(r.max_us),
                r.sent,
                r.achieved_rps
            );
            rows.push((round, with_filter, r));
        }
    }
    println!();
    for round in 1..=rounds {
        let get = |f: bool| {
            rows.iter()
                .find(|(r, w, _)| *r == round && *w == f)
                .map(|(_, _, x)| x)
        };
        if let (Some(base), Some(filter)) = (get(false), get(true)) {
            println!(
                "round {round}: filter adds p50 {} ms, p99 {} ms (target: p99 at most 1 ms)",
                ms(filter.p50_us.saturating_sub(base.p50_us)),
                ms(filter.p99_us.saturating_sub(base.p99_us)),
            );
        }
    }
    let out = workspace_root().join("target/bench");
    fs::create_dir_all(&out)?;
    let json: Vec<_> = rows
        .iter()
        .map(|(round, with_filter, r)| serde_json::json!({ "round": round, "with_filter": with_filter, "report": r }))
        .collect();
    let path = out.join("gateway.json");
    fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("written {}", path.display());
    Ok(())
}

async fn check(
    addr: Option<String>,
    rate: u32,
    seconds: u64,
    callers: usize,
    redis: Option<String>,
    redis_timeout_ms: u64,
    detect: Option<StateBackend>,
) -> anyhow::Result<()> {
    let mut scorer = scorer_config();
    scorer.detect.enabled = detect.is_some();
    if let Some(state) = detect {
        scorer.detect.state = state;
    }
    let stats = match &redis {
        Some(url) => {
            scorer.redis.url = url.clone();
            scorer.redis.timeout_ms = redis_timeout_ms;
            scorer.redis.key_prefix = format!("palisade-bench:{}:", std::process::id());
            Some(limiter_bench::Stats::connect(url).await?)
        }
        None => None,
    };
    scorer.limits.tiers.insert(
        "bench".into(),
        PolicyConfig {
            windows: vec![
                WindowConfig::new(1_000_000, 1_000),
                WindowConfig::new(100_000_000, 3_600_000),
            ],
            ..PolicyConfig::default()
        },
    );
    scorer.limits.default_tier = "bench".into();
    let running = match addr {
        Some(_) => None,
        None => Some(palisade_scorer::RunningScorer::start(scorer).await?),
    };
    let url = match (&addr, &running) {
        (Some(a), _) => format!("http://{a}"),
        (None, Some(r)) => format!("http://{}", r.grpc_addr),
        (None, None) => unreachable!("one of the two is set"),
    };
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;

    // Throughput: `callers` concurrent loops for `seconds`, each call awaited before the next.
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let mut client = ScorerClient::new(channel.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut failed = 0u64;
            while std::time::Instant::now() < deadline {
                if client
                    .check(load::bench_check_request(n * callers as u64 + c as u64))
                    .await
                    .is_err()
                {
                    failed += 1;
                }
                n += 1;
            }
            (n, failed)
        });
    }
    let (mut calls, mut failed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (n, f) = r?;
        calls += n;
        failed += f;
    }
    let throughput = calls as f64 / started.elapsed().as_secs_f64();
    println!(
        "Check throughput: {throughput:.0} calls/s with {callers} callers over one HTTP/2 connection ({calls} calls, {failed} failed)"
    );
    let mut commands_per_check = None;
    let mut degraded_in_throughput = 0;
    if let (Some(stats), Some(r)) = (&stats, &running) {
        let degraded = degraded_decisions(r);
        let skipped = metric_sum(r, "palisade_redis_breaker_skipped_total");
        let c = stats.client_commands().await?;
        // Checks the breaker let through to Redis (timed-out ones included: they were sent).
        let sent = calls.saturating_sub(skipped);
        let per = c as f64 / sent.max(1) as f64;
        println!(
            "Redis: {c} client commands (EVALSHA/EVAL/SCRIPT) for {sent} Checks sent to Redis = {per:.4} round trips per Check; {degraded} of {calls} Checks degraded ({skipped} skipped by the open breaker) -> {:.0} Redis-decided Checks/s",
            calls.saturating_sub(degraded) as f64 * throughput / calls.max(1) as f64
        );
        let calls_by_name = stats.calls().await?;
        let named = |n: &str| calls_by_name.get(n).copied().unwrap_or(0);
        println!(
            "  of which: evalsha {} eval {} | get {} (detection state, pipelined with the script on a key's first sight: no extra round trip) | set {} (detection state, write-behind off the Check path)",
            named("evalsha"),
            named("eval"),
            named("get"),
            named("set")
        );
        commands_per_check = Some(per);
        degraded_in_throughput = degraded;
        stats.reset().await?;
    }

    // Latency at a fixed rate.
    let report = load::check_at_fixed_rate(channel, url.clone(), rate, seconds).await?;
    let degraded_in_latency = running.as_ref().map_or(0, |r| {
        degraded_decisions(r).saturating_sub(degraded_in_throughput)
    });
    println!(
        "Check latency at {rate}/s: p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  ({} ok of {}, {degraded_in_latency} degraded)",
        ms(report.p50_us),
        ms(report.p90_us),
        ms(report.p99_us),
        ms(report.p999_us),
        ms(report.max_us),
        report.ok,
        report.sent
    );
    let out = workspace_root().join("target/bench");
    fs::create_dir_all(&out)?;
    let path = out.join(match (redis.is_some(), detect.is_some()) {
        (true, _) => "check-redis.json",
        (false, true) => "check.json",
        (false, false) => "check-no-detect.json",
    });
    fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({
            "throughput_calls_per_s": throughput, "callers": callers, "calls": calls, "failed": failed,
            "redis": redis.is_some(), "redis_round_trips_per_check": commands_per_check,
            "redis_timeout_ms": redis_timeout_ms,
            "detect": detect.is_some(), "detect_state": detect.map(|s| format!("{s:?}").to_lowercase()),
            "degraded_in_throughput_run": degraded_in_throughput,
            "degraded_in_fixed_rate_run": degraded_in_latency,
            "fixed_rate": report,
        }))?,
    )?;
    println!("written {}", path.display());
    if let Some(r) = running {
        r.stop().await?;
    }
    Ok(())
}

fn metric_sum(r: &palisade_scorer::RunningScorer, prefix: &str) -> u64 {
    r.engine
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn degraded_decisions(r: &palisade_scorer::RunningScorer) -> u64 {
    metric_sum(r, "palisade_limiter_degraded_decisions_total")
}
