//! Redis faults under load: a hung Redis (SIGSTOP) and a killed one (SIGKILL). No Check waits
//! much longer than the command timeout, degraded decisions are counted and flagged, the
//! breaker spares calls while open, and the scorer uses Redis again once it is back.

mod support;

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use palisade_proto::v1::{CheckRequest, Decision, scorer_client::ScorerClient};
use palisade_scorer::{
    Config, RunningScorer,
    config::{DegradedMode, PolicyConfig, WindowConfig},
};
use support::{RedisServer, free_port, scorer_config, unique_prefix};

const TIMEOUT_MS: u64 = 15;

/// Not a benchmark: a generous "no hang" bound. It is the command timeout plus a margin wide
/// enough for a debug build on a busy shared 2-core machine; without the timeout and breaker
/// a hung Redis would hold each Check for as long as the fault lasts (here, seconds).
const NO_HANG: Duration = Duration::from_millis(TIMEOUT_MS + 485);

fn config(url: &str, mode: DegradedMode) -> Config {
    let mut c = scorer_config(url, &unique_prefix());
    c.redis.timeout_ms = TIMEOUT_MS;
    c.redis.breaker_failures = 3;
    c.redis.breaker_open_ms = 200;
    c.redis.degraded_mode = mode;
    c.limits.tiers.insert(
        "load".into(),
        PolicyConfig {
            windows: vec![WindowConfig::new(1_000_000, 60_000)],
            ..PolicyConfig::default()
        },
    );
    c
}

fn request(key: &str, i: u64) -> CheckRequest {
    CheckRequest {
        request_id: format!("r-{i}"),
        key_id: key.into(),
        tier: "load".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: "/api/orders".into(),
        ..Default::default()
    }
}

fn metric(scorer: &RunningScorer, line_start: &str) -> u64 {
    scorer
        .engine
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[derive(Debug, Default)]
struct Seen {
    calls: AtomicU64,
    degraded: AtomicU64,
    slowest_us: AtomicU64,
}

/// Callers that check until `stop` (at most `max_each` calls each), recording what they saw.
fn load(
    scorer: &RunningScorer,
    callers: u64,
    max_each: u64,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let url = format!("http://{}", scorer.grpc_addr);
        let (stop, seen) = (Arc::clone(stop), Arc::clone(seen));
        tasks.spawn(async move {
            let mut client = ScorerClient::connect(url).await.unwrap();
            for i in 0..max_each {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let r = client
                    .check(request(&format!("caller-{c}"), i))
                    .await
                    .unwrap()
                    .into_inner();
                let us = started.elapsed().as_micros() as u64;
                seen.slowest_us.fetch_max(us, Ordering::Relaxed);
                seen.calls.fetch_add(1, Ordering::Relaxed);
                assert_eq!(
                    r.decision(),
                    Decision::Allow,
                    "local mode, far below the limit"
                );
                if r.degraded {
                    seen.degraded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tasks
}

/// Checks until one is answered by Redis again (bounded: 10 s).
async fn wait_for_redis(scorer: &RunningScorer, what: &str) {
    let mut client = ScorerClient::connect(format!("http://{}", scorer.grpc_addr))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        let r = client
            .check(request("probe", i))
            .await
            .unwrap()
            .into_inner();
        if !r.degraded {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the scorer did not use redis again after {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_then_killed_redis_under_load() {
    let mut redis = RedisServer::start();
    let scorer = RunningScorer::start(config(&redis.url(), DegradedMode::Local))
        .await
        .unwrap();
    wait_for_redis(&scorer, "start-up").await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let mut tasks = load(&scorer, 8, 200_000, &stop, &seen);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Hung: the process is alive but answers nothing; only the timeout bounds a call.
    let pid = redis.pid().unwrap();
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(pid, "-CONT");
    wait_for_redis(&scorer, "SIGCONT").await;

    // Killed: connections reset, then refused until it is back on the same port.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart();
    wait_for_redis(&scorer, "a restart").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let calls = seen.calls.load(Ordering::Relaxed);
    let degraded = seen.degraded.load(Ordering::Relaxed);
    let slowest = Duration::from_micros(seen.slowest_us.load(Ordering::Relaxed));
    let counted = metric(
        &scorer,
        r#"palisade_limiter_degraded_decisions_total{mode="local"} "#,
    );
    let skipped = metric(&scorer, "palisade_redis_breaker_skipped_total ");
    let timeouts = metric(&scorer, r#"palisade_redis_errors_total{kind="timeout"} "#);
    let report = format!(
        "calls {calls}, degraded {degraded} (counted {counted}), skipped {skipped}, timeouts \
         {timeouts}, slowest {slowest:?}"
    );
    eprintln!("{report}");
    assert!(slowest <= NO_HANG, "a Check hung: {report}");
    assert!(degraded > 0, "the faults were noticed: {report}");
    // `wait_for_redis` adds its own degraded probes to the counter.
    assert!(
        counted >= degraded,
        "every degraded decision is counted: {report}"
    );
    assert!(timeouts >= 3, "the hung redis timed out: {report}");
    assert!(
        skipped > timeouts,
        "while open, the breaker spared calls instead of timing out each: {report}"
    );
    // Without load (a debug build under load can time out a call now and then and reopen
    // it for a moment), the breaker is closed once Redis answers.
    wait_for_redis(&scorer, "the load stopped").await;
    assert_eq!(
        metric(&scorer, "palisade_redis_breaker_state "),
        0,
        "closed again: {report}"
    );
    scorer.stop().await.unwrap();
}

#[tokio::test]
async fn degraded_modes_decide_without_redis_and_recover() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    for mode in [DegradedMode::FailOpen, DegradedMode::FailClosed] {
        // Starts while Redis is down.
        let scorer = RunningScorer::start(config(&url, mode)).await.unwrap();
        let mut client = ScorerClient::connect(format!("http://{}", scorer.grpc_addr))
            .await
            .unwrap();
        for i in 0..10 {
            let r = client.check(request("k", i)).await.unwrap().into_inner();
            assert!(r.degraded, "{mode:?}");
            assert!(r.rate_limit.is_none(), "no quota without redis");
            assert_eq!(r.reason, "limiter_unavailable");
            let expected = match mode {
                DegradedMode::FailOpen => Decision::Allow,
                _ => Decision::Throttle,
            };
            assert_eq!(r.decision(), expected, "{mode:?}");
            if mode == DegradedMode::FailClosed {
                assert_eq!(r.retry_after_seconds, 1);
            }
        }
        let counter = match mode {
            DegradedMode::FailOpen => "fail_open",
            _ => "fail_closed",
        };
        assert_eq!(
            metric(
                &scorer,
                &format!(r#"palisade_limiter_degraded_decisions_total{{mode="{counter}"}} "#)
            ),
            10
        );
        if mode == DegradedMode::FailClosed {
            // Redis appears: the scorer uses it without a restart.
            let _redis = RedisServer::start_on(port, false);
            wait_for_redis(&scorer, "redis came up").await;
            let r = client.check(request("k", 99)).await.unwrap().into_inner();
            assert_eq!(r.decision(), Decision::Allow);
            assert!(r.rate_limit.is_some());
        }
        scorer.stop().await.unwrap();
    }
}
