//! A fitted model: one or more Isolation Forests over groups of the schema's columns, with
//! the feature schema, threshold and training metadata, and its file format.
//!
//! # Feature groups
//! One forest over many features dilutes a sparse extreme: with a height limit of
//! `ceil(log2 psi)`, a vector unusual in two of thirty columns is rarely split on them. A
//! grouped model fits one forest per group of related columns (volume, endpoints, objects,
//! clients, ...) and scores a vector by its most anomalous group. Each group's score is first
//! mapped linearly so that its median and its `1 - contamination` quantile on the training
//! data land on the means of those figures over all groups, so no group dominates only for
//! scoring higher on everything. A model with one group scores exactly as its forest.
//!
//! # Tails
//! A forest cannot extrapolate: its cuts are drawn inside the training range, so a vector ten
//! times beyond the most extreme training row is isolated no sooner than that row, and in a
//! forest over thirty columns one extreme column is rarely cut on at all. A model may carry
//! [`Tails`]: for chosen columns, an exponential fitted to the training rows above a high
//! quantile (peaks over threshold). The evidence of a vector is the largest
//! `L = -log10 P(X > x)` over those columns, and `L / (L + scale)` competes with the forest's
//! score; the higher decides. So "one in 10^20" reads as such, however few columns say it.
//!
//!
//! # File format
//! ```text
//! magic        8 bytes  "PLSDIFM\0"
//! version      u32 LE   FORMAT_VERSION (1: one forest over every column; 2: groups;
//!                       3: optional tails)
//! header len   u32 LE
//! header       bincode  ModelHeader (schema names and hash, training metadata, threshold;
//!                       from version 2 also the groups: name, columns, calibration;
//!                       from version 3 also the tails, if any)
//! body len     u64 LE
//! body         bincode  IsolationForest (version 1) or Vec<IsolationForest>, one per group
//! checksum     u64 LE   FNV-1a 64 over everything before it
//! ```
//! A model never scores vectors of another schema: callers pass the [`Schema`] their vectors
//! follow, and its hash must equal the model's.

use std::path::Path;

use ndarray::{Array1, ArrayView2, Axis};

use super::forest::{ForestError, ForestParams, IsolationForest};

/// First bytes of every model file.
pub const MAGIC: [u8; 8] = *b"PLSDIFM\0";
/// Version of the layout after the magic; bumped on any incompatible change. Version 1
/// (one forest) and 2 (groups) files are still read.
pub const FORMAT_VERSION: u32 = 3;
/// Smallest tail scale, in feature units: a column whose training tail is flat (every row
/// above the quantile equal) still needs a finite scale.
const MIN_TAIL_BETA: f64 = 0.01;
/// Largest header accepted, against absurd lengths in corrupt files.
const MAX_HEADER: u32 = 1 << 20;

/// Why a model cannot be fitted, loaded, saved or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The forest refused the data.
    #[error(transparent)]
    Forest(#[from] ForestError),
    /// Vectors of one schema offered to a model of another.
    #[error(
        "feature schema mismatch: the model was trained on [{expected}] (hash {expected_hash:016x}), \
         the input has [{found}] (hash {found_hash:016x})"
    )]
    SchemaMismatch {
        /// The model's feature names.
        expected: String,
        /// Its schema hash.
        expected_hash: u64,
        /// The input's feature names.
        found: String,
        /// Their hash.
        found_hash: u64,
    },
    /// The file does not start with [`MAGIC`].
    #[error("not a palisade model file (bad magic)")]
    BadMagic,
    /// A format this build cannot read.
    #[error("unsupported model format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
    },
    /// The file ends early.
    #[error("model file is truncated: {0}")]
    Truncated(&'static str),
    /// The checksum does not match the content.
    #[error("model file is corrupt: checksum mismatch")]
    Checksum,
    /// Bytes that do not decode, or decode to something inconsistent.
    #[error("model file is corrupt: {0}")]
    Corrupt(String),
    /// A contamination or cut outside its range.
    #[error("{0}")]
    BadThreshold(String),
    /// Feature groups that do not partition part of the schema.
    #[error("bad feature groups: {0}")]
    BadGroups(String),
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// The ordered feature names vectors follow, and their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    names: Vec<String>,
    hash: u64,
}

impl Schema {
    /// A schema of `names`, in order.
    pub fn new(names: Vec<String>) -> Self {
        let mut bytes = Vec::new();
        for n in &names {
            bytes.extend_from_slice(n.as_bytes());
            bytes.push(0);
        }
        let hash = fnv1a(&bytes);
        Self { names, hash }
    }

    /// The feature names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// FNV-1a 64 of the names, each followed by a NUL byte: stable across builds.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no features.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Where the anomaly threshold comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdSpec {
    /// The share of training rows expected to be anomalous, in `(0, 0.5]`: the threshold is the
    /// `1 - contamination` quantile of the training scores (numpy's linear percentile, as
    /// scikit-learn's `offset_`).
    Contamination(f64),
    /// An explicit score cut in `(0, 1)`; scikit-learn's `contamination="auto"` is `Cut(0.5)`.
    Cut(f64),
}

impl ThresholdSpec {
    fn validate(self) -> Result<(), ModelError> {
        match self {
            Self::Contamination(c) if !(c > 0.0 && c <= 0.5) => Err(ModelError::BadThreshold(
                format!("contamination must be in (0, 0.5], got {c}"),
            )),
            Self::Cut(t) if !(t > 0.0 && t < 1.0) => Err(ModelError::BadThreshold(format!(
                "threshold must be in (0, 1), got {t}"
            ))),
            _ => Ok(()),
        }
    }
}

/// How and when a model was trained.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct TrainingMeta {
    /// Trees in the forest.
    pub trees: u32,
    /// Subsample size per tree (after capping at the row count).
    pub sample_size: u32,
    /// Generator seed.
    pub seed: u64,
    /// Training rows.
    pub n_samples: u64,
    /// When it was fitted, ms since the Unix epoch (passed in by the caller).
    pub trained_at_ms: u64,
    /// Contamination the threshold came from, if any.
    pub contamination: Option<f64>,
    /// Scores above this are anomalous.
    pub threshold: f64,
}

#[derive(Debug, bincode::Encode, bincode::Decode)]
struct ModelHeader {
    schema_hash: u64,
    feature_names: Vec<String>,
    meta: TrainingMeta,
}

#[derive(Debug, bincode::Encode, bincode::Decode)]
struct ModelHeaderV2 {
    schema_hash: u64,
    feature_names: Vec<String>,
    meta: TrainingMeta,
    groups: Vec<GroupHeader>,
    /// The medians and cuts every group's scores are mapped onto.
    reference: Calibration,
}

#[derive(Debug, bincode::Encode, bincode::Decode)]
struct ModelHeaderV3 {
    schema_hash: u64,
    feature_names: Vec<String>,
    meta: TrainingMeta,
    groups: Vec<GroupHeader>,
    reference: Calibration,
    tails: Option<Tails>,
}

/// How to fit a model's [`Tails`].
#[derive(Debug, Clone, PartialEq)]
pub struct TailParams {
    /// The quantile the fitted tail starts at, in `(0, 1)` (0.9: the top tenth of rows).
    pub quantile: f64,
    /// Evidence `L` maps to the score `L / (L + scale)`; `scale > 0`.
    pub scale: f64,
    /// Columns of the schema the tails are fitted on.
    pub columns: Vec<usize>,
}

/// The upper tails of some columns of the training data: above `u` (the quantile), an
/// exponential of scale `beta` (from the median excess), so
/// `P(X > x) = (1 - quantile) exp(-(x - u) / beta)`.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct Tails {
    quantile: f64,
    scale: f64,
    columns: Vec<u32>,
    u: Vec<f64>,
    beta: Vec<f64>,
}

impl Tails {
    /// Fits the tails of `params.columns` of `data` (columns in range; checked by the caller).
    fn fit(data: ArrayView2<'_, f64>, params: &TailParams) -> Result<Self, ModelError> {
        let q = params.quantile;
        if !(q > 0.0 && q < 1.0 && params.scale > 0.0 && params.scale.is_finite()) {
            return Err(ModelError::BadThreshold(format!(
                "tails: quantile must be in (0, 1) and scale > 0, got {q} and {}",
                params.scale
            )));
        }
        let (mut u, mut beta) = (Vec::new(), Vec::new());
        for &c in &params.columns {
            let column: Vec<f64> = data
                .column(c)
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            let at = percentile(column.clone(), q);
            let above: Vec<f64> = column.iter().filter(|v| **v > at).map(|v| v - at).collect();
            // The median excess of an exponential is beta ln 2. The median, not the mean: a
            // few rows far out (an attacker already in the training data) barely move it.
            let beta_hat = if above.is_empty() {
                0.0
            } else {
                percentile(above, 0.5) / std::f64::consts::LN_2
            };
            u.push(if at.is_finite() { at } else { 0.0 });
            beta.push(beta_hat.max(MIN_TAIL_BETA));
        }
        Ok(Self {
            quantile: q,
            scale: params.scale,
            columns: params.columns.iter().map(|c| *c as u32).collect(),
            u,
            beta,
        })
    }

    /// Finite, in range, and as many thresholds and scales as columns.
    fn validate(&self, n: usize) -> Result<(), ModelError> {
        let ok = self.quantile > 0.0
            && self.quantile < 1.0
            && self.scale > 0.0
            && self.scale.is_finite()
            && self.u.len() == self.columns.len()
            && self.beta.len() == self.columns.len()
            && self.columns.iter().all(|c| (*c as usize) < n)
            && self.u.iter().all(|v| v.is_finite())
            && self
                .beta
                .iter()
                .all(|b| b.is_finite() && *b >= MIN_TAIL_BETA);
        if ok {
            Ok(())
        } else {
            Err(ModelError::Corrupt("tails out of range".into()))
        }
    }

    /// `-log10 P(X > x[c])` for every tail column, 0 where `x[c]` is not above the quantile.
    fn evidence<'a>(&'a self, x: &'a [f64]) -> impl Iterator<Item = (usize, f64)> + 'a {
        let base = -(1.0 - self.quantile).log10();
        self.columns.iter().enumerate().map(move |(i, &c)| {
            let v = x.get(c as usize).copied().unwrap_or(0.0);
            let l = if v > self.u[i] {
                base + (v - self.u[i]) / (self.beta[i] * std::f64::consts::LN_10)
            } else {
                0.0
            };
            (c as usize, l)
        })
    }

    /// The score of `x`'s strongest evidence, `L / (L + scale)`.
    fn score(&self, x: &[f64]) -> f64 {
        let l = self.evidence(x).map(|(_, l)| l).fold(0.0, f64::max);
        l / (l + self.scale)
    }

    /// The tail columns' shares of `x`'s evidence (in proportion to `L`), in schema order.
    fn shares(&self, x: &[f64], n: usize) -> Vec<f64> {
        let mut shares = vec![0.0; n];
        let mut total = 0.0;
        for (c, l) in self.evidence(x) {
            if let Some(s) = shares.get_mut(c) {
                *s += l;
                total += l;
            }
        }
        if total > 0.0 {
            shares.iter_mut().for_each(|s| *s /= total);
        }
        shares
    }
}

#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
struct GroupHeader {
    name: String,
    columns: Vec<u32>,
    calibration: Calibration,
}

/// Two points of a score distribution a linear map sends onto another's.
#[derive(Debug, Clone, Copy, PartialEq, bincode::Encode, bincode::Decode)]
pub struct Calibration {
    /// Median over owners of each owner's highest training score.
    pub median: f64,
    /// `1 - contamination` quantile (1 % without one) over owners of each owner's highest
    /// training score.
    pub cut: f64,
}

impl Calibration {
    /// From the training `scores` of rows owned by `owners` (same length).
    fn of(scores: &[f64], owners: &[u64], contamination: f64) -> Self {
        let peaks = owner_peaks(scores, owners);
        Self {
            median: percentile(peaks.clone(), 0.5),
            cut: percentile(peaks, 1.0 - contamination),
        }
    }

    /// `score` of a distribution calibrated as `self`, mapped onto `to`.
    fn map(&self, to: &Calibration, score: f64) -> f64 {
        let spread = self.cut - self.median;
        if spread > 1e-9 {
            to.median + (score - self.median) * (to.cut - to.median) / spread
        } else {
            score - self.cut + to.cut
        }
    }
}

/// Each owner's highest score.
fn owner_peaks(scores: &[f64], owners: &[u64]) -> Vec<f64> {
    let mut peaks: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
    for (s, o) in scores.iter().zip(owners) {
        let p = peaks.entry(*o).or_insert(f64::NEG_INFINITY);
        *p = p.max(*s);
    }
    peaks.into_values().collect()
}

/// Columns of a model's schema one forest was fitted on.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    name: String,
    columns: Vec<usize>,
    calibration: Calibration,
    forest: IsolationForest,
}

impl Group {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its columns in the model's schema.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// Its forest.
    pub fn forest(&self) -> &IsolationForest {
        &self.forest
    }
}

/// Which columns a grouped model fits one forest on.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Name, shown in explanations.
    pub name: String,
    /// Column indices in the schema.
    pub columns: Vec<usize>,
}

/// A forest, or several over groups of columns, bound to a schema and threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    schema: Schema,
    meta: TrainingMeta,
    groups: Vec<Group>,
    reference: Calibration,
    tails: Option<Tails>,
}

/// A score and what drove it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Anomaly score in `(0, 1]`.
    pub score: f64,
    /// True when above the model's threshold.
    pub anomalous: bool,
    /// Features by share of the isolation, largest first, zero shares left out.
    pub drivers: Vec<Driver>,
}

/// One feature's part in a score.
#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    /// Feature name.
    pub feature: String,
    /// Its value in the scored vector.
    pub value: f64,
    /// Its share of the isolation, in `[0, 1]`.
    pub share: f64,
}

impl Scored {
    /// The top `n` drivers as `name=value (share%)`, comma-separated: for a log line or a
    /// verdict's reason.
    pub fn explanation(&self, n: usize) -> String {
        self.drivers
            .iter()
            .take(n)
            .map(|d| format!("{}={} ({:.0}%)", d.feature, d.value, d.share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Model {
    /// Fits one forest over every column of `data`, whose columns follow `schema`. `now_ms`
    /// is recorded as the training time.
    pub fn fit(
        schema: Schema,
        data: ArrayView2<'_, f64>,
        params: &ForestParams,
        threshold: ThresholdSpec,
        now_ms: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        let all = [GroupSpec {
            name: "all".into(),
            columns: (0..schema.len()).collect(),
        }];
        let rows: Vec<u64> = (0..data.nrows() as u64).collect();
        Self::fit_grouped(
            schema, data, &rows, &all, None, params, threshold, now_ms, progress,
        )
    }

    /// Fits one forest of `params` per group of columns (group `i` seeded `seed + i`). With
    /// several groups a vector's score is its most anomalous group's, calibrated (see the
    /// module documentation). `owners[i]` names who row `i` describes (an API key's hash, or
    /// the row itself): calibration and the contamination threshold count owners, not rows,
    /// so a share of *keys* is anomalous however many rows each gave. With `tails`, the model
    /// also carries [`Tails`] fitted on `data`. `progress` sees trees over all groups.
    #[allow(clippy::too_many_arguments)]
    pub fn fit_grouped(
        schema: Schema,
        data: ArrayView2<'_, f64>,
        owners: &[u64],
        groups: &[GroupSpec],
        tails: Option<&TailParams>,
        params: &ForestParams,
        threshold: ThresholdSpec,
        now_ms: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, ModelError> {
        threshold.validate()?;
        if data.ncols() != schema.len() {
            return Err(ForestError::WrongLength {
                expected: schema.len(),
                found: data.ncols(),
            }
            .into());
        }
        check_groups(
            groups
                .iter()
                .map(|g| (g.name.as_str(), g.columns.as_slice())),
            schema.len(),
        )?;
        if owners.len() != data.nrows() {
            return Err(ModelError::BadGroups(format!(
                "{} owners for {} rows",
                owners.len(),
                data.nrows()
            )));
        }
        // The calibration's upper point: the contamination, else 1 %.
        let tail = match threshold {
            ThresholdSpec::Contamination(c) => c,
            ThresholdSpec::Cut(_) => 0.01,
        };
        let tails = match tails {
            Some(t) => {
                if let Some(c) = t.columns.iter().find(|c| **c >= schema.len()) {
                    return Err(ModelError::BadGroups(format!(
                        "tail column {c}, the schema has {}",
                        schema.len()
                    )));
                }
                Some(Tails::fit(data, t)?)
            }
            None => None,
        };
        let total = groups.len() * params.trees;
        let mut fitted = Vec::with_capacity(groups.len());
        for (i, spec) in groups.iter().enumerate() {
            let sub = data.select(Axis(1), &spec.columns);
            let p = ForestParams {
                seed: params.seed.wrapping_add(i as u64),
                ..*params
            };
            let done = i * params.trees;
            let forest = IsolationForest::fit_with_progress(sub.view(), &p, &mut |t, _| {
                progress(done + t, total)
            })?;
            let scores = forest.score_batch(sub.view())?;
            let calibration = Calibration::of(&scores.to_vec(), owners, tail);
            fitted.push(Group {
                name: spec.name.clone(),
                columns: spec.columns.clone(),
                calibration,
                forest,
            });
        }
        let n = fitted.len().max(1) as f64;
        let reference = Calibration {
            median: fitted.iter().map(|g| g.calibration.median).sum::<f64>() / n,
            cut: fitted.iter().map(|g| g.calibration.cut).sum::<f64>() / n,
        };
        let first = fitted.first().map(|g| &g.forest);
        let mut model = Self {
            schema,
            meta: TrainingMeta {
                trees: first.map_or(0, |f| f.n_trees()) as u32,
                sample_size: first.map_or(0, |f| f.sample_size()) as u32,
                seed: params.seed,
                n_samples: data.nrows() as u64,
                trained_at_ms: now_ms,
                contamination: None,
                threshold: 0.5,
            },
            groups: fitted,
            reference,
            tails,
        };
        match threshold {
            ThresholdSpec::Cut(t) => model.meta.threshold = t,
            ThresholdSpec::Contamination(c) => {
                // Over the forests' scores: the tails' are probabilities already, and keys
                // far out in the training data would otherwise lift the cut above themselves.
                let tails = model.tails.take();
                let scores = model.combined_batch(data);
                model.tails = tails;
                model.meta.threshold = percentile(owner_peaks(&scores?.to_vec(), owners), 1.0 - c);
                model.meta.contamination = Some(c);
            }
        }
        Ok(model)
    }

    /// The feature schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Training metadata and threshold.
    pub fn meta(&self) -> &TrainingMeta {
        &self.meta
    }

    /// The forests, one per group of columns.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The tails, if the model carries them.
    pub fn tails(&self) -> Option<&Tails> {
        self.tails.as_ref()
    }

    /// What index `i` of [`Model::score_row`] names: a group's name, or `tail` for the tails.
    pub fn part_name(&self, i: usize) -> &str {
        self.groups.get(i).map_or("tail", |g| g.name())
    }

    /// Scores a vector of `schema`.
    pub fn score(&self, schema: &Schema, x: &[f64]) -> Result<f64, ModelError> {
        self.check_schema(schema)?;
        Ok(self.score_row(x)?.0)
    }

    /// The score of `x`, a vector of the model's own schema (the caller checked that once,
    /// say when it put the model in use), and the index of the group that gave it.
    pub fn score_row(&self, x: &[f64]) -> Result<(f64, usize), ForestError> {
        if x.len() != self.schema.len() {
            return Err(ForestError::WrongLength {
                expected: self.schema.len(),
                found: x.len(),
            });
        }
        let mut best = (f64::NEG_INFINITY, 0);
        if let [only] = self.groups.as_slice() {
            best = (only.forest.score(&gather(x, &only.columns))?, 0);
        } else {
            for (i, g) in self.groups.iter().enumerate() {
                let s = g.forest.score(&gather(x, &g.columns))?;
                let s = g.calibration.map(&self.reference, s);
                if s > best.0 {
                    best = (s, i);
                }
            }
        }
        if let Some(t) = &self.tails {
            let s = t.score(x);
            if s > best.0 {
                best = (s, self.groups.len());
            }
        }
        Ok(best)
    }

    /// How much each column drove `x`'s score (shares of the deciding group's isolation,
    /// summing to 1; zero for other groups' columns), with that group's index. `x` follows the
    /// model's schema, as for [`Model::score_row`].
    pub fn explain_row(&self, x: &[f64]) -> Result<(Vec<f64>, usize), ForestError> {
        let (_, group) = self.score_row(x)?;
        if let (Some(t), true) = (&self.tails, group == self.groups.len()) {
            return Ok((t.shares(x, self.schema.len()), group));
        }
        let mut shares = vec![0.0; self.schema.len()];
        if let Some(g) = self.groups.get(group) {
            for (share, &c) in g
                .forest
                .explain(&gather(x, &g.columns))?
                .iter()
                .zip(&g.columns)
            {
                shares[c] = *share;
            }
        }
        Ok((shares, group))
    }

    /// Scores a vector of `schema` and explains the score.
    pub fn score_explained(&self, schema: &Schema, x: &[f64]) -> Result<Scored, ModelError> {
        self.check_schema(schema)?;
        let (score, _) = self.score_row(x)?;
        let (shares, _) = self.explain_row(x)?;
        let mut drivers: Vec<Driver> = shares
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > 0.0)
            .map(|(i, s)| Driver {
                feature: self.schema.names[i].clone(),
                value: x[i],
                share: *s,
            })
            .collect();
        drivers.sort_by(|a, b| b.share.total_cmp(&a.share));
        Ok(Scored {
            score,
            anomalous: score > self.meta.threshold,
            drivers,
        })
    }

    /// Scores every row of `data`, whose columns follow `schema`.
    pub fn score_batch(
        &self,
        schema: &Schema,
        data: ArrayView2<'_, f64>,
    ) -> Result<Array1<f64>, ModelError> {
        self.check_schema(schema)?;
        self.combined_batch(data)
    }

    /// As [`Model::score_batch`], on `threads` threads (offline use).
    pub fn score_batch_parallel(
        &self,
        schema: &Schema,
        data: ArrayView2<'_, f64>,
        threads: usize,
    ) -> Result<Array1<f64>, ModelError> {
        self.check_schema(schema)?;
        self.combine(data, |f, sub| f.score_batch_parallel(sub, threads))
    }

    fn combined_batch(&self, data: ArrayView2<'_, f64>) -> Result<Array1<f64>, ModelError> {
        self.combine(data, |f, sub| f.score_batch(sub))
    }

    /// Each group's batch scores of its columns of `data`, calibrated, and their maximum.
    fn combine(
        &self,
        data: ArrayView2<'_, f64>,
        score: impl Fn(&IsolationForest, ArrayView2<'_, f64>) -> Result<Array1<f64>, ForestError>,
    ) -> Result<Array1<f64>, ModelError> {
        if data.ncols() != self.schema.len() {
            return Err(ForestError::WrongLength {
                expected: self.schema.len(),
                found: data.ncols(),
            }
            .into());
        }
        let mut best = if let [only] = self.groups.as_slice()
            && only.columns.iter().copied().eq(0..data.ncols())
        {
            score(&only.forest, data)?
        } else {
            let mut best = Array1::from_elem(data.nrows(), f64::NEG_INFINITY);
            let single = self.groups.len() == 1;
            for g in &self.groups {
                let scores = score(&g.forest, data.select(Axis(1), &g.columns).view())?;
                for (b, s) in best.iter_mut().zip(scores) {
                    let s = if single {
                        s
                    } else {
                        g.calibration.map(&self.reference, s)
                    };
                    *b = b.max(s);
                }
            }
            best
        };
        if let Some(t) = &self.tails {
            for (b, row) in best.iter_mut().zip(data.rows()) {
                let s = match row.as_slice() {
                    Some(x) => t.score(x),
                    None => t.score(&row.to_vec()),
                };
                *b = b.max(s);
            }
        }
        Ok(best)
    }

    fn check_schema(&self, schema: &Schema) -> Result<(), ModelError> {
        if schema.hash == self.schema.hash && schema.names == self.schema.names {
            return Ok(());
        }
        Err(ModelError::SchemaMismatch {
            expected: self.schema.names.join(","),
            expected_hash: self.schema.hash,
            found: schema.names.join(","),
            found_hash: schema.hash,
        })
    }

    /// The model as file bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let config = bincode::config::standard();
        let header = ModelHeaderV3 {
            schema_hash: self.schema.hash,
            feature_names: self.schema.names.clone(),
            meta: self.meta.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| GroupHeader {
                    name: g.name.clone(),
                    columns: g.columns.iter().map(|c| *c as u32).collect(),
                    calibration: g.calibration,
                })
                .collect(),
            reference: self.reference,
            tails: self.tails.clone(),
        };
        let header = bincode::encode_to_vec(&header, config)
            .map_err(|e| ModelError::Corrupt(format!("encoding the header: {e}")))?;
        let forests: Vec<&IsolationForest> = self.groups.iter().map(|g| &g.forest).collect();
        let body = bincode::encode_to_vec(&forests, config)
            .map_err(|e| ModelError::Corrupt(format!("encoding the forests: {e}")))?;
        let mut out = Vec::with_capacity(32 + header.len() + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Reads a model from file bytes, checking magic, version, lengths, checksum and that the
    /// schema hash and the forest agree with the header.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8, "magic")? != MAGIC {
            return Err(ModelError::BadMagic);
        }
        let version = u32::from_le_bytes(r.array("format version")?);
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(ModelError::UnsupportedVersion { found: version });
        }
        let header_len = u32::from_le_bytes(r.array("header length")?);
        if header_len > MAX_HEADER {
            return Err(ModelError::Corrupt(format!(
                "header length {header_len} is implausible"
            )));
        }
        let header = r.take(header_len as usize, "header")?;
        let body_len = u64::from_le_bytes(r.array("body length")?);
        let body_len = usize::try_from(body_len)
            .ok()
            .filter(|n| *n <= bytes.len())
            .ok_or(ModelError::Truncated("forest"))?;
        let body = r.take(body_len, "forest")?;
        let covered = r.pos;
        let sum = u64::from_le_bytes(r.array("checksum")?);
        if r.pos != bytes.len() {
            return Err(ModelError::Corrupt(
                "trailing bytes after the checksum".into(),
            ));
        }
        if fnv1a(&bytes[..covered]) != sum {
            return Err(ModelError::Checksum);
        }
        let (header, forests) = decode(version, header, body)?;
        let schema = Schema::new(header.feature_names);
        if schema.hash != header.schema_hash {
            return Err(ModelError::Corrupt(
                "schema hash does not match the feature names".into(),
            ));
        }
        if header.groups.len() != forests.len() || forests.is_empty() {
            return Err(ModelError::Corrupt(format!(
                "{} groups in the header, {} forests",
                header.groups.len(),
                forests.len()
            )));
        }
        let columns: Vec<Vec<usize>> = header
            .groups
            .iter()
            .map(|g| g.columns.iter().map(|c| *c as usize).collect())
            .collect();
        check_groups(
            header
                .groups
                .iter()
                .zip(&columns)
                .map(|(g, c)| (g.name.as_str(), c.as_slice())),
            schema.len(),
        )
        .map_err(|e| ModelError::Corrupt(e.to_string()))?;
        let mut groups = Vec::with_capacity(forests.len());
        for ((g, columns), forest) in header.groups.into_iter().zip(columns).zip(forests) {
            if forest.n_features() != columns.len()
                || forest.n_trees() != header.meta.trees as usize
            {
                return Err(ModelError::Corrupt(format!(
                    "forest of group `{}` does not match the header",
                    g.name
                )));
            }
            forest
                .validate()
                .map_err(|e| ModelError::Corrupt(format!("forest of group `{}`: {e}", g.name)))?;
            groups.push(Group {
                name: g.name,
                columns,
                calibration: g.calibration,
                forest,
            });
        }
        if let Some(t) = &header.tails {
            t.validate(schema.len())?;
        }
        Ok(Self {
            schema,
            meta: header.meta,
            groups,
            reference: header.reference,
            tails: header.tails,
        })
    }

    /// Writes the model to `path` (through a temporary file and a rename, so readers never see
    /// half a model).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a model from `path`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}

/// The header and forests of a version 1, 2 or 3 file.
fn decode(
    version: u32,
    header: &[u8],
    body: &[u8],
) -> Result<(ModelHeaderV3, Vec<IsolationForest>), ModelError> {
    let config = bincode::config::standard();
    let corrupt = |what: &str| {
        let what = what.to_owned();
        move |e: bincode::error::DecodeError| ModelError::Corrupt(format!("{what}: {e}"))
    };
    if version == 1 {
        let (h, _): (ModelHeader, _) =
            bincode::decode_from_slice(header, config).map_err(corrupt("header"))?;
        let (forest, _): (IsolationForest, _) =
            bincode::decode_from_slice(body, config).map_err(corrupt("forest"))?;
        // One forest over every column: its own scores, so the calibration is never used.
        let identity = Calibration {
            median: 0.5,
            cut: h.meta.threshold,
        };
        let header = ModelHeaderV3 {
            groups: vec![GroupHeader {
                name: "all".into(),
                columns: (0..h.feature_names.len() as u32).collect(),
                calibration: identity,
            }],
            schema_hash: h.schema_hash,
            feature_names: h.feature_names,
            meta: h.meta,
            reference: identity,
            tails: None,
        };
        return Ok((header, vec![forest]));
    }
    let h = if version == 2 {
        let (h, _): (ModelHeaderV2, _) =
            bincode::decode_from_slice(header, config).map_err(corrupt("header"))?;
        ModelHeaderV3 {
            schema_hash: h.schema_hash,
            feature_names: h.feature_names,
            meta: h.meta,
            groups: h.groups,
            reference: h.reference,
            tails: None,
        }
    } else {
        let (h, _): (ModelHeaderV3, _) =
            bincode::decode_from_slice(header, config).map_err(corrupt("header"))?;
        h
    };
    let (forests, _): (Vec<IsolationForest>, _) =
        bincode::decode_from_slice(body, config).map_err(corrupt("forests"))?;
    Ok((h, forests))
}

/// Groups must be non-empty, named, within `n` columns, and not repeat a column.
fn check_groups<'a>(
    groups: impl Iterator<Item = (&'a str, &'a [usize])>,
    n: usize,
) -> Result<(), ModelError> {
    let mut seen = vec![false; n];
    let mut any = false;
    for (name, columns) in groups {
        any = true;
        if name.is_empty() || columns.is_empty() {
            return Err(ModelError::BadGroups(format!(
                "group `{name}` has no name or no columns"
            )));
        }
        for &c in columns {
            match seen.get_mut(c) {
                None => {
                    return Err(ModelError::BadGroups(format!(
                        "group `{name}` names column {c}, the schema has {n}"
                    )));
                }
                Some(true) => {
                    return Err(ModelError::BadGroups(format!(
                        "column {c} is in more than one group (again in `{name}`)"
                    )));
                }
                Some(s) => *s = true,
            }
        }
    }
    if !any {
        return Err(ModelError::BadGroups("no groups".into()));
    }
    Ok(())
}

/// `x`'s `columns`, in that order (`x` itself when they are all of it, in order).
fn gather<'a>(x: &'a [f64], columns: &[usize]) -> std::borrow::Cow<'a, [f64]> {
    if columns.len() == x.len() && columns.iter().copied().eq(0..x.len()) {
        return std::borrow::Cow::Borrowed(x);
    }
    std::borrow::Cow::Owned(columns.iter().map(|&c| x[c]).collect())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(ModelError::Truncated(what))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ModelError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// numpy's default (linear) percentile at quantile `q` in `[0, 1]`.
pub fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            "rps".into(),
            "unique_endpoints".into(),
            "entropy".into(),
        ])
    }

    fn model(seed: u64) -> (Model, Array2<f64>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let data = Array2::from_shape_fn((400, 3), |_| rng.random_range(0.0..1.0));
        let p = ForestParams {
            trees: 50,
            sample_size: 128,
            seed,
        };
        let m = Model::fit(
            schema(),
            data.view(),
            &p,
            ThresholdSpec::Contamination(0.05),
            1_700_000_000_000,
            &mut |_, _| {},
        )
        .unwrap();
        (m, data)
    }

    #[test]
    fn round_trip_keeps_model_and_scores() {
        let (m, data) = model(1);
        let bytes = m.to_bytes().unwrap();
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.score_batch(&schema(), data.view()).unwrap(),
            m.score_batch(&schema(), data.view()).unwrap()
        );
        assert_eq!(back.meta().trees, 50);
        assert_eq!(back.meta().n_samples, 400);
        assert_eq!(back.meta().trained_at_ms, 1_700_000_000_000);
    }

    #[test]
    fn save_and_load_through_a_file() {
        let (m, _) = model(2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        m.save(&path).unwrap();
        assert_eq!(Model::load(&path).unwrap(), m);
    }

    #[test]
    fn contamination_flags_about_that_share_of_training_rows() {
        let (m, data) = model(3);
        let scores = m.score_batch(&schema(), data.view()).unwrap();
        let flagged = scores.iter().filter(|s| **s > m.meta().threshold).count();
        // 5 % of 400, give or take ties at the cut.
        assert!((15..=21).contains(&flagged), "{flagged}");
    }

    #[test]
    fn another_schema_is_refused() {
        let (m, _) = model(4);
        let other = Schema::new(vec![
            "rps".into(),
            "entropy".into(),
            "unique_endpoints".into(),
        ]);
        let err = m.score(&other, &[0.1, 0.2, 0.3]).unwrap_err();
        assert!(matches!(err, ModelError::SchemaMismatch { .. }), "{err}");
        assert!(err.to_string().contains("unique_endpoints,entropy"));
    }

    #[test]
    fn corrupt_foreign_and_truncated_files_are_refused() {
        let (m, _) = model(5);
        let bytes = m.to_bytes().unwrap();
        assert!(matches!(
            Model::from_bytes(b"GIF89a this is not a model"),
            Err(ModelError::BadMagic)
        ));
        for cut in [0, 4, 10, 20, bytes.len() / 2, bytes.len() - 1] {
            let err = Model::from_bytes(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ModelError::Truncated(_) | ModelError::BadMagic),
                "{cut}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            Model::from_bytes(&flipped),
            Err(ModelError::Checksum)
        ));
        let mut future = bytes.clone();
        future[8] = 9;
        assert!(matches!(
            Model::from_bytes(&future),
            Err(ModelError::UnsupportedVersion { found: 9 })
        ));
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(
            Model::from_bytes(&longer),
            Err(ModelError::Corrupt(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn damaged_files_are_errors_not_panics(at in 0usize..10_000, bit in 0u8..8, cut in 0usize..10_000) {
            let (m, _) = model(8);
            let bytes = m.to_bytes().unwrap();
            let mut flipped = bytes.clone();
            let at = at % flipped.len();
            flipped[at] ^= 1 << bit;
            proptest::prop_assert!(Model::from_bytes(&flipped).is_err());
            proptest::prop_assert!(Model::from_bytes(&bytes[..cut % bytes.len()]).is_err());
        }
    }

    #[test]
    fn explanation_is_readable() {
        let (m, _) = model(6);
        let s = m.score_explained(&schema(), &[0.5, 0.5, 40.0]).unwrap();
        let ordinary = m.score(&schema(), &[0.5, 0.5, 0.5]).unwrap();
        assert!(s.score > ordinary, "{} <= {ordinary}", s.score);
        assert_eq!(s.drivers[0].feature, "entropy");
        assert!(
            s.explanation(2).starts_with("entropy=40 ("),
            "{}",
            s.explanation(2)
        );
    }

    /// `n` rows of 20 columns of noise in `[0, 1)`, except that columns 18 and 19 stay
    /// within 0.025 of 0.5.
    fn correlated(n: usize) -> Array2<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let mut data = Array2::from_shape_fn((n, 20), |_| rng.random_range(0.0..1.0));
        for mut row in data.rows_mut() {
            row[18] = 0.475 + row[18] * 0.05;
            row[19] = 0.475 + row[19] * 0.05;
        }
        data
    }

    fn wide() -> (Schema, Vec<GroupSpec>) {
        let schema = Schema::new((0..20).map(|i| format!("f{i}")).collect());
        let groups = vec![
            GroupSpec {
                name: "noise".into(),
                columns: (0..18).collect(),
            },
            GroupSpec {
                name: "pair".into(),
                columns: vec![18, 19],
            },
        ];
        (schema, groups)
    }

    fn grouped(seed: u64) -> (Model, Array2<f64>) {
        let (schema, groups) = wide();
        let data = correlated(1000);
        let p = ForestParams {
            trees: 100,
            sample_size: 256,
            seed,
        };
        let rows: Vec<u64> = (0..1000).collect();
        let m = Model::fit_grouped(
            schema,
            data.view(),
            &rows,
            &groups,
            None,
            &p,
            ThresholdSpec::Contamination(0.01),
            0,
            &mut |_, _| {},
        )
        .unwrap();
        (m, data)
    }

    #[test]
    fn a_grouped_model_scores_by_its_most_anomalous_group() {
        let (m, data) = grouped(1);
        let (schema, _) = wide();
        // Ordinary in eighteen columns, out of the pair's narrow range in two.
        let mut odd = vec![0.5; 20];
        odd[18] = 0.56;
        odd[19] = 0.44;
        let s = m.score_explained(&schema, &odd).unwrap();
        assert!(s.anomalous, "{} <= {}", s.score, m.meta().threshold);
        let (_, group) = m.explain_row(&odd).unwrap();
        assert_eq!(m.groups()[group].name(), "pair");
        assert!(["f18", "f19"].contains(&s.drivers[0].feature.as_str()));
        // One forest over all twenty columns dilutes the same break among the noise.
        let single = Model::fit(
            schema.clone(),
            data.view(),
            &ForestParams {
                trees: 100,
                sample_size: 256,
                seed: 1,
            },
            ThresholdSpec::Contamination(0.01),
            0,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(!single.score_explained(&schema, &odd).unwrap().anomalous);
        // About the contamination share of the training rows is flagged, as with one forest.
        let flagged = m
            .score_batch(&schema, data.view())
            .unwrap()
            .iter()
            .filter(|s| **s > m.meta().threshold)
            .count();
        assert!((5..=15).contains(&flagged), "{flagged}");
    }

    #[test]
    fn grouped_models_round_trip_and_score_alike_one_by_one_and_in_batch() {
        let (m, data) = grouped(2);
        let (schema, _) = wide();
        let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
        let batch = back.score_batch(&schema, data.view()).unwrap();
        for (row, b) in data.rows().into_iter().zip(&batch).take(100) {
            assert_eq!(back.score(&schema, row.as_slice().unwrap()).unwrap(), *b);
        }
    }

    fn with_tails(seed: u64) -> (Model, Array2<f64>) {
        let (schema, _) = wide();
        let data = correlated(1000);
        let all = [GroupSpec {
            name: "all".into(),
            columns: (0..20).collect(),
        }];
        let rows: Vec<u64> = (0..1000).collect();
        let tails = TailParams {
            quantile: 0.9,
            scale: 2.6,
            columns: (0..20).collect(),
        };
        let m = Model::fit_grouped(
            schema,
            data.view(),
            &rows,
            &all,
            Some(&tails),
            &ForestParams {
                trees: 100,
                sample_size: 256,
                seed,
            },
            ThresholdSpec::Contamination(0.01),
            0,
            &mut |_, _| {},
        )
        .unwrap();
        (m, data)
    }

    #[test]
    fn tails_see_one_column_far_beyond_the_training_range() {
        let (m, data) = with_tails(3);
        let (schema, _) = wide();
        // Uniform in [0, 1) in the noise columns: 3.0 is far beyond any training row.
        let mut far = vec![0.5; 20];
        far[7] = 3.0;
        let s = m.score_explained(&schema, &far).unwrap();
        assert!(s.anomalous, "{} <= {}", s.score, m.meta().threshold);
        assert!(s.score > 0.85, "{}", s.score);
        assert_eq!(s.drivers[0].feature, "f7");
        let (_, part) = m.explain_row(&far).unwrap();
        assert_eq!(m.part_name(part), "tail");
        // The forest alone scores it as it scores the most extreme training rows.
        let forest_only = Model::fit(
            schema.clone(),
            data.view(),
            &ForestParams {
                trees: 100,
                sample_size: 256,
                seed: 3,
            },
            ThresholdSpec::Contamination(0.01),
            0,
            &mut |_, _| {},
        )
        .unwrap();
        let mut edge = far.clone();
        edge[7] = 1.0;
        let (a, b) = (
            forest_only.score(&schema, &far).unwrap(),
            forest_only.score(&schema, &edge).unwrap(),
        );
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        // An ordinary vector is decided by the forest, and about the contamination share of
        // the training rows is still flagged.
        let (_, part) = m.explain_row(&[0.5; 20]).unwrap();
        assert_eq!(m.part_name(part), "all");
        let flagged = m
            .score_batch(&schema, data.view())
            .unwrap()
            .iter()
            .filter(|s| **s > m.meta().threshold)
            .count();
        assert!((5..=15).contains(&flagged), "{flagged}");
    }

    #[test]
    fn tails_round_trip_and_bad_ones_are_refused() {
        let (m, data) = with_tails(4);
        let (schema, _) = wide();
        let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
        let batch = back.score_batch(&schema, data.view()).unwrap();
        for (row, b) in data.rows().into_iter().zip(&batch).take(100) {
            assert_eq!(back.score(&schema, row.as_slice().unwrap()).unwrap(), *b);
        }
        let mut bad = m.clone();
        if let Some(t) = bad.tails.as_mut() {
            t.beta[0] = f64::NAN;
        }
        let err = Model::from_bytes(&bad.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, ModelError::Corrupt(_)), "{err}");
        let (schema, groups) = wide();
        let err = Model::fit_grouped(
            schema,
            data.view(),
            &(0..1000).collect::<Vec<u64>>(),
            &groups,
            Some(&TailParams {
                quantile: 1.0,
                scale: 2.6,
                columns: vec![0],
            }),
            &ForestParams::default(),
            ThresholdSpec::Cut(0.6),
            0,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("quantile"), "{err}");
    }

    #[test]
    fn version_2_files_still_load() {
        let (m, data) = grouped(5);
        let config = bincode::config::standard();
        let header = bincode::encode_to_vec(
            ModelHeaderV2 {
                schema_hash: m.schema.hash,
                feature_names: m.schema.names.clone(),
                meta: m.meta.clone(),
                groups: m
                    .groups
                    .iter()
                    .map(|g| GroupHeader {
                        name: g.name.clone(),
                        columns: g.columns.iter().map(|c| *c as u32).collect(),
                        calibration: g.calibration,
                    })
                    .collect(),
                reference: m.reference,
            },
            config,
        )
        .unwrap();
        let forests: Vec<&IsolationForest> = m.groups.iter().map(|g| &g.forest).collect();
        let body = bincode::encode_to_vec(&forests, config).unwrap();
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(&(header.len() as u32).to_le_bytes());
        v2.extend_from_slice(&header);
        v2.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v2.extend_from_slice(&body);
        v2.extend_from_slice(&fnv1a(&v2).to_le_bytes());
        let old = Model::from_bytes(&v2).unwrap();
        assert_eq!(old, m);
        let (schema, _) = wide();
        assert_eq!(
            old.score_batch(&schema, data.view()).unwrap(),
            m.score_batch(&schema, data.view()).unwrap()
        );
    }

    #[test]
    fn version_1_files_still_load() {
        let (m, data) = model(9);
        let config = bincode::config::standard();
        let header = bincode::encode_to_vec(
            ModelHeader {
                schema_hash: m.schema.hash,
                feature_names: m.schema.names.clone(),
                meta: m.meta.clone(),
            },
            config,
        )
        .unwrap();
        let body = bincode::encode_to_vec(&m.groups[0].forest, config).unwrap();
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&(header.len() as u32).to_le_bytes());
        v1.extend_from_slice(&header);
        v1.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&fnv1a(&v1).to_le_bytes());
        let old = Model::from_bytes(&v1).unwrap();
        assert_eq!(
            old.score_batch(&schema(), data.view()).unwrap(),
            m.score_batch(&schema(), data.view()).unwrap()
        );
    }

    #[test]
    fn groups_must_partition_columns() {
        let data = Array2::zeros((8, 3));
        for (columns, needle) in [
            (vec![vec![0, 1], vec![1, 2]], "more than one group"),
            (vec![vec![0, 3]], "names column 3"),
            (vec![vec![]], "no columns"),
        ] {
            let groups: Vec<GroupSpec> = columns
                .into_iter()
                .map(|columns| GroupSpec {
                    name: "g".into(),
                    columns,
                })
                .collect();
            let err = Model::fit_grouped(
                schema(),
                data.view(),
                &[0; 8],
                &groups,
                None,
                &ForestParams::default(),
                ThresholdSpec::Cut(0.6),
                0,
                &mut |_, _| {},
            )
            .unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn percentile_is_numpys_linear() {
        // np.percentile([1, 2, 3, 4], 25) == 1.75
        assert_eq!(percentile(vec![4.0, 1.0, 3.0, 2.0], 0.25), 1.75);
        assert_eq!(percentile(vec![5.0], 0.9), 5.0);
    }

    #[test]
    fn thresholds_out_of_range_are_refused() {
        let data = Array2::zeros((4, 3));
        for t in [
            ThresholdSpec::Contamination(0.0),
            ThresholdSpec::Contamination(0.7),
            ThresholdSpec::Cut(1.0),
        ] {
            let r = Model::fit(
                schema(),
                data.view(),
                &ForestParams::default(),
                t,
                0,
                &mut |_, _| {},
            );
            assert!(matches!(r, Err(ModelError::BadThreshold(_))));
        }
    }
}
