//! Policies change at runtime: `POST /admin/reload` and SIGHUP re-read the file; a bad file
//! changes nothing and the answer names the problem.

use std::time::{Duration, Instant};

use palisade_proto::v1::{CheckRequest, Decision, scorer_client::ScorerClient};
use palisade_scorer::RunningScorer;

fn file(free_limit: u32, vip_limit: u32) -> String {
    format!(
        r#"
        [server]
        grpc_listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        shutdown_grace_ms = 1000
        [limits.tiers.free]
        windows = [{{ limit = {free_limit}, window = "1m" }}]
        [limits.keys.vip]
        windows = [{{ limit = {vip_limit}, window = "1m" }}]
        "#
    )
}

fn request(key: &str, i: i64) -> CheckRequest {
    CheckRequest {
        request_id: format!("r-{i}"),
        key_id: key.into(),
        tier: "free".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: "/api/orders".into(),
        timestamp_ms: 1_700_000_000_000 + i,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_and_sighup_reload_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scorer.toml");
    std::fs::write(&path, file(2, 3)).unwrap();
    let scorer = RunningScorer::start_with_file(&path).await.unwrap();
    let mut client = ScorerClient::connect(format!("http://{}", scorer.grpc_addr))
        .await
        .unwrap();
    let reload_url = format!("http://{}/admin/reload", scorer.admin_addr);
    let http = reqwest::Client::new();
    let mut i = 0;
    let mut check = async |key: &str| {
        i += 1;
        client.check(request(key, i)).await.unwrap().into_inner()
    };

    assert_eq!(check("bob").await.decision(), Decision::Allow);
    assert_eq!(check("bob").await.decision(), Decision::Allow);
    assert_eq!(check("bob").await.decision(), Decision::Throttle);
    assert_eq!(check("vip").await.rate_limit.unwrap().limit, 3);

    // Raised limits apply without a restart.
    std::fs::write(&path, file(10, 50)).unwrap();
    let r = http.post(&reload_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("1 tiers, 1 key overrides"));
    let r = check("bob").await;
    assert_eq!(r.decision(), Decision::Allow);
    assert_eq!(r.rate_limit.unwrap().limit, 10);
    assert_eq!(check("vip").await.rate_limit.unwrap().limit, 50);

    // A bad file is refused whole, naming the key; the running policies stay.
    std::fs::write(&path, file(0, 50)).unwrap();
    let r = http.post(&reload_url).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("limits.tiers.free.windows[0].limit"),
        "{body}"
    );
    assert_eq!(check("bob").await.rate_limit.unwrap().limit, 10);

    // SIGHUP does the same (bounded wait: the signal is handled on another task).
    std::fs::write(&path, file(7, 50)).unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(5);
    while check("bob").await.rate_limit.unwrap().limit != 7 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scorer.stop().await.unwrap();
}
