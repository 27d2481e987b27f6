//! A scenario set: the population and the attacks, built into actors and merged into one
//! time-ordered stream of labelled requests. Pure: the same set and seed give the same stream.

use std::{cmp::Reverse, collections::BinaryHeap, fmt, str::FromStr};

use crate::{
    attack::{Actor, Burst, Bypass, Scraper, Stuffing, Turn, Turned},
    dist::{self, rng_for},
    normal::{DAY_MS, Label, NormalKey, Style, address},
    request::SimRequest,
};

/// Monday 2026-01-05 00:00 UTC: simulated time starts here unless told otherwise.
pub const SIM_EPOCH_MS: i64 = 1_767_571_200_000;

/// An attack class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attack {
    /// Over the limits.
    Burst,
    /// Many wrong keys from few addresses.
    CredentialStuffing,
    /// A bot on a timer covering every endpoint.
    Scraper,
    /// A legitimate key enumerating IDs at normal volume for days.
    LowAndSlow,
    /// Reading other tenants' objects by ID.
    Bola,
    /// One key suddenly from many addresses and user agents.
    SharedKey,
    /// Direct calls to the backend.
    Bypass,
}

impl Attack {
    /// Every attack class, in report order.
    pub const ALL: [Attack; 7] = [
        Attack::Burst,
        Attack::CredentialStuffing,
        Attack::Scraper,
        Attack::LowAndSlow,
        Attack::Bola,
        Attack::SharedKey,
        Attack::Bypass,
    ];

    /// The scenario name in labels and the report.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Burst => "burst",
            Attack::CredentialStuffing => "credential_stuffing",
            Attack::Scraper => "scraper",
            Attack::LowAndSlow => "low_and_slow",
            Attack::Bola => "bola",
            Attack::SharedKey => "shared_key",
            Attack::Bypass => "bypass",
        }
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Attack::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
                format!("unknown scenario `{s}` (known: {})", names.join(", "))
            })
    }
}

/// The normal populations' scenario names.
pub const NORMAL_SCENARIOS: [&str; 4] = [
    "normal_interactive",
    "normal_integration",
    "normal_poller",
    "normal_drifting",
];

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioSet {
    /// Seed of everything.
    pub seed: u64,
    /// Start of simulated time, ms since the Unix epoch.
    pub start_ms: i64,
    /// Length of simulated time.
    pub span_ms: i64,
    /// When the attacks begin, after the start (a baseline exists by then).
    pub warmup_ms: i64,
    /// Normal keys.
    pub normal_keys: usize,
    /// Share of normal keys that change habits mid-run.
    pub drift_share: f64,
    /// The attacks.
    pub attacks: Vec<Attack>,
}

impl ScenarioSet {
    /// `days` of simulated time from [`SIM_EPOCH_MS`], attacks from 2/7 of the way in
    /// (day 2 of 7), every attack class, 10 % of the keys drifting.
    pub fn days(seed: u64, days: f64, normal_keys: usize) -> Self {
        let span_ms = (days * DAY_MS as f64) as i64;
        Self {
            seed,
            start_ms: SIM_EPOCH_MS,
            span_ms,
            warmup_ms: span_ms * 2 / 7,
            normal_keys,
            drift_share: 0.1,
            attacks: Attack::ALL.to_vec(),
        }
    }

    /// End of simulated time.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.span_ms
    }

    /// When attacks begin.
    pub fn attack_start_ms(&self) -> i64 {
        self.start_ms + self.warmup_ms
    }

    /// Every actor, normal keys first.
    pub fn actors(&self) -> Vec<Actor> {
        let (start, end, at) = (self.start_ms, self.end_ms(), self.attack_start_ms());
        let mut actors = Vec::new();
        for i in 0..self.normal_keys {
            let mut rng = rng_for(self.seed, i as u64);
            let (style, prefix) = match dist::range(&mut rng, 0, 100) {
                0..=59 => (Style::Interactive, "ui"),
                60..=84 => (
                    Style::Integration {
                        period_ms: dist::lognormal(&mut rng, 15.0 * 60_000.0, 0.8)
                            .clamp(120_000.0, 6.0 * 3_600_000.0)
                            as i64,
                        office_hours: dist::chance(&mut rng, 0.3),
                    },
                    "int",
                ),
                _ => (
                    Style::Poller {
                        period_ms: dist::lognormal(&mut rng, 60_000.0, 0.7)
                            .clamp(10_000.0, 900_000.0) as i64,
                        jitter: dist::unit(&mut rng) * 0.05 + 0.005,
                    },
                    "poll",
                ),
            };
            let drift = dist::chance(&mut rng, self.drift_share);
            let drift_at = drift.then(|| {
                start + (self.span_ms as f64 * (0.2 + 0.65 * dist::unit(&mut rng))) as i64
            });
            let scenario = match (drift, style) {
                (true, _) => "normal_drifting",
                (false, Style::Interactive) => "normal_interactive",
                (false, Style::Integration { .. }) => "normal_integration",
                (false, Style::Poller { .. }) => "normal_poller",
            };
            let machine = !matches!(style, Style::Interactive);
            let identity = NormalKey::identity(
                &mut rng,
                format!("{prefix}-{i:04}"),
                format!("t-{:03}", i / 3),
                machine,
            );
            let label = Label {
                scenario,
                attack_scenario: false,
            };
            actors.push(Actor::Normal(Box::new(NormalKey::new(
                rng, identity, style, label, i as u32, start, end, drift_at,
            ))));
        }
        for (k, attack) in self.attacks.iter().enumerate() {
            let actor = (self.normal_keys + 2 * k) as u32;
            let stream = 1_000_000 + 2 * k as u64;
            let mut rng = rng_for(self.seed, stream);
            let label = Label {
                scenario: attack.name(),
                attack_scenario: true,
            };
            match attack {
                Attack::Burst => actors.push(Actor::Burst(Burst::new(rng, actor, at, end))),
                Attack::CredentialStuffing => {
                    actors.push(Actor::Stuffing(Stuffing::new(rng, actor, at, end)));
                }
                Attack::Scraper => actors.push(Actor::Scraper(Scraper::new(rng, actor, at, end))),
                Attack::Bypass => actors.push(Actor::Bypass(Bypass::new(rng, actor, at, end))),
                Attack::LowAndSlow | Attack::Bola => {
                    let (id, turn) = if *attack == Attack::Bola {
                        ("atk-bola", Turn::Bola)
                    } else {
                        ("atk-lowslow", Turn::LowAndSlow)
                    };
                    let mut identity =
                        NormalKey::identity(&mut rng, id.to_owned(), format!("t-{id}"), false);
                    identity.tier = "standard";
                    let key = NormalKey::new(
                        rng,
                        identity,
                        Style::Interactive,
                        label,
                        actor,
                        start,
                        end,
                        None,
                    );
                    actors.push(Actor::Turned(Box::new(Turned::new(key, turn, at))));
                }
                Attack::SharedKey => {
                    let mut identity = NormalKey::identity(
                        &mut rng,
                        "atk-shared".to_owned(),
                        "t-atk-shared".to_owned(),
                        false,
                    );
                    identity.tier = "standard";
                    let owner_rng = rng_for(self.seed, stream + 1);
                    let mut thief_identity = identity.clone();
                    thief_identity.ips = (0..80).map(|_| address(&mut rng, 185)).collect();
                    thief_identity.uas = (0..25)
                        .map(|i| {
                            format!(
                                "Mozilla/5.0 (Linux; Android {}; SM-A{}) AppleWebKit/537.36 Chrome/{}.0 Mobile",
                                10 + i % 5,
                                100 + i * 7,
                                110 + i
                            )
                        })
                        .collect();
                    let owner = NormalKey::new(
                        owner_rng,
                        identity,
                        Style::Interactive,
                        label,
                        actor,
                        start,
                        end,
                        None,
                    );
                    let mut thief = NormalKey::new(
                        rng,
                        thief_identity,
                        Style::Interactive,
                        label,
                        actor + 1,
                        at,
                        end,
                        None,
                    );
                    thief.habits.always_on = true;
                    thief.habits.sessions_per_day = owner.habits.sessions_per_day * 1.5;
                    actors.push(Actor::Normal(Box::new(owner)));
                    actors.push(Actor::Thief(Box::new(thief), at));
                }
            }
        }
        actors
    }

    /// The merged, time-ordered stream of labelled requests.
    pub fn stream(&self) -> Stream {
        Stream::new(self.actors())
    }
}

/// The actors' requests merged in time order (ties by actor, so the order is deterministic).
#[derive(Debug)]
pub struct Stream {
    actors: Vec<Actor>,
    heads: Vec<Option<SimRequest>>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
}

impl Stream {
    /// Merges `actors`.
    pub fn new(mut actors: Vec<Actor>) -> Self {
        let mut heads = Vec::with_capacity(actors.len());
        let mut heap = BinaryHeap::new();
        for (i, a) in actors.iter_mut().enumerate() {
            let head = a.next_request();
            if let Some(r) = &head {
                heap.push(Reverse((r.ts_ms, i)));
            }
            heads.push(head);
        }
        Self {
            actors,
            heads,
            heap,
        }
    }
}

impl Iterator for Stream {
    type Item = SimRequest;

    fn next(&mut self) -> Option<SimRequest> {
        let Reverse((_, i)) = self.heap.pop()?;
        let out = self.heads[i].take();
        let next = self.actors[i].next_request();
        if let Some(r) = &next {
            self.heap.push(Reverse((r.ts_ms, i)));
        }
        self.heads[i] = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn small(seed: u64) -> ScenarioSet {
        ScenarioSet::days(seed, 1.0, 12)
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let a: Vec<SimRequest> = small(7).stream().collect();
        let b: Vec<SimRequest> = small(7).stream().collect();
        assert!(a.len() > 1_000, "{} requests", a.len());
        assert_eq!(a, b);
    }

    #[test]
    fn a_different_seed_gives_a_different_stream() {
        let a: Vec<SimRequest> = small(7).stream().take(2_000).collect();
        let b: Vec<SimRequest> = small(8).stream().take(2_000).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn the_stream_is_time_ordered_and_inside_the_span() {
        let set = small(3);
        let mut last = i64::MIN;
        for r in set.stream() {
            assert!(r.ts_ms >= last, "{} after {last}", r.ts_ms);
            assert!(r.ts_ms >= set.start_ms && r.ts_ms < set.end_ms());
            last = r.ts_ms;
        }
    }

    #[test]
    fn every_request_is_labelled_and_every_scenario_appears() {
        let set = small(5);
        let mut seen = HashSet::new();
        let mut malicious_before_start = 0;
        for r in set.stream() {
            assert!(!r.scenario.is_empty());
            assert_eq!(
                r.attack_scenario,
                !NORMAL_SCENARIOS.contains(&r.scenario),
                "{}",
                r.scenario
            );
            if !r.attack_scenario {
                assert!(!r.malicious);
            }
            if r.malicious && r.ts_ms < set.attack_start_ms() {
                malicious_before_start += 1;
            }
            seen.insert(r.scenario);
        }
        assert_eq!(malicious_before_start, 0);
        for a in Attack::ALL {
            assert!(seen.contains(a.name()), "{a} missing");
        }
        assert!(seen.contains("normal_interactive"));
    }

    #[test]
    fn normal_keys_stay_inside_their_tier_limits() {
        let set = ScenarioSet::days(11, 2.0, 40);
        let mut per_key: HashMap<String, (&'static str, Vec<i64>)> = HashMap::new();
        for r in set.stream().filter(|r| !r.attack_scenario) {
            per_key
                .entry(r.key_id.clone())
                .or_insert((r.tier, Vec::new()))
                .1
                .push(r.ts_ms);
        }
        for (key, (tier, ts)) in per_key {
            for &(w, limit) in crate::normal::tier_limits(tier) {
                let mut lo = 0;
                for hi in 0..ts.len() {
                    while ts[lo] <= ts[hi] - w {
                        lo += 1;
                    }
                    assert!(hi - lo < limit as usize, "{key}: {} in {w} ms", hi - lo + 1);
                }
            }
        }
    }

    #[test]
    fn names_parse_back() {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>().unwrap(), a);
        }
        assert!("nope".parse::<Attack>().is_err());
    }
}
