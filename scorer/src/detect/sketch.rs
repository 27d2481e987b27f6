//! Bounded-memory summaries the per-key features are built from: exponentially decayed
//! counters, a small HyperLogLog, and a capped map that evicts its weakest entry.
//!
//! All of them encode with bincode (a key's state is snapshotted to Redis, see
//! [`super::snapshot`]); a decoded value is only used after its `is_plausible` check, so a
//! crafted or corrupt snapshot cannot make later arithmetic overflow or index out of bounds.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, DefaultHasher},
};

use bincode::{
    BorrowDecode, Decode, Encode,
    de::{BorrowDecoder, Decoder},
    enc::Encoder,
    error::{DecodeError, EncodeError},
};

/// Largest clock value (ms, either sign) a restored state may carry: far beyond any real
/// timestamp, far from where `now - t` could overflow.
pub const MAX_PLAUSIBLE_MS: i64 = 1 << 52;

/// True when `t` is a clock value a restored state may hold.
pub fn plausible_ms(t: i64) -> bool {
    t.unsigned_abs() <= MAX_PLAUSIBLE_MS as u64
}

/// A sum that decays with time constant `tau_ms`: after `tau_ms` without additions it is down
/// to `1/e`. For a steady stream it approximates the amount added over the last `tau_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Encode, Decode)]
pub struct Decayed {
    value: f64,
    at_ms: i64,
}

impl Decayed {
    /// Adds `x` at `now_ms` (times going backwards are treated as `at_ms`).
    pub fn add(&mut self, now_ms: i64, tau_ms: f64, x: f64) {
        self.value = self.get(now_ms, tau_ms) + x;
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// The value at `now_ms`.
    pub fn get(&self, now_ms: i64, tau_ms: f64) -> f64 {
        let dt = (now_ms - self.at_ms).max(0) as f64;
        self.value * (-dt / tau_ms).exp()
    }

    /// A finite value at a plausible time (checked on restored state).
    pub fn is_plausible(&self) -> bool {
        self.value.is_finite() && plausible_ms(self.at_ms)
    }
}

/// Stable 64-bit hash of bytes (FNV-1a, then the splitmix64 finaliser to spread the bits
/// HyperLogLog reads).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// HyperLogLog with `2^P` one-byte registers: a distinct count in `2^P` bytes, standard error
/// about `1.04 / sqrt(2^P)` (6.5 % for `P = 8`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hll<const P: u32> {
    registers: Vec<u8>,
}

impl<const P: u32> Default for Hll<P> {
    fn default() -> Self {
        Self {
            registers: vec![0; 1 << P],
        }
    }
}

impl<const P: u32> Hll<P> {
    /// Adds an item by its bytes.
    pub fn insert(&mut self, item: &[u8]) {
        let h = hash64(item);
        let index = (h >> (64 - P)) as usize;
        let rank = ((h << P) | (1 << (P - 1))).leading_zeros() as u8 + 1;
        self.registers[index] = self.registers[index].max(rank);
    }

    /// Estimated number of distinct items (with the small-range linear-counting correction).
    pub fn count(&self) -> f64 {
        let m = self.registers.len() as f64;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        let sum: f64 = self.registers.iter().map(|r| (-f64::from(*r)).exp2()).sum();
        let alpha = match self.registers.len() {
            16 => 0.673,
            32 => 0.697,
            64 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// The union of `self` and `other`.
    pub fn union(&self, other: &Self) -> Self {
        Self {
            registers: self
                .registers
                .iter()
                .zip(&other.registers)
                .map(|(a, b)| *a.max(b))
                .collect(),
        }
    }
}

/// Registers set, sparse: most keys see a handful of addresses and agents, so most
/// registers are 0 and `(index, value)` pairs are far smaller than the dense array.
const SPARSE: u8 = 1;
const DENSE: u8 = 0;

impl<const P: u32> Encode for Hll<P> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        let set: Vec<(u16, u8)> = self
            .registers
            .iter()
            .enumerate()
            .filter(|(_, r)| **r != 0)
            .map(|(i, r)| (i as u16, *r))
            .collect();
        if set.len() * 3 < self.registers.len() {
            SPARSE.encode(encoder)?;
            set.encode(encoder)
        } else {
            DENSE.encode(encoder)?;
            self.registers.encode(encoder)
        }
    }
}

impl<Context, const P: u32> Decode<Context> for Hll<P> {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let n = 1usize << P;
        let registers = match u8::decode(decoder)? {
            DENSE => Vec::<u8>::decode(decoder)?,
            SPARSE => {
                let mut registers = vec![0; n];
                for (i, r) in Vec::<(u16, u8)>::decode(decoder)? {
                    *registers.get_mut(usize::from(i)).ok_or_else(|| {
                        DecodeError::OtherString(format!("hll register {i} of {n}"))
                    })? = r;
                }
                registers
            }
            other => {
                return Err(DecodeError::OtherString(format!("hll encoding {other}")));
            }
        };
        if registers.len() != n {
            return Err(DecodeError::OtherString(format!(
                "hll of {} registers, expected {n}",
                registers.len()
            )));
        }
        Ok(Self { registers })
    }
}

impl<'de, Context, const P: u32> BorrowDecode<'de, Context> for Hll<P> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, DecodeError> {
        Self::decode(decoder)
    }
}

/// A map of at most `cap` entries; inserting into a full map first evicts the entry `weight`
/// ranks lowest. Hashed with fixed keys, so iteration order (and with it float sums and
/// eviction among equal weights) is the same on every run: features stay a pure function of
/// the requests. A few dozen entries leave nothing for hash flooding to gain.
#[derive(Debug, Clone, Encode, Decode)]
pub struct CappedMap<V> {
    cap: usize,
    entries: HashMap<String, V, BuildHasherDefault<DefaultHasher>>,
}

impl<V> CappedMap<V> {
    /// An empty map holding at most `cap` (at least 1) entries.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            entries: HashMap::default(),
        }
    }

    /// The entry for `key`, created with `new` (after evicting the lowest by `weight` when full).
    pub fn entry(
        &mut self,
        key: &str,
        new: impl FnOnce() -> V,
        weight: impl Fn(&V) -> f64,
    ) -> &mut V {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.cap {
                let weakest = self
                    .entries
                    .iter()
                    .min_by(|a, b| weight(a.1).total_cmp(&weight(b.1)))
                    .map(|(k, _)| k.clone());
                if let Some(k) = weakest {
                    self.entries.remove(&k);
                }
            }
            self.entries.insert(key.to_owned(), new());
        }
        self.entries.get_mut(key).unwrap_or_else(|| unreachable!())
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Capped at `cap`, within it, and every value passes `check` (for restored state).
    pub fn is_plausible(&self, cap: usize, check: impl Fn(&V) -> bool) -> bool {
        self.cap == cap && self.entries.len() <= cap && self.entries.values().all(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decayed_counter_falls_by_e_per_tau() {
        let mut c = Decayed::default();
        c.add(0, 1000.0, 10.0);
        assert_eq!(c.get(0, 1000.0), 10.0);
        assert!((c.get(1000, 1000.0) - 10.0 / std::f64::consts::E).abs() < 1e-9);
        c.add(1000, 1000.0, 1.0);
        assert!((c.get(1000, 1000.0) - (10.0 / std::f64::consts::E + 1.0)).abs() < 1e-9);
    }

    #[test]
    fn hll_counts_within_its_error() {
        let mut h = Hll::<8>::default();
        for i in 0..10_000u32 {
            h.insert(&i.to_le_bytes());
            h.insert(&i.to_le_bytes());
        }
        let n = h.count();
        assert!((n - 10_000.0).abs() < 10_000.0 * 0.2, "{n}");
        let mut small = Hll::<8>::default();
        for i in 0..20u32 {
            small.insert(&i.to_le_bytes());
        }
        assert!((small.count() - 20.0).abs() < 2.0, "{}", small.count());
        assert_eq!(Hll::<8>::default().count(), 0.0);
        let u = h.union(&small);
        assert!(u.count() >= h.count());
    }

    #[test]
    fn capped_map_evicts_the_weakest() {
        let mut m: CappedMap<u32> = CappedMap::new(3);
        for (k, v) in [("a", 5), ("b", 1), ("c", 9)] {
            *m.entry(k, || 0, |v| f64::from(*v)) = v;
        }
        m.entry("d", || 7, |v| f64::from(*v));
        assert_eq!(m.len(), 3);
        let mut keys: Vec<&String> = m.iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, ["a", "c", "d"]);
    }
}
