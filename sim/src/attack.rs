//! The attackers. Each is an actor of its own (own key, own generator) that starts after the
//! warm-up, so a baseline exists when it begins:
//!
//! - `burst`: a key far over its tier's limits, in a few short episodes;
//! - `credential_stuffing`: many wrong keys from a few addresses;
//! - `scraper`: a bot on a timer (machine-regular gaps) walking every endpoint and ID;
//! - `low_and_slow`: a legitimate key at normal volume and hours that starts enumerating
//!   user IDs one by one, for days;
//! - `bola`: a legitimate key that starts reading other tenants' orders and invoices by ID
//!   (wide, random IDs; mostly 403/404);
//! - `shared_key`: a key that is suddenly used from many addresses and user agents at all
//!   hours (the owner keeps using it as before);
//! - `bypass`: direct calls to the backend, without a token and with forged ones.

use crate::{
    catalogue::{ENDPOINTS, Resource, Shape, render},
    dist::{self, SimRng},
    normal::{DAY_MS, HOUR_MS, NormalKey, address},
    request::{Channel, SimRequest},
};

/// A bot's request, with everything but the varying parts fixed.
fn bot_request(
    scenario: &'static str,
    actor: u32,
    ts_ms: i64,
    key_id: &str,
    tier: &'static str,
    ip: &str,
    ua: &str,
) -> SimRequest {
    SimRequest {
        ts_ms,
        scenario,
        attack_scenario: true,
        malicious: true,
        actor,
        key_id: key_id.to_owned(),
        tenant: format!("t-{key_id}"),
        tier,
        client_ip: ip.to_owned(),
        user_agent: ua.to_owned(),
        method: "GET",
        path: String::new(),
        query: Vec::new(),
        status: 200,
        channel: Channel::Keyed,
    }
}

/// Short episodes far over the `free` tier's limits.
#[derive(Debug)]
pub struct Burst {
    rng: SimRng,
    actor: u32,
    episodes: Vec<(i64, i64)>,
    now: i64,
    ip: String,
}

impl Burst {
    /// Three two-minute episodes at about 25 requests/s, six hours apart, from `start`.
    pub fn new(mut rng: SimRng, actor: u32, start: i64, end: i64) -> Self {
        let episodes: Vec<(i64, i64)> = (0..3)
            .map(|i| start + i * 6 * HOUR_MS)
            .filter(|&s| s < end)
            .map(|s| (s, (s + 120_000).min(end)))
            .collect();
        let ip = address(&mut rng, 77);
        Self {
            rng,
            actor,
            now: episodes.first().map_or(end, |e| e.0),
            episodes,
            ip,
        }
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        // Drop finished episodes; at most three.
        while let Some(&(_, stop)) = self.episodes.first() {
            if self.now < stop {
                break;
            }
            self.episodes.remove(0);
            if let Some(&(s, _)) = self.episodes.first() {
                self.now = self.now.max(s);
            }
        }
        self.episodes.first()?;
        let ts = self.now;
        self.now += dist::exponential(&mut self.rng, 40.0).max(1.0) as i64;
        let mut r = bot_request(
            "burst",
            self.actor,
            ts,
            "atk-burst",
            "free",
            &self.ip,
            "curl/8.5.0",
        );
        let page = dist::range(&mut self.rng, 1, 20) as u32;
        let (path, query) = render(&ENDPOINTS[8], 0, page, ts / DAY_MS, &mut self.rng);
        r.path = path;
        r.query = query;
        Some(r)
    }
}

/// Wrong keys from a few addresses, in two waves a day apart.
#[derive(Debug)]
pub struct Stuffing {
    rng: SimRng,
    actor: u32,
    ips: Vec<String>,
    waves: Vec<(i64, i64)>,
    now: i64,
}

impl Stuffing {
    /// Three addresses, about one guess per second each, 45 minutes per wave.
    pub fn new(mut rng: SimRng, actor: u32, start: i64, end: i64) -> Self {
        let ips = (0..3).map(|_| address(&mut rng, 45)).collect();
        // Two hours after the attacks begin (sooner in a short run), and the next day.
        let first = start + (2 * HOUR_MS).min((end - start) / 4);
        let waves: Vec<(i64, i64)> = [first, start + DAY_MS + 9 * HOUR_MS]
            .into_iter()
            .filter(|&s| s < end)
            .map(|s| (s, (s + 45 * 60_000).min(end)))
            .collect();
        Self {
            rng,
            actor,
            ips,
            now: waves.first().map_or(end, |w| w.0),
            waves,
        }
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        while let Some(&(_, stop)) = self.waves.first() {
            if self.now < stop {
                break;
            }
            self.waves.remove(0);
            if let Some(&(s, _)) = self.waves.first() {
                self.now = self.now.max(s);
            }
        }
        self.waves.first()?;
        let ts = self.now;
        self.now += dist::exponential(&mut self.rng, 333.0).max(1.0) as i64;
        let ip = self.ips[dist::range(&mut self.rng, 0, self.ips.len() as u64) as usize].clone();
        let guess: String = (0..24)
            .map(|_| char::from_digit(dist::range(&mut self.rng, 0, 36) as u32, 36).unwrap_or('x'))
            .collect();
        let mut r = bot_request("credential_stuffing", self.actor, ts, "", "", &ip, "");
        r.key_id.clear();
        r.tenant.clear();
        r.user_agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36".to_owned();
        r.path = "/api/whoami".to_owned();
        r.status = 401;
        r.channel = Channel::WrongKey {
            presented: format!("pk_live_{guess}"),
        };
        Some(r)
    }
}

/// A bot on a timer walking every readable endpoint, IDs and pages in order, day and night.
#[derive(Debug)]
pub struct Scraper {
    rng: SimRng,
    actor: u32,
    now: i64,
    end: i64,
    step: usize,
    next_id: [u64; 7],
    next_page: u32,
    ip: String,
}

impl Scraper {
    /// One request every 3 s (0.5 % jitter) from `start` to `end`.
    pub fn new(mut rng: SimRng, actor: u32, start: i64, end: i64) -> Self {
        let next_id = Resource::ALL.map(|r| dist::range(&mut rng, 1, r.id_space() / 2));
        let ip = address(&mut rng, 34);
        Self {
            rng,
            actor,
            now: start,
            end,
            step: 0,
            next_id,
            next_page: 1,
            ip,
        }
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        if self.now >= self.end {
            return None;
        }
        let ts = self.now;
        self.now += (3_000.0 * (1.0 + 0.01 * (dist::unit(&mut self.rng) - 0.5))) as i64;
        let readable: Vec<usize> = (0..ENDPOINTS.len())
            .filter(|&i| ENDPOINTS[i].method == "GET")
            .collect();
        let e = &ENDPOINTS[readable[self.step % readable.len()]];
        self.step += 1;
        let id = match e.shape {
            Shape::Object(r) => {
                let id = self.next_id[r.index()];
                self.next_id[r.index()] += 1;
                id
            }
            _ => 0,
        };
        if e.shape == Shape::List {
            self.next_page += 1;
        }
        let (path, query) = render(e, id, self.next_page, ts / DAY_MS, &mut self.rng);
        let mut r = bot_request(
            "scraper",
            self.actor,
            ts,
            "atk-scraper",
            "standard",
            &self.ip,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        );
        r.path = path;
        r.query = query;
        r.status = if dist::chance(&mut self.rng, 0.08) {
            404
        } else {
            200
        };
        Some(r)
    }
}

/// What a legitimate-looking key turns into after `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Enumerates `/api/users/{id}` one by one, at the key's usual pace.
    LowAndSlow,
    /// Reads other tenants' orders and invoices by ID.
    Bola,
}

/// A normal key that turns malicious at `start`.
#[derive(Debug)]
pub struct Turned {
    key: NormalKey,
    turn: Turn,
    start: i64,
    next_id: u64,
}

impl Turned {
    /// Wraps `key` (labelled with the attack's scenario).
    pub fn new(mut key: NormalKey, turn: Turn, start: i64) -> Self {
        // About the median normal key's volume (a few hundred requests a day), so volume
        // alone says nothing.
        key.habits.sessions_per_day = 75.0;
        key.habits.session_len_median = 10.0;
        key.habits.think_median_ms = 4_000.0;
        let next_id = dist::range(key.rng(), 1_000, 100_000);
        Self {
            key,
            turn,
            start,
            next_id,
        }
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        let mut r = self.key.next_request()?;
        if r.ts_ms < self.start {
            return Some(r);
        }
        let rng = self.key.rng();
        match self.turn {
            Turn::LowAndSlow => {
                if !dist::chance(rng, 0.85) {
                    return Some(r);
                }
                let id = self.next_id;
                self.next_id += if dist::chance(rng, 0.05) { 2 } else { 1 };
                r.method = "GET";
                r.path = format!("/api/users/{id}");
                r.query.clear();
                r.status = if dist::chance(rng, 0.04) { 404 } else { 200 };
            }
            Turn::Bola => {
                if !dist::chance(rng, 0.5) {
                    return Some(r);
                }
                let (template, resource) = if dist::chance(rng, 0.6) {
                    ("/api/orders/", Resource::Order)
                } else {
                    ("/api/invoices/", Resource::Invoice)
                };
                let id = dist::range(rng, 1, resource.id_space());
                r.method = "GET";
                r.path = format!("{template}{id}");
                r.query.clear();
                r.status = match dist::range(rng, 0, 10) {
                    0..=6 => 403,
                    7 | 8 => 404,
                    _ => 200,
                };
            }
        }
        r.malicious = true;
        Some(r)
    }
}

/// Direct calls to the backend: no token, or a forged one. `{now}` in a token is replaced by
/// the current Unix time when sent (a fresh forgery, not an expired one).
#[derive(Debug)]
pub struct Bypass {
    rng: SimRng,
    actor: u32,
    now: i64,
    end: i64,
    left: u32,
    mean_gap_ms: f64,
}

impl Bypass {
    /// About 60 calls spread over `[start, end)`.
    pub fn new(rng: SimRng, actor: u32, start: i64, end: i64) -> Self {
        Self {
            rng,
            actor,
            now: start,
            end,
            left: 60,
            mean_gap_ms: ((end - start).max(1) as f64) / 61.0,
        }
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        if self.left == 0 || self.now >= self.end {
            return None;
        }
        self.left -= 1;
        let ts = self.now;
        self.now += dist::exponential(&mut self.rng, self.mean_gap_ms) as i64;
        let sig: String = (0..43)
            .map(|_| {
                let i = dist::range(&mut self.rng, 0, 64) as usize;
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i] as char
            })
            .collect();
        let token = match dist::range(&mut self.rng, 0, 4) {
            0 | 1 => None,
            2 => Some(format!("v1.{{now}}.alice.{sig}")),
            _ => Some(format!("v1.1700000000.k1.{sig}")),
        };
        let id = dist::range(&mut self.rng, 1, 10_000);
        let mut r = bot_request(
            "bypass",
            self.actor,
            ts,
            "",
            "",
            "127.0.0.1",
            "python-requests/2.31.0",
        );
        r.key_id.clear();
        r.tenant.clear();
        r.path = format!("/api/users/{id}");
        r.status = 401;
        r.channel = Channel::Direct { token };
        Some(r)
    }
}

/// Every kind of actor.
#[derive(Debug)]
pub enum Actor {
    /// A normal key (also a stolen key's owner).
    Normal(Box<NormalKey>),
    /// `burst`.
    Burst(Burst),
    /// `credential_stuffing`.
    Stuffing(Stuffing),
    /// `scraper`.
    Scraper(Scraper),
    /// `low_and_slow`, `bola`.
    Turned(Box<Turned>),
    /// `shared_key`: the strangers using the key (a normal key, always on, many addresses).
    Thief(Box<NormalKey>, i64),
    /// `bypass`.
    Bypass(Bypass),
}

impl Actor {
    /// The actor's next request, in time order; `None` once it is done.
    pub fn next_request(&mut self) -> Option<SimRequest> {
        match self {
            Actor::Normal(k) => k.next_request(),
            Actor::Burst(a) => a.next_request(),
            Actor::Stuffing(a) => a.next_request(),
            Actor::Scraper(a) => a.next_request(),
            Actor::Turned(a) => a.next_request(),
            Actor::Thief(k, start) => {
                let mut r = k.next_request()?;
                r.malicious = r.ts_ms >= *start;
                Some(r)
            }
            Actor::Bypass(a) => a.next_request(),
        }
    }
}
