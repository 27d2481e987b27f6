//! Runtime reload of the rate-limit policies (tiers, per-key overrides) on SIGHUP or
//! `POST /admin/reload`, without restarting the scorer or Envoy.
//!
//! The file is read again, environment overrides applied and everything validated; a bad
//! file changes nothing (the error names every problem). Only `[limits]` takes effect:
//! `[server]` and `[redis]` are read at start-up and a change to them is logged as needing a
//! restart. Windows in Redis are keyed by policy name and window length, so a changed limit
//! applies at once to the counts already there; the in-process windows of a changed policy
//! start afresh.

use std::{path::PathBuf, sync::Arc};

use crate::{
    config::{Config, ConfigError},
    engine::Engine,
};

/// Reloads one engine's policies from one file.
#[derive(Debug)]
pub struct Reloader {
    path: Option<PathBuf>,
    started_with: Config,
    engine: Arc<Engine>,
}

impl Reloader {
    /// Reloads `engine` from `path` (built-in defaults when `None`); `started_with` is the
    /// configuration the process started with, to tell which changes need a restart.
    pub fn new(path: Option<PathBuf>, started_with: Config, engine: Arc<Engine>) -> Self {
        Self {
            path,
            started_with,
            engine,
        }
    }

    /// Reads, validates and applies the file; returns a one-line summary.
    pub fn reload(&self) -> Result<String, ConfigError> {
        let config = Config::load(self.path.as_deref(), |k| std::env::var(k).ok())?;
        self.engine.reload(&config.limits);
        if let Some(d) = self.engine.detector() {
            d.reload(&config.detect);
        }
        let mut summary = format!(
            "reloaded limits: {} tiers, {} key overrides",
            config.limits.tiers.len(),
            config.limits.keys.len()
        );
        if config.server != self.started_with.server || config.redis != self.started_with.redis {
            summary.push_str("; changes to [server] or [redis] need a restart");
        }
        tracing::info!("{summary}");
        Ok(summary)
    }

    /// Reloads on every SIGHUP until the task is dropped. A bad file is logged and ignored.
    #[cfg(unix)]
    pub async fn on_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            if let Err(e) = self.reload() {
                tracing::error!("configuration not reloaded: {e}");
            }
        }
    }
}
