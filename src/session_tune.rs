//! `session_tune`: after a run chooses its model, searches ONNX Runtime's session settings
//! (intra-op threads, execution mode with inter-op threads, graph optimization level) for
//! the lowest latency on the target's providers, and writes them as `inference.json` beside
//! the model.
//!
//! The search is one setting at a time: intra-op threads from 1 to the host's cores
//! (sequential mode, every optimization), then parallel mode with 2 to 4 inter-op threads on
//! the best intra-op count, then each lower optimization level on the best so far. Every
//! setting is measured alone, with the recipe's latency settings, one after another.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::evaluate::{self, Dataset};
use crate::recipe::{LatencyMetric, LatencyStat, Recipe};
use crate::runtime::{ModelSession, Optimization, SessionConfig, Threads};

/// One setting that was tried, and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// `sequential` or `parallel`.
    pub execution_mode: &'static str,
    /// ONNX Runtime's name of the level, like `ORT_ENABLE_ALL`.
    pub graph_optimization_level: &'static str,
    /// The recipe's latency statistic, in milliseconds; `None` when the setting failed.
    pub latency_ms: Option<f64>,
    /// Why the setting failed to load or run.
    pub error: Option<String>,
}

/// What `inference.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Inference {
    /// The model the settings are for, beside this file.
    pub model: String,
    /// The best setting found.
    pub best: Trial,
    /// The latency statistic compared (`p50`, ...) and how it was measured.
    pub stat: String,
    pub warmup: usize,
    pub runs: usize,
    /// Every setting tried, in order.
    pub tried: Vec<Trial>,
    pub onnxruntime_version: String,
    pub providers: Vec<String>,
    /// The host: architecture, logical cores and CPU features.
    pub host: Host,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub arch: &'static str,
    pub cores: usize,
    pub cpu_features: String,
}

/// What the report quotes of a session tuning.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Where `inference.json` was written; `None` when tuning failed.
    pub path: Option<PathBuf>,
    pub best: Option<Trial>,
    /// How many settings were measured.
    pub tried: usize,
    /// Why tuning failed.
    pub error: Option<String>,
}

/// What a run needs to tune the chosen model's session.
pub struct Context<'a> {
    pub recipe: &'a Recipe,
    pub evaluation: &'a Dataset,
    /// The session the candidates were measured with (the target's providers).
    pub base: &'a SessionConfig,
    pub ort_version: &'a str,
    pub providers: Vec<String>,
}

/// Tunes the session of the run's chosen model `written` when the recipe asks for it. An
/// `inference.json` an earlier run left beside the output is removed first, so that it never
/// describes another model.
pub fn after_run(
    context: Context<'_>,
    output_dir: &Path,
    written: Option<&Path>,
) -> Option<Summary> {
    let stale = output_dir.join("inference.json");
    if stale.is_file() {
        if let Err(error) = std::fs::remove_file(&stale) {
            tracing::warn!("cannot remove {}: {error}", stale.display());
        }
    }
    let (Some(_), Some(model)) = (&context.recipe.session_tune, written) else { return None };
    tracing::info!("session_tune: searching session settings for {}", model.display());
    let Context { recipe, evaluation, base, ort_version, providers } = context;
    Some(match tune(recipe, model, evaluation, base, ort_version, providers) {
        Ok(summary) => summary,
        Err(error) => {
            tracing::warn!("session_tune failed: {error}");
            Summary { path: None, best: None, tried: 0, error: Some(error.to_string()) }
        }
    })
}

/// Tunes the session of `model` and writes `inference.json` beside it.
pub fn tune(
    recipe: &Recipe,
    model: &Path,
    evaluation: &Dataset,
    base: &SessionConfig,
    ort_version: &str,
    providers: Vec<String>,
) -> std::io::Result<Summary> {
    let latency = recipe.metrics.latency.clone().unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tried: Vec<Trial> = Vec::new();
    let mut best: Option<(SessionConfig, f64)> = None;
    let mut consider = |config: SessionConfig, best: &mut Option<(SessionConfig, f64)>| {
        let trial = measure_one(model, evaluation, &config, &latency);
        tracing::debug!(?trial, "session setting measured");
        let value = trial.latency_ms;
        tried.push(trial);
        if let Some(value) = value {
            if best.as_ref().is_none_or(|(_, b)| value < *b) {
                *best = Some((config, value));
            }
        }
    };

    let setting = |intra: usize, inter: usize, parallel: bool, level: Optimization| SessionConfig {
        threads: Threads { intra_op: intra, inter_op: inter },
        optimization: level,
        parallel: Some(parallel),
        ..base.clone()
    };
    for intra in 1..=cores {
        consider(setting(intra, 1, false, Optimization::All), &mut best);
    }
    let intra = best.as_ref().map_or(1, |(c, _)| c.threads.intra_op);
    for inter in 2..=cores.clamp(2, 4) {
        consider(setting(intra, inter, true, Optimization::All), &mut best);
    }
    let (threads, parallel) =
        best.as_ref().map_or((Threads::default(), false), |(c, _)| (c.threads, c.is_parallel()));
    for level in [Optimization::Extended, Optimization::Basic, Optimization::Disabled] {
        consider(setting(threads.intra_op, threads.inter_op, parallel, level), &mut best);
    }

    let best_trial = match &best {
        Some((config, _)) => tried
            .iter()
            .find(|t| same_setting(t, config))
            .cloned()
            .ok_or_else(|| std::io::Error::other("the best setting was not recorded"))?,
        None => {
            let reasons: Vec<String> = tried.iter().filter_map(|t| t.error.clone()).collect();
            return Err(std::io::Error::other(format!(
                "no session setting ran: {}",
                reasons.first().cloned().unwrap_or_default()
            )));
        }
    };
    let host = crate::target::HostCpu::detect();
    let inference = Inference {
        model: model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        best: best_trial.clone(),
        stat: recipe.latency_stat().to_string(),
        warmup: latency.warmup,
        runs: latency.runs,
        tried: tried.clone(),
        onnxruntime_version: ort_version.to_string(),
        providers,
        host: Host { arch: host.arch, cores, cpu_features: host.present() },
    };
    let path = model.with_file_name("inference.json");
    let json = serde_json::to_string_pretty(&inference).map_err(std::io::Error::other)?;
    crate::report::write_atomically(&path, json.as_bytes())?;
    tracing::info!(
        "session_tune: best of {} settings is {} intra-op, {} inter-op, {}, {} ({:.3} ms); \
         wrote {}",
        tried.len(),
        best_trial.intra_op_threads,
        best_trial.inter_op_threads,
        best_trial.execution_mode,
        best_trial.graph_optimization_level,
        best_trial.latency_ms.unwrap_or_default(),
        path.display()
    );
    Ok(Summary { path: Some(path), best: Some(best_trial), tried: tried.len(), error: None })
}

fn same_setting(trial: &Trial, config: &SessionConfig) -> bool {
    trial.intra_op_threads == config.threads.intra_op
        && trial.inter_op_threads == config.threads.inter_op
        && (trial.execution_mode == "parallel") == config.is_parallel()
        && trial.graph_optimization_level == config.optimization.ort_name()
}

fn measure_one(
    model: &Path,
    evaluation: &Dataset,
    config: &SessionConfig,
    latency: &LatencyMetric,
) -> Trial {
    let mut trial = Trial {
        intra_op_threads: config.threads.intra_op,
        inter_op_threads: config.threads.inter_op,
        execution_mode: if config.is_parallel() { "parallel" } else { "sequential" },
        graph_optimization_level: config.optimization.ort_name(),
        latency_ms: None,
        error: None,
    };
    let result = ModelSession::load_configured(model, config).map_err(|e| e.to_string()).and_then(
        |mut session| {
            evaluate::latency(&mut session, evaluation, latency.warmup, latency.runs)
                .map_err(|e| e.to_string())
        },
    );
    match result {
        Ok(stats) => {
            trial.latency_ms = Some(match latency.stat {
                LatencyStat::P50 => stats.p50,
                LatencyStat::P90 => stats.p90,
                LatencyStat::P99 => stats.p99,
                LatencyStat::Mean => stats.mean,
            })
        }
        Err(error) => trial.error = Some(error),
    }
    trial
}
