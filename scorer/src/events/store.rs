//! Postgres: migrations, partition maintenance, the batched insert and the reads behind
//! `events tail`. A thin adapter: every decision about what to write lives elsewhere.

use std::time::Duration;

use sqlx::{
    Executor, PgPool, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use super::event::Event;

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres (or the connection to it) failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The events table of one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

const MS_PER_DAY: i64 = 86_400_000;

impl Store {
    /// A lazily connecting pool for `url` (nothing is contacted until the first query), so a
    /// scorer starts and spools while Postgres is down.
    pub fn connect_lazy(url: &str, connect_timeout: Duration) -> Result<Self, StoreError> {
        Self::connect_lazy_with(url, connect_timeout, 2)
    }

    /// [`Store::connect_lazy`] with up to `connections` connections.
    pub fn connect_lazy_with(
        url: &str,
        connect_timeout: Duration,
        connections: u32,
    ) -> Result<Self, StoreError> {
        let opts: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(connect_timeout)
            .connect_lazy_with(opts.application_name("palisade-scorer"));
        Ok(Self { pool })
    }

    /// A store over an existing pool (tests).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Creates the daily partitions for the UTC days of `from_ms..=to_ms`; returns how many
    /// were new.
    pub async fn ensure_partitions(&self, from_ms: i64, to_ms: i64) -> Result<i32, StoreError> {
        let n: i32 = sqlx::query_scalar(
            "SELECT palisade_ensure_event_partitions(\
             (to_timestamp($1::float8 / 1000) AT TIME ZONE 'UTC')::date, \
             (to_timestamp($2::float8 / 1000) AT TIME ZONE 'UTC')::date)",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Drops the partitions wholly older than `retention_days` before `now_ms`.
    pub async fn drop_expired(&self, now_ms: i64, retention_days: u32) -> Result<i32, StoreError> {
        let keep_from = now_ms - i64::from(retention_days) * MS_PER_DAY;
        let n: i32 = sqlx::query_scalar(
            "SELECT palisade_drop_event_partitions(\
             (to_timestamp($1::float8 / 1000) AT TIME ZONE 'UTC')::date)",
        )
        .bind(keep_from)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Inserts `events` in one statement, skipping those already stored (a replay); returns
    /// how many rows were new. The partitions for their days must exist.
    pub async fn insert(&self, events: &[Event]) -> Result<u64, StoreError> {
        self.insert_owned(events.to_vec()).await
    }

    /// [`Store::insert`] taking the batch, so its strings move into the columns uncopied.
    pub async fn insert_owned(&self, events: Vec<Event>) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let cols = Columns::of(events);
        let result = sqlx::query(INSERT)
            .bind(cols.event_id)
            .bind(cols.time_ms)
            .bind(cols.request_id)
            .bind(cols.key_id)
            .bind(cols.tenant)
            .bind(cols.tier)
            .bind(cols.client_ip)
            .bind(cols.method)
            .bind(cols.path)
            .bind(cols.route)
            .bind(cols.user_agent)
            .bind(cols.decision)
            .bind(cols.reason)
            .bind(cols.status)
            .bind(cols.anomaly_score)
            .bind(cols.model_version)
            .bind(cols.gateway_latency_us)
            .bind(cols.upstream_latency_us)
            .bind(cols.backend_latency_us)
            .bind(cols.request_bytes)
            .bind(cols.response_bytes)
            .bind(cols.received_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// The newest `limit` events, oldest first.
    pub async fn tail(&self, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(TAIL).bind(limit).fetch_all(&self.pool).await?;
        let mut out: Vec<Event> = rows.iter().map(row_to_event).collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Rows in the table (tests and benchmarks).
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Checks the connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }
}

// Empty text and zero numbers mean "absent": NULL in the table.
const INSERT: &str = "\
INSERT INTO events (event_id, time, request_id, key_id, tenant, tier, client_ip, method, path, \
    route, user_agent, decision, reason, status, anomaly_score, model_version, \
    gateway_latency_us, upstream_latency_us, backend_latency_us, request_bytes, response_bytes, \
    received_at) \
SELECT e, to_timestamp(t::float8 / 1000), rid, NULLIF(k, ''), NULLIF(tn, ''), NULLIF(ti, ''), \
    NULLIF(ip, '')::inet, m, p, r, NULLIF(ua, ''), d, NULLIF(re, ''), s, NULLIF(sc, 0), \
    NULLIF(mv, ''), gl, NULLIF(ul, 0), NULLIF(bl, 0), rb, sb, to_timestamp(rt::float8 / 1000) \
FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
    $14::int2[], $15::float8[], $16::text[], $17::int8[], $18::int8[], $19::int8[], \
    $20::int8[], $21::int8[], $22::int8[]) \
    AS u(e, t, rid, k, tn, ti, ip, m, p, r, ua, d, re, s, sc, mv, gl, ul, bl, rb, sb, rt) \
ON CONFLICT (event_id, time) DO NOTHING";

const TAIL: &str = "\
SELECT event_id, (extract(epoch FROM time) * 1000)::int8 AS time_ms, \
    (extract(epoch FROM received_at) * 1000)::int8 AS received_ms, request_id, \
    coalesce(key_id, '') AS key_id, coalesce(tenant, '') AS tenant, coalesce(tier, '') AS tier, \
    coalesce(host(client_ip), '') AS client_ip, method, path, route, \
    coalesce(user_agent, '') AS user_agent, decision, coalesce(reason, '') AS reason, status, \
    coalesce(anomaly_score, 0) AS anomaly_score, coalesce(model_version, '') AS model_version, \
    gateway_latency_us, coalesce(upstream_latency_us, 0) AS upstream_latency_us, \
    coalesce(backend_latency_us, 0) AS backend_latency_us, request_bytes, response_bytes \
FROM events ORDER BY time DESC, event_id DESC LIMIT $1";

/// Reads one row of [`TAIL`] (or any query with the same column names) into an event.
pub fn row_to_event(row: &sqlx::postgres::PgRow) -> Result<Event, sqlx::Error> {
    let decision: String = row.try_get("decision")?;
    let decision = serde_json::from_value(serde_json::Value::String(decision))
        .unwrap_or(super::event::Decision::Unspecified);
    let u =
        |name: &str| -> Result<u64, sqlx::Error> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
    Ok(Event {
        event_id: row.try_get("event_id")?,
        time_ms: row.try_get("time_ms")?,
        received_ms: row.try_get("received_ms")?,
        request_id: row.try_get("request_id")?,
        key_id: row.try_get("key_id")?,
        tenant: row.try_get("tenant")?,
        tier: row.try_get("tier")?,
        client_ip: row.try_get("client_ip")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        route: row.try_get("route")?,
        user_agent: row.try_get("user_agent")?,
        decision,
        reason: row.try_get("reason")?,
        status: row.try_get::<i16, _>("status")?.max(0) as u16,
        anomaly_score: row.try_get("anomaly_score")?,
        model_version: row.try_get("model_version")?,
        gateway_latency_us: u("gateway_latency_us")?,
        upstream_latency_us: u("upstream_latency_us")?,
        backend_latency_us: u("backend_latency_us")?,
        request_bytes: u("request_bytes")?,
        response_bytes: u("response_bytes")?,
    })
}

/// The batch as one array per column, for `UNNEST`.
struct Columns {
    event_id: Vec<Uuid>,
    time_ms: Vec<i64>,
    request_id: Vec<String>,
    key_id: Vec<String>,
    tenant: Vec<String>,
    tier: Vec<String>,
    client_ip: Vec<String>,
    method: Vec<String>,
    path: Vec<String>,
    route: Vec<String>,
    user_agent: Vec<String>,
    decision: Vec<&'static str>,
    reason: Vec<String>,
    status: Vec<i16>,
    anomaly_score: Vec<f64>,
    model_version: Vec<String>,
    gateway_latency_us: Vec<i64>,
    upstream_latency_us: Vec<i64>,
    backend_latency_us: Vec<i64>,
    request_bytes: Vec<i64>,
    response_bytes: Vec<i64>,
    received_ms: Vec<i64>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            event_id: Vec::with_capacity(n),
            time_ms: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            key_id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            tier: Vec::with_capacity(n),
            client_ip: Vec::with_capacity(n),
            method: Vec::with_capacity(n),
            path: Vec::with_capacity(n),
            route: Vec::with_capacity(n),
            user_agent: Vec::with_capacity(n),
            decision: Vec::with_capacity(n),
            reason: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            anomaly_score: Vec::with_capacity(n),
            model_version: Vec::with_capacity(n),
            gateway_latency_us: Vec::with_capacity(n),
            upstream_latency_us: Vec::with_capacity(n),
            backend_latency_us: Vec::with_capacity(n),
            request_bytes: Vec::with_capacity(n),
            response_bytes: Vec::with_capacity(n),
            received_ms: Vec::with_capacity(n),
        }
    }

    fn of(events: Vec<Event>) -> Self {
        let mut c = Self::with_capacity(events.len());
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for e in events {
            c.event_id.push(e.event_id);
            c.time_ms.push(e.time_ms);
            c.request_id.push(e.request_id);
            c.key_id.push(e.key_id);
            c.tenant.push(e.tenant);
            c.tier.push(e.tier);
            c.client_ip.push(e.client_ip);
            c.method.push(e.method);
            c.path.push(e.path);
            c.route.push(e.route);
            c.user_agent.push(e.user_agent);
            c.decision.push(e.decision.as_str());
            c.reason.push(e.reason);
            c.status.push(i16::try_from(e.status).unwrap_or(i16::MAX));
            c.anomaly_score.push(e.anomaly_score);
            c.model_version.push(e.model_version);
            c.gateway_latency_us.push(i(e.gateway_latency_us));
            c.upstream_latency_us.push(i(e.upstream_latency_us));
            c.backend_latency_us.push(i(e.backend_latency_us));
            c.request_bytes.push(i(e.request_bytes));
            c.response_bytes.push(i(e.response_bytes));
            c.received_ms.push(e.received_ms);
        }
        c
    }
}
