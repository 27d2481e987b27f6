//! `palisade-scorer model fit | score | eval` through the real binary.

use std::{path::Path, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_palisade-scorer");

fn parity_csv() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity.csv")
        .display()
        .to_string()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fit_then_score_writes_one_score_per_row_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let csv = parity_csv();
    let model = dir.path().join("model.bin").display().to_string();
    let scores_a = dir.path().join("a.csv").display().to_string();
    let scores_b = dir.path().join("b.csv").display().to_string();
    let fit = [
        "model",
        "fit",
        "--input",
        &csv,
        "--exclude",
        "id,label",
        "--trees",
        "50",
        "--sample-size",
        "128",
        "--seed",
        "7",
        "--contamination",
        "0.05",
        "--output",
        &model,
    ];
    let (code, _, err) = run(&fit);
    assert_eq!(code, 0, "{err}");
    // A second fit with the same seed into another file must score identically.
    let model_b = dir.path().join("model_b.bin").display().to_string();
    let mut fit_b = fit;
    *fit_b.last_mut().unwrap() = &model_b;
    assert_eq!(run(&fit_b).0, 0);

    for (m, out) in [(&model, &scores_a), (&model_b, &scores_b)] {
        let (code, _, err) = run(&[
            "model",
            "score",
            "--model",
            m,
            "--input",
            &csv,
            "--exclude",
            "id,label",
            "--output",
            out,
        ]);
        assert_eq!(code, 0, "{err}");
    }
    let a = std::fs::read_to_string(&scores_a).unwrap();
    assert_eq!(a, std::fs::read_to_string(&scores_b).unwrap());
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines[0], "score,anomalous");
    assert_eq!(lines.len(), 2101);
    let flagged = lines[1..].iter().filter(|l| l.ends_with(",1")).count();
    assert!(
        (95..=115).contains(&flagged),
        "{flagged} flagged at 5 % contamination"
    );
    for l in &lines[1..] {
        let s: f64 = l.split(',').next().unwrap().parse().unwrap();
        assert!(s > 0.0 && s <= 1.0, "{l}");
    }
}

#[test]
fn eval_prints_auc_and_precision_recall() {
    let (code, out, err) = run(&[
        "model",
        "eval",
        "--input",
        &parity_csv(),
        "--exclude",
        "id",
        "--label-column",
        "label",
        "--seed",
        "3",
        "--contamination",
        "0.05",
    ]);
    assert_eq!(code, 0, "{err}");
    let auc: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("roc_auc"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(auc > 0.9, "{out}");
    assert!(out.contains("precision") && out.contains("recall"), "{out}");
}

#[test]
fn bad_input_exits_64_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let model = dir.path().join("m.bin").display().to_string();
    let cases = [
        (write("empty.csv", ""), "empty"),
        (write("ragged.csv", "a,b\n1,2\n3,4,5\n"), "line 3"),
        (
            write("text.csv", "a,b\n1,2\n3,four\n"),
            "line 3, column \"b\"",
        ),
    ];
    for (path, needle) in &cases {
        let (code, _, err) = run(&["model", "fit", "--input", path, "--output", &model]);
        assert_eq!(code, 64, "{path}: {err}");
        assert!(err.contains(needle), "{path}: {err}");
    }
    let (code, _, err) = run(&["model", "fit", "--input", &cases[0].0]);
    assert_eq!(code, 64, "missing --output: {err}");
}

#[test]
fn scoring_another_schema_or_a_foreign_file_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let csv = parity_csv();
    let model = dir.path().join("model.bin").display().to_string();
    let fit = [
        "model",
        "fit",
        "--input",
        &csv,
        "--exclude",
        "id,label",
        "--output",
        &model,
    ];
    assert_eq!(run(&fit).0, 0);
    // Keeping the label column changes the schema.
    let (code, _, err) = run(&[
        "model",
        "score",
        "--model",
        &model,
        "--input",
        &csv,
        "--exclude",
        "id",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("feature schema mismatch"), "{err}");
    let (code, _, err) = run(&[
        "model",
        "score",
        "--model",
        &csv,
        "--input",
        &csv,
        "--exclude",
        "id,label",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("not a palisade model file"), "{err}");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&model, bytes).unwrap();
    let (code, _, err) = run(&[
        "model",
        "score",
        "--model",
        &model,
        "--input",
        &csv,
        "--exclude",
        "id,label",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("truncated"), "{err}");
}
