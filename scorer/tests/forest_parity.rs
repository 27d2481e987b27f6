//! The forest's ROC AUC on the synthetic parity data is within 0.01 of scikit-learn's.
//!
//! The data is `tests/fixtures/parity.csv` (written by `bench/make_parity_data.py`), the
//! reference `tests/fixtures/sklearn_parity.json` (written by `bench/sklearn_parity.py`): the
//! mean AUC of scikit-learn's IsolationForest over 20 seeds, 100 trees, 256 samples.

use std::path::Path;

use palisade_scorer::detect::{ForestParams, IsolationForest, dataset::Dataset, evaluation};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn roc_auc_is_within_one_hundredth_of_scikit_learn() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("sklearn_parity.json")).unwrap())
            .unwrap();
    let sklearn_auc = reference["mean_auc"].as_f64().unwrap();
    let seeds = reference["seeds"].as_u64().unwrap();
    let file = std::fs::File::open(fixture("parity.csv")).unwrap();
    let data = Dataset::from_csv(
        std::io::BufReader::new(file),
        &["id".to_owned()],
        Some("label"),
    )
    .unwrap();
    assert_eq!(
        data.data.nrows() as u64,
        reference["rows"].as_u64().unwrap()
    );
    let labels = data.labels.unwrap();

    let mut total = 0.0;
    for seed in 0..seeds {
        let params = ForestParams {
            trees: reference["trees"].as_u64().unwrap() as usize,
            sample_size: reference["sample_size"].as_u64().unwrap() as usize,
            seed,
        };
        let forest = IsolationForest::fit(data.data.view(), &params).unwrap();
        let scores = forest.score_batch(data.data.view()).unwrap();
        total += evaluation::roc_auc(scores.as_slice().unwrap(), &labels).unwrap();
    }
    let ours = total / seeds as f64;
    eprintln!("ROC AUC: palisade {ours:.4}, scikit-learn {sklearn_auc:.4}");
    assert!(
        (ours - sklearn_auc).abs() <= 0.01,
        "palisade {ours:.4} vs scikit-learn {sklearn_auc:.4}"
    );
}
