//! Training vectors in Postgres (`palisade_training_samples`,
//! `migrations/20261123000000_create_training_samples.sql`): the event store's share of
//! detection. Each scorer writes the vectors it samples for training behind the request path;
//! a fit reads back a uniform sample of the last `training.window_ms` of every scorer's
//! vectors. A restarted scorer, or one replica among several, so trains on the fleet's recent
//! history, not only on what its own memory holds.
//!
//! Writing is best effort, like the reservoir it feeds: a full queue or a failed batch drops
//! vectors and counts them (`palisade_detect_samples_total{result}`); a fit that cannot read
//! the table falls back to the in-memory reservoir and counts that
//! (`palisade_detect_training_source_total{source}`).

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use sqlx::{PgPool, QueryBuilder, Row};
use tokio::sync::mpsc;

/// Rows per `INSERT`.
const BATCH: usize = 256;
/// A partial batch is written after this long.
const FLUSH: Duration = Duration::from_secs(1);

/// One training vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Hash of the key it describes.
    pub owner: u64,
    /// Engine clock when it was taken, ms.
    pub at_ms: i64,
    /// Model input, in schema order.
    pub vector: Vec<f64>,
}

/// Labels of `palisade_detect_samples_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SampleLabels {
    /// stored, dropped (queue full), failed (the insert failed), read_failed (a fit could
    /// not read the table; counted once per fit).
    pub result: String,
}

/// Labels of `palisade_detect_training_source_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// postgres, or reservoir (no store configured, it failed, or it had too few vectors).
    pub source: String,
}

/// `palisade_detect_samples_*` and `palisade_detect_training_source_*`.
#[derive(Debug, Clone, Default)]
pub struct SampleMetrics {
    /// Vectors by what became of them.
    pub samples: Family<SampleLabels, Counter>,
    /// Fits by where their training vectors came from.
    pub sources: Family<SourceLabels, Counter>,
}

impl SampleMetrics {
    /// Registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "detect_samples",
            "Training vectors written to Postgres, by result (stored, dropped, failed)",
            m.samples.clone(),
        );
        registry.register(
            "detect_training_source",
            "Model fits by where their training vectors came from (postgres, reservoir)",
            m.sources.clone(),
        );
        m
    }

    /// Counts `n` vectors as `result`.
    pub fn samples(&self, result: &str, n: usize) {
        self.samples
            .get_or_create(&SampleLabels {
                result: result.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// Counts one fit from `source`.
    pub fn source(&self, source: &str) {
        self.sources
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc();
    }
}

/// The table, for one feature schema.
#[derive(Debug, Clone)]
pub struct SampleStore {
    pool: PgPool,
    schema_hash: i64,
    width: usize,
}

impl SampleStore {
    /// The store of vectors of `width` features whose schema hashes to `schema_hash`.
    pub fn new(pool: PgPool, schema_hash: u64, width: usize) -> Self {
        Self {
            pool,
            schema_hash: schema_hash as i64,
            width,
        }
    }

    /// Inserts `samples` in one statement. Vectors of another width are refused whole.
    pub async fn append(&self, samples: &[Sample]) -> Result<(), sqlx::Error> {
        if samples.is_empty() {
            return Ok(());
        }
        if let Some(s) = samples.iter().find(|s| s.vector.len() != self.width) {
            return Err(sqlx::Error::Protocol(format!(
                "training vector of {} features, the schema has {}",
                s.vector.len(),
                self.width
            )));
        }
        let mut q = QueryBuilder::new(
            "INSERT INTO palisade_training_samples (schema_hash, owner, at_ms, vector) ",
        );
        q.push_values(samples, |mut row, s| {
            row.push_bind(self.schema_hash)
                .push_bind(s.owner as i64)
                .push_bind(s.at_ms)
                .push_bind(s.vector.clone());
        });
        q.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Up to `limit` vectors of this schema taken at or after `since_ms`, a uniform random
    /// sample of them; rows of another width (a corrupt row) are skipped.
    pub async fn sample(&self, since_ms: i64, limit: usize) -> Result<Vec<Sample>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT owner, at_ms, vector FROM palisade_training_samples \
             WHERE schema_hash = $1 AND at_ms >= $2 ORDER BY random() LIMIT $3",
        )
        .bind(self.schema_hash)
        .bind(since_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let vector: Vec<f64> = r.try_get("vector")?;
            if vector.len() != self.width || !vector.iter().all(|v| v.is_finite()) {
                continue;
            }
            out.push(Sample {
                owner: r.try_get::<i64, _>("owner")? as u64,
                at_ms: r.try_get("at_ms")?,
                vector,
            });
        }
        Ok(out)
    }

    /// Deletes vectors taken before `before_ms` (every schema's); returns how many.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM palisade_training_samples WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Starts the writer on the current runtime: vectors sent to the returned queue (at most
    /// `capacity` waiting) are inserted in batches of up to 256, or after a second. It stops
    /// when every sender is dropped, after writing what it holds.
    pub fn start_writer(&self, capacity: usize, metrics: SampleMetrics) -> SampleQueue {
        let (tx, mut rx) = mpsc::channel::<Sample>(capacity.max(1));
        let store = self.clone();
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let next = tokio::time::timeout(FLUSH, rx.recv()).await;
                let closed = matches!(next, Ok(None));
                if let Ok(Some(s)) = next {
                    batch.push(s);
                    if batch.len() < BATCH {
                        continue;
                    }
                }
                if !batch.is_empty() {
                    match store.append(&batch).await {
                        Ok(()) => m.samples("stored", batch.len()),
                        Err(e) => {
                            tracing::warn!("training vectors not stored: {e}");
                            m.samples("failed", batch.len());
                        }
                    }
                    batch.clear();
                }
                if closed {
                    return;
                }
            }
        });
        SampleQueue { tx, metrics }
    }
}

/// Where the detector puts its training vectors for the writer.
#[derive(Debug, Clone)]
pub struct SampleQueue {
    tx: mpsc::Sender<Sample>,
    metrics: SampleMetrics,
}

impl SampleQueue {
    /// Queues `sample`, never waiting: a full queue drops it (counted).
    pub fn push(&self, sample: Sample) {
        if self.tx.try_send(sample).is_err() {
            self.metrics.samples("dropped", 1);
        }
    }
}
