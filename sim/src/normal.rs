//! Normal populations: keys with their own habits. Interactive keys (sessions in working
//! hours of their time zone, heavy-tailed think times, pagination runs), integrations (batch
//! jobs on a timer) and pollers (one or two endpoints on a short timer). Each key reads a small
//! personal working set of objects (Zipf), not sequential sweeps, sees the occasional 4xx, and
//! some change their habits mid-run the way real integrations do (a new client release: new
//! endpoint mix, new user agent, different volume).

use std::collections::VecDeque;

use crate::{
    catalogue::{ENDPOINTS, Resource, Shape, render},
    dist::{self, SimRng, Weighted},
    request::{Channel, SimRequest},
};

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// Rate-limit windows of the tiers the simulation uses, `(window_ms, limit)`. They must match
/// `sim/scorer.toml` (a test checks it); normal keys stay well inside them.
pub fn tier_limits(tier: &str) -> &'static [(i64, u32)] {
    match tier {
        "free" => &[(60_000, 60), (HOUR_MS, 1_500)],
        "enterprise" => &[(1_000, 100), (60_000, 3_000), (HOUR_MS, 60_000)],
        _ => &[(1_000, 20), (60_000, 600), (HOUR_MS, 12_000)],
    }
}

/// A client that keeps itself under its quota (most SDKs do): a request that would take a
/// window past `share` of its limit waits until the window has room.
#[derive(Debug, Clone)]
pub struct Pacer {
    windows: Vec<(i64, usize, VecDeque<i64>)>,
}

impl Pacer {
    /// For `tier`, using `share` (0..1] of each limit.
    pub fn new(tier: &str, share: f64) -> Self {
        let windows = tier_limits(tier)
            .iter()
            .map(|&(w, l)| (w, ((f64::from(l) * share) as usize).max(1), VecDeque::new()))
            .collect();
        Self { windows }
    }

    /// The earliest time at or after `ts` the request fits every window; records it.
    pub fn admit(&mut self, mut ts: i64) -> i64 {
        // Each pass either fits or moves ts past a recorded request: bounded by the windows.
        for _ in 0..8 {
            let mut moved = false;
            for (w, budget, q) in &mut self.windows {
                while q.front().is_some_and(|&t| t <= ts - *w) {
                    q.pop_front();
                }
                if q.len() >= *budget {
                    let idx = q.len() - *budget;
                    ts = ts.max(q[idx] + *w);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        for (_, _, q) in &mut self.windows {
            q.push_back(ts);
        }
        ts
    }
}

/// Who a key is: id, tenant, tier, where it calls from and with what.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Key id.
    pub key_id: String,
    /// Tenant.
    pub tenant: String,
    /// Tier.
    pub tier: &'static str,
    /// Egress addresses (one to a few).
    pub ips: Vec<String>,
    /// User agents (one or two).
    pub uas: Vec<String>,
}

const BROWSER_UAS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
];
const SDKS: [&str; 6] = [
    "acme-mobile",
    "python-requests",
    "Go-http-client",
    "okhttp",
    "node-fetch",
    "shopsync",
];

fn user_agent(rng: &mut SimRng, browser: bool) -> String {
    if browser && dist::chance(rng, 0.6) {
        return BROWSER_UAS[dist::range(rng, 0, BROWSER_UAS.len() as u64) as usize].to_owned();
    }
    let sdk = SDKS[dist::range(rng, 0, SDKS.len() as u64) as usize];
    format!(
        "{sdk}/{}.{}.{}",
        dist::range(rng, 1, 5),
        dist::range(rng, 0, 20),
        dist::range(rng, 0, 10)
    )
}

/// Bumps the minor version of an SDK user agent (a client release); browsers are left alone.
fn upgrade(ua: &str) -> String {
    let Some((name, version)) = ua.split_once('/') else {
        return ua.to_owned();
    };
    if name == "Mozilla" {
        return ua.to_owned();
    }
    let mut parts: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    if parts.len() < 2 {
        return ua.to_owned();
    }
    parts[1] += 1;
    let v: Vec<String> = parts.iter().map(u64::to_string).collect();
    format!("{name}/{}", v.join("."))
}

/// An IPv4 address in a documentation-style block chosen by `block`.
pub(crate) fn address(rng: &mut SimRng, block: u8) -> String {
    format!(
        "{}.{}.{}.{}",
        block,
        dist::range(rng, 0, 256),
        dist::range(rng, 0, 256),
        dist::range(rng, 1, 255)
    )
}

/// A key's habits: what it calls, how often, on which objects.
#[derive(Debug, Clone)]
pub struct Habits {
    /// Endpoint indices into [`ENDPOINTS`] and their weights.
    endpoints: Vec<usize>,
    mix: Weighted,
    /// Per resource: the objects this key works with.
    working: Vec<Vec<u64>>,
    working_pick: Vec<Weighted>,
    /// Median think time within a session, ms.
    pub think_median_ms: f64,
    /// Median requests per session.
    pub session_len_median: f64,
    /// Session arrivals per day at full activity.
    pub sessions_per_day: f64,
    /// Offset of the key's local time from UTC, hours.
    pub tz_hours: i64,
    /// Weekend activity relative to weekdays.
    pub weekend: f64,
    /// Share of requests the backend answers with a 4xx.
    pub error_rate: f64,
    /// No daily cycle (users all around the world).
    pub always_on: bool,
}

impl Habits {
    /// Fresh habits; `machine` keys favour list and object endpoints over browsing ones.
    pub fn draw(rng: &mut SimRng, machine: bool) -> Self {
        let mut h = Self {
            endpoints: Vec::new(),
            mix: Weighted::new(&[]),
            working: Vec::new(),
            working_pick: Vec::new(),
            think_median_ms: dist::lognormal(rng, 4_000.0, 0.6).clamp(500.0, 60_000.0),
            session_len_median: dist::lognormal(rng, 10.0, 0.6).clamp(2.0, 120.0),
            sessions_per_day: dist::lognormal(rng, 30.0, 0.9).clamp(2.0, 600.0),
            tz_hours: dist::range(rng, 0, 18) as i64 - 8,
            weekend: dist::unit(rng) * 0.5 + 0.05,
            error_rate: dist::lognormal(rng, 0.015, 0.8).clamp(0.001, 0.12),
            always_on: false,
        };
        h.redraw_mix(rng, machine);
        h.redraw_working_sets(rng, 1.0);
        h
    }

    /// A new endpoint mix: 3 to 10 endpoints, Zipf-weighted in random order.
    pub fn redraw_mix(&mut self, rng: &mut SimRng, machine: bool) {
        let n = dist::range(rng, 3, 11) as usize;
        let mut all: Vec<usize> = (0..ENDPOINTS.len()).collect();
        // Fisher-Yates, then keep n.
        for i in (1..all.len()).rev() {
            let j = dist::range(rng, 0, i as u64 + 1) as usize;
            all.swap(i, j);
        }
        all.truncate(n);
        let weights: Vec<f64> = all
            .iter()
            .enumerate()
            .map(|(rank, &e)| {
                let base = 1.0 / (rank as f64 + 1.0);
                let e = &ENDPOINTS[e];
                let writes = if e.method == "GET" { 1.0 } else { 0.3 };
                let browsing = match (machine, e.shape) {
                    (true, Shape::Search | Shape::Category) => 0.3,
                    _ => 1.0,
                };
                base * writes * browsing
            })
            .collect();
        self.mix = Weighted::new(&weights);
        self.endpoints = all;
    }

    /// Replaces `share` of every working set with new objects.
    pub fn redraw_working_sets(&mut self, rng: &mut SimRng, share: f64) {
        if self.working.is_empty() {
            for r in Resource::ALL {
                let n = dist::lognormal(rng, 30.0, 1.0).clamp(3.0, 1_500.0) as usize;
                let set: Vec<u64> = (0..n).map(|_| dist::range(rng, 1, r.id_space())).collect();
                self.working_pick.push(Weighted::zipf(n, 1.1));
                self.working.push(set);
            }
            return;
        }
        for (set, r) in self.working.iter_mut().zip(Resource::ALL) {
            for id in set.iter_mut() {
                if dist::chance(rng, share) {
                    *id = dist::range(rng, 1, r.id_space());
                }
            }
        }
    }

    /// An endpoint index drawn from the mix.
    pub fn endpoint(&self, rng: &mut SimRng) -> usize {
        self.endpoints
            .get(self.mix.sample(rng))
            .copied()
            .unwrap_or(0)
    }

    /// An object of `r` from the working set; now and then a new one (objects get created).
    pub fn object(&mut self, rng: &mut SimRng, r: Resource) -> u64 {
        let i = r.index();
        let set = &mut self.working[i];
        let k = self.working_pick[i].sample(rng).min(set.len() - 1);
        if dist::chance(rng, 0.01) {
            set[k] = dist::range(rng, 1, r.id_space());
        }
        set[k]
    }

    /// Activity in (0, 1] at `ts`: working hours of the key's time zone, quieter weekends.
    pub fn activity(&self, ts: i64) -> f64 {
        if self.always_on {
            return 1.0;
        }
        let local = ts + self.tz_hours * HOUR_MS;
        let hour = local.rem_euclid(DAY_MS) / HOUR_MS;
        // 1970-01-01 was a Thursday: day 0 -> 3 (Mon = 0).
        let weekday = (local.div_euclid(DAY_MS) + 3).rem_euclid(7);
        let base = match hour {
            9..=11 | 14..=17 => 1.0,
            12..=13 | 8 | 18 => 0.7,
            6..=7 | 19..=22 => 0.25,
            _ => 0.04,
        };
        if weekday >= 5 {
            base * self.weekend
        } else {
            base
        }
    }

    /// The status the backend answers: mostly 2xx, the key's share of 4xx.
    pub fn status(&self, rng: &mut SimRng, method: &str) -> u16 {
        if dist::chance(rng, self.error_rate) {
            match dist::range(rng, 0, 10) {
                0..=5 => 404,
                6 | 7 => 400,
                8 => 403,
                _ => 409,
            }
        } else if method == "POST" {
            201
        } else {
            200
        }
    }
}

/// How a normal key spends its day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// People behind an app: sessions in working hours.
    Interactive,
    /// A batch job every `period_ms`, 24/7 or in working hours only.
    Integration {
        /// Period between jobs.
        period_ms: i64,
        /// Jobs only when the key's working hours are on.
        office_hours: bool,
    },
    /// A poll every `period_ms` of one or two endpoints.
    Poller {
        /// Period between polls.
        period_ms: i64,
        /// Relative jitter of the period.
        jitter: f64,
    },
}

/// The scenario label of a population.
#[derive(Debug, Clone, Copy)]
pub struct Label {
    /// Scenario name.
    pub scenario: &'static str,
    /// Whether the scenario is an attack.
    pub attack_scenario: bool,
}

/// What the key does next (before it becomes a request).
#[derive(Debug, Clone, Copy)]
enum Plan {
    Page { endpoint: usize, page: u32 },
    Call { endpoint: usize },
}

/// One normal key, as an actor: requests in time order.
#[derive(Debug)]
pub struct NormalKey {
    rng: SimRng,
    /// Who it is.
    pub identity: Identity,
    /// Its habits (attack wrappers read them).
    pub habits: Habits,
    style: Style,
    label: Label,
    actor: u32,
    now: i64,
    end: i64,
    drift_at: Option<i64>,
    left_in_burst: u32,
    page_run: Option<(usize, u32, u32)>,
    pacer: Pacer,
    poll_targets: Vec<(usize, u64)>,
    machine: bool,
}

impl NormalKey {
    /// A key of `style` with habits drawn from `rng`, active in `[start, end)`; with
    /// `drift_at` it changes habits at that time.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut rng: SimRng,
        identity: Identity,
        style: Style,
        label: Label,
        actor: u32,
        start: i64,
        end: i64,
        drift_at: Option<i64>,
    ) -> Self {
        let machine = !matches!(style, Style::Interactive);
        let habits = Habits::draw(&mut rng, machine);
        let pacer = Pacer::new(identity.tier, 0.6);
        let mut key = Self {
            rng,
            identity,
            habits,
            style,
            label,
            actor,
            now: start,
            end,
            drift_at,
            left_in_burst: 0,
            page_run: None,
            pacer,
            poll_targets: Vec::new(),
            machine,
        };
        key.poll_targets = key.draw_poll_targets();
        // Start somewhere inside the first period, not all keys at once.
        key.now = start
            + match style {
                Style::Interactive => 0,
                Style::Integration { period_ms, .. } | Style::Poller { period_ms, .. } => {
                    dist::range(&mut key.rng, 0, period_ms.max(1) as u64) as i64
                }
            };
        key
    }

    /// Draws a typical interactive identity and key for the population `label`.
    pub fn identity(rng: &mut SimRng, key_id: String, tenant: String, machine: bool) -> Identity {
        let tier = match dist::range(rng, 0, 10) {
            0..=2 if !machine => "free",
            9 => "enterprise",
            _ => "standard",
        };
        let n_ips = if machine {
            dist::range(rng, 1, 3)
        } else {
            dist::range(rng, 1, 5)
        };
        let block = 100 + (dist::range(rng, 0, 100) as u8);
        let ips = (0..n_ips).map(|_| address(rng, block)).collect();
        let n_uas = if machine { 1 } else { dist::range(rng, 1, 3) };
        let uas = (0..n_uas).map(|_| user_agent(rng, !machine)).collect();
        Identity {
            key_id,
            tenant,
            tier,
            ips,
            uas,
        }
    }

    fn draw_poll_targets(&mut self) -> Vec<(usize, u64)> {
        let n = dist::range(&mut self.rng, 1, 3) as usize;
        (0..n)
            .map(|_| {
                let e = self.habits.endpoint(&mut self.rng);
                let id = match ENDPOINTS[e].shape {
                    Shape::Object(r) => self.habits.object(&mut self.rng, r),
                    _ => 0,
                };
                (e, id)
            })
            .collect()
    }

    /// The key's current simulated time.
    pub fn now(&self) -> i64 {
        self.now
    }

    fn drift(&mut self) {
        let rng = &mut self.rng;
        self.habits.redraw_mix(rng, self.machine);
        self.habits.redraw_working_sets(rng, 0.5);
        self.habits.sessions_per_day =
            (self.habits.sessions_per_day * dist::lognormal(rng, 1.0, 0.5)).clamp(2.0, 600.0);
        for ua in &mut self.identity.uas {
            *ua = upgrade(ua);
        }
        self.style = match self.style {
            Style::Integration {
                period_ms,
                office_hours,
            } => Style::Integration {
                period_ms: ((period_ms as f64) * dist::lognormal(rng, 1.0, 0.5)) as i64,
                office_hours,
            },
            Style::Poller { period_ms, jitter } => Style::Poller {
                period_ms: ((period_ms as f64) * dist::lognormal(rng, 1.0, 0.4)) as i64,
                jitter,
            },
            s => s,
        };
        self.poll_targets = self.draw_poll_targets();
    }

    /// Time of the next session (interactive) by thinning on the activity curve.
    fn next_session(&mut self) -> i64 {
        let mean_gap = DAY_MS as f64 / self.habits.sessions_per_day;
        let mut t = self.now;
        // Activity is at least 0.04 * 0.05: a few hundred draws at the very most.
        for _ in 0..10_000 {
            t += dist::exponential(&mut self.rng, mean_gap).max(1_000.0) as i64;
            if dist::chance(&mut self.rng, self.habits.activity(t)) || t >= self.end {
                break;
            }
        }
        t
    }

    fn plan(&mut self) -> Plan {
        if let Some((endpoint, page, last)) = self.page_run {
            if page <= last {
                self.page_run = Some((endpoint, page + 1, last));
                self.now += dist::lognormal(&mut self.rng, 700.0, 0.5).max(120.0) as i64;
                return Plan::Page { endpoint, page };
            }
            self.page_run = None;
        }
        match self.style {
            Style::Interactive => {
                if self.left_in_burst == 0 {
                    self.now = self.next_session();
                    self.left_in_burst =
                        dist::lognormal(&mut self.rng, self.habits.session_len_median, 0.8)
                            .clamp(1.0, 400.0) as u32;
                } else {
                    self.now += dist::lognormal(&mut self.rng, self.habits.think_median_ms, 1.1)
                        .clamp(150.0, 1_200_000.0) as i64;
                }
            }
            Style::Integration {
                period_ms,
                office_hours,
            } => {
                if self.left_in_burst == 0 {
                    // The next run: on the timer with a little jitter, skipping closed hours.
                    for _ in 0..1_000 {
                        self.now += ((period_ms as f64)
                            * (1.0 + 0.04 * (dist::unit(&mut self.rng) - 0.5)))
                            as i64;
                        if !office_hours || self.habits.activity(self.now) >= 0.5 {
                            break;
                        }
                    }
                    self.left_in_burst =
                        dist::lognormal(&mut self.rng, 12.0, 0.9).clamp(1.0, 200.0) as u32;
                } else {
                    self.now += dist::lognormal(&mut self.rng, 250.0, 0.6).max(40.0) as i64;
                }
            }
            Style::Poller { period_ms, jitter } => {
                self.now += ((period_ms as f64)
                    * (1.0 + jitter * (2.0 * dist::unit(&mut self.rng) - 1.0)))
                    as i64;
                if dist::chance(&mut self.rng, 1.0 / 3_000.0) {
                    // An outage or a deploy: the poller is silent for a while.
                    self.now += dist::lognormal(&mut self.rng, HOUR_MS as f64, 1.0) as i64;
                }
                let i = dist::range(&mut self.rng, 0, self.poll_targets.len() as u64) as usize;
                let (endpoint, _) = self.poll_targets[i];
                return Plan::Call { endpoint };
            }
        }
        self.left_in_burst = self.left_in_burst.saturating_sub(1);
        let endpoint = self.habits.endpoint(&mut self.rng);
        if ENDPOINTS[endpoint].shape == Shape::List {
            // Pagination: usually one page, sometimes a long run.
            let pages = dist::pareto(&mut self.rng, 1.0, 1.4, 40.0) as u32;
            self.page_run = Some((endpoint, 2, pages.max(1)));
            return Plan::Page { endpoint, page: 1 };
        }
        Plan::Call { endpoint }
    }

    /// The next request, or `None` past the end.
    pub fn next_request(&mut self) -> Option<SimRequest> {
        if self.now >= self.end {
            return None;
        }
        if let Some(at) = self.drift_at
            && self.now >= at
        {
            self.drift_at = None;
            self.drift();
        }
        let plan = self.plan();
        self.now = self.pacer.admit(self.now);
        if self.now >= self.end {
            return None;
        }
        let (endpoint, page, poll_id) = match plan {
            Plan::Page { endpoint, page } => (endpoint, page, None),
            Plan::Call { endpoint } => {
                let id = self
                    .poll_targets
                    .iter()
                    .find(|(e, _)| *e == endpoint && matches!(self.style, Style::Poller { .. }))
                    .map(|(_, id)| *id);
                (endpoint, 1, id)
            }
        };
        let e = &ENDPOINTS[endpoint];
        let id = match (poll_id, e.shape) {
            (Some(id), _) => id,
            (None, Shape::Object(r)) => self.habits.object(&mut self.rng, r),
            _ => 0,
        };
        let (path, query) = render(e, id, page, self.now.div_euclid(DAY_MS), &mut self.rng);
        let status = self.habits.status(&mut self.rng, e.method);
        Some(self.request(e.method, path, query, status))
    }

    /// A request of this key at its current time (attack wrappers build theirs with it).
    pub fn request(
        &mut self,
        method: &'static str,
        path: String,
        query: Vec<(String, String)>,
        status: u16,
    ) -> SimRequest {
        let ip = self.identity.ips
            [dist::range(&mut self.rng, 0, self.identity.ips.len() as u64) as usize]
            .clone();
        let ua = self.identity.uas
            [dist::range(&mut self.rng, 0, self.identity.uas.len() as u64) as usize]
            .clone();
        SimRequest {
            ts_ms: self.now,
            scenario: self.label.scenario,
            attack_scenario: self.label.attack_scenario,
            malicious: false,
            actor: self.actor,
            key_id: self.identity.key_id.clone(),
            tenant: self.identity.tenant.clone(),
            tier: self.identity.tier,
            client_ip: ip,
            user_agent: ua,
            method,
            path,
            query,
            status,
            channel: Channel::Keyed,
        }
    }

    /// The key's generator (attack wrappers draw from it to stay reproducible).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_keeps_every_window_under_budget() {
        let mut p = Pacer::new("free", 0.5);
        let times: Vec<i64> = (0..200).map(|i| p.admit(i * 10)).collect();
        for (i, &t) in times.iter().enumerate() {
            let in_minute = times[..=i].iter().filter(|&&u| u > t - 60_000).count();
            assert!(in_minute <= 30, "{in_minute} in a minute at {t}");
        }
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn sdk_upgrades_bump_the_minor_version() {
        assert_eq!(upgrade("okhttp/4.12.0"), "okhttp/4.13.0");
        assert!(upgrade(BROWSER_UAS[0]).starts_with("Mozilla/5.0"));
    }
}
