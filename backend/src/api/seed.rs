//! Deterministic pseudo-data: every field of a demo record is a pure function of its id, so
//! the API looks realistic and stays reproducible without a database.

/// SplitMix64's finaliser: a well-mixed 64-bit value for each input.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed for field number `field` of record `id` in table `table`.
pub fn seed(table: u64, id: u64, field: u64) -> u64 {
    mix(mix(table ^ mix(id)) ^ field)
}

/// One of `items`, chosen by `seed`.
pub fn pick<T: Copy>(items: &[T], seed: u64) -> Option<T> {
    let len = u64::try_from(items.len()).ok()?;
    let index = usize::try_from(seed.checked_rem(len)?).ok()?;
    items.get(index).copied()
}

/// A value in `lo..=hi` chosen by `seed`.
pub fn between(lo: u64, hi: u64, seed: u64) -> u64 {
    lo + seed % (hi - lo + 1)
}

/// An RFC 3339 UTC timestamp in 2024-2025 chosen by `seed`.
pub fn timestamp(seed: u64) -> String {
    let year = between(2024, 2025, seed);
    let month = between(1, 12, mix(seed));
    let day = between(1, 28, mix(seed ^ 1));
    let secs = between(0, 86_399, mix(seed ^ 2));
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        assert_eq!(seed(1, 2, 3), seed(1, 2, 3));
        assert_ne!(seed(1, 2, 3), seed(1, 3, 3));
        assert_ne!(seed(1, 2, 3), seed(2, 2, 3));
        assert_eq!(pick::<u8>(&[], 5), None);
        assert_eq!(pick(&[7, 8], 5), Some(8));
    }

    #[test]
    fn timestamps_are_well_formed() {
        for s in 0..1000 {
            let t = timestamp(mix(s));
            assert_eq!(t.len(), 20, "{t}");
            assert!(t.starts_with("2024-") || t.starts_with("2025-"));
            assert!(t.ends_with('Z'));
        }
    }
}
