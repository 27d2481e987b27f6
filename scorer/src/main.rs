//! `palisade-scorer` command line.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use palisade_scorer::{
    Config, config::ConfigError, events::store::Store, metrics::Metrics, reload::Reloader, server,
};
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
    /// Apply the database migrations (`events.database_url` / `PALISADE_DATABASE_URL`).
    Migrate {
        /// TOML configuration.
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Security events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print the newest events as NDJSON, oldest first: from Postgres when a database is
    /// configured, else from the spool files.
    Tail {
        /// TOML configuration.
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Read the spool files even when a database is configured.
        #[arg(long)]
        spool: bool,
    },
}

/// The spool directory of the `serve` command when the configuration names none.
const DEFAULT_SPOOL_DIR: &str = "palisade-events";

fn load(config: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let mut c = Config::load(config, |k| std::env::var(k).ok())?;
    c.events
        .spool_dir
        .get_or_insert_with(|| PathBuf::from(DEFAULT_SPOOL_DIR));
    Ok(c)
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
            let path = config;
            let config = match load(path.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            match serve(config, path) {
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
        Command::Migrate { config } => match load(config.as_deref()) {
            Ok(c) => report(migrate(&c)),
            Err(e) => config_error(&e),
        },
        Command::Events {
            command:
                EventsCommand::Tail {
                    config,
                    lines,
                    spool,
                },
        } => match load(config.as_deref()) {
            Ok(c) => report(tail(&c, lines, spool)),
            Err(e) => config_error(&e),
        },
        Command::Model { command } => cli::model::run(command),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-scorer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = &config.events.database_url;
    anyhow::ensure!(!url.is_empty(), "no database: set PALISADE_DATABASE_URL");
    let store = Store::connect_lazy(
        url.expose(),
        Duration::from_millis(config.events.connect_timeout_ms),
    )
    .context("parsing the database URL")?;
    store.migrate().await.context("migrating")?;
    let now = palisade_scorer::events::now_ms();
    let created = store
        .ensure_partitions(
            now - 86_400_000,
            now + i64::from(config.events.premake_days) * 86_400_000,
        )
        .await
        .context("creating partitions")?;
    println!("migrations applied; {created} partitions created");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn tail(config: &Config, lines: usize, spool_only: bool) -> anyhow::Result<()> {
    let url = &config.events.database_url;
    let events = if url.is_empty() || spool_only {
        let dir = config
            .events
            .spool_dir
            .as_deref()
            .unwrap_or(std::path::Path::new(DEFAULT_SPOOL_DIR));
        let all = palisade_scorer::events::spool::read_all(dir)
            .with_context(|| format!("reading the spool in {}", dir.display()))?;
        let skip = all.len().saturating_sub(lines);
        all.into_iter().skip(skip).collect()
    } else {
        let store = Store::connect_lazy(
            url.expose(),
            Duration::from_millis(config.events.connect_timeout_ms),
        )
        .context("parsing the database URL")?;
        store
            .tail(i64::try_from(lines).unwrap_or(i64::MAX))
            .await
            .context("reading events from postgres")?
    };
    let mut out = std::io::stdout().lock();
    for e in events {
        serde_json::to_writer(&mut out, &e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
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
async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(config.server.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC on {}", config.server.grpc_listen))?;
    let admin = TcpListener::bind(config.server.admin_listen)
        .await
        .with_context(|| format!("binding admin on {}", config.server.admin_listen))?;
    tracing::info!(grpc = %config.server.grpc_listen, admin = %config.server.admin_listen, "palisade-scorer starting");
    let engine = Arc::new(
        server::build_engine(&config, Arc::new(Metrics::new()))
            .context("setting up the engine (redis, events)")?,
    );
    // SIGHUP and POST /admin/reload re-read the policies from the same file.
    let reloader = Arc::new(Reloader::new(path, config.clone(), Arc::clone(&engine)));
    server::run_with_reloader(
        config,
        engine,
        Some(reloader),
        grpc,
        admin,
        shutdown_signal(),
    )
    .await?;
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
