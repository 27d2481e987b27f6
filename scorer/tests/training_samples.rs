//! Training vectors in Postgres: `#[sqlx::test]` gives each test a fresh database with
//! `migrations/` applied (`DATABASE_URL`, see `just test`).

use std::{sync::Arc, time::Duration};

use palisade_scorer::detect::{
    DetectConfig, DetectMetrics, Detector,
    detector::{Observation, RetrainLabels, Retrained, model_schema},
    features::Outcome,
    samples::{Sample, SampleMetrics, SampleStore},
};
use sqlx::{PgPool, postgres::PgPoolOptions};

const T0: i64 = 1_700_000_000_000;

fn sample(owner: u64, at_ms: i64, width: usize) -> Sample {
    Sample {
        owner,
        at_ms,
        vector: (0..width).map(|i| owner as f64 + i as f64 / 10.0).collect(),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn vectors_round_trip_by_schema_and_window_and_old_ones_are_pruned(pool: PgPool) {
    let store = SampleStore::new(pool.clone(), 42, 3);
    let other = SampleStore::new(pool.clone(), 43, 3);
    let rows: Vec<Sample> = (0..50)
        .map(|i| sample(i, T0 + i as i64 * 1_000, 3))
        .collect();
    store.append(&rows).await.unwrap();
    other.append(&[sample(999, T0, 3)]).await.unwrap();

    // Only this schema's, only from `since`, at most `limit`, a random sample.
    let got = store.sample(T0 + 20_000, 100).await.unwrap();
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|s| s.owner >= 20 && s.owner < 50));
    assert!(got.contains(&sample(33, T0 + 33_000, 3)));
    assert_eq!(store.sample(T0, 10).await.unwrap().len(), 10);
    assert_eq!(
        other.sample(T0, 100).await.unwrap(),
        vec![sample(999, T0, 3)]
    );

    // A vector of another width is refused whole, with a clear error.
    let err = store
        .append(&[sample(1, T0, 3), sample(2, T0, 4)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("4 features"), "{err}");
    assert_eq!(store.sample(T0, 100).await.unwrap().len(), 50);

    assert_eq!(store.prune(T0 + 10_000).await.unwrap(), 11);
    assert_eq!(store.sample(0, 100).await.unwrap().len(), 40);
}

fn config() -> DetectConfig {
    let mut c = DetectConfig {
        min_requests: 1,
        score_every: 1,
        ..DetectConfig::default()
    };
    c.training.min_key_age_ms = 0;
    c.training.sample_interval_ms = 0;
    c.training.min_samples = 32;
    c.training.sample_size = 32;
    c.training.trees = 10;
    // No fit of its own during the test: the test asks for one.
    c.training.min_history_ms = 365 * 86_400_000;
    c
}

fn observe(d: &Arc<Detector>, key: &str, now_ms: i64) {
    d.observe(&Observation {
        key_id: key,
        tier: "standard",
        now_ms,
        path: "/api/orders/7",
        query: &[],
        client_ip: "10.0.0.1",
        user_agent: "app/1",
        outcome: Outcome::Allowed,
    });
}

fn detector(pool: &PgPool, metrics: &SampleMetrics) -> Arc<Detector> {
    detector_with(pool, metrics, DetectMetrics::default())
}

fn detector_with(pool: &PgPool, metrics: &SampleMetrics, detect: DetectMetrics) -> Arc<Detector> {
    let schema = model_schema();
    let store = SampleStore::new(pool.clone(), schema.hash(), schema.len());
    let queue = store.start_writer(1024, metrics.clone());
    Arc::new(Detector::new(&config(), detect).with_samples(store, queue, metrics.clone()))
}

fn retrains(m: &DetectMetrics, result: &str) -> u64 {
    m.retrains
        .get_or_create(&RetrainLabels {
            result: result.to_owned(),
        })
        .get()
}

/// Waits until `done` holds, for at most 10 s (written behind, or fitted in the background).
async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the detector has counted a retrain with `result`; the count.
async fn wait_for_retrain(m: &DetectMetrics, result: &str) -> u64 {
    eventually(|| retrains(m, result) > 0).await;
    retrains(m, result)
}

/// 40 keys' vectors, one each from `T0`, observed by `d` and written behind to Postgres.
async fn store_forty(d: &Arc<Detector>, metrics: &SampleMetrics) {
    for k in 0..40 {
        observe(d, &format!("key-{k}"), T0 + k * 1_000);
    }
    eventually(|| count(metrics, "stored") >= 40).await;
    assert_eq!(count(metrics, "stored"), 40);
}

/// 40 keys' vectors stored by one scorer, and the model it fitted on them at `T0 + 60 s`.
async fn stored_vectors_and_model(
    pool: &PgPool,
    metrics: &SampleMetrics,
) -> Arc<palisade_scorer::detect::detector::ActiveModel> {
    let first = detector(pool, metrics);
    store_forty(&first, metrics).await;
    let stored = first.stored_training(T0 + 60_000).await;
    let r = first.retrain_with(T0 + 60_000, stored).unwrap();
    assert!(matches!(r, Retrained::Adopted { .. }), "{r:?}");
    first.model().unwrap()
}

fn count(m: &SampleMetrics, result: &str) -> u64 {
    m.samples
        .get_or_create(&palisade_scorer::detect::samples::SampleLabels {
            result: result.to_owned(),
        })
        .get()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restarted_scorer_fits_on_the_stored_vectors(pool: PgPool) {
    let metrics = SampleMetrics::default();
    let first = detector(&pool, &metrics);
    store_forty(&first, &metrics).await;
    drop(first);

    // A fresh scorer has nothing in its reservoir, and fits on the stored vectors.
    let now = T0 + 60_000;
    let fresh = detector(&pool, &metrics);
    assert!(matches!(
        fresh.retrain(now).unwrap(),
        Retrained::NotEnoughData { have: 0, .. }
    ));
    let stored = fresh.stored_training(now).await.expect("postgres answers");
    assert_eq!(stored.len(), 40);
    let r = fresh.retrain_with(now, Some(stored)).unwrap();
    assert!(matches!(r, Retrained::Adopted { .. }), "{r:?}");
    assert_eq!(fresh.model().unwrap().model.meta().n_samples, 40);
    let sources = |s: &str| {
        metrics
            .sources
            .get_or_create(&palisade_scorer::detect::samples::SourceLabels {
                source: s.to_owned(),
            })
            .get()
    };
    assert_eq!((sources("postgres"), sources("reservoir")), (1, 1));
}

#[tokio::test]
async fn an_unreachable_postgres_falls_back_to_the_reservoir_and_is_counted() {
    // Nothing listens on port 1.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let metrics = SampleMetrics::default();
    let d = detector(&pool, &metrics);
    for k in 0..40 {
        observe(&d, &format!("key-{k}"), T0 + k * 1_000);
    }
    let now = T0 + 60_000;
    assert!(d.stored_training(now).await.is_none());
    assert_eq!(count(&metrics, "read_failed"), 1);
    let r = d.retrain_with(now, None).unwrap();
    assert!(matches!(r, Retrained::Adopted { .. }), "{r:?}");
    assert_eq!(d.model().unwrap().model.meta().n_samples, 40);
    // The writer could not store them either: counted, nothing lost on the request path.
    eventually(|| count(&metrics, "failed") >= 40).await;
    assert_eq!(count(&metrics, "failed"), 40);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restart_with_a_stored_model_resumes_its_schedule_not_the_first_fit_wait(pool: PgPool) {
    let metrics = SampleMetrics::default();
    let model = stored_vectors_and_model(&pool, &metrics).await;
    let interval = config().training.interval_ms as i64;
    let due = T0 + 60_000 + interval;

    // Restarted without its model: the first fit waits `min_history_ms` (a year here).
    let cold = DetectMetrics::default();
    let d = detector_with(&pool, &metrics, cold.clone());
    for k in 0..40 {
        observe(&d, &format!("key-{k}"), due + k);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(retrains(&cold, "adopted") + retrains(&cold, "held"), 0);

    // Restarted with its model loaded (here before its first vector, or after: both count)
    // and the vectors in Postgres: refitted once the loaded model's interval is up.
    for loaded_first in [true, false] {
        let warm = DetectMetrics::default();
        let d = detector_with(&pool, &metrics, warm.clone());
        if loaded_first {
            d.install(Arc::clone(&model));
        }
        observe(&d, "key-0", due - 1);
        if !loaded_first {
            d.install(Arc::clone(&model));
        }
        for k in 1..40 {
            observe(&d, &format!("key-{k}"), due - 1);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            retrains(&warm, "adopted") + retrains(&warm, "held"),
            0,
            "not yet due"
        );
        observe(&d, "key-0", due);
        let done = wait_for_retrain(&warm, "adopted").await + retrains(&warm, "held");
        assert_eq!(done, 1, "loaded first: {loaded_first}");
        assert_eq!(retrains(&warm, "deferred"), 0);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restart_with_a_model_but_no_postgres_defers_the_fit_on_a_young_reservoir(pool: PgPool) {
    let metrics = SampleMetrics::default();
    let model = stored_vectors_and_model(&pool, &metrics).await;
    let unreachable = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let m = DetectMetrics::default();
    let d = detector_with(&unreachable, &SampleMetrics::default(), m.clone());
    d.install(Arc::clone(&model));
    let due = T0 + 60_000 + config().training.interval_ms as i64;
    for k in 0..40 {
        observe(&d, &format!("key-{k}"), due + k);
    }
    // Due, but the only vectors are a few milliseconds of reservoir: the loaded model stays.
    assert_eq!(wait_for_retrain(&m, "deferred").await, 1);
    assert_eq!(retrains(&m, "adopted") + retrains(&m, "held"), 0);
    assert_eq!(d.model().unwrap().version, model.version);
}
