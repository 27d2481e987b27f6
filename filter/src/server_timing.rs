//! Reads the backend's own processing time from its `Server-Timing: app;dur=<ms>` response
//! header (RFC-style metric list), for the request's outcome report. Pure, never panics.

/// The metric the backend names its processing time.
pub const METRIC: &str = "app";

/// Longest duration accepted, µs (an hour): anything larger is not a measurement.
const MAX_US: f64 = 3_600_000_000.0;

/// The `dur` of the `app` metric in `header`, in µs; `None` when absent or malformed.
pub fn app_duration_us(header: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(header).ok()?;
    text.split(',').find_map(|metric| {
        let mut parts = metric.split(';').map(str::trim);
        if parts.next()? != METRIC {
            return None;
        }
        parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if k.trim() != "dur" {
                return None;
            }
            let ms: f64 = v.trim().trim_matches('"').parse().ok()?;
            let us = ms * 1_000.0;
            (us.is_finite() && (0.0..=MAX_US).contains(&us)).then_some(us.round() as u64)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_app_metric_among_others() {
        assert_eq!(app_duration_us(b"app;dur=1.234"), Some(1_234));
        assert_eq!(
            app_duration_us(b"db;dur=5, app;desc=\"x\";dur=\"2\""),
            Some(2_000)
        );
        assert_eq!(app_duration_us(b"cache;dur=3"), None);
        assert_eq!(app_duration_us(b"app;dur=-1"), None);
        assert_eq!(app_duration_us(b"app;dur=NaN"), None);
        assert_eq!(app_duration_us(b"app;dur=1e300"), None);
        assert_eq!(app_duration_us(b"app"), None);
        assert_eq!(app_duration_us(b"\xff\xfe"), None);
    }
}
