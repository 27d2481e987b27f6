//! Batch scoring with AVX-512, 16 rows to a vector, for the narrow layouts: trees of up to
//! 256 slots (a sample size up to 256) and rows of up to 16 features.
//!
//! A tree of 256 slots is 16 vectors of packed nodes, so a level's node lookup is a
//! register permute (`vpermi2d` picks 16 nodes out of 32 by the low 5 bits of the heap
//! index; the levels of 32 and more nodes add two or six permutes and blends), not a load.
//! The keys of 16 rows are `W` vectors, two of them holding `32 / W` whole rows, so a
//! lane's key is a masked permute of its pair by `row * W + feature`: `W / 2` permutes for
//! 16 lanes. A step is then one unsigned compare and `h = 2h + go` for 16 rows at once,
//! where the scalar path does one row per compare. The leaves are added one row at a time
//! in tree order, as the scalar path adds them, so the sums are bit-identical.
//!
//! The unsafe part (detecting the CPU and compiling the kernel for it) is in `pulp`; this
//! module uses only its safe intrinsics and casts. Elsewhere, and when the CPU has no
//! AVX-512, [`path_sums`] returns `false` and the caller takes the scalar path.

use core::arch::x86_64::__m512i;

use pulp::x86::V4;

use super::{BLOCK, Layout, PAD};

/// Groups of 16 rows in flight: a level's lookups for one group take about twenty cycles
/// from index to index, so several groups overlap. Measured on a Zen 4 (`just bench-detect`,
/// 6 features, 256 slots): 2 groups 2.6M rows/s, 4 groups 3.3M to 3.4M, 8 groups 2.5M to
/// 2.8M and 16 groups 3.1M (at 8 and more the state no longer fits in the 32 registers).
const GROUPS: usize = 4;
/// Rows a pass of [`GROUPS`] covers; [`BLOCK`] is a multiple of it.
const ROWS: usize = 16 * GROUPS;
const _: () = assert!(BLOCK.is_multiple_of(ROWS));

/// Scores every row of `x` (rows of `d` values) into `sums`, as the scalar path would, and
/// returns `true`; or returns `false` without touching `sums` when the CPU has no AVX-512
/// or the layout is not one of the narrow shapes.
pub(super) fn path_sums(layout: &Layout, x: &[f64], d: usize, sums: &mut [f64]) -> bool {
    let Some(simd) = V4::try_new() else {
        return false;
    };
    let batch = Batch {
        simd,
        layout,
        x,
        d,
        sums,
    };
    match (layout.slots, layout.width) {
        (16, 8) => simd.vectorize(Shaped::<16, 8>(batch)),
        (16, 16) => simd.vectorize(Shaped::<16, 16>(batch)),
        (256, 8) => simd.vectorize(Shaped::<256, 8>(batch)),
        (256, 16) => simd.vectorize(Shaped::<256, 16>(batch)),
        _ => return false,
    }
    true
}

/// One batch: [`path_sums`]'s arguments.
struct Batch<'a> {
    simd: V4,
    layout: &'a Layout,
    x: &'a [f64],
    d: usize,
    sums: &'a mut [f64],
}

/// A batch through trees of `S` slots with rows `W` wide, for `vectorize`, which compiles
/// `call` (and all it inlines) for AVX-512.
struct Shaped<'a, const S: usize, const W: usize>(Batch<'a>);

impl<const S: usize, const W: usize> pulp::NullaryFnOnce for Shaped<'_, S, W> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Batch {
            simd,
            layout,
            x,
            d,
            sums,
        } = self.0;
        let f = simd.avx512f;
        // Pair `j` of a group's key vectors holds rows `j * per_pair..`, `per_pair` of them.
        let per_pair = 32 / W;
        let offsets: [u32; 16] = std::array::from_fn(|lane| ((lane % per_pair) * W) as u32);
        let offsets: __m512i = pulp::cast(offsets);
        let pair_lanes: [u16; 16] = std::array::from_fn(|j| {
            (0..16)
                .filter(|lane| lane / per_pair == j)
                .fold(0, |lanes, lane| lanes | 1 << lane)
        });
        let feature = f._mm512_set1_epi32(W as i32 - 1);
        let one = f._mm512_set1_epi32(1);
        let all_ones = f._mm512_set1_epi32(-1);
        let (bit5, bit6) = (f._mm512_set1_epi32(32), f._mm512_set1_epi32(64));
        let pad = f._mm512_set1_epi32(PAD as i32);

        let nodes = layout.nodes.as_chunks::<S>().0;
        let leaves = layout.leaves.as_chunks::<S>().0;
        // Row keys as in the scalar path; past the end of a short last block they are stale
        // or zero, and their sums are not copied out.
        let mut rows: Vec<[u32; W]> = std::iter::repeat_n([0; W], BLOCK).collect();
        let mut keys: Vec<__m512i> = Vec::with_capacity(BLOCK * W / 16);
        for (block, sums) in x.chunks(BLOCK * d).zip(sums.chunks_mut(BLOCK)) {
            for (row, v) in rows.iter_mut().zip(block.chunks_exact(d)) {
                layout.keys(v, row);
            }
            keys.clear();
            let flat = rows.as_flattened().as_chunks::<16>().0;
            keys.extend(flat.iter().map(|&v| pulp::cast::<[u32; 16], __m512i>(v)));
            let mut acc = [0.0; BLOCK];
            for (nodes, leaf) in nodes.iter().zip(leaves) {
                // The tree as 16 vectors of 16 heap slots; a tree of 16 slots fills one.
                let mut table = [pad; 16];
                for (t, v) in table.iter_mut().zip(nodes.as_chunks::<16>().0) {
                    *t = pulp::cast(*v);
                }
                let root = f._mm512_set1_epi32(nodes[1] as i32);
                for (keys, acc) in keys
                    .chunks_exact(W * GROUPS)
                    .zip(acc.as_chunks_mut::<16>().0.chunks_exact_mut(GROUPS))
                {
                    let mut h = [one; GROUPS];
                    for level in 0..S.trailing_zeros() {
                        for (h, keys) in h.iter_mut().zip(keys.chunks_exact(W)) {
                            // The packed nodes at this level's heap indices (below 2^level
                            // twice, so the low bits pick the slot in the level's vectors).
                            let node = match level {
                                0 => root,
                                1..=4 => f._mm512_permutex2var_epi32(table[0], *h, table[1]),
                                5 => f._mm512_permutex2var_epi32(table[2], *h, table[3]),
                                6 => {
                                    let upper = f._mm512_test_epi32_mask(*h, bit5);
                                    let a = f._mm512_permutex2var_epi32(table[4], *h, table[5]);
                                    let b = f._mm512_permutex2var_epi32(table[6], *h, table[7]);
                                    f._mm512_mask_blend_epi32(upper, a, b)
                                }
                                _ => {
                                    let b5 = f._mm512_test_epi32_mask(*h, bit5);
                                    let b6 = f._mm512_test_epi32_mask(*h, bit6);
                                    let a = f._mm512_permutex2var_epi32(table[8], *h, table[9]);
                                    let b = f._mm512_permutex2var_epi32(table[10], *h, table[11]);
                                    let c = f._mm512_permutex2var_epi32(table[12], *h, table[13]);
                                    let e = f._mm512_permutex2var_epi32(table[14], *h, table[15]);
                                    let ab = f._mm512_mask_blend_epi32(b5, a, b);
                                    let ce = f._mm512_mask_blend_epi32(b5, c, e);
                                    f._mm512_mask_blend_epi32(b6, ab, ce)
                                }
                            };
                            // `node & (W - 1) | offset`: the lane's key in its pair.
                            let index = f._mm512_ternarylogic_epi32::<0xEA>(node, feature, offsets);
                            let mut key = f._mm512_setzero_si512();
                            for (pair, &lanes) in keys.as_chunks::<2>().0.iter().zip(&pair_lanes) {
                                let k = f._mm512_maskz_permutex2var_epi32(
                                    lanes, pair[0], index, pair[1],
                                );
                                key = f._mm512_or_si512(key, k);
                            }
                            // As the scalar step: right when the key is above the node.
                            let go = f._mm512_cmpgt_epu32_mask(key, node);
                            let twice = f._mm512_add_epi32(*h, *h);
                            *h = f._mm512_mask_sub_epi32(twice, go, twice, all_ones);
                        }
                    }
                    for (h, acc) in h.iter().zip(acc) {
                        let slots: [u32; 16] = pulp::cast(*h);
                        for (a, s) in acc.iter_mut().zip(slots) {
                            *a += leaf[s as usize & (S - 1)];
                        }
                    }
                }
            }
            sums.copy_from_slice(&acc[..sums.len()]);
        }
    }
}
