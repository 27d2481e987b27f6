//! Security events: one per request the gateway saw, built from the filter's outcome reports
//! (so the Check path does no logging work), spooled to disk before `Report` returns, and
//! shipped to Postgres in batches. See `docs/telemetry.md`.
//!
//! # Layout
//! - [`event`]: the event and how an outcome becomes one (pure: bounding, escaping, redaction).
//! - [`spool`]: append-only segment files with per-record checksums; the queue to Postgres.
//! - [`store`]: Postgres: migrations, partitions, the batched insert, `events tail`.
//! - [`writer`]: the task that ships the spool to the store, flushed by size and time.
//! - [`config`]: the `events` section of the configuration.

pub mod config;
pub mod event;
pub mod spool;
pub mod store;
pub mod writer;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use palisade_proto::v1::RequestOutcome;
use parking_lot::Mutex;
use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

pub use config::EventsConfig;
use event::Sanitizer;
use spool::{Spool, SpoolError, SpoolOptions};
use store::Store;
use writer::{Writer, WriterOptions};

use crate::error::ScorerError;

/// The scorer's wall clock, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Labels of `palisade_events_dropped_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DropLabels {
    /// spool_full, spool_rotated, spool_io, corrupt.
    pub reason: String,
}

/// The events' metrics, registered with the scorer's.
#[derive(Debug, Clone)]
pub struct EventMetrics {
    /// Events appended to the spool.
    pub recorded: Counter,
    /// Rows Postgres inserted.
    pub persisted: Counter,
    /// Events Postgres already had (replays).
    pub duplicates: Counter,
    /// Events written after an outage or a restart with a backlog.
    pub replayed: Counter,
    /// Refused at the cap.
    pub dropped_full: Counter,
    /// Deleted with old segments at the cap.
    pub dropped_rotated: Counter,
    /// Lost to a spool write error.
    pub dropped_io: Counter,
    /// Torn or corrupt spool records skipped.
    pub dropped_corrupt: Counter,
    /// Failed insert attempts.
    pub write_errors: Counter,
    /// Events per insert.
    pub batch_size: Histogram,
    /// Time per insert, seconds.
    pub batch_seconds: Histogram,
    /// Events read from the spool and waiting for their batch.
    pub queue_depth: Gauge,
    /// Bytes in the spool.
    pub spool_bytes: Gauge,
    /// Spool bytes not yet in Postgres.
    pub backlog_bytes: Gauge,
}

impl EventMetrics {
    /// Creates and registers them (`palisade_events_*`).
    pub fn register(registry: &mut Registry) -> Self {
        let dropped = Family::<DropLabels, Counter>::default();
        let drop = |reason: &str| {
            dropped
                .get_or_create(&DropLabels {
                    reason: reason.to_owned(),
                })
                .clone()
        };
        let m = Self {
            recorded: Counter::default(),
            persisted: Counter::default(),
            duplicates: Counter::default(),
            replayed: Counter::default(),
            dropped_full: drop("spool_full"),
            dropped_rotated: drop("spool_rotated"),
            dropped_io: drop("spool_io"),
            dropped_corrupt: drop("corrupt"),
            write_errors: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            batch_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 18)),
            queue_depth: Gauge::default(),
            spool_bytes: Gauge::default(),
            backlog_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("events");
        r.register(
            "recorded",
            "Events appended to the spool",
            m.recorded.clone(),
        );
        r.register(
            "persisted",
            "Events inserted into Postgres",
            m.persisted.clone(),
        );
        r.register(
            "duplicates",
            "Events Postgres already had (replays)",
            m.duplicates.clone(),
        );
        r.register(
            "replayed",
            "Events written from the spool after an outage or a restart",
            m.replayed.clone(),
        );
        r.register("dropped", "Events lost, by reason", dropped);
        r.register(
            "write_errors",
            "Failed event inserts (retried)",
            m.write_errors.clone(),
        );
        r.register("batch_size", "Events per insert", m.batch_size.clone());
        r.register(
            "batch_duration_seconds",
            "Time per insert",
            m.batch_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Events read from the spool waiting for their batch",
            m.queue_depth.clone(),
        );
        r.register("spool_bytes", "Bytes in the spool", m.spool_bytes.clone());
        r.register(
            "backlog_bytes",
            "Spool bytes not yet in Postgres",
            m.backlog_bytes.clone(),
        );
        m
    }
}

/// The stop signal of the background tasks, and the tasks.
type Tasks = (watch::Sender<bool>, Vec<JoinHandle<()>>);

/// Turns outcome reports into spooled events; owns the writer and fsync tasks.
#[derive(Debug)]
pub struct EventSink {
    spool: Arc<Spool>,
    sanitizer: Sanitizer,
    metrics: Arc<EventMetrics>,
    notify: Arc<Notify>,
    tasks: Mutex<Option<Tasks>>,
}

impl EventSink {
    /// Opens the spool and starts the writer (with a database) and the fsync tick. `None`
    /// when events are disabled or no spool directory is configured.
    pub fn start(
        config: &EventsConfig,
        metrics: EventMetrics,
    ) -> Result<Option<Arc<Self>>, SpoolError> {
        let Some(dir) = config.spool_dir.as_ref().filter(|_| config.enabled) else {
            return Ok(None);
        };
        let spool = Arc::new(Spool::open(
            dir,
            SpoolOptions {
                segment_bytes: config.spool_segment_bytes,
                max_bytes: config.spool_max_bytes,
                on_full: config.spool_full(),
                fsync: config.fsync,
            },
        )?);
        let metrics = Arc::new(metrics);
        metrics.spool_bytes.set(spool.bytes() as i64);
        let notify = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if !config.database_url.is_empty() {
            let store = Store::connect_lazy_with(
                config.database_url.expose(),
                Duration::from_millis(config.connect_timeout_ms),
                config.writers as u32 + 1,
            )
            .map_err(|e| SpoolError::Io(std::io::Error::other(e.to_string())))?;
            let writer = Writer::new(
                Arc::clone(&spool),
                store,
                WriterOptions {
                    batch_size: config.batch_size,
                    flush_interval: Duration::from_millis(config.flush_interval_ms),
                    write_timeout: Duration::from_millis(config.write_timeout_ms),
                    retention_days: config.retention_days,
                    premake_days: config.premake_days,
                    shutdown_flush: Duration::from_millis(config.shutdown_flush_ms),
                    parallelism: config.writers,
                },
                Arc::clone(&metrics),
                Arc::clone(&notify),
            );
            tasks.push(tokio::spawn(writer.run(stop_rx.clone())));
        }
        if config.fsync == spool::FsyncPolicy::Interval {
            let spool = Arc::clone(&spool);
            let every = Duration::from_millis(config.fsync_interval_ms);
            let mut stop = stop_rx;
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Err(e) = spool.sync() {
                                tracing::error!(error = %e, "syncing the event spool");
                            }
                        }
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            }));
        }
        tracing::info!(
            spool = %dir.display(),
            postgres = !config.database_url.is_empty(),
            "recording security events"
        );
        Ok(Some(Arc::new(Self {
            spool,
            sanitizer: Sanitizer::new(config.redact_prefixes.clone()),
            metrics,
            notify,
            tasks: Mutex::new(Some((stop_tx, tasks))),
        })))
    }

    /// Spools one event per outcome with a single write. Fails (and counts the events as
    /// dropped) only when the spool is full under the `reject` policy or the disk fails.
    pub fn record<'a>(
        &self,
        outcomes: impl IntoIterator<Item = &'a RequestOutcome>,
    ) -> Result<(), ScorerError> {
        let received = now_ms();
        let mut buf = Vec::new();
        let mut n = 0u64;
        for o in outcomes {
            let e = self
                .sanitizer
                .event(o, received, uuid::Uuid::new_v4().as_u128());
            spool::encode(&e, &mut buf);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        match self.spool.append_encoded(&buf) {
            Ok(a) => {
                self.metrics.recorded.inc_by(n);
                self.metrics.dropped_rotated.inc_by(a.rotated_events);
                self.metrics.spool_bytes.set(self.spool.bytes() as i64);
                self.notify.notify_one();
                Ok(())
            }
            Err(SpoolError::Full { .. }) => {
                self.metrics.dropped_full.inc_by(n);
                Err(ScorerError::Unavailable("event spool full".to_owned()))
            }
            Err(e) => {
                self.metrics.dropped_io.inc_by(n);
                Err(ScorerError::Internal(e.to_string()))
            }
        }
    }

    /// The spool.
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Stops the tasks; the writer first empties the spool into Postgres (bounded by
    /// `shutdown_flush_ms`), then the spool is synced.
    pub async fn shutdown(&self) {
        let Some((stop, tasks)) = self.tasks.lock().take() else {
            return;
        };
        let _ = stop.send(true);
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self.spool.sync() {
            tracing::error!(error = %e, "syncing the event spool");
        }
    }
}
