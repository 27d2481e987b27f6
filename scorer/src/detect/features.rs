//! Per-key behavioural features: plain events in, a fixed-order feature vector out.
//!
//! Every horizon (1 min, 1 h, 24 h) is a set of exponentially decayed sums with the horizon as
//! time constant, so an update is O(1) and memory per key is bounded whatever the traffic:
//! request count, blocked and throttled counts, inter-arrival moments, and a capped map of
//! endpoint counts. The key's baseline is the same kind of summary with a 7-day time constant;
//! the profile ([`super::profile`]) adds object-ID, parameter and client diversity.

use super::{
    model::Schema,
    profile::{Profile, Route},
    sketch::{CappedMap, Decayed, plausible_ms},
};

/// The horizons, with the suffix their features carry.
pub const HORIZONS: [(&str, i64); 3] = [("1m", 60_000), ("1h", 3_600_000), ("24h", 86_400_000)];
const BASELINE_TAU_MS: f64 = 7.0 * 86_400_000.0;
/// Endpoints tracked per horizon and in the baseline.
const MAX_ENDPOINTS: usize = 64;

/// Feature names in vector order; [`schema`] hashes them.
pub const FEATURE_NAMES: [&str; 36] = [
    "requests_1m",
    "unique_endpoints_1m",
    "interarrival_var_1m",
    "rps_1m",
    "endpoint_entropy_1m",
    "blocked_ratio_1m",
    "throttled_ratio_1m",
    "requests_1h",
    "unique_endpoints_1h",
    "interarrival_var_1h",
    "rps_1h",
    "endpoint_entropy_1h",
    "blocked_ratio_1h",
    "throttled_ratio_1h",
    "requests_24h",
    "unique_endpoints_24h",
    "interarrival_var_24h",
    "rps_24h",
    "endpoint_entropy_24h",
    "blocked_ratio_24h",
    "throttled_ratio_24h",
    "endpoint_divergence",
    "time_of_day_divergence",
    "timing_regularity",
    "distinct_ips",
    "distinct_user_agents",
    "param_distinct_max",
    "ids_distinct_max",
    "id_spread",
    "id_sequential_ratio",
    "id_coverage",
    "id_novelty",
    "id_enumeration",
    "error_ratio_1h",
    "error_ratio_24h",
    "denied_ratio_24h",
];

/// Error-free pseudo-responses added to the denominator of the response features.
const RESPONSE_PRIOR: f64 = 5.0;
/// Pseudo-observations, distributed as the baseline, added to a recent distribution before
/// it is compared with the baseline.
const DIVERGENCE_PRIOR: f64 = 10.0;
/// The number of features.
pub const N: usize = FEATURE_NAMES.len();

/// Time constants of the response features (`error_ratio_1h`, `error_ratio_24h`).
const RESPONSE_TAUS: [f64; 2] = [3_600_000.0, 86_400_000.0];
/// Time constant of `denied_ratio_24h`.
const DENIED_TAU: f64 = 86_400_000.0;

/// The schema of [`KeyFeatures::vector`].
pub fn schema() -> Schema {
    Schema::new(FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect())
}

/// What became of a request, as far as features care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Let through.
    Allowed,
    /// Refused.
    Blocked,
    /// Over a rate limit.
    Throttled,
}

/// One request of a key, as the features see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Wall clock of the request, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Normalised path, without the query string.
    pub path: &'a str,
    /// Query parameters.
    pub query: &'a [(&'a str, &'a str)],
    /// Client address.
    pub client_ip: &'a str,
    /// User-Agent header.
    pub user_agent: &'a str,
    /// The verdict it got.
    pub outcome: Outcome,
}

/// Decayed counts and an endpoint histogram with one time constant.
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
struct Window {
    tau_ms: f64,
    requests: Decayed,
    blocked: Decayed,
    throttled: Decayed,
    /// Decayed sums of 1, x and x^2 over inter-arrival times in seconds.
    gaps: [Decayed; 3],
    endpoints: CappedMap<(Decayed, i64)>,
}

impl Window {
    fn new(tau_ms: f64) -> Self {
        Self {
            tau_ms,
            requests: Decayed::default(),
            blocked: Decayed::default(),
            throttled: Decayed::default(),
            gaps: [Decayed::default(); 3],
            endpoints: CappedMap::new(MAX_ENDPOINTS),
        }
    }

    fn observe(&mut self, now: i64, endpoint: &str, outcome: Outcome, gap_s: Option<f64>) {
        let tau = self.tau_ms;
        self.requests.add(now, tau, 1.0);
        match outcome {
            Outcome::Allowed => {}
            Outcome::Blocked => self.blocked.add(now, tau, 1.0),
            Outcome::Throttled => self.throttled.add(now, tau, 1.0),
        }
        if let Some(g) = gap_s {
            for (k, d) in self.gaps.iter_mut().enumerate() {
                d.add(now, tau, g.powi(k as i32));
            }
        }
        let e = self
            .endpoints
            .entry(endpoint, Default::default, |(c, _)| c.get(now, tau));
        e.0.add(now, tau, 1.0);
        e.1 = now;
    }

    /// Restored state: this horizon's time constant, its counters and caps intact.
    fn is_plausible(&self, tau_ms: f64) -> bool {
        self.tau_ms == tau_ms
            && [&self.requests, &self.blocked, &self.throttled]
                .into_iter()
                .chain(&self.gaps)
                .all(Decayed::is_plausible)
            && self.endpoints.is_plausible(MAX_ENDPOINTS, |(c, seen)| {
                c.is_plausible() && plausible_ms(*seen)
            })
    }

    /// Endpoint shares at `now`, by endpoint.
    fn distribution(&self, now: i64) -> Vec<(&str, f64)> {
        let counts: Vec<(&str, f64)> = self
            .endpoints
            .iter()
            .map(|(k, (c, _))| (k.as_str(), c.get(now, self.tau_ms)))
            .collect();
        let total: f64 = counts.iter().map(|c| c.1).sum();
        if total <= 0.0 {
            return Vec::new();
        }
        counts.into_iter().map(|(k, c)| (k, c / total)).collect()
    }

    fn ratio(&self, part: &Decayed, now: i64) -> f64 {
        let all = self.requests.get(now, self.tau_ms);
        if all > 0.0 {
            (part.get(now, self.tau_ms) / all).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    fn gap_moments(&self, now: i64) -> (f64, f64) {
        let [n, s1, s2] = self.gaps.map(|d| d.get(now, self.tau_ms));
        if n < 1e-9 {
            return (0.0, 0.0);
        }
        let mean = s1 / n;
        (mean, (s2 / n - mean * mean).max(0.0))
    }

    /// The seven features of this horizon, in [`FEATURE_NAMES`] order, for a key first seen
    /// `age_ms` ago. A decayed sum over a key younger than the time constant has not filled
    /// yet; the count is scaled by `1 / (1 - e^(-age / tau))` (as Adam corrects its moments) so
    /// a new key reads at the rate it actually runs, not as an unusually quiet one; the age is
    /// taken as at least a 24th of `tau`.
    fn features(&self, now: i64, horizon_ms: i64, age_ms: i64) -> [f64; 7] {
        // At most 24 times the observed rate: a minute-old key is not read as a day of traffic.
        let age = (age_ms as f64).max(self.tau_ms / 24.0);
        let fill = 1.0 - (-age / self.tau_ms).exp();
        let requests = self.requests.get(now, self.tau_ms) / fill;
        let unique = self
            .endpoints
            .iter()
            .filter(|(_, (_, seen))| now - seen <= horizon_ms)
            .count() as f64;
        let entropy = -self
            .distribution(now)
            .iter()
            .filter(|(_, p)| *p > 0.0)
            .map(|(_, p)| p * p.log2())
            .sum::<f64>();
        [
            requests,
            unique,
            self.gap_moments(now).1,
            requests / (self.tau_ms / 1000.0),
            entropy.max(0.0),
            self.ratio(&self.blocked, now),
            self.ratio(&self.throttled, now),
        ]
    }
}

/// Everything the features of one key need; bounded in size. Encodes with bincode (a key's
/// snapshot, [`super::snapshot`]); a decoded one is used only if [`is_plausible`](Self::is_plausible).
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
pub struct KeyFeatures {
    windows: Vec<(i64, Window)>,
    baseline: Window,
    hours_recent: [Decayed; 24],
    hours_baseline: [Decayed; 24],
    last_ms: Option<i64>,
    first_ms: Option<i64>,
    profile: Profile,
    /// Decayed counts of forwarded responses and of client errors among them, per
    /// [`RESPONSE_TAUS`].
    responses: [(Decayed, Decayed); 2],
    /// Decayed count (24 h) of denials (403) among them.
    denied: Decayed,
}

impl Default for KeyFeatures {
    fn default() -> Self {
        Self {
            windows: HORIZONS
                .iter()
                .map(|(_, h)| (*h, Window::new(*h as f64)))
                .collect(),
            baseline: Window::new(BASELINE_TAU_MS),
            hours_recent: [Decayed::default(); 24],
            hours_baseline: [Decayed::default(); 24],
            last_ms: None,
            first_ms: None,
            profile: Profile::default(),
            responses: [(Decayed::default(), Decayed::default()); 2],
            denied: Decayed::default(),
        }
    }
}

impl KeyFeatures {
    /// Records one request.
    pub fn observe(&mut self, e: &Event<'_>) {
        let now = e.ts_ms;
        let gap_s = self.last_ms.map(|l| (now - l).max(0) as f64 / 1000.0);
        self.last_ms = Some(self.last_ms.map_or(now, |l| l.max(now)));
        self.first_ms = Some(self.first_ms.map_or(now, |f| f.min(now)));
        let route = Route::parse(e.path);
        for (_, w) in &mut self.windows {
            w.observe(now, &route.template, e.outcome, gap_s);
        }
        self.baseline
            .observe(now, &route.template, e.outcome, gap_s);
        let hour = now.div_euclid(3_600_000).rem_euclid(24) as usize;
        self.hours_recent[hour].add(now, 86_400_000.0, 1.0);
        self.hours_baseline[hour].add(now, BASELINE_TAU_MS, 1.0);
        self.profile
            .observe(now, &route, e.query, e.client_ip, e.user_agent);
    }

    /// Records the status the backend answered a forwarded request of the key with: a 4xx
    /// other than 429 counts as a client error (a denied object, a missing one, a bad
    /// request), the signal of reading objects one has no business with; a 403 also counts
    /// as a denial (the object exists and is not the key's: broken object-level
    /// authorisation probed).
    pub fn observe_response(&mut self, ts_ms: i64, status: u16) {
        let error = (400..500).contains(&status) && status != 429;
        for ((all, errors), tau) in self.responses.iter_mut().zip(RESPONSE_TAUS) {
            all.add(ts_ms, tau, 1.0);
            if error {
                errors.add(ts_ms, tau, 1.0);
            }
        }
        if status == 403 {
            self.denied.add(ts_ms, DENIED_TAU, 1.0);
        }
    }

    /// True when every part holds what this code writes: the horizons and caps it uses,
    /// finite counters, clock values in range. Checked on a decoded snapshot before use, so a
    /// crafted one cannot make later arithmetic overflow or index out of bounds.
    pub fn is_plausible(&self) -> bool {
        self.windows.len() == HORIZONS.len()
            && self
                .windows
                .iter()
                .zip(HORIZONS)
                .all(|((h, w), (_, want))| *h == want && w.is_plausible(want as f64))
            && self.baseline.is_plausible(BASELINE_TAU_MS)
            && self
                .hours_recent
                .iter()
                .chain(&self.hours_baseline)
                .all(Decayed::is_plausible)
            && self.last_ms.is_none_or(plausible_ms)
            && self.first_ms.is_none_or(plausible_ms)
            && self.profile.is_plausible()
            && self
                .responses
                .iter()
                .all(|(all, errors)| all.is_plausible() && errors.is_plausible())
            && self.denied.is_plausible()
    }

    /// The feature vector at `now_ms`, in [`FEATURE_NAMES`] order.
    pub fn vector(&mut self, now_ms: i64) -> [f64; N] {
        let mut v = [0.0; N];
        for (i, (h, w)) in self.windows.iter().enumerate() {
            let age = now_ms - self.first_ms.unwrap_or(now_ms);
            v[i * 7..i * 7 + 7].copy_from_slice(&w.features(now_ms, *h, age));
        }
        // Recent shares are shrunk towards the baseline by a few pseudo-requests, so a quiet
        // hour's handful of requests is not read as a new habit.
        let (hour_window, baseline) = (&self.windows[1].1, &self.baseline);
        let base = baseline.distribution(now_ms);
        let hourly = shrink(
            &hour_window.distribution(now_ms),
            &base,
            hour_window.requests.get(now_ms, hour_window.tau_ms),
        );
        v[21] = js_divergence(&hourly, &base);
        let base: Vec<(usize, f64)> = share(&self.hours_baseline, now_ms, BASELINE_TAU_MS);
        let day: f64 = self
            .hours_recent
            .iter()
            .map(|d| d.get(now_ms, 86_400_000.0))
            .sum();
        let recent = shrink(&share(&self.hours_recent, now_ms, 86_400_000.0), &base, day);
        v[22] = js_divergence(&recent, &base);
        // Regular timing (a bot on a timer) has a low coefficient of variation of its gaps.
        let (mean, var) = self.windows[2].1.gap_moments(now_ms);
        v[23] = if mean > 0.0 {
            (1.0 - var.sqrt() / mean).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let p = self.profile.features(now_ms);
        v[24..33].copy_from_slice(&[
            p.distinct_ips,
            p.distinct_user_agents,
            p.param_distinct_max,
            p.ids_distinct_max,
            p.id_spread,
            p.id_sequential_ratio,
            p.id_coverage,
            p.id_novelty,
            p.id_enumeration,
        ]);
        let mut day = RESPONSE_PRIOR;
        for (i, ((all, errors), tau)) in self.responses.iter().zip(RESPONSE_TAUS).enumerate() {
            let all = all.get(now_ms, tau) + RESPONSE_PRIOR;
            // Shrunk towards 0 by a few error-free pseudo-responses: one 404 out of two
            // requests is not a key reading what it has no business with.
            v[33 + i] = (errors.get(now_ms, tau) / all).clamp(0.0, 1.0);
            day = all;
        }
        // Denials over the day only: most keys never see one, and over an hour the odd 403
        // of a quiet key would read as a habit.
        v[35] = (self.denied.get(now_ms, DENIED_TAU) / day).clamp(0.0, 1.0);
        v
    }
}

fn share(hours: &[Decayed; 24], now: i64, tau: f64) -> Vec<(usize, f64)> {
    let counts: Vec<f64> = hours.iter().map(|d| d.get(now, tau)).collect();
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c / total))
        .collect()
}

/// `p`, estimated from `n` observations, shrunk towards `q` by [`DIVERGENCE_PRIOR`]
/// pseudo-observations: `(n p + k q) / (n + k)`. Empty when `p` is.
fn shrink<K: PartialEq + Copy>(p: &[(K, f64)], q: &[(K, f64)], n: f64) -> Vec<(K, f64)> {
    if p.is_empty() || q.is_empty() {
        return p.to_vec();
    }
    let w = n.max(0.0) / (n.max(0.0) + DIVERGENCE_PRIOR);
    let mut out: Vec<(K, f64)> = p.iter().map(|(k, x)| (*k, w * x)).collect();
    for (k, x) in q {
        match out.iter_mut().find(|e| e.0 == *k) {
            Some(e) => e.1 += (1.0 - w) * x,
            None => out.push((*k, (1.0 - w) * x)),
        }
    }
    out
}

/// Jensen-Shannon divergence (base 2, in `[0, 1]`) of two sparse distributions; 0 when either
/// is empty (no baseline yet is not evidence).
pub fn js_divergence<K: PartialEq + Copy>(p: &[(K, f64)], q: &[(K, f64)]) -> f64 {
    if p.is_empty() || q.is_empty() {
        return 0.0;
    }
    let lookup = |d: &[(K, f64)], k: K| d.iter().find(|(x, _)| *x == k).map_or(0.0, |e| e.1);
    let mut keys: Vec<K> = p.iter().map(|e| e.0).collect();
    keys.extend(
        q.iter()
            .map(|e| e.0)
            .filter(|k| !p.iter().any(|e| e.0 == *k)),
    );
    let mut js = 0.0;
    for k in keys {
        let (a, b) = (lookup(p, k), lookup(q, k));
        let m = (a + b) / 2.0;
        if a > 0.0 {
            js += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            js += 0.5 * b * (b / m).log2();
        }
    }
    js.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts_ms: i64, path: &str, outcome: Outcome) -> Event<'_> {
        Event {
            ts_ms,
            path,
            query: &[],
            client_ip: "10.0.0.1",
            user_agent: "app/1",
            outcome,
        }
    }

    fn idx(name: &str) -> usize {
        FEATURE_NAMES.iter().position(|n| *n == name).unwrap()
    }

    #[test]
    fn counts_rates_and_ratios_over_the_minute() {
        let mut k = KeyFeatures::default();
        // 60 requests, one per second, every tenth blocked, every fifth throttled.
        for i in 0..60 {
            let outcome = match i % 10 {
                0 => Outcome::Blocked,
                5 => Outcome::Throttled,
                _ => Outcome::Allowed,
            };
            k.observe(&event(i * 1000, "/api/a", outcome));
        }
        let v = k.vector(59_000);
        // Decayed with tau = 60 s, 60 one-per-second requests sum to about 60 (1 - 1/e) = 38;
        // the key is 59 s old, so the sum is read as that of a full minute: about 60.
        assert!((v[idx("requests_1m")] - 60.0).abs() < 2.0, "{}", v[0]);
        assert!((v[idx("rps_1m")] - v[idx("requests_1m")] / 60.0).abs() < 1e-9);
        assert!((v[idx("blocked_ratio_1m")] - 0.1).abs() < 0.03);
        assert!((v[idx("throttled_ratio_1m")] - 0.1).abs() < 0.03);
        // Young against a day: read as if the hour had been a 24th of it, not extrapolated
        // from the first minute.
        let fill = 1.0 - (-1.0f64 / 24.0).exp();
        assert!(
            (v[idx("requests_24h")] - 60.0 / fill).abs() < 1.0,
            "{}",
            v[14]
        );
        assert_eq!(v[idx("unique_endpoints_1m")], 1.0);
        assert_eq!(v[idx("endpoint_entropy_1m")], 0.0);
        // Perfectly regular one-second gaps.
        assert!(v[idx("interarrival_var_1h")] < 1e-9);
        assert!(v[idx("timing_regularity")] > 0.99);
    }

    #[test]
    fn entropy_and_unique_endpoints() {
        let mut k = KeyFeatures::default();
        for i in 0..400 {
            k.observe(&event(
                i,
                ["/a", "/b", "/c", "/d"][i as usize % 4],
                Outcome::Allowed,
            ));
        }
        let v = k.vector(400);
        assert_eq!(v[idx("unique_endpoints_1h")], 4.0);
        assert!((v[idx("endpoint_entropy_1h")] - 2.0).abs() < 0.01);
        // A minute later the 1-minute horizon no longer counts them as recent.
        let v = k.vector(200_000);
        assert_eq!(v[idx("unique_endpoints_1m")], 0.0);
        assert_eq!(v[idx("unique_endpoints_1h")], 4.0);
    }

    #[test]
    fn irregular_timing_has_variance_and_low_regularity() {
        let mut k = KeyFeatures::default();
        let mut t = 0;
        for i in 0..100 {
            t += if i % 2 == 0 { 100 } else { 9_900 };
            k.observe(&event(t, "/a", Outcome::Allowed));
        }
        let v = k.vector(t);
        assert!(v[idx("interarrival_var_24h")] > 20.0);
        assert!(v[idx("timing_regularity")] < 0.1);
    }

    #[test]
    fn endpoint_shift_against_the_baseline_diverges() {
        let mut k = KeyFeatures::default();
        let hour = 3_600_000;
        // A week of /a and /b every minute, then an hour of /admin only.
        for i in 0..(7 * 24 * 60) {
            k.observe(&event(
                i * 60_000,
                ["/a", "/b"][i as usize % 2],
                Outcome::Allowed,
            ));
        }
        let before = k.vector(7 * 24 * hour)[idx("endpoint_divergence")];
        let start = 7 * 24 * hour;
        for i in 0..(3 * 60) {
            k.observe(&event(
                start + i * 60_000,
                "/admin/export",
                Outcome::Allowed,
            ));
        }
        let after = k.vector(start + 3 * hour)[idx("endpoint_divergence")];
        assert!(before < 0.01, "{before}");
        assert!(after > 0.5, "{after}");
    }

    #[test]
    fn response_ratios_count_client_errors_and_denials_shrunk_for_few_answers() {
        let mut k = KeyFeatures::default();
        // 100 answers a minute apart: every fifth a 4xx, alternately 403 and 404; a 429 and
        // a 500 are neither.
        for i in 0..100 {
            let status = match i % 10 {
                0 => 403,
                5 => 404,
                3 => 429,
                7 => 500,
                _ => 200,
            };
            k.observe_response(i * 60_000, status);
        }
        let v = k.vector(100 * 60_000);
        let (e1h, e24h, d24h) = (
            v[idx("error_ratio_1h")],
            v[idx("error_ratio_24h")],
            v[idx("denied_ratio_24h")],
        );
        // 20 errors in 105 (5 pseudo-answers) over the day, decay aside.
        assert!((e24h - 20.0 / 105.0).abs() < 0.02, "{e24h}");
        assert!((d24h - 10.0 / 105.0).abs() < 0.01, "{d24h}");
        assert!(e1h > 0.1 && e1h < e24h + 0.05, "{e1h}");
        // One 404 in two answers is not a 50 % error ratio.
        let mut quiet = KeyFeatures::default();
        quiet.observe_response(0, 200);
        quiet.observe_response(1_000, 404);
        let v = quiet.vector(2_000);
        assert!((v[idx("error_ratio_1h")] - 1.0 / 7.0).abs() < 0.01);
        assert_eq!(v[idx("denied_ratio_24h")], 0.0);
    }

    #[test]
    fn time_of_day_shift_diverges() {
        let mut k = KeyFeatures::default();
        let hour = 3_600_000;
        // Two weeks of office hours (09-17 UTC), then a day active only at 03.
        for day in 0..14 {
            for h in 9..17 {
                k.observe(&event(day * 24 * hour + h * hour, "/a", Outcome::Allowed));
            }
        }
        let calm = k.vector(14 * 24 * hour)[idx("time_of_day_divergence")];
        for m in 0..60 {
            k.observe(&event(
                14 * 24 * hour + 3 * hour + m * 60_000,
                "/a",
                Outcome::Allowed,
            ));
        }
        let night = k.vector(14 * 24 * hour + 4 * hour)[idx("time_of_day_divergence")];
        // The baseline absorbs part of the new hour too, and the day is shrunk towards the
        // baseline by a few pseudo-requests, so the rise is moderate but clear.
        assert!(calm < 0.01 && night > 0.05, "{calm} -> {night}");
    }

    #[test]
    fn endpoints_are_bounded() {
        let mut k = KeyFeatures::default();
        for i in 0..5_000 {
            let p = format!("/e{i}");
            k.observe(&event(i, &p, Outcome::Allowed));
        }
        assert!(
            k.windows
                .iter()
                .all(|(_, w)| w.endpoints.len() <= MAX_ENDPOINTS)
        );
        assert!(k.vector(5_000)[idx("unique_endpoints_1m")] <= MAX_ENDPOINTS as f64);
    }

    #[test]
    fn js_divergence_bounds() {
        let p = [("a", 0.5), ("b", 0.5)];
        assert_eq!(js_divergence(&p, &p), 0.0);
        assert!((js_divergence(&[("a", 1.0)], &[("b", 1.0)]) - 1.0).abs() < 1e-12);
        assert_eq!(js_divergence::<&str>(&[], &p), 0.0);
        assert_eq!(schema().len(), FEATURE_NAMES.len());
    }
}
