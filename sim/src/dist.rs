//! The few distributions the populations draw from, on a seeded generator. Hand-rolled so the
//! stream depends on nothing but this file and `rand_xoshiro`.

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// The generator every actor owns.
pub type SimRng = Xoshiro256PlusPlus;

/// A generator for `(seed, stream)`: each actor gets its own, so adding an actor never
/// changes another's requests.
pub fn rng_for(seed: u64, stream: u64) -> SimRng {
    use rand::SeedableRng;
    // SplitMix64 of the pair, so neighbouring streams are unrelated.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    SimRng::seed_from_u64(z ^ (z >> 31))
}

/// Uniform in `[0, 1)`.
pub fn unit(rng: &mut SimRng) -> f64 {
    rng.random::<f64>()
}

/// Standard normal (Box-Muller).
pub fn normal(rng: &mut SimRng) -> f64 {
    let u1 = unit(rng).max(f64::MIN_POSITIVE);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-normal with the given median and log-scale `sigma`: heavy right tail.
pub fn lognormal(rng: &mut SimRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Exponential with the given mean.
pub fn exponential(rng: &mut SimRng, mean: f64) -> f64 {
    -mean * (1.0 - unit(rng)).ln()
}

/// Pareto with scale `xm` and shape `alpha`, capped at `cap` (finite tails keep loops bounded).
pub fn pareto(rng: &mut SimRng, xm: f64, alpha: f64, cap: f64) -> f64 {
    let u = (1.0 - unit(rng)).max(1e-12);
    (xm / u.powf(1.0 / alpha)).min(cap)
}

/// Uniform integer in `[lo, hi)`.
pub fn range(rng: &mut SimRng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

/// True with probability `p`.
pub fn chance(rng: &mut SimRng, p: f64) -> bool {
    unit(rng) < p
}

/// Sampling an index from fixed weights by binary search over the cumulative sums.
#[derive(Debug, Clone)]
pub struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    /// From non-negative weights; an empty or all-zero list samples index 0.
    pub fn new(weights: &[f64]) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// Zipf weights `1 / (rank + 1)^s` over `n` items: a few favourites, a long tail.
    pub fn zipf(n: usize, s: f64) -> Self {
        let w: Vec<f64> = (0..n.max(1))
            .map(|i| 1.0 / ((i + 1) as f64).powf(s))
            .collect();
        Self::new(&w)
    }

    /// An index drawn in proportion to its weight.
    pub fn sample(&self, rng: &mut SimRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        if total <= 0.0 {
            return 0;
        }
        let x = unit(rng) * total;
        self.cumulative
            .partition_point(|c| *c <= x)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_first_ranks() {
        let mut rng = rng_for(1, 2);
        let z = Weighted::zipf(100, 1.1);
        let mut counts = [0u32; 100];
        for _ in 0..10_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > 0);
    }

    #[test]
    fn lognormal_median_is_about_right() {
        let mut rng = rng_for(3, 4);
        let mut xs: Vec<f64> = (0..10_001).map(|_| lognormal(&mut rng, 5.0, 1.0)).collect();
        xs.sort_by(f64::total_cmp);
        assert!((xs[5_000] - 5.0).abs() < 0.5, "median {}", xs[5_000]);
    }

    #[test]
    fn streams_are_independent_and_reproducible() {
        let a: Vec<f64> = (0..4).map(|_| unit(&mut rng_for(9, 1))).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(unit(&mut rng_for(9, 1)), unit(&mut rng_for(9, 2)));
    }
}
