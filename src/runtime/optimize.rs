//! ONNX Runtime's own graph optimizer, for passes: a session is created at the level asked
//! with an optimized model file path, ONNX Runtime writes the model it would run, and that
//! file is checked to load again in a fresh session and read back.
//!
//! Models above a size threshold (1 GiB by default, as protobuf cannot hold 2 GiB) are
//! handed to ONNX Runtime with their large tensors in a data file, and ONNX Runtime writes
//! the optimized model's large tensors to a data file too; reading it back brings them into
//! memory.
//!
//! The same session writes ONNX Runtime's own ORT format when asked to, for the `export`
//! pass; the file is loaded again in a fresh session before it is handed out.

use std::path::Path;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use pipeline_passes::ir::{self, proto::ModelProto};
use pipeline_passes::pass::{GraphOptimizer, OptimizationLevel, RunnerError};

use super::discovery::environment;
use super::{ModelSession, Optimization, RuntimeError, Threads};

/// ONNX Runtime's session option that names the data file of an optimized model's large
/// tensors, relative to the model.
const EXTERNAL_FILE_KEY: &str = "session.optimized_model_external_initializers_file_name";

/// ONNX Runtime's session option: tensors at least this many bytes go to the data file.
const EXTERNAL_MIN_SIZE_KEY: &str =
    "session.optimized_model_external_initializers_min_size_in_bytes";

/// ONNX Runtime's session option that chooses the format of the optimized model file.
const SAVE_FORMAT_KEY: &str = "session.save_model_format";

/// Tensors of at least this many bytes go to the data file, on both sides.
const EXTERNAL_MIN_SIZE: usize = 1024;

/// Runs ONNX Runtime's graph optimizer on the CPU execution provider.
#[derive(Debug, Clone, Copy)]
pub struct OrtOptimizer {
    threads: Threads,
    external_data_above: usize,
}

impl OrtOptimizer {
    /// An optimizer whose sessions use `threads`; models above 1 GiB go through data files.
    pub fn new(threads: Threads) -> Self {
        OrtOptimizer { threads, external_data_above: 1 << 30 }
    }

    /// Models whose protobuf would be larger than `bytes` are written and read with their
    /// large tensors in a data file beside them.
    pub fn with_external_data_above(mut self, bytes: usize) -> Self {
        self.external_data_above = bytes;
        self
    }
}

impl GraphOptimizer for OrtOptimizer {
    fn optimize(
        &self,
        model: &ModelProto,
        level: OptimizationLevel,
    ) -> Result<ModelProto, RunnerError> {
        let folder = tempfile::Builder::new()
            .prefix("pipeline-optimize-")
            .tempdir()
            .map_err(|e| RunnerError(format!("cannot create a temporary folder: {e}")))?;
        let input = folder.path().join("model.onnx");
        let output = folder.path().join("optimized.onnx");

        let external = self.save_input(model, &input)?;

        let data = external.then_some("optimized.onnx.data");
        optimize_file(&input, &output, level, self.threads, data)
            .map_err(|e| RunnerError(e.to_string()))?;
        ir::load(&output)
            .map_err(|e| RunnerError(format!("cannot read the model ONNX Runtime optimized: {e}")))
    }

    fn write_runtime_format(
        &self,
        model: &ModelProto,
        level: OptimizationLevel,
    ) -> Result<Vec<u8>, RunnerError> {
        let folder = tempfile::Builder::new()
            .prefix("pipeline-ort-format-")
            .tempdir()
            .map_err(|e| RunnerError(format!("cannot create a temporary folder: {e}")))?;
        let input = folder.path().join("model.onnx");
        let output = folder.path().join("model.ort");

        self.save_input(model, &input)?;
        write_ort_format(&input, &output, level, self.threads)
            .map_err(|e| RunnerError(e.to_string()))?;
        std::fs::read(&output)
            .map_err(|e| RunnerError(format!("cannot read {}: {e}", output.display())))
    }

    fn describe(&self) -> String {
        match super::init(None) {
            Ok(info) => format!("ONNX Runtime {} on the CPU execution provider", info.version),
            Err(_) => "ONNX Runtime on the CPU execution provider".into(),
        }
    }
}

impl OrtOptimizer {
    /// Saves `model` at `input` for ONNX Runtime to read, with its large tensors in a data
    /// file beside it when the model is above the threshold; says whether they are.
    fn save_input(&self, model: &ModelProto, input: &Path) -> Result<bool, RunnerError> {
        let external = prost::Message::encoded_len(model) > self.external_data_above;
        let mut options = ir::SaveOptions::default();
        if external {
            options.external_data = Some(ir::ExternalData {
                location: "model.onnx.data".into(),
                size_threshold: EXTERNAL_MIN_SIZE,
            });
        }
        ir::save(model, input, &options)
            .map_err(|e| RunnerError(format!("cannot save the model for ONNX Runtime: {e}")))?;
        Ok(external)
    }
}

/// Writes the model file `input` in ONNX Runtime's ORT format at `output` (a path ending in
/// `.ort`), optimized at `level`, then loads that file in a fresh session, so that a file
/// ONNX Runtime writes but cannot read again is an error here.
pub fn write_ort_format(
    input: &Path,
    output: &Path,
    level: OptimizationLevel,
    threads: Threads,
) -> Result<(), RuntimeError> {
    let load_error =
        |message: String| RuntimeError::ModelLoad { model: input.to_path_buf(), message };

    let environment = environment()?;
    let session = ort_format_session(environment, input, output, level, threads).map_err(|e| {
        load_error(format!("writing the ORT format at level `{level}` failed: {e}"))
    })?;
    drop(session);
    if !output.is_file() {
        return Err(load_error(format!("ONNX Runtime wrote no ORT file at {}", output.display())));
    }

    ModelSession::load_with(output, threads, Optimization::Disabled).map_err(|e| {
        load_error(format!("ONNX Runtime wrote an ORT file that it cannot load again: {e}"))
    })?;
    tracing::debug!(model = %input.display(), %level, "written in ORT format");
    Ok(())
}

/// The session that writes the ORT format file.
fn ort_format_session(
    environment: &Environment,
    input: &Path,
    output: &Path,
    level: OptimizationLevel,
    threads: Threads,
) -> ort::Result<Session> {
    Session::builder(environment)?
        .with_intra_threads(threads.intra_op)?
        .with_inter_threads(threads.inter_op)?
        .with_optimization_level(ort_level(level))?
        .with_optimized_model_path(output)?
        .with_config_entry(SAVE_FORMAT_KEY, "ORT")?
        .commit_from_file(input)
}

/// Optimizes the model file `input` at `level` and writes the result to `output`, with its
/// tensors of 1 KiB or more in the data file `data` beside it when given. The written model
/// is then loaded in a fresh session without further optimization, so a model that ONNX
/// Runtime writes but cannot read again is an error here.
pub fn optimize_file(
    input: &Path,
    output: &Path,
    level: OptimizationLevel,
    threads: Threads,
    data: Option<&str>,
) -> Result<(), RuntimeError> {
    let load_error =
        |message: String| RuntimeError::ModelLoad { model: input.to_path_buf(), message };

    let environment = environment()?;
    let session = optimizing_session(environment, input, output, level, threads, data)
        .map_err(|e| load_error(format!("optimizing at level `{level}` failed: {e}")))?;
    drop(session);
    if !output.is_file() {
        return Err(load_error(format!(
            "ONNX Runtime wrote no optimized model at {}",
            output.display()
        )));
    }

    ModelSession::load_with(output, threads, Optimization::Disabled).map_err(|e| {
        load_error(format!(
            "ONNX Runtime wrote an optimized model at level `{level}` that it cannot load \
             again: {e}"
        ))
    })?;
    tracing::debug!(model = %input.display(), %level, "optimized by onnx runtime");
    Ok(())
}

/// The session that optimizes and writes the model; `ort`'s builder errors carry the
/// builder, so they stay in here.
fn optimizing_session(
    environment: &Environment,
    input: &Path,
    output: &Path,
    level: OptimizationLevel,
    threads: Threads,
    data: Option<&str>,
) -> ort::Result<Session> {
    let mut builder = Session::builder(environment)?
        .with_intra_threads(threads.intra_op)?
        .with_inter_threads(threads.inter_op)?
        .with_optimization_level(ort_level(level))?
        .with_optimized_model_path(output)?;
    if let Some(data) = data {
        builder = builder
            .with_config_entry(EXTERNAL_FILE_KEY, data)?
            .with_config_entry(EXTERNAL_MIN_SIZE_KEY, EXTERNAL_MIN_SIZE.to_string())?;
    }
    builder.commit_from_file(input)
}

/// ONNX Runtime's level for ours: `ORT_ENABLE_BASIC`, `ORT_ENABLE_EXTENDED` and
/// `ORT_ENABLE_LAYOUT`.
fn ort_level(level: OptimizationLevel) -> GraphOptimizationLevel {
    match level {
        OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
        OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
        OptimizationLevel::Layout => GraphOptimizationLevel::Level3,
    }
}
