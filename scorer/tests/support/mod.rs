//! Shared helpers of the Redis suites: private `redis-server` processes on free loopback
//! ports (killed on drop), unique key prefixes on the shared Redis, scorer configs.

#![allow(dead_code)] // each suite uses a different subset

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use palisade_scorer::Config;

/// The Redis this machine runs for tests (never flushed: every test uses its own prefix).
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// A key prefix no other test (or run) uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "palisade-test:{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A private `redis-server`; SIGKILLed on drop.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_on(free_port(), false)
    }

    /// Starts one with `--cluster-enabled yes`.
    pub fn start_cluster_node() -> Self {
        Self::start_on(free_port(), true)
    }

    /// Starts one on `port` (again, after [`kill`](Self::kill)).
    pub fn start_on(port: u16, cluster: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Self {
            port,
            child: None,
            dir,
            cluster,
        };
        s.restart();
        s
    }

    /// (Re)starts the process on the same port.
    pub fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            let conf: PathBuf = self.dir.path().join("nodes.conf");
            let _ = std::fs::remove_file(&conf);
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(conf);
        }
        self.child = Some(cmd.spawn().expect("redis-server on PATH"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).is_ok_and(|o| o.trim() == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: an outage, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against it; stdout on success.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Calls of `command` (lowercase, e.g. `evalsha`) since the last `CONFIG RESETSTAT`.
    pub fn command_calls(&self, command: &str) -> u64 {
        let text = self.cli(&["INFO", "commandstats"]).unwrap_or_default();
        let needle = format!("cmdstat_{command}:calls=");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Every command processed since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
    pub fn total_calls(&self) -> u64 {
        let text = self.cli(&["INFO", "commandstats"]).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| l.split("calls=").nth(1))
            .filter_map(|rest| rest.split(',').next())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    }
}

/// A Redis Cluster of three masters (no replicas) on free loopback ports.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok` (bounded: 20 s).
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "cluster not ok after 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes }
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scorer config on free loopback ports with `[redis]` pointing at `url`.
pub fn scorer_config(url: &str, prefix: &str) -> Config {
    let mut c = Config::default();
    c.server.grpc_listen = "127.0.0.1:0".parse().unwrap();
    c.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace_ms = 1_000;
    c.redis.url = url.to_owned();
    c.redis.key_prefix = prefix.to_owned();
    c
}
