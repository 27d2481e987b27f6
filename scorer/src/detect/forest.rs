//! The Isolation Forest of Liu, Ting and Zhou (2008), as scikit-learn implements it.
//!
//! Each tree is grown on a subsample of `psi` rows drawn without replacement; a node splits
//! on a feature drawn at random among those not constant in the node, at a threshold drawn
//! uniformly in `[min, max)` of that feature (left when `x <= threshold`). Growth stops at
//! one sample or at the height limit `ceil(log2 psi)`. A point's path length in a tree is the
//! depth of the leaf it reaches plus `c(n)`, the average path length of an unsuccessful
//! binary-search-tree lookup among the `n` training samples left in that leaf; its score is
//! `s = 2^(-E[h(x)] / c(psi))`, in `(0, 1]`, higher meaning more anomalous.
//!
//! Trees are stored (and serialized) as one flat array of 16-byte nodes, the two children of
//! a node next to each other, a leaf pointing at itself with an infinite threshold. Scoring
//! uses a [`Layout`] derived from them at fit and decode time: each tree completed to a
//! perfect binary tree in heap order, thresholds replaced by their rank among the feature's
//! distinct thresholds (a row is ranked once, then every comparison is an exact integer
//! one), so a lookup is a fixed number of branch-free steps with no child pointer and no
//! bounds check, and several lookups (rows of a batch, or trees for one vector) are
//! interleaved to overlap their memory loads. On a CPU with AVX-512, a batch through trees
//! of up to 256 slots with rows of up to 16 features goes 16 rows to a vector instead
//! ([`avx512`]), with the same sums bit for bit.

use ndarray::{Array1, ArrayView2, Axis, Slice};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Euler–Mascheroni constant, as numpy's `np.euler_gamma`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
#[cfg(target_arch = "x86_64")]
mod avx512;
/// Independent lookups interleaved in one pass: a step's result is ready more than ten cycles
/// after its index, so several chains run at once; at 8 their state still fits in registers
/// (12 spilled to the stack and scored about 20 % fewer rows per second, 6 left the core idle).
const LANES: usize = 8;
/// Rows scored together in a batch; a multiple of `LANES`.
const BLOCK: usize = 32 * LANES;

/// Why a forest cannot be fitted or cannot score.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForestError {
    /// The forest needs at least one tree.
    #[error("the number of trees must be at least 1")]
    NoTrees,
    /// A subsample of fewer than two rows isolates nothing.
    #[error("the sample size must be at least 2, got {0}")]
    SampleSizeTooSmall(usize),
    /// Fewer than two training rows.
    #[error("at least 2 training rows are needed, got {0}")]
    TooFewRows(usize),
    /// No feature columns.
    #[error("the data has no feature columns")]
    NoFeatures,
    /// NaN or an infinity in the input.
    #[error("row {row}, feature {feature}: value is not finite")]
    NotFinite {
        /// Zero-based row.
        row: usize,
        /// Zero-based feature.
        feature: usize,
    },
    /// A vector of the wrong length.
    #[error("expected {expected} features, got {found}")]
    WrongLength {
        /// Features the forest was fitted on.
        expected: usize,
        /// Features given.
        found: usize,
    },
}

/// How to grow a forest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForestParams {
    /// Number of trees.
    pub trees: usize,
    /// Subsample size `psi` per tree; capped at the number of rows, as scikit-learn does.
    pub sample_size: usize,
    /// Seed of the `Xoshiro256PlusPlus` generator; the same seed gives the same forest.
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            trees: 100,
            sample_size: 256,
            seed: 0,
        }
    }
}

/// One node: a split (`feature`, threshold in `value`, children at `left` and `left + 1`) or a
/// leaf (`left` is its own index, `feature` 0, `value` +inf, so a step from it stays put).
#[derive(Debug, Clone, Copy, PartialEq, bincode::Encode, bincode::Decode)]
struct Node {
    feature: u32,
    left: u32,
    value: f64,
}

/// A fitted Isolation Forest.
///
/// Only the trees are serialized (field by field, in declaration order, as a derive would);
/// the scoring [`Layout`] is rebuilt from them at fit and decode time.
#[derive(Debug, Clone, PartialEq)]
pub struct IsolationForest {
    n_features: u32,
    psi: u32,
    c_psi: f64,
    /// Height limit: every leaf is at most this deep.
    limit: u32,
    roots: Vec<u32>,
    nodes: Vec<Node>,
    /// Per node: for a leaf, its depth plus `c(samples in the leaf)`; 0 for a split.
    leaf_path: Vec<f64>,
    /// Training samples that reached each node; used only by [`IsolationForest::explain`].
    sizes: Vec<u32>,
    /// Derived from the fields above; `None` when the trees are too deep or too wide for it
    /// (or malformed), and scoring walks `nodes` instead.
    layout: Option<Layout>,
}

impl<C> bincode::Decode<C> for IsolationForest {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::Decode;
        let mut forest = Self {
            n_features: Decode::decode(decoder)?,
            psi: Decode::decode(decoder)?,
            c_psi: Decode::decode(decoder)?,
            limit: Decode::decode(decoder)?,
            roots: Decode::decode(decoder)?,
            nodes: Decode::decode(decoder)?,
            leaf_path: Decode::decode(decoder)?,
            sizes: Decode::decode(decoder)?,
            layout: None,
        };
        forest.layout = Layout::build(&forest);
        Ok(forest)
    }
}
bincode::impl_borrow_decode!(IsolationForest);

impl bincode::Encode for IsolationForest {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.n_features.encode(encoder)?;
        self.psi.encode(encoder)?;
        self.c_psi.encode(encoder)?;
        self.limit.encode(encoder)?;
        self.roots.encode(encoder)?;
        self.nodes.encode(encoder)?;
        self.leaf_path.encode(encoder)?;
        self.sizes.encode(encoder)
    }
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// nodes, scikit-learn's `_average_path_length`.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// The height limit for a subsample of `psi`: `ceil(log2 psi)`.
pub fn height_limit(psi: usize) -> usize {
    (psi.max(2) as f64).log2().ceil() as usize
}

impl IsolationForest {
    /// Fits a forest to `data` (rows are samples).
    pub fn fit(data: ArrayView2<'_, f64>, params: &ForestParams) -> Result<Self, ForestError> {
        Self::fit_with_progress(data, params, &mut |_, _| {})
    }

    /// As [`IsolationForest::fit`], calling `progress(trees_done, trees_total)` after each tree.
    pub fn fit_with_progress(
        data: ArrayView2<'_, f64>,
        params: &ForestParams,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ForestError> {
        let (rows, d) = data.dim();
        if params.trees == 0 {
            return Err(ForestError::NoTrees);
        }
        if params.sample_size < 2 {
            return Err(ForestError::SampleSizeTooSmall(params.sample_size));
        }
        if rows < 2 {
            return Err(ForestError::TooFewRows(rows));
        }
        if d == 0 {
            return Err(ForestError::NoFeatures);
        }
        let data = data.as_standard_layout();
        let x = data.as_slice().unwrap_or_default();
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(ForestError::NotFinite {
                row: i / d,
                feature: i % d,
            });
        }
        let psi = params.sample_size.min(rows);
        let mut forest = Self {
            n_features: d as u32,
            psi: psi as u32,
            c_psi: average_path_length(psi),
            limit: height_limit(psi) as u32,
            roots: Vec::with_capacity(params.trees),
            nodes: Vec::with_capacity(params.trees * (2 * psi - 1)),
            leaf_path: Vec::with_capacity(params.trees * (2 * psi - 1)),
            sizes: Vec::with_capacity(params.trees * (2 * psi - 1)),
            layout: None,
        };
        let mut grower = Grower {
            x,
            d,
            limit: height_limit(psi),
            rng: Xoshiro256PlusPlus::seed_from_u64(params.seed),
            features: (0..d as u32).collect(),
            stack: Vec::new(),
        };
        // A partial Fisher-Yates shuffle of a permutation is uniform whatever the permutation,
        // so one index buffer serves every tree.
        let mut perm: Vec<u32> = (0..rows as u32).collect();
        for t in 0..params.trees {
            for i in 0..psi {
                let j = grower.rng.random_range(i..rows);
                perm.swap(i, j);
            }
            let mut sample = perm[..psi].to_vec();
            let root = grower.grow(&mut forest, &mut sample);
            forest.roots.push(root);
            progress(t + 1, params.trees);
        }
        forest.layout = Layout::build(&forest);
        Ok(forest)
    }

    /// Number of features the forest was fitted on.
    pub fn n_features(&self) -> usize {
        self.n_features as usize
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Subsample size each tree was grown on.
    pub fn sample_size(&self) -> usize {
        self.psi as usize
    }

    /// The anomaly score of one vector, in `(0, 1]`.
    pub fn score(&self, x: &[f64]) -> Result<f64, ForestError> {
        self.check_len(x.len())?;
        Ok(self.score_unchecked(x))
    }

    /// Scores every row of `data`.
    pub fn score_batch(&self, data: ArrayView2<'_, f64>) -> Result<Array1<f64>, ForestError> {
        self.check_len(data.ncols())?;
        let data = data.as_standard_layout();
        let x = data.as_slice().unwrap_or_default();
        if self.n_features == 0 {
            // Only a decoded forest can have no features; its rows are empty.
            return Ok(Array1::zeros(data.nrows()));
        }
        let mut sums = vec![0.0; data.nrows()];
        match &self.layout {
            Some(layout) => layout.path_sums(x, self.n_features(), &mut sums),
            None => self.path_sums_nodes(x, &mut sums),
        }
        Ok(sums.into_iter().map(|s| self.to_score(s)).collect())
    }

    /// As [`IsolationForest::score_batch`], on `threads` OS threads (scoped, joined before
    /// returning); the scores are identical. For offline batches, not the request path.
    pub fn score_batch_parallel(
        &self,
        data: ArrayView2<'_, f64>,
        threads: usize,
    ) -> Result<Array1<f64>, ForestError> {
        self.check_len(data.ncols())?;
        let rows = data.nrows();
        let threads = threads.clamp(1, rows.div_ceil(BLOCK).max(1));
        if threads == 1 {
            return self.score_batch(data);
        }
        let per = rows.div_ceil(threads).next_multiple_of(BLOCK);
        let parts: Vec<Result<Array1<f64>, ForestError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..rows.div_ceil(per))
                .map(|t| {
                    let part =
                        data.slice_axis(Axis(0), Slice::from(t * per..((t + 1) * per).min(rows)));
                    scope.spawn(move || self.score_batch(part))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut out = Vec::with_capacity(rows);
        for part in parts {
            out.extend(part?);
        }
        Ok(Array1::from(out))
    }

    /// Mean path length `E[h(x)]` of one vector over the trees.
    pub fn mean_path_length(&self, x: &[f64]) -> Result<f64, ForestError> {
        self.check_len(x.len())?;
        Ok(self.path_sum(x) / self.roots.len() as f64)
    }

    /// How much each feature contributed to isolating `x`: one non-negative share per feature,
    /// summing to 1 (all zero only when no split lies on any of its paths).
    ///
    /// Each split on `x`'s path cut away part of the node's training samples; the split is
    /// credited `ln(n_node / n_child)` (the log of the mass it cut away from `x`) for its
    /// feature, and a tree's credits are weighted by `c(psi) / h(x)`, so trees that isolated
    /// `x` at shallow depth count more.
    pub fn explain(&self, x: &[f64]) -> Result<Vec<f64>, ForestError> {
        self.check_len(x.len())?;
        let mut credit = vec![0.0; self.n_features()];
        let mut path = Vec::new();
        for &root in &self.roots {
            path.clear();
            let mut i = root as usize;
            let h = loop {
                let n = self.nodes[i];
                if n.left as usize == i {
                    break self.leaf_path[i];
                }
                let child = n.left as usize + usize::from(x[n.feature as usize] > n.value);
                let cut = (f64::from(self.sizes[i]) / f64::from(self.sizes[child])).ln();
                path.push((n.feature as usize, cut));
                i = child;
            };
            let weight = if h > 0.0 { self.c_psi / h } else { 0.0 };
            for &(f, cut) in &path {
                credit[f] += weight * cut;
            }
        }
        let total: f64 = credit.iter().sum();
        if total > 0.0 {
            credit.iter_mut().for_each(|c| *c /= total);
        }
        Ok(credit)
    }

    /// Checks the invariants scoring relies on (children after their parent and in bounds,
    /// features in range, finite values), for a forest decoded from a file.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.nodes.len();
        let psi = self.psi as usize;
        if psi < 2
            || self.c_psi != average_path_length(psi)
            || self.limit as usize != height_limit(psi)
        {
            return Err("inconsistent sample size".into());
        }
        if self.sizes.len() != n || self.leaf_path.len() != n || self.roots.is_empty() {
            return Err("inconsistent node arrays".into());
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let left = node.left as usize;
            let ok = if left == i {
                node.feature == 0 && node.value == f64::INFINITY && self.leaf_path[i].is_finite()
            } else {
                node.feature < self.n_features && node.value.is_finite() && left > i && left + 1 < n
            };
            if !ok {
                return Err(format!("node {i} is malformed"));
            }
        }
        // Every lookup runs `limit` steps: each leaf must be within reach.
        let mut stack = Vec::new();
        for &root in &self.roots {
            stack.push((root as usize, 0));
            while let Some((i, depth)) = stack.pop() {
                let Some(node) = self.nodes.get(i) else {
                    return Err("tree root out of bounds".into());
                };
                if node.left as usize == i {
                    continue;
                }
                if depth >= self.limit {
                    return Err(format!("node {i} is deeper than the height limit"));
                }
                stack.push((node.left as usize, depth + 1));
                stack.push((node.left as usize + 1, depth + 1));
            }
        }
        Ok(())
    }

    fn check_len(&self, found: usize) -> Result<(), ForestError> {
        if found == self.n_features() {
            Ok(())
        } else {
            Err(ForestError::WrongLength {
                expected: self.n_features(),
                found,
            })
        }
    }

    fn score_unchecked(&self, x: &[f64]) -> f64 {
        self.to_score(self.path_sum(x))
    }

    fn to_score(&self, path_sum: f64) -> f64 {
        let mean = path_sum / self.roots.len() as f64;
        (-mean / self.c_psi).exp2()
    }

    fn path_sum(&self, x: &[f64]) -> f64 {
        match &self.layout {
            Some(layout) => layout.path_sum(x),
            None => self.path_sum_nodes(x),
        }
    }

    /// [`IsolationForest::path_sum`] by walking `nodes`, for forests without a [`Layout`].
    fn path_sum_nodes(&self, x: &[f64]) -> f64 {
        let mut total = 0.0;
        for roots in self.roots.chunks(LANES) {
            // A short last group repeats its last tree; the extra lanes are ignored.
            let mut idx: [usize; LANES] =
                std::array::from_fn(|k| roots[k.min(roots.len() - 1)] as usize);
            self.descend_nodes(&mut idx, x, 0);
            // Added one by one in tree order, so a batch score is bit-identical.
            for &i in &idx[..roots.len()] {
                total += self.leaf_path[i];
            }
        }
        total
    }

    /// The path sum of every row of `x` (rows of `n_features` values) by walking `nodes`, in
    /// blocks of rows, tree-major inside a block, `LANES` rows at a time.
    fn path_sums_nodes(&self, x: &[f64], sums: &mut [f64]) {
        let d = self.n_features();
        let mut tail = Vec::new();
        for (block, sums) in x.chunks(BLOCK * d).zip(sums.chunks_mut(BLOCK)) {
            let mut groups: Vec<&[f64]> = block.chunks_exact(LANES * d).collect();
            let rest = block.chunks_exact(LANES * d).remainder();
            if !rest.is_empty() {
                // A short last group repeats its last row; the extra lanes are ignored.
                tail.clear();
                tail.extend_from_slice(rest);
                let last = &rest[rest.len() - d..];
                while tail.len() < LANES * d {
                    tail.extend_from_slice(last);
                }
                groups.push(&tail);
            }
            let mut acc = [0.0f64; BLOCK];
            for &root in &self.roots {
                for (g, rows) in groups.iter().enumerate() {
                    let mut idx = [root as usize; LANES];
                    self.descend_nodes(&mut idx, rows, d);
                    let lanes = &mut acc[g * LANES..(g + 1) * LANES];
                    for (sum, i) in lanes.iter_mut().zip(idx) {
                        *sum += self.leaf_path[i];
                    }
                }
            }
            sums.copy_from_slice(&acc[..sums.len()]);
        }
    }

    /// Moves each lane from its node `limit` steps down: to its leaf, since leaves stay put.
    /// Lane `k` reads its vector at `x[k * stride..]` (stride 0: one vector, several trees).
    /// The lanes are independent, so their loads overlap.
    #[inline]
    fn descend_nodes(&self, idx: &mut [usize; LANES], x: &[f64], stride: usize) {
        for _ in 0..self.limit {
            for (k, i) in idx.iter_mut().enumerate() {
                let n = self.nodes[*i];
                *i = n.left as usize + usize::from(x[k * stride + n.feature as usize] > n.value);
            }
        }
    }
}

/// Leaves per tree a [`Layout`] may have: trees are padded up to the first that holds them.
const SLOTS: [usize; 3] = [16, 256, 4096];
/// Row widths a [`Layout`] may have: rows are padded up to the first that holds them.
const WIDTHS: [usize; 3] = [8, 16, 64];
/// The packed node of a padding slot: above every row key, so a lookup always goes left.
const PAD: u32 = u32::MAX << 8;

/// The scoring form of the trees, derived from `nodes`: each tree completed to a perfect
/// binary tree of `slots` leaves in heap order (node `h` has children `2h` and `2h + 1`, the
/// root is 1). Below a real leaf every node is [`PAD`], so a lookup goes left to the
/// bottom-left slot of the leaf's subtree, which holds the leaf's path length.
///
/// Thresholds are replaced by their rank among the distinct thresholds of their feature
/// (`cuts`), and a row by the number of each feature's cuts below it, so `x > threshold`
/// becomes an exact integer comparison of the two ranks. A split is packed in one `u32`,
/// `rank << 8 | feature`, and a row value is `rank << 8` (also a `u32`), so the packed node
/// compares as its rank would: a step is `h = 2h + (row[node & mask] > node)`, two loads, a
/// compare and a `seta`, where the `f64` walk needed three loads and a
/// floating-point compare. With `slots` and the row width as constants there is no bounds
/// check either (indices are masked), and several interleaved lookups keep the core busy.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    slots: usize,
    /// Row width: the feature count rounded up to one of [`WIDTHS`].
    width: usize,
    /// Per feature, its distinct split thresholds.
    cuts: Vec<Cuts>,
    /// `slots` per tree, by heap index (0 is unused): `rank << 8 | feature`, or [`PAD`].
    nodes: Vec<u32>,
    /// `slots` per tree: the path length (depth plus `c(n)`) of the leaf above each slot.
    leaves: Vec<f64>,
}

/// Calls `$layout.$method::<SLOTS, WIDTH>($args)` for the layout's shape.
macro_rules! by_shape {
    ($layout:expr, $method:ident($($arg:expr),*)) => {
        match ($layout.slots, $layout.width) {
            (16, 8) => $layout.$method::<16, 8>($($arg),*),
            (16, 16) => $layout.$method::<16, 16>($($arg),*),
            (16, 64) => $layout.$method::<16, 64>($($arg),*),
            (256, 8) => $layout.$method::<256, 8>($($arg),*),
            (256, 16) => $layout.$method::<256, 16>($($arg),*),
            (256, 64) => $layout.$method::<256, 64>($($arg),*),
            (4096, 8) => $layout.$method::<4096, 8>($($arg),*),
            (4096, 16) => $layout.$method::<4096, 16>($($arg),*),
            (4096, 64) => $layout.$method::<4096, 64>($($arg),*),
            (slots, width) => unreachable!("layout of {slots} slots x {width} is not in SLOTS x WIDTHS"),
        }
    };
}

impl Layout {
    /// The layout of a forest, or `None` when it is malformed (see
    /// [`IsolationForest::validate`]), deeper than the largest of [`SLOTS`], wider than the
    /// largest of [`WIDTHS`], or has too many distinct thresholds for a 24-bit rank.
    fn build(forest: &IsolationForest) -> Option<Self> {
        forest.validate().ok()?;
        let slots = SLOTS
            .into_iter()
            .find(|s| s.trailing_zeros() >= forest.limit)?;
        let width = WIDTHS.into_iter().find(|&w| w >= forest.n_features())?;
        let mut cuts = vec![Vec::new(); forest.n_features()];
        for (i, node) in forest.nodes.iter().enumerate() {
            if node.left as usize != i {
                cuts[node.feature as usize].push(node.value);
            }
        }
        let cuts: Vec<Cuts> = cuts.into_iter().map(Cuts::new).collect();
        // A row's rank is at most the cut count, and must stay below `PAD >> 8`.
        if cuts.iter().any(|c| c.values.len() >= (PAD >> 8) as usize) {
            return None;
        }
        let len = forest.roots.len() * slots;
        let mut layout = Self {
            slots,
            width,
            cuts,
            nodes: vec![PAD; len],
            leaves: vec![0.0; len],
        };
        // Validated: children are in bounds and no split is deeper than `limit - 1`, so `h`
        // stays below `slots` for splits and below `2 * slots` for leaves.
        let mut stack = Vec::new();
        for (t, &root) in forest.roots.iter().enumerate() {
            let base = t * slots;
            stack.push((root as usize, 1usize));
            while let Some((i, h)) = stack.pop() {
                let node = forest.nodes[i];
                if node.left as usize == i {
                    let bottom = h << (slots.trailing_zeros() - h.ilog2());
                    layout.leaves[base + bottom - slots] = forest.leaf_path[i];
                } else {
                    let f = node.feature as usize;
                    let rank = layout.cuts[f].rank(node.value);
                    layout.nodes[base + h] = (rank as u32) << 8 | node.feature;
                    stack.push((node.left as usize, 2 * h));
                    stack.push((node.left as usize + 1, 2 * h + 1));
                }
            }
        }
        Some(layout)
    }

    /// `x` as row keys: for each feature, the number of its cuts below the value, shifted
    /// as the packed nodes are. Cut `j` is below `x[f]` exactly when `x[f] > cut`, and cuts
    /// are increasing, so `x[f] > cuts[f][j]` if and only if `key[f] > j << 8 | f` (the
    /// feature byte never decides: keys have a zero low byte). A NaN has no cut below it, so
    /// it goes left everywhere, as `NaN > threshold` does.
    fn keys<const W: usize>(&self, x: &[f64], keys: &mut [u32; W]) {
        for ((key, cuts), &v) in keys.iter_mut().zip(&self.cuts).zip(x) {
            // Below `PAD >> 8` (checked in `build`), so the shift keeps every bit.
            *key = (cuts.rank(v) as u32) << 8;
        }
    }

    /// The sum over the trees, in tree order, of the path lengths of `x`.
    fn path_sum(&self, x: &[f64]) -> f64 {
        by_shape!(self, path_sum_shaped(x))
    }

    /// The path sum of every row of `x` (rows of `d` values) into `sums`: 16 rows to a
    /// vector where [`avx512`] takes the layout, `LANES` interleaved rows otherwise.
    fn path_sums(&self, x: &[f64], d: usize, sums: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if avx512::path_sums(self, x, d, sums) {
            return;
        }
        self.path_sums_scalar(x, d, sums);
    }

    /// [`Layout::path_sums`] without vectors.
    fn path_sums_scalar(&self, x: &[f64], d: usize, sums: &mut [f64]) {
        by_shape!(self, path_sums_shaped(x, d, sums))
    }

    /// One vector through `LANES` trees at a time.
    fn path_sum_shaped<const S: usize, const W: usize>(&self, x: &[f64]) -> f64 {
        let mut row = [0; W];
        self.keys(x, &mut row);
        let nodes = self.nodes.as_chunks::<S>().0.chunks(LANES);
        let leaves = self.leaves.as_chunks::<S>().0.chunks(LANES);
        let mut total = 0.0;
        for (nodes, leaf) in nodes.zip(leaves) {
            // A short last group repeats its last tree; the extra lanes are ignored.
            let trees: [&[u32; S]; LANES] = std::array::from_fn(|k| &nodes[k.min(nodes.len() - 1)]);
            let slot = descend::<S, W>(|k, i| trees[k][i], |_, f| row[f]);
            // Added one by one in tree order, so a batch score is bit-identical.
            for (leaf, s) in leaf.iter().zip(slot) {
                total += leaf[s];
            }
        }
        total
    }

    /// Blocks of `BLOCK` rows, tree-major inside a block: a tree's tables stay in L1 while
    /// every row of the block goes through it, `LANES` rows at a time.
    fn path_sums_shaped<const S: usize, const W: usize>(
        &self,
        x: &[f64],
        d: usize,
        sums: &mut [f64],
    ) {
        let nodes = self.nodes.as_chunks::<S>().0;
        let leaves = self.leaves.as_chunks::<S>().0;
        // Row keys, padded to `W`; past the end of a short last block they are stale or
        // zero, and their lanes are ignored. On the heap: up to 64 KiB.
        let mut rows: Vec<[u32; W]> = std::iter::repeat_n([0; W], BLOCK).collect();
        for (block, sums) in x.chunks(BLOCK * d).zip(sums.chunks_mut(BLOCK)) {
            for (row, v) in rows.iter_mut().zip(block.chunks_exact(d)) {
                self.keys(v, row);
            }
            let used = sums.len().next_multiple_of(LANES);
            let groups = rows[..used].as_chunks::<LANES>().0;
            let mut acc = [0.0; BLOCK];
            let acc_groups = acc[..used].as_chunks_mut::<LANES>().0;
            for (nodes, leaf) in nodes.iter().zip(leaves) {
                for (group, acc) in groups.iter().zip(acc_groups.iter_mut()) {
                    let slot = descend::<S, W>(|_, i| nodes[i], |k, f| group[k][f]);
                    for (a, s) in acc.iter_mut().zip(slot) {
                        *a += leaf[s];
                    }
                }
            }
            sums.copy_from_slice(&acc[..sums.len()]);
        }
    }
}

/// The distinct split thresholds of one feature, in increasing order, with a bucket index
/// that finds a value's rank in a step or two instead of a binary search over all of them.
#[derive(Debug, Clone, PartialEq)]
struct Cuts {
    values: Vec<f64>,
    /// The lowest cut.
    lo: f64,
    /// Buckets per unit from `lo`.
    scale: f64,
    /// Per bucket, the number of cuts in the buckets before it; one more entry than buckets.
    first: Vec<u32>,
}

impl Cuts {
    /// The index of finite `values`, in any order and with repeats.
    fn new(mut values: Vec<f64>) -> Self {
        values.sort_unstable_by(f64::total_cmp);
        // -0.0 and 0.0 compare equal: one cut.
        values.dedup_by(|a, b| a == b);
        let buckets = values.len().next_power_of_two();
        let (lo, hi) = match (values.first(), values.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => (0.0, 0.0),
        };
        let scale = if hi > lo {
            buckets as f64 / (hi - lo)
        } else {
            0.0
        };
        let mut cuts = Self {
            values,
            lo,
            scale,
            first: vec![0; buckets + 1],
        };
        for i in 0..cuts.values.len() {
            let b = cuts.bucket(cuts.values[i]);
            cuts.first[b + 1] += 1;
        }
        for b in 1..=buckets {
            cuts.first[b] += cuts.first[b - 1];
        }
        cuts
    }

    /// The bucket of `x`. Monotone in `x` (each floating-point step rounds monotonically, the
    /// cast saturates, NaN lands in bucket 0), so every cut in an earlier bucket is below
    /// `x` and every cut in a later one is above it, whatever the rounding.
    fn bucket(&self, x: f64) -> usize {
        (((x - self.lo) * self.scale) as usize).min(self.first.len() - 2)
    }

    /// How many cuts are below `x` (`cut < x`, so `x > cut` for exactly the first `rank`).
    fn rank(&self, x: f64) -> usize {
        let b = self.bucket(x);
        let (start, end) = (self.first[b] as usize, self.first[b + 1] as usize);
        start + self.values[start..end].partition_point(|&t| t < x)
    }
}

/// `LANES` independent lookups through complete trees of `S` slots; returns each lane's bottom
/// slot. Lane `k` reads its tree's packed node at heap index `i` as `node(k, i)` and its row's
/// key for feature `f` as `key(k, f)`: one tree and a contiguous group of rows in a batch, one
/// row and a group of trees for a single vector, so the lanes' addresses are a base and
/// constant offsets, not one pointer per lane. The masks never change an index (heap indices
/// stay below `S` before the last step, features below the row width) but let the compiler
/// drop the bounds checks.
#[inline(always)]
fn descend<const S: usize, const W: usize>(
    node: impl Fn(usize, usize) -> u32,
    key: impl Fn(usize, usize) -> u32,
) -> [usize; LANES] {
    let mut h = [1usize; LANES];
    for _ in 0..S.trailing_zeros() {
        for (k, h) in h.iter_mut().enumerate() {
            let i = *h & (S - 1);
            let node = node(k, i);
            // The key's low byte is zero, so it is above the node exactly when its rank is
            // above the node's.
            *h = 2 * i + usize::from(key(k, node as usize & (W - 1)) > node);
        }
    }
    h.map(|i| i & (S - 1))
}

/// Scratch state for growing trees.
struct Grower<'a> {
    x: &'a [f64],
    d: usize,
    limit: usize,
    rng: Xoshiro256PlusPlus,
    features: Vec<u32>,
    stack: Vec<(usize, usize, usize, usize)>,
}

impl Grower<'_> {
    /// Grows one tree over the rows in `sample` (reordered in place); returns its root.
    fn grow(&mut self, forest: &mut IsolationForest, sample: &mut [u32]) -> u32 {
        let root = forest.nodes.len();
        push_node(forest, sample.len());
        self.stack.clear();
        self.stack.push((root, 0, sample.len(), 0));
        while let Some((node, lo, hi, depth)) = self.stack.pop() {
            let rows = &mut sample[lo..hi];
            let split = if depth >= self.limit || rows.len() <= 1 {
                None
            } else {
                self.split(rows)
            };
            let Some((feature, threshold)) = split else {
                forest.nodes[node] = Node {
                    feature: 0,
                    left: node as u32,
                    value: f64::INFINITY,
                };
                forest.leaf_path[node] = depth as f64 + average_path_length(rows.len());
                continue;
            };
            let mid = lo + partition(rows, |r| self.x[r as usize * self.d + feature] <= threshold);
            let left = forest.nodes.len();
            push_node(forest, mid - lo);
            push_node(forest, hi - mid);
            forest.nodes[node] = Node {
                feature: feature as u32,
                left: left as u32,
                value: threshold,
            };
            self.stack.push((left + 1, mid, hi, depth + 1));
            self.stack.push((left, lo, mid, depth + 1));
        }
        root as u32
    }

    /// Draws features without replacement until one is not constant over `rows`, then a
    /// threshold uniformly in `[min, max)`; `None` when every feature is constant.
    fn split(&mut self, rows: &[u32]) -> Option<(usize, f64)> {
        let mut remaining = self.d;
        while remaining > 0 {
            let k = self.rng.random_range(0..remaining);
            let f = self.features[k] as usize;
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in rows {
                let v = self.x[r as usize * self.d + f];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi > lo {
                let mut t = self.rng.random_range(lo..hi);
                // As scikit-learn: rounding may land on max, which would leave the right empty.
                if t >= hi {
                    t = lo;
                }
                return Some((f, t));
            }
            self.features.swap(k, remaining - 1);
            remaining -= 1;
        }
        None
    }
}

fn push_node(forest: &mut IsolationForest, size: usize) {
    forest.nodes.push(Node {
        feature: 0,
        left: 0,
        value: 0.0,
    });
    forest.leaf_path.push(0.0);
    forest.sizes.push(size as u32);
}

/// Moves the rows for which `left` holds to the front; returns how many there are.
fn partition(rows: &mut [u32], left: impl Fn(u32) -> bool) -> usize {
    let mut mid = 0;
    for i in 0..rows.len() {
        if left(rows[i]) {
            rows.swap(i, mid);
            mid += 1;
        }
    }
    mid
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use proptest::prelude::*;
    use rand::Rng;

    use super::*;

    /// `n` inliers near the origin plus `k` outliers far away, deterministic.
    fn blob(n: usize, k: usize, d: usize, seed: u64) -> Array2<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Array2::from_shape_fn((n + k, d), |(r, _)| {
            let v: f64 = rng.random_range(-1.0..1.0);
            if r < n { v } else { 6.0 + v * 0.1 }
        })
    }

    #[test]
    fn c_matches_scikit_learn() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // sklearn.ensemble._iforest._average_path_length([256])
        assert!((average_path_length(256) - 10.244_770_920_119_917).abs() < 1e-12);
        assert_eq!(height_limit(256), 8);
        assert_eq!(height_limit(100), 7);
    }

    #[test]
    fn outlier_cluster_scores_above_inliers() {
        let data = blob(500, 10, 4, 1);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        let scores = forest.score_batch(data.view()).unwrap();
        let max_inlier = scores.iter().take(500).copied().fold(0.0, f64::max);
        let min_outlier = scores.iter().skip(500).copied().fold(1.0, f64::min);
        assert!(min_outlier > max_inlier, "{min_outlier} <= {max_inlier}");
        assert!(min_outlier > 0.6);
    }

    #[test]
    fn batch_equals_single() {
        let data = blob(300, 5, 3, 2);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        let batch = forest.score_batch(data.view()).unwrap();
        for (r, row) in data.rows().into_iter().enumerate() {
            assert_eq!(batch[r], forest.score(row.as_slice().unwrap()).unwrap());
        }
    }

    #[test]
    fn validate_catches_malformed_trees() {
        let data = blob(100, 0, 2, 8);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        assert_eq!(forest.validate(), Ok(()));
        let root = forest.roots[0] as usize;
        let mut cycle = forest.clone();
        cycle.nodes[root + 1].left = root as u32;
        assert!(cycle.validate().is_err());
        let mut feature = forest.clone();
        feature.nodes[root].feature = 9;
        assert!(feature.validate().is_err());
        let mut sizes = forest;
        sizes.leaf_path.pop();
        assert!(sizes.validate().is_err());
    }

    /// The scores of `data` by walking `nodes` one row at a time, as before the [`Layout`].
    fn reference_scores(forest: &IsolationForest, data: &Array2<f64>) -> Vec<f64> {
        data.rows()
            .into_iter()
            .map(|row| forest.to_score(forest.path_sum_nodes(row.as_slice().unwrap())))
            .collect()
    }

    /// The scores of `data` by each batch path this machine has, named.
    fn batch_paths(forest: &IsolationForest, data: &Array2<f64>) -> Vec<(&'static str, Vec<f64>)> {
        let layout = forest.layout.as_ref().unwrap();
        let (x, d) = (data.as_slice().unwrap(), data.ncols());
        let scores = |sums: Vec<f64>| sums.into_iter().map(|s| forest.to_score(s)).collect();
        let mut sums = vec![0.0; data.nrows()];
        layout.path_sums_scalar(x, d, &mut sums);
        #[allow(unused_mut)]
        let mut paths = vec![("scalar", scores(sums))];
        #[cfg(target_arch = "x86_64")]
        {
            let mut sums = vec![0.0; data.nrows()];
            if avx512::path_sums(layout, x, d, &mut sums) {
                paths.push(("avx512", scores(sums)));
            }
        }
        paths
    }

    /// Whether this CPU has what the AVX-512 batch path needs, asked of `std`, not of `pulp`.
    fn has_avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512cd")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    #[test]
    fn layout_scores_equal_the_node_walk() {
        // (training rows, features, trees, sample size): layouts of 16, 256 and 4096 slots,
        // rows 8, 16 and 64 wide, trees not a multiple of the lanes, and a forest too wide
        // for a layout.
        let shapes = [
            (40, 1, 1, 2),
            (40, 3, 7, 16),
            (200, 8, 9, 17),
            (300, 9, 100, 256),
            (600, 17, 10, 300),
            (100, 64, 5, 64),
            (100, 65, 5, 64),
        ];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        for (i, &(rows, d, trees, sample_size)) in shapes.iter().enumerate() {
            let data = blob(rows, 3, d, i as u64);
            let p = ForestParams {
                trees,
                sample_size,
                seed: i as u64,
            };
            let forest = IsolationForest::fit(data.view(), &p).unwrap();
            assert_eq!(forest.layout.is_some(), d <= 64, "shape {i}");
            // Off-data points, training rows, and points lying exactly on thresholds.
            for n in [0, 1, 11, 12, 13, 263, 264, 265, 700] {
                let mut probe = Array2::from_shape_fn((n, d), |_| rng.random_range(-3.0..3.0));
                for (r, mut row) in probe.rows_mut().into_iter().enumerate() {
                    if r % 3 == 1 {
                        row.assign(&data.row(r % data.nrows()));
                    } else if r % 3 == 2 {
                        let node = forest.nodes[r % forest.nodes.len()];
                        row[node.feature as usize] = node.value;
                    }
                }
                let want = reference_scores(&forest, &probe);
                let batch = forest.score_batch(probe.view()).unwrap();
                assert_eq!(batch.to_vec(), want, "shape {i}, {n} rows");
                if let Some(layout) = &forest.layout {
                    let paths = batch_paths(&forest, &probe);
                    // Rows up to 16 wide in trees up to 256 slots go 16 to a vector here.
                    let vector = has_avx512() && layout.slots <= 256 && layout.width <= 16;
                    assert_eq!(paths.len(), 1 + usize::from(vector), "shape {i}");
                    for (path, scores) in paths {
                        assert_eq!(scores, want, "shape {i}, {n} rows, {path}");
                    }
                }
                let parallel = forest.score_batch_parallel(probe.view(), 2).unwrap();
                assert_eq!(parallel.to_vec(), want, "shape {i}, {n} rows, 2 threads");
                for (row, want) in probe.rows().into_iter().zip(&want) {
                    assert_eq!(forest.score(row.as_slice().unwrap()).unwrap(), *want);
                }
            }
        }
    }

    #[test]
    fn decoding_rebuilds_the_layout_and_keeps_the_format() {
        let data = blob(300, 5, 3, 12);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        let config = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&forest, config).unwrap();
        let (decoded, _): (IsolationForest, _) =
            bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(decoded, forest);
        assert!(decoded.layout.is_some());
        // The same bytes as the derive on the serialized fields wrote before the layout.
        #[derive(bincode::Encode)]
        struct Serialized<'a> {
            n_features: u32,
            psi: u32,
            c_psi: f64,
            limit: u32,
            roots: &'a [u32],
            nodes: &'a [Node],
            leaf_path: &'a [f64],
            sizes: &'a [u32],
        }
        let old = Serialized {
            n_features: forest.n_features,
            psi: forest.psi,
            c_psi: forest.c_psi,
            limit: forest.limit,
            roots: &forest.roots,
            nodes: &forest.nodes,
            leaf_path: &forest.leaf_path,
            sizes: &forest.sizes,
        };
        assert_eq!(bincode::encode_to_vec(&old, config).unwrap(), bytes);
        // A malformed forest decodes without a layout, for `validate` to reject.
        let mut bad = forest.clone();
        bad.nodes[bad.roots[0] as usize + 1].left = bad.roots[0];
        let bytes = bincode::encode_to_vec(&bad, config).unwrap();
        let (decoded, _): (IsolationForest, _) =
            bincode::decode_from_slice(&bytes, config).unwrap();
        assert!(decoded.layout.is_none() && decoded.validate().is_err());
    }

    #[test]
    fn parallel_batch_equals_sequential() {
        let data = blob(3000, 7, 3, 9);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        let seq = forest.score_batch(data.view()).unwrap();
        for threads in [1, 2, 3, 64] {
            assert_eq!(
                forest.score_batch_parallel(data.view(), threads).unwrap(),
                seq
            );
        }
    }

    #[test]
    fn every_tree_respects_the_height_limit_and_sample_counts() {
        let data = blob(1000, 0, 3, 3);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        assert_eq!(forest.n_trees(), 100);
        for &root in &forest.roots {
            assert_eq!(forest.sizes[root as usize], 256);
            let mut stack = vec![(root as usize, 0usize)];
            while let Some((i, depth)) = stack.pop() {
                let n = forest.nodes[i];
                if n.left as usize == i {
                    assert!(depth <= 8);
                    let want = depth as f64 + average_path_length(forest.sizes[i] as usize);
                    assert_eq!(forest.leaf_path[i], want);
                } else {
                    let (l, r) = (n.left as usize, n.left as usize + 1);
                    assert!(forest.sizes[l] > 0 && forest.sizes[r] > 0);
                    assert_eq!(forest.sizes[l] + forest.sizes[r], forest.sizes[i]);
                    stack.push((l, depth + 1));
                    stack.push((r, depth + 1));
                }
            }
        }
    }

    #[test]
    fn explanation_names_the_feature_that_isolates() {
        // Feature 2 alone separates the outlier; features 0 and 1 are ordinary.
        let mut data = blob(400, 0, 3, 4);
        data[[0, 2]] = 50.0;
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        let shares = forest.explain(data.row(0).as_slice().unwrap()).unwrap();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(shares[2] > 0.5, "{shares:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let data = blob(10, 0, 2, 5);
        let p = ForestParams::default();
        let zero = ForestParams { trees: 0, ..p };
        assert_eq!(
            IsolationForest::fit(data.view(), &zero),
            Err(ForestError::NoTrees)
        );
        let mut nan = data.clone();
        nan[[3, 1]] = f64::NAN;
        assert_eq!(
            IsolationForest::fit(nan.view(), &p),
            Err(ForestError::NotFinite { row: 3, feature: 1 })
        );
        let forest = IsolationForest::fit(data.view(), &p).unwrap();
        assert_eq!(forest.sample_size(), 10);
        assert_eq!(
            forest.score(&[1.0]),
            Err(ForestError::WrongLength {
                expected: 2,
                found: 1
            })
        );
    }

    #[test]
    fn constant_data_gives_leaves_at_the_root() {
        let data = Array2::from_elem((50, 2), 3.0);
        let forest = IsolationForest::fit(data.view(), &ForestParams::default()).unwrap();
        // Every point lands in a root leaf holding all psi samples: h = c(psi), s = 0.5.
        assert!((forest.score(&[3.0, 3.0]).unwrap() - 0.5).abs() < 1e-12);
    }

    /// Values a threshold comparison can go wrong on: both zeros, infinities, NaN, training
    /// values, thresholds and their neighbours.
    fn edge_value(forest: &IsolationForest, data: &Array2<f64>, rng: &mut impl Rng) -> f64 {
        let node = forest.nodes[rng.random_range(0..forest.nodes.len())];
        let t = if node.value.is_finite() {
            node.value
        } else {
            0.0
        };
        match rng.random_range(0..10) {
            0 => 0.0,
            1 => -0.0,
            2 => [f64::INFINITY, f64::NEG_INFINITY, f64::NAN][rng.random_range(0..3)],
            3 => {
                data[[
                    rng.random_range(0..data.nrows()),
                    rng.random_range(0..data.ncols()),
                ]]
            }
            4 | 5 => t,
            6 => t.next_up(),
            7 => t.next_down(),
            _ => rng.random_range(-4.0..4.0),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Batch, parallel and single scoring (and the mean path length) agree bit for bit
        /// with the node walk, on random forests and on points where comparisons are exact.
        #[test]
        fn every_scoring_path_equals_the_node_walk(
            seed in any::<u64>(),
            rows in 2usize..400,
            d in 1usize..10,
            trees in 1usize..24,
            sample_size in 2usize..600,
            probes in 0usize..600,
            coarse in any::<bool>(),
        ) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            // Coarse data: few distinct values, signed zeros among them, so cuts repeat.
            let data = Array2::from_shape_fn((rows, d), |_| {
                if coarse {
                    f64::from(rng.random_range(-3i8..=3)) * 0.5
                } else {
                    rng.random_range(-2.0..2.0)
                }
            });
            let p = ForestParams { trees, sample_size, seed };
            let forest = IsolationForest::fit(data.view(), &p).unwrap();
            prop_assert!(forest.layout.is_some());
            let probe = Array2::from_shape_fn((probes, d), |_| edge_value(&forest, &data, &mut rng));
            let want = reference_scores(&forest, &probe);
            let bits = |v: &[f64]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
            let batch = forest.score_batch(probe.view()).unwrap();
            prop_assert_eq!(bits(batch.as_slice().unwrap()), bits(&want));
            for (path, scores) in batch_paths(&forest, &probe) {
                prop_assert_eq!(bits(&scores), bits(&want), "{}", path);
            }
            let parallel = forest.score_batch_parallel(probe.view(), 2).unwrap();
            prop_assert_eq!(bits(parallel.as_slice().unwrap()), bits(&want));
            for (row, want) in probe.rows().into_iter().zip(&want) {
                let row = row.as_slice().unwrap();
                prop_assert_eq!(forest.score(row).unwrap().to_bits(), want.to_bits());
                let mean = forest.path_sum_nodes(row) / forest.n_trees() as f64;
                prop_assert_eq!(forest.mean_path_length(row).unwrap().to_bits(), mean.to_bits());
            }
        }

        #[test]
        fn scores_are_in_range_and_deterministic(
            seed in any::<u64>(),
            rows in 2usize..120,
            d in 1usize..5,
            probe in proptest::collection::vec(-1e6f64..1e6, 4),
        ) {
            let data = blob(rows, 0, d, seed ^ 0x5eed);
            let p = ForestParams { trees: 20, sample_size: 64, seed };
            let a = IsolationForest::fit(data.view(), &p).unwrap();
            let b = IsolationForest::fit(data.view(), &p).unwrap();
            prop_assert_eq!(&a, &b);
            let s = a.score(&probe[..d]).unwrap();
            prop_assert!(s > 0.0 && s <= 1.0, "score {}", s);
            prop_assert_eq!(s, b.score(&probe[..d]).unwrap());
            for v in a.score_batch(data.view()).unwrap() {
                prop_assert!(v > 0.0 && v <= 1.0);
            }
        }
    }
}
