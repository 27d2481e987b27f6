//! The security-event benchmark behind `palisade-bench events`: sustained events/s from
//! `Report` into Postgres, Check latency with event recording on and off in the same run,
//! and the rate at which a spool filled during an outage is replayed. Loopback only; makes
//! and drops its own database.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use palisade_proto::v1::{Outcome, ReportRequest, RequestOutcome, scorer_client::ScorerClient};
use palisade_scorer::{
    Config, RunningScorer,
    config::{PolicyConfig, WindowConfig},
    events::config::DatabaseUrl,
};
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;

use crate::{
    load::{self, LoadReport},
    scorer_config,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct TelemetryBench {
    /// A Postgres URL whose user may create databases.
    pub database_url: String,
    /// Seconds of Report load for the throughput figure.
    pub seconds: u64,
    /// Outcomes per Report call (the filter sends up to its batch size per tick).
    pub report_batch: usize,
    /// Concurrent Report senders.
    pub senders: usize,
    /// Check calls per second in the on/off comparison.
    pub check_rate: u32,
    /// Background events per second during the on/off comparison.
    pub background_events: u32,
    /// Rounds of (off, on).
    pub rounds: u32,
    /// Events spooled during the simulated outage.
    pub outage_events: u64,
    /// `events.batch_size`.
    pub batch_size: usize,
    /// `events.writers`.
    pub writers: usize,
}

/// Outcome of [`run`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct TelemetryReport {
    /// Events acknowledged by Report per second (into the spool).
    pub ingest_per_s: f64,
    /// Events persisted per second, from the first Report until Postgres had them all.
    pub persisted_per_s: f64,
    /// Events in the throughput run.
    pub events: u64,
    /// Check latency runs with recording off, then on, per round.
    pub check_off: Vec<LoadReport>,
    /// Check latency with recording on.
    pub check_on: Vec<LoadReport>,
    /// Events replayed from the spool after the outage, per second.
    pub replay_per_s: f64,
    /// Events replayed.
    pub replayed: u64,
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}{:x}", std::process::id())
}

fn with_database(base: &str, db: &str) -> anyhow::Result<String> {
    let (head, _) = base
        .rsplit_once('/')
        .context("DATABASE_URL has no database part")?;
    Ok(format!("{head}/{db}"))
}

fn config(b: &TelemetryBench, url: Option<&str>, spool: &std::path::Path) -> Config {
    let mut c = scorer_config();
    c.events.batch_size = b.batch_size;
    c.events.writers = b.writers;
    c.limits.tiers.insert(
        "bench".into(),
        PolicyConfig {
            windows: vec![WindowConfig::new(1_000_000_000, 1_000)],
            ..PolicyConfig::default()
        },
    );
    c.limits.default_tier = "bench".into();
    c.events.spool_dir = Some(spool.to_owned());
    c.events.shutdown_flush_ms = 120_000;
    if let Some(u) = url {
        c.events.database_url = DatabaseUrl::new(u);
    }
    c
}

fn outcome(i: u64) -> RequestOutcome {
    RequestOutcome {
        request_id: format!("bench-{i:016x}"),
        key_id: format!("bench-key-{}", i % 1_000),
        tenant: "bench".into(),
        tier: "bench".into(),
        client_ip: "10.1.2.3".into(),
        method: "GET".into(),
        path: format!("/api/users/{}", i % 10_000),
        user_agent: "palisade-bench/1.0 (+https://example.invalid)".into(),
        outcome: if i.is_multiple_of(50) {
            Outcome::Throttled as i32
        } else {
            Outcome::Allowed as i32
        },
        status: 200,
        upstream_latency_us: 800,
        gateway_latency_us: 250,
        request_bytes: 120,
        response_bytes: 900,
        timestamp_ms: palisade_scorer::events::now_ms(),
        reason: "ok".into(),
        anomaly_score: 0.12,
        model_version: "bench".into(),
        backend_latency_us: 600,
        route: String::new(),
    }
}

/// Sends Reports of `batch` outcomes from `senders` tasks for `duration` (or until `total`
/// events when set); returns the events acknowledged.
async fn pump(
    channel: Channel,
    senders: usize,
    batch: usize,
    duration: Duration,
    total: Option<u64>,
    per_second: Option<u32>,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + duration;
    let per_sender = total.map(|t| t / senders as u64);
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let mut client = ScorerClient::new(channel.clone());
        tasks.spawn(async move {
            let mut sent = 0u64;
            let mut next = (s as u64) << 40;
            let pace = per_second.map(|r| {
                Duration::from_secs_f64(batch as f64 * senders as f64 / f64::from(r.max(1)))
            });
            let mut tick = pace.map(tokio::time::interval);
            while Instant::now() < deadline && per_sender.is_none_or(|t| sent < t) {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let outcomes: Vec<_> = (next..next + batch as u64).map(outcome).collect();
                next += batch as u64;
                let r = client
                    .report(ReportRequest {
                        outcomes,
                        dropped: 0,
                    })
                    .await?;
                sent += u64::from(r.get_ref().accepted);
            }
            anyhow::Ok(sent)
        });
    }
    let mut sent = 0;
    while let Some(r) = tasks.join_next().await {
        sent += r??;
    }
    Ok(sent)
}

async fn channel(scorer: &RunningScorer) -> anyhow::Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{}", scorer.grpc_addr))?
            .tcp_nodelay(true)
            .connect()
            .await?,
    )
}

async fn count(url: &str) -> anyhow::Result<i64> {
    let mut c = PgConnection::connect(url).await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut c)
        .await
        .unwrap_or(0))
}

async fn wait_for_rows(url: &str, rows: u64, limit: Duration) -> anyhow::Result<Instant> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if count(url).await? as u64 >= rows {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("Postgres did not get {rows} events within {limit:?}")
}

async fn check_latency(
    b: &TelemetryBench,
    url: Option<&str>,
    rate: u32,
    seconds: u64,
    background: u32,
) -> anyhow::Result<LoadReport> {
    let spool = tempfile::tempdir()?;
    let mut cfg = config(b, url, spool.path());
    if url.is_none() {
        cfg.events.enabled = false;
    }
    let scorer = RunningScorer::start(cfg).await?;
    let ch = channel(&scorer).await?;
    let bg = tokio::spawn(pump(
        ch.clone(),
        2,
        200,
        Duration::from_secs(seconds + 1),
        None,
        Some(background),
    ));
    let url = format!("http://{}", scorer.grpc_addr);
    let report = load::check_at_fixed_rate(ch, url, rate, seconds).await?;
    bg.await??;
    scorer.stop().await?;
    Ok(report)
}

/// Runs the three measurements.
pub async fn run(b: &TelemetryBench) -> anyhow::Result<TelemetryReport> {
    let db = format!("palisade_bench_{}", unique());
    let mut admin = PgConnection::connect(&b.database_url)
        .await
        .context("connecting to DATABASE_URL")?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let url = with_database(&b.database_url, &db)?;
    let result = measure(b, &url).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    result
}

async fn measure(b: &TelemetryBench, url: &str) -> anyhow::Result<TelemetryReport> {
    // 1. Throughput: Report as fast as the senders go, until Postgres has every event.
    let spool = tempfile::tempdir()?;
    let scorer = RunningScorer::start(config(b, Some(url), spool.path())).await?;
    // The first batch migrates and creates partitions; keep that out of the figure.
    let ch = channel(&scorer).await?;
    pump(ch.clone(), 1, 1, Duration::from_secs(5), Some(1), None).await?;
    wait_for_rows(url, 1, Duration::from_secs(30)).await?;
    let started = Instant::now();
    let events = pump(
        ch,
        b.senders,
        b.report_batch,
        Duration::from_secs(b.seconds),
        None,
        None,
    )
    .await?;
    let ingest_per_s = events as f64 / started.elapsed().as_secs_f64();
    let done = wait_for_rows(url, events + 1, Duration::from_secs(300)).await?;
    let persisted_per_s = events as f64 / (done - started).as_secs_f64();
    scorer.stop().await?;
    eprintln!(
        "throughput: {ingest_per_s:.0} events/s ingested, {persisted_per_s:.0} events/s into Postgres ({events} events)"
    );

    // 2. Check latency, recording off then on, alternating.
    let (mut check_off, mut check_on) = (Vec::new(), Vec::new());
    for round in 0..b.rounds {
        let off = check_latency(b, None, b.check_rate, b.seconds, b.background_events).await?;
        let on = check_latency(b, Some(url), b.check_rate, b.seconds, b.background_events).await?;
        eprintln!(
            "round {round}: Check p50/p99 off {}/{} us, on {}/{} us",
            off.p50_us, off.p99_us, on.p50_us, on.p99_us
        );
        check_off.push(off);
        check_on.push(on);
    }

    // 3. Replay: spool `outage_events` with Postgres unreachable, then start with it back.
    let before = count(url).await? as u64;
    let spool = tempfile::tempdir()?;
    let mut down = config(
        b,
        Some("postgres://postgres@127.0.0.1:1/none"),
        spool.path(),
    );
    down.events.connect_timeout_ms = 200;
    down.events.shutdown_flush_ms = 100;
    let scorer = RunningScorer::start(down).await?;
    let replayed = pump(
        channel(&scorer).await?,
        b.senders,
        b.report_batch,
        Duration::from_secs(600),
        Some(b.outage_events),
        None,
    )
    .await?;
    scorer.stop().await?;
    let started = Instant::now();
    let scorer = RunningScorer::start(config(b, Some(url), spool.path())).await?;
    let done = wait_for_rows(url, before + replayed, Duration::from_secs(300)).await?;
    let replay_per_s = replayed as f64 / (done - started).as_secs_f64();
    scorer.stop().await?;
    eprintln!(
        "replay: {replayed} events in {:?}: {replay_per_s:.0} events/s",
        done - started
    );

    Ok(TelemetryReport {
        ingest_per_s,
        persisted_per_s,
        events,
        check_off,
        check_on,
        replay_per_s,
        replayed,
    })
}
