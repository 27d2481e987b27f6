//! Failed authentications limited per client IP, over a real tonic client: in-process windows
//! and Redis windows shared by two replicas.

mod support;

use palisade_proto::v1::{CheckRequest, Decision, scorer_client::ScorerClient};
use palisade_scorer::{
    Config, RunningScorer,
    config::{PolicyConfig, WindowConfig},
};
use support::{SHARED_REDIS, scorer_config, unique_prefix};
use tonic::transport::Channel;

const LIMIT: u32 = 3;

/// `config` with a failed-authentication limit of [`LIMIT`] per minute.
fn limited(mut c: Config) -> Config {
    c.limits.unauthenticated = Some(PolicyConfig {
        windows: vec![WindowConfig::new(LIMIT, 60_000)],
        ..PolicyConfig::default()
    });
    c
}

fn local_config() -> Config {
    let mut c = Config::default();
    c.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace_ms = 1_000;
    limited(c)
}

fn failed_auth(ip: &str, i: u32) -> CheckRequest {
    CheckRequest {
        request_id: format!("req-{i}"),
        client_ip: ip.into(),
        method: "POST".into(),
        path: "/api/login".into(),
        timestamp_ms: 1_700_000_000_000 + i64::from(i),
        unauthenticated: true,
        ..Default::default()
    }
}

async fn decision(client: &mut ScorerClient<Channel>, r: CheckRequest) -> Decision {
    client.check(r).await.unwrap().into_inner().decision()
}

/// `LIMIT` failures from one address pass as "not throttled", the next is throttled with the
/// `unauthenticated` policy; another address and an authenticated key from the same address
/// are unaffected. `clients` take turns, as replicas behind one Envoy would.
async fn limits_per_address(clients: &mut [ScorerClient<Channel>]) {
    let n = clients.len();
    for i in 0..LIMIT {
        let c = &mut clients[i as usize % n];
        let d = decision(c, failed_auth("203.0.113.7", i)).await;
        assert_eq!(d, Decision::Allow, "failure {i}");
    }
    let r = clients[LIMIT as usize % n]
        .check(failed_auth("203.0.113.7", LIMIT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Throttle);
    assert!(!r.degraded, "decided by the configured store");
    assert!(r.retry_after_seconds >= 1);
    let rl = r.rate_limit.unwrap();
    assert_eq!(
        (rl.policy.as_str(), rl.limit, rl.remaining),
        ("unauthenticated", LIMIT, 0)
    );

    let d = decision(&mut clients[0], failed_auth("203.0.113.8", 10)).await;
    assert_eq!(d, Decision::Allow, "another address has its own quota");

    let authenticated = CheckRequest {
        key_id: "alice".into(),
        tier: "standard".into(),
        unauthenticated: false,
        ..failed_auth("203.0.113.7", 11)
    };
    let r = clients[n - 1]
        .check(authenticated)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow, "a valid key is not punished");
    assert_eq!(r.rate_limit.unwrap().policy, "standard");

    let status = clients[0].check(failed_auth("", 12)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("client_ip"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn failed_authentications_throttle_per_address_in_process() {
    let scorer = RunningScorer::start(local_config()).await.unwrap();
    let client = ScorerClient::connect(format!("http://{}", scorer.grpc_addr))
        .await
        .unwrap();
    limits_per_address(&mut [client]).await;

    let metrics = reqwest::get(format!("http://{}/metrics", scorer.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"palisade_limiter_decisions_total{policy="unauthenticated",outcome="throttled"} 1"#
        ),
        "{metrics}"
    );
    scorer.stop().await.unwrap();
}

#[tokio::test]
async fn failed_authentications_throttle_per_address_across_replicas_in_redis() {
    let prefix = unique_prefix();
    let mut config = limited(scorer_config(SHARED_REDIS, &prefix));
    // About sharing, not faults: a debug build on a busy machine can exceed the 15 ms default.
    config.redis.timeout_ms = 1_000;
    let a = RunningScorer::start(config.clone()).await.unwrap();
    let b = RunningScorer::start(config).await.unwrap();
    let mut clients = Vec::new();
    for s in [&a, &b] {
        clients.push(
            ScorerClient::connect(format!("http://{}", s.grpc_addr))
                .await
                .unwrap(),
        );
    }
    limits_per_address(&mut clients).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
