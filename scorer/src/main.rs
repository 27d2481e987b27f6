//! `palisade-scorer` command line.

use std::{io::Read, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use palisade_scorer::{Config, config::ConfigError, server};
use tokio::net::TcpListener;

mod cli;

/// Exit code for a bad configuration (EX_USAGE-style, sysexits EX_DATAERR family).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "palisade-scorer",
    version,
    about = "Palisade's scoring sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (Check, Report, health, reflection) and the admin HTTP endpoints.
    Serve {
        /// TOML configuration; built-in defaults when omitted.
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
        /// Log format.
        #[arg(long, env = "PALISADE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// TOML configuration.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the keyed digest of an API key, for the filter's `keys[].digest`.
    /// The key is read from standard input (never from arguments, which `ps` shows).
    HashKey {
        /// Pepper as hex, from this environment variable.
        #[arg(long, default_value = "PALISADE_API_KEY_PEPPER")]
        pepper_env: String,
    },
    /// Fit, score and evaluate Isolation Forest models on CSV files, offline.
    Model {
        #[command(subcommand)]
        command: cli::model::ModelCommand,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 64 like bad input; --help and --version print and succeed.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve { config, log_format } => {
            init_tracing(&log_format);
            let config = match Config::load(config.as_deref(), |k| std::env::var(k).ok()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("palisade-scorer: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => {
            match Config::load(config.as_deref(), |k| std::env::var(k).ok()) {
                Ok(c) => {
                    println!("configuration is valid\n{c:#?}");
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            }
        }
        Command::HashKey { pepper_env } => match hash_key(&pepper_env) {
            Ok(hex) => {
                println!("{hex}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("palisade-scorer: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Model { command } => cli::model::run(command),
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("palisade-scorer: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(config.server.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC on {}", config.server.grpc_listen))?;
    let admin = TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| format!("binding admin on {}", config.server.admin_listen))?;
    tracing::info!(grpc = %config.server.grpc_listen, admin = %config.server.admin_listen, "palisade-scorer starting");
    server::run(config, grpc, admin, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

fn hash_key(pepper_env: &str) -> anyhow::Result<String> {
    let pepper_hex =
        std::env::var(pepper_env).with_context(|| format!("{pepper_env} is not set"))?;
    let pepper = palisade_token::Pepper::from_hex(pepper_hex.trim())
        .map_err(|e| anyhow::anyhow!("{pepper_env}: {e}"))?;
    let mut key = String::new();
    std::io::stdin()
        .read_to_string(&mut key)
        .context("reading the API key from standard input")?;
    let key = key.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!key.is_empty(), "no API key on standard input");
    Ok(palisade_token::hash_api_key(&pepper, key.as_bytes()).to_hex())
}
