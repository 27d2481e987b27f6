//! The model store on a real Postgres: `#[sqlx::test]` gives each test a fresh database with
//! `migrations/` applied (`DATABASE_URL`, see `just test`).

use std::time::Duration;

use ndarray::Array2;
use palisade_scorer::detect::{
    ForestParams, Model, ModelError, Schema, ThresholdSpec,
    store::{ModelStore, Status, StoreError},
};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use sqlx::PgPool;

fn schema() -> Schema {
    Schema::new(vec!["rps".into(), "endpoints".into(), "entropy".into()])
}

fn data() -> Array2<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    Array2::from_shape_fn((200, 3), |_| rng.random_range(0.0..1.0))
}

fn model(seed: u64) -> Model {
    let params = ForestParams {
        trees: 20,
        sample_size: 64,
        seed,
    };
    Model::fit(
        schema(),
        data().view(),
        &params,
        ThresholdSpec::Contamination(0.05),
        1_700_000_000_000 + seed,
        &mut |_, _| {},
    )
    .unwrap()
}

fn store(pool: PgPool) -> ModelStore {
    ModelStore::postgres(pool, 3).expecting(schema())
}

async fn statuses(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT version, status FROM palisade_models ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn active_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM palisade_models WHERE status = 'active'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_saved_model_loads_back_with_identical_scores(pool: PgPool) {
    let s = store(pool.clone());
    assert!(s.load_active().await.unwrap().is_none());
    let m = model(1);
    let saved = s.save(&m, Status::Active).await.unwrap();
    assert_eq!(saved.status, Status::Active);
    assert_eq!(saved.size_bytes, m.to_bytes().unwrap().len() as u64);
    assert_eq!(saved.meta.as_ref(), Some(m.meta()));
    let (record, back) = s.load_active().await.unwrap().unwrap();
    assert_eq!(record, saved);
    assert_eq!(back, m);
    assert_eq!(
        back.score_batch(&schema(), data().view()).unwrap(),
        m.score_batch(&schema(), data().view()).unwrap()
    );
    let list = s.list(10).await.unwrap();
    assert_eq!(list, [saved]);
    assert_eq!(list[0].n_samples(), 200);
    assert_eq!(list[0].threshold(), Some(m.meta().threshold));
    let features: serde_json::Value =
        sqlx::query_scalar("SELECT meta->'features' FROM palisade_models")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(features, serde_json::json!(["rps", "endpoints", "entropy"]));
    // Saving the same model again touches the same row.
    s.save(&m, Status::Active).await.unwrap();
    assert_eq!(statuses(&pool).await.len(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn adopting_retires_the_previous_active_model(pool: PgPool) {
    let s = store(pool.clone());
    let first = s.save(&model(1), Status::Active).await.unwrap();
    let second = s.save(&model(2), Status::Active).await.unwrap();
    let mut want = vec![
        (first.version.clone(), "retired".to_owned()),
        (second.version.clone(), "active".to_owned()),
    ];
    want.sort();
    assert_eq!(statuses(&pool).await, want);
    let (r, m) = s.load_active().await.unwrap().unwrap();
    assert_eq!((r.version, m), (second.version, model(2)));
    // Rollback: the retired one, loaded by version and adopted again.
    let (_, old) = s.load(&first.version).await.unwrap();
    s.save(&old, Status::Active).await.unwrap();
    assert_eq!(
        s.load_active().await.unwrap().unwrap().0.version,
        first.version
    );
    assert_eq!(active_rows(&pool).await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_adoptions_leave_exactly_one_active_model(pool: PgPool) {
    let s = store(pool.clone());
    s.save(&model(1), Status::Active).await.unwrap();
    let (a, b) = (model(2), model(3));
    for _ in 0..5 {
        let (ra, rb) = tokio::join!(s.save(&a, Status::Active), s.save(&b, Status::Active));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(active_rows(&pool).await, 1);
        let active = s.load_active().await.unwrap().unwrap().0.version;
        assert!(
            active == ra.version || active == rb.version,
            "{active} is neither adopter"
        );
    }
    // The index, not only the code, refuses a second active row.
    let err = sqlx::query("UPDATE palisade_models SET status = 'active'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("palisade_models_one_active"),
        "{err}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_held_model_is_kept_but_never_loaded_as_active(pool: PgPool) {
    let s = store(pool.clone());
    let held = s.save(&model(1), Status::Held).await.unwrap();
    assert_eq!(held.status, Status::Held);
    assert!(s.load_active().await.unwrap().is_none());
    let active = s.save(&model(2), Status::Active).await.unwrap();
    s.save(&model(3), Status::Held).await.unwrap();
    let (r, m) = s.load_active().await.unwrap().unwrap();
    assert_eq!((r.version, m), (active.version.clone(), model(2)));
    let (r, m) = s.load(&held.version).await.unwrap();
    assert_eq!((r.status, m), (Status::Held, model(1)));
    // Holding the active model's content does not demote it.
    assert_eq!(
        s.save(&model(2), Status::Held).await.unwrap().status,
        Status::Active
    );
    let list = s.list(10).await.unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|r| r.status == Status::Held).count(), 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_corrupt_active_row_is_an_error_naming_it(pool: PgPool) {
    let s = store(pool.clone());
    let saved = s.save(&model(1), Status::Active).await.unwrap();

    sqlx::query(
        "UPDATE palisade_models SET model = overlay(model PLACING '\\xff'::bytea FROM 200)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = s.load_active().await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Model {
                source: ModelError::Checksum,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&saved.version), "{err}");
    assert!(err.to_string().contains("palisade_models"), "{err}");

    s.save(&model(1), Status::Active).await.unwrap();
    sqlx::query("UPDATE palisade_models SET model = substring(model FROM 1 FOR 100)")
        .execute(&pool)
        .await
        .unwrap();
    let err = s.load_active().await.unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // A valid model under another version.
    let other = model(2).to_bytes().unwrap();
    sqlx::query("UPDATE palisade_models SET model = $1")
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();
    let err = s.load_active().await.unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch { .. }), "{err}");

    // Another feature schema than the scorer's.
    s.save(&model(3), Status::Active).await.unwrap();
    let err = ModelStore::postgres(pool, 3)
        .expecting(Schema::new(vec!["a".into(), "b".into(), "c".into()]))
        .load_active()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Model {
                source: ModelError::SchemaMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn retention_keeps_the_newest_n_of_each_status(pool: PgPool) {
    let s = ModelStore::postgres(pool.clone(), 2);
    let mut adopted = Vec::new();
    for seed in 1..=5 {
        adopted.push(s.save(&model(seed), Status::Active).await.unwrap().version);
    }
    for seed in 10..=13 {
        s.save(&model(seed), Status::Held).await.unwrap();
    }
    let list = s.list(100).await.unwrap();
    let of = |st: Status| {
        list.iter()
            .filter(|r| r.status == st)
            .map(|r| r.version.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(Status::Active), [adopted[4].clone()]);
    assert_eq!(
        of(Status::Retired),
        [adopted[3].clone(), adopted[2].clone()]
    );
    assert_eq!(of(Status::Held).len(), 2);
    assert!(matches!(
        s.load(&adopted[0]).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_database_error_hides_the_password() {
    let opts: sqlx::postgres::PgConnectOptions = "postgres://palisade:s3cr3t-pw@127.0.0.1:1/models"
        .parse()
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(opts);
    let err = ModelStore::postgres(pool, 3)
        .load_active()
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cr3t-pw"), "{err:?}");
}
