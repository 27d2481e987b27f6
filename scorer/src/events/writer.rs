//! The writer task: reads the spool in order and ships batches to Postgres, flushed by size
//! (`batch_size`) and by time (`flush_interval_ms`). A failed batch is retried with backoff
//! from the same spool position, so nothing is skipped and nothing is lost while Postgres is
//! down; once Postgres has a batch the position is committed and whole segments are deleted.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{Notify, watch};

use super::{
    EventMetrics,
    event::Event,
    spool::{Spool, SpoolReader},
    store::{Store, StoreError},
};

/// How the writer batches and retries.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Events per insert.
    pub batch_size: usize,
    /// Longest an event waits for a batch to fill.
    pub flush_interval: Duration,
    /// Longest one insert (with connecting) may take before it counts as failed.
    pub write_timeout: Duration,
    /// Partitions older than this many days are dropped.
    pub retention_days: u32,
    /// Partitions are created this many days ahead.
    pub premake_days: u32,
    /// After a stop, how long the writer keeps trying to empty the spool.
    pub shutdown_flush: Duration,
}

const MS_PER_DAY: i64 = 86_400_000;
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3_600);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Ships the spool to Postgres until stopped.
#[derive(Debug)]
pub struct Writer {
    spool: Arc<Spool>,
    store: Store,
    opts: WriterOptions,
    metrics: Arc<EventMetrics>,
    notify: Arc<Notify>,
    reader: SpoolReader,
    migrated: bool,
    known_days: HashSet<i64>,
    last_maintenance: Option<Instant>,
    /// True from a failure (or a backlog found at start) until the writer has caught up.
    replaying: bool,
}

impl Writer {
    /// A writer starting at the spool's committed position.
    pub fn new(
        spool: Arc<Spool>,
        store: Store,
        opts: WriterOptions,
        metrics: Arc<EventMetrics>,
        notify: Arc<Notify>,
    ) -> Self {
        let start = spool.committed();
        let replaying = start < spool.end();
        Self {
            reader: SpoolReader::new(start),
            spool,
            store,
            opts,
            metrics,
            notify,
            migrated: false,
            known_days: HashSet::new(),
            last_maintenance: None,
            replaying,
        }
    }

    /// Runs until `stop` turns true and the spool is empty (or `shutdown_flush` has passed).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut batch: Vec<Event> = Vec::with_capacity(self.opts.batch_size);
        let mut first_at: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        loop {
            let stopping = *stop.borrow();
            if stopping && deadline.is_none() {
                deadline = Some(Instant::now() + self.opts.shutdown_flush);
            }
            match self
                .reader
                .read(&self.spool, self.opts.batch_size - batch.len())
            {
                Ok(more) if !more.is_empty() => {
                    first_at.get_or_insert_with(Instant::now);
                    batch.extend(more);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "reading the event spool"),
            }
            self.metrics
                .dropped_corrupt
                .inc_by(std::mem::take(&mut self.reader.corrupt));
            self.metrics.queue_depth.set(batch.len() as i64);
            let full = batch.len() >= self.opts.batch_size;
            let due = first_at.is_some_and(|t| t.elapsed() >= self.opts.flush_interval);
            if !batch.is_empty() && (full || due || stopping) {
                if !self.ship(&batch, &mut stop, deadline).await {
                    break;
                }
                batch.clear();
                first_at = None;
                continue;
            }
            if stopping {
                break;
            }
            let wait = first_at.map_or(self.opts.flush_interval, |t| {
                self.opts.flush_interval.saturating_sub(t.elapsed())
            });
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        self.metrics.queue_depth.set(0);
        if let Err(e) = self.spool.sync() {
            tracing::error!(error = %e, "syncing the event spool at shutdown");
        }
    }

    /// Writes `batch` until Postgres has it; false when giving up at the shutdown deadline
    /// (the events stay in the spool and are replayed at the next start).
    async fn ship(
        &mut self,
        batch: &[Event],
        stop: &mut watch::Receiver<bool>,
        mut deadline: Option<Instant>,
    ) -> bool {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let result = tokio::time::timeout(self.opts.write_timeout, self.write(batch)).await;
            match result {
                Ok(Ok(inserted)) => {
                    self.metrics
                        .batch_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_size.observe(batch.len() as f64);
                    self.metrics.persisted.inc_by(inserted);
                    self.metrics
                        .duplicates
                        .inc_by(batch.len() as u64 - inserted.min(batch.len() as u64));
                    if self.replaying {
                        self.metrics.replayed.inc_by(batch.len() as u64);
                    }
                    if failures > 0 {
                        tracing::info!(failures, "event store is back: replaying the spool");
                    }
                    let pos = self.reader.position();
                    if let Err(e) = self.spool.commit(pos) {
                        tracing::error!(error = %e, "committing the event spool position");
                    }
                    if pos >= self.spool.end() {
                        self.replaying = false;
                    }
                    self.metrics.spool_bytes.set(self.spool.bytes() as i64);
                    self.metrics
                        .backlog_bytes
                        .set(self.backlog_bytes(pos) as i64);
                    return true;
                }
                Ok(Err(e)) => self.failed(&e.to_string(), failures),
                Err(_) => self.failed("timed out", failures),
            }
            failures += 1;
            self.replaying = true;
            if *stop.borrow() && deadline.is_none() {
                deadline = Some(Instant::now() + self.opts.shutdown_flush);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "shutting down with events left in the spool; they are replayed at the next start"
                );
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn failed(&self, error: &str, failures: u32) {
        self.metrics.write_errors.inc();
        // One line when an outage starts, then every 50th attempt: no log flood.
        if failures.is_multiple_of(50) {
            tracing::warn!(
                error,
                "writing events to postgres failed; spooling and retrying"
            );
        }
    }

    fn backlog_bytes(&self, pos: super::spool::Position) -> u64 {
        self.spool.bytes().saturating_sub(pos.offset)
    }

    async fn write(&mut self, batch: &[Event]) -> Result<u64, StoreError> {
        if !self.migrated {
            self.store.migrate().await?;
            self.migrated = true;
        }
        let now = super::now_ms();
        if self
            .last_maintenance
            .is_none_or(|t| t.elapsed() >= MAINTENANCE_EVERY)
        {
            self.store
                .ensure_partitions(
                    now - MS_PER_DAY,
                    now + i64::from(self.opts.premake_days) * MS_PER_DAY,
                )
                .await?;
            let dropped = self
                .store
                .drop_expired(now, self.opts.retention_days)
                .await?;
            if dropped > 0 {
                tracing::info!(dropped, "dropped expired event partitions");
                self.known_days.clear();
            }
            let today = now.div_euclid(MS_PER_DAY);
            self.known_days
                .extend(today - 1..=today + i64::from(self.opts.premake_days));
            self.last_maintenance = Some(Instant::now());
        }
        let days: HashSet<i64> = batch
            .iter()
            .map(|e| e.time_ms.div_euclid(MS_PER_DAY))
            .collect();
        for day in days {
            if !self.known_days.contains(&day) {
                self.store
                    .ensure_partitions(day * MS_PER_DAY, day * MS_PER_DAY)
                    .await?;
                self.known_days.insert(day);
            }
        }
        self.store.insert(batch).await
    }
}
