//! The run report: `report.json`, `report.md` and the table printed at the end.
//!
//! A [`Report`] is plain data filled in by the run; this module only renders and writes it.

mod chart;
mod markdown;
mod table;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use chart::{has_chart, render_chart};
pub use markdown::render_markdown;
pub use table::render_table;

/// The chart's file name, beside `report.md`.
pub const CHART_FILE: &str = "report.svg";

/// Everything a run found out, in the order a reader needs it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub recipe: String,
    pub recipe_path: PathBuf,
    pub model: PathBuf,
    pub target: String,
    pub runtime: RuntimeSummary,
    /// What the candidates are ranked by, in order.
    pub objective: Vec<String>,
    /// The latency statistic that goals and ranking use: `p50`, `p90`, `p99` or `mean`.
    pub latency_stat: String,
    /// The goals every candidate must meet, in words.
    pub goals: Vec<String>,
    /// What `accuracy` holds in every measurement: `top1`, `cosine` or `top1_agreement`.
    pub accuracy_figure: AccuracyFigure,
    pub source: Measurement,
    pub candidates: Vec<CandidateReport>,
    /// The id of the winning candidate, if any met every goal.
    pub best: Option<String>,
    /// The ids of the candidates that met every goal and that no other such candidate beats
    /// on every objective (as good on all, better on one), best first.
    pub pareto_front: Vec<String>,
    /// The candidates that met every goal but are off the front, each with one front
    /// candidate that beats it.
    pub dominated: Vec<Dominated>,
    /// Why the winner won, or why nothing did.
    pub verdict: String,
    /// Candidates the plan held but the search did not run (see `search.not_run_reason`).
    pub candidates_not_run: usize,
    /// The search: strategy, budgets, what ran in what order, what did not and why.
    pub search: crate::search::SearchReport,
    /// Where the best model was written.
    pub output_model: Option<PathBuf>,
    /// Why no model was measured (`--no-measure`, naming the missing provider); `None` when
    /// every candidate was measured.
    pub not_measured: Option<String>,
    /// The session settings tuned for the best model (`session_tune`), written beside it
    /// as `inference.json`.
    pub session_tune: Option<crate::session_tune::Summary>,
    pub wall_time_s: f64,
}

/// A candidate that met every goal, and a candidate of the Pareto front that is as good on
/// every objective and better on one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dominated {
    pub id: String,
    pub by: String,
}

/// The runtime that measured every model.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSummary {
    pub name: String,
    pub version: String,
    pub library: PathBuf,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// The execution providers sessions were made with, most preferred first.
    pub providers: Vec<String>,
}

impl RuntimeSummary {
    /// How a latency column is headed: `latency p50` for ONNX Runtime, `tract latency p50`
    /// when tract timed the runs.
    pub fn latency_header(&self, stat: &str) -> String {
        match self.name.as_str() {
            "onnxruntime" => format!("latency {stat}"),
            other => format!("{other} latency {stat}"),
        }
    }
}

/// What was measured on one model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurement {
    /// The accuracy metric's figure, 0 to 1: top-1 accuracy on the evaluation data, or with
    /// `kind: fidelity` the chosen fidelity score.
    pub accuracy: Option<f64>,
    /// Every fidelity figure against the source model's output, with `kind: fidelity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<crate::evaluate::Fidelity>,
    pub latency_ms: Option<Latency>,
    /// Bytes of the serialized model, external data included.
    pub size_bytes: u64,
}

/// Latency of one inference, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub warmup: usize,
    pub runs: usize,
    pub batch: usize,
}

/// One candidate: how it was made, what it measured, and whether it met the goals.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    pub id: String,
    pub label: String,
    pub steps: Vec<StepReport>,
    pub status: Status,
    /// For a failed candidate, what failed; for one that missed a goal, each missed goal.
    pub reasons: Vec<String>,
    pub measurement: Option<Measurement>,
    /// Seconds its steps took to run or to be read from the cache (a prefix shared with
    /// other candidates counts in each).
    pub build_s: f64,
    /// What a reader must know of the model before deploying it, beyond its measurements;
    /// empty for most candidates.
    pub notes: Vec<Note>,
    /// The accuracy was read from the cache (the same model bytes were measured on the same
    /// data before); latency is measured in every run.
    pub accuracy_cached: bool,
    /// What accuracy-aware quantization did to this candidate, when it ran on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_aware: Option<AccuracyAwareReport>,
}

/// Accuracy-aware quantization of one candidate that missed its accuracy goal: the nodes of
/// its last quantizing step ranked by harm, those kept in float, and the accuracy after each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccuracyAwareReport {
    /// The quantizing step whose `nodes_to_exclude` grew (its pass name).
    pub step: String,
    /// The accuracy of the candidate as first built, before any node was reverted.
    pub accuracy_before: Option<f64>,
    /// Each node the step quantized, most harmful first, with how much quantizing it alone
    /// adds to the mean squared error of the accuracy output against the float model's.
    pub ranking: Vec<NodeHarm>,
    /// The nodes kept in float, in the order they were reverted.
    pub reverted: Vec<String>,
    /// The accuracy after each revert, in the same order as `reverted`.
    pub accuracies: Vec<f64>,
    /// Whether the accuracy goal was met in the end.
    pub goal_met: bool,
}

/// How much one quantized node moves the outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeHarm {
    pub node: String,
    /// How much lower the output's mean squared error against the float model is when this
    /// node alone stays float.
    pub mse_reduction: f64,
}

/// A fact about a candidate's model that its measurements do not show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub kind: NoteKind,
    /// The fact in words: what makes it so and what it means for deployment.
    pub message: String,
}

/// The kinds of [`Note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoteKind {
    /// The model runs only on the execution provider (and runtime build) it was made for,
    /// such as a model ONNX Runtime's optimizer wrote above its basic level.
    ProviderSpecific,
    /// A step of the candidate found nothing to rewrite and passed the model on as it was;
    /// the other steps changed it.
    UnchangedStep,
    /// A step wrote a file beside the model (an `export` to GGUF); the message names the
    /// file and says what it holds.
    Artifact,
    /// Accuracy-aware quantization kept some nodes in float to meet the accuracy goal (or
    /// tried to); the message names them.
    AccuracyAware,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::ProviderSpecific => "provider-specific",
            NoteKind::UnchangedStep => "step unchanged",
            NoteKind::Artifact => "exported file",
            NoteKind::AccuracyAware => "accuracy-aware",
        }
    }
}

/// One pass of a candidate with its concrete configuration.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub pass: String,
    pub config: serde_json::Value,
    /// The step's result was read from the cache, not run.
    pub cached: bool,
}

/// The outcome of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Built, loaded, measured and met every goal.
    Passed,
    /// Built and measured, but missed at least one goal.
    MissedGoals,
    /// A pass failed, the runtime could not load it, or measuring failed.
    Failed,
    /// A pass found nothing to rewrite, so the candidate would be the source model: not
    /// measured, never a winner.
    Unchanged,
    /// Built and saved, not measured (`--no-measure`): never a winner.
    NotMeasured,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::MissedGoals => "missed goals",
            Status::Failed => "failed",
            Status::Unchanged => "unchanged",
            Status::NotMeasured => "not measured",
        }
    }
}

impl Report {
    /// Writes `report.json`, `report.svg` and `report.md` into `dir`, each through a
    /// temporary file. A report with no chart (only size measured) removes the chart an
    /// earlier run left there.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomically(&dir.join("report.json"), json.as_bytes())?;
        let chart = dir.join(CHART_FILE);
        match render_chart(self)? {
            Some(svg) => write_atomically(&chart, svg.as_bytes())?,
            None if chart.is_file() => std::fs::remove_file(&chart)?,
            None => {}
        }
        write_atomically(&dir.join("report.md"), render_markdown(self).as_bytes())
    }

    pub fn candidate(&self, id: &str) -> Option<&CandidateReport> {
        self.candidates.iter().find(|c| c.id == id)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;

    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    {
        // Readable by others once renamed, like any file written with `create`.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Formats a byte count for people: `12.3 KiB`, `4.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What the accuracy figure of a run is, for headers, sentences and number formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracyFigure {
    /// Top-1 accuracy against labels, shown in percent.
    #[default]
    Top1,
    /// Mean cosine similarity to the source model's output, shown with four decimals.
    Cosine,
    /// The share of rows whose argmax agrees with the source model's, in percent.
    Top1Agreement,
}

impl AccuracyFigure {
    /// The figure a metric measures.
    pub fn of(metric: &crate::recipe::AccuracyMetric) -> AccuracyFigure {
        use crate::recipe::{AccuracyKind, FidelityScore};
        match (metric.kind, metric.score.unwrap_or_default()) {
            (AccuracyKind::Top1, _) => AccuracyFigure::Top1,
            (AccuracyKind::Fidelity, FidelityScore::Cosine) => AccuracyFigure::Cosine,
            (AccuracyKind::Fidelity, FidelityScore::Top1Agreement) => AccuracyFigure::Top1Agreement,
        }
    }

    /// A short column header.
    pub fn header(self) -> &'static str {
        match self {
            AccuracyFigure::Top1 => "accuracy",
            AccuracyFigure::Cosine => "cosine",
            AccuracyFigure::Top1Agreement => "top-1 agree",
        }
    }

    /// The figure's name in a sentence, capitalized.
    pub fn name(self) -> &'static str {
        match self {
            AccuracyFigure::Top1 => "Top-1 accuracy",
            AccuracyFigure::Cosine => "Cosine similarity to the source model's output",
            AccuracyFigure::Top1Agreement => "Top-1 agreement with the source model",
        }
    }

    /// A value of the figure, or a dash.
    pub fn format(self, value: Option<f64>) -> String {
        match self {
            AccuracyFigure::Cosine => value.map_or_else(|| "-".to_string(), |v| format!("{v:.4}")),
            AccuracyFigure::Top1 | AccuracyFigure::Top1Agreement => percent(value),
        }
    }
}

/// Formats an accuracy in percent with two decimals, or a dash.
pub fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{:.2}%", v * 100.0))
}

/// Formats a latency in milliseconds, or a dash; a value that three decimals would show as
/// 0.000 (a goal written in nanoseconds) keeps its digits in exponent form.
pub fn millis(value: Option<f64>) -> String {
    match value {
        None => "-".to_string(),
        Some(v) if v != 0.0 && v.abs() < 0.0005 => format!("{v:.3e} ms"),
        Some(v) => format!("{v:.3} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_keeps_the_digits_of_tiny_values() {
        assert_eq!(millis(Some(1.5)), "1.500 ms");
        assert_eq!(millis(Some(0.0)), "0.000 ms");
        assert_eq!(millis(Some(0.0000001)), "1.000e-7 ms");
        assert_eq!(millis(None), "-");
    }

    #[test]
    fn human_bytes_picks_the_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
    }

    #[test]
    fn write_atomically_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
