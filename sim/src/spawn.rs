//! Starting what a run needs in this process: a real scorer from a TOML file on a free
//! loopback port, and the real backend (for the bypass scenario) with a throwaway token key.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use palisade_scorer::{Config, RunningScorer};
use tokio::{net::TcpListener, sync::oneshot};

/// The scorer configuration in `text`, on free loopback ports.
pub fn scorer_config(text: &str, origin: &str) -> anyhow::Result<Config> {
    let mut config = Config::from_toml_str(text, origin)?;
    config.server.grpc_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.validate()?;
    Ok(config)
}

/// Starts a scorer from the file at `path`.
pub async fn start_scorer(path: &Path) -> anyhow::Result<RunningScorer> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config = scorer_config(&text, &path.display().to_string())?;
    RunningScorer::start(config)
        .await
        .context("starting the scorer")
}

/// The backend, serving on a free loopback port until dropped.
#[derive(Debug)]
pub struct LocalBackend {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl LocalBackend {
    /// Starts it with a token key derived from `seed` (the simulated attacker never has it).
    pub async fn start(seed: u64) -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed.rotate_left(i as u32 * 7) as u8) ^ (i as u8).wrapping_mul(37) ^ 0x5a;
        }
        let key = palisade_token::TokenKey::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("token key: {e:?}"))?;
        let config = palisade_backend::BackendConfig::new(vec![key], 300, 100_000)
            .map_err(|e| anyhow::anyhow!("backend config: {e:?}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, rx) = oneshot::channel::<()>();
        tokio::spawn(palisade_backend::serve(listener, config, async move {
            let _ = rx.await;
        }));
        Ok(Self {
            url,
            stop: Some(stop),
        })
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sim_config_loads_and_matches_the_populations_limits() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scorer.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = scorer_config(&text, "scorer.toml").unwrap();
        assert_eq!(config.server.grpc_listen.port(), 0);
        for tier in ["free", "standard", "enterprise"] {
            let windows: Vec<(i64, u32)> = config.limits.tiers[tier]
                .windows
                .iter()
                .map(|w| (w.window.as_ms() as i64, w.limit))
                .collect();
            assert_eq!(windows, crate::normal::tier_limits(tier), "tier {tier}");
        }
    }
}
