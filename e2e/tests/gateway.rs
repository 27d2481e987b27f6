//! End to end through the real Envoy with the built filter, the scorer and the backend.
//! On failure the harness prints Envoy's log.

use std::time::Duration;

use palisade_e2e::{ScorerMode, Stack, StackOptions, scorer_config};
use palisade_scorer::config::{PolicyConfig, WindowConfig};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const ALICE: &str = "pk_demo_alice";
const BOB: &str = "pk_demo_bob";

/// Any answer slower than this is a hang, not a timeout the gateway chose.
const HANG: Duration = Duration::from_secs(5);

fn client() -> Client {
    Client::builder().timeout(HANG).build().unwrap()
}

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_header_hygiene_and_the_zero_trust_backend() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let c = client();
    let whoami = format!("{}/api/whoami", stack.url);

    // No key, unknown key, two keys: 401 with the request id and without the key.
    for (label, keys) in [
        ("none", vec![]),
        ("unknown", vec!["pk_live_not_a_real_key"]),
        ("two", vec![ALICE, ALICE]),
    ] {
        let mut req = c.get(&whoami);
        for k in &keys {
            req = req.header("x-api-key", *k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{label}");
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body = resp.text().await.unwrap();
        assert!(
            body.contains(&rid),
            "{label}: body {body} lacks request id {rid}"
        );
        assert!(!body.contains("pk_"), "{label}: key echoed in {body}");
    }

    // A demo key passes; the backend saw a valid token bound to the X-Request-ID, and a
    // client-sent token and internal headers were stripped, not forwarded.
    let resp = c
        .get(&whoami)
        .header("x-api-key", ALICE)
        .header("x-gateway-token", "v1.1700000000.mallory.forged")
        .header("x-palisade-key-id", "mallory")
        .header("x-request-id", "client-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(
        rid, "client-chosen-id",
        "untrusted request ids are replaced"
    );
    assert!(
        resp.headers().contains_key("ratelimit-policy"),
        "{:?}",
        resp.headers()
    );
    assert!(
        resp.headers().contains_key("ratelimit"),
        "{:?}",
        resp.headers()
    );
    let who = json(resp).await;
    assert_eq!(who["key_id"], "alice");
    assert_eq!(who["request_id"], rid.as_str());
    assert_eq!(who["token_headers"], 1);

    // The token is bound to the normalised path Envoy forwards: a messy path still verifies.
    let resp = c
        .get(format!("{}/api//users/../users/7", stack.url))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["id"], 7);

    // Headers with underscores are refused at the edge.
    let resp = c
        .get(&whoami)
        .header("x-api-key", ALICE)
        .header("x_palisade_key_id", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Bypassing the gateway: no token, and a forged one, are refused by the backend.
    let direct = format!("{}/api/whoami", stack.backend_url);
    let resp = c
        .get(&direct)
        .header("x-request-id", "direct-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c
        .get(&direct)
        .header("x-request-id", "direct-2")
        .header(
            "x-gateway-token",
            "v1.1700000000.alice.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // The filter's counters, and its outcome reports reaching the scorer (401s included).
    assert!(
        stack
            .envoy_counter("palisade_requests_unauthorized")
            .await
            .unwrap()
            .unwrap_or(0)
            >= 3
    );
    assert!(
        stack
            .envoy_counter("palisade_requests_allowed")
            .await
            .unwrap()
            .unwrap_or(0)
            >= 2
    );
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = stack.scorer_metrics().await.unwrap();
        if metrics.contains(r#"palisade_outcomes_total{outcome="unauthorized"} 3"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains(r#"palisade_outcomes_total{outcome="unauthorized"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"palisade_outcomes_total{outcome="allowed"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_tier_reaches_429_with_retry_after_and_ratelimit_headers() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let c = client();
    let url = format!("{}/api/orders?page=1", stack.url);
    let mut throttled = None;
    for i in 0..20 {
        let resp = c.get(&url).header("x-api-key", BOB).send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some((i, resp));
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
    }
    let (i, resp) = throttled.expect("the free tier never throttled");
    assert_eq!(i, 5, "free tier admits 5 per minute");
    let h = resp.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        h["ratelimit-policy"].to_str().unwrap(),
        r#""free";q=5;w=60"#
    );
    assert!(
        h["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(r#""free";r=0;t="#),
        "{:?}",
        h["ratelimit"]
    );
    // Alice (another key, another tier) is unaffected.
    let resp = c.get(&url).header("x-api-key", ALICE).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        stack
            .envoy_counter("palisade_requests_throttled")
            .await
            .unwrap()
            .unwrap_or(0)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_from_one_address_reach_429_but_its_valid_keys_do_not() {
    let mut scorer = scorer_config();
    scorer.limits.unauthenticated = Some(PolicyConfig {
        windows: vec![WindowConfig::new(3, 60_000)],
        ..PolicyConfig::default()
    });
    let stack = Stack::start(StackOptions {
        scorer: ScorerMode::Real(Box::new(scorer)),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let c = client();
    let url = format!("{}/api/whoami", stack.url);
    let guess = |i: usize| format!("pk_live_guess_{i}");
    for i in 0..3 {
        let resp = c
            .get(&url)
            .header("x-api-key", guess(i))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let resp = c
        .get(&url)
        .header("x-api-key", guess(3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = resp.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        h["ratelimit-policy"].to_str().unwrap(),
        r#""unauthenticated";q=3;w=60"#
    );
    let body = json(resp).await;
    assert_eq!(body["reason"], "auth_failures_rate_limited");
    assert!(!body.to_string().contains("pk_"), "key echoed in {body}");
    // Missing keys count too.
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

    // A valid key from the same address is judged by its own limits, not the address's
    // failures: a shared NAT or a user who mistyped once keeps working.
    let resp = c.get(&url).header("x-api-key", ALICE).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await["key_id"], "alice");

    assert_eq!(
        stack
            .envoy_counter("palisade_requests_unauthorized_throttled")
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        stack
            .envoy_counter("palisade_requests_unauthorized")
            .await
            .unwrap(),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorer_down_fails_closed_with_503_never_a_hang() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let c = client();
    let url = format!("{}/api/health", stack.url);
    assert_eq!(
        c.get(&url)
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    stack.stop_scorer().await.unwrap();
    for _ in 0..3 {
        // `client()` fails the test on a hang (HANG); the gateway must answer by itself.
        let resp = c.get(&url).header("x-api-key", ALICE).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // Authentication never fails open: a bad key is still 401.
    let resp = c
        .get(&url)
        .header("x-api-key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        stack
            .envoy_counter("palisade_fail_closed")
            .await
            .unwrap()
            .unwrap_or(0)
            >= 3
    );
    assert!(
        stack
            .envoy_counter("palisade_scorer_errors")
            .await
            .unwrap()
            .unwrap_or(0)
            >= 3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorer_down_fails_open_when_configured_and_counts_it() {
    let mut stack = Stack::start(StackOptions {
        failure_mode: "fail_open",
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.stop_scorer().await.unwrap();
    let c = client();
    let resp = c
        .get(format!("{}/api/whoami", stack.url))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "fail_open passes, still signed for the backend"
    );
    assert_eq!(json(resp).await["key_id"], "alice");
    let resp = c
        .get(format!("{}/api/health", stack.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "authentication never fails open"
    );
    assert_eq!(
        stack.envoy_counter("palisade_fail_open").await.unwrap(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_scorer_is_bounded_by_the_filter_timeout() {
    let stack = Stack::start(StackOptions {
        scorer: ScorerMode::BlackHole,
        scorer_timeout_ms: 150,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let c = client();
    for _ in 0..2 {
        let resp = c
            .get(format!("{}/api/health", stack.url))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        stack
            .envoy_counter("palisade_fail_closed")
            .await
            .unwrap()
            .unwrap_or(0)
            >= 2
    );
}
