//! The events table on a real Postgres: `#[sqlx::test]` gives each test a fresh database
//! with `migrations/` applied (`DATABASE_URL`, see `just test`).

use palisade_proto::v1::{Outcome, RequestOutcome};
use palisade_scorer::events::{
    event::{Decision, Event, MAX_PATH, MAX_USER_AGENT, Sanitizer},
    store::Store,
};
use sqlx::PgPool;

const T0: i64 = 1_700_000_000_123;

fn outcome(i: u64) -> RequestOutcome {
    RequestOutcome {
        request_id: format!("req-{i}"),
        key_id: "alice".into(),
        tenant: "acme".into(),
        tier: "standard".into(),
        client_ip: "2001:db8::7".into(),
        method: "POST".into(),
        path: format!("/api/orders/{i}"),
        user_agent: "curl/8.5".into(),
        outcome: Outcome::Blocked as i32,
        status: 403,
        upstream_latency_us: 1_234,
        gateway_latency_us: 567,
        request_bytes: 89,
        response_bytes: 1_011,
        timestamp_ms: T0 + i as i64,
        reason: "anomaly:0.97".into(),
        anomaly_score: 0.97,
        model_version: "iforest-3".into(),
        backend_latency_us: 900,
        route: String::new(),
    }
}

fn event(i: u64) -> Event {
    Sanitizer::new(vec!["pk_".into()]).event(&outcome(i), T0 + 1_000, u128::from(i) << 3)
}

async fn store(pool: PgPool) -> Store {
    let s = Store::from_pool(pool);
    s.ensure_partitions(T0 - 86_400_000, T0 + 86_400_000)
        .await
        .unwrap();
    s
}

#[sqlx::test(migrations = "../migrations")]
async fn every_field_round_trips(pool: PgPool) {
    let s = store(pool).await;
    let mut sparse = event(2);
    sparse.key_id.clear();
    sparse.client_ip.clear();
    sparse.decision = Decision::Unauthorized;
    sparse.upstream_latency_us = 0;
    sparse.anomaly_score = 0.0;
    let written = vec![event(1), sparse];
    assert_eq!(s.insert(&written).await.unwrap(), 2);
    let read = s.tail(10).await.unwrap();
    assert_eq!(read, written);
    assert_eq!(read[0].route, "/api/orders/:id");
    let (ip, key): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT host(client_ip), key_id FROM events WHERE request_id = 'req-2'")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!((ip, key), (None, None), "absent values are NULL");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replayed_batch_creates_no_duplicate(pool: PgPool) {
    let s = store(pool).await;
    let batch: Vec<Event> = (0..500).map(event).collect();
    assert_eq!(s.insert(&batch).await.unwrap(), 500);
    assert_eq!(s.insert(&batch).await.unwrap(), 0);
    let mut overlapping: Vec<Event> = (400..600).map(event).collect();
    overlapping.extend(batch[..10].iter().cloned());
    assert_eq!(s.insert(&overlapping).await.unwrap(), 100);
    assert_eq!(s.count().await.unwrap(), 600);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_input_is_stored_bounded_and_escaped_without_breaking_the_batch(pool: PgPool) {
    let s = store(pool).await;
    let sanitizer = Sanitizer::new(vec!["pk_".into()]);
    let mut hostile = outcome(1);
    hostile.path = format!("/a\0b/{}", "x".repeat(1_000_000));
    // What the filter makes of a header with invalid UTF-8 (lossy), plus control bytes.
    hostile.user_agent = format!(
        "{}\r\nX-Injected: 1\u{1b}[31m{}",
        String::from_utf8_lossy(b"bad\xff\xfe"),
        "u".repeat(100_000)
    );
    hostile.client_ip = "999.1.1.1".into();
    hostile.reason = "q=".to_owned() + &"%00".repeat(200_000);
    let batch = vec![
        event(0),
        sanitizer.event(&hostile, T0 + 1_000, 99),
        event(2),
    ];
    assert_eq!(s.insert(&batch).await.unwrap(), 3, "the whole batch lands");
    let (path, ua, ip): (String, String, Option<String>) = sqlx::query_as(
        "SELECT path, user_agent, host(client_ip) FROM events WHERE request_id = 'req-1'",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert!(
        path.len() <= MAX_PATH && path.starts_with("/a\\x00b/"),
        "{}",
        &path[..20]
    );
    assert!(ua.len() <= MAX_USER_AGENT);
    assert!(
        ua.starts_with("bad\u{fffd}\u{fffd}\\x0d\\x0aX-Injected: 1\\x1b[31m"),
        "{ua}"
    );
    assert_eq!(ip, None);
}

#[sqlx::test(migrations = "../migrations")]
async fn partitions_are_created_ahead_and_dropped_after_retention(pool: PgPool) {
    let s = Store::from_pool(pool);
    let day = 86_400_000;
    assert_eq!(s.ensure_partitions(T0, T0 + 2 * day).await.unwrap(), 3);
    assert_eq!(s.ensure_partitions(T0, T0 + 2 * day).await.unwrap(), 0);
    assert_eq!(s.insert(&[event(1)]).await.unwrap(), 1);
    // Thirty days after the last partition, retention 30 days: only the newest is kept.
    assert_eq!(s.drop_expired(T0 + 32 * day, 30).await.unwrap(), 2);
    let parts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!(parts, 1);
    assert_eq!(s.count().await.unwrap(), 0, "the event's day was dropped");
}
