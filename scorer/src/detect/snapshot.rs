//! A key's detection state as bytes, so it outlives the process that built it (Redis keeps
//! it, see [`super::state`]). Pure: values in, bytes out, and back.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "PKS\0" (Palisade key state)
//! 4       2     format version, little endian (VERSION)
//! 6       4     CRC-32 of the body, little endian
//! 10      ..    body: bincode 2 (standard configuration), at most MAX_BYTES in all
//! ```
//!
//! A snapshot of another version, with a bad checksum, that does not decode, that is larger
//! than [`MAX_BYTES`], or that leaves bytes over is refused with a [`SnapshotError`]; the
//! caller counts it and starts the key afresh. Decoding never allocates more than
//! [`MAX_BYTES`] (bincode's limit), whatever lengths a corrupt body claims.

use bincode::{Decode, Encode};

/// Bumped whenever an encoded type changes shape (the `layout_is_pinned` test in
/// `detector.rs` fails when one does).
pub const VERSION: u16 = 2;

/// Largest snapshot written or read. A key's state is bounded by its sketches' caps (about
/// 40 KiB in memory at the very most); encoded, with sparse HyperLogLogs, a typical key takes a
/// few KiB.
pub const MAX_BYTES: usize = 64 * 1024;

const MAGIC: [u8; 4] = *b"PKS\0";
const HEADER: usize = 10;

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Too short, or not starting with the magic bytes.
    #[error("not a key-state snapshot")]
    NotASnapshot,
    /// Written by a scorer with another format.
    #[error("key-state snapshot version {found}, this scorer reads {VERSION}")]
    Version {
        /// The version found.
        found: u16,
    },
    /// Larger than [`MAX_BYTES`].
    #[error("key-state snapshot of {0} bytes, at most {MAX_BYTES}")]
    TooLarge(usize),
    /// The body's checksum does not match.
    #[error("key-state snapshot checksum mismatch")]
    Checksum,
    /// The body does not decode.
    #[error("key-state snapshot body: {0}")]
    Decode(#[source] bincode::error::DecodeError),
    /// Bytes left over after the body.
    #[error("key-state snapshot has {0} bytes after its body")]
    Trailing(usize),
    /// It decoded, but holds values no scorer writes (out-of-range times, broken caps).
    #[error("key-state snapshot holds implausible values")]
    Implausible,
    /// The state could not be encoded (larger than [`MAX_BYTES`]).
    #[error("key-state snapshot encoding: {0}")]
    Encode(#[source] bincode::error::EncodeError),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BYTES>()
}

/// `state` as a snapshot.
pub fn encode<T: Encode>(state: &T) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::with_capacity(2048);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    bincode::encode_into_std_write(state, &mut out, config()).map_err(SnapshotError::Encode)?;
    if out.len() > MAX_BYTES {
        return Err(SnapshotError::TooLarge(out.len()));
    }
    let crc = crc32fast::hash(&out[HEADER..]);
    out[6..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The state in `bytes`. The caller still checks the decoded values are plausible.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let found = u16::from_le_bytes([bytes[4], bytes[5]]);
    if found != VERSION {
        return Err(SnapshotError::Version { found });
    }
    if bytes.len() > MAX_BYTES {
        return Err(SnapshotError::TooLarge(bytes.len()));
    }
    let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let body = &bytes[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err(SnapshotError::Checksum);
    }
    let (state, read) =
        bincode::decode_from_slice(body, config()).map_err(SnapshotError::Decode)?;
    if read != body.len() {
        return Err(SnapshotError::Trailing(body.len() - read));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::detect::features::{Event, KeyFeatures, Outcome};

    fn features(n: i64) -> KeyFeatures {
        let mut k = KeyFeatures::default();
        for i in 0..n {
            let path = format!("/api/orders/{}", 1_000 + i % 37);
            let ip = format!("10.0.0.{}", i % 5);
            k.observe(&Event {
                ts_ms: 1_700_000_000_000 + i * 7_000,
                path: &path,
                query: &[("page", "2"), ("q", "shoes")],
                client_ip: &ip,
                user_agent: "app/1",
                outcome: if i % 9 == 0 {
                    Outcome::Throttled
                } else {
                    Outcome::Allowed
                },
            });
        }
        k
    }

    #[test]
    fn features_round_trip_to_the_same_vector() {
        let mut k = features(500);
        let bytes = encode(&k).unwrap();
        let mut back: KeyFeatures = decode(&bytes).unwrap();
        assert!(back.is_plausible());
        let now = 1_700_000_000_000 + 600 * 7_000;
        let (a, b) = (k.vector(now), back.vector(now));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                "feature {i}: {x} vs {y}"
            );
        }
        // Compact: sparse sketches keep an ordinary key's state to a few KiB.
        assert!(bytes.len() < 8 * 1024, "{} bytes", bytes.len());
    }

    #[test]
    fn foreign_corrupt_and_truncated_snapshots_are_refused() {
        let bytes = encode(&features(50)).unwrap();
        let mut other = bytes.clone();
        other[4] = other[4].wrapping_add(1);
        assert!(matches!(
            decode::<KeyFeatures>(&other),
            Err(SnapshotError::Version { .. })
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            decode::<KeyFeatures>(&flipped),
            Err(SnapshotError::Checksum)
        ));
        assert!(matches!(
            decode::<KeyFeatures>(b"garbage"),
            Err(SnapshotError::NotASnapshot)
        ));
        // Truncated with a fixed-up checksum: the body itself is short.
        let mut cut = bytes[..bytes.len() - 20].to_vec();
        let crc = crc32fast::hash(&cut[HEADER..]);
        cut[6..HEADER].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode::<KeyFeatures>(&cut),
            Err(SnapshotError::Decode(_))
        ));
    }

    /// Wraps `body` in a valid header, so the body reaches bincode and the plausibility check.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the body (checksum made valid), decoding answers, never panics, and
        /// what decodes and passes the check can be used.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(mut k) = decode::<KeyFeatures>(&framed(&body))
                && k.is_plausible()
            {
                let _ = k.vector(1_700_000_000_000);
            }
        }

        /// A real snapshot with bytes of its body changed: refused or usable, never a panic.
        #[test]
        fn mutated_snapshots_never_panic(at in any::<prop::sample::Index>(), x in any::<u8>()) {
            let good = encode(&features(80)).unwrap();
            let mut body = good[HEADER..].to_vec();
            let i = at.index(body.len());
            body[i] ^= x | 1;
            if let Ok(mut k) = decode::<KeyFeatures>(&framed(&body))
                && k.is_plausible()
            {
                k.observe(&Event {
                    ts_ms: 1_700_000_100_000,
                    path: "/api/orders/7",
                    query: &[],
                    client_ip: "10.0.0.9",
                    user_agent: "app/1",
                    outcome: Outcome::Allowed,
                });
                let _ = k.vector(1_700_000_100_000);
            }
        }
    }
}
