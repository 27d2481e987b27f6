//! Security events end to end: requests through the real Envoy and filter become rows in
//! Postgres and records in the spool, and a raw API key sent by a client (as its key, in the
//! query, in the user agent, in another header) is in no table, no log line, no spool file.
//! Needs `DATABASE_URL` (see `just test`); makes and drops its own database.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use palisade_e2e::{ScorerMode, Stack, StackOptions, scorer_config};
use palisade_scorer::events::config::DatabaseUrl;
use sqlx::{Connection, PgConnection};

/// Every log line of this process, for the canary check.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `base` with its database replaced by `db`.
fn with_database(base: &str, db: &str) -> String {
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_api_key_is_in_no_table_no_log_line_and_no_spool_file() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || sink.clone())
        .init();

    let db = format!("palisade_e2e_{}", unique());
    let mut admin = PgConnection::connect(&base_url()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(&base_url(), &db);

    let spool = tempfile::tempdir().unwrap();
    let mut config = scorer_config();
    config.events.database_url = DatabaseUrl::new(url.clone());
    config.events.spool_dir = Some(spool.path().to_owned());
    config.events.flush_interval_ms = 50;
    let mut stack = Stack::start(StackOptions {
        scorer: ScorerMode::Real(Box::new(config)),
        ..StackOptions::default()
    })
    .await
    .unwrap();

    let canary = format!("pk_canary_{}", unique());
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let as_key = c
        .get(format!("{}/api/whoami?api_key={canary}", stack.url))
        .header("x-api-key", &canary)
        .header("user-agent", format!("agent {canary}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_key.status(), 401);
    let elsewhere = c
        .get(format!("{}/api/orders?token={canary}", stack.url))
        .header("x-api-key", "pk_demo_alice")
        .header("authorization", format!("Bearer {canary}"))
        .header("user-agent", format!("agent {canary}"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 200);

    // Both requests reach Postgres (filter report tick, then the writer's flush).
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let mut rows = 0i64;
    for _ in 0..100 {
        rows = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut conn)
            .await
            .unwrap_or(0);
        if rows >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, 2, "both requests are events");
    stack.stop_scorer().await.unwrap();

    let table: String =
        sqlx::query_scalar("SELECT string_agg(e::text, E'\\n' ORDER BY time) FROM events e")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let decisions: Vec<String> =
        sqlx::query_scalar("SELECT decision FROM events ORDER BY decision")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(decisions, ["ALLOW", "UNAUTHORIZED"]);
    // The backend's own latency (Server-Timing) is on the forwarded request's row, with the
    // gateway's and the upstream's, under the request id the client got back.
    let request_id = elsewhere.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (backend, upstream, gateway): (Option<i64>, Option<i64>, i64) = sqlx::query_as(
        "SELECT backend_latency_us, upstream_latency_us, gateway_latency_us FROM events \
         WHERE request_id = $1",
    )
    .bind(&request_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        backend.is_some_and(|b| b > 0),
        "backend latency {backend:?}"
    );
    assert!(
        upstream.is_some_and(|u| u >= backend.unwrap_or(0)),
        "{upstream:?}"
    );
    assert!(gateway > 0);
    assert!(table.contains("agent pk_[redacted]"), "{table}");
    assert!(
        !table.contains(&canary),
        "the canary is in the events table:\n{table}"
    );

    let mut spooled = Vec::new();
    for entry in std::fs::read_dir(spool.path()).unwrap() {
        spooled.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let spooled = String::from_utf8_lossy(&spooled);
    assert!(spooled.contains("agent pk_[redacted]"), "{spooled}");
    assert!(
        !spooled.contains(&canary),
        "the canary is in the spool:\n{spooled}"
    );

    // Envoy flushes its access log on a timer.
    let mut envoy = stack.envoy_log();
    for _ in 0..100 {
        if envoy.contains("/api/orders") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        envoy = stack.envoy_log();
    }
    assert!(
        envoy.contains("/api/orders"),
        "the access log ran:\n{envoy}"
    );
    assert!(
        !envoy.contains(&canary),
        "the canary is in Envoy's log:\n{envoy}"
    );
    let ours = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(!ours.is_empty());
    assert!(
        !ours.contains(&canary),
        "the canary is in a log line:\n{ours}"
    );

    drop(stack);
    drop(conn);
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
