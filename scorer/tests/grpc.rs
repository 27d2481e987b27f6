//! The scorer over a real tonic client on free loopback ports.

use palisade_proto::v1::{
    CheckRequest, Decision, Outcome, ReportRequest, RequestOutcome, scorer_client::ScorerClient,
};
use palisade_scorer::{Config, RunningScorer};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn config() -> Config {
    let mut c = Config::default();
    c.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace_ms = 1_000;
    c
}

fn check(key: &str, tier: &str, id: u32) -> CheckRequest {
    CheckRequest {
        request_id: format!("req-{id}"),
        key_id: key.into(),
        tier: tier.into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: "/api/orders".into(),
        timestamp_ms: 1_700_000_000_000 + i64::from(id),
        ..Default::default()
    }
}

#[tokio::test]
async fn check_report_health_reflection_and_admin() {
    let scorer = RunningScorer::start(config()).await.unwrap();
    let url = format!("http://{}", scorer.grpc_addr);
    let mut client = ScorerClient::connect(url.clone()).await.unwrap();

    // The free tier (5 per minute) admits five, then throttles with quota headers.
    for i in 0..5 {
        let r = client
            .check(check("bob", "free", i))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.decision(), Decision::Allow, "request {i}");
        assert_eq!(r.rate_limit.as_ref().unwrap().remaining, 4 - i);
    }
    let r = client
        .check(check("bob", "free", 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Throttle);
    assert!(r.retry_after_seconds >= 1);
    let rl = r.rate_limit.unwrap();
    assert_eq!(
        (
            rl.limit,
            rl.remaining,
            rl.window_seconds,
            rl.policy.as_str()
        ),
        (5, 0, 60, "free")
    );

    // Another key is unaffected.
    let r = client
        .check(check("alice", "standard", 6))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), Decision::Allow);

    // Bad input is InvalidArgument naming the field.
    let mut bad = check("bob", "free", 7);
    bad.path = "no-slash".into();
    let status = client.check(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("path"), "{}", status.message());

    // Report.
    let accepted = client
        .report(ReportRequest {
            outcomes: vec![RequestOutcome {
                request_id: "req-1".into(),
                outcome: Outcome::Allowed as i32,
                status: 200,
                upstream_latency_us: 1_500,
                gateway_latency_us: 400,
                ..Default::default()
            }],
            dropped: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .accepted;
    assert_eq!(accepted, 1);

    // Standard gRPC health for the service and the server.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["palisade.v1.Scorer", ""] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.status(), ServingStatus::Serving, "service `{service}`");
    }

    // Reflection lists the service, so grpcurl works without proto files.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer: {resp:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"palisade.v1.Scorer"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    // Admin endpoints.
    let admin = format!("http://{}", scorer.admin_addr);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"palisade_check_decisions_total{decision="throttle"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"palisade_outcomes_total{outcome="allowed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_check_invalid_total 1"),
        "{metrics}"
    );

    // Graceful stop: it returns, and the port stops answering.
    let addr = scorer.grpc_addr;
    scorer.stop().await.unwrap();
    assert!(
        ScorerClient::connect(format!("http://{addr}"))
            .await
            .is_err()
    );
}
