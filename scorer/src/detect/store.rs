//! Where trained models live between restarts: a directory or a Postgres table holding one
//! active model, and the held and retired ones for audit. A thin adapter around
//! [`Model::to_bytes`] and [`Model::from_bytes`]: every decision about which model to adopt
//! lives elsewhere.
//!
//! # Versions
//! A model's version is `iforest-` and the first 12 hex digits of the SHA-256 of its bytes
//! ([`version_of`]), so the same model always gets the same version and a loaded model is
//! checked against the version it was stored under.
//!
//! # Statuses
//! - [`Status::Active`]: adopted; [`ModelStore::load_active`] returns it. At most one.
//! - [`Status::Held`]: held back by the drift gate; stored for audit, never loaded as active.
//! - [`Status::Retired`]: was active until a newer model was adopted.
//!
//! Saving a version that is already stored rewrites its bytes; it changes its status only
//! when the new status is `Active`.
//!
//! # Directory layout
//! ```text
//! <dir>/iforest-0123456789ab.bin       an adopted model (the active one or a retired one)
//! <dir>/iforest-0123456789ab.held.bin  a held model
//! <dir>/ACTIVE                          the active version and a newline
//! ```
//! Every file is written to a temporary file in the same directory, fsynced and renamed into
//! place, so a reader (or a crash) sees the old file or the new one, never half of one. The
//! model file is in place before `ACTIVE` names it. `created_at` is the file's modification
//! time, that is its last save. One process writes a directory (saves within it are
//! serialised); any number may read it.
//!
//! # Postgres
//! The `palisade_models` table (`migrations/20261122000000_create_models.sql`). Saves take a
//! transaction-scoped advisory lock, so concurrent adopters serialise: the later one retires
//! the earlier one's model. A partial unique index makes a second active row impossible.
//!
//! # Retention
//! After every save, the newest `keep` retired models and the newest `keep` held models are
//! kept and older ones deleted; the active model is never deleted.

use std::{
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::UNIX_EPOCH,
};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row, postgres::PgRow};

use super::model::{Model, ModelError, Schema, TrainingMeta};

/// Prefix of every version.
pub const VERSION_PREFIX: &str = "iforest-";
/// Hex digits of the SHA-256 in a version.
const VERSION_HEX: usize = 12;
/// The pointer file naming the active version in a directory store.
pub const ACTIVE_FILE: &str = "ACTIVE";
/// Where a Postgres store's models are, for error messages.
const PG_LOCATION: &str = "postgres table palisade_models";
/// Longest version accepted from a pointer file or a caller.
const MAX_VERSION_LEN: usize = 64;

/// Why a model could not be saved, found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing, renaming or deleting a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The failure.
        source: io::Error,
    },
    /// The `ACTIVE` pointer file holds something that is not a version.
    #[error("{path}: {reason}")]
    BadPointer {
        /// The pointer file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A version that is not of the form this store writes (and could escape the directory).
    #[error("invalid model version {0:?}")]
    BadVersion(String),
    /// No model of that version is stored (for the active version: the pointer names a model
    /// that is gone).
    #[error("model {version} is not stored: {location}")]
    NotFound {
        /// The version.
        version: String,
        /// Where it was looked for.
        location: String,
    },
    /// The stored bytes are not a model this build can use: corrupt, truncated, of another
    /// format version, or of another feature schema than the store expects.
    #[error("model {version} ({location}) cannot be loaded: {source}")]
    Model {
        /// The version it was stored under.
        version: String,
        /// The file, or the table.
        location: String,
        /// Why, from the model format.
        #[source]
        source: ModelError,
    },
    /// A valid model stored under another model's version (a file copied or renamed by hand).
    #[error(
        "model {version} ({location}) holds the model {found}: it is stored under the wrong version"
    )]
    VersionMismatch {
        /// The version it was stored under.
        version: String,
        /// Where.
        location: String,
        /// The version of its content.
        found: String,
    },
    /// A row whose columns do not make sense (a status the table's check should refuse).
    #[error("model {version} ({PG_LOCATION}): {reason}")]
    BadRow {
        /// The row's version.
        version: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The model could not be encoded.
    #[error("encoding the model: {0}")]
    Encode(#[source] ModelError),
    /// Postgres (or the connection to it) failed. The pool's connection options are not part
    /// of the message, so a password never is.
    #[error("postgres (palisade_models): {0}")]
    Db(#[from] sqlx::Error),
    /// The blocking file task panicked or was cancelled.
    #[error("model store task failed: {0}")]
    Task(String),
}

/// Where a stored model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Adopted: the model scorers load.
    Active,
    /// Held back by the drift gate: kept for audit, never loaded as active.
    Held,
    /// Active once, replaced by a newer model.
    Retired,
}

impl Status {
    /// The name stored in the table: `active`, `held` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Held => "held",
            Self::Retired => "retired",
        }
    }

    /// The status named `s`, as [`Status::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "held" => Some(Self::Held),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a store knows about one stored model, without the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    /// `iforest-<12 hex>`, see [`version_of`].
    pub version: String,
    /// Where it stands.
    pub status: Status,
    /// When it was stored, ms since the Unix epoch (a directory store: the file's last save).
    pub created_at_ms: i64,
    /// Size of the model bytes.
    pub size_bytes: u64,
    /// Its training metadata (rows, threshold, trees, seed, training time); `None` when a
    /// listed file cannot be decoded (loading it says why).
    pub meta: Option<TrainingMeta>,
}

impl ModelRecord {
    /// Training rows, 0 when unknown.
    pub fn n_samples(&self) -> u64 {
        self.meta.as_ref().map_or(0, |m| m.n_samples)
    }

    /// The anomaly threshold, `None` when unknown.
    pub fn threshold(&self) -> Option<f64> {
        self.meta.as_ref().map(|m| m.threshold)
    }
}

/// The version of a model whose bytes ([`Model::to_bytes`]) are `bytes`:
/// `iforest-` and the first 12 hex digits of their SHA-256.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut v = String::with_capacity(VERSION_PREFIX.len() + VERSION_HEX);
    v.push_str(VERSION_PREFIX);
    v.push_str(&hex::encode(&digest[..VERSION_HEX / 2]));
    v
}

/// Refuses versions that could name a file outside the directory or are absurdly long.
fn check_version(v: &str) -> Result<(), StoreError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_VERSION_LEN
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadVersion(v.to_owned()))
    }
}

/// A store of models: a directory or a Postgres table (see the module doc).
#[derive(Debug, Clone)]
pub struct ModelStore {
    backend: Backend,
    keep: usize,
    schema: Option<Schema>,
}

#[derive(Debug, Clone)]
enum Backend {
    File {
        dir: PathBuf,
        /// Serialises this process's saves to the directory.
        lock: Arc<Mutex<()>>,
    },
    Postgres {
        pool: PgPool,
    },
}

impl ModelStore {
    /// A store in `dir` (created on the first save) keeping the newest `keep` retired and
    /// `keep` held models besides the active one; `keep` is at least 1.
    pub fn file(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            backend: Backend::File {
                dir: dir.into(),
                lock: Arc::new(Mutex::new(())),
            },
            keep: keep.max(1),
            schema: None,
        }
    }

    /// A store in the `palisade_models` table of `pool`'s database (migrations applied),
    /// keeping the newest `keep` retired and `keep` held models; `keep` is at least 1.
    pub fn postgres(pool: PgPool, keep: usize) -> Self {
        Self {
            backend: Backend::Postgres { pool },
            keep: keep.max(1),
            schema: None,
        }
    }

    /// Loads only models of `schema`: any other is a [`StoreError::Model`] with
    /// [`ModelError::SchemaMismatch`] rather than a model that refuses every vector later.
    pub fn expecting(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Where the models are, for a log line: the directory, or the table.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::File { dir, .. } => dir.display().to_string(),
            Backend::Postgres { .. } => PG_LOCATION.to_owned(),
        }
    }

    /// Stores `model` with `status` and returns its record. `Active` adopts it atomically:
    /// the previous active model becomes retired. A version already stored keeps its status
    /// unless `status` is `Active`. Older retired and held models beyond `keep` are deleted.
    pub async fn save(&self, model: &Model, status: Status) -> Result<ModelRecord, StoreError> {
        let bytes = model.to_bytes().map_err(StoreError::Encode)?;
        let version = version_of(&bytes);
        match &self.backend {
            Backend::File { dir, lock } => {
                let (dir, lock, keep) = (dir.clone(), lock.clone(), self.keep);
                let meta = model.meta().clone();
                blocking(move || {
                    let _serial = lock.lock();
                    file::save(&dir, &version, &bytes, status, keep, meta)
                })
                .await
            }
            Backend::Postgres { pool } => {
                pg::save(pool, &version, &bytes, model, status, self.keep).await
            }
        }
    }

    /// The active model, `None` when there is none. A stored active model that cannot be
    /// loaded (missing, corrupt, truncated, of another format or schema, under the wrong
    /// version) is an error naming it: the caller decides whether to run without a model.
    pub async fn load_active(&self) -> Result<Option<(ModelRecord, Model)>, StoreError> {
        let found = match &self.backend {
            Backend::File { dir, .. } => {
                let dir = dir.clone();
                blocking(move || file::load_active(&dir)).await?
            }
            Backend::Postgres { pool } => pg::load_active(pool)
                .await?
                .map(|(r, bytes)| (r, bytes, PG_LOCATION.to_owned())),
        };
        found
            .map(|(r, bytes, location)| self.decode(r, &bytes, location))
            .transpose()
    }

    /// The model stored as `version`, whatever its status (an audit, or a rollback: load it
    /// and save it as `Active`).
    pub async fn load(&self, version: &str) -> Result<(ModelRecord, Model), StoreError> {
        check_version(version)?;
        let (record, bytes, location) = match &self.backend {
            Backend::File { dir, .. } => {
                let (dir, version) = (dir.clone(), version.to_owned());
                blocking(move || file::load(&dir, &version)).await?
            }
            Backend::Postgres { pool } => {
                let (r, bytes) = pg::load(pool, version).await?;
                (r, bytes, PG_LOCATION.to_owned())
            }
        };
        self.decode(record, &bytes, location)
    }

    /// The newest `limit` stored models, newest first.
    pub async fn list(&self, limit: usize) -> Result<Vec<ModelRecord>, StoreError> {
        match &self.backend {
            Backend::File { dir, .. } => {
                let dir = dir.clone();
                blocking(move || file::list(&dir, limit)).await
            }
            Backend::Postgres { pool } => pg::list(pool, limit).await,
        }
    }

    /// Decodes stored bytes, checking them against their version and the expected schema.
    fn decode(
        &self,
        mut record: ModelRecord,
        bytes: &[u8],
        location: String,
    ) -> Result<(ModelRecord, Model), StoreError> {
        let model = Model::from_bytes(bytes).map_err(|source| StoreError::Model {
            version: record.version.clone(),
            location: location.clone(),
            source,
        })?;
        let found = version_of(bytes);
        if found != record.version {
            return Err(StoreError::VersionMismatch {
                version: record.version,
                location,
                found,
            });
        }
        if let Some(expected) = &self.schema
            && expected != model.schema()
        {
            return Err(StoreError::Model {
                version: record.version,
                location,
                source: ModelError::SchemaMismatch {
                    expected: expected.names().join(","),
                    expected_hash: expected.hash(),
                    found: model.schema().names().join(","),
                    found_hash: model.schema().hash(),
                },
            });
        }
        record.meta = Some(model.meta().clone());
        Ok((record, model))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// The directory store; blocking, run on the blocking pool.
mod file {
    use super::*;

    const ADOPTED_EXT: &str = ".bin";
    const HELD_EXT: &str = ".held.bin";
    const TMP_PREFIX: &str = ".tmp-";

    static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

    fn path(dir: &Path, version: &str, held: bool) -> PathBuf {
        let ext = if held { HELD_EXT } else { ADOPTED_EXT };
        dir.join(format!("{version}{ext}"))
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(super) fn save(
        dir: &Path,
        version: &str,
        bytes: &[u8],
        status: Status,
        keep: usize,
        meta: TrainingMeta,
    ) -> Result<ModelRecord, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let adopted = path(dir, version, false);
        let held = path(dir, version, true);
        let target = match status {
            Status::Active => adopted.clone(),
            _ if adopted.exists() => adopted.clone(),
            _ if held.exists() => held.clone(),
            Status::Held => held.clone(),
            Status::Retired => adopted.clone(),
        };
        write_atomic(&target, bytes)?;
        if status == Status::Active {
            let pointer = dir.join(ACTIVE_FILE);
            write_atomic(&pointer, format!("{version}\n").as_bytes())?;
            remove_if_exists(&held)?;
        }
        prune(dir, keep)?;
        let mut record = record_of(dir, &target, version, held == target)?;
        record.meta = Some(meta);
        Ok(record)
    }

    /// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path`
    /// and fsyncs the directory.
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{name}-{}-{seq}", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
            let _ = fs::remove_file(&tmp);
            return Err(io(path)(e));
        }
        sync_dir(dir)
    }

    #[cfg(unix)]
    fn sync_dir(dir: &Path) -> Result<(), StoreError> {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }

    #[cfg(not(unix))]
    fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io(path)(e)),
            _ => Ok(()),
        }
    }

    /// The version `ACTIVE` names, `None` when there is no pointer.
    fn active_version(dir: &Path) -> Result<Option<String>, StoreError> {
        let pointer = dir.join(ACTIVE_FILE);
        let text = match fs::read(&pointer) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&pointer)(e)),
        };
        let bad = |reason: String| StoreError::BadPointer {
            path: pointer.display().to_string(),
            reason,
        };
        let text = String::from_utf8(text).map_err(|_| bad("not UTF-8 text".into()))?;
        let version = text.trim();
        check_version(version).map_err(|_| {
            bad(format!(
                "does not name a model version (starts {:?})",
                version.chars().take(24).collect::<String>()
            ))
        })?;
        Ok(Some(version.to_owned()))
    }

    /// A record, the model bytes and the file they came from.
    pub(super) type Found = (ModelRecord, Vec<u8>, String);

    pub(super) fn load_active(dir: &Path) -> Result<Option<Found>, StoreError> {
        let Some(version) = active_version(dir)? else {
            return Ok(None);
        };
        let file = path(dir, &version, false);
        read_model(dir, &file, &version, false).map(Some)
    }

    pub(super) fn load(dir: &Path, version: &str) -> Result<Found, StoreError> {
        let adopted = path(dir, version, false);
        let held = path(dir, version, true);
        if !adopted.exists() && held.exists() {
            return read_model(dir, &held, version, true);
        }
        read_model(dir, &adopted, version, false)
    }

    fn read_model(dir: &Path, file: &Path, version: &str, held: bool) -> Result<Found, StoreError> {
        let bytes = match fs::read(file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    version: version.to_owned(),
                    location: format!("{} does not exist", file.display()),
                });
            }
            Err(e) => return Err(io(file)(e)),
        };
        let record = record_of(dir, file, version, held)?;
        Ok((record, bytes, file.display().to_string()))
    }

    /// The record of one file, without its metadata.
    fn record_of(
        dir: &Path,
        file: &Path,
        version: &str,
        held: bool,
    ) -> Result<ModelRecord, StoreError> {
        let md = fs::metadata(file).map_err(io(file))?;
        let status = if held {
            Status::Held
        } else if active_version(dir)?.as_deref() == Some(version) {
            Status::Active
        } else {
            Status::Retired
        };
        Ok(ModelRecord {
            version: version.to_owned(),
            status,
            created_at_ms: mtime_ms(&md),
            size_bytes: md.len(),
            meta: None,
        })
    }

    fn mtime_ms(md: &fs::Metadata) -> i64 {
        md.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// One model file found in the directory.
    struct Entry {
        version: String,
        path: PathBuf,
        status: Status,
        modified: std::time::SystemTime,
        size: u64,
    }

    /// The model files, newest first.
    fn entries(dir: &Path) -> Result<Vec<Entry>, StoreError> {
        let active = active_version(dir).ok().flatten();
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(dir)(e)),
        };
        let mut out = Vec::new();
        for de in rd {
            let de = de.map_err(io(dir))?;
            let name = de.file_name().to_string_lossy().into_owned();
            let (version, held) = if let Some(v) = name.strip_suffix(HELD_EXT) {
                (v, true)
            } else if let Some(v) = name.strip_suffix(ADOPTED_EXT) {
                (v, false)
            } else {
                continue;
            };
            if check_version(version).is_err() {
                continue;
            }
            let path = de.path();
            let Ok(md) = de.metadata() else { continue };
            let status = match (held, active.as_deref() == Some(version)) {
                (true, _) => Status::Held,
                (false, true) => Status::Active,
                (false, false) => Status::Retired,
            };
            out.push(Entry {
                version: version.to_owned(),
                path,
                status,
                modified: md.modified().unwrap_or(UNIX_EPOCH),
                size: md.len(),
            });
        }
        out.sort_by(|a, b| {
            b.modified
                .cmp(&a.modified)
                .then_with(|| b.version.cmp(&a.version))
        });
        Ok(out)
    }

    /// Deletes retired and held models beyond the newest `keep` of each.
    fn prune(dir: &Path, keep: usize) -> Result<(), StoreError> {
        let all = entries(dir)?;
        for status in [Status::Retired, Status::Held] {
            for e in all.iter().filter(|e| e.status == status).skip(keep) {
                remove_if_exists(&e.path)?;
            }
        }
        Ok(())
    }

    pub(super) fn list(dir: &Path, limit: usize) -> Result<Vec<ModelRecord>, StoreError> {
        let mut out = Vec::new();
        for e in entries(dir)?.into_iter().take(limit) {
            let meta = fs::read(&e.path)
                .ok()
                .and_then(|b| Model::from_bytes(&b).ok())
                .map(|m| m.meta().clone());
            let created_at_ms = e
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            out.push(ModelRecord {
                version: e.version,
                status: e.status,
                created_at_ms,
                size_bytes: e.size,
                meta,
            });
        }
        Ok(out)
    }
}

/// The Postgres store.
mod pg {
    use serde_json::{Value, json};

    use super::*;

    const COLUMNS: &str = "version, status, \
        (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, meta, \
        octet_length(model)::int8 AS size";

    pub(super) async fn save(
        pool: &PgPool,
        version: &str,
        bytes: &[u8],
        model: &Model,
        status: Status,
        keep: usize,
    ) -> Result<ModelRecord, StoreError> {
        let mut tx = pool.begin().await?;
        // Adopters queue here; each later statement sees what the earlier one committed.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('palisade_models'))")
            .execute(&mut *tx)
            .await?;
        if status == Status::Active {
            sqlx::query(
                "UPDATE palisade_models SET status = 'retired' \
                 WHERE status = 'active' AND version <> $1",
            )
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        // An existing row keeps its status unless this adopts it.
        let upsert = format!(
            "INSERT INTO palisade_models (version, status, created_at, meta, model) \
             VALUES ($1, $2, clock_timestamp(), $3, $4) \
             ON CONFLICT (version) DO UPDATE SET meta = EXCLUDED.meta, model = EXCLUDED.model, \
             status = CASE WHEN EXCLUDED.status = 'active' THEN 'active' \
                           ELSE palisade_models.status END \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&upsert)
            .bind(version)
            .bind(status.as_str())
            .bind(meta_json(model))
            .bind(bytes)
            .fetch_one(&mut *tx)
            .await?;
        let record = record(&row)?;
        sqlx::query(
            "DELETE FROM palisade_models WHERE version IN ( \
               SELECT version FROM ( \
                 SELECT version, row_number() OVER ( \
                   PARTITION BY status ORDER BY created_at DESC, version DESC) AS n \
                 FROM palisade_models WHERE status IN ('retired', 'held')) r \
               WHERE r.n > $1)",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    pub(super) async fn load_active(
        pool: &PgPool,
    ) -> Result<Option<(ModelRecord, Vec<u8>)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, model FROM palisade_models WHERE status = 'active' \
             ORDER BY created_at DESC LIMIT 1"
        ))
        .fetch_optional(pool)
        .await?;
        row.map(|r| Ok((record(&r)?, r.try_get("model")?)))
            .transpose()
    }

    pub(super) async fn load(
        pool: &PgPool,
        version: &str,
    ) -> Result<(ModelRecord, Vec<u8>), StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, model FROM palisade_models WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            version: version.to_owned(),
            location: format!("no such row in {PG_LOCATION}"),
        })?;
        Ok((record(&row)?, row.try_get("model")?))
    }

    pub(super) async fn list(pool: &PgPool, limit: usize) -> Result<Vec<ModelRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM palisade_models \
             ORDER BY created_at DESC, version DESC LIMIT $1"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
        rows.iter().map(record).collect()
    }

    fn record(row: &PgRow) -> Result<ModelRecord, StoreError> {
        let version: String = row.try_get("version")?;
        let status: String = row.try_get("status")?;
        let status = Status::parse(&status).ok_or_else(|| StoreError::BadRow {
            version: version.clone(),
            reason: format!("unknown status {status:?}"),
        })?;
        let meta: Value = row.try_get("meta")?;
        Ok(ModelRecord {
            version,
            status,
            created_at_ms: row.try_get("created_ms")?,
            size_bytes: row.try_get::<i64, _>("size")?.max(0) as u64,
            meta: meta_from_json(&meta),
        })
    }

    /// The `meta` column: training metadata and the feature schema, for audit queries.
    fn meta_json(model: &Model) -> Value {
        let m = model.meta();
        json!({
            "trees": m.trees,
            "sample_size": m.sample_size,
            "seed": m.seed,
            "n_samples": m.n_samples,
            "trained_at_ms": m.trained_at_ms,
            "contamination": m.contamination,
            "threshold": m.threshold,
            "features": model.schema().names(),
            "schema_hash": format!("{:016x}", model.schema().hash()),
        })
    }

    fn meta_from_json(v: &Value) -> Option<TrainingMeta> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(TrainingMeta {
            trees: u32::try_from(u("trees")?).ok()?,
            sample_size: u32::try_from(u("sample_size")?).ok()?,
            seed: u("seed")?,
            n_samples: u("n_samples")?,
            trained_at_ms: u("trained_at_ms")?,
            contamination: v.get("contamination").and_then(Value::as_f64),
            threshold: v.get("threshold").and_then(Value::as_f64)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;
    use crate::detect::{ForestParams, ThresholdSpec};

    fn schema() -> Schema {
        Schema::new(vec!["rps".into(), "endpoints".into(), "entropy".into()])
    }

    fn data() -> Array2<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        Array2::from_shape_fn((200, 3), |_| rng.random_range(0.0..1.0))
    }

    fn model(seed: u64) -> Model {
        let params = ForestParams {
            trees: 20,
            sample_size: 64,
            seed,
        };
        Model::fit(
            schema(),
            data().view(),
            &params,
            ThresholdSpec::Contamination(0.05),
            1_700_000_000_000 + seed,
            &mut |_, _| {},
        )
        .unwrap()
    }

    fn store(dir: &Path, keep: usize) -> ModelStore {
        ModelStore::file(dir, keep).expecting(schema())
    }

    #[test]
    fn versions_come_from_content() {
        let a = model(1).to_bytes().unwrap();
        let v = version_of(&a);
        assert_eq!(v, version_of(&model(1).to_bytes().unwrap()));
        assert_ne!(v, version_of(&model(2).to_bytes().unwrap()));
        assert!(v.starts_with("iforest-") && v.len() == 20, "{v}");
        assert!(v[8..].bytes().all(|b| b.is_ascii_hexdigit()), "{v}");
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(65)] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_saved_model_loads_back_with_identical_scores() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 3);
        assert!(s.load_active().await.unwrap().is_none());
        let m = model(1);
        let saved = s.save(&m, Status::Active).await.unwrap();
        assert_eq!(saved.status, Status::Active);
        assert_eq!(saved.n_samples(), 200);
        assert_eq!(saved.threshold(), Some(m.meta().threshold));
        assert_eq!(saved.size_bytes, m.to_bytes().unwrap().len() as u64);
        let (record, back) = s.load_active().await.unwrap().unwrap();
        assert_eq!(record.version, saved.version);
        assert_eq!(back, m);
        assert_eq!(
            back.score_batch(&schema(), data().view()).unwrap(),
            m.score_batch(&schema(), data().view()).unwrap()
        );
        let pointer = fs::read_to_string(dir.path().join(ACTIVE_FILE)).unwrap();
        assert_eq!(pointer, format!("{}\n", saved.version));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".tmp-")),
            "temporary files left: {names:?}"
        );
    }

    #[tokio::test]
    async fn a_second_adoption_becomes_active_and_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 3);
        let first = s.save(&model(1), Status::Active).await.unwrap();
        let second = s.save(&model(2), Status::Active).await.unwrap();
        let (active, m) = s.load_active().await.unwrap().unwrap();
        assert_eq!(active.version, second.version);
        assert_eq!(m, model(2));
        let list = s.list(10).await.unwrap();
        let statuses: Vec<(&str, Status)> = list
            .iter()
            .map(|r| (r.version.as_str(), r.status))
            .collect();
        assert_eq!(
            statuses,
            [
                (second.version.as_str(), Status::Active),
                (first.version.as_str(), Status::Retired)
            ]
        );
        assert_eq!(list[1].n_samples(), 200);
        // The retired one is still loadable by version, and re-adopting it is a rollback.
        let (_, old) = s.load(&first.version).await.unwrap();
        assert_eq!(old, model(1));
        s.save(&old, Status::Active).await.unwrap();
        assert_eq!(
            s.load_active().await.unwrap().unwrap().0.version,
            first.version
        );
    }

    #[tokio::test]
    async fn a_held_model_is_never_loaded_as_active() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 3);
        let held = s.save(&model(1), Status::Held).await.unwrap();
        assert_eq!(held.status, Status::Held);
        assert!(s.load_active().await.unwrap().is_none());
        let active = s.save(&model(2), Status::Active).await.unwrap();
        let again = s.save(&model(3), Status::Held).await.unwrap();
        let (r, m) = s.load_active().await.unwrap().unwrap();
        assert_eq!(r.version, active.version);
        assert_eq!(m, model(2));
        assert!(
            dir.path()
                .join(format!("{}.held.bin", again.version))
                .exists()
        );
        let (r, _) = s.load(&held.version).await.unwrap();
        assert_eq!(r.status, Status::Held);
        // Holding the active model's content does not demote it.
        let same = s.save(&model(2), Status::Held).await.unwrap();
        assert_eq!(same.status, Status::Active);
        assert_eq!(
            s.load_active().await.unwrap().unwrap().0.version,
            active.version
        );
    }

    #[tokio::test]
    async fn a_damaged_active_model_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 3);
        let saved = s.save(&model(1), Status::Active).await.unwrap();
        let file = dir.path().join(format!("{}.bin", saved.version));
        let good = fs::read(&file).unwrap();

        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        fs::write(&file, &flipped).unwrap();
        let err = s.load_active().await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Model {
                    source: ModelError::Checksum,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&saved.version), "{msg}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");

        fs::write(&file, &good[..good.len() / 3]).unwrap();
        let err = s.load_active().await.unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        // A valid model under another model's name.
        fs::write(&file, model(2).to_bytes().unwrap()).unwrap();
        let err = s.load_active().await.unwrap_err();
        assert!(matches!(err, StoreError::VersionMismatch { .. }), "{err}");

        fs::remove_file(&file).unwrap();
        let err = s.load_active().await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains(&saved.version), "{err}");

        fs::write(dir.path().join(ACTIVE_FILE), "../../etc/passwd\n").unwrap();
        let err = s.load_active().await.unwrap_err();
        assert!(matches!(err, StoreError::BadPointer { .. }), "{err}");
        assert!(err.to_string().contains(ACTIVE_FILE), "{err}");
    }

    #[tokio::test]
    async fn a_model_of_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let saved = store(dir.path(), 3)
            .save(&model(1), Status::Active)
            .await
            .unwrap();
        let other = Schema::new(vec!["a".into(), "b".into(), "c".into()]);
        let err = ModelStore::file(dir.path(), 3)
            .expecting(other)
            .load_active()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Model {
                    source: ModelError::SchemaMismatch { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&saved.version), "{err}");
        assert!(err.to_string().contains("rps,endpoints,entropy"), "{err}");
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_n_of_each_status() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 2);
        let mut adopted = Vec::new();
        for seed in 1..=5 {
            adopted.push(s.save(&model(seed), Status::Active).await.unwrap().version);
        }
        for seed in 10..=13 {
            s.save(&model(seed), Status::Held).await.unwrap();
        }
        let list = s.list(100).await.unwrap();
        let of = |st: Status| {
            list.iter()
                .filter(|r| r.status == st)
                .map(|r| r.version.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(of(Status::Active), [adopted[4].clone()]);
        assert_eq!(
            of(Status::Retired),
            [adopted[3].clone(), adopted[2].clone()]
        );
        assert_eq!(of(Status::Held).len(), 2);
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1 + 1 + 2 + 2, "ACTIVE, active, 2 retired, 2 held");
        assert!(matches!(
            s.load(&adopted[0]).await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(s.list(2).await.unwrap().len(), 2);
    }
}
