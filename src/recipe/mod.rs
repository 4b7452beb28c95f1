//! Recipe types, loading from YAML with located errors, and the JSON Schema.
//!
//! A recipe is read in two steps. `serde-saphyr` reads the text into a tree of located nodes
//! (so a YAML syntax error names its line and column), then the typed [`Recipe`] is read from
//! that tree by a deserializer that pins every error to the node that caused it, with its
//! field path. The pass list is checked against the pass registry as it is read. Last, the
//! checks that span several fields run, each naming the field it is about.

mod amounts;
mod check;
mod node;
mod steps;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline_passes::pass::CalibrationUse;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::MessageFormatter;

pub use amounts::{parse_bytes, Improvement};
use node::{render_path, DeError, Kind, Node, NodeDeserializer, Pos, Segment};
pub use steps::{Origin, ParamSpace, PassItem, PassSpec, ONE_OF};

pub use crate::target::Target;

/// A recipe: which model to optimize, how to measure candidates, and which passes to try.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// A short name for the job, used in reports.
    pub name: String,
    /// The ONNX model to optimize, relative to the recipe file.
    pub model: PathBuf,
    /// The device to optimize for: a profile from `pipeline targets` (`cpu`, `gpu-cuda`,
    /// `npu-qnn`, ...); it decides the execution providers candidates are measured on.
    #[serde(default)]
    pub target: Target,
    /// The data sets used to calibrate and to evaluate candidates.
    #[serde(default)]
    pub data: Data,
    /// What is measured for each candidate, and the goals a candidate must meet.
    #[serde(default)]
    pub metrics: Metrics,
    /// The metrics that rank the candidates that meet every goal, most important first.
    #[schemars(length(min = 1))]
    pub objective: Vec<Objective>,
    /// The passes to apply in order. A list of values for a parameter is a search dimension;
    /// `one_of` makes branches.
    #[schemars(length(min = 1))]
    pub passes: Vec<PassItem>,
    /// How the space of candidates is searched.
    #[serde(default)]
    pub search: Search,
    /// After the winner is chosen, search ONNX Runtime's session settings (threads,
    /// execution mode, optimization level) for it and write them beside it as
    /// `inference.json`; off when absent.
    pub session_tune: Option<SessionTune>,
    /// When a quantized candidate misses the accuracy goal, revert its most harmful quantized
    /// nodes to float one at a time until the goal is met; off when absent. Needs an
    /// accuracy metric with a goal (`max_drop` or `min`).
    pub accuracy_aware: Option<AccuracyAware>,
    /// The runtime every model is measured in; ONNX Runtime when absent.
    #[serde(default)]
    pub evaluate: Evaluate,
    /// The folder for the best model and the report, relative to the recipe file.
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// The recipe file this was read from; relative paths in the recipe start at its folder.
    #[serde(skip)]
    #[schemars(skip)]
    pub path: PathBuf,
    /// Where the fields checked after parsing are written, for messages.
    #[serde(skip)]
    #[schemars(skip)]
    pub positions: Positions,
}

/// Where the fields that are checked against files after parsing are written: `model`,
/// `output`, the data files and their labels, `metrics.accuracy.output`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Positions(BTreeMap<&'static str, (u64, u64)>);

/// The fields [`Positions`] keeps, as dotted paths.
const POSITIONED: &[&str] = &[
    "model",
    "output",
    "data",
    "data.evaluation",
    "data.evaluation.labels",
    "data.calibration",
    "data.calibration.labels",
    "metrics.accuracy.output",
];

impl Positions {
    /// Reads where each of [`POSITIONED`] is written in `tree`: at its key.
    fn record(tree: &Node) -> Positions {
        let mut positions = BTreeMap::new();
        for &field in POSITIONED {
            let path: Vec<Segment> = field.split('.').map(|k| Segment::Key(k.into())).collect();
            let (parent, [Segment::Key(key)]) = path.split_at(path.len() - 1) else { continue };
            if let Some(node) = tree.get(parent).and_then(|parent| parent.key_node(key)) {
                positions.insert(field, (node.pos.line, node.pos.column));
            }
        }
        Positions(positions)
    }

    /// `file:line:column: field` where the recipe at `file` writes `field`, or `file: field`.
    pub fn place(&self, file: &Path, field: &str) -> String {
        match self.0.get(field) {
            Some((line, column)) => format!("{}:{line}:{column}: {field}", file.display()),
            None => format!("{}: {field}", file.display()),
        }
    }
}

/// The data sets of a recipe. Arrays are matched to model inputs by name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Inputs used to calibrate static quantization.
    pub calibration: Option<CalibrationData>,
    /// Inputs, and labels, used to measure candidates.
    pub evaluation: Option<EvaluationData>,
}

/// Calibration inputs: an `.npz` file with one array per model input.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationData {
    /// The `.npz` file, relative to the recipe file.
    pub path: PathBuf,
    /// How many samples to use from the start of the file; all of them when absent.
    #[schemars(range(min = 1))]
    pub samples: Option<usize>,
    /// An array of the file that feeds no model input and is left out: the labels, when the
    /// evaluation file is also the calibration file.
    #[serde(default)]
    pub labels: Option<String>,
}

/// Evaluation inputs: an `.npz` file with one array per model input, and optional labels.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationData {
    /// The `.npz` file, relative to the recipe file.
    pub path: PathBuf,
    /// The name of the array in the file that holds the labels; needed for accuracy.
    pub labels: Option<String>,
    /// How many samples to use from the start of the file; all of them when absent.
    #[schemars(range(min = 1))]
    pub samples: Option<usize>,
}

/// The metrics measured for each candidate and for the source model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Accuracy on the evaluation data.
    pub accuracy: Option<AccuracyMetric>,
    /// Inference latency on the evaluation data.
    pub latency: Option<LatencyMetric>,
    /// Size of the model file.
    pub size: Option<SizeMetric>,
}

/// How accuracy is measured, and how much it may drop.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccuracyMetric {
    /// How a prediction is scored: `top1` against the labels, or `fidelity` against the
    /// source model's own output on the same inputs (no labels needed).
    pub kind: AccuracyKind,
    /// The model output holding the scores; the first output when absent.
    pub output: Option<String>,
    /// With `kind: fidelity`, the figure that counts as the accuracy (goals and ranking):
    /// `cosine`, the mean over samples of the cosine similarity between the candidate's
    /// output and the source model's (the default), or `top1_agreement`, the share of rows
    /// whose largest value is at the same index in both. All fidelity figures are reported.
    pub score: Option<FidelityScore>,
    /// The largest drop from the source model's accuracy a candidate may have: a number is an
    /// absolute drop (`0.01` is one point of a 0..1 accuracy), `"1%"` is relative to the
    /// source model's accuracy.
    pub max_drop: Option<MaxDrop>,
    /// The lowest accuracy a candidate may have, from 0 to 1 (`0.95`).
    #[schemars(range(min = 0, max = 1))]
    pub min: Option<f64>,
}

impl AccuracyMetric {
    /// Whether the metric sets a goal (`max_drop` or `min`), rather than only being measured.
    pub fn has_goal(&self) -> bool {
        self.max_drop.is_some() || self.min.is_some()
    }
}

/// How a prediction is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccuracyKind {
    /// The class with the highest score equals the label.
    Top1,
    /// The output follows the source model's output on the same inputs.
    Fidelity,
}

/// The fidelity figure that counts as a candidate's accuracy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FidelityScore {
    /// Mean cosine similarity of each sample's output to the source model's.
    #[default]
    Cosine,
    /// The share of rows (along the output's last axis) whose argmax equals the source's.
    Top1Agreement,
}

/// The largest accuracy drop a candidate may have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDrop {
    /// A drop in accuracy units: `0.01` on an accuracy from 0 to 1.
    Absolute(f64),
    /// A fraction of the source model's accuracy: `"1%"` is `Relative(0.01)`.
    Relative(f64),
}

impl MaxDrop {
    /// The largest allowed drop, in accuracy units, for a source model of accuracy `baseline`.
    pub fn allowed(&self, baseline: f64) -> f64 {
        match self {
            MaxDrop::Absolute(drop) => *drop,
            MaxDrop::Relative(fraction) => fraction * baseline,
        }
    }
}

/// How latency is measured, and the goals on it.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyMetric {
    /// Untimed runs before timing starts.
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// Timed runs.
    #[serde(default = "default_runs")]
    #[schemars(range(min = 1))]
    pub runs: usize,
    /// The statistic of the timed runs that is compared.
    #[serde(default)]
    pub stat: LatencyStat,
    /// The highest latency, in milliseconds of `stat`, a candidate may have.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub max: Option<f64>,
    /// How much faster than the source model a candidate must be, on `stat`: milliseconds
    /// (`2`), or a share of the source's latency (`"20%"`: at most 80% of it).
    #[serde(default, deserialize_with = "amounts::latency_improvement")]
    #[schemars(with = "Option<amounts::LatencyImprovement>")]
    pub min_improvement: Option<Improvement>,
}

impl Default for LatencyMetric {
    fn default() -> Self {
        LatencyMetric {
            warmup: default_warmup(),
            runs: default_runs(),
            stat: LatencyStat::P50,
            max: None,
            min_improvement: None,
        }
    }
}

/// A statistic of timed runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LatencyStat {
    /// The median.
    #[default]
    P50,
    /// The 90th percentile.
    P90,
    /// The 99th percentile.
    P99,
    /// The arithmetic mean.
    Mean,
}

/// How model size is measured (the bytes of the model file and its external data), and the
/// goals on it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeMetric {
    /// A candidate larger than this is rejected: bytes (`20000000`) or a size with a unit
    /// (`"20MB"`, `"19.1MiB"`).
    #[serde(default, deserialize_with = "amounts::byte_count")]
    #[schemars(with = "Option<amounts::ByteCount>")]
    pub max_bytes: Option<u64>,
    /// How much smaller than the source model a candidate must be: bytes (`1000000`,
    /// `"1MB"`), or a share of the source's size (`"50%"`: at most half of it).
    #[serde(default, deserialize_with = "amounts::size_improvement")]
    #[schemars(with = "Option<amounts::SizeImprovement>")]
    pub min_improvement: Option<Improvement>,
}

/// A metric that ranks candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Lower latency is better.
    Latency,
    /// A smaller model is better.
    Size,
    /// Higher accuracy is better.
    Accuracy,
}

/// How the space of candidates is searched, and the budgets that stop the search.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The order candidates are tried in: `exhaustive` (plan order), `random` (a seeded
    /// shuffle), `greedy` (one search dimension at a time, keeping the best value of each) or
    /// `tpe` (a model of which values did well picks the next candidate).
    #[serde(default)]
    pub strategy: Strategy,
    /// The seed of `random` and `tpe`: the same seed tries the same candidates in the same
    /// order.
    #[serde(default)]
    pub seed: u64,
    /// The most candidates to build and measure; the search stops starting new ones when it
    /// is reached and the report says how many were not run.
    #[serde(default = "default_max_candidates")]
    #[schemars(range(min = 1))]
    pub max_candidates: usize,
    /// The longest the run may take, counted from its start: no candidate starts after it
    /// (the one running when it passes finishes). A duration like `"90s"`, `"10m"`, `"1h"` or
    /// a number of seconds; no limit when absent.
    #[serde(default)]
    pub max_time: Option<MaxTime>,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            strategy: Strategy::Exhaustive,
            seed: 0,
            max_candidates: default_max_candidates(),
            max_time: None,
        }
    }
}

/// How models are measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evaluate {
    /// The runtime that runs every metric on the source and the candidates: `onnxruntime`
    /// (default), or `tract`, a pure-Rust runtime that needs no ONNX Runtime library (it runs
    /// float32 models, INT8 ones of `quantize_dynamic` and 4-bit `MatMulNBits`; a candidate it
    /// cannot load fails with the reason).
    #[serde(default)]
    pub runtime: EvalRuntime,
}

/// A runtime that measures models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EvalRuntime {
    /// ONNX Runtime, on the target's execution providers.
    #[default]
    Onnxruntime,
    /// tract (`tract-onnx`), on the CPU, one thread.
    Tract,
}

impl EvalRuntime {
    /// The name a recipe and a report give it.
    pub fn name(self) -> &'static str {
        match self {
            EvalRuntime::Onnxruntime => "onnxruntime",
            EvalRuntime::Tract => "tract",
        }
    }
}

/// Session tuning of the chosen model: every setting is measured with `metrics.latency`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTune {}

/// Accuracy-aware quantization: how far to go reverting quantized nodes to float.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccuracyAware {
    /// The most nodes reverted to float per candidate; each revert is one more rebuild and
    /// accuracy measurement.
    #[schemars(range(min = 1))]
    pub max_reverts: usize,
    /// How many evaluation samples (the first ones) rank the nodes by how much each one's
    /// quantization moves the accuracy output.
    #[serde(default = "default_aware_subset")]
    #[schemars(range(min = 1))]
    pub subset: usize,
}

fn default_aware_subset() -> usize {
    32
}

/// A search strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every candidate of the plan, in order.
    #[default]
    Exhaustive,
    /// The plan's candidates in an order shuffled by `seed`.
    Random,
    /// One search dimension at a time, in recipe order: each value is tried with the
    /// dimensions already decided at their best value and the later ones at their first;
    /// the best is kept.
    Greedy,
    /// Tree-structured Parzen estimator: after a few random candidates, the next one is the
    /// untried candidate whose values are most frequent among the best candidates so far
    /// relative to the rest.
    Tpe,
}

/// A time budget, read from `"10m"`, `"90s"`, `"1h 30m"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxTime(pub Duration);

fn default_output() -> PathBuf {
    PathBuf::from("out/")
}

fn default_warmup() -> usize {
    10
}

fn default_runs() -> usize {
    100
}

fn default_max_candidates() -> usize {
    64
}

impl Recipe {
    /// The folder that relative paths in the recipe start from.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// `path` as written in the recipe, resolved against the recipe's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.dir().join(path)
    }

    /// What the recipe sets that has no effect, or falls back to defaults it does not
    /// show, in words for a warning: a `seed` under a strategy that uses none, and
    /// `session_tune` without `metrics.latency`.
    pub fn ignored_settings(&self) -> Vec<String> {
        let mut ignored = Vec::new();
        let search = &self.search;
        if search.seed != 0 && matches!(search.strategy, Strategy::Exhaustive | Strategy::Greedy) {
            ignored.push(format!(
                "search.seed {} has no effect: the {} strategy does not draw at random (only \
                 `random` and `tpe` use a seed)",
                search.seed, search.strategy
            ));
        }
        if self.session_tune.is_some() && self.metrics.latency.is_none() {
            let defaults = LatencyMetric::default();
            ignored.push(format!(
                "session_tune measures each setting with metrics.latency, which the recipe does \
                 not set: it uses the defaults ({} warmup runs, {} timed runs, {})",
                defaults.warmup,
                defaults.runs,
                format!("{:?}", defaults.stat).to_lowercase()
            ));
        }
        ignored
    }

    /// What the recipe asks that runs models in ONNX Runtime whatever `evaluate.runtime`
    /// says, in words (`quantize_static (calibration)`): passes that calibrate, run ONNX
    /// Runtime's optimizer or write its format, `accuracy_aware` and `session_tune`.
    pub fn onnx_runtime_users(&self) -> Vec<String> {
        let mut users = Vec::new();
        collect_onnx_runtime_users(&self.passes, &mut users);
        if self.accuracy_aware.is_some() {
            users.push("accuracy_aware (ranks nodes in ONNX Runtime)".to_string());
        }
        if self.session_tune.is_some() {
            users.push("session_tune (tunes ONNX Runtime's session settings)".to_string());
        }
        users
    }

    /// The source model's path.
    pub fn model_path(&self) -> PathBuf {
        self.resolve(&self.model)
    }

    /// The output folder's path.
    pub fn output_dir(&self) -> PathBuf {
        self.resolve(&self.output)
    }

    /// The calibration data's path, if the recipe has calibration data.
    pub fn calibration_path(&self) -> Option<PathBuf> {
        self.data.calibration.as_ref().map(|data| self.resolve(&data.path))
    }

    /// The evaluation data's path, if the recipe has evaluation data.
    pub fn evaluation_path(&self) -> Option<PathBuf> {
        self.data.evaluation.as_ref().map(|data| self.resolve(&data.path))
    }

    /// The latency statistic that ranks and reports candidates.
    pub fn latency_stat(&self) -> LatencyStat {
        self.metrics.latency.as_ref().map(|latency| latency.stat).unwrap_or_default()
    }

    /// Each goal a candidate must meet, in words, like `accuracy drop <= 1%`.
    pub fn goal_descriptions(&self) -> Vec<String> {
        let mut goals = Vec::new();
        if let Some(accuracy) = &self.metrics.accuracy {
            if let Some(max_drop) = accuracy.max_drop {
                goals.push(format!("accuracy drop <= {max_drop}"));
            }
            if let Some(min) = accuracy.min {
                goals.push(format!("accuracy >= {min}"));
            }
        }
        if let Some(latency) = &self.metrics.latency {
            let stat = latency.stat;
            if let Some(max) = latency.max {
                goals.push(format!("latency {stat} <= {max} ms"));
            }
            match latency.min_improvement {
                Some(Improvement::Absolute(ms)) => {
                    goals.push(format!("latency {stat} at least {ms} ms below the source's"))
                }
                Some(relative) => {
                    goals.push(format!("latency {stat} at least {relative} below the source's"))
                }
                None => {}
            }
        }
        if let Some(size) = &self.metrics.size {
            if let Some(max_bytes) = size.max_bytes {
                goals.push(format!("size <= {max_bytes} bytes"));
            }
            match size.min_improvement {
                Some(Improvement::Absolute(bytes)) => {
                    goals.push(format!("size at least {bytes} bytes below the source's"))
                }
                Some(relative) => {
                    goals.push(format!("size at least {relative} below the source's"))
                }
                None => {}
            }
        }
        goals
    }
}

impl fmt::Display for MaxDrop {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MaxDrop::Absolute(drop) => write!(f, "{drop}"),
            MaxDrop::Relative(fraction) => write!(f, "{}%", amounts::percent_text(*fraction)),
        }
    }
}

/// Writes a unit-variant enum the way a recipe spells it.
macro_rules! display_as_written {
    ($($type:ty { $($variant:ident => $text:literal),* })*) => {$(
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text),* })
            }
        }
    )*};
}

display_as_written! {
    AccuracyKind { Top1 => "top1", Fidelity => "fidelity" }
    FidelityScore { Cosine => "cosine", Top1Agreement => "top1_agreement" }
    LatencyStat { P50 => "p50", P90 => "p90", P99 => "p99", Mean => "mean" }
    Objective { Latency => "latency", Size => "size", Accuracy => "accuracy" }
    Strategy { Exhaustive => "exhaustive", Random => "random", Greedy => "greedy", Tpe => "tpe" }
}

/// Why a recipe could not be loaded. The message names the file, line, column and field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecipeError {
    /// The file could not be read.
    #[error("cannot read recipe {}: {error}", file.display())]
    Read { file: PathBuf, error: std::io::Error },

    /// The text is not valid YAML.
    #[error("{}:{line}:{column}: invalid YAML: {message}", file.display())]
    Syntax { file: PathBuf, line: u64, column: u64, message: String },

    /// The YAML does not make a valid recipe.
    #[error(
        "{}: {}{message}{}",
        located(file, *line, *column), field_prefix(field), hint_line(hint)
    )]
    Invalid {
        file: PathBuf,
        line: u64,
        column: u64,
        /// The field path, like `passes[0].quantize_dynamic.per_channel`; empty for the root.
        field: String,
        message: String,
        hint: Option<String>,
    },
}

/// `file:line:column`, or `file` alone where there is no position (an empty recipe).
fn located(file: &Path, line: u64, column: u64) -> String {
    if line == 0 {
        file.display().to_string()
    } else {
        format!("{}:{line}:{column}", file.display())
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn hint_line(hint: &Option<String>) -> String {
    match hint {
        Some(hint) => format!("\n  hint: {hint}"),
        None => String::new(),
    }
}

/// Reads and checks the recipe at `path`.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| RecipeError::Read { file: path.to_owned(), error })?;
    let recipe = parse(&text, path)?;
    for warning in recipe.ignored_settings() {
        tracing::warn!("{}: {warning}", path.display());
    }
    Ok(recipe)
}

/// Reads and checks a recipe from `text`; `file` names it in messages, and relative paths in
/// the recipe start from its folder.
pub fn parse(text: &str, file: &Path) -> Result<Recipe, RecipeError> {
    let tree = node::parse(text).map_err(|error| syntax_error(file, &error))?;
    let invalid = |error: DeError| invalid_error(file, error);

    if let Kind::Null = tree.kind {
        let hint = "a recipe is a mapping with at least `name`, `model`, `objective` and `passes`";
        return Err(invalid(DeError::new("the recipe is empty", Some(hint.into()))));
    }

    let mut recipe =
        Recipe::deserialize(NodeDeserializer::new(&tree, Vec::new())).map_err(invalid)?;
    recipe.path = file.to_owned();
    recipe.positions = Positions::record(&tree);
    attach_chain(&mut recipe.passes, &[Segment::Key("passes".into())], &tree);

    validate(&recipe, &tree).map_err(invalid)?;
    tracing::debug!(recipe = %file.display(), "recipe loaded");
    Ok(recipe)
}

fn syntax_error(file: &Path, error: &serde_saphyr::Error) -> RecipeError {
    let location = error.location();
    let message = serde_saphyr::UserMessageFormatter.format_message(error.without_snippet());
    RecipeError::Syntax {
        file: file.to_owned(),
        line: location.map_or(0, |l| l.line()),
        column: location.map_or(0, |l| l.column()),
        message: message.into_owned(),
    }
}

fn invalid_error(file: &Path, error: DeError) -> RecipeError {
    let (pos, path) = error.at.unwrap_or_default();
    RecipeError::Invalid {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        field: render_path(&path),
        message: error.message,
        hint: error.hint,
    }
}

/// Records where each pass of a chain is written, for the planner's messages.
fn attach_chain(items: &mut [PassItem], path: &[Segment], tree: &Node) {
    for (index, item) in items.iter_mut().enumerate() {
        let mut item_path = path.to_vec();
        item_path.push(Segment::Index(index));
        attach_item(item, item_path, tree);
    }
}

fn attach_item(item: &mut PassItem, mut path: Vec<Segment>, tree: &Node) {
    match item {
        PassItem::Pass(spec) => {
            let step = tree.find(&path);
            let pos = step.key_node(&spec.name).map_or(step.pos, |key| key.pos);
            path.push(Segment::Key(spec.name.clone()));
            spec.origin = Origin { field: render_path(&path), line: pos.line, column: pos.column };
        }
        PassItem::OneOf(branches) => {
            path.push(Segment::Key(ONE_OF.into()));
            for (index, chain) in branches.iter_mut().enumerate() {
                let mut branch_path = path.clone();
                branch_path.push(Segment::Index(index));
                match (&tree.find(&branch_path).kind, chain.as_mut_slice()) {
                    (Kind::Map(_), [single]) => attach_item(single, branch_path, tree),
                    _ => attach_chain(chain, &branch_path, tree),
                }
            }
        }
    }
}

/// The checks that span several fields, or that serde's types cannot express.
fn validate(recipe: &Recipe, tree: &Node) -> Result<(), DeError> {
    let at = |fields: &[Segment], message: String, hint: &str| {
        let node = tree.find(fields);
        DeError { message, hint: Some(hint.to_owned()), at: Some((node.pos, fields.to_vec())) }
    };
    let key = |name: &str| Segment::Key(name.to_owned());

    if recipe.name.trim().is_empty() {
        return Err(at(&[key("name")], "the name is empty".into(), "give the job a short name"));
    }

    let at_least_one = [
        (recipe.metrics.latency.as_ref().map(|l| l.runs), ["metrics", "latency", "runs"]),
        (
            recipe.data.calibration.as_ref().and_then(|d| d.samples),
            ["data", "calibration", "samples"],
        ),
        (
            recipe.data.evaluation.as_ref().and_then(|d| d.samples),
            ["data", "evaluation", "samples"],
        ),
        (Some(recipe.search.max_candidates), ["search", "max_candidates", ""]),
        (
            recipe.accuracy_aware.as_ref().map(|a| a.max_reverts),
            ["accuracy_aware", "max_reverts", ""],
        ),
        (recipe.accuracy_aware.as_ref().map(|a| a.subset), ["accuracy_aware", "subset", ""]),
    ];
    for (value, names) in at_least_one {
        if value == Some(0) {
            let fields: Vec<Segment> =
                names.iter().filter(|n| !n.is_empty()).map(|n| key(n)).collect();
            let field = render_path(&fields);
            return Err(at(
                &fields,
                "expected 1 or more, found 0".into(),
                &format!("set `{field}` to 1 or more"),
            ));
        }
    }

    if recipe.passes.is_empty() {
        let hint = "list at least one pass; `pipeline passes` shows them all";
        return Err(at(&[key("passes")], "no passes".into(), hint));
    }

    if recipe.data.calibration.is_none() {
        if let Some(spec) = first_calibrated_pass(&recipe.passes) {
            let origin = &spec.origin;
            let because = match pipeline_passes::pass::find(&spec.name).map(|i| i.calibration) {
                Some(CalibrationUse::When(parameter)) => format!(" with `{parameter}: true`"),
                _ => String::new(),
            };
            return Err(DeError {
                message: format!(
                    "`{}`{because} calibrates the model on data, and `data.calibration` is \
                     missing",
                    spec.name
                ),
                hint: Some(
                    "add `data: {calibration: {path: calib.npz}}`: an .npz with one array per \
                     model input, a few hundred samples like those the model will see"
                        .into(),
                ),
                at: Some((
                    Pos { line: origin.line, column: origin.column },
                    vec![Segment::Key(origin.field.clone())],
                )),
            });
        }
    }

    if let Some(accuracy) = &recipe.metrics.accuracy {
        let labels = recipe.data.evaluation.as_ref().and_then(|data| data.labels.as_ref());
        if accuracy.kind == AccuracyKind::Top1 && accuracy.score.is_some() {
            return Err(at(
                &[key("metrics"), key("accuracy"), key("score")],
                "`score` chooses a fidelity figure, and `kind` is `top1`".into(),
                "remove `score`, or set `kind: fidelity` to compare with the source model's \
                 output instead of labels",
            ));
        }
        if accuracy.kind == AccuracyKind::Top1 && labels.is_none() {
            return Err(at(
                &[key("metrics"), key("accuracy")],
                "top-1 accuracy needs labeled evaluation data".into(),
                "set `data.evaluation.labels` to the name of the labels array in the .npz \
                 file, or use `kind: fidelity` to compare with the source model's output",
            ));
        }
        if let Some(min) = accuracy.min.filter(|min| !(0.0..=1.0).contains(min)) {
            return Err(at(
                &[key("metrics"), key("accuracy"), key("min")],
                format!("an accuracy of {min} is outside the accuracy range 0..1"),
                "write the lowest accuracy as a fraction: `0.95` for 95%",
            ));
        }
        if let Some(MaxDrop::Absolute(drop)) = accuracy.max_drop {
            if drop > 1.0 {
                return Err(at(
                    &[key("metrics"), key("accuracy"), key("max_drop")],
                    format!("a drop of {drop} is larger than the whole accuracy range 0..1"),
                    "write an absolute drop like `0.01`, or a relative one like `\"1%\"`",
                ));
            }
        }
    }

    if recipe.accuracy_aware.is_some() {
        let goal = recipe.metrics.accuracy.as_ref().is_some_and(|a| a.has_goal());
        if !goal {
            return Err(at(
                &[key("accuracy_aware")],
                "accuracy-aware quantization needs an accuracy goal to aim for".into(),
                "add `metrics: {accuracy: {kind: top1, max_drop: 0.01}}` (or `min`), or \
                 remove `accuracy_aware`",
            ));
        }
    }

    if let Some(max) = recipe.metrics.latency.as_ref().and_then(|l| l.max) {
        if !(max.is_finite() && max > 0.0) {
            return Err(at(
                &[key("metrics"), key("latency"), key("max")],
                format!("a latency of at most {max} ms is not a goal any model can meet"),
                "write the highest latency allowed in milliseconds, more than 0, like `5`",
            ));
        }
    }

    if recipe.objective.is_empty() {
        let hint = "name the metrics that rank candidates, e.g. `objective: [latency]`";
        return Err(at(&[key("objective")], "the objective is empty".into(), hint));
    }
    for (index, objective) in recipe.objective.iter().enumerate() {
        let field = [key("objective"), Segment::Index(index)];
        if recipe.objective[..index].contains(objective) {
            let message = format!("`{}` is listed twice", objective);
            return Err(at(&field, message, "list each metric once, most important first"));
        }
        let measured = match objective {
            Objective::Latency => recipe.metrics.latency.is_some(),
            Objective::Size => recipe.metrics.size.is_some(),
            Objective::Accuracy => recipe.metrics.accuracy.is_some(),
        };
        if !measured {
            let name = objective.to_string();
            let message = format!("`{name}` ranks candidates but is not measured");
            let hint = format!("add `{name}` under `metrics` (e.g. `{name}: {{}}`)");
            return Err(at(&field, message, &hint));
        }
    }
    Ok(())
}

/// The first pass, in recipe order, that needs calibration data.
fn first_calibrated_pass(items: &[PassItem]) -> Option<&PassSpec> {
    items.iter().find_map(|item| match item {
        PassItem::Pass(spec) => pipeline_passes::pass::find(&spec.name)
            .filter(|info| {
                info.needs_calibration(|name| {
                    let found = spec.params.iter().find(|(param, _)| param == name);
                    found.map(|(_, space)| space.values())
                })
            })
            .map(|_| spec),
        PassItem::OneOf(branches) => branches.iter().find_map(|chain| first_calibrated_pass(chain)),
    })
}

/// Adds each pass of `items` that runs ONNX Runtime to `users`, once each.
fn collect_onnx_runtime_users(items: &[PassItem], users: &mut Vec<String>) {
    for item in items {
        let spec = match item {
            PassItem::Pass(spec) => spec,
            PassItem::OneOf(branches) => {
                for chain in branches {
                    collect_onnx_runtime_users(chain, users);
                }
                continue;
            }
        };
        let calibrates = first_calibrated_pass(std::slice::from_ref(item)).is_some();
        let format = spec.params.iter().find(|(param, _)| param == "format");
        let writes_ort = format.is_some_and(|(_, space)| {
            space.values().iter().any(|value| value.as_str() == Some("ort"))
        });
        let user = match spec.name.as_str() {
            _ if calibrates => format!("{} (calibration)", spec.name),
            "ort_optimize" => "ort_optimize (ONNX Runtime's graph optimizer)".to_string(),
            "export" if writes_ort => "export (format: ort, written by ONNX Runtime)".to_string(),
            _ => continue,
        };
        if !users.contains(&user) {
            users.push(user);
        }
    }
}

impl<'de> Deserialize<'de> for MaxDrop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MaxDropVisitor)
    }
}

struct MaxDropVisitor;

const MAX_DROP_HINT: &str = "write an absolute drop like `0.01`, or a relative one like `\"1%\"`";

impl MaxDropVisitor {
    /// `make(drop)` if the drop is 0 or more; `written` is how the recipe spelled it.
    fn checked<E: de::Error>(
        drop: f64,
        written: &str,
        make: fn(f64) -> MaxDrop,
    ) -> Result<MaxDrop, E> {
        if drop.is_finite() && drop >= 0.0 {
            return Ok(make(drop));
        }
        Err(E::custom(format!(
            "expected a drop of 0 or more, found {written}{}{MAX_DROP_HINT}",
            node::HINT
        )))
    }
}

impl<'de> Visitor<'de> for MaxDropVisitor {
    type Value = MaxDrop;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number like `0.01` or a percentage like `\"1%\"`")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MaxDrop, E> {
        Self::checked(v, &v.to_string(), MaxDrop::Absolute)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxDrop, E> {
        Self::checked(v as f64, &v.to_string(), MaxDrop::Absolute)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxDrop, E> {
        Self::checked(v as f64, &v.to_string(), MaxDrop::Absolute)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxDrop, E> {
        let percent = v.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok());
        match percent {
            Some(percent) if percent > 100.0 => Err(E::custom(format!(
                "a relative drop of {percent}% is more than the whole accuracy{}{MAX_DROP_HINT}",
                node::HINT
            ))),
            Some(percent) => Self::checked(percent, v, |p| MaxDrop::Relative(p / 100.0)),
            None => Err(E::custom(format!(
                "expected a number or a percentage, found string `{v}`{}{MAX_DROP_HINT}",
                node::HINT
            ))),
        }
    }
}

impl JsonSchema for MaxDrop {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxDrop".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An absolute drop like 0.01, or a drop relative to the source \
                            model's accuracy like \"1%\"",
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%\\s*$"},
            ],
        })
    }
}

impl<'de> Deserialize<'de> for MaxTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MaxTimeVisitor)
    }
}

struct MaxTimeVisitor;

const MAX_TIME_HINT: &str = "write a duration like `\"90s\"`, `\"10m\"` or `\"1h\"`, or seconds \
                             like `600`";

/// The shortest `max_time`: a shorter budget would be shown as `0s` and stop every run before
/// its first candidate.
const MAX_TIME_MIN: Duration = Duration::from_millis(1);

/// The longest `max_time`: thirty days, far beyond any run and far below what a
/// [`Duration`] can hold.
const MAX_TIME_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

impl MaxTimeVisitor {
    fn seconds<E: de::Error>(seconds: f64, written: &str) -> Result<MaxTime, E> {
        match Duration::try_from_secs_f64(seconds) {
            Ok(duration) => Self::duration(duration, written),
            Err(_) => Err(Self::out_of_range(written)),
        }
    }

    fn duration<E: de::Error>(duration: Duration, written: &str) -> Result<MaxTime, E> {
        if (MAX_TIME_MIN..=MAX_TIME_MAX).contains(&duration) {
            return Ok(MaxTime(duration));
        }
        Err(Self::out_of_range(written))
    }

    fn out_of_range<E: de::Error>(written: &str) -> E {
        E::custom(format!(
            "expected a time from 1ms to 30 days, found {written}{}{MAX_TIME_HINT}",
            node::HINT
        ))
    }
}

impl<'de> Visitor<'de> for MaxTimeVisitor {
    type Value = MaxTime;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration like `\"10m\"` or a number of seconds")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MaxTime, E> {
        Self::seconds(v, &v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxTime, E> {
        Self::seconds(v as f64, &v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxTime, E> {
        Self::seconds(v as f64, &v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxTime, E> {
        match humantime::parse_duration(v.trim()) {
            Ok(duration) => Self::duration(duration, v),
            Err(error) => Err(E::custom(format!(
                "`{v}` is not a duration: {error}{}{MAX_TIME_HINT}",
                node::HINT
            ))),
        }
    }
}

impl fmt::Display for MaxTime {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl JsonSchema for MaxTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxTime".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration like \"90s\", \"10m\", \"1h 30m\", or a number of \
                            seconds, from 1ms to 30 days",
            "anyOf": [
                {"type": "number", "minimum": 0.001, "maximum": 2_592_000},
                {"type": "string", "minLength": 2},
            ],
        })
    }
}

/// The JSON Schema of a recipe, as pretty JSON, for editors (`yaml-language-server`).
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(Recipe);
    schema.insert("title".into(), "pipeline recipe".into());
    schema.insert(
        "description".into(),
        "A recipe for `pipeline`: the model to optimize, how to measure candidates, and the \
         passes to try"
            .into(),
    );
    let mut text =
        serde_json::to_string_pretty(&schema).expect("a JSON value always serializes to text");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The recipe schema, and a YAML text as JSON, the way an editor would see them.
    fn schema_and(text: &str) -> (Value, Value) {
        let schema: Value = serde_json::from_str(&schema_json()).expect("the schema is JSON");
        let options = serde_saphyr::options! { strict_booleans: true };
        let value = serde_saphyr::from_str_with_options(text, options).expect("valid YAML");
        (schema, value)
    }

    fn recipe_files() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for pattern in ["examples", "recipes"] {
            let Ok(entries) = std::fs::read_dir(root.join(pattern)) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                } else if path.join("recipe.yaml").is_file() {
                    files.push(path.join("recipe.yaml"));
                }
            }
        }
        files
    }

    #[test]
    fn example_recipes_match_the_schema_and_load() {
        let files = recipe_files();
        assert!(!files.is_empty(), "no example recipe found");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            let (schema, value) = schema_and(&text);
            if let Err(reason) = check::check(&value, &schema, &schema) {
                panic!("{} does not match the schema: {reason}", file.display());
            }
            if let Err(error) = parse(&text, &file) {
                panic!("{error}");
            }
        }
    }

    #[test]
    fn settings_without_effect_are_named_for_a_warning() {
        let base = "name: x\nmodel: m.onnx\nobjective: [size]\npasses: [quantize_dynamic: {}]\n";
        let ignored = |tail: &str| {
            let text = format!("{base}{tail}");
            parse(&text, Path::new("r.yaml")).expect("the recipe loads").ignored_settings()
        };
        let seeded = ignored("metrics: {size: {}}\nsearch: {strategy: greedy, seed: 7}\n");
        assert_eq!(seeded.len(), 1, "{seeded:?}");
        assert!(seeded[0].contains("search.seed 7 has no effect: the greedy strategy"));
        assert!(!ignored("metrics: {size: {}}\nsearch: {seed: 7}\n").is_empty());
        assert!(ignored("metrics: {size: {}}\nsearch: {strategy: tpe, seed: 7}\n").is_empty());
        assert!(ignored("metrics: {size: {}}\nsearch: {strategy: random, seed: 7}\n").is_empty());

        let tuned = ignored("metrics: {size: {}}\nsession_tune: {}\n");
        assert_eq!(tuned.len(), 1, "{tuned:?}");
        assert!(tuned[0].contains("(10 warmup runs, 100 timed runs, p50)"), "{}", tuned[0]);
        assert!(ignored("metrics: {size: {}, latency: {}}\nsession_tune: {}\n").is_empty());
    }

    #[test]
    fn schema_refuses_what_the_loader_refuses() {
        let base = "name: x\nmodel: m.onnx\nmetrics: {latency: {}}\nobjective: [latency]\n";
        let cases = [
            ("passes: [quantize_dynamic: {per_channel: [true, false]}]\n", true),
            ("passes: [one_of: [quantize_dynamic: {}, [quantize_dynamic: {}]]]\n", true),
            ("passes: [quantize_dynamic: {per_channel: 3}]\n", false),
            ("passes: [quantize_dynamic: {per_channel: []}]\n", false),
            ("passes: [quantize_dynamic: {per_chanel: true}]\n", false),
            ("passes: [quantize_dynamc: {}]\n", false),
            ("passes: [one_of: []]\n", false),
            ("passes: []\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_candidates: 0}\n", false),
            ("passes: [quantize_dynamic: {}]\nsurch: {}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {strategy: tpe, max_time: 10m}\n", true),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 90, seed: 3}\n", true),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 0}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 1e30}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 1e20}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 2592001}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 2592000}\n", true),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: -5}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 1e-12}\n", false),
            ("passes: [quantize_dynamic: {}]\nsearch: {max_time: 0.001}\n", true),
            ("passes: [quantize_dynamic: {}]\nsearch: {strategy: bayes}\n", false),
        ];
        for (tail, valid) in cases {
            let text = format!("{base}{tail}");
            let (schema, value) = schema_and(&text);
            let by_schema = check::check(&value, &schema, &schema);
            let by_loader = parse(&text, Path::new("r.yaml"));
            assert_eq!(by_schema.is_ok(), valid, "schema on {tail}: {by_schema:?}");
            assert_eq!(by_loader.is_ok(), valid, "loader on {tail}: {:?}", by_loader.err());
        }

        let base = "name: x\nmodel: m.onnx\nobjective: [latency]\npasses: [quantize_dynamic: {}]\n";
        let goals = [
            ("metrics: {latency: {min_improvement: \"20%\", max: 3}}\n", true),
            ("metrics: {latency: {min_improvement: 2.5}}\n", true),
            ("metrics: {latency: {max: 0}}\n", false),
            ("metrics: {latency: {max: 0.5}}\n", true),
            ("metrics: {latency: {min_improvement: \"1000%\"}}\n", false),
            ("metrics: {latency: {min_improvement: \"100%\"}}\n", false),
            ("metrics: {latency: {min_improvement: -1}}\n", false),
            ("metrics: {latency: {}, size: {max_bytes: \"20MB\"}}\n", true),
            ("metrics: {latency: {}, size: {max_bytes: \"1.5 MiB\"}}\n", true),
            ("metrics: {latency: {}, size: {max_bytes: 0}}\n", false),
            ("metrics: {latency: {}, size: {max_bytes: 1}}\n", true),
            ("metrics: {latency: {}, size: {max_bytes: \"0MB\"}}\n", false),
            ("metrics: {latency: {}, size: {max_bytes: \"1.5\"}}\n", false),
            ("metrics: {latency: {}, size: {max_bytes: \"1.5 B\"}}\n", false),
            ("metrics: {latency: {}, size: {max_bytes: 1.5}}\n", false),
            ("metrics: {latency: {}, size: {max_bytes: \"20 megabytes\"}}\n", false),
            ("metrics: {latency: {}, size: {min_improvement: \"50%\"}}\n", true),
            ("metrics: {latency: {}, size: {min_improvement: \"1MB\"}}\n", true),
            ("metrics: {latency: {}, size: {min_improvement: \"150%\"}}\n", false),
        ];
        // The checker here ignores `pattern`, which editors apply, so a goal refused only by
        // its pattern (a percentage of 100 or more, a size without a known unit) is checked
        // against the loader alone.
        for (tail, valid) in goals {
            let text = format!("{base}{tail}");
            let (schema, value) = schema_and(&text);
            let by_schema = check::check(&value, &schema, &schema);
            let by_loader = parse(&text, Path::new("r.yaml"));
            if valid || !tail.contains('"') {
                assert_eq!(by_schema.is_ok(), valid, "schema on {tail}: {by_schema:?}");
            }
            assert_eq!(by_loader.is_ok(), valid, "loader on {tail}: {:?}", by_loader.err());
        }
    }
}
