//! Runs a recipe: measures the source, builds and measures the candidates the search picks
//! within its budgets, ranks them.
//!
//! Everything the user gave is checked before anything is written: the recipe and its plan,
//! the model, the runtime, the data against the model's inputs, and the output folder.
//! Only then are candidates built, each loaded in the recipe's runtime (`evaluate.runtime`:
//! ONNX Runtime, or tract) and measured one after another the same way as the source. A
//! candidate that fails is reported with its reason and the run goes on.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Instant;

use pipeline_passes::export::onnx::{stamp_provenance, OnnxWrite};
use pipeline_passes::export::{Export, ExportConfig};
use pipeline_passes::ir::{self, proto::ModelProto, IrError};
use pipeline_passes::pass::{Artifact, Configured};
use tracing::{debug_span, info, trace_span, warn};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::accuracy_aware::Reverter as AccuracyReverter;
use crate::build::{Builder, StepCache};
use crate::cache::{self, AccuracyCache, Cache, CacheError, KnownAccuracy};
use crate::calibrate::OrtRunner;
use crate::evaluate::{self, DataError, Dataset, EvalError, Fidelity, Reference};
use crate::goals;
use crate::plan::{self, Candidate, PlanError};
use crate::recipe::{
    self, AccuracyKind, AccuracyMetric, EvalRuntime, FidelityScore, LatencyStat, Objective, Recipe,
    RecipeError,
};
use crate::report::{
    self, AccuracyFigure, CandidateReport, Dominated, Latency, Measurement, Note, NoteKind, Report,
    RuntimeSummary, Status, StepReport,
};
use crate::runtime::{
    self, InferenceSession, IoInfo, ModelSession, OrtOptimizer, RuntimeError, RuntimeInfo, Threads,
    TractSession, TRACT_VERSION,
};
use crate::search::{self, Search, SearchReport, StopReason};

/// How to run, beyond what the recipe says.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The ONNX Runtime library to use instead of searching for one.
    pub ort_lib: Option<PathBuf>,
    /// Models whose protobuf would be larger than this many bytes are saved with their
    /// large tensors in a data file beside the model (protobuf cannot hold 2 GiB).
    pub external_data_above: usize,
    /// The folder of the cache of pass outputs and accuracies; `None` runs without a cache.
    pub cache_dir: Option<PathBuf>,
    /// Set (by a Ctrl-C handler) to stop the run: no new candidate or step starts, and the
    /// run returns [`RunError::Interrupted`] without writing its output.
    pub stop: Arc<AtomicBool>,
    /// Build and save every candidate without measuring any (`--no-measure`): for a target
    /// this host cannot run. Nothing is ranked; candidates are saved under
    /// `<output>/candidates/<id>/`.
    pub no_measure: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            ort_lib: None,
            external_data_above: 1 << 30,
            cache_dir: None,
            stop: Arc::default(),
            no_measure: false,
        }
    }
}

/// Why a run stopped before it could rank candidates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),

    #[error(transparent)]
    Plan(#[from] PlanError),

    #[error(transparent)]
    Model(IrError),

    #[error(transparent)]
    Runtime(#[from] RuntimeError),

    #[error("the source model {path} does not load in {runtime}: {source}\n  hint: {hint}")]
    SourceLoad { path: PathBuf, runtime: &'static str, source: Box<RuntimeError>, hint: String },

    /// `evaluate.runtime` is tract, but the recipe asks for something that runs ONNX Runtime,
    /// which could not be loaded.
    #[error(
        "{} runs models in ONNX Runtime, which could not be loaded (the recipe measures with \
         tract): {source}",
        users.join(", ")
    )]
    OnnxRuntimeNeeded { users: Vec<String>, source: Box<RuntimeError> },

    #[error(transparent)]
    Data(Box<DataError>),

    /// A recipe setting that contradicts the model or the file system, at `place`
    /// (`recipe.yaml:LINE:COLUMN: field`).
    #[error("{place}: {message}\n  hint: {hint}")]
    Input { place: String, message: String, hint: String },

    /// An error about a file or value the recipe names, with where it names it.
    #[error("{place}: {error}")]
    At { place: String, error: Box<RunError> },

    /// The evaluation data's labels cannot be compared with the model's output.
    #[error(transparent)]
    Labels(Box<EvalError>),

    #[error("measuring the source model failed: {0}")]
    Measure(EvalError),

    /// The source model loads but fails on the evaluation data: the data does not suit it.
    #[error(
        "the source model fails on {}: {source}\n  hint: check that the arrays hold what the \
         model expects (values in range, such as token ids below the vocabulary size, and the \
         dtype and shape of each input)",
        data.display()
    )]
    SourceOnData { data: PathBuf, source: Box<RuntimeError> },

    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },

    #[error(transparent)]
    Cache(#[from] CacheError),

    /// The run was stopped (Ctrl-C) before it ranked the candidates.
    #[error(
        "stopped: {done} of {total} candidates were built and measured; {output} was left as \
         it was\n  hint: run again to resume: steps already built are read from the cache"
    )]
    Interrupted { done: usize, total: usize, output: PathBuf },

    /// The recipe's target cannot be measured on this host, and `--no-measure` was not given.
    #[error(
        "{}: target `{target}` cannot be measured on this host: {reason}\n  hint: run it \
         where {target} is available, or pass --no-measure to build and save the candidates \
         without measuring them (`pipeline targets` shows what this host can measure)",
        recipe.display()
    )]
    TargetUnavailable { recipe: PathBuf, target: crate::target::Target, reason: String },
}

impl From<DataError> for RunError {
    fn from(error: DataError) -> Self {
        RunError::Data(Box::new(error))
    }
}

impl RunError {
    /// 2 when the input was wrong (recipe, model, data, flags), 1 when the job failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::At { error, .. } => error.exit_code(),
            // Labels that do not fit an output whose class count is only known once it runs.
            RunError::Measure(EvalError::BadLabels { .. }) => 2,
            RunError::Measure(_) | RunError::Write { .. } => 1,
            // 128 + SIGINT, as shells report a command stopped by Ctrl-C.
            RunError::Interrupted { .. } => 130,
            _ => 2,
        }
    }
}

/// What a run needs, read and checked before anything is run or written.
pub struct Prepared {
    pub recipe: Recipe,
    pub plan: plan::Plan,
    pub model_path: PathBuf,
    pub model: ModelProto,
    pub evaluation: Dataset,
    /// The calibration set, when the recipe has one.
    pub calibration: Option<Dataset>,
    pub output_dir: PathBuf,
    pub output_model: PathBuf,
}

/// Reads and checks everything the user gave without running a model: the recipe and its
/// plan, the output folder, the model, and the data against the model's inputs.
pub fn prepare(recipe_path: &Path) -> Result<Prepared, RunError> {
    let recipe = recipe::load(recipe_path)?;
    let (plan, model_path, output_dir, output_model) = plan_and_output(&recipe)?;

    let model = ir::load(&model_path).map_err(|e| at(&recipe, "model", RunError::Model(e)))?;
    check_steps(&recipe, &plan, &model)?;
    let (evaluation, calibration) = load_data(&recipe, &model)?;
    check_metrics(&recipe, &model, &evaluation)?;

    Ok(Prepared {
        recipe,
        plan,
        model_path,
        model,
        evaluation,
        calibration,
        output_dir,
        output_model,
    })
}

/// The checks of [`prepare`] for a recipe already parsed, whose model and data the caller
/// loaded from the recipe's paths and checked against each other (`pipeline tune`, which
/// checks everything before it writes the recipe).
pub fn prepare_loaded(
    recipe: Recipe,
    model: ModelProto,
    evaluation: Dataset,
    calibration: Option<Dataset>,
) -> Result<Prepared, RunError> {
    let (plan, model_path, output_dir, output_model) = plan_and_output(&recipe)?;
    check_steps(&recipe, &plan, &model)?;
    check_metrics(&recipe, &model, &evaluation)?;
    Ok(Prepared {
        recipe,
        plan,
        model_path,
        model,
        evaluation,
        calibration,
        output_dir,
        output_model,
    })
}

/// The recipe's plan, model path, output folder and output model path, the output checked
/// against the model (it may not overwrite it).
fn plan_and_output(recipe: &Recipe) -> Result<(plan::Plan, PathBuf, PathBuf, PathBuf), RunError> {
    let plan = plan::build(recipe)?;
    let model_path = recipe.model_path();
    // `./.` and `out/./` read better as `.` and `out`.
    let output_dir: PathBuf = recipe.output_dir().components().collect();
    let output_model = output_dir.join(model_path.file_name().unwrap_or("model.onnx".as_ref()));
    check_output(recipe, &model_path, &output_dir, &output_model)?;
    Ok((plan, model_path, output_dir, output_model))
}

/// Runs the recipe at `recipe_path` and returns the report it wrote.
pub fn run(recipe_path: &Path, options: &RunOptions) -> Result<Report, RunError> {
    let started = Instant::now();
    let prepared = prepare(recipe_path)?;
    run_prepared(recipe_path, prepared, options, started)
}

/// Runs a recipe that [`prepare`] or [`prepare_loaded`] checked; `recipe_path` is where it
/// is written, for the report; `started` is when the run began, for its budget.
pub fn run_prepared(
    recipe_path: &Path,
    prepared: Prepared,
    options: &RunOptions,
    started: Instant,
) -> Result<Report, RunError> {
    let Prepared {
        recipe,
        plan,
        model_path,
        model: source_model,
        evaluation,
        calibration,
        output_dir,
        output_model,
    } = prepared;

    let load_hint = source_load_hint(&source_model);
    let evaluator = recipe.evaluate.runtime;
    let ort = onnx_runtime(&recipe, options)?;
    // What measured the accuracies the cache keeps: ONNX Runtime's version, or tract's.
    let measured_with = match (evaluator, &ort) {
        (EvalRuntime::Onnxruntime, Some(ort)) => ort.version.clone(),
        _ => format!("tract-{TRACT_VERSION}"),
    };
    let ort_version = ort.as_ref().map(|ort| ort.version.clone()).unwrap_or_default();
    // Why candidates are not measured, when they are not: checked before anything runs.
    let not_measured = match evaluator {
        EvalRuntime::Onnxruntime => crate::target::check_host(&recipe, options.no_measure)?,
        // tract measures on this host's CPU whatever providers the target names.
        EvalRuntime::Tract => {
            let providers = &recipe.target.profile().providers;
            if !options.no_measure && providers.iter().any(|p| *p != runtime::CPU_PROVIDER) {
                tracing::warn!(
                    "target {}: tract measures on this host's CPU, not on {}; its latencies \
                     say nothing about that device",
                    recipe.target,
                    providers.join(", ")
                );
            }
            options.no_measure.then(|| "--no-measure was given".to_string())
        }
    };

    let threads = Threads::default();
    let session_config = crate::target::session_config(recipe.target, threads);
    let source_size = crate::inspect::stored_size(&model_path).map_err(RunError::Model)?;

    let cache = options.cache_dir.as_deref().map(Cache::open).transpose()?;
    let outputs: Vec<&str> =
        source_model.graph.iter().flat_map(|g| &g.output).map(|o| o.name()).collect();
    let output = accuracy_output(&recipe, &outputs);
    let calibration_hash = match (&cache, &recipe.data.calibration) {
        (Some(_), Some(spec)) => {
            let path = recipe.resolve(&spec.path);
            let hash = cache::hash_file(&path)
                .map_err(|source| CacheError::Entry { path: path.clone(), source })?;
            Some((hash, spec.samples))
        }
        _ => None,
    };

    let calibration = calibration.map(|data| {
        OrtRunner::new(data, threads)
            .with_external_data_above(options.external_data_above)
            .with_stop(Arc::clone(&options.stop))
    });
    let optimizer =
        OrtOptimizer::new(threads).with_external_data_above(options.external_data_above);
    let mut builder = Builder::new(Arc::new(source_model), calibration, optimizer)
        .with_stop(Arc::clone(&options.stop));
    if let Some(cache) = &cache {
        builder = builder.with_cache(StepCache {
            cache: cache.clone(),
            calibration: calibration_hash,
            ort_version: ort_version.clone(),
        });
    }
    // Made after the builder, which hashes the source: fidelity figures are keyed by it.
    let accuracy_cache = match &cache {
        Some(cache) => AccuracyCache::for_recipe(
            cache.clone(),
            &recipe,
            &output,
            &measured_with,
            threads,
            builder.source_hash(),
        )?,
        None => None,
    };

    // The source model's output on the evaluation data, with `kind: fidelity`.
    let mut reference = None;
    // The source's outputs that hold NaN or infinity on the first evaluation batch.
    let mut source_non_finite = Vec::new();
    let source = if not_measured.is_some() {
        Measurement { size_bytes: source_size, ..Measurement::default() }
    } else {
        // ONNX Runtime holds the source's weights while it measures it; this copy need not.
        builder.set_aside_source(&model_path).map_err(RunError::Model)?;
        let mut session =
            open_session(evaluator, &model_path, &session_config).map_err(|source| {
                let hint = match evaluator {
                    EvalRuntime::Onnxruntime => load_hint.clone(),
                    EvalRuntime::Tract => TRACT_SOURCE_HINT.to_string(),
                };
                let runtime = runtime_title(evaluator);
                let source = Box::new(source);
                RunError::SourceLoad { path: model_path.clone(), runtime, source, hint }
            })?;
        let session = session.as_mut();
        info!("measuring the source model {} in {}", model_path.display(), evaluator.name());
        // A run error of the source model on the evaluation data is the data's (exit 2).
        let source_failed = |error: EvalError| match error {
            EvalError::Runtime(source @ RuntimeError::Run { .. }) => {
                let data = evaluation.path().to_path_buf();
                let error = RunError::SourceOnData { data, source: Box::new(source) };
                at(&recipe, "data.evaluation", error)
            }
            other => RunError::Measure(other),
        };
        source_non_finite = evaluate::non_finite_outputs(&mut *session, &evaluation, CHECK_BATCH)
            .map_err(source_failed)?;
        if !source_non_finite.is_empty() {
            warn!(
                "the source model's output {} holds NaN or infinity on the first evaluation \
                 samples; candidates are not held to finite values there",
                source_non_finite.join(", ")
            );
        }
        let known = known_accuracy(accuracy_cache.as_ref(), builder.source_hash());
        let stop = &options.stop;
        let measured = source_reference(&recipe, &mut *session, &evaluation, &output, stop)
            .and_then(|kept| {
                let source = &mut *session;
                let found = kept.as_ref();
                measure(&recipe, source, &evaluation, source_size, known, found, stop)
                    .map(|measured| (measured, kept))
            });
        let source = match measured {
            Ok((source, kept)) => {
                reference = kept;
                source
            }
            // Ctrl-C while the source was measured: nothing ran, nothing is written.
            Err(EvalError::Interrupted) => {
                let total = Search::new(&plan).planned();
                return Err(RunError::Interrupted { done: 0, total, output: output_dir });
            }
            Err(error) => return Err(source_failed(error)),
        };
        remember_accuracy(accuracy_cache.as_ref(), builder.source_hash(), known, &source);
        source
    };

    std::fs::create_dir_all(&output_dir)
        .map_err(|source| RunError::Write { path: output_dir.clone(), source })?;
    warn_left_behind(&output_dir);
    let work = tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(&output_dir)
        .map_err(|source| RunError::Write { path: output_dir.clone(), source })?;

    let figure = recipe.metrics.accuracy.as_ref().map(AccuracyFigure::of).unwrap_or_default();
    let reverter = AccuracyReverter::new(&recipe, &evaluation, &output);
    let candidates = plan.candidates();
    let mut search = Search::new(&plan);
    // A trace-level span: only the progress bar layer sees it, the log lines stay short.
    let span = trace_span!("candidates", "indicatif.pb_show" = true);
    span.pb_set_length(search.planned() as u64);
    span.pb_set_message("building and measuring candidates");
    let _entered = span.enter();

    // Candidates whose order is known up front are all built before any is measured:
    // independent branches at once, and nothing builds while latency is measured.
    if let Some(order) = search.upfront() {
        builder.build_all(&order.iter().map(|&index| &candidates[index]).collect::<Vec<_>>());
        // Measuring needs only the built models: a later build reads the source again.
        builder.set_aside_source(&model_path).map_err(RunError::Model)?;
    }
    let mut evaluated = Vec::with_capacity(search.planned());
    while let Some(index) = search.next(started.elapsed()) {
        if options.stop.load(AtomicOrdering::Relaxed) {
            break;
        }
        let candidate = &candidates[index];
        let bench = Bench {
            recipe: &recipe,
            evaluation: &evaluation,
            source: &source,
            work: work.path(),
            file_name: output_model.file_name().unwrap_or("model.onnx".as_ref()),
            session: &session_config,
            measuring: not_measured.is_none(),
            options,
            accuracy_cache: accuracy_cache.as_ref(),
            reference: reference.as_ref(),
            source_non_finite: &source_non_finite,
        };
        let mut outcome = evaluate_candidate(&bench, candidate, &mut builder);
        if let Some(reverter) = &reverter {
            outcome = reverter.revert(&bench, candidate, &mut builder, outcome);
        }
        // The work folder is gone when the run ends: reasons name `c2/model.onnx` instead.
        let work_prefix = format!("{}{}", work.path().display(), std::path::MAIN_SEPARATOR);
        for reason in &mut outcome.reasons {
            *reason = reason.replace(&work_prefix, "");
        }
        // A candidate whose build or measurement Ctrl-C cut short is abandoned.
        if options.stop.load(AtomicOrdering::Relaxed) && outcome.measurement.is_none() {
            break;
        }
        let line = summary_line(&outcome, figure);
        info!("{} {}: {line}", candidate.id, candidate.label());
        let scored = search::Outcome::of(&outcome, &recipe.objective, recipe.latency_stat());
        search.tell(index, scored, started.elapsed());
        evaluated.push((index, outcome));
        span.pb_inc(1);
    }
    if options.stop.load(AtomicOrdering::Relaxed) {
        let output = output_dir.clone();
        let total = search.planned();
        return Err(RunError::Interrupted { done: evaluated.len(), total, output });
    }
    // The report lists candidates in plan order; the search history keeps the run order.
    evaluated.sort_by_key(|(index, _)| *index);
    let reports: Vec<CandidateReport> = evaluated.into_iter().map(|(_, report)| report).collect();
    let search_report = search.report(&plan);

    let best = rank(&recipe.objective, &reports, recipe.latency_stat());
    let front = goals::pareto_front(&recipe.objective, &reports, recipe.latency_stat());
    let pareto_front = front.iter().map(|i| reports[*i].id.clone()).collect();
    let dominated = dominated(&recipe, &reports, &front);
    let verdict = match &not_measured {
        Some(why) => {
            crate::target::save_unmeasured(&reports, work.path(), &output_dir)?;
            crate::target::unmeasured_verdict(why, &reports, &output_dir)
        }
        None => verdict(&recipe, &source, &reports, best, &search_report),
    };
    let best_id = best.map(|i| reports[i].id.clone());

    // The winner was saved in the work folder when it was measured; moving it keeps the
    // bytes that were measured and never leaves a half-written model in the output.
    // A model from an earlier run must not stand beside a report that names no winner, nor
    // its data file beside a new model that has none.
    let file_name = output_model.file_name().unwrap_or("model.onnx".as_ref());
    let written = match &best_id {
        Some(id) => {
            move_model(&work.path().join(id), file_name, &output_dir)?;
            Some(output_model.clone())
        }
        None => {
            remove_previous(&output_dir, file_name, &[])?;
            None
        }
    };
    if not_measured.is_none() {
        crate::target::remove_unmeasured(&output_dir)?;
    }

    let session_tune = crate::session_tune::after_run(
        crate::session_tune::Context {
            recipe: &recipe,
            evaluation: &evaluation,
            base: &session_config,
            ort_version: &ort_version,
            providers: crate::target::session_providers(&session_config),
        },
        &output_dir,
        written.as_deref(),
    );

    let report = Report {
        recipe: recipe.name.clone(),
        recipe_path: recipe_path.to_path_buf(),
        model: model_path,
        target: recipe.target.to_string(),
        runtime: runtime_summary(evaluator, ort.as_ref(), threads, &session_config),
        objective: recipe.objective.iter().map(|o| objective_name(*o).to_string()).collect(),
        latency_stat: recipe.latency_stat().to_string(),
        goals: recipe.goal_descriptions(),
        accuracy_figure: recipe
            .metrics
            .accuracy
            .as_ref()
            .map(AccuracyFigure::of)
            .unwrap_or_default(),
        source,
        candidates: reports,
        best: best_id,
        pareto_front,
        dominated,
        verdict,
        candidates_not_run: search_report.not_run,
        search: search_report,
        output_model: written,
        not_measured,
        session_tune,
        wall_time_s: started.elapsed().as_secs_f64(),
    };
    report.write(&output_dir).map_err(|source| RunError::Write { path: output_dir, source })?;
    Ok(report)
}

/// Loads the evaluation set, and the calibration set (checked even when no pass needs it),
/// each checked against the model's inputs.
fn load_data(recipe: &Recipe, model: &ModelProto) -> Result<(Dataset, Option<Dataset>), RunError> {
    let inputs = IoInfo::model_inputs(model);
    let spec = recipe.data.evaluation.as_ref().ok_or_else(|| RunError::Input {
        place: recipe.positions.place(&recipe.path, "data.evaluation"),
        message: "is missing: every candidate is measured on it".into(),
        hint: "add `data: {evaluation: {path: test.npz, labels: y}}`".into(),
    })?;
    let (labels, samples) = (spec.labels.as_deref(), spec.samples);
    let evaluation = load_dataset(recipe, "data.evaluation", &spec.path, labels, samples, &inputs)?;
    let calibration = match &recipe.data.calibration {
        Some(spec) => {
            let (labels, samples) = (spec.labels.as_deref(), spec.samples);
            let field = "data.calibration";
            Some(load_dataset(recipe, field, &spec.path, labels, samples, &inputs)?)
        }
        None => None,
    };
    Ok((evaluation, calibration))
}

/// Loads the data set the recipe's `field` describes and checks it against the model's
/// `inputs`; errors say where the recipe names the file (or its labels).
fn load_dataset(
    recipe: &Recipe,
    field: &'static str,
    path: &Path,
    labels: Option<&str>,
    samples: Option<usize>,
    inputs: &[IoInfo],
) -> Result<Dataset, RunError> {
    let place = |error: DataError| {
        let field = match error {
            DataError::MissingLabels { .. } if field == "data.evaluation" => {
                "data.evaluation.labels"
            }
            DataError::MissingLabels { .. } => "data.calibration.labels",
            _ => field,
        };
        at(recipe, field, RunError::from(error))
    };
    let data = Dataset::load(&recipe.resolve(path), labels, samples).map_err(place)?;
    data.check_inputs(inputs).map_err(place)?;
    data.check_finite(field == "data.calibration").map_err(place)?;
    Ok(data)
}

/// The prefix of the work folder a run builds its candidates in, inside the output folder.
const WORK_PREFIX: &str = ".pipeline-work-";

/// Names the work folders that runs quit at once (a second Ctrl-C, a kill) left in the output
/// folder: nothing removes them, and a run still going in the same folder may own one.
fn warn_left_behind(output_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(output_dir) else { return };
    let left: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(WORK_PREFIX))
        .collect();
    if !left.is_empty() {
        tracing::warn!(
            "{} holds {} work folder(s) of runs that were stopped at once: {}; remove them \
             unless another run in this folder is still going",
            output_dir.display(),
            left.len(),
            left.join(", ")
        );
    }
}

/// `error` with where the recipe writes `field`.
fn at(recipe: &Recipe, field: &str, error: RunError) -> RunError {
    RunError::At { place: recipe.positions.place(&recipe.path, field), error: Box::new(error) }
}

/// What to tell a user whose source model tract cannot load.
const TRACT_SOURCE_HINT: &str = "tract 0.23 runs fewer models than ONNX Runtime (no int4 type, \
                                 some float16 graphs and operators missing); measure with ONNX \
                                 Runtime instead (remove `evaluate: {runtime: tract}`)";

/// ONNX Runtime, loaded when the recipe measures with it or, measuring with tract, asks for
/// something that runs it (calibration, its optimizer, `accuracy_aware`, `session_tune`);
/// `None` when nothing needs it.
fn onnx_runtime(recipe: &Recipe, options: &RunOptions) -> Result<Option<RuntimeInfo>, RunError> {
    match recipe.evaluate.runtime {
        EvalRuntime::Onnxruntime => Ok(Some(runtime::init(options.ort_lib.as_deref())?)),
        EvalRuntime::Tract => {
            let users = recipe.onnx_runtime_users();
            if users.is_empty() {
                info!("measuring with tract; ONNX Runtime is not loaded");
                return Ok(None);
            }
            let loaded = runtime::init(options.ort_lib.as_deref());
            let source = |source| RunError::OnnxRuntimeNeeded { users, source: Box::new(source) };
            loaded.map(Some).map_err(source)
        }
    }
}

/// The model at `path` loaded in `evaluator`: an ONNX Runtime session made as `config` says,
/// or a tract one (on the CPU, whatever the target).
fn open_session(
    evaluator: EvalRuntime,
    path: &Path,
    config: &runtime::SessionConfig,
) -> Result<Box<dyn InferenceSession>, RuntimeError> {
    match evaluator {
        EvalRuntime::Onnxruntime => Ok(Box::new(ModelSession::load_configured(path, config)?)),
        EvalRuntime::Tract => Ok(Box::new(TractSession::load(path)?)),
    }
}

/// The runtime's name in a sentence.
fn runtime_title(evaluator: EvalRuntime) -> &'static str {
    match evaluator {
        EvalRuntime::Onnxruntime => "ONNX Runtime",
        EvalRuntime::Tract => "tract",
    }
}

/// What the report says measured the models.
fn runtime_summary(
    evaluator: EvalRuntime,
    ort: Option<&RuntimeInfo>,
    threads: Threads,
    config: &runtime::SessionConfig,
) -> RuntimeSummary {
    match (evaluator, ort) {
        (EvalRuntime::Onnxruntime, Some(ort)) => RuntimeSummary {
            name: evaluator.name().to_string(),
            version: ort.version.clone(),
            library: ort.library.clone(),
            intra_op_threads: threads.intra_op,
            inter_op_threads: threads.inter_op,
            providers: crate::target::session_providers(config),
        },
        _ => RuntimeSummary {
            name: EvalRuntime::Tract.name().to_string(),
            version: TRACT_VERSION.to_string(),
            library: PathBuf::from("built into pipeline"),
            intra_op_threads: 1,
            inter_op_threads: 1,
            providers: vec!["tract CPU".to_string()],
        },
    }
}

/// What to tell a user whose source model ONNX Runtime cannot load: about its operators of
/// custom domains, when it has any, which only a custom-op library would provide.
fn source_load_hint(model: &ModelProto) -> String {
    const KNOWN: [&str; 4] = ["", "ai.onnx", "ai.onnx.ml", "com.microsoft"];
    let mut custom: Vec<String> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter(|node| !KNOWN.contains(&node.domain()))
        .map(|node| format!("{}:{}", node.domain(), node.op_type()))
        .collect();
    custom.sort();
    custom.dedup();
    if custom.is_empty() {
        return "check that the model loads with the `onnxruntime` Python package of the same \
                version; `pipeline inspect` shows its opsets and operators"
            .to_string();
    }
    format!(
        "the model uses {}, of a custom domain that ONNX Runtime knows only from a custom-op \
         library, which pipeline does not load; replace the operator, or build the candidates \
         without measuring them (`--no-measure`)",
        custom.join(", ")
    )
}

/// The accuracy metric must name an output the model has.
fn check_metrics(
    recipe: &Recipe,
    model: &ModelProto,
    evaluation: &Dataset,
) -> Result<(), RunError> {
    let Some(accuracy) = &recipe.metrics.accuracy else { return Ok(()) };
    let graph_outputs = model.graph.iter().flat_map(|g| &g.output);
    let outputs: Vec<&str> = graph_outputs.clone().map(|o| o.name()).collect();
    let wanted = accuracy_output(recipe, &outputs);
    let Some(output) = graph_outputs.clone().find(|o| o.name() == wanted) else {
        return Err(RunError::Input {
            place: recipe.positions.place(&recipe.path, "metrics.accuracy.output"),
            message: format!("`{wanted}` is not an output of the model"),
            hint: format!("the model's outputs are: {}", outputs.join(", ")),
        });
    };

    // Labels that are not class indices of the output are refused before anything runs.
    if accuracy.kind == AccuracyKind::Top1 && evaluation.labels().is_some() {
        let declared = ir::declared_type(output).and_then(|t| t.dims);
        let classes = declared
            .and_then(|dims| dims.last().and_then(|d| d.known()))
            .and_then(|size| usize::try_from(size).ok())
            .filter(|&size| size > 0);
        evaluate::check_labels(evaluation, classes, &wanted).map_err(|error| {
            at(recipe, "data.evaluation.labels", RunError::Labels(Box::new(error)))
        })?;
    }
    Ok(())
}

/// Two `export` steps of one format in a candidate would write one file (`<stem>.gguf`) or
/// set one model's layout twice, the later silently winning: refused at the second.
fn check_exports(recipe: &Recipe, plan: &plan::Plan) -> Result<(), RunError> {
    for candidate in plan.candidates() {
        let mut formats = Vec::new();
        for step in candidate.steps.iter().filter(|step| step.pass == "export") {
            let format = step.config.get("format").and_then(|f| f.as_str()).unwrap_or("onnx");
            if formats.contains(&format) {
                return Err(RunError::from(plan::PlanError::InvalidConfig {
                    file: recipe.path.clone(),
                    origin: step.origin.clone(),
                    config: step.config.clone(),
                    message: format!(
                        "a second `export` to `{format}` in the chain `{}` would replace the \
                         first's output; hint: keep one export per format in a chain, or put \
                         them in separate `one_of` branches",
                        candidate.label()
                    ),
                }));
            }
            formats.push(format);
        }
    }
    Ok(())
}

/// Checks each step of the plan against the source model where its pass can tell without
/// running (`fix_shapes` names a dimension the model does not have). A recipe step whose
/// every configuration is refused is an error at the step; a searched value refused alone
/// fails its candidates when they run, as the search expects.
fn check_steps(recipe: &Recipe, plan: &plan::Plan, model: &ModelProto) -> Result<(), RunError> {
    check_exports(recipe, plan)?;

    // For each recipe step (by where it is written): whether some configuration passed, and
    // the first refusal.
    let mut steps: Vec<(&plan::StepRef, bool, Option<String>)> = Vec::new();
    let mut checked = std::collections::HashSet::new();
    for step in plan.candidates().iter().flat_map(|candidate| &candidate.steps) {
        if !checked.insert((step.pass.as_str(), step.config.to_string(), &step.origin)) {
            continue;
        }
        // The plan built every step once already; one that does not build failed there.
        let Some(info) = pipeline_passes::pass::find(&step.pass) else { continue };
        let Ok(pass) = (info.build)(&step.config) else { continue };
        let result = pass.check_source(model, crate::build::PASS_RUNTIME);
        let index = match steps.iter().position(|(seen, ..)| seen.origin == step.origin) {
            Some(index) => index,
            None => {
                steps.push((step, false, None));
                steps.len() - 1
            }
        };
        let entry = &mut steps[index];
        match result {
            Ok(()) => entry.1 = true,
            Err(error) => {
                if entry.2.is_none() {
                    entry.0 = step;
                    entry.2 = Some(error.to_string());
                }
            }
        }
    }

    match steps.into_iter().find(|(_, passed, refused)| !passed && refused.is_some()) {
        Some((step, _, Some(message))) => Err(RunError::from(plan::PlanError::InvalidConfig {
            file: recipe.path.clone(),
            origin: step.origin.clone(),
            config: step.config.clone(),
            message,
        })),
        _ => Ok(()),
    }
}

/// The output whose argmax is compared with the labels: named, or the model's first.
fn accuracy_output(recipe: &Recipe, outputs: &[&str]) -> String {
    recipe
        .metrics
        .accuracy
        .as_ref()
        .and_then(|a| a.output.clone())
        .or_else(|| outputs.first().map(|o| o.to_string()))
        .unwrap_or_default()
}

/// The source model's output on the evaluation data, kept when accuracy is fidelity to it.
fn source_reference(
    recipe: &Recipe,
    session: &mut dyn InferenceSession,
    evaluation: &Dataset,
    output: &str,
    stop: &AtomicBool,
) -> Result<Option<Reference>, EvalError> {
    match &recipe.metrics.accuracy {
        Some(metric) if metric.kind == AccuracyKind::Fidelity => {
            info!("keeping the source model's output `{output}` on the evaluation data");
            evaluate::reference_outputs(session, evaluation, output, 64, stop).map(Some)
        }
        _ => Ok(None),
    }
}

/// Measures accuracy and latency on one loaded model, the same way for every model.
/// `reference` is the source model's output, which `kind: fidelity` compares with.
fn measure(
    recipe: &Recipe,
    session: &mut dyn InferenceSession,
    evaluation: &Dataset,
    size_bytes: u64,
    known_accuracy: Option<KnownAccuracy>,
    reference: Option<&Reference>,
    stop: &AtomicBool,
) -> Result<Measurement, EvalError> {
    let mut fidelity = known_accuracy.and_then(|known| known.fidelity);
    let accuracy = match &recipe.metrics.accuracy {
        Some(_) if known_accuracy.is_some() => known_accuracy.map(|known| known.accuracy),
        Some(metric) if metric.kind == AccuracyKind::Fidelity => {
            let Some(reference) = reference else {
                return Err(EvalError::NoReference);
            };
            let found = evaluate::fidelity(session, evaluation, reference, 64, stop)?;
            fidelity = Some(found);
            Some(fidelity_score(session, metric, reference, &found)?)
        }
        Some(_) => {
            let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name.as_str()).collect();
            let output = accuracy_output(recipe, &outputs);
            Some(evaluate::accuracy_top1_until(session, evaluation, &output, 64, stop)?)
        }
        None => None,
    };

    let latency = match &recipe.metrics.latency {
        Some(spec) => {
            let stats = evaluate::latency_until(session, evaluation, spec.warmup, spec.runs, stop)?;
            Some(Latency {
                p50: stats.p50,
                p90: stats.p90,
                p99: stats.p99,
                mean: stats.mean,
                min: stats.min,
                warmup: spec.warmup,
                runs: stats.runs,
                batch: stats.batch,
            })
        }
        None => None,
    };

    Ok(Measurement { accuracy, fidelity, latency_ms: latency, size_bytes })
}

/// The fidelity figure the recipe ranks by (`metrics.accuracy.score`).
fn fidelity_score(
    session: &dyn InferenceSession,
    metric: &AccuracyMetric,
    reference: &Reference,
    found: &Fidelity,
) -> Result<f64, EvalError> {
    match metric.score.unwrap_or_default() {
        FidelityScore::Cosine => Ok(found.cosine_mean),
        FidelityScore::Top1Agreement => found.top1_agreement.ok_or_else(|| EvalError::BadOutput {
            model: session.path().to_path_buf(),
            output: reference.output().to_string(),
            problem: "has one value per row, so no argmax to agree on\nhint: use `score: \
                      cosine`, or name an output of class scores in `metrics.accuracy.output`"
                .into(),
        }),
    }
}

/// What every candidate is measured against and with: the same for all of them.
#[derive(Clone, Copy)]
pub(crate) struct Bench<'a> {
    pub(crate) recipe: &'a Recipe,
    pub(crate) evaluation: &'a Dataset,
    pub(crate) source: &'a Measurement,
    /// The folder candidates are saved in, each in its own subfolder.
    pub(crate) work: &'a Path,
    /// The file name of each saved candidate (the source model's).
    pub(crate) file_name: &'a std::ffi::OsStr,
    /// How every measured model's session is made (the target's providers).
    pub(crate) session: &'a runtime::SessionConfig,
    /// False under `--no-measure`: candidates are built and saved only.
    pub(crate) measuring: bool,
    pub(crate) options: &'a RunOptions,
    /// Accuracies measured before, when the cache is on.
    pub(crate) accuracy_cache: Option<&'a AccuracyCache>,
    /// The source model's output on the evaluation data, with `kind: fidelity`.
    pub(crate) reference: Option<&'a Reference>,
    /// The source's outputs that hold NaN or infinity on the first evaluation batch; a
    /// candidate's other outputs must stay finite there.
    pub(crate) source_non_finite: &'a [String],
}

/// How many evaluation samples the check for NaN and infinity runs on.
const CHECK_BATCH: usize = 64;

/// The accuracy the cache holds for the model whose bytes hash to `model`.
fn known_accuracy(
    cache: Option<&AccuracyCache>,
    model: Option<blake3::Hash>,
) -> Option<KnownAccuracy> {
    cache.zip(model).and_then(|(cache, model)| cache.get(&model))
}

/// Caches the accuracy in `measured` when it was measured now rather than `known`.
fn remember_accuracy(
    cache: Option<&AccuracyCache>,
    model: Option<blake3::Hash>,
    known: Option<KnownAccuracy>,
    measured: &Measurement,
) {
    if let (Some(cache), Some(model), None, Some(accuracy)) =
        (cache, model, known, measured.accuracy)
    {
        cache.put(&model, &KnownAccuracy { accuracy, fidelity: measured.fidelity });
    }
}

pub(crate) fn evaluate_candidate(
    bench: &Bench<'_>,
    candidate: &Candidate,
    builder: &mut Builder,
) -> CandidateReport {
    let Bench {
        recipe,
        evaluation,
        source,
        work,
        file_name,
        session,
        measuring,
        options,
        accuracy_cache,
        reference,
        source_non_finite,
    } = *bench;
    let _span = debug_span!("candidate", id = %candidate.id).entered();
    let steps = candidate
        .steps
        .iter()
        .map(|s| StepReport { pass: s.pass.clone(), config: s.config.clone(), cached: false })
        .collect();
    let mut report = CandidateReport {
        id: candidate.id.clone(),
        label: candidate.label(),
        steps,
        status: Status::Failed,
        reasons: Vec::new(),
        measurement: None,
        build_s: 0.0,
        notes: Vec::new(),
        accuracy_cached: false,
        accuracy_aware: None,
    };

    let built = match builder.build(candidate) {
        Ok(built) => built,
        Err(failure) => {
            if failure.unchanged {
                report.status = Status::Unchanged;
            }
            report.reasons.push(failure.reason);
            return report;
        }
    };
    report.build_s = built.seconds;
    for (step, cached) in report.steps.iter_mut().zip(&built.cached) {
        step.cached = *cached;
    }
    let model = built.model;
    let broken = crate::target::constraints::violations(recipe.target, &model);
    if !broken.is_empty() {
        report.reasons.extend(broken);
        return report;
    }
    report.notes = notes(&model);
    let stem = Path::new(file_name).file_stem().unwrap_or(file_name);
    report.notes.extend(built.artifacts.iter().map(|artifact| Note {
        kind: NoteKind::Artifact,
        message: format!(
            "{}: {}",
            artifact_name(stem, artifact.extension).to_string_lossy(),
            artifact.summary
        ),
    }));
    report.notes.extend(
        built
            .unchanged_steps
            .into_iter()
            .map(|message| Note { kind: NoteKind::UnchangedStep, message }),
    );

    let folder = work.join(&candidate.id);
    let path = folder.join(file_name);
    let written = onnx_write(candidate);
    let saved = match &written {
        Some(write) => {
            let mut stamped = ModelProto::clone(&model);
            stamp_provenance(&mut stamped, &recipe.name, &candidate.label());
            save_candidate(&stamped, &folder, &path, Write::Export(write))
        }
        None => save_candidate(&model, &folder, &path, Write::Above(options.external_data_above)),
    };
    if let Err(error) = saved {
        report.reasons.push(format!("saving the model failed: {error}"));
        return report;
    }
    if let Err(error) = save_artifacts(&built.artifacts, &folder, stem) {
        report.reasons.push(format!("saving an exported file failed: {error}"));
        return report;
    }
    let size = match crate::inspect::stored_size(&path) {
        Ok(size) => size,
        Err(error) => {
            report.reasons.push(error.to_string());
            return report;
        }
    };

    if !measuring {
        report.status = Status::NotMeasured;
        report.measurement = Some(Measurement { size_bytes: size, ..Measurement::default() });
        return report;
    }

    let evaluator = recipe.evaluate.runtime;
    let mut session = match open_session(evaluator, &path, session) {
        Ok(session) => session,
        Err(error) => {
            let runtime = runtime_title(evaluator);
            report.reasons.push(format!("{runtime} cannot load the model: {error}"));
            return report;
        }
    };
    let session = session.as_mut();
    let non_finite = match evaluate::non_finite_outputs(&mut *session, evaluation, CHECK_BATCH) {
        Ok(found) => found,
        Err(error) => {
            report.reasons.push(format!("measuring failed: {error}"));
            return report;
        }
    };
    let new_non_finite: Vec<&str> = non_finite
        .iter()
        .filter(|name| !source_non_finite.contains(name))
        .map(String::as_str)
        .collect();
    if !new_non_finite.is_empty() {
        report.reasons.push(format!(
            "output {} holds NaN or infinity on the first {CHECK_BATCH} evaluation samples, \
             where the source model's is finite",
            new_non_finite.join(", ")
        ));
        return report;
    }
    let known = known_accuracy(accuracy_cache, built.hash);
    report.accuracy_cached = known.is_some();
    let stop = &options.stop;
    let measured = match measure(recipe, &mut *session, evaluation, size, known, reference, stop) {
        Ok(measured) => {
            remember_accuracy(accuracy_cache, built.hash, known, &measured);
            measured
        }
        Err(error) => {
            report.reasons.push(format!("measuring failed: {error}"));
            return report;
        }
    };

    report.reasons = missed_goals(recipe, source, &measured);
    report.status = if report.reasons.is_empty() { Status::Passed } else { Status::MissedGoals };
    report.measurement = Some(measured);
    report
}

/// What a reader must know of a candidate's model beyond its measurements, from the marks
/// passes leave in its metadata.
fn notes(model: &ModelProto) -> Vec<Note> {
    let provider_specific = pipeline_passes::pass::provider_specific_note(model);
    provider_specific
        .map(|message| Note { kind: NoteKind::ProviderSpecific, message: message.to_string() })
        .into_iter()
        .collect()
}

/// How a candidate's model file is written.
enum Write<'a> {
    /// With external data when the model is larger than this many bytes.
    Above(usize),
    /// As the candidate's `export: {format: onnx}` step says.
    Export(&'a OnnxWrite),
}

/// How the last `export: {format: onnx}` step of `candidate` has its model written, if it
/// has one.
fn onnx_write(candidate: &Candidate) -> Option<OnnxWrite> {
    let export = <Export as Configured>::NAME;
    let steps = candidate.steps.iter().rev().filter(|step| step.pass == export);
    steps.filter_map(|step| ExportConfig::onnx_write(&step.config)).next()
}

/// Saves a candidate in its own folder, with its tensors in one data file
/// `<model file>.data` when `write` says so.
fn save_candidate(
    model: &ModelProto,
    folder: &Path,
    path: &Path,
    write: Write<'_>,
) -> Result<(), String> {
    use prost::Message;

    std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let options = match write {
        Write::Export(write) => write.save_options(model, &name),
        Write::Above(bytes) if model.encoded_len() > bytes => ir::SaveOptions {
            external_data: Some(ir::ExternalData {
                location: format!("{name}.data"),
                size_threshold: 1024,
            }),
        },
        Write::Above(_) => ir::SaveOptions::default(),
    };
    ir::save(model, path, &options).map_err(|e| e.to_string())
}

/// The file name of an artifact beside the model `<stem>.onnx`: `<stem>.<extension>`.
fn artifact_name(stem: &std::ffi::OsStr, extension: &str) -> std::ffi::OsString {
    let mut name = stem.to_os_string();
    name.push(".");
    name.push(extension);
    name
}

/// Writes each artifact beside the candidate's model as `<stem>.<extension>`, through a
/// temporary file renamed into place so that no half-written file is ever left.
fn save_artifacts(
    artifacts: &[Arc<Artifact>],
    folder: &Path,
    stem: &std::ffi::OsStr,
) -> Result<(), String> {
    use std::io::Write;

    for artifact in artifacts {
        let path = folder.join(artifact_name(stem, artifact.extension));
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        // Readable like the model beside it: 0644 less the umask, as a plain create gives,
        // not the temporary file's 0600.
        let mut builder = tempfile::Builder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let mut file = builder.tempfile_in(folder).map_err(fail)?;
        file.write_all(&artifact.bytes).map_err(fail)?;
        file.persist(&path).map_err(|e| fail(e.error))?;
    }
    Ok(())
}

/// Moves a saved candidate (its model and any data file) into the output folder, data
/// files first so that the model never points at data that is not there yet.
fn move_model(
    folder: &Path,
    model_name: &std::ffi::OsStr,
    output_dir: &Path,
) -> Result<(), RunError> {
    let write_error = |path: &Path, source| RunError::Write { path: path.to_path_buf(), source };
    let entries = std::fs::read_dir(folder).map_err(|e| write_error(folder, e))?;
    let mut names: Vec<_> = entries
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| write_error(folder, e))?;
    names.sort_by_key(|name| name.as_os_str() == model_name);
    remove_previous(output_dir, model_name, &names)?;

    for name in names {
        let to = output_dir.join(&name);
        std::fs::rename(folder.join(&name), &to).map_err(|e| write_error(&to, e))?;
    }
    Ok(())
}

/// Removes the model `model_name`, its data file `<model_name>.data` and the files an
/// export wrote beside it (`<stem>.gguf`) that an earlier run left in `output_dir`, except
/// the files in `keep` (which a new model replaces).
fn remove_previous(
    output_dir: &Path,
    model_name: &std::ffi::OsStr,
    keep: &[std::ffi::OsString],
) -> Result<(), RunError> {
    let mut data_name = model_name.to_os_string();
    data_name.push(".data");
    let stem = Path::new(model_name).file_stem().unwrap_or(model_name);
    let artifacts = pipeline_passes::export::ARTIFACT_EXTENSIONS
        .iter()
        .map(|extension| artifact_name(stem, extension));
    let names = [model_name.to_os_string(), data_name].into_iter().chain(artifacts);
    for name in names {
        let path = output_dir.join(&name);
        if keep.contains(&name) || !path.is_file() {
            continue;
        }
        std::fs::remove_file(&path)
            .map_err(|source| RunError::Write { path: path.clone(), source })?;
        info!("removed {}, which an earlier run wrote", path.display());
    }
    Ok(())
}

/// Each goal the candidate missed, in words with the numbers; empty when it met them all.
fn missed_goals(recipe: &Recipe, source: &Measurement, candidate: &Measurement) -> Vec<String> {
    goals::missed_goals(&recipe.metrics, source, candidate)
}

/// Each candidate that met every goal but is off the front, with a front candidate that
/// beats it.
fn dominated(recipe: &Recipe, reports: &[CandidateReport], front: &[usize]) -> Vec<Dominated> {
    let (objective, stat) = (&recipe.objective, recipe.latency_stat());
    reports
        .iter()
        .filter(|r| r.status == Status::Passed)
        .filter_map(|r| {
            let by = goals::dominated_by(objective, reports, front, r, stat)?;
            Some(Dominated { id: r.id.clone(), by: by.to_string() })
        })
        .collect()
}

/// The index of the best passing candidate under the objective, if any passed.
fn rank(objective: &[Objective], reports: &[CandidateReport], stat: LatencyStat) -> Option<usize> {
    goals::rank(objective, reports, stat)
}

/// Orders two measured candidates by the objective: the first key that differs decides.
fn compare(
    objective: &[Objective],
    a: &CandidateReport,
    b: &CandidateReport,
    stat: LatencyStat,
) -> Ordering {
    goals::compare(objective, a, b, stat)
}

fn summary_line(report: &CandidateReport, figure: AccuracyFigure) -> String {
    match &report.measurement {
        Some(m) => format!(
            "{} ({} {}, p50 {}, {})",
            report.status.as_str(),
            figure.header(),
            figure.format(m.accuracy),
            report::millis(m.latency_ms.as_ref().map(|l| l.p50)),
            report::human_bytes(m.size_bytes)
        ),
        None => format!("{}: {}", report.status.as_str(), report.reasons.join("; ")),
    }
}

/// Says which candidate won and why, compared with the runner-up and with the source.
fn verdict(
    recipe: &Recipe,
    source: &Measurement,
    reports: &[CandidateReport],
    best: Option<usize>,
    search: &SearchReport,
) -> String {
    let Some(best) = best else {
        if reports.is_empty() && search.stopped_by == StopReason::MaxTime {
            let limit = search.not_run_reason.as_deref().unwrap_or("search.max_time was reached");
            return format!(
                "No candidate ran: the time budget ran out before the first candidate \
                 started; {limit}. max_time counts from the start of the run, loading and measuring \
                 the source model included; raise it to leave time for the candidates."
            );
        }
        let failed = reports.iter().filter(|r| r.status == Status::Failed).count();
        let missed = reports.iter().filter(|r| r.status == Status::MissedGoals).count();
        let unchanged = reports.iter().filter(|r| r.status == Status::Unchanged).count();
        let unchanged = match unchanged {
            0 => String::new(),
            n => format!(", {n} left the model unchanged"),
        };
        return format!(
            "No candidate met the goals: {missed} missed a goal{unchanged} and {failed} failed. \
             The reasons are in the table."
        );
    };
    let winner = &reports[best];
    let Some(m) = &winner.measurement else { return String::new() };
    let stat = recipe.latency_stat();

    let mut lines = vec![format!(
        "Best: {} `{}`, ranked by {}.",
        winner.id,
        winner.label,
        recipe
            .objective
            .iter()
            .map(|o| objective_name(*o).to_string())
            .collect::<Vec<_>>()
            .join(", then ")
    )];

    if let (Some(l), Some(s)) = (&m.latency_ms, &source.latency_ms) {
        let (ours, theirs) = (pick(stat, l), pick(stat, s));
        let ratio = theirs / ours;
        let relation = if (ratio - 1.0).abs() < 0.005 {
            "as fast as".to_string()
        } else if ratio > 1.0 {
            format!("{ratio:.2}x faster than")
        } else {
            format!("{:.2}x slower than", 1.0 / ratio)
        };
        lines.push(format!(
            "Latency {} {} is {relation} the source ({}).",
            stat_name(stat),
            report::millis(Some(ours)),
            report::millis(Some(theirs))
        ));
    }
    if let (Some(ours), Some(theirs)) = (m.accuracy, source.accuracy) {
        let figure = recipe.metrics.accuracy.as_ref().map(AccuracyFigure::of).unwrap_or_default();
        lines.push(format!(
            "{} {} against {} for the source.",
            figure.name(),
            figure.format(Some(ours)),
            figure.format(Some(theirs))
        ));
    }
    let shrink = source.size_bytes as f64 / m.size_bytes.max(1) as f64;
    let size_relation = if (shrink - 1.0).abs() < 0.005 {
        "the same size".to_string()
    } else if shrink > 1.0 {
        format!("{shrink:.2}x smaller")
    } else {
        format!("{:.2}x larger", 1.0 / shrink)
    };
    lines.push(format!(
        "Size {} against {} ({size_relation}).",
        report::human_bytes(m.size_bytes),
        report::human_bytes(source.size_bytes),
    ));

    let runner_up = reports
        .iter()
        .enumerate()
        .filter(|(i, r)| *i != best && r.status == Status::Passed)
        .min_by(|(_, a), (_, b)| compare(&recipe.objective, a, b, stat));
    let runner_up_latency = runner_up.and_then(|(_, other)| {
        let theirs = other.measurement.as_ref()?.latency_ms.as_ref()?;
        Some((other, pick(stat, m.latency_ms.as_ref()?), pick(stat, theirs)))
    });
    if let Some((other, ours, theirs)) = runner_up_latency {
        lines.push(format!(
            "Runner-up: {} `{}` at {} {} ({:+.1}%).",
            other.id,
            other.label,
            report::millis(Some(theirs)),
            stat_name(stat),
            (theirs / ours - 1.0) * 100.0
        ));
    }
    lines.join(" ")
}

/// Refuses an output folder that would overwrite the source model.
fn check_output(
    recipe: &Recipe,
    model: &Path,
    output_dir: &Path,
    output_model: &Path,
) -> Result<(), RunError> {
    if resolved(model) == resolved(output_model) {
        return Err(RunError::Input {
            place: recipe.positions.place(&recipe.path, "output"),
            message: format!(
                "{} is the model's own folder: the best model would overwrite {}",
                output_dir.display(),
                model.display()
            ),
            hint: "set `output` to another folder, for example `output: out/`".into(),
        });
    }
    // `out/` with a trailing slash does not stat as a file, so normalize it first.
    let normalized: PathBuf = output_dir.components().collect();
    if normalized.exists() && !normalized.is_dir() {
        return Err(RunError::Input {
            place: recipe.positions.place(&recipe.path, "output"),
            message: format!("{} is a file, not a folder", output_dir.display()),
            hint: "set `output` to a folder, for example `output: out/`".into(),
        });
    }
    check_writable(recipe, &normalized)
}

/// `path` made absolute, with symbolic links resolved where it exists and `.` and `..`
/// resolved in the part that does not exist yet: `new/..` is the folder that holds `new`, so
/// an output folder written that way is seen to be the model's own.
pub(crate) fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = existing.canonicalize() {
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Refuses an output folder the run could not write, before anything runs.
fn check_writable(recipe: &Recipe, output_dir: &Path) -> Result<(), RunError> {
    match unwritable(output_dir) {
        Some(message) => Err(RunError::Input {
            place: recipe.positions.place(&recipe.path, "output"),
            message,
            hint: "set `output` to a folder you can write, for example `output: out/`".into(),
        }),
        None => Ok(()),
    }
}

/// Why a run could not write `output_dir`, if it could not: the folder, or the folder that
/// would hold it, is a file or cannot be written. The folder is not made here; a file is
/// made and removed in it, or in the folder that would hold it, to ask the file system.
pub(crate) fn unwritable(output_dir: &Path) -> Option<String> {
    let mut existing = output_dir;
    while !existing.as_os_str().is_empty() && !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    let existing = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
    if !existing.is_dir() {
        return Some(format!(
            "{} cannot be made: {} is a file, not a folder",
            output_dir.display(),
            existing.display()
        ));
    }

    let probe = tempfile::Builder::new().prefix(".pipeline-write-check-").tempfile_in(existing);
    probe.err().map(|error| format!("{} cannot be written: {}", existing.display(), error.kind()))
}

/// The statistic of a latency measurement that the recipe ranks by.
fn pick(stat: LatencyStat, latency: &Latency) -> f64 {
    goals::latency_value(stat, latency)
}

fn stat_name(stat: LatencyStat) -> &'static str {
    match stat {
        LatencyStat::P50 => "p50",
        LatencyStat::P90 => "p90",
        LatencyStat::P99 => "p99",
        LatencyStat::Mean => "mean",
    }
}

fn objective_name(objective: Objective) -> &'static str {
    match objective {
        Objective::Latency => "latency",
        Objective::Size => "size",
        Objective::Accuracy => "accuracy",
    }
}
