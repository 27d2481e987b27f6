//! Isolation Forest figures to set beside scikit-learn's (`bench/sklearn_bench.py` measures
//! the same three things on the same data): fit of 100 trees x 256 samples, batch scoring
//! throughput, and single-vector score latency. Run both with `just bench-detect`.

use std::{hint::black_box, path::Path, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, Axis, concatenate};
use palisade_scorer::detect::{
    ForestParams, IsolationForest,
    dataset::Dataset,
    features::{Event, KeyFeatures, Outcome},
};

/// The batch is the parity data repeated this many times (as `np.tile` in the Python script).
const TILES: usize = 50;

fn parity_data() -> Array2<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity.csv");
    let file = std::fs::File::open(path).expect("parity fixture");
    Dataset::from_csv(
        std::io::BufReader::new(file),
        &["id".to_owned(), "label".to_owned()],
        None,
    )
    .expect("parity fixture parses")
    .data
}

fn forest(c: &mut Criterion) {
    let data = parity_data();
    let params = ForestParams {
        trees: 100,
        sample_size: 256,
        seed: 42,
    };
    let mut group = c.benchmark_group("forest");
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("fit_100x256", |b| {
        b.iter(|| IsolationForest::fit(black_box(data.view()), &params).expect("fit"))
    });

    let model = IsolationForest::fit(data.view(), &params).expect("fit");
    let views = vec![data.view(); TILES];
    let batch = concatenate(Axis(0), &views).expect("tile");
    group.throughput(Throughput::Elements(batch.nrows() as u64));
    group.bench_function(format!("score_batch_{}", batch.nrows()), |b| {
        b.iter(|| model.score_batch(black_box(batch.view())).expect("score"))
    });

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    group.bench_function(
        format!("score_batch_{}_{threads}_threads", batch.nrows()),
        |b| {
            b.iter(|| {
                model
                    .score_batch_parallel(black_box(batch.view()), threads)
                    .expect("score")
            })
        },
    );

    group.throughput(Throughput::Elements(1));
    let rows: Vec<Vec<f64>> = data.rows().into_iter().map(|r| r.to_vec()).collect();
    let mut i = 0;
    group.bench_function("score_single", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            model.score(black_box(&rows[i])).expect("score")
        })
    });
    group.finish();
}

/// The per-request cost of the behavioural features: one `observe` (what a Check would add)
/// and one `vector` (what a periodic scoring pass reads), on a key with a warm state.
fn features(c: &mut Criterion) {
    let paths: Vec<String> = (0..64)
        .map(|i| format!("/api/items/{}", 1000 + i))
        .collect();
    let query = [("page", "3"), ("q", "shoes")];
    let mut key = KeyFeatures::default();
    let mut t = 1_700_000_000_000i64;
    let event = |key: &mut KeyFeatures, t: i64, i: usize| {
        key.observe(&Event {
            ts_ms: t,
            path: &paths[i % paths.len()],
            query: &query,
            client_ip: "203.0.113.9",
            user_agent: "app/1.0",
            outcome: Outcome::Allowed,
        })
    };
    for i in 0..10_000 {
        t += 250;
        event(&mut key, t, i);
    }
    let mut group = c.benchmark_group("features");
    let mut i = 0;
    group.bench_function("observe", |b| {
        b.iter(|| {
            t += 250;
            i += 1;
            event(&mut key, t, i)
        })
    });
    group.bench_function("vector", |b| b.iter(|| key.vector(black_box(t))));
    group.finish();
}

criterion_group!(benches, forest, features);
criterion_main!(benches);
