//! The alert and the bodies receivers get (pure: an alert in, bytes out).

use palisade_proto::v1::Decision;
use serde::Serialize;

use super::config::AlertFormat;

/// How far the model's response to a key went; ordered flag < throttle < block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Let through, the backend told in a header.
    Flag,
    /// Throttled (or would have been, in shadow mode).
    Throttle,
    /// Blocked (or would have been, in shadow mode).
    Block,
}

impl AlertLevel {
    /// `flag`, `throttle` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Throttle => "throttle",
            Self::Block => "block",
        }
    }

    /// The level of a model decision and whether it was enforced; `None` for allow and
    /// unspecified, which are not alerts.
    pub fn from_decision(decision: Decision) -> Option<(Self, bool)> {
        match decision {
            Decision::Flag => Some((Self::Flag, true)),
            Decision::Throttle => Some((Self::Throttle, true)),
            Decision::Block => Some((Self::Block, true)),
            Decision::ShadowThrottle => Some((Self::Throttle, false)),
            Decision::ShadowBlock => Some((Self::Block, false)),
            Decision::Allow | Decision::Unspecified => None,
        }
    }
}

/// A key turned anomalous. Carries the key *id* (never a raw API key) and nothing secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The key's id, as the filter reported it.
    pub key_id: String,
    /// The key's tier.
    pub tier: String,
    /// How far the response went.
    pub level: AlertLevel,
    /// The anomaly score of the triggering request, `(0, 1]`.
    pub score: f64,
    /// The key's decayed risk when the alert fired, `(0, 1]`.
    pub risk: f64,
    /// The model that scored it.
    pub model_version: String,
    /// Why, for a person (`rps_1m=40 (80%), ...`).
    pub explanation: String,
    /// The request that triggered it (its `X-Request-ID`).
    pub request_id: String,
    /// Event time, ms since the Unix epoch (the request's clock, so replays dedup correctly).
    pub ts_ms: i64,
    /// False in shadow mode: the level was reported, not enforced.
    pub enforced: bool,
}

/// The fields every format carries, in this order.
#[derive(Serialize)]
struct Fields<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    key_id: &'a str,
    tier: &'a str,
    level: AlertLevel,
    score: f64,
    risk: f64,
    model_version: &'a str,
    explanation: &'a str,
    request_id: &'a str,
    time: String,
    enforced: bool,
}

#[derive(Serialize)]
struct Hec<'a> {
    time: f64,
    sourcetype: &'static str,
    source: &'static str,
    event: Fields<'a>,
}

/// `type` of every alert.
pub const ALERT_TYPE: &str = "palisade.anomaly";
/// Splunk `sourcetype` of every alert.
pub const HEC_SOURCETYPE: &str = "palisade:anomaly";
/// Splunk `source` of every alert.
pub const HEC_SOURCE: &str = "palisade-scorer";

impl Alert {
    fn fields(&self) -> Fields<'_> {
        Fields {
            kind: ALERT_TYPE,
            key_id: &self.key_id,
            tier: &self.tier,
            level: self.level,
            score: self.score,
            risk: self.risk,
            model_version: &self.model_version,
            explanation: &self.explanation,
            request_id: &self.request_id,
            time: rfc3339_ms(self.ts_ms),
            enforced: self.enforced,
        }
    }

    /// The request body in `format`. Non-finite scores become `null`.
    pub fn body(&self, format: AlertFormat) -> Vec<u8> {
        let encoded = match format {
            AlertFormat::Json => serde_json::to_vec(&self.fields()),
            AlertFormat::SplunkHec => serde_json::to_vec(&Hec {
                time: self.ts_ms as f64 / 1_000.0,
                sourcetype: HEC_SOURCETYPE,
                source: HEC_SOURCE,
                event: self.fields(),
            }),
        };
        // Plain structs of strings, numbers and bools with string keys always serialize.
        encoded.unwrap_or_default()
    }
}

/// `2023-11-14T22:13:20.123Z` (UTC, milliseconds) for ms since the Unix epoch.
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1_000);
    let ms = ts_ms.rem_euclid(1_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert(key_id: &str, ts_ms: i64) -> Alert {
        Alert {
            key_id: key_id.to_owned(),
            tier: "standard".to_owned(),
            level: AlertLevel::Block,
            score: 0.875,
            risk: 0.8125,
            model_version: "if-2026-11-01".to_owned(),
            explanation: "id_sequential_ratio=1 (64%), \"quoted\"".to_owned(),
            request_id: "7f1c0f6e-1b7a-4c1e-9d1e-000000000001".to_owned(),
            ts_ms,
            enforced: false,
        }
    }

    #[test]
    fn rfc3339_matches_python_datetime() {
        // python3: datetime(1970,1,1,tzinfo=utc) + timedelta(milliseconds=ms)
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (1_709_208_000_500, "2024-02-29T12:00:00.500Z"),
        ] {
            assert_eq!(rfc3339_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn json_body_has_every_field_in_order() {
        let body = alert("alice", 1_700_000_000_123).body(AlertFormat::Json);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            r#"{"type":"palisade.anomaly","key_id":"alice","tier":"standard","level":"block","score":0.875,"risk":0.8125,"model_version":"if-2026-11-01","explanation":"id_sequential_ratio=1 (64%), \"quoted\"","request_id":"7f1c0f6e-1b7a-4c1e-9d1e-000000000001","time":"2023-11-14T22:13:20.123Z","enforced":false}"#
        );
    }

    #[test]
    fn splunk_body_wraps_the_same_event() {
        let a = alert("alice", 1_700_000_000_123);
        let v: serde_json::Value = serde_json::from_slice(&a.body(AlertFormat::SplunkHec)).unwrap();
        assert_eq!(v["time"].as_f64(), Some(1_700_000_000.123));
        assert_eq!(v["sourcetype"], "palisade:anomaly");
        assert_eq!(v["source"], "palisade-scorer");
        let plain: serde_json::Value = serde_json::from_slice(&a.body(AlertFormat::Json)).unwrap();
        assert_eq!(v["event"], plain);
        assert_eq!(v.as_object().map(|o| o.len()), Some(4));
    }

    #[test]
    fn non_finite_scores_become_null() {
        let mut a = alert("bob", 0);
        a.score = f64::NAN;
        let v: serde_json::Value = serde_json::from_slice(&a.body(AlertFormat::Json)).unwrap();
        assert!(v["score"].is_null());
    }

    #[test]
    fn decisions_map_to_levels() {
        assert_eq!(AlertLevel::from_decision(Decision::Allow), None);
        assert_eq!(
            AlertLevel::from_decision(Decision::ShadowBlock),
            Some((AlertLevel::Block, false))
        );
        assert_eq!(
            AlertLevel::from_decision(Decision::Throttle),
            Some((AlertLevel::Throttle, true))
        );
        assert_eq!(AlertLevel::Flag.as_str(), "flag");
    }
}
