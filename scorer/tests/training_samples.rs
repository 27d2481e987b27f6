//! Training vectors in Postgres: `#[sqlx::test]` gives each test a fresh database with
//! `migrations/` applied (`DATABASE_URL`, see `just test`).

use std::{sync::Arc, time::Duration};

use palisade_scorer::detect::{
    DetectConfig, DetectMetrics, Detector,
    detector::{Observation, Retrained, model_schema},
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
    let schema = model_schema();
    let store = SampleStore::new(pool.clone(), schema.hash(), schema.len());
    let queue = store.start_writer(1024, metrics.clone());
    Arc::new(
        Detector::new(&config(), DetectMetrics::default()).with_samples(
            store,
            queue,
            metrics.clone(),
        ),
    )
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
    for k in 0..40 {
        observe(&first, &format!("key-{k}"), T0 + k * 1_000);
    }
    // Written behind, within about a second.
    for _ in 0..100 {
        if count(&metrics, "stored") == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&metrics, "stored"), 40);
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
    for _ in 0..100 {
        if count(&metrics, "failed") == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&metrics, "failed"), 40);
}
