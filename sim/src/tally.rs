//! What came back, per scenario and per normal key. Workers keep their own tallies; they are
//! merged at the end.

use std::collections::{BTreeMap, BTreeSet};

use crate::request::SimRequest;

/// The answer to one request, as the report sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Refused, throttled, flagged or shadowed: anything but a plain allow (for direct calls:
    /// the backend refused it).
    pub detected: bool,
    /// The decision (`allow`, `throttle`, `flag`, ... or an HTTP status in the Envoy driver).
    pub decision: String,
    /// The reason given.
    pub reason: String,
    /// The key's anomaly score as the scorer reported it (0 without a model or a key).
    pub anomaly_score: f64,
}

impl Verdict {
    /// Whether the request was turned away (throttle, block, or the HTTP statuses for them),
    /// rather than only flagged or shadowed.
    pub fn refused(&self) -> bool {
        matches!(
            self.decision.as_str(),
            "throttle" | "block" | "429" | "403" | "401"
        )
    }
}

/// The first detection of a scenario or key.
#[derive(Debug, Clone, PartialEq)]
pub struct First {
    /// Simulated time.
    pub ts_ms: i64,
    /// Decision.
    pub decision: String,
    /// Reason.
    pub reason: String,
}

impl First {
    /// The detection `verdict` gave `req`.
    fn of(req: &SimRequest, verdict: &Verdict) -> Self {
        Self {
            ts_ms: req.ts_ms,
            decision: verdict.decision.clone(),
            reason: verdict.reason.clone(),
        }
    }
}

fn earlier(a: Option<First>, b: Option<First>) -> Option<First> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.ts_ms < a.ts_ms { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// One scenario's tally.
#[derive(Debug, Clone, Default)]
pub struct ScenarioTally {
    /// An attack scenario.
    pub attack: bool,
    /// Requests sent.
    pub requests: u64,
    /// Requests that were part of the attack (normal scenarios: every request).
    pub counted: u64,
    /// Detections among the counted requests.
    pub detections: u64,
    /// Counted requests that could not be sent (transport errors).
    pub errors: u64,
    /// Times of the counted requests (for "requests before detection").
    pub counted_ts: Vec<i64>,
    /// First counted request.
    pub first_ms: Option<i64>,
    /// First detection among the counted requests.
    pub first: Option<First>,
    /// Detections of an attack scenario's requests that were not part of the attack (a
    /// key's normal phase, a stolen key's owner).
    pub flagged_outside_attack: u64,
    /// Decisions seen on counted requests.
    pub decisions: BTreeMap<String, u64>,
    /// Keys of the scenario.
    pub keys: BTreeSet<String>,
    /// Highest anomaly score on a counted request.
    pub max_score: f64,
}

/// One normal key's tally.
#[derive(Debug, Clone, Default)]
pub struct KeyTally {
    /// Its scenario.
    pub scenario: &'static str,
    /// Requests.
    pub requests: u64,
    /// Requests not plainly allowed.
    pub flagged: u64,
    /// Of those, the ones refused (throttled or blocked, not only flagged or shadowed).
    pub refused: u64,
    /// The first of them.
    pub first: Option<First>,
    /// Highest anomaly score on any of its requests.
    pub max_score: f64,
}

/// Everything observed.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Per scenario.
    pub scenarios: BTreeMap<&'static str, ScenarioTally>,
    /// Per normal key.
    pub keys: BTreeMap<String, KeyTally>,
    /// Requests sent.
    pub requests: u64,
    /// Transport errors.
    pub errors: u64,
    /// The first transport error, for the report.
    pub first_error: Option<String>,
}

impl Tally {
    /// Records the answer (or the error) to `req`.
    pub fn observe(&mut self, req: &SimRequest, answer: Result<&Verdict, String>) {
        self.requests += 1;
        let s = self.scenarios.entry(req.scenario).or_default();
        s.attack = req.attack_scenario;
        s.requests += 1;
        if !req.key_id.is_empty() {
            s.keys.insert(req.key_id.clone());
        }
        let counted = req.malicious || !req.attack_scenario;
        let verdict = match answer {
            Ok(v) => v,
            Err(e) => {
                self.errors += 1;
                if counted {
                    s.errors += 1;
                }
                self.first_error.get_or_insert(e);
                return;
            }
        };
        if counted {
            s.counted += 1;
            s.counted_ts.push(req.ts_ms);
            s.max_score = s.max_score.max(verdict.anomaly_score);
            s.first_ms = Some(s.first_ms.map_or(req.ts_ms, |t| t.min(req.ts_ms)));
            *s.decisions.entry(verdict.decision.clone()).or_default() += 1;
            if verdict.detected {
                s.detections += 1;
                s.first = earlier(s.first.take(), Some(First::of(req, verdict)));
            }
        } else if verdict.detected {
            s.flagged_outside_attack += 1;
        }
        if !req.attack_scenario {
            let k = self.keys.entry(req.key_id.clone()).or_default();
            k.scenario = req.scenario;
            k.requests += 1;
            k.max_score = k.max_score.max(verdict.anomaly_score);
            if verdict.detected {
                k.flagged += 1;
                if verdict.refused() {
                    k.refused += 1;
                }
                k.first = earlier(k.first.take(), Some(First::of(req, verdict)));
            }
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (name, o) in other.scenarios {
            let s = self.scenarios.entry(name).or_default();
            s.attack = o.attack;
            s.requests += o.requests;
            s.counted += o.counted;
            s.detections += o.detections;
            s.errors += o.errors;
            s.counted_ts.extend(o.counted_ts);
            s.first_ms = match (s.first_ms, o.first_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            s.first = earlier(s.first.take(), o.first);
            s.flagged_outside_attack += o.flagged_outside_attack;
            for (d, n) in o.decisions {
                *s.decisions.entry(d).or_default() += n;
            }
            s.keys.extend(o.keys);
            s.max_score = s.max_score.max(o.max_score);
        }
        for (key, o) in other.keys {
            let k = self.keys.entry(key).or_default();
            k.scenario = o.scenario;
            k.requests += o.requests;
            k.flagged += o.flagged;
            k.refused += o.refused;
            k.first = earlier(k.first.take(), o.first);
            k.max_score = k.max_score.max(o.max_score);
        }
    }
}
