//! The writer task: reads the spool in order and ships batches to Postgres, flushed by size
//! (`batch_size`) and by time (`flush_interval_ms`). A failed batch is retried with backoff
//! from the same spool position, so nothing is skipped and nothing is lost while Postgres is
//! down; once Postgres has a batch the position is committed and whole segments are deleted.

use std::{
    collections::{HashSet, VecDeque},
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
    /// Inserts in flight at once.
    pub parallelism: usize,
}

/// One insert in flight.
#[derive(Debug)]
struct InFlight {
    handle: tokio::task::JoinHandle<Result<u64, String>>,
    /// The spool position after its last event.
    end: super::spool::Position,
    len: usize,
    started: Instant,
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
        let replaying = spool.bytes_after(start) > 0;
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
    ///
    /// Up to `parallelism` inserts are in flight while the next batch is read; positions are
    /// committed strictly in order. When an insert fails, the writer waits for the others,
    /// rewinds to the last committed position and retries from there with backoff (batches
    /// that had landed meanwhile are skipped by `ON CONFLICT`).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut batch: Vec<Event> = Vec::with_capacity(self.opts.batch_size);
        let mut first_at: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
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
            let ship = !batch.is_empty() && (full || due || stopping);
            let settle = inflight.len() >= self.opts.parallelism.max(1)
                || (!ship && !inflight.is_empty() && (stopping || batch.is_empty()));
            let outcome = if settle {
                self.settle(&mut inflight).await
            } else if ship {
                match self.prepare(&batch).await {
                    Ok(()) => {
                        let events =
                            std::mem::replace(&mut batch, Vec::with_capacity(self.opts.batch_size));
                        first_at = None;
                        inflight.push_back(self.spawn_insert(events));
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Ok(())
            };
            match outcome {
                Ok(()) => {
                    if settle || ship {
                        if failures > 0 && inflight.is_empty() {
                            tracing::info!(failures, "event store is back: replaying the spool");
                            failures = 0;
                            backoff = BACKOFF_MIN;
                        }
                        continue;
                    }
                }
                Err(error) => {
                    self.failed(&error, failures);
                    failures += 1;
                    self.replaying = true;
                    // Let the rest finish, then start again from the last committed position.
                    for f in inflight.drain(..) {
                        let _ = f.handle.await;
                    }
                    batch.clear();
                    first_at = None;
                    self.reader = SpoolReader::new(self.spool.committed());
                    // Another scorer may have dropped a partition this one thinks exists.
                    self.known_days.clear();
                    self.last_maintenance = None;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        tracing::warn!(
                            "shutting down with events left in the spool; they are replayed at the next start"
                        );
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            if stopping && batch.is_empty() && inflight.is_empty() {
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

    fn spawn_insert(&self, events: Vec<Event>) -> InFlight {
        let store = self.store.clone();
        let timeout = self.opts.write_timeout;
        let len = events.len();
        let handle = tokio::spawn(async move {
            match tokio::time::timeout(timeout, store.insert_owned(events)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("insert timed out".to_owned()),
            }
        });
        InFlight {
            handle,
            end: self.reader.position(),
            len,
            started: Instant::now(),
        }
    }

    /// Waits for the oldest insert and commits its position.
    async fn settle(&mut self, inflight: &mut VecDeque<InFlight>) -> Result<(), String> {
        let Some(f) = inflight.pop_front() else {
            return Ok(());
        };
        let inserted = match f.handle.await {
            Ok(r) => r?,
            Err(e) => return Err(e.to_string()),
        };
        let len = f.len as u64;
        self.metrics
            .batch_seconds
            .observe(f.started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(len as f64);
        self.metrics.persisted.inc_by(inserted);
        self.metrics.duplicates.inc_by(len - inserted.min(len));
        if self.replaying {
            self.metrics.replayed.inc_by(len);
        }
        if let Err(e) = self.spool.commit(f.end) {
            tracing::error!(error = %e, "committing the event spool position");
        }
        let backlog = self.spool.bytes_after(f.end);
        if inflight.is_empty() && backlog == 0 {
            self.replaying = false;
        }
        self.metrics.spool_bytes.set(self.spool.bytes() as i64);
        self.metrics.backlog_bytes.set(backlog as i64);
        Ok(())
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

    /// Migrations (once), partition maintenance (hourly) and the partitions of `batch`'s days.
    async fn prepare(&mut self, batch: &[Event]) -> Result<(), StoreError> {
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
        Ok(())
    }
}
