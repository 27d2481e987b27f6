//! Per-key detection state in Redis, through a real scorer over gRPC: a restarted scorer
//! resumes a key's profile from its snapshot, a key's first Check fetches it in the same
//! round trip as the rate-limit script, a dead Redis leaves every Check answered (fresh state,
//! counted), and a corrupt or foreign snapshot is refused (counted) and replaced.

mod support;

use palisade_proto::v1::{CheckRequest, scorer_client::ScorerClient};
use palisade_scorer::{
    Config, RunningScorer,
    detect::{StateBackend, snapshot},
};
use support::{RedisServer, SHARED_REDIS, scorer_config, unique_prefix};
use tonic::transport::Channel;

const T0: i64 = 1_700_000_000_000;

fn config(url: &str, prefix: &str) -> Config {
    let mut c = scorer_config(url, prefix);
    // Generous: a debug build on a busy machine must not time out a healthy Redis.
    c.redis.timeout_ms = 500;
    let d = &mut c.detect;
    d.min_requests = 5;
    d.score_every = 4;
    c.validate().unwrap();
    c
}

fn check(key: &str, i: i64) -> CheckRequest {
    CheckRequest {
        request_id: format!("r-{key}-{i}"),
        key_id: key.into(),
        tier: "standard".into(),
        method: "GET".into(),
        path: format!("/api/orders/{}", 100 + i),
        client_ip: "10.0.0.1".into(),
        user_agent: "client/1.0".into(),
        timestamp_ms: T0 + i * 1_000,
        ..Default::default()
    }
}

async fn client(s: &RunningScorer) -> ScorerClient<Channel> {
    ScorerClient::new(
        Channel::from_shared(format!("http://{}", s.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// Sends requests `from..to` of `key`, each answered.
async fn send(c: &mut ScorerClient<Channel>, key: &str, from: i64, to: i64) {
    for i in from..to {
        c.check(check(key, i)).await.expect("every Check answered");
    }
}

fn metric(s: &RunningScorer, line_start: &str) -> u64 {
    s.engine
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn requests_of(s: &RunningScorer, key: &str) -> Option<u64> {
    s.engine.detector().unwrap().key_requests(key)
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scorer_resumes_a_keys_profile() {
    let prefix = unique_prefix();
    let first = RunningScorer::start(config(SHARED_REDIS, &prefix))
        .await
        .unwrap();
    let mut c = client(&first).await;
    // Scored (and snapshotted) at its 5th request and every 4th after: the 41st is the last.
    send(&mut c, "resumed", 0, 41).await;
    assert_eq!(requests_of(&first, "resumed"), Some(41));
    assert_eq!(
        metric(
            &first,
            r#"palisade_detect_state_loads_total{result="miss"} "#
        ),
        1
    );
    // Stopping writes what is queued.
    first.stop().await.unwrap();

    let key = format!("{prefix}{{rl:resumed}}:profile");
    let mut conn = redis_conn(SHARED_REDIS).await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stored.starts_with(b"PKS\0"), "{stored:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the snapshot expires (detect.idle_ms): {ttl}");

    let second = RunningScorer::start(config(SHARED_REDIS, &prefix))
        .await
        .unwrap();
    let mut c = client(&second).await;
    send(&mut c, "resumed", 41, 42).await;
    // The profile carries on where the first scorer left it, not from 1.
    assert_eq!(requests_of(&second, "resumed"), Some(42));
    assert_eq!(
        metric(
            &second,
            r#"palisade_detect_state_loads_total{result="hit"} "#
        ),
        1
    );
    // Loaded once: later requests of the key use the state in memory.
    send(&mut c, "resumed", 42, 50).await;
    assert_eq!(
        metric(
            &second,
            r#"palisade_detect_state_loads_total{result="hit"} "#
        ),
        1
    );
    assert_eq!(requests_of(&second, "resumed"), Some(50));
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sight_fetches_the_state_in_the_scripts_round_trip() {
    let redis = RedisServer::start();
    let scorer = RunningScorer::start(config(&redis.url(), &unique_prefix()))
        .await
        .unwrap();
    let mut c = client(&scorer).await;
    send(&mut c, "warm", 0, 1).await;
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    // A new key: one script call and one GET, pipelined; then the script alone.
    send(&mut c, "new", 0, 3).await;
    assert_eq!(redis.command_calls("evalsha"), 3);
    assert_eq!(redis.command_calls("get"), 1);
    assert_eq!(redis.command_calls("set"), 0, "nothing scored yet");
    // A Redis that lost its scripts: the pipeline is sent again with EVAL, GET included.
    redis.cli(&["SCRIPT", "FLUSH"]).unwrap();
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    send(&mut c, "newer", 0, 1).await;
    assert_eq!(
        (
            redis.command_calls("evalsha"),
            redis.command_calls("eval"),
            redis.command_calls("get")
        ),
        (1, 1, 2)
    );
    assert_eq!(
        metric(
            &scorer,
            r#"palisade_detect_state_loads_total{result="miss"} "#
        ),
        3
    );
    scorer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_checks_answer_on_fresh_state_counted() {
    let mut redis = RedisServer::start();
    let mut c = config(&redis.url(), &unique_prefix());
    c.redis.timeout_ms = 50;
    c.redis.breaker_failures = 2;
    let scorer = RunningScorer::start(c).await.unwrap();
    let mut client = client(&scorer).await;
    redis.kill();
    for key in ["a", "b", "c"] {
        send(&mut client, key, 0, 20).await;
        assert_eq!(requests_of(&scorer, key), Some(20));
    }
    // One failed load per key, not one per request.
    assert_eq!(
        metric(
            &scorer,
            r#"palisade_detect_state_loads_total{result="failed"} "#
        ),
        3
    );
    // Their fresh state is not written over what Redis may still hold.
    assert!(
        metric(
            &scorer,
            r#"palisade_detect_state_writes_total{result="held"} "#
        ) >= 3
    );
    assert!(
        metric(
            &scorer,
            r#"palisade_limiter_degraded_decisions_total{mode="local"} "#
        ) > 0
    );
    scorer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_snapshot_starts_the_key_afresh() {
    let prefix = unique_prefix();
    let mut conn = redis_conn(SHARED_REDIS).await;
    let mut foreign = b"PKS\0".to_vec();
    foreign.extend_from_slice(&999u16.to_le_bytes());
    foreign.extend_from_slice(&[0; 16]);
    for (key, value) in [
        ("garbled", b"not a snapshot".to_vec()),
        ("foreign", foreign),
    ] {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}{{rl:{key}}}:profile"))
            .arg(value)
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let scorer = RunningScorer::start(config(SHARED_REDIS, &prefix))
        .await
        .unwrap();
    let mut c = client(&scorer).await;
    for key in ["garbled", "foreign"] {
        send(&mut c, key, 0, 9).await;
        assert_eq!(requests_of(&scorer, key), Some(9), "{key} starts afresh");
    }
    assert_eq!(
        metric(
            &scorer,
            r#"palisade_detect_state_loads_total{result="rejected"} "#
        ),
        2
    );
    scorer.stop().await.unwrap();
    // Its next snapshot replaced the bad one.
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(format!("{prefix}{{rl:garbled}}:profile"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        stored.starts_with(&[b"PKS\0".as_slice(), &snapshot::VERSION.to_le_bytes()].concat()),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_memory_keeps_redis_out_of_detection() {
    let redis = RedisServer::start();
    let mut c = config(&redis.url(), &unique_prefix());
    c.detect.state = StateBackend::Memory;
    let scorer = RunningScorer::start(c).await.unwrap();
    let mut client = client(&scorer).await;
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    send(&mut client, "k", 0, 20).await;
    assert_eq!(redis.command_calls("get"), 0);
    assert_eq!(redis.command_calls("set"), 0);
    assert_eq!(requests_of(&scorer, "k"), Some(20));
    scorer.stop().await.unwrap();
}
