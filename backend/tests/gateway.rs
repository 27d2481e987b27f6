//! The gateway-token gate, end to end over HTTP: what gets in and what does not.

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn valid_token_is_admitted_and_whoami_reports_it() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let ts = now();
    let t = token(KEY_HEX, KEY_ID, ts, &rid, "GET", "/api/whoami");
    let resp = server
        .with_token(Method::GET, "/api/whoami", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], rid.as_str());
    // The backend's own time, for the gateway's security event.
    let timing = resp.headers()["server-timing"].to_str().unwrap().to_owned();
    let ms: f64 = timing.strip_prefix("app;dur=").unwrap().parse().unwrap();
    assert!(ms >= 0.0, "{timing}");
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({
            "key_id": KEY_ID,
            "request_id": rid,
            "token_timestamp": ts,
            "token_headers": 1,
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn no_token_is_rejected() {
    let server = start(default_config()).await;
    let resp = server
        .bare(Method::GET, "/api/health")
        .header("X-Request-ID", "r-1")
        .send()
        .await
        .unwrap();
    // Rejections echo the request id too, and are timed.
    assert_eq!(resp.headers()["x-request-id"], "r-1");
    assert!(resp.headers().contains_key("server-timing"));
    assert_unauthorized(resp, "missing_token").await;
    let resp = server
        .bare(Method::GET, "/api/health")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-request-id").is_none());
    assert_unauthorized(resp, "missing_token").await;
}

#[tokio::test]
async fn missing_or_duplicate_request_id_is_rejected() {
    let server = start(default_config()).await;
    let t = token(KEY_HEX, KEY_ID, now(), "r-1", "GET", "/api/health");
    let resp = server
        .bare(Method::GET, "/api/health")
        .header("X-Gateway-Token", &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "missing_request_id").await;
    let resp = server
        .with_token(Method::GET, "/api/health", "r-1", &t)
        .header("X-Request-ID", "r-2")
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "duplicate_request_id").await;
}

#[tokio::test]
async fn two_token_headers_are_rejected() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let t = token(KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/health");
    let resp = server
        .with_token(Method::GET, "/api/health", &rid, &t)
        .header("X-Gateway-Token", &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "duplicate_token").await;
}

#[tokio::test]
async fn forged_token_is_rejected() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let t = token(FORGER_KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/health");
    let resp = server
        .with_token(Method::GET, "/api/health", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "bad_signature").await;
}

#[tokio::test]
async fn token_is_bound_to_the_path() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let t = token(KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/users/1");
    let resp = server
        .with_token(Method::GET, "/api/users/2", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "bad_signature").await;
    // The same token still works where it was meant to go: rejection did not burn the id.
    let resp = server
        .with_token(Method::GET, "/api/users/1", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn token_is_bound_to_the_query_string() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let t = token(KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/orders?page=1");
    for path in [
        "/api/orders?page=2",
        "/api/orders",
        "/api/orders?page=1&page_size=100",
    ] {
        let resp = server
            .with_token(Method::GET, path, &rid, &t)
            .send()
            .await
            .unwrap();
        assert_unauthorized(resp, "bad_signature").await;
    }
    let resp = server
        .with_token(Method::GET, "/api/orders?page=1", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn token_is_bound_to_the_method() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let t = token(KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/users/1");
    for method in [Method::POST, Method::DELETE, Method::HEAD] {
        let resp = server
            .with_token(method.clone(), "/api/users/1", &rid, &t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method}");
    }
}

#[tokio::test]
async fn token_is_bound_to_the_request_id() {
    let server = start(default_config()).await;
    let t = token(KEY_HEX, KEY_ID, now(), "r-signed", "GET", "/api/health");
    let resp = server
        .with_token(Method::GET, "/api/health", "r-other", &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "bad_signature").await;
}

#[tokio::test]
async fn expired_and_future_tokens_are_rejected() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let old = token(KEY_HEX, KEY_ID, now() - 400, &rid, "GET", "/api/health");
    let resp = server
        .with_token(Method::GET, "/api/health", &rid, &old)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "expired").await;
    let future = token(KEY_HEX, KEY_ID, now() + 400, &rid, "GET", "/api/health");
    let resp = server
        .with_token(Method::GET, "/api/health", &rid, &future)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "from_future").await;
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let good = token(KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/health");
    for (bad, reason) in [
        ("garbage", "malformed"),
        ("v1.123.k1", "malformed"),
        (&good[..good.len() - 2], "malformed"),
        (&good.replacen("v1.", "v2.", 1), "unsupported_version"),
    ] {
        let resp = server
            .with_token(Method::GET, "/api/health", &rid, bad)
            .send()
            .await
            .unwrap();
        assert_unauthorized(resp, reason).await;
    }
    let resp = server
        .with_token(Method::GET, "/api/health", &"r".repeat(129), &good)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "invalid_request_id").await;
}

#[tokio::test]
async fn replayed_request_is_rejected() {
    let server = start(default_config()).await;
    let rid = fresh_request_id();
    let t = token(KEY_HEX, KEY_ID, now(), &rid, "GET", "/api/users/7");
    let first = server
        .with_token(Method::GET, "/api/users/7", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = server
        .with_token(Method::GET, "/api/users/7", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(second, "replayed").await;
}

#[tokio::test]
async fn rotation_accepts_current_and_previous_keys() {
    let server = start(config_with(&[KEY_HEX, OLD_KEY_HEX], 100)).await;
    for (hex, kid) in [(KEY_HEX, "k-current"), (OLD_KEY_HEX, "k-previous")] {
        let rid = fresh_request_id();
        let t = token(hex, kid, now(), &rid, "GET", "/api/whoami");
        let (status, body) = json(
            server
                .with_token(Method::GET, "/api/whoami", &rid, &t)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["key_id"], kid);
    }
    // Once the previous key is dropped from the configuration, its tokens stop working.
    let server = start(config_with(&[KEY_HEX], 100)).await;
    let rid = fresh_request_id();
    let t = token(OLD_KEY_HEX, "k-previous", now(), &rid, "GET", "/api/whoami");
    let resp = server
        .with_token(Method::GET, "/api/whoami", &rid, &t)
        .send()
        .await
        .unwrap();
    assert_unauthorized(resp, "bad_signature").await;
}

#[tokio::test]
async fn full_replay_store_fails_closed() {
    let server = start(config_with(&[KEY_HEX], 2)).await;
    assert_eq!(server.get("/api/health").await.status(), 200);
    assert_eq!(server.get("/api/health").await.status(), 200);
    let (status, body) = json(server.get("/api/health").await).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        serde_json::json!({ "error": "unavailable", "reason": "replay_store_full" })
    );
}

#[tokio::test]
async fn unknown_routes_are_gated_too() {
    let server = start(default_config()).await;
    let resp = server.bare(Method::GET, "/nope").send().await.unwrap();
    assert_unauthorized(resp, "missing_token").await;
    let (status, body) = json(server.get("/nope").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["reason"], "no_route");
}
