//! The rate limiter's Redis figures for `palisade-bench`: commands per Check from
//! `INFO commandstats`, and the exact sliding log against the approximate sliding counter
//! (throughput, Redis commands per second, bytes per key, admission error on the same
//! arrivals). Point it at a private Redis: its statistics are reset.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use palisade_scorer::{
    config::{Algorithm, RedisConfig},
    limiter::{
        Policy, WindowSpec,
        redis::{RedisStore, SCRIPT_COMMANDS},
    },
};
use redis::aio::MultiplexedConnection;

/// Reads a Redis' command statistics.
#[derive(Debug, Clone)]
pub struct Stats {
    conn: MultiplexedConnection,
}

impl Stats {
    /// Connects and resets the statistics (`CONFIG RESETSTAT`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("redis url")?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let s = Self { conn };
        s.reset().await?;
        Ok(s)
    }

    /// `CONFIG RESETSTAT`.
    pub async fn reset(&self) -> anyhow::Result<()> {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Calls per command since the last reset.
    pub async fn calls(&self) -> anyhow::Result<HashMap<String, u64>> {
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("cmdstat_"))
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect())
    }

    /// Commands clients sent (round trips), i.e. every command except those the script runs
    /// inside Redis and this reader's own `INFO`/`CONFIG`.
    pub async fn client_commands(&self) -> anyhow::Result<u64> {
        Ok(self
            .calls()
            .await?
            .iter()
            .filter(|(name, _)| {
                !SCRIPT_COMMANDS.contains(&name.as_str())
                    && !name.starts_with("info")
                    && !name.starts_with("config")
            })
            .map(|(_, n)| n)
            .sum())
    }

    /// Every command Redis executed (script-internal ones included).
    pub async fn all_commands(&self) -> anyhow::Result<u64> {
        Ok(self
            .calls()
            .await?
            .iter()
            .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
            .map(|(_, n)| n)
            .sum())
    }

    async fn memory_usage(&self, key: &str) -> anyhow::Result<u64> {
        let n: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut self.conn.clone())
            .await?;
        n.context("key not found")
    }
}

fn policy(algorithm: Algorithm, limit: u32, window_ms: u64) -> Arc<Policy> {
    Arc::new(Policy {
        name: "bench".into(),
        windows: vec![WindowSpec {
            limit,
            window_ms,
            algorithm,
        }],
        shadow: false,
    })
}

fn store(url: &str) -> anyhow::Result<Arc<RedisStore>> {
    Ok(Arc::new(RedisStore::new(&RedisConfig {
        url: url.to_owned(),
        timeout_ms: 1_000,
        key_prefix: format!("palisade-bench:{}:", std::process::id()),
        ..RedisConfig::default()
    })?))
}

fn name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::SlidingLog => "sliding log (exact)",
        Algorithm::SlidingCounter => "sliding counter (approx.)",
    }
}

/// xorshift64*: deterministic arrivals without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Prints every figure; returns them as JSON for `target/bench/`.
pub async fn run(url: &str, seconds: u64) -> anyhow::Result<serde_json::Value> {
    let stats = Stats::connect(url).await?;
    let store = store(url)?;
    store.warm_up().await?;
    let mut out = serde_json::Map::new();

    // 1. Throughput of the script alone (no gRPC), 32 concurrent callers over 1,000 subjects,
    //    100 per second each, wall-clock time: every call admits and writes.
    for algorithm in [Algorithm::SlidingLog, Algorithm::SlidingCounter] {
        let p = policy(algorithm, 100, 1_000);
        stats.reset().await?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..32u64 {
            let (store, p) = (Arc::clone(&store), Arc::clone(&p));
            tasks.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let now = palisade_scorer::service::now_ms();
                    let subject = format!("tp-{}", (c * 7_919 + n) % 1_000);
                    if store.check(&subject, &p, now).await.is_err() {
                        return Err(anyhow::anyhow!("script call failed"));
                    }
                    n += 1;
                }
                Ok(n)
            });
        }
        let mut checks = 0;
        while let Some(r) = tasks.join_next().await {
            checks += r??;
        }
        let secs = started.elapsed().as_secs_f64();
        let client = stats.client_commands().await?;
        let all = stats.all_commands().await?;
        println!(
            "{:<26} {:>8.0} checks/s  {:>8.0} Redis commands/s ({:.2} per check, {:.3} round trips per check)",
            name(algorithm),
            checks as f64 / secs,
            all as f64 / secs,
            all as f64 / checks as f64,
            client as f64 / checks as f64,
        );
        out.insert(
            format!("{algorithm:?}_throughput"),
            serde_json::json!({
                "checks_per_s": checks as f64 / secs,
                "redis_commands_per_s": all as f64 / secs,
                "commands_per_check": all as f64 / checks as f64,
                "round_trips_per_check": client as f64 / checks as f64,
            }),
        );
    }

    // 2. Bytes per key: a log filled to its limit, a counter in use.
    let t0 = 1_700_000_000_000u64;
    for (algorithm, limit) in [
        (Algorithm::SlidingLog, 10),
        (Algorithm::SlidingLog, 100),
        (Algorithm::SlidingLog, 1_000),
        (Algorithm::SlidingCounter, 1_000),
        (Algorithm::SlidingCounter, 1_000_000),
    ] {
        let p = policy(algorithm, limit, 3_600_000);
        let subject = format!("mem-{algorithm:?}-{limit}");
        for i in 0..u64::from(limit.min(1_000)) {
            store.check(&subject, &p, t0 + i).await?;
        }
        let key = &store.keys(&p, &subject)[0];
        let bytes = stats.memory_usage(key).await?;
        let per = if algorithm == Algorithm::SlidingLog {
            format!(
                " ({:.1} per admitted request)",
                bytes as f64 / f64::from(limit)
            )
        } else {
            String::new()
        };
        println!(
            "{:<26} limit {limit:>9}: {bytes:>7} bytes per key{per}",
            name(algorithm)
        );
        out.insert(
            format!("{algorithm:?}_{limit}_bytes"),
            serde_json::json!(bytes),
        );
    }

    // 3. Admission error: the same bursty arrivals through both, limit 100 per minute, 30
    //    minutes of traffic whose rate changes every minute between 0.2x and 3x the limit.
    let (limit, w) = (100u32, 60_000u64);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut arrivals = Vec::new();
    let mut now = t0;
    for _minute in 0..30 {
        let per_minute = (0.2 + 2.8 * rng.unit()) * f64::from(limit);
        let mean_gap = w as f64 / per_minute;
        let end = now + w;
        while now < end {
            now += (-mean_gap * (1.0 - rng.unit()).ln()).ceil().max(1.0) as u64;
            arrivals.push(now);
        }
    }
    let mut admitted: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut disagree = 0u64;
    let log = policy(Algorithm::SlidingLog, limit, w);
    let counter = policy(Algorithm::SlidingCounter, limit, w);
    for &t in &arrivals {
        let a = store.check("err", &log, t).await?.admitted;
        let b = store.check("err", &counter, t).await?.admitted;
        if a {
            admitted.entry("log").or_default().push(t);
        }
        if b {
            admitted.entry("counter").or_default().push(t);
        }
        disagree += u64::from(a != b);
    }
    let max_in_window = |ts: &[u64]| {
        ts.iter()
            .enumerate()
            .map(|(i, &t)| ts[i..].iter().take_while(|&&u| u < t + w).count())
            .max()
            .unwrap_or(0)
    };
    let (l, c) = (&admitted["log"], &admitted["counter"]);
    println!(
        "admission error over {} arrivals (limit {limit}/min, 30 min, 0.2x-3x load): log admitted {}, counter {} ({:+.2}%), decisions differ on {:.2}% of arrivals; most in any 60 s: log {}, counter {}",
        arrivals.len(),
        l.len(),
        c.len(),
        (c.len() as f64 - l.len() as f64) * 100.0 / l.len() as f64,
        disagree as f64 * 100.0 / arrivals.len() as f64,
        max_in_window(l),
        max_in_window(c),
    );
    out.insert(
        "admission_error".into(),
        serde_json::json!({
            "arrivals": arrivals.len(), "limit": limit, "window_ms": w,
            "log_admitted": l.len(), "counter_admitted": c.len(),
            "decisions_differ": disagree,
            "log_max_in_window": max_in_window(l), "counter_max_in_window": max_in_window(c),
        }),
    );
    Ok(serde_json::Value::Object(out))
}
