//! Calibration runs: a [`ModelRunner`] that runs models in ONNX Runtime on the recipe's
//! calibration data, for passes such as `quantize_static` that need activation ranges.
//!
//! The runner feeds the data one sample per batch by default. ORT's calibrators reduce
//! whatever their data reader hands them, batch by batch: MinMax with a moving average
//! averages per-batch extremes, and strides of batches are merged as they come, so a range
//! depends on where batches start and end. ORT's own examples, and the exactness tests of
//! this project, read one sample at a time; the same batches give the same ranges. A model
//! whose inputs fix the batch (after `fix_shapes`, say) is fed batches of that size, and the
//! samples left over that cannot fill one are not run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ndarray::ArrayViewD;
use pipeline_passes::ir::{self, proto::ModelProto};
use pipeline_passes::pass::{ModelRunner, RunnerError};

use crate::evaluate::Dataset;
use crate::runtime::{IoInfo, ModelSession, Optimization, Tensor, Threads};

/// Runs models in ONNX Runtime's CPU provider over the samples of a dataset, a fixed number
/// of samples per batch, in order.
#[derive(Debug)]
pub struct OrtRunner {
    data: Dataset,
    threads: Threads,
    batch_size: usize,
    /// Models whose protobuf would be larger than this are saved for ONNX Runtime with their
    /// tensors in a data file.
    external_data_above: usize,
    /// Set by Ctrl-C: no further batch is run.
    stop: Option<Arc<AtomicBool>>,
}

/// The default of [`OrtRunner::with_external_data_above`]: half of protobuf's 2 GiB limit,
/// leaving room for the outputs calibration adds.
const EXTERNAL_DATA_ABOVE: usize = i32::MAX as usize / 2;

impl OrtRunner {
    /// A runner over `data` (already checked against the model's inputs) that feeds one
    /// sample per batch.
    pub fn new(data: Dataset, threads: Threads) -> Self {
        OrtRunner {
            data,
            threads,
            batch_size: 1,
            external_data_above: EXTERNAL_DATA_ABOVE,
            stop: None,
        }
    }

    /// Gives up between batches once `stop` is set (Ctrl-C), so that a stopped run does not
    /// wait for every calibration to finish.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Saves models larger than `bytes` for ONNX Runtime with their tensors in a data file.
    pub fn with_external_data_above(mut self, bytes: usize) -> Self {
        self.external_data_above = bytes.min(EXTERNAL_DATA_ABOVE);
        self
    }

    /// Feeds `batch_size` samples per batch (at least 1); the last batch may be shorter.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The data the runner feeds.
    pub fn data(&self) -> &Dataset {
        &self.data
    }
}

impl ModelRunner for OrtRunner {
    fn samples(&self) -> usize {
        self.data.len()
    }

    fn for_each_batch(
        &self,
        model: &ModelProto,
        outputs: &[String],
        visit: &mut pipeline_passes::pass::BatchVisitor<'_>,
    ) -> Result<(), RunnerError> {
        let folder = tempfile::Builder::new()
            .prefix("pipeline-calibration-")
            .tempdir()
            .map_err(|e| RunnerError(format!("cannot create a temporary folder: {e}")))?;
        let path = folder.path().join("model.onnx");
        let mut session = load(model, &path, self.threads, self.external_data_above)?;

        let data = self.data.path().display();
        self.data.check_inputs(session.inputs()).map_err(|e| RunnerError(e.to_string()))?;
        let inputs = session.inputs().to_vec();

        let fixed = IoInfo::fixed_batch(&inputs).map_err(|sizes| {
            RunnerError(format!(
                "the model's inputs fix different batch sizes ({}): no batch of samples fits \
                 them all",
                sizes.join(", ")
            ))
        })?;
        let (batch_size, samples) = match fixed {
            Some(fixed) => whole_batches(fixed, self.data.len(), &data.to_string())?,
            None => (self.batch_size, self.data.len()),
        };
        for start in (0..samples).step_by(batch_size) {
            if self.stop.as_ref().is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                return Err(RunnerError("stopped (Ctrl-C) while calibrating".into()));
            }
            let range = start..(start + batch_size).min(samples);
            let batch = self.data.batch(&inputs, range.clone());
            let results = session.run(&batch).map_err(|e| {
                RunnerError(format!("running samples {range:?} of {data} failed: {e}"))
            })?;

            for (index, name) in outputs.iter().enumerate() {
                let values = float_output(&results, name)?;
                visit(index, values).map_err(RunnerError)?;
            }
        }
        Ok(())
    }
}

/// Batches of `fixed` samples over `samples`: the batch size and how many samples they hold.
fn whole_batches(fixed: usize, samples: usize, data: &str) -> Result<(usize, usize), RunnerError> {
    let usable = samples / fixed * fixed;
    if usable == 0 {
        return Err(RunnerError(format!(
            "the model fixes its batch to {fixed} samples, and {data} holds {samples}; hint: \
             give at least {fixed} calibration samples, or fix the shapes after calibrating"
        )));
    }
    if usable < samples {
        tracing::warn!(
            "the model fixes its batch to {fixed} samples: calibrating on {usable} of the \
             {samples} samples of {data}, the last {} do not fill a batch",
            samples - usable
        );
    }
    Ok((fixed, usable))
}

/// Saves `model` at `path`, with its tensors in a data file when it is larger than
/// `external_above` bytes, and loads it in a session.
fn load(
    model: &ModelProto,
    path: &Path,
    threads: Threads,
    external_above: usize,
) -> Result<ModelSession, RunnerError> {
    let mut options = ir::SaveOptions::default();
    if prost::Message::encoded_len(model) > external_above {
        options.external_data =
            Some(ir::ExternalData { location: "model.onnx.data".into(), size_threshold: 1024 });
    }
    ir::save(model, path, &options)
        .map_err(|e| RunnerError(format!("cannot save the model to calibrate: {e}")))?;

    // ORT's calibrators run the model with no graph optimization; so does this session, so
    // that ranges are the reference tool's to the bit.
    ModelSession::load_with(path, threads, Optimization::Disabled)
        .map_err(|e| RunnerError(format!("cannot load the model to calibrate: {e}")))
}

/// The float32 values of output `name` among `results`.
fn float_output<'r>(
    results: &'r [(String, Tensor)],
    name: &str,
) -> Result<ArrayViewD<'r, f32>, RunnerError> {
    match results.iter().find(|(output, _)| output == name) {
        Some((_, Tensor::F32(values))) => Ok(values.view()),
        Some((_, other)) => Err(RunnerError(format!(
            "tensor `{name}` is {}; only float32 tensors can be calibrated",
            other.elem()
        ))),
        None => Err(RunnerError(format!("the model to calibrate has no output `{name}`"))),
    }
}
