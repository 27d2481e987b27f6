//! The detection step's cost per Check (target: at most 20 us of scorer CPU): a warm key's
//! `observe` with a model in use, amortised over the scoring cadence, and the worst case of a
//! request that is also a scoring tick (feature vector, forest score, explanation); and the
//! key-state snapshot's encoding and decoding (`detect.state = "redis"`).

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_scorer::detect::{
    DetectConfig, DetectMetrics, Detector, Observation, features::Outcome,
};

fn observe(d: &Arc<Detector>, key: &str, t: i64, path: &str) {
    black_box(d.observe(&Observation {
        key_id: key,
        tier: "standard",
        now_ms: t,
        path,
        query: &[("page", "2")],
        client_ip: "10.0.0.1",
        user_agent: "client/1.0",
        outcome: Outcome::Allowed,
    }));
}

/// A detector with a model trained on 200 keys' day of traffic.
fn trained(config: &DetectConfig) -> (Arc<Detector>, i64) {
    let d = Arc::new(Detector::new(config, DetectMetrics::default()));
    let paths: Vec<String> = (0..40)
        .map(|i| format!("/api/items/{}", 100 + i % 13))
        .collect();
    let mut t = 0;
    for step in 0..40_000 {
        t = step as i64 * 2_000;
        let k = step % 200;
        observe(&d, &format!("key-{k}"), t, &paths[step % paths.len()]);
    }
    d.retrain(t).expect("fit");
    (d, t)
}

fn detection(c: &mut Criterion) {
    let mut config = DetectConfig::default();
    config.training.min_key_age_ms = 0;
    config.training.interval_ms = u64::MAX / 4;
    let (d, mut t) = trained(&config);
    let paths: Vec<String> = (0..64)
        .map(|i| format!("/api/orders/{}", 1_000 + i))
        .collect();
    let mut i = 0usize;
    c.bench_function("detect/check_amortised", |b| {
        b.iter(|| {
            i += 1;
            t += 250;
            observe(&d, "key-7", t, &paths[i % paths.len()]);
        })
    });
    // Every request a scoring tick.
    let mut every = config.clone();
    every.score_every = 1;
    d.reload(&every);
    c.bench_function("detect/check_scoring_tick", |b| {
        b.iter(|| {
            i += 1;
            t += 250;
            observe(&d, "key-7", t, &paths[i % paths.len()]);
        })
    });
    // With the state in Redis, a scoring tick also encodes the key's snapshot (under the
    // shard's lock); a key's first sight decodes one.
    c.bench_function("detect/snapshot_encode", |b| {
        b.iter(|| black_box(d.export_state("key-7")))
    });
    let bytes = d
        .export_state("key-7")
        .and_then(Result::ok)
        .expect("key-7 has state");
    println!("detect/snapshot bytes of key-7: {}", bytes.len());
    c.bench_function("detect/snapshot_decode_install", |b| {
        b.iter(|| black_box(d.import_state("key-7", &bytes, t, true)))
    });
}

criterion_group!(benches, detection);
criterion_main!(benches);
