//! A small fixed scenario set (three and a half simulated days, 60 normal keys, one of each
//! attack class from the end of the first day, when the first model is fitted) through a real
//! scorer started in this process with `sim/scorer.toml`, and the real backend for the bypass
//! calls. Every attack class must be detected and at most 1 % of the normal keys flagged.

use std::path::Path;

use palisade_sim::{
    run_via_scorer,
    scenario::{Attack, ScenarioSet},
    spawn::{LocalBackend, start_scorer},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_class_is_detected_and_at_most_one_percent_of_normal_keys_flagged() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("scorer.toml");
    let scorer = start_scorer(&config).await.expect("scorer starts");
    let backend = LocalBackend::start(42).await.expect("backend starts");
    let set = ScenarioSet::days(42, 3.5, 60);
    assert_eq!(set.attacks, Attack::ALL.to_vec());

    let report = run_via_scorer(&set, &scorer.grpc_addr.to_string(), Some(&backend.url), 64)
        .await
        .expect("replay runs");
    let table = report.table();
    println!("{table}");

    assert_eq!(report.errors, 0, "transport errors:\n{table}");
    for attack in Attack::ALL {
        let line = report
            .scenarios
            .iter()
            .find(|s| s.name == attack.name())
            .unwrap_or_else(|| panic!("{attack} missing from the report:\n{table}"));
        assert!(
            line.attack && line.attack_requests > 0,
            "{attack} sent nothing"
        );
    }
    let missed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| s.attack && !s.detected)
        .map(|s| s.name.as_str())
        .collect();
    assert!(missed.is_empty(), "not detected: {missed:?}\n{table}");
    assert_eq!(report.normal_keys, 60);
    let allowed = report.normal_keys / 100;
    assert!(
        report.flagged_normal_keys.len() <= allowed,
        "{} normal keys flagged, at most {allowed}:\n{table}",
        report.flagged_normal_keys.len()
    );
    scorer.stop().await.expect("scorer stops");
}
