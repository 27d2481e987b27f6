//! The Redis store against a three-master Redis Cluster of `redis-server` processes started
//! here: every window of a subject shares a hash tag (a cross-slot script would fail), the
//! script agrees with the pure algorithms on every node, and two scorers admit exactly the
//! limit per key across the cluster.

mod support;

use palisade_proto::v1::{CheckRequest, Decision, scorer_client::ScorerClient};
use palisade_scorer::{
    RunningScorer,
    config::{Algorithm, PolicyConfig, RedisConfig, WindowConfig},
    limiter::{Policy, WindowSpec, WindowState, redis::RedisStore, window::check_all},
};
use support::{RedisCluster, scorer_config, unique_prefix};

fn cluster_redis(cluster: &RedisCluster, prefix: &str) -> RedisConfig {
    let urls = cluster.urls();
    RedisConfig {
        url: urls[0].clone(),
        cluster: true,
        cluster_nodes: urls[1..].to_vec(),
        key_prefix: prefix.to_owned(),
        // Correctness suite, not a fault test: room for a debug build on a busy machine.
        timeout_ms: 1_000,
        ..RedisConfig::default()
    }
}

/// A small deterministic generator for arrival gaps (the property suite runs on the single
/// Redis; here the same comparison runs over a fixed set of subjects spread over all slots).
fn gaps(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % 250
        })
        .collect()
}

fn request(key: &str, i: u64) -> CheckRequest {
    CheckRequest {
        request_id: format!("r-{i}"),
        key_id: key.into(),
        tier: "shared".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: "/api/orders".into(),
        timestamp_ms: 1_700_000_000_000 + i as i64,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_store_matches_the_model_and_shares_quota() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();

    // 1. The script on every node answers what `check_all` answers.
    let store = RedisStore::new(&cluster_redis(&cluster, &unique_prefix())).unwrap();
    let policy = Policy {
        name: "both".into(),
        windows: vec![
            WindowSpec {
                limit: 7,
                window_ms: 1_000,
                algorithm: Algorithm::SlidingLog,
            },
            WindowSpec {
                limit: 20,
                window_ms: 5_000,
                algorithm: Algorithm::SlidingCounter,
            },
        ],
        shadow: false,
    };
    for subject in 0..24u64 {
        let mut model: Vec<WindowState> = policy.windows.iter().map(WindowState::new).collect();
        let mut now = 1_700_000_000_000;
        for g in gaps(subject, 60) {
            now += g;
            let expected = check_all(&policy.windows, &mut model, now);
            let got = store
                .check(&format!("subject-{subject}"), &policy, now)
                .await
                .unwrap();
            assert_eq!(got, expected, "subject {subject} at {now}");
        }
    }
    // Two policies of one subject (tier and route) in one script: one slot.
    let route = Policy {
        name: "route:login".into(),
        windows: vec![WindowSpec {
            limit: 1,
            window_ms: 60_000,
            algorithm: Algorithm::SlidingLog,
        }],
        shadow: false,
    };
    for subject in 0..12 {
        let s = format!("two-{subject}");
        let t = 1_700_000_000_000;
        let (o, _) = store.check_many(&s, &[&policy, &route], t).await.unwrap();
        assert!(o.admitted);
        let (o, owner) = store
            .check_many(&s, &[&policy, &route], t + 1)
            .await
            .unwrap();
        assert!(!o.admitted);
        assert_eq!(owner, 1);
    }
    // The subjects really were spread over the three masters.
    let keys_per_node: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).unwrap().trim().parse().unwrap())
        .collect();
    assert!(keys_per_node.iter().all(|&k| k > 0), "{keys_per_node:?}");

    // 2. Two scorers on the cluster admit exactly the limit per key.
    let prefix = unique_prefix();
    let config = || {
        let mut c = scorer_config("", &prefix);
        c.redis = cluster_redis(&cluster, &prefix);
        c.limits.tiers.insert(
            "shared".into(),
            PolicyConfig {
                windows: vec![
                    WindowConfig::new(40, 60_000),
                    WindowConfig::new(10_000, 1_000),
                ],
                algorithm: Some(Algorithm::SlidingLog),
                shadow: false,
            },
        );
        c
    };
    let a = RunningScorer::start(config()).await.unwrap();
    let b = RunningScorer::start(config()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..8u64 {
        let url = format!(
            "http://{}",
            if c % 2 == 0 { a.grpc_addr } else { b.grpc_addr }
        );
        tasks.spawn(async move {
            let mut client = ScorerClient::connect(url).await.unwrap();
            let mut allowed = [0u64; 6];
            for i in 0..90u64 {
                let key = (i % 6) as usize;
                let r = client
                    .check(request(&format!("key-{key}"), c * 1_000 + i))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(!r.degraded, "the cluster answered");
                if r.decision() == Decision::Allow {
                    allowed[key] += 1;
                }
            }
            allowed
        });
    }
    let mut total = [0u64; 6];
    while let Some(r) = tasks.join_next().await {
        for (t, n) in total.iter_mut().zip(r.unwrap()) {
            *t += n;
        }
    }
    // 8 callers x 15 requests per key = 120 requests for 40 slots each.
    assert_eq!(total, [40; 6]);
    // Each scorer fetched each key's detection state with its script (one slot): once per
    // key, or once per caller whose first request of it raced another's.
    for s in [&a, &b] {
        let text = s.engine.metrics().render();
        let loads = |result: &str| {
            let line = format!("palisade_detect_state_loads_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert_eq!(loads("failed"), 0, "{text}");
        assert!((6..=24).contains(&(loads("hit") + loads("miss"))), "{text}");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
