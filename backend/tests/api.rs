//! The demo endpoints, called with valid gateway tokens.

mod common;

use common::*;
use reqwest::Method;

#[tokio::test]
async fn health() {
    let server = start(default_config()).await;
    let (status, body) = json(server.get("/api/health").await).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[tokio::test]
async fn users() {
    let server = start(default_config()).await;
    let (status, a) = json(server.get("/api/users/42").await).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["id"], 42);
    for field in ["name", "email", "plan", "country", "created_at"] {
        assert!(a[field].is_string(), "{field}: {a}");
    }
    assert!(a["email"].as_str().unwrap().ends_with("42@example.com"));
    let (_, again) = json(server.get("/api/users/42").await).await;
    assert_eq!(a, again, "deterministic");
    assert_eq!(json(server.get("/api/users/100000").await).await.0, 200);
    for bad in ["0", "100001", "abc", "-1", "4.2"] {
        let (status, body) = json(server.get(&format!("/api/users/{bad}")).await).await;
        assert_eq!(status, 404, "{bad}");
        assert_eq!(body["error"], "not_found");
        assert_eq!(body["reason"], "user_not_found");
    }
}

#[tokio::test]
async fn products() {
    let server = start(default_config()).await;
    let (status, p) = json(server.get("/api/products/7").await).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["id"], 7);
    assert_eq!(p["currency"], "USD");
    assert!(p["price_cents"].as_u64().unwrap() > 0);
    assert_eq!(p["in_stock"], p["stock"].as_u64().unwrap() > 0);
    let (status, body) = json(server.get("/api/products/0").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["reason"], "product_not_found");
}

#[tokio::test]
async fn orders_pagination() {
    let server = start(default_config()).await;
    let (status, page) = json(server.get("/api/orders").await).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["page"], 1);
    assert_eq!(page["page_size"], 20);
    assert_eq!(page["items"].as_array().unwrap().len(), 20);

    let (_, page) = json(server.get("/api/orders?page=2&page_size=5").await).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["number"], 6);
    assert_eq!(items[0]["id"], "ord_00000006");
    assert!(
        items
            .iter()
            .all(|o| o["amount_cents"].as_u64().unwrap() > 0)
    );

    let (status, page) = json(server.get("/api/orders?page=100000").await).await;
    assert_eq!(status, 200);
    assert!(page["items"].as_array().unwrap().is_empty());

    for bad in [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1000001",
        "page_size=0",
        "page_size=101",
        "page=1&page=2",
    ] {
        let (status, body) = json(server.get(&format!("/api/orders?{bad}")).await).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].is_string());
    }
}

#[tokio::test]
async fn search() {
    let server = start(default_config()).await;
    let (status, body) = json(server.get("/api/search?q=lamp").await).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 10);
    assert!(
        results
            .iter()
            .all(|r| r["name"].as_str().unwrap().to_lowercase().contains("lamp"))
    );
    assert_eq!(body["count"], results.len());

    let (status, body) = json(server.get("/api/search?q=oak%20desk").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["query"], "oak desk");

    let longest = "a".repeat(200);
    assert_eq!(
        json(server.get(&format!("/api/search?q={longest}")).await)
            .await
            .0,
        200
    );

    for (query, reason) in [
        ("", "missing_query"),
        ("?q=", "empty_query"),
        ("?q=%20%20", "empty_query"),
        (&format!("?q={longest}a"), "query_too_long"),
    ] {
        let (status, body) = json(server.get(&format!("/api/search{query}")).await).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["reason"], reason);
    }
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_json() {
    let server = start(default_config()).await;
    let (status, body) = json(server.get("/api/nothing-here").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["reason"], "no_route");
    let resp = server
        .signed(Method::POST, "/api/health")
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 405);
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn every_response_echoes_the_request_id() {
    let server = start(default_config()).await;
    for path in [
        "/api/health",
        "/api/users/0",
        "/api/orders?page=0",
        "/nowhere",
    ] {
        let rid = fresh_request_id();
        let t = token(KEY_HEX, KEY_ID, now(), &rid, "GET", path);
        let resp = server
            .with_token(Method::GET, path, &rid, &t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-request-id"], rid.as_str(), "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
    }
}
