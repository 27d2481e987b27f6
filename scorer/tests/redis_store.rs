//! The Redis window store against real Redis: the script agrees with the pure algorithms,
//! the exact log never over-admits, replicas sharing one Redis admit exactly the limit, one
//! command per decision, NOSCRIPT recovery, keys expire.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use palisade_proto::v1::{CheckRequest, Decision, scorer_client::ScorerClient};
use palisade_scorer::{
    RunningScorer,
    config::{Algorithm, PolicyConfig, RedisConfig, WindowConfig},
    limiter::{
        Policy, WindowSpec, WindowState,
        redis::{RedisStore, SCRIPT_COMMANDS},
        window::check_all,
    },
};
use proptest::prelude::*;
use support::{RedisServer, SHARED_REDIS, scorer_config, unique_prefix};

fn store(url: &str) -> RedisStore {
    RedisStore::new(&RedisConfig {
        url: url.to_owned(),
        key_prefix: unique_prefix(),
        timeout_ms: 2_000,
        ..RedisConfig::default()
    })
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::SlidingLog), Just(Algorithm::SlidingCounter)]
}

/// One or two windows of distinct lengths, each with its own algorithm.
fn policy() -> impl Strategy<Value = Policy> {
    prop::collection::vec((1u32..12, 1u64..2_000, algorithm()), 1..3).prop_map(|ws| {
        let mut windows: Vec<WindowSpec> = Vec::new();
        for (limit, window_ms, algorithm) in ws {
            if windows.iter().all(|w| w.window_ms != window_ms) {
                windows.push(WindowSpec {
                    limit,
                    window_ms,
                    algorithm,
                });
            }
        }
        Policy {
            name: "prop".into(),
            windows,
            shadow: false,
        }
    })
}

static SUBJECT: AtomicU64 = AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For random arrivals the script answers exactly what `window::check_all` answers
    /// (admission, reported window, remaining, reset, retry-after), for both algorithms and
    /// several windows at once; and the exact log never admits more than `limit` in any
    /// window of its length while admitting every request that fits.
    #[test]
    fn script_matches_the_pure_algorithms(
        policy in policy(),
        gaps in prop::collection::vec(0u64..400, 1..120),
        start in 1_600_000_000_000u64..1_800_000_000_000,
    ) {
        let rt = runtime();
        let store = rt.block_on(async { store(SHARED_REDIS) });
        let subject = format!("s{}", SUBJECT.fetch_add(1, Ordering::Relaxed));
        let mut model: Vec<WindowState> = policy.windows.iter().map(WindowState::new).collect();
        let mut admitted_at = Vec::new();
        let mut now = start;
        for g in gaps {
            now += g;
            let expected = check_all(&policy.windows, &mut model, now);
            let got = rt.block_on(store.check(&subject, &policy, now)).unwrap();
            prop_assert_eq!(got, expected, "at t+{}", now - start);
            if got.admitted {
                admitted_at.push(now);
            }
        }
        for w in policy.windows.iter().filter(|w| w.algorithm == Algorithm::SlidingLog) {
            for (i, &t) in admitted_at.iter().enumerate() {
                let n = admitted_at[i..].iter().take_while(|&&u| u < t + w.window_ms).count();
                prop_assert!(n as u32 <= w.limit, "{} admitted in [{}, {}+{})", n, t, t, w.window_ms);
            }
        }
    }
}

fn request(key: &str, i: u64, t: i64) -> CheckRequest {
    CheckRequest {
        request_id: format!("r-{i}"),
        key_id: key.into(),
        tier: "shared".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: "/api/orders".into(),
        timestamp_ms: t,
        ..Default::default()
    }
}

/// A tier of `limit` per minute (exact log) plus a wide per-second window, in both scorers.
fn shared_config(
    url: &str,
    prefix: &str,
    limit: u32,
    algorithm: Algorithm,
) -> palisade_scorer::Config {
    let mut c = scorer_config(url, prefix);
    // This suite is about sharing, not faults: a debug build on a busy 2-core machine can
    // exceed the 15 ms default, and a degraded decision would make the count meaningless.
    c.redis.timeout_ms = 1_000;
    c.limits.tiers.insert(
        "shared".into(),
        PolicyConfig {
            windows: vec![
                WindowConfig::new(limit, 60_000),
                WindowConfig::new(10_000, 1_000),
            ],
            algorithm: Some(algorithm),
            shadow: false,
        },
    );
    c
}

async fn hammer(scorers: &[&RunningScorer], key: &str, callers: usize, per_caller: u64) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let url = format!("http://{}", scorers[c % scorers.len()].grpc_addr);
        let key = key.to_owned();
        tasks.spawn(async move {
            let mut client = ScorerClient::connect(url).await.unwrap();
            let (mut allowed, mut degraded) = (0u64, 0u64);
            for i in 0..per_caller {
                // Every request in the same second: all land in one 60 s window.
                let r = client
                    .check(request(
                        &key,
                        c as u64 * 1_000 + i,
                        1_700_000_000_000 + i as i64,
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                if r.degraded {
                    degraded += 1;
                }
                if r.decision() == Decision::Allow {
                    allowed += 1;
                }
            }
            (allowed, degraded)
        });
    }
    let (mut total, mut degraded) = (0, 0);
    while let Some(n) = tasks.join_next().await {
        let (a, d) = n.unwrap();
        total += a;
        degraded += d;
    }
    let redis_metrics: String = scorers
        .iter()
        .flat_map(|s| {
            let text = s.engine.metrics().render();
            text.lines()
                .filter(|l| l.contains("redis_errors") || l.contains("degraded"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(degraded, 0, "redis answered every check:\n{redis_metrics}");
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_scorers_sharing_one_redis_admit_exactly_the_limit() {
    for algorithm in [Algorithm::SlidingLog, Algorithm::SlidingCounter] {
        let prefix = unique_prefix();
        let a = RunningScorer::start(shared_config(SHARED_REDIS, &prefix, 150, algorithm))
            .await
            .unwrap();
        let b = RunningScorer::start(shared_config(SHARED_REDIS, &prefix, 150, algorithm))
            .await
            .unwrap();
        // 8 callers x 60 = 480 requests for 150 slots, split over both replicas.
        let allowed = hammer(&[&a, &b], "tenant-key", 8, 60).await;
        assert_eq!(allowed, 150, "{algorithm:?}: replicas share one quota");
        a.stop().await.unwrap();
        b.stop().await.unwrap();
    }
}

#[tokio::test]
async fn one_command_per_decision_and_noscript_recovers() {
    let redis = RedisServer::start();
    let store = store(&redis.url());
    let policy = Policy {
        name: "rt".into(),
        windows: vec![
            WindowSpec {
                limit: 100,
                window_ms: 1_000,
                algorithm: Algorithm::SlidingLog,
            },
            WindowSpec {
                limit: 10_000,
                window_ms: 3_600_000,
                algorithm: Algorithm::SlidingCounter,
            },
        ],
        shadow: false,
    };
    // Connect and cache the script first; count from a clean slate.
    store.check("warm", &policy, 1).await.unwrap();
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    for i in 0..200 {
        store
            .check(&format!("k{}", i % 7), &policy, 1_000 + i)
            .await
            .unwrap();
    }
    let evalsha = redis.command_calls("evalsha");
    let eval = redis.command_calls("eval");
    assert_eq!(
        (evalsha, eval),
        (200, 0),
        "exactly one script call per decision"
    );
    // Nothing else came from the client: every other command is one the script runs.
    let info = redis.cli(&["INFO", "commandstats"]).unwrap();
    let script_commands: Vec<&str> = ["evalsha", "config|resetstat", "info"]
        .into_iter()
        .chain(SCRIPT_COMMANDS)
        .collect();
    for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
        let name = line["cmdstat_".len()..].split(':').next().unwrap_or("");
        assert!(
            script_commands.contains(&name),
            "unexpected client command: {line}"
        );
    }

    // A Redis that lost its script cache (restart, failover): EVALSHA -> NOSCRIPT -> EVAL.
    redis.cli(&["SCRIPT", "FLUSH"]).unwrap();
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    let o = store.check("k0", &policy, 2_000).await.unwrap();
    assert!(o.admitted);
    assert_eq!(
        (redis.command_calls("evalsha"), redis.command_calls("eval")),
        (1, 1)
    );
    store.check("k0", &policy, 2_001).await.unwrap();
    assert_eq!(
        redis.command_calls("evalsha"),
        2,
        "cached again by the EVAL"
    );

    // Every key expires on its own.
    let keys = store.keys(&policy, "k0");
    let log_ttl: i64 = redis
        .cli(&["PTTL", &keys[0]])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let counter_ttl: i64 = redis
        .cli(&["PTTL", &keys[1]])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=1_000).contains(&log_ttl), "log ttl {log_ttl}");
    assert!(
        (3_600_000..=7_200_000).contains(&counter_ttl),
        "counter ttl {counter_ttl}"
    );
}

#[tokio::test]
async fn refused_requests_consume_nothing_in_redis() {
    let store = store(SHARED_REDIS);
    let short = WindowSpec {
        limit: 2,
        window_ms: 1_000,
        algorithm: Algorithm::SlidingLog,
    };
    let long = WindowSpec {
        limit: 3,
        window_ms: 60_000,
        algorithm: Algorithm::SlidingLog,
    };
    let policy = Arc::new(Policy {
        name: "aon".into(),
        windows: vec![short, long],
        shadow: false,
    });
    let t0 = 1_700_000_000_000;
    assert!(store.check("k", &policy, t0).await.unwrap().admitted);
    assert!(store.check("k", &policy, t0 + 1).await.unwrap().admitted);
    let refused = store.check("k", &policy, t0 + 2).await.unwrap();
    assert!(!refused.admitted);
    assert_eq!(refused.limit, 2, "the short window refused");
    assert!(
        store
            .check("k", &policy, t0 + 1_500)
            .await
            .unwrap()
            .admitted
    );
    let o = store.check("k", &policy, t0 + 2_600).await.unwrap();
    assert!(!o.admitted, "the long window holds 3 by now, not 4");
    assert_eq!(o.limit, 3);
}

#[tokio::test]
async fn a_route_policy_and_the_tier_share_one_script_call() {
    let store = store(SHARED_REDIS);
    let window = |limit, window_ms| WindowSpec {
        limit,
        window_ms,
        algorithm: Algorithm::SlidingLog,
    };
    let tier = Policy {
        name: "free".into(),
        windows: vec![window(3, 60_000)],
        shadow: false,
    };
    let route = Policy {
        name: "route:login".into(),
        windows: vec![window(1, 60_000)],
        shadow: false,
    };
    let t0 = 1_700_000_000_000;
    let (o, owner) = store.check_many("k", &[&tier, &route], t0).await.unwrap();
    assert!(o.admitted);
    assert_eq!(owner, 1);
    let (o, owner) = store
        .check_many("k", &[&tier, &route], t0 + 1)
        .await
        .unwrap();
    assert!(!o.admitted);
    assert_eq!(owner, 1, "the route refused");
    // The refusal consumed nothing in the tier: 2 of 3 left.
    assert!(store.check("k", &tier, t0 + 2).await.unwrap().admitted);
    assert!(store.check("k", &tier, t0 + 3).await.unwrap().admitted);
    assert!(!store.check("k", &tier, t0 + 4).await.unwrap().admitted);
}
