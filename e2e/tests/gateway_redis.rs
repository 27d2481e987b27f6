//! Through the real Envoy with the scorer's windows in Redis (the machine's shared Redis on
//! 127.0.0.1:6379, under a key prefix of its own): the free tier still reaches 429 with
//! `Retry-After` and the RateLimit headers, and the windows really live in Redis.

use std::time::Duration;

use palisade_e2e::{ScorerMode, Stack, StackOptions, scorer_config};
use reqwest::{Client, StatusCode};

const BOB: &str = "pk_demo_bob";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_tier_in_redis_reaches_429_with_retry_after_and_ratelimit_headers() {
    let prefix = format!("palisade-e2e:{}:", std::process::id());
    let mut scorer = scorer_config();
    scorer.redis.url = "redis://127.0.0.1:6379".into();
    scorer.redis.key_prefix = prefix.clone();
    // The gateway's own Check timeout is 200 ms; a debug-build scorer on a busy machine
    // should not fall back to its local windows here (that path has its own suite).
    scorer.redis.timeout_ms = 150;
    let stack = Stack::start(StackOptions {
        scorer: ScorerMode::Real(Box::new(scorer)),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let c = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("{}/api/orders?page=1", stack.url);
    let mut throttled = None;
    for i in 0..20 {
        let resp = c.get(&url).header("x-api-key", BOB).send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some((i, resp));
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert!(resp.headers().contains_key("ratelimit"), "request {i}");
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

    // The five admissions are in Redis, under the free tier's key for bob.
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with("}:free:60000:l"), "{keys:?}");
    let admitted: u64 = redis::cmd("ZCARD")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(admitted, 5);
}
