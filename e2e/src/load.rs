//! A fixed-rate (open-loop) HTTP load generator with latency correction.
//!
//! Request `i` is *scheduled* at `start + i / rate`; its latency is measured from that
//! scheduled instant, not from when it was actually sent, so a stalled server is charged for
//! the requests it delayed (the coordinated-omission correction of wrk2 and
//! `oha --latency-correction`). Bounded in count (`rate * duration`) and in time (`duration`
//! plus one request timeout), and meant for loopback targets only.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Target URL (loopback).
    pub url: String,
    /// Requests per second.
    pub rate: u32,
    /// How long to send.
    pub duration: Duration,
    /// Headers on every request.
    pub headers: Vec<(String, String)>,
    /// Most requests in flight at once; further ones wait (and are charged for waiting).
    pub max_in_flight: usize,
    /// Per-request timeout; a timed-out request counts as an error.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Target URL.
    pub url: String,
    /// Requested rate.
    pub rate: u32,
    /// Requests sent.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Other HTTP statuses.
    pub non_2xx: u64,
    /// Transport errors and timeouts.
    pub errors: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Achieved completions per second.
    pub achieved_rps: f64,
    /// Corrected latency percentiles, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// The `q`-quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs one fixed-rate load on threads of its own, so the generator neither shares a
/// scheduler with in-process servers nor inherits tokio's 1 ms timer granularity: a pacer
/// thread wakes at each scheduled instant (`thread::sleep`, tens of microseconds precise) and
/// hands the request to a dedicated single-threaded runtime that sends it.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    let spec = spec.clone();
    run_with(spec.clone(), move || {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(spec.max_in_flight)
            .tcp_nodelay(true)
            .timeout(spec.timeout)
            .build()?;
        Ok(move || {
            let mut req = client.get(&spec.url);
            for (k, v) in &spec.headers {
                req = req.header(k, v);
            }
            async move {
                match req.send().await {
                    Ok(resp) => {
                        let s = resp.status();
                        // Read the body so the connection can be reused.
                        let _ = resp.bytes().await;
                        Some(s.as_u16())
                    }
                    Err(_) => None,
                }
            }
        })
    })
    .await
}

/// Like [`run`], with any request: `setup` runs on the generator's runtime and returns a
/// function making one request, whose future yields an HTTP-like status (`None`: error).
/// `spec.url` and `spec.headers` are only reported.
pub async fn run_with<S, M, F>(spec: LoadSpec, setup: S) -> anyhow::Result<LoadReport>
where
    S: FnOnce() -> anyhow::Result<M> + Send + 'static,
    M: FnMut() -> F,
    F: Future<Output = Option<u16>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("load-generator".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(async move { generate(&spec, setup()?).await }));
            let _ = tx.send(result);
        })?;
    rx.await?
}

async fn generate<M, F>(spec: &LoadSpec, mut make: M) -> anyhow::Result<LoadReport>
where
    M: FnMut() -> F,
    F: Future<Output = Option<u16>> + Send + 'static,
{
    anyhow::ensure!(spec.rate > 0, "rate must be > 0");
    let total = (u64::from(spec.rate) as f64 * spec.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(spec.rate));
    let start = Instant::now() + Duration::from_millis(20);
    let (ticks, mut due) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("load-pacer".into())
        .spawn(move || {
            for i in 0..total {
                let scheduled = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                if ticks.send(scheduled).is_err() {
                    break;
                }
            }
        })?;
    let permits = Arc::new(Semaphore::new(spec.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    while let Some(scheduled) = due.recv().await {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let request = make();
        let timeout = spec.timeout;
        tasks.spawn(async move {
            let status = tokio::time::timeout(timeout, request).await.ok().flatten();
            drop(permit);
            // Charged from the scheduled instant: a stalled server pays for the requests it
            // delayed (coordinated-omission correction).
            (status, scheduled.elapsed())
        });
    }
    let _ = pacer.join();
    let mut latencies = Vec::with_capacity(total as usize);
    let (mut ok, mut non_2xx, mut errors) = (0, 0, 0);
    let mut statuses = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (status, latency) = joined?;
        if let Some(s) = status {
            *statuses.entry(s).or_insert(0) += 1;
        }
        match status {
            Some(s) if (200..300).contains(&s) => ok += 1,
            Some(_) => non_2xx += 1,
            None => errors += 1,
        }
        latencies.push(latency.as_micros() as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(LoadReport {
        url: spec.url.clone(),
        rate: spec.rate,
        sent: total,
        ok,
        non_2xx,
        errors,
        statuses,
        achieved_rps: total as f64 / elapsed.max(1e-9),
        p50_us: percentile(&latencies, 0.50),
        p90_us: percentile(&latencies, 0.90),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
    })
}

/// The Check request number `i` of a bench load: spread over 1,000 keys of the `bench` tier
/// like real traffic (the benches give that tier limits the load never reaches).
pub fn bench_check_request(i: u64) -> palisade_proto::v1::CheckRequest {
    palisade_proto::v1::CheckRequest {
        request_id: format!("bench-{i}"),
        key_id: format!("bench-key-{}", i % 1_000),
        tier: "bench".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        path: "/api/users/42".into(),
        user_agent: "palisade-bench".into(),
        ..Default::default()
    }
}

/// `Check` calls over `channel` at a fixed `rate` for `seconds` (open loop, latency corrected),
/// request `i` being [`bench_check_request`]`(i)`; a successful call counts as status 200.
pub async fn check_at_fixed_rate(
    channel: tonic::transport::Channel,
    url: String,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<LoadReport> {
    let spec = LoadSpec {
        url,
        rate,
        duration: Duration::from_secs(seconds),
        headers: Vec::new(),
        max_in_flight: 512,
        timeout: Duration::from_secs(5),
    };
    run_with(spec, move || {
        let client = palisade_proto::v1::scorer_client::ScorerClient::new(channel);
        let mut i = 0u64;
        Ok(move || {
            i += 1;
            let mut c = client.clone();
            let req = bench_check_request(i);
            async move { c.check(req).await.ok().map(|_| 200) }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.01), 7);
    }
}
