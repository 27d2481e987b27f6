//! Request ids: UUIDv4 from host randomness, a clock-and-counter UUIDv8 when randomness is
//! unavailable, and the rule for trusting a client's id.

/// Longest request id accepted from a client (the gateway token's limit).
pub const MAX_LEN: usize = 128;

/// Whether a client-sent request id may be kept: 1..=128 visible ASCII characters.
pub fn is_acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A random (version 4) UUID from 16 random bytes.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format_uuid(&bytes)
}

/// A fallback id when the host has no randomness: a custom (version 8) UUID from the clock
/// and a per-worker counter. Unique per worker, not unguessable.
pub fn uuid_v8_fallback(now_nanos: u64, counter: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&now_nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&counter.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format_uuid(&bytes)
}

fn format_uuid(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn assert_uuid_shape(id: &str, version: char) {
        assert_eq!(id.len(), 36, "{id}");
        for (i, c) in id.chars().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{id}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{id}");
            }
        }
        assert_eq!(id.as_bytes()[14] as char, version, "{id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
    }

    #[test]
    fn v4_format() {
        assert_uuid_shape(&uuid_v4([0xff; 16]), '4');
        assert_uuid_shape(&uuid_v4([0x00; 16]), '4');
        assert_eq!(
            uuid_v4([
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
                0xde, 0xf0
            ]),
            "12345678-9abc-4ef0-9234-56789abcdef0"
        );
    }

    #[test]
    fn fallback_format_and_uniqueness() {
        let a = uuid_v8_fallback(1_700_000_000_000_000_000, 1);
        let b = uuid_v8_fallback(1_700_000_000_000_000_000, 2);
        assert_uuid_shape(&a, '8');
        assert_ne!(a, b);
        assert!(is_acceptable(a.as_bytes()));
    }

    #[test]
    fn acceptable_client_ids() {
        assert!(is_acceptable(b"abc-123"));
        assert!(is_acceptable(&[b'a'; 128]));
        assert!(!is_acceptable(&[b'a'; 129]));
        assert!(!is_acceptable(b""));
        assert!(!is_acceptable(b"has space"));
        assert!(!is_acceptable(b"tab\t"));
        assert!(!is_acceptable("caf\u{e9}".as_bytes()));
    }
}
