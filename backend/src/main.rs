//! `palisade-backend`: serves the demo API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use palisade_backend::{Args, BackendConfig};
use tracing_subscriber::EnvFilter;

/// Exit status for a bad configuration (`EX_USAGE` / `EX_CONFIG` family, sysexits.h 64).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version are not errors.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            // clap's messages name the flag; they never echo the hidden key value.
            let _ = err.print();
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_tracing();
    let config = match args.to_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("palisade-backend: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match run(args.listen, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("palisade-backend failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[tokio::main]
async fn run(listen: SocketAddr, config: BackendConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr().context("reading the bound address")?,
        max_skew_secs = config.max_skew_secs(),
        replay_capacity = config.replay_capacity(),
        "palisade-backend listening"
    );
    palisade_backend::serve(listener, config, shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("palisade-backend stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. If a handler cannot be installed, that signal is just not
/// watched (logged), rather than shutting down at once.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {err}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
