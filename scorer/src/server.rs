//! Wiring: the gRPC server (Scorer, health, reflection), the admin server and the background
//! sweep, started on given listeners and stopped by one shutdown future.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use palisade_proto::v1::scorer_server::ScorerServer;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::server::TcpIncoming;

use crate::{
    admin::{self, AdminState},
    alerts::AlertSink,
    config::Config,
    detect::{
        ActiveModel, Detector, StateBackend,
        detector::{ModelSink, model_schema},
        samples::SampleStore,
        state::StateStore,
        store::{ModelStore, Status},
    },
    engine::Engine,
    events::EventSink,
    events::store::Store as EventStore,
    limiter::{
        SharedLimiter,
        redis::{RedisStore, RedisStoreError},
    },
    metrics::Metrics,
    reload::Reloader,
    service::ScorerService,
};

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
    /// The reflection service could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The Redis store could not be set up from the configuration.
    #[error("redis store: {0}")]
    Redis(#[from] RedisStoreError),
    /// The alert webhook could not be set up.
    #[error("alerts: {0}")]
    Alerts(#[from] crate::alerts::AlertsError),
    /// The model store could not be set up.
    #[error("model store: {0}")]
    Models(String),
    /// The event spool could not be opened.
    #[error("events: {0}")]
    Events(#[from] crate::events::spool::SpoolError),
}

/// The engine for `config`: Redis windows when `[redis]` is enabled (else in-process ones),
/// recording events when `[events]` says so.
pub fn build_engine(config: &Config, metrics: Arc<Metrics>) -> Result<Engine, ServeError> {
    let sink = EventSink::start(&config.events, metrics.events.clone())?;
    let alerts = AlertSink::start(&config.alerts, metrics.alerts.clone())?;
    let mut engine = Engine::new(&config.limits, Arc::clone(&metrics))
        .with_events(sink)
        .with_alerts(alerts);
    let state = key_state(config, &metrics)?;
    if config.detect.enabled {
        let mut detector = Detector::new(&config.detect, metrics.detect.clone());
        if let Some(state) = &state {
            detector = detector.with_state_sink(state.sink());
        }
        let db = detect_db(config)?;
        if let Some(db) = &db {
            let store = SampleStore::new(
                db.pool().clone(),
                model_schema().hash(),
                model_schema().len(),
            );
            let queue = store.start_writer(
                config.detect.training.reservoir,
                metrics.detect_samples.clone(),
            );
            detector = detector.with_samples(store, queue, metrics.detect_samples.clone());
            tracing::info!("training vectors in postgres");
        }
        let detector = match model_store(config, db) {
            Some((store, db)) => {
                let detector = Arc::new(detector.with_sink(persist_to(store.clone())));
                load_active_model(&detector, store, db);
                detector
            }
            None => Arc::new(detector),
        };
        engine = engine.with_detector(detector);
    }
    if !config.redis.enabled() {
        return Ok(engine);
    }
    let shared = SharedLimiter::new(&config.redis, &metrics.redis)?;
    tracing::info!(
        cluster = config.redis.is_cluster(),
        degraded_mode = ?config.redis.degraded_mode,
        "rate-limit windows in redis"
    );
    Ok(engine.with_shared(shared).with_state(state))
}

/// Per-key detection state in Redis: with detection on, `[redis]` configured and
/// `detect.state = "redis"`. Its writer has a connection of its own, with a longer timeout
/// than a Check's: it writes whole batches, off the request path.
fn key_state(config: &Config, metrics: &Metrics) -> Result<Option<Arc<StateStore>>, ServeError> {
    let d = &config.detect;
    if !d.enabled || !config.redis.enabled() || d.state != StateBackend::Redis {
        return Ok(None);
    }
    let mut writer = config.redis.clone();
    writer.timeout_ms = writer.timeout_ms.max(1_000);
    let state = StateStore::start(
        &config.redis.key_prefix,
        RedisStore::new(&writer)?,
        d.idle_ms,
        d.state_queue,
        metrics.detect_state.clone(),
    );
    tracing::info!("per-key detection state in redis");
    Ok(Some(state))
}

/// The Postgres detection keeps its models (without `detect.model_dir`) and training vectors
/// in: the event store's database, when `events.database_url` is set. One lazy pool for both.
fn detect_db(config: &Config) -> Result<Option<EventStore>, ServeError> {
    if config.events.database_url.is_empty() {
        return Ok(None);
    }
    EventStore::connect_lazy(
        config.events.database_url.expose(),
        Duration::from_millis(config.events.connect_timeout_ms),
    )
    .map(Some)
    .map_err(|e| ServeError::Models(e.to_string()))
}

/// Where trained models are kept: `detect.model_dir`, else Postgres (`db`, from
/// [`detect_db`]) when events go there, else nowhere (memory only).
fn model_store(
    config: &Config,
    db: Option<EventStore>,
) -> Option<(ModelStore, Option<EventStore>)> {
    let d = &config.detect;
    let (store, db) = if let Some(dir) = &d.model_dir {
        (ModelStore::file(dir, d.models_kept), None)
    } else {
        let db = db?;
        (
            ModelStore::postgres(db.pool().clone(), d.models_kept),
            Some(db),
        )
    };
    Some((store.expecting(model_schema()), db))
}

/// Saves every retrained model: adopted as the active one, held for audit.
fn persist_to(store: ModelStore) -> ModelSink {
    Box::new(move |model: &ActiveModel, adopted: bool| {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(version = %model.version, "model not saved: no runtime");
            return;
        };
        let (store, m, version) = (store.clone(), model.model.clone(), model.version.clone());
        let status = if adopted {
            Status::Active
        } else {
            Status::Held
        };
        runtime.spawn(async move {
            match store.save(&m, status).await {
                Ok(r) => tracing::info!(%version, status = %r.status, at = %store.location(), "model saved"),
                Err(e) => tracing::error!(%version, "model not saved: {e}"),
            }
        });
    })
}

/// Puts the store's active model in use, in the background; until then (or when there is
/// none, or it cannot be read) the detector runs without one and trains its own.
fn load_active_model(detector: &Arc<Detector>, store: ModelStore, db: Option<EventStore>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let detector = Arc::clone(detector);
    runtime.spawn(async move {
        if let Some(db) = db
            && let Err(e) = db.migrate().await
        {
            tracing::error!("models table not migrated: {e}");
        }
        match store.load_active().await {
            Ok(Some((record, model))) => match ActiveModel::new(model) {
                Ok(m) => {
                    tracing::info!(version = %record.version, at = %store.location(), "model loaded");
                    detector.install(Arc::new(m));
                }
                Err(e) => {
                    detector.count_load_failure();
                    tracing::error!(version = %record.version, "stored model refused: {e}");
                }
            },
            Ok(None) => tracing::info!(at = %store.location(), "no stored model yet: training one"),
            Err(e) => {
                detector.count_load_failure();
                tracing::error!("stored model not loaded, training a new one: {e}");
            }
        }
    });
}

/// Serves until `shutdown` resolves, then drains for at most `server.shutdown_grace_ms`.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let engine = Arc::new(build_engine(&config, Arc::new(Metrics::new()))?);
    run_with_engine(config, engine, grpc, admin, shutdown).await
}

/// [`run`] with a caller-built engine (so the caller can reload it).
pub async fn run_with_engine(
    config: Config,
    engine: Arc<Engine>,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with_reloader(config, engine, None, grpc, admin, shutdown).await
}

/// [`run_with_engine`], also reloading the policies with `reloader` on SIGHUP and
/// `POST /admin/reload`.
pub async fn run_with_reloader(
    config: Config,
    engine: Arc<Engine>,
    reloader: Option<Arc<Reloader>>,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(shared) = engine.shared() {
        shared.warm_up(Duration::from_secs(2)).await;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ScorerServer<ScorerService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(palisade_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(palisade_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let admin_router = admin::router(AdminState {
        metrics: Arc::clone(engine.metrics()),
        ready: Arc::clone(&ready),
        reloader: reloader.clone(),
    });
    #[cfg(unix)]
    let sighup_task = reloader.map(|r| tokio::spawn(r.on_sighup()));
    let mut admin_stop = stop_rx.clone();
    let admin_task: JoinHandle<std::io::Result<()>> = tokio::spawn(async move {
        axum::serve(admin, admin_router)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let sweep_engine = Arc::clone(&engine);
    let sweep_every = Duration::from_millis(config.limits.sweep_interval_ms.max(1));
    let mut sweep_stop = stop_rx.clone();
    let sweep_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tokio::select! {
                _ = tick.tick() => { sweep_engine.sweep(); }
                _ = sweep_stop.wait_for(|s| *s) => break,
            }
        }
    });

    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let grpc_addr = grpc.local_addr().ok();
    let mut grpc_stop = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ScorerServer::new(ScorerService::new(Arc::clone(&engine))))
        // Our own listener, so tonic's `tcp_nodelay` above does not reach the accepted
        // sockets: set it here. Without it, Nagle holds the response's trailers behind the
        // peer's delayed ACK and every Check from Envoy takes over a millisecond.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            },
        );

    ready.store(true, Ordering::Release);
    tracing::info!(grpc = ?grpc_addr, "scorer serving");

    let signal_ready = Arc::clone(&ready);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight calls");
        signal_ready.store(false, Ordering::Release);
        health
            .set_not_serving::<ScorerServer<ScorerService>>()
            .await;
        let _ = stop_tx.send(true);
    });

    let mut drain_rx = stop_rx;
    let grpc_result = tokio::select! {
        r = server => r,
        () = async {
            let _ = drain_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("shutdown grace period over: abandoning in-flight calls");
            Ok(())
        }
    };
    sweep_task.abort();
    #[cfg(unix)]
    if let Some(t) = sighup_task {
        t.abort();
    }
    engine.shutdown_state().await;
    engine.shutdown_events().await;
    engine.shutdown_alerts().await;
    let admin_result = admin_task.await.unwrap_or(Ok(()));
    grpc_result?;
    admin_result?;
    tracing::info!("scorer stopped");
    Ok(())
}

/// A scorer running in this process, for tests, benchmarks and the e2e harness.
#[derive(Debug)]
pub struct RunningScorer {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// The engine, to inspect metrics.
    pub engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningScorer {
    /// Binds the configured addresses (port 0 picks free ones) and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        Self::start_inner(config, None).await
    }

    /// Like [`start`](Self::start), with the configuration read from `path`, which SIGHUP
    /// and `POST /admin/reload` read again.
    pub async fn start_with_file(path: &std::path::Path) -> std::io::Result<Self> {
        let config =
            Config::load(Some(path), |k| std::env::var(k).ok()).map_err(std::io::Error::other)?;
        Self::start_inner(config, Some(path.to_owned())).await
    }

    async fn start_inner(
        config: Config,
        path: Option<std::path::PathBuf>,
    ) -> std::io::Result<Self> {
        let grpc = TcpListener::bind(config.server.grpc_listen).await?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        let grpc_addr = grpc.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let engine = Arc::new(
            build_engine(&config, Arc::new(Metrics::new())).map_err(std::io::Error::other)?,
        );
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let reloader =
            path.map(|p| Arc::new(Reloader::new(Some(p), config.clone(), Arc::clone(&engine))));
        let task = tokio::spawn(run_with_reloader(
            config,
            Arc::clone(&engine),
            reloader,
            grpc,
            admin,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(Self {
            grpc_addr,
            admin_addr,
            engine,
            stop: Some(stop),
            task,
        })
    }

    /// Stops it and waits until it has stopped.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Admin(std::io::Error::other(e))),
        }
    }
}
