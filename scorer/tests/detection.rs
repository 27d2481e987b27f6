//! Behavioural detection through a real scorer over gRPC, on simulated time: the scorer trains
//! its first model off the request path, then flags an enumerating key (shadow mode: let
//! through, with an explanation) while ordinary keys pass; the model is persisted and loaded
//! again after a restart.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use palisade_proto::v1::{CheckRequest, Decision, scorer_client::ScorerClient};
use palisade_scorer::{Config, RunningScorer};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tonic::transport::Channel;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

fn config(model_dir: &std::path::Path, alerts: Option<&str>) -> Config {
    let mut c = Config::default();
    c.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace_ms = 1_000;
    let d = &mut c.detect;
    d.min_requests = 20;
    d.score_every = 4;
    d.model_dir = Some(model_dir.to_owned());
    // The mechanics, not the calibration (that is palisade-sim's): thresholds for this
    // population.
    d.default_thresholds = palisade_scorer::detect::risk::TierThresholds {
        flag: 0.6,
        throttle: 0.7,
        block: 0.8,
    };
    d.training.interval_ms = 2 * 60 * MIN as u64;
    d.training.min_samples = 64;
    d.training.min_key_age_ms = 30 * MIN as u64;
    d.training.sample_interval_ms = 0;
    d.training.min_history_ms = 0;
    if let Some(url) = alerts {
        c.alerts.url = palisade_scorer::alerts::WebhookUrl::new(url);
        c.alerts.hmac_secret =
            palisade_scorer::alerts::Secret::new("a-test-secret-of-32-bytes-length");
    }
    c.validate().unwrap();
    c
}

/// A SIEM stand-in: a real HTTP server on loopback keeping every JSON body it receives.
async fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    kept.lock().unwrap().push(v);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn check(key: &str, t: i64, path: &str, ip: &str, i: usize) -> CheckRequest {
    CheckRequest {
        request_id: format!("r-{i}"),
        key_id: key.into(),
        tier: "standard".into(),
        method: "GET".into(),
        path: path.into(),
        client_ip: ip.into(),
        user_agent: "client/1.0".into(),
        timestamp_ms: t,
        ..Default::default()
    }
}

/// Ordinary integrations: a favourite endpoint, a small working set of IDs, irregular gaps.
fn normal(keys: usize, from: i64, minutes: i64, seed: u64) -> Vec<CheckRequest> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let endpoints = [
        "/api/users/",
        "/api/orders/",
        "/api/items",
        "/api/search",
        "/api/health",
    ];
    let mut out = Vec::new();
    for k in 0..keys {
        let favourite = rng.random_range(0..endpoints.len());
        let mut t = from + rng.random_range(0..MIN);
        while t < from + minutes * MIN {
            let e = if rng.random_bool(0.6) {
                favourite
            } else {
                rng.random_range(0..endpoints.len())
            };
            let mut path = endpoints[e].to_owned();
            if path.ends_with('/') {
                path.push_str(&(100 + rng.random_range(0..12u32) * 7).to_string());
            }
            let ip = format!("10.0.0.{k}");
            out.push(check(&format!("key-{k}"), t, &path, &ip, out.len()));
            t += rng.random_range(5_000..120_000);
        }
    }
    out
}

async fn metric(s: &RunningScorer, line: &str) -> bool {
    s.engine.metrics().render().lines().any(|l| l == line)
}

async fn wait_for(s: &RunningScorer, line: &str) {
    for _ in 0..300 {
        if metric(s, line).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never saw `{line}`:\n{}", s.engine.metrics().render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trains_then_flags_an_enumerating_key_and_keeps_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (url, alerts) = receiver().await;
    let scorer = RunningScorer::start(config(dir.path(), Some(&url)))
        .await
        .unwrap();
    let mut client = ScorerClient::new(
        Channel::from_shared(format!("http://{}", scorer.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    // Three hours of ordinary traffic: the first model is fitted after two.
    let mut warmup = normal(40, T0, 180, 7);
    warmup.sort_by_key(|r| r.timestamp_ms);
    for r in &warmup {
        let v = client.check(r.clone()).await.unwrap().into_inner();
        assert_eq!(v.decision, Decision::Allow as i32);
    }
    wait_for(
        &scorer,
        r#"palisade_detect_retrains_total{result="adopted"} 1"#,
    )
    .await;
    // The store writes in the background, after the model is in use.
    for _ in 0..300 {
        if dir.path().join("ACTIVE").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dir.path().join("ACTIVE").exists(),
        "the adopted model is stored"
    );

    // Another hour of the same keys, and one key walking order IDs one by one.
    let start = T0 + 180 * MIN;
    let mut traffic = normal(40, start, 60, 7);
    for i in 0..120 {
        let path = format!("/api/orders/{}", 50_000 + i);
        traffic.push(check(
            "scraper",
            start + i as i64 * 30_000,
            &path,
            "10.9.9.9",
            900_000 + i,
        ));
    }
    traffic.sort_by_key(|r| r.timestamp_ms);
    let mut flagged_normal = std::collections::BTreeSet::new();
    let mut scraper = None;
    for r in &traffic {
        let v = client.check(r.clone()).await.unwrap().into_inner();
        if v.decision == Decision::Allow as i32 {
            continue;
        }
        assert!(v.reason.starts_with("anomaly:"), "{}", v.reason);
        assert!(!v.model_version.is_empty() && v.anomaly_score > 0.0);
        // Shadow mode is the default: nothing is throttled or blocked for real.
        assert!(![Decision::Throttle as i32, Decision::Block as i32].contains(&v.decision));
        if r.key_id == "scraper" {
            scraper.get_or_insert(v);
        } else {
            flagged_normal.insert(r.key_id.clone());
        }
    }
    let scraper = scraper.expect("the enumerating key was never flagged");
    // Explained by named features with their values and shares (which lead depends on the
    // fit: its timing is as regular as its IDs are sequential).
    let explained = palisade_scorer::detect::features::FEATURE_NAMES
        .iter()
        .any(|f| scraper.reason.contains(&format!("{f}=")));
    assert!(
        explained && scraper.reason.contains('%'),
        "{}",
        scraper.reason
    );
    assert!(
        flagged_normal.len() <= 1,
        "normal keys flagged: {flagged_normal:?}"
    );
    let version = scraper.model_version.clone();
    scorer.stop().await.unwrap();
    // Stopping delivered the queued alerts: the scraper's, once per level it reached.
    let alerts = alerts.lock().unwrap().clone();
    let for_scraper: Vec<_> = alerts.iter().filter(|a| a["key_id"] == "scraper").collect();
    assert!(
        !for_scraper.is_empty(),
        "no alert for the scraper: {alerts:?}"
    );
    assert_eq!(for_scraper[0]["type"], "palisade.anomaly");
    // Shadow mode: a flag is what it says (a header), a throttle or block is not enforced.
    for a in &for_scraper {
        let shadowed = ["throttle", "block"].contains(&a["level"].as_str().unwrap());
        assert_eq!(a["enforced"], !shadowed, "{a}");
    }
    assert!(
        for_scraper[0]["explanation"]
            .as_str()
            .unwrap()
            .contains("risk=")
    );

    // A restart loads the stored model instead of waiting hours for a new one.
    let again = RunningScorer::start(config(dir.path(), None))
        .await
        .unwrap();
    wait_for(&again, "palisade_detect_model_loaded 1").await;
    let loaded = again.engine.detector().unwrap().model().unwrap();
    assert_eq!(&*loaded.version, version.as_str());
    again.stop().await.unwrap();
}
