//! `palisade-scorer model ...`: fit, score and evaluate Isolation Forest models on CSV files,
//! offline. Also the way to backtest a feature set against labelled traffic.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Args, Subcommand};
use ndarray::{Axis, Slice};
use palisade_scorer::detect::{
    ForestParams, Model, ModelError, ThresholdSpec,
    dataset::{Dataset, DatasetError},
    evaluation::{Confusion, roc_auc},
};

/// Exit code for bad input or usage (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Rows scored between two progress lines.
const SCORE_CHUNK: usize = 100_000;

/// The `model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fit a model to a CSV of feature vectors and write it to a file.
    Fit {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        forest: ForestArgs,
        /// Model file to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Score every row of a CSV with a model; writes one score per row (higher = more anomalous).
    Score {
        /// Model file.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        /// CSV to write (header `score,anomalous`); standard output when omitted.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Fit on a labelled CSV and print ROC AUC and precision/recall at the threshold.
    Eval {
        #[command(flatten)]
        input: InputArgs,
        /// Column holding the label (1/true = anomaly); not used as a feature.
        #[arg(long)]
        label_column: String,
        #[command(flatten)]
        forest: ForestArgs,
    },
}

/// Which CSV and which of its columns.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// CSV with a header row; every kept column numeric.
    #[arg(long)]
    input: PathBuf,
    /// Columns to leave out of the features (ids, timestamps ...), comma-separated.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
}

/// Forest parameters and the threshold.
#[derive(Debug, Args)]
pub struct ForestArgs {
    /// Number of trees.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    trees: u32,
    /// Subsample size per tree (psi).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    sample_size: u32,
    /// Seed of the random generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of training rows expected to be anomalous, in (0, 0.5]; sets the threshold.
    #[arg(long, conflicts_with = "threshold")]
    contamination: Option<f64>,
    /// Explicit score cut in (0, 1); the default is 0.5 (scikit-learn's "auto").
    #[arg(long)]
    threshold: Option<f64>,
}

impl ForestArgs {
    fn params(&self) -> ForestParams {
        ForestParams {
            trees: self.trees as usize,
            sample_size: self.sample_size as usize,
            seed: self.seed,
        }
    }

    fn threshold(&self) -> ThresholdSpec {
        match (self.contamination, self.threshold) {
            (Some(c), _) => ThresholdSpec::Contamination(c),
            (None, Some(t)) => ThresholdSpec::Cut(t),
            (None, None) => ThresholdSpec::Cut(0.5),
        }
    }
}

/// What went wrong, and whether it is the caller's input (exit 64) or something else (1).
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{path}: {source}")]
    Dataset { path: String, source: DatasetError },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Io(String),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Dataset { .. } | Self::Input(_) => ExitCode::from(EXIT_USAGE),
            Self::Model(ModelError::Io { .. }) | Self::Io(_) => ExitCode::FAILURE,
            Self::Model(_) => ExitCode::from(EXIT_USAGE),
        }
    }
}

/// Runs one `model` subcommand; reports errors on standard error.
pub fn run(command: ModelCommand) -> ExitCode {
    let result = match command {
        ModelCommand::Fit {
            input,
            forest,
            output,
        } => fit(&input, &forest, &output),
        ModelCommand::Score {
            model,
            input,
            output,
        } => score(&model, &input, output.as_deref()),
        ModelCommand::Eval {
            input,
            label_column,
            forest,
        } => eval(&input, &label_column, &forest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-scorer: {e}");
            e.exit_code()
        }
    }
}

fn fit(input: &InputArgs, forest: &ForestArgs, output: &Path) -> Result<(), CliError> {
    let data = read(input, None)?;
    let started = Instant::now();
    let model = fit_model(&data, forest)?;
    model.save(output)?;
    let m = model.meta();
    eprintln!(
        "fitted {} trees x {} samples on {} rows x {} features in {:.1?}; threshold {:.4}; wrote {}",
        m.trees,
        m.sample_size,
        m.n_samples,
        model.schema().len(),
        started.elapsed(),
        m.threshold,
        output.display()
    );
    Ok(())
}

fn score(model: &Path, input: &InputArgs, output: Option<&Path>) -> Result<(), CliError> {
    let model = Model::load(model)?;
    let data = read(input, None)?;
    let scores = score_rows(&model, &data)?;
    let io = |e: std::io::Error| CliError::Io(format!("writing scores: {e}"));
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).map_err(|e| CliError::Io(format!("{}: {e}", p.display())))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    writeln!(out, "score,anomalous").map_err(io)?;
    let cut = model.meta().threshold;
    for s in &scores {
        writeln!(out, "{s},{}", u8::from(*s > cut)).map_err(io)?;
    }
    out.flush().map_err(io)
}

fn eval(input: &InputArgs, label: &str, forest: &ForestArgs) -> Result<(), CliError> {
    let data = read(input, Some(label))?;
    let labels = data.labels.clone().unwrap_or_default();
    let model = fit_model(&data, forest)?;
    let scores = score_rows(&model, &data)?;
    let auc = roc_auc(&scores, &labels).ok_or_else(|| {
        CliError::Input(format!(
            "label column {label:?} needs both anomalies (1) and normal rows (0)"
        ))
    })?;
    let cut = model.meta().threshold;
    let c = Confusion::at(&scores, &labels, cut);
    println!("rows       {}", scores.len());
    println!("anomalies  {}", labels.iter().filter(|l| **l).count());
    println!("roc_auc    {auc:.4}");
    println!("threshold  {cut:.4}");
    println!("precision  {:.4}", c.precision());
    println!("recall     {:.4}", c.recall());
    Ok(())
}

fn read(input: &InputArgs, label: Option<&str>) -> Result<Dataset, CliError> {
    let path = input.input.display().to_string();
    let file = File::open(&input.input).map_err(|e| CliError::Input(format!("{path}: {e}")))?;
    Dataset::from_csv(BufReader::new(file), &input.exclude, label)
        .map_err(|source| CliError::Dataset { path, source })
}

fn fit_model(data: &Dataset, forest: &ForestArgs) -> Result<Model, CliError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let large = data.data.nrows() >= SCORE_CHUNK || forest.trees >= 1000;
    let mut progress = |done: usize, total: usize| {
        if large && (done * 10 / total) != ((done - 1) * 10 / total) {
            eprintln!("fitting: {done}/{total} trees");
        }
    };
    Ok(Model::fit(
        data.schema.clone(),
        data.data.view(),
        &forest.params(),
        forest.threshold(),
        now_ms,
        &mut progress,
    )?)
}

fn score_rows(model: &Model, data: &Dataset) -> Result<Vec<f64>, CliError> {
    let rows = data.data.nrows();
    let mut scores = Vec::with_capacity(rows);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut start = 0;
    while start < rows {
        let end = (start + SCORE_CHUNK).min(rows);
        let chunk = model.score_batch_parallel(
            &data.schema,
            data.data.slice_axis(Axis(0), Slice::from(start..end)),
            threads,
        )?;
        scores.extend(chunk.iter());
        if rows > SCORE_CHUNK {
            eprintln!("scoring: {end}/{rows} rows");
        }
        start = end;
    }
    Ok(scores)
}
