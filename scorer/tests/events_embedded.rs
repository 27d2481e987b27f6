//! Embedded mode: without a database, events go to the spool files only, and
//! `palisade-scorer events tail` reads them back.

use palisade_proto::v1::{Outcome, ReportRequest, RequestOutcome, scorer_client::ScorerClient};
use palisade_scorer::{Config, RunningScorer};

#[tokio::test]
async fn without_a_database_events_land_in_the_spool_and_tail_reads_them() {
    let spool = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.events.spool_dir = Some(spool.path().to_owned());
    let scorer = RunningScorer::start(config).await.unwrap();
    let mut client = ScorerClient::connect(format!("http://{}", scorer.grpc_addr))
        .await
        .unwrap();
    let outcomes = (0..30)
        .map(|i| RequestOutcome {
            request_id: format!("embedded-{i}"),
            method: "GET".into(),
            path: "/api/whoami".into(),
            outcome: Outcome::Unauthorized as i32,
            status: 401,
            ..Default::default()
        })
        .collect();
    client
        .report(ReportRequest {
            outcomes,
            dropped: 0,
        })
        .await
        .unwrap();
    scorer.stop().await.unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-scorer"))
        .args(["events", "tail", "-n", "5"])
        .env("PALISADE_SPOOL_DIR", spool.path())
        .env_remove("PALISADE_DATABASE_URL")
        .env_remove("PALISADE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "embedded-25",
            "embedded-26",
            "embedded-27",
            "embedded-28",
            "embedded-29"
        ]
    );
    assert!(lines.iter().all(|e| e["decision"] == "UNAUTHORIZED"));
}
