//! The detection-quality report: per scenario, per normal key, and overall. Counting units:
//! each attack scenario is one positive, each normal key one negative. An attack is detected
//! when any of its requests is answered with anything but a plain allow (for `bypass`: when
//! the backend refused every direct call); a normal key is flagged when any of its requests
//! was. Precision, recall and false-positive rate follow from those.

use serde::Serialize;

use crate::tally::Tally;

/// One scenario's line.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// An attack (else a normal population).
    pub attack: bool,
    /// Attack: detected. Normal population: at least one key flagged.
    pub detected: bool,
    /// Simulated seconds from the scenario's first counted request to the first detection.
    pub time_to_detect_s: Option<f64>,
    /// Counted requests before the first detection (all of them if never detected).
    pub requests_before_detection: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that were part of the attack (normal populations: all).
    pub attack_requests: u64,
    /// Of those, how many were detected.
    pub detections: u64,
    /// Decision of the first detection.
    pub first_decision: Option<String>,
    /// Reason of the first detection.
    pub first_reason: Option<String>,
    /// Keys the scenario used.
    pub keys: usize,
    /// Normal populations: keys flagged.
    pub flagged_keys: usize,
    /// Attack scenarios: detections on requests that were not part of the attack.
    pub flagged_outside_attack: u64,
    /// Requests that could not be sent.
    pub errors: u64,
    /// Counted requests per simulated day over the span they cover (per key: the scenario's
    /// requests divided by its keys).
    pub requests_per_key_day: f64,
    /// Decisions on counted requests.
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// Highest anomaly score the model gave a counted request (normal populations: over all
    /// their keys).
    pub max_anomaly_score: f64,
}

/// A flagged normal key.
#[derive(Debug, Clone, Serialize)]
pub struct FlaggedKey {
    /// Key id.
    pub key: String,
    /// Its population.
    pub scenario: String,
    /// Its requests.
    pub requests: u64,
    /// Those not plainly allowed.
    pub flagged_requests: u64,
    /// Refused (throttled or blocked), not only flagged or shadowed.
    pub blocked: bool,
    /// How many were refused.
    pub blocked_requests: u64,
    /// The first such decision and reason.
    pub first: String,
}

/// The whole report (`target/sim/report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Per scenario, attacks first.
    pub scenarios: Vec<ScenarioReport>,
    /// Flagged normal keys over normal keys.
    pub false_positive_rate: f64,
    /// Detected attacks over detected attacks plus flagged normal keys.
    pub precision: f64,
    /// Detected attacks over attacks.
    pub recall: f64,
    /// Normal keys.
    pub normal_keys: usize,
    /// The flagged ones.
    pub flagged_normal_keys: Vec<FlaggedKey>,
    /// Median requests per simulated day of a normal key.
    pub normal_key_requests_per_day_median: f64,
    /// Normal keys' highest anomaly scores: the 50th, 90th, 99th percentile and the maximum
    /// (how close the ordinary population comes to the flag threshold).
    pub normal_key_max_score_quantiles: [f64; 4],
    /// Attacks detected.
    pub attacks_detected: usize,
    /// Attacks.
    pub attacks: usize,
    /// Requests sent.
    pub requests: u64,
    /// Transport errors.
    pub errors: u64,
    /// The first of them.
    pub first_error: Option<String>,
    /// How the traffic was sent.
    pub driver: String,
    /// Seed.
    pub seed: u64,
    /// Simulated days.
    pub simulated_days: f64,
    /// Wall time of the run, seconds.
    pub wall_time_s: f64,
    /// Requests per wall-clock second.
    pub requests_per_s: f64,
}

/// Context of the run that the tally does not know.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// How the traffic was sent.
    pub driver: String,
    /// Seed.
    pub seed: u64,
    /// Simulated days.
    pub simulated_days: f64,
    /// Wall time, seconds.
    pub wall_time_s: f64,
}

fn ratio(a: usize, b: usize, empty: f64) -> f64 {
    if b == 0 { empty } else { a as f64 / b as f64 }
}

impl Report {
    /// Builds the report from what was observed.
    pub fn build(tally: Tally, info: RunInfo) -> Self {
        let mut scenarios = Vec::new();
        for (name, mut s) in tally.scenarios {
            s.counted_ts.sort_unstable();
            let flagged_keys = tally
                .keys
                .values()
                .filter(|k| k.scenario == name && k.flagged > 0)
                .count();
            let detected = if name == "bypass" {
                s.counted > 0 && s.detections == s.counted && s.errors == 0
            } else {
                s.first.is_some()
            };
            let before = match (&s.first, detected) {
                (Some(f), true) => s.counted_ts.partition_point(|&t| t < f.ts_ms) as u64,
                _ if name == "bypass" => s.counted - s.detections,
                _ => s.counted,
            };
            let time_to_detect_s = match (&s.first, s.first_ms, detected) {
                (Some(f), Some(t0), true) => Some((f.ts_ms - t0) as f64 / 1_000.0),
                _ => None,
            };
            let span_days = match (s.counted_ts.first(), s.counted_ts.last()) {
                (Some(a), Some(b)) => ((b - a) as f64 / 86_400_000.0).max(1.0 / 24.0),
                _ => 1.0,
            };
            let per_key_day = s.counted as f64 / span_days / s.keys.len().max(1) as f64;
            scenarios.push(ScenarioReport {
                name: name.to_owned(),
                attack: s.attack,
                detected,
                time_to_detect_s,
                requests_before_detection: before,
                requests: s.requests,
                attack_requests: s.counted,
                detections: s.detections,
                first_decision: s.first.as_ref().map(|f| f.decision.clone()),
                first_reason: s.first.as_ref().map(|f| f.reason.clone()),
                keys: s.keys.len(),
                flagged_keys,
                flagged_outside_attack: s.flagged_outside_attack,
                errors: s.errors,
                requests_per_key_day: per_key_day,
                decisions: s.decisions,
                max_anomaly_score: s.max_score,
            });
        }
        scenarios.sort_by_key(|s| (!s.attack, s.name.clone()));
        let attacks = scenarios.iter().filter(|s| s.attack).count();
        let attacks_detected = scenarios.iter().filter(|s| s.attack && s.detected).count();
        let normal_keys = tally.keys.len();
        let flagged_normal_keys: Vec<FlaggedKey> = tally
            .keys
            .iter()
            .filter(|(_, k)| k.flagged > 0)
            .map(|(key, k)| FlaggedKey {
                key: key.clone(),
                scenario: k.scenario.to_owned(),
                requests: k.requests,
                flagged_requests: k.flagged,
                blocked: k.refused > 0,
                blocked_requests: k.refused,
                first: k
                    .first
                    .as_ref()
                    .map(|f| format!("{} {}", f.decision, f.reason))
                    .unwrap_or_default(),
            })
            .collect();
        let fp = flagged_normal_keys.len();
        let mut volumes: Vec<f64> = tally
            .keys
            .values()
            .map(|k| k.requests as f64 / info.simulated_days.max(1e-9))
            .collect();
        volumes.sort_by(f64::total_cmp);
        let median = volumes.get(volumes.len() / 2).copied().unwrap_or(0.0);
        let mut peaks: Vec<f64> = tally.keys.values().map(|k| k.max_score).collect();
        peaks.sort_by(f64::total_cmp);
        let q = |p: f64| {
            peaks
                .get(((peaks.len() as f64 * p) as usize).min(peaks.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        let normal_key_max_score_quantiles = [q(0.5), q(0.9), q(0.99), q(1.0)];
        Self {
            false_positive_rate: ratio(fp, normal_keys, 0.0),
            precision: ratio(attacks_detected, attacks_detected + fp, 0.0),
            recall: ratio(attacks_detected, attacks, 1.0),
            scenarios,
            normal_keys,
            flagged_normal_keys,
            normal_key_requests_per_day_median: median,
            normal_key_max_score_quantiles,
            attacks_detected,
            attacks,
            requests: tally.requests,
            errors: tally.errors,
            first_error: tally.first_error,
            requests_per_s: ratio(tally.requests as usize, 1, 0.0) / info.wall_time_s.max(1e-9),
            driver: info.driver,
            seed: info.seed,
            simulated_days: info.simulated_days,
            wall_time_s: info.wall_time_s,
        }
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<22} {:>6} {:>9} {:>14} {:>10} {:>10} {:>9} {:>9} {:>6}  {}\n",
            "scenario",
            "attack",
            "detected",
            "time to detect",
            "before",
            "requests",
            "/key/day",
            "keys",
            "score",
            "first detection"
        ));
        for s in &self.scenarios {
            let ttd = s
                .time_to_detect_s
                .map_or_else(|| "-".to_owned(), human_duration);
            let keys = if s.attack {
                s.keys.to_string()
            } else {
                format!("{}/{}", s.flagged_keys, s.keys)
            };
            let first = match (&s.first_decision, &s.first_reason) {
                (Some(d), Some(r)) => format!("{d} {r}"),
                _ => String::new(),
            };
            let row = format!(
                "{:<22} {:>6} {:>9} {:>14} {:>10} {:>10} {:>9.0} {:>9} {:>6.3}  {}",
                s.name,
                if s.attack { "yes" } else { "no" },
                if s.detected { "YES" } else { "no" },
                ttd,
                s.requests_before_detection,
                s.requests,
                s.requests_per_key_day,
                keys,
                s.max_anomaly_score,
                first
            );
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "\nattacks detected {}/{}  recall {:.3}  precision {:.3}  false-positive rate {:.4} ({} of {} normal keys flagged)\n",
            self.attacks_detected,
            self.attacks,
            self.recall,
            self.precision,
            self.false_positive_rate,
            self.flagged_normal_keys.len(),
            self.normal_keys
        ));
        for k in self.flagged_normal_keys.iter().take(20) {
            out.push_str(&format!(
                "  {} {} ({}): {} of {} requests ({} refused), first: {}\n",
                if k.blocked { "blocked" } else { "flagged" },
                k.key,
                k.scenario,
                k.flagged_requests,
                k.requests,
                k.blocked_requests,
                k.first
            ));
        }
        out.push_str(&format!(
            "a normal key makes {:.0} requests per simulated day (median)\n",
            self.normal_key_requests_per_day_median
        ));
        let [p50, p90, p99, max] = self.normal_key_max_score_quantiles;
        out.push_str(&format!(
            "normal keys' highest anomaly score: p50 {p50:.3}, p90 {p90:.3}, p99 {p99:.3}, max {max:.3} (score: highest on the scenario's requests)\n"
        ));
        out.push_str(&format!(
            "{} requests ({} errors) in {:.1} s wall time ({:.0} requests/s), {:.1} simulated days, driver {}, seed {}\n",
            self.requests,
            self.errors,
            self.wall_time_s,
            self.requests_per_s,
            self.simulated_days,
            self.driver,
            self.seed
        ));
        if let Some(e) = &self.first_error {
            out.push_str(&format!("first error: {e}\n"));
        }
        out
    }
}

/// `42 s`, `3.5 min`, `2.1 h`, `1.3 d`.
pub fn human_duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7_200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3_600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        request::{Channel, SimRequest},
        tally::Verdict,
    };

    fn req(scenario: &'static str, attack: bool, key: &str, ts: i64) -> SimRequest {
        SimRequest {
            ts_ms: ts,
            scenario,
            attack_scenario: attack,
            malicious: attack,
            actor: 0,
            key_id: key.into(),
            tenant: "t".into(),
            tier: "standard",
            client_ip: "10.0.0.1".into(),
            user_agent: "ua".into(),
            method: "GET",
            path: "/".into(),
            query: vec![],
            status: 200,
            channel: Channel::Keyed,
        }
    }

    fn v(detected: bool) -> Verdict {
        Verdict {
            detected,
            decision: if detected { "throttle" } else { "allow" }.into(),
            reason: "r".into(),
            anomaly_score: 0.0,
        }
    }

    #[test]
    fn counts_time_to_detection_and_rates() {
        let mut t = Tally::default();
        for i in 0..10 {
            t.observe(&req("burst", true, "a", 1_000 * i), Ok(&v(i >= 4)));
            t.observe(&req("scraper", true, "s", 1_000 * i), Ok(&v(false)));
        }
        for k in 0..4 {
            let key = format!("n{k}");
            t.observe(&req("normal_interactive", false, &key, 5), Ok(&v(k == 0)));
        }
        let r = Report::build(
            t,
            RunInfo {
                driver: "test".into(),
                seed: 1,
                simulated_days: 1.0,
                wall_time_s: 1.0,
            },
        );
        let burst = r.scenarios.iter().find(|s| s.name == "burst").unwrap();
        assert!(burst.detected);
        assert_eq!(burst.time_to_detect_s, Some(4.0));
        assert_eq!(burst.requests_before_detection, 4);
        let scraper = r.scenarios.iter().find(|s| s.name == "scraper").unwrap();
        assert!(!scraper.detected && scraper.time_to_detect_s.is_none());
        assert_eq!(scraper.requests_before_detection, 10);
        assert_eq!((r.attacks, r.attacks_detected, r.normal_keys), (2, 1, 4));
        assert!((r.recall - 0.5).abs() < 1e-9);
        assert!((r.precision - 0.5).abs() < 1e-9);
        assert!((r.false_positive_rate - 0.25).abs() < 1e-9);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["scenarios"][0]["time_to_detect_s"].is_number());
        assert!(json["false_positive_rate"].is_number());
    }
}
