//! The real-time driver against a stand-in gateway (an axum server that answers like the
//! filter: 401 for an unknown key, 429 once a key or a wrong-key client is over a small
//! budget) and the real backend for direct calls. Checks what the driver sends and how it
//! judges the answers; the full stack through Envoy is `palisade-sim --via-envoy` against
//! `just up`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::any};
use palisade_sim::{
    driver::{self, BackendTarget, EnvoyTarget, Pace},
    scenario::{Attack, ScenarioSet},
    spawn::LocalBackend,
};

#[derive(Default)]
struct Gate {
    seen: Mutex<HashMap<String, u32>>,
}

async fn gate(State(g): State<Arc<Gate>>, headers: HeaderMap) -> StatusCode {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let known = key == "pk_normal" || key == "pk_attacker";
    let subject = if known { key } else { "wrong".to_owned() };
    let mut seen = g.seen.lock().unwrap();
    let n = seen.entry(subject).or_default();
    *n += 1;
    match (known, *n) {
        (true, n) if n > 50 => StatusCode::TOO_MANY_REQUESTS,
        (true, _) => StatusCode::OK,
        (false, n) if n > 3 => StatusCode::TOO_MANY_REQUESTS,
        (false, _) => StatusCode::UNAUTHORIZED,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_time_driver_judges_by_status_and_maps_keys() {
    let state = Arc::new(Gate::default());
    let app = Router::new()
        .fallback(any(gate))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let backend = LocalBackend::start(3).await.unwrap();

    // Six seconds of real time; attacks from 2/7 of the way in.
    let mut set = ScenarioSet::days(3, 1.0, 4);
    set.attacks = vec![Attack::Burst, Attack::CredentialStuffing, Attack::Bypass];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    set.start_ms = now;
    set.span_ms = 6_000;
    set.warmup_ms = 1_000;
    let target = EnvoyTarget::new(
        &url,
        vec![
            ("normal".into(), "pk_normal".into()),
            ("attacker".into(), "pk_attacker".into()),
        ],
        Some(BackendTarget::new(&backend.url)),
    );
    let tally = driver::drive(
        Arc::new(target),
        set.stream(),
        16,
        Pace::RealTime {
            sim_start_ms: now,
            max_rate: 400.0,
        },
    )
    .await;
    assert_eq!(tally.errors, 0, "{:?}", tally.first_error);
    let burst = &tally.scenarios["burst"];
    assert!(
        burst.detections > 0,
        "the attacker key went over its budget"
    );
    let stuffing = &tally.scenarios["credential_stuffing"];
    assert!(
        stuffing.detections > 0,
        "wrong keys from one client were throttled"
    );
    let bypass = &tally.scenarios["bypass"];
    assert!(bypass.counted > 0 && bypass.detections == bypass.counted);
    let seen = state.seen.lock().unwrap();
    assert!(seen.contains_key("pk_attacker") && !seen.contains_key(""));
    for (key, k) in &tally.keys {
        assert_eq!(k.flagged, 0, "normal key {key} was refused");
    }
}
