//! The Redis window store: one Lua script call (one round trip) per decision.
//!
//! The script (`lua/check.lua`) checks every window of the policy and counts the request in
//! all of them only when all admit it, with the same arithmetic as [`super::window`]. It is
//! sent as `EVALSHA`; on `NOSCRIPT` (a restarted or failed-over Redis) the same call is
//! retried once as `EVAL`, which also caches the script again.
//!
//! Keys: `<prefix>{rl:<subject>}:<policy>:<window_ms>:<l|c>`. The braces are a hash tag: every
//! window of every policy of one subject (its tier's, a route's) lives in one cluster slot, so
//! one script checks them all, atomically, on a single node.
//! A Check may also fetch one more key of the same subject (the key's detection state,
//! `detect/state.rs`): a `GET` pipelined behind the script, so still one round trip, in the
//! same slot.
//!
//! Every write sets `PEXPIRE` (log: the window; counter: two windows), so idle subjects
//! vanish on their own. Expiry runs on Redis' wall clock while windows run on the request
//! clock; the two agree for live traffic (Envoy's clock).
//!
//! Memory per key (Redis 7, measured by `palisade-bench limiter-algorithms`, see
//! docs/performance.md): the sliding log holds one sorted-set entry per admitted request in
//! the window (about 60 bytes each with the member this store writes); the sliding counter is
//! a small hash of four fields, constant.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use redis::{
    Client, ErrorKind, RedisError, ServerErrorKind, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use super::{
    Outcome, Policy, WindowSpec,
    window::{Peek, combine, combine_indexed},
};
use crate::config::{Algorithm, RedisConfig};

/// The script, compiled into the binary.
pub const CHECK_SCRIPT: &str = include_str!("lua/check.lua");

/// The commands [`CHECK_SCRIPT`] runs inside Redis (lowercase, as `INFO commandstats` names
/// them). Redis counts them in its statistics, but they are not round trips from the scorer:
/// the bench and the one-round-trip test subtract them.
pub const SCRIPT_COMMANDS: [&str; 7] = [
    "zrange",
    "zremrangebyscore",
    "zcard",
    "zadd",
    "pexpire",
    "hmget",
    "hset",
];

/// Why the store could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The client rejected the configuration (bad URL).
    #[error("redis configuration: {0}")]
    Config(#[source] RedisError),
    /// Connecting, I/O, or an error reply.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// No answer within the command timeout.
    #[error("redis: no answer within the command timeout")]
    Timeout,
    /// The script answered something this version does not understand.
    #[error("redis script reply: {0}")]
    Reply(String),
}

impl RedisStoreError {
    /// A short, bounded label for metrics: `io`, `timeout`, `cluster`, `script`, `reply`,
    /// `server`, `config`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Timeout => "timeout",
            Self::Reply(_) => "reply",
            Self::Redis(e) if e.is_timeout() => "timeout",
            Self::Redis(e) if e.is_io_error() || e.is_connection_dropped() => "io",
            Self::Redis(e) => match e.kind() {
                ErrorKind::Server(ServerErrorKind::NoScript) => "script",
                ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::CrossSlot,
                )
                | ErrorKind::ClusterConnectionNotFound => "cluster",
                ErrorKind::Server(_) | ErrorKind::Extension => "server",
                _ => "io",
            },
        }
    }
}

/// What a `GET` pipelined behind the script brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Nothing was asked.
    NotAsked,
    /// The value; `None`: no such key.
    Value(Option<Vec<u8>>),
    /// Redis could not answer it (error, timeout, breaker open).
    Failed,
}

impl Fetched {
    /// `Failed` when something was asked, else `NotAsked`.
    pub fn failed_if(asked: bool) -> Self {
        if asked { Self::Failed } else { Self::NotAsked }
    }

    fn from_reply(v: Value) -> Self {
        match v {
            Value::Nil => Self::Value(None),
            Value::BulkString(b) => Self::Value(Some(b)),
            _ => Self::Failed,
        }
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript))
}

enum Conn {
    /// Reconnects on its own after I/O errors.
    Single(ConnectionManager),
    /// Connected on first use (and again after a failed first use), so the scorer starts
    /// while the cluster is down; the cluster connection then follows topology changes.
    Cluster(Box<Cluster>),
}

struct Cluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Single(_) => "Single",
            Conn::Cluster(_) => "Cluster",
        })
    }
}

/// Sliding windows in Redis, shared by every scorer replica.
#[derive(Debug)]
pub struct RedisStore {
    conn: Conn,
    sha: String,
    prefix: String,
    /// Makes sliding-log members unique across replicas: random per process.
    instance: u64,
    seq: AtomicU64,
}

impl RedisStore {
    /// A store for `config` (which must be enabled). Does not connect yet: the first
    /// decisions connect, so the scorer starts (degraded) while Redis is down. Call it inside
    /// a Tokio runtime (the single-node connection manager spawns its task).
    pub fn new(config: &RedisConfig) -> Result<Self, RedisStoreError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let conn = if config.is_cluster() {
            let client = ClusterClient::builder(config.nodes())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Enough to follow a MOVED/ASK during resharding; failures beyond that are
                // the breaker's and the degraded mode's business (the timeout bounds it all).
                .retries(2)
                .build()
                .map_err(RedisStoreError::Config)?;
            Conn::Cluster(Box::new(Cluster {
                client,
                conn: OnceCell::new(),
            }))
        } else {
            let client = Client::open(config.url.as_str()).map_err(RedisStoreError::Config)?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(100));
            Conn::Single(
                ConnectionManager::new_lazy_with_config(client, manager)
                    .map_err(RedisStoreError::Config)?,
            )
        };
        Ok(Self {
            conn,
            sha: redis::Script::new(CHECK_SCRIPT).get_hash().to_owned(),
            prefix: config.key_prefix.clone(),
            instance: RandomState::new().hash_one(std::process::id()),
            seq: AtomicU64::new(0),
        })
    }

    /// The keys of `subject` under `policy`, one per window, all in one hash slot.
    pub fn keys(&self, policy: &Policy, subject: &str) -> Vec<String> {
        policy
            .windows
            .iter()
            .map(|w| {
                let algo = match w.algorithm {
                    Algorithm::SlidingLog => 'l',
                    Algorithm::SlidingCounter => 'c',
                };
                format!(
                    "{}{{rl:{}}}:{}:{}:{algo}",
                    self.prefix, subject, policy.name, w.window_ms
                )
            })
            .collect()
    }

    /// Checks `subject` against every window of `policy` at `now_ms`, counting the request in
    /// all of them when all admit it. One round trip (two after a Redis restart: NOSCRIPT).
    /// No timeout of its own: the caller bounds it.
    pub async fn check(
        &self,
        subject: &str,
        policy: &Policy,
        now_ms: u64,
    ) -> Result<Outcome, RedisStoreError> {
        Ok(self.check_many(subject, &[policy], now_ms).await?.0)
    }

    /// [`check`](Self::check) for every window of several policies of one subject at once
    /// (all or nothing); also says which policy owns the reported window.
    pub async fn check_many(
        &self,
        subject: &str,
        policies: &[&Policy],
        now_ms: u64,
    ) -> Result<(Outcome, usize), RedisStoreError> {
        Ok(self
            .check_many_fetching(subject, policies, now_ms, None)
            .await?
            .0)
    }

    /// [`check_many`](Self::check_many), also fetching `fetch` (a key in `subject`'s hash
    /// slot) with a `GET` pipelined behind the script: still one round trip.
    pub async fn check_many_fetching(
        &self,
        subject: &str,
        policies: &[&Policy],
        now_ms: u64,
        fetch: Option<&str>,
    ) -> Result<((Outcome, usize), Fetched), RedisStoreError> {
        let specs: Vec<WindowSpec> = policies
            .iter()
            .flat_map(|p| p.windows.iter().copied())
            .collect();
        if specs.is_empty() {
            let fetched = match fetch {
                Some(key) => {
                    let mut get = redis::cmd("GET");
                    get.arg(key);
                    Fetched::from_reply(self.query(&get).await?)
                }
                None => Fetched::NotAsked,
            };
            return Ok(((combine(&[], &[]), 0), fetched));
        }
        let keys: Vec<String> = policies
            .iter()
            .flat_map(|p| self.keys(p, subject))
            .collect();
        let member = format!(
            "{:x}.{:x}",
            self.instance,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let call = |command: &str, body: &str| {
            let mut c = redis::cmd(command);
            c.arg(body)
                .arg(keys.len())
                .arg(&keys)
                .arg(now_ms)
                .arg(&member);
            for w in &specs {
                let algo = match w.algorithm {
                    Algorithm::SlidingLog => "l",
                    Algorithm::SlidingCounter => "c",
                };
                c.arg(w.limit).arg(w.window_ms).arg(algo);
            }
            c
        };
        let (reply, fetched) = match fetch {
            None => {
                let reply = match self.query(&call("EVALSHA", &self.sha)).await {
                    Err(RedisStoreError::Redis(e))
                        if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        self.query(&call("EVAL", CHECK_SCRIPT)).await?
                    }
                    other => other?,
                };
                (reply, Fetched::NotAsked)
            }
            Some(key) => {
                let (mut script, mut got) = self.with_get(call("EVALSHA", &self.sha), key).await?;
                if is_noscript(&script) {
                    (script, got) = self.with_get(call("EVAL", CHECK_SCRIPT), key).await?;
                }
                (script.extract_error()?, Fetched::from_reply(got))
            }
        };
        let (outcome, window) = parse_reply(&specs, &reply)?;
        Ok(((outcome, owner(policies, window)), fetched))
    }

    /// `script` and `GET key` in one pipeline (one round trip); each reply as it came, an
    /// error reply included.
    async fn with_get(
        &self,
        script: redis::Cmd,
        key: &str,
    ) -> Result<(Value, Value), RedisStoreError> {
        let mut p = redis::pipe();
        p.add_command(script).cmd("GET").arg(key);
        p.ignore_errors();
        let replies: Vec<Value> = self.query_pipe(&p).await?;
        let mut replies = replies.into_iter();
        match (replies.next(), replies.next()) {
            (Some(script), Some(got)) => Ok((script, got)),
            _ => Err(RedisStoreError::Reply(
                "pipeline: fewer than two replies".into(),
            )),
        }
    }

    /// Sets every `(key, value)` with a time to live of `ttl_ms`: one pipeline on a single
    /// Redis; on a cluster one command per key (a pipeline must stay within one slot).
    pub async fn set_many(
        &self,
        entries: &[(String, Vec<u8>)],
        ttl_ms: u64,
    ) -> Result<(), RedisStoreError> {
        let set = |k: &str, v: &[u8]| {
            let mut c = redis::cmd("SET");
            c.arg(k).arg(v).arg("PX").arg(ttl_ms);
            c
        };
        match &self.conn {
            Conn::Single(_) => {
                let mut p = redis::pipe();
                for (k, v) in entries {
                    p.add_command(set(k, v)).ignore();
                }
                self.query_pipe::<()>(&p).await
            }
            Conn::Cluster(_) => {
                for (k, v) in entries {
                    self.query(&set(k, v)).await?;
                }
                Ok(())
            }
        }
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        p: &redis::Pipeline,
    ) -> Result<T, RedisStoreError> {
        match &self.conn {
            Conn::Single(m) => Ok(p.query_async(&mut m.clone()).await?),
            Conn::Cluster(cluster) => {
                let c = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?;
                Ok(p.query_async(&mut c.clone()).await?)
            }
        }
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, RedisStoreError> {
        match &self.conn {
            Conn::Single(m) => Ok(cmd.query_async(&mut m.clone()).await?),
            Conn::Cluster(cluster) => {
                let c = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await?;
                Ok(cmd.query_async(&mut c.clone()).await?)
            }
        }
    }

    /// Connects and loads the script (on every master of a cluster), so the first Checks
    /// find a warm connection and a cached script.
    pub async fn warm_up(&self) -> Result<(), RedisStoreError> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(CHECK_SCRIPT);
        self.query(&load).await.map(|_| ())
    }
}

/// The index of the policy owning flattened window `window`.
pub(crate) fn owner(policies: &[&Policy], window: Option<usize>) -> usize {
    let Some(mut w) = window else {
        return 0;
    };
    for (i, p) in policies.iter().enumerate() {
        if w < p.windows.len() {
            return i;
        }
        w -= p.windows.len();
    }
    0
}

fn parse_reply(
    specs: &[WindowSpec],
    reply: &Value,
) -> Result<(Outcome, Option<usize>), RedisStoreError> {
    let bad = || RedisStoreError::Reply(format!("{reply:?}"));
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    let ints: Vec<u64> = items
        .iter()
        .map(|v| match v {
            Value::Int(i) => u64::try_from(*i).map_err(|_| bad()),
            _ => Err(bad()),
        })
        .collect::<Result<_, _>>()?;
    if ints.len() != 1 + 4 * specs.len() {
        return Err(bad());
    }
    let peeks: Vec<Peek> = ints[1..]
        .chunks_exact(4)
        .map(|c| Peek {
            admit: c[0] == 1,
            remaining: u32::try_from(c[1]).unwrap_or(u32::MAX),
            reset_ms: c[2],
            retry_after_ms: c[3],
        })
        .collect();
    let (outcome, window) = combine_indexed(specs, &peeks);
    if outcome.admitted != (ints[0] == 1) {
        return Err(bad());
    }
    Ok((outcome, window))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            name: "key:vip".into(),
            windows: vec![
                WindowSpec {
                    limit: 20,
                    window_ms: 1_000,
                    algorithm: Algorithm::SlidingLog,
                },
                WindowSpec {
                    limit: 5_000,
                    window_ms: 3_600_000,
                    algorithm: Algorithm::SlidingCounter,
                },
            ],
            shadow: false,
        }
    }

    #[tokio::test]
    async fn keys_of_a_subject_share_one_hash_tag() {
        let store = RedisStore::new(&RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            ..RedisConfig::default()
        })
        .unwrap();
        let keys = store.keys(&policy(), "k1");
        assert_eq!(
            keys,
            [
                "palisade:{rl:k1}:key:vip:1000:l",
                "palisade:{rl:k1}:key:vip:3600000:c"
            ]
        );
    }

    #[test]
    fn replies_are_checked_not_trusted() {
        let p = policy();
        let ok = Value::Array(
            [1, 1, 19, 1_000, 0, 1, 4_999, 3_600_000, 0]
                .map(Value::Int)
                .to_vec(),
        );
        let o = parse_reply(&p.windows, &ok).unwrap().0;
        assert!(o.admitted);
        assert_eq!((o.limit, o.remaining), (20, 19));
        let short = Value::Array(vec![Value::Int(1)]);
        assert!(parse_reply(&p.windows, &short).is_err());
        let inconsistent = Value::Array(
            [1, 0, 0, 10, 10, 1, 4_999, 3_600_000, 0]
                .map(Value::Int)
                .to_vec(),
        );
        assert!(parse_reply(&p.windows, &inconsistent).is_err());
    }
}
