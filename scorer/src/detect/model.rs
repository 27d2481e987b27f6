//! A fitted forest with its feature schema, threshold and training metadata, and its file
//! format.
//!
//! # File format
//! ```text
//! magic        8 bytes  "PLSDIFM\0"
//! version      u32 LE   FORMAT_VERSION
//! header len   u32 LE
//! header       bincode  ModelHeader (schema names and hash, training metadata, threshold)
//! body len     u64 LE
//! body         bincode  IsolationForest
//! checksum     u64 LE   FNV-1a 64 over everything before it
//! ```
//! A model never scores vectors of another schema: callers pass the [`Schema`] their vectors
//! follow, and its hash must equal the model's.

use std::path::Path;

use ndarray::{Array1, ArrayView2};

use super::forest::{ForestError, ForestParams, IsolationForest};

/// First bytes of every model file.
pub const MAGIC: [u8; 8] = *b"PLSDIFM\0";
/// Version of the layout after the magic; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
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

/// A forest bound to its schema and threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    schema: Schema,
    meta: TrainingMeta,
    forest: IsolationForest,
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
    /// Fits a model to `data`, whose columns follow `schema`. `now_ms` is recorded as the
    /// training time.
    pub fn fit(
        schema: Schema,
        data: ArrayView2<'_, f64>,
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
        let forest = IsolationForest::fit_with_progress(data, params, progress)?;
        let (cut, contamination) = match threshold {
            ThresholdSpec::Cut(t) => (t, None),
            ThresholdSpec::Contamination(c) => {
                let scores = forest.score_batch(data)?;
                (percentile(scores.to_vec(), 1.0 - c), Some(c))
            }
        };
        let meta = TrainingMeta {
            trees: forest.n_trees() as u32,
            sample_size: forest.sample_size() as u32,
            seed: params.seed,
            n_samples: data.nrows() as u64,
            trained_at_ms: now_ms,
            contamination,
            threshold: cut,
        };
        Ok(Self {
            schema,
            meta,
            forest,
        })
    }

    /// The feature schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Training metadata and threshold.
    pub fn meta(&self) -> &TrainingMeta {
        &self.meta
    }

    /// The forest.
    pub fn forest(&self) -> &IsolationForest {
        &self.forest
    }

    /// Scores a vector of `schema`.
    pub fn score(&self, schema: &Schema, x: &[f64]) -> Result<f64, ModelError> {
        self.check_schema(schema)?;
        Ok(self.forest.score(x)?)
    }

    /// Scores a vector of `schema` and explains the score.
    pub fn score_explained(&self, schema: &Schema, x: &[f64]) -> Result<Scored, ModelError> {
        self.check_schema(schema)?;
        let score = self.forest.score(x)?;
        let shares = self.forest.explain(x)?;
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
        Ok(self.forest.score_batch(data)?)
    }

    /// As [`Model::score_batch`], on `threads` threads (offline use).
    pub fn score_batch_parallel(
        &self,
        schema: &Schema,
        data: ArrayView2<'_, f64>,
        threads: usize,
    ) -> Result<Array1<f64>, ModelError> {
        self.check_schema(schema)?;
        Ok(self.forest.score_batch_parallel(data, threads)?)
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
        let header = ModelHeader {
            schema_hash: self.schema.hash,
            feature_names: self.schema.names.clone(),
            meta: self.meta.clone(),
        };
        let header = bincode::encode_to_vec(&header, config)
            .map_err(|e| ModelError::Corrupt(format!("encoding the header: {e}")))?;
        let body = bincode::encode_to_vec(&self.forest, config)
            .map_err(|e| ModelError::Corrupt(format!("encoding the forest: {e}")))?;
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
        if version != FORMAT_VERSION {
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
        let config = bincode::config::standard();
        let (header, _): (ModelHeader, _) = bincode::decode_from_slice(header, config)
            .map_err(|e| ModelError::Corrupt(format!("header: {e}")))?;
        let (forest, _): (IsolationForest, _) = bincode::decode_from_slice(body, config)
            .map_err(|e| ModelError::Corrupt(format!("forest: {e}")))?;
        let schema = Schema::new(header.feature_names);
        if schema.hash != header.schema_hash {
            return Err(ModelError::Corrupt(
                "schema hash does not match the feature names".into(),
            ));
        }
        if forest.n_features() != schema.len() || forest.n_trees() != header.meta.trees as usize {
            return Err(ModelError::Corrupt(
                "forest does not match the header".into(),
            ));
        }
        forest
            .validate()
            .map_err(|e| ModelError::Corrupt(format!("forest: {e}")))?;
        Ok(Self {
            schema,
            meta: header.meta,
            forest,
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
