//! A key's model risk, decaying over time, and what it means for a request: the graduated
//! response (allow, flag, throttle, block) per tier, with shadow mode for the model on by
//! default. Pure: scores and clock values in, a decision out.

use palisade_proto::v1::Decision;
use serde::Deserialize;

/// Risk thresholds of one tier, on the anomaly-score scale `(0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierThresholds {
    /// At or above: the backend is told in a header.
    pub flag: f64,
    /// At or above: throttled.
    pub throttle: f64,
    /// At or above: blocked.
    pub block: f64,
}

impl Default for TierThresholds {
    fn default() -> Self {
        Self {
            flag: 0.72,
            throttle: 0.78,
            block: 0.85,
        }
    }
}

impl TierThresholds {
    /// Checks `0 < flag <= throttle <= block <= 1`, naming the offending key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        let ordered = 0.0 < self.flag
            && self.flag <= self.throttle
            && self.throttle <= self.block
            && self.block <= 1.0;
        if ordered {
            Ok(())
        } else {
            Err(format!(
                "{prefix}: thresholds must satisfy 0 < flag <= throttle <= block <= 1"
            ))
        }
    }
}

/// A key's risk: the highest recent anomaly score, decaying towards 0 with `half_life_ms`, so
/// one bad burst keeps a key under watch for a while and good behaviour earns its way back.
#[derive(Debug, Clone, Copy, Default, PartialEq, bincode::Encode, bincode::Decode)]
pub struct Risk {
    value: f64,
    at_ms: i64,
}

impl Risk {
    /// Folds in a fresh anomaly `score` at `now_ms`.
    pub fn update(&mut self, now_ms: i64, half_life_ms: f64, score: f64) {
        self.value = self.get(now_ms, half_life_ms).max(score.clamp(0.0, 1.0));
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// The risk at `now_ms`.
    pub fn get(&self, now_ms: i64, half_life_ms: f64) -> f64 {
        let dt = (now_ms - self.at_ms).max(0) as f64;
        self.value * (-dt / half_life_ms).exp2()
    }

    /// A finite value at a plausible time (checked on restored state).
    pub fn is_plausible(&self) -> bool {
        self.value.is_finite() && super::sketch::plausible_ms(self.at_ms)
    }
}

/// The model's say on a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVerdict {
    /// What the filter should do.
    pub decision: Decision,
    /// Why, for a person: the level and the explanation it was given.
    pub reason: String,
}

/// The decision for a key at `risk` under `thresholds`. With `enforce` off (shadow mode, the
/// default) a would-be throttle or block is reported as `SHADOW_BLOCK` / `SHADOW_THROTTLE`
/// and let through; flagging is harmless and always applies.
pub fn decide(
    risk: f64,
    thresholds: &TierThresholds,
    enforce: bool,
    explanation: &str,
) -> ModelVerdict {
    let (decision, level) = if risk >= thresholds.block {
        let d = if enforce {
            Decision::Block
        } else {
            Decision::ShadowBlock
        };
        (d, "block")
    } else if risk >= thresholds.throttle {
        let d = if enforce {
            Decision::Throttle
        } else {
            Decision::ShadowThrottle
        };
        (d, "throttle")
    } else if risk >= thresholds.flag {
        (Decision::Flag, "flag")
    } else {
        return ModelVerdict {
            decision: Decision::Allow,
            reason: "ok".into(),
        };
    };
    ModelVerdict {
        decision,
        reason: format!("anomaly:{level} risk={risk:.2}: {explanation}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: f64 = 3_600_000.0;

    #[test]
    fn risk_keeps_the_peak_and_halves_per_half_life() {
        let mut r = Risk::default();
        r.update(0, HOUR, 0.9);
        r.update(1_000, HOUR, 0.3);
        assert!((r.get(1_000, HOUR) - 0.9 * (-1_000.0 / HOUR).exp2()).abs() < 1e-12);
        assert!((r.get(3_600_000, HOUR) - 0.45).abs() < 1e-9);
        r.update(7_200_000, HOUR, 0.5);
        assert_eq!(r.get(7_200_000, HOUR), 0.5);
    }

    #[test]
    fn graduated_response_and_shadow_mode() {
        let t = TierThresholds {
            flag: 0.6,
            throttle: 0.7,
            block: 0.8,
        };
        let d = |risk, enforce| decide(risk, &t, enforce, "rps_1m=40 (80%)").decision;
        assert_eq!(d(0.5, true), Decision::Allow);
        assert_eq!(d(0.65, false), Decision::Flag);
        assert_eq!(d(0.75, true), Decision::Throttle);
        assert_eq!(d(0.75, false), Decision::ShadowThrottle);
        assert_eq!(d(0.85, true), Decision::Block);
        assert_eq!(d(0.85, false), Decision::ShadowBlock);
        let v = decide(0.85, &t, false, "id_sequential_ratio=1 (64%)");
        assert_eq!(
            v.reason,
            "anomaly:block risk=0.85: id_sequential_ratio=1 (64%)"
        );
    }

    #[test]
    fn thresholds_must_be_ordered() {
        assert!(TierThresholds::default().validate("x").is_ok());
        let bad = TierThresholds {
            flag: 0.9,
            throttle: 0.7,
            block: 0.8,
        };
        assert_eq!(
            bad.validate("detect.tiers.free").unwrap_err(),
            "detect.tiers.free: thresholds must satisfy 0 < flag <= throttle <= block <= 1"
        );
    }
}
