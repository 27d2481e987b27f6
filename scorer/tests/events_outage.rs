//! Postgres goes away under steady load and comes back: every event the scorer acknowledged
//! is stored exactly once, also when the scorer is SIGKILLed during the outage. The outage is
//! a TCP proxy between the scorer and Postgres that drops its connections and refuses new ones.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use palisade_proto::v1::{Outcome, ReportRequest, RequestOutcome, scorer_client::ScorerClient};
use palisade_scorer::{Config, RunningScorer};
use parking_lot::Mutex;
use sqlx::PgPool;
use tokio::{
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    task::JoinHandle,
};
use tonic::transport::Channel;

/// A loopback TCP proxy to Postgres that can be cut and restored.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().push(task);
            }
        });
        Self {
            addr,
            up,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The test database's URL, through `proxy`.
fn url_via(pool: &PgPool, proxy: SocketAddr) -> String {
    let db = pool.connect_options().get_database().unwrap().to_owned();
    format!("postgres://postgres@{proxy}/{db}")
}

fn postgres_addr() -> SocketAddr {
    let url = std::env::var("DATABASE_URL").unwrap();
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let host = if opts.get_host().starts_with('/') {
        "127.0.0.1"
    } else {
        opts.get_host()
    };
    format!("{host}:{}", opts.get_port()).parse().unwrap()
}

fn outcome(i: u64) -> RequestOutcome {
    RequestOutcome {
        request_id: format!("req-{i}"),
        key_id: "alice".into(),
        tier: "standard".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: format!("/api/orders/{i}"),
        outcome: Outcome::Allowed as i32,
        status: 200,
        gateway_latency_us: 300,
        timestamp_ms: palisade_scorer::events::now_ms(),
        ..Default::default()
    }
}

/// Sends `batches` Reports of `size` outcomes, one every 10 ms, numbering from `*next`;
/// returns how many outcomes the scorer acknowledged.
async fn load(client: &mut ScorerClient<Channel>, next: &mut u64, batches: u32, size: u64) -> u64 {
    let mut acked = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..batches {
        tick.tick().await;
        let outcomes: Vec<_> = (*next..*next + size).map(outcome).collect();
        *next += size;
        let r = client
            .report(ReportRequest {
                outcomes,
                dropped: 0,
            })
            .await
            .expect("the scorer accepts reports while postgres is down");
        assert_eq!(u64::from(r.get_ref().accepted), size);
        acked += size;
    }
    acked
}

async fn assert_stored_exactly_once(pool: &PgPool, emitted: u64) {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT request_id) FROM events")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(rows as u64, emitted, "events emitted == events persisted");
    assert_eq!(rows, distinct, "no request stored twice");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_outage_under_load_loses_nothing_and_duplicates_nothing(pool: PgPool) {
    let proxy = Proxy::start(postgres_addr()).await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.events.database_url =
        palisade_scorer::events::config::DatabaseUrl::new(url_via(&pool, proxy.addr));
    config.events.spool_dir = Some(spool.path().to_owned());
    config.events.flush_interval_ms = 50;
    config.events.connect_timeout_ms = 500;
    config.events.write_timeout_ms = 2_000;
    config.events.shutdown_flush_ms = 30_000;
    let scorer = RunningScorer::start(config).await.unwrap();
    let mut client = ScorerClient::connect(format!("http://{}", scorer.grpc_addr))
        .await
        .unwrap();

    let mut next = 0;
    let mut emitted = load(&mut client, &mut next, 100, 50).await;
    proxy.cut();
    emitted += load(&mut client, &mut next, 200, 50).await;
    proxy.restore();
    emitted += load(&mut client, &mut next, 100, 50).await;

    let engine = std::sync::Arc::clone(&scorer.engine);
    scorer.stop().await.unwrap();
    let metrics = engine.metrics().render();
    assert_stored_exactly_once(&pool, emitted).await;
    assert!(
        metric(&metrics, "palisade_events_write_errors_total") > 0.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "palisade_events_replayed_total") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "palisade_events_recorded_total") as u64,
        emitted
    );
}

/// The value of an unlabelled sample in a Prometheus text exposition (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn spawn_scorer(url: &str, spool: &Path, grpc: SocketAddr, admin: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_palisade-scorer"))
        .arg("serve")
        .env("PALISADE_GRPC_LISTEN", grpc.to_string())
        .env("PALISADE_ADMIN_LISTEN", admin.to_string())
        .env("PALISADE_DATABASE_URL", url)
        .env("PALISADE_SPOOL_DIR", spool)
        .env("PALISADE_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn connect(grpc: SocketAddr) -> ScorerClient<Channel> {
    for _ in 0..200 {
        if let Ok(c) = ScorerClient::connect(format!("http://{grpc}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scorer did not come up on {grpc}");
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_scorer_killed_during_an_outage_replays_its_spool_after_restart(pool: PgPool) {
    let proxy = Proxy::start(postgres_addr()).await;
    let url = url_via(&pool, proxy.addr);
    let spool = tempfile::tempdir().unwrap();
    let (grpc, admin) = (free_addr(), free_addr());

    let mut scorer = spawn_scorer(&url, spool.path(), grpc, admin).await;
    let mut client = connect(grpc).await;
    let mut next = 0;
    let mut emitted = load(&mut client, &mut next, 50, 40).await;
    proxy.cut();
    emitted += load(&mut client, &mut next, 100, 40).await;
    scorer.start_kill().unwrap(); // SIGKILL
    scorer.wait().await.unwrap();

    let mut scorer = spawn_scorer(&url, spool.path(), grpc, admin).await;
    let mut client = connect(grpc).await;
    emitted += load(&mut client, &mut next, 50, 40).await;
    proxy.restore();
    emitted += load(&mut client, &mut next, 50, 40).await;

    // The restarted scorer replays what its predecessor spooled during the outage.
    let mut replayed = 0.0;
    for _ in 0..150 {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        replayed = metric(&text, "palisade_events_replayed_total");
        if replayed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replayed > 0.0, "nothing was replayed");

    // SIGTERM: graceful shutdown empties the spool into Postgres.
    let pid = scorer.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), scorer.wait())
        .await
        .expect("the scorer stops after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert_stored_exactly_once(&pool, emitted).await;
}
