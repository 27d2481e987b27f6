//! `[events]`: where security events go and how they are batched, spooled and kept.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Deserializer};

use super::spool::{FsyncPolicy, SpoolFull};

/// Postgres URL override (`postgres://user:pass@host:5432/db`).
pub const ENV_DATABASE_URL: &str = "PALISADE_DATABASE_URL";
/// Spool directory override.
pub const ENV_SPOOL_DIR: &str = "PALISADE_SPOOL_DIR";

/// A database URL: its password never reaches a log line or a Debug print.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no URL is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://user:<redacted>@host/db
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(s), Some(at)) if at > s => {
                let userinfo = &self.0[s + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                write!(
                    f,
                    "\"{}{user}:<redacted>{}\"",
                    &self.0[..s + 3],
                    &self.0[at..]
                )
            }
            _ if self.0.contains('?') => f.write_str("\"<redacted>\""),
            _ => write!(f, "{:?}", self.0),
        }
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// `[events]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Record events at all.
    pub enabled: bool,
    /// Postgres; empty: events stay in the spool files (the embedded default).
    /// Env: `PALISADE_DATABASE_URL`.
    pub database_url: DatabaseUrl,
    /// The spool directory. Unset: the `serve` command uses `./palisade-events`, the library
    /// (tests) records nothing. Env: `PALISADE_SPOOL_DIR`.
    pub spool_dir: Option<PathBuf>,
    /// Cap on the spool, bytes: this bounds the queue between `Report` and Postgres.
    pub spool_max_bytes: u64,
    /// Size at which a new segment starts, bytes.
    pub spool_segment_bytes: u64,
    /// At the cap: `reject` or `drop_oldest`. Unset: `reject` with a database (the filter
    /// keeps counting), `drop_oldest` without one (the files are a rotating log).
    pub spool_full: Option<SpoolFull>,
    /// `always`, `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`, ms between syncs.
    pub fsync_interval_ms: u64,
    /// Events per insert.
    pub batch_size: usize,
    /// Inserts in flight at once (one connection each); positions still commit in order.
    pub writers: usize,
    /// Longest an event waits for its batch to fill, ms.
    pub flush_interval_ms: u64,
    /// Longest one insert may take before it is retried, ms.
    pub write_timeout_ms: u64,
    /// Longest a connection attempt may take, ms.
    pub connect_timeout_ms: u64,
    /// After SIGTERM, how long the writer keeps emptying the spool into Postgres, ms.
    pub shutdown_flush_ms: u64,
    /// Daily partitions older than this are dropped.
    pub retention_days: u32,
    /// Daily partitions are created this many days ahead.
    pub premake_days: u32,
    /// Tokens starting with these are API-key shaped and redacted from stored text.
    pub redact_prefixes: Vec<String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            database_url: DatabaseUrl::default(),
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 16 << 20,
            spool_full: None,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 1_000,
            batch_size: 5_000,
            writers: 3,
            flush_interval_ms: 200,
            write_timeout_ms: 10_000,
            connect_timeout_ms: 2_000,
            shutdown_flush_ms: 5_000,
            retention_days: 30,
            premake_days: 2,
            redact_prefixes: vec!["pk_".to_owned(), "sk_".to_owned()],
        }
    }
}

impl EventsConfig {
    /// The cap policy in effect.
    pub fn spool_full(&self) -> SpoolFull {
        self.spool_full.unwrap_or(if self.database_url.is_empty() {
            SpoolFull::DropOldest
        } else {
            SpoolFull::Reject
        })
    }

    /// Applies `PALISADE_DATABASE_URL` and `PALISADE_SPOOL_DIR`.
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        if let Some(url) = env(ENV_DATABASE_URL) {
            self.database_url = DatabaseUrl::new(url);
        }
        if let Some(dir) = env(ENV_SPOOL_DIR).filter(|d| !d.is_empty()) {
            self.spool_dir = Some(PathBuf::from(dir));
        }
    }

    /// Pushes every problem, each naming its key.
    pub fn validate(&self, p: &mut Vec<String>) {
        let url = self.database_url.expose();
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            p.push("events.database_url: must start with postgres:// or postgresql://".to_owned());
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            p.push("events.batch_size: must be 1 to 10000".to_owned());
        }
        if self.writers == 0 || self.writers > 16 {
            p.push("events.writers: must be 1 to 16".to_owned());
        }
        if self.spool_segment_bytes < 4_096 {
            p.push("events.spool_segment_bytes: must be at least 4096".to_owned());
        }
        if self.spool_max_bytes < 2 * self.spool_segment_bytes {
            p.push("events.spool_max_bytes: must be at least twice spool_segment_bytes".to_owned());
        }
        for (key, v) in [
            ("flush_interval_ms", self.flush_interval_ms),
            ("fsync_interval_ms", self.fsync_interval_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if v == 0 {
                p.push(format!("events.{key}: must be > 0"));
            }
        }
        if self.retention_days == 0 {
            p.push("events.retention_days: must be >= 1".to_owned());
        }
        if self.premake_days > 31 {
            p.push("events.premake_days: must be at most 31".to_owned());
        }
        if self
            .spool_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            p.push("events.spool_dir: must not be empty".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let url = DatabaseUrl::new("postgres://app:s3cret@db:5432/palisade");
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:<redacted>@db:5432"), "{shown}");
        let q = DatabaseUrl::new("postgres:///db?password=s3cret");
        assert!(!format!("{q:?}").contains("s3cret"));
    }

    #[test]
    fn validation_names_every_key() {
        let c = EventsConfig {
            database_url: DatabaseUrl::new("mysql://x"),
            batch_size: 0,
            retention_days: 0,
            flush_interval_ms: 0,
            ..EventsConfig::default()
        };
        let mut p = Vec::new();
        c.validate(&mut p);
        let all = p.join("\n");
        for key in [
            "events.database_url",
            "events.batch_size",
            "events.retention_days",
            "events.flush_interval_ms",
        ] {
            assert!(all.contains(key), "{key} missing in {all}");
        }
    }

    #[test]
    fn the_cap_policy_follows_the_mode() {
        let mut c = EventsConfig::default();
        assert_eq!(c.spool_full(), SpoolFull::DropOldest);
        c.apply_env(&|k| (k == ENV_DATABASE_URL).then(|| "postgres://x/y".to_owned()));
        assert_eq!(c.spool_full(), SpoolFull::Reject);
    }
}
