//! Metrics measured on a loaded model (any [`InferenceSession`]: ONNX Runtime or tract): top-1
//! accuracy over a dataset, latency of single runs, and the largest difference between two
//! outputs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::ArrayD;

use super::{DataError, Dataset};
use crate::runtime::{InferenceSession, IoInfo, RuntimeError, Tensor};

/// What can go wrong while measuring a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The model could not be run.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),

    /// The data does not fit the model.
    #[error(transparent)]
    Data(Box<DataError>),

    /// Accuracy was asked of a dataset without labels.
    #[error(
        "accuracy needs labels but none were read from {data}\n\
         hint: set `labels` to the name of the labels array in the data file"
    )]
    NoLabels {
        /// The data file.
        data: PathBuf,
    },

    /// The labels are not one class index per sample.
    #[error(
        "labels '{array}' in {data} {problem}\n\
         hint: labels must be integer class indices of shape [N] or [N, 1]"
    )]
    BadLabels {
        /// The data file.
        data: PathBuf,
        /// The labels array.
        array: String,
        /// What is wrong with them.
        problem: String,
    },

    /// The output named for a metric is not an output of the model.
    #[error(
        "model {model} has no output '{output}'; its outputs are: {}\n\
         hint: set the metric's `output` to one of them",
        outputs.join(", ")
    )]
    UnknownOutput {
        /// The model file.
        model: PathBuf,
        /// The output asked for.
        output: String,
        /// The outputs the model has.
        outputs: Vec<String>,
    },

    /// The output cannot be read as one row of class scores per sample.
    #[error("output '{output}' of model {model} {problem}")]
    BadOutput {
        /// The model file.
        model: PathBuf,
        /// The output's name.
        output: String,
        /// What is wrong with it.
        problem: String,
    },

    /// The model fixes a batch larger than the data: no batch could be filled with samples.
    #[error(
        "model {model} fixes its batch to {batch} samples, and the evaluation data holds \
         {samples}: filling the batch with copies of the last sample would take {bytes} bytes \
         of input, more than the {MAX_PADDED_BYTES} allowed; hint: fix the batch to at most \
         {samples}, or give more samples"
    )]
    BatchOverData {
        /// The model file.
        model: PathBuf,
        /// The fixed batch size.
        batch: usize,
        /// How many samples the data holds.
        samples: usize,
        /// The bytes of input one padded batch would take.
        bytes: u128,
    },

    /// The model's inputs disagree on a fixed batch size.
    #[error("model {model} fixes different batch sizes on its inputs: {}", sizes.join(", "))]
    MixedBatch {
        /// The model file.
        model: PathBuf,
        /// Each input with its fixed first dimension.
        sizes: Vec<String>,
    },

    /// A count that must be positive was zero.
    #[error("{what} must be at least 1")]
    Zero {
        /// What was zero, such as "batch size" or "latency runs".
        what: &'static str,
    },

    /// The source model's output on the evaluation data, kept for fidelity, would not fit.
    #[error(
        "the source model's output '{output}' on the evaluation data takes more than {limit} \
         bytes, too much to keep for fidelity\n\
         hint: use fewer evaluation samples (`data.evaluation.samples`) or a smaller output \
         (`metrics.accuracy.output`)"
    )]
    ReferenceTooLarge {
        /// The output compared.
        output: String,
        /// The most bytes allowed.
        limit: usize,
    },

    /// Fidelity was asked for without the source model's output to compare with.
    #[error("fidelity needs the source model's output, which was not kept (a bug)")]
    NoReference,

    /// The stop flag was set (Ctrl-C) between two runs: the measurement is abandoned.
    #[error("the measurement was stopped before it finished")]
    Interrupted,

    /// Two tensors that cannot be compared.
    #[error(
        "cannot compare a {left} tensor of shape {left_shape:?} \
         with a {right} tensor of shape {right_shape:?}"
    )]
    Incomparable {
        /// The first tensor's element type.
        left: String,
        /// The first tensor's shape.
        left_shape: Vec<usize>,
        /// The second tensor's element type.
        right: String,
        /// The second tensor's shape.
        right_shape: Vec<usize>,
    },
}

impl From<DataError> for EvalError {
    fn from(error: DataError) -> EvalError {
        EvalError::Data(Box::new(error))
    }
}

/// Times of single runs, in milliseconds.
///
/// Percentiles interpolate linearly between the two nearest ranks: over the `n` sorted times
/// `x[0..n]`, percentile `p` sits at rank `h = (n - 1) * p / 100` and is
/// `x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])`. This is NumPy's default
/// (`numpy.percentile(..., method="linear")`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyStats {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// Number of timed runs (warm-up runs not counted).
    pub runs: usize,
    /// Samples fed to each run: 1, or the batch size the model fixes.
    pub batch: usize,
}

/// The fraction of samples whose highest-scoring class in `output` equals their label.
///
/// Runs the whole dataset in batches of `batch` samples, or of the batch size the model fixes
/// on its inputs' first dimension (the last batch is then padded with copies of its last
/// sample, whose predictions are ignored). The predicted class is the index of the largest
/// value along the output's last axis; ties go to the first index, and NaN counts as largest,
/// as `numpy.argmax` does. Labels are integers of shape `[N]` or `[N, 1]`.
pub fn accuracy_top1(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    output: &str,
    batch: usize,
) -> Result<f64, EvalError> {
    accuracy_top1_until(session, dataset, output, batch, &AtomicBool::new(false))
}

/// [`accuracy_top1`] that gives up with [`EvalError::Interrupted`] when `stop` is set,
/// checked before each batch.
pub fn accuracy_top1_until(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    output: &str,
    batch: usize,
    stop: &AtomicBool,
) -> Result<f64, EvalError> {
    // Data that does not fit the model is the first thing to say, before missing labels.
    dataset.check_inputs(session.inputs())?;
    let labels = class_labels(dataset)?;

    let mut correct = 0usize;
    for_each_batch(session, dataset, output, batch, stop, |session, rows, scores| {
        let predicted = argmax_rows(&scores, rows.fed).map_err(|problem| EvalError::BadOutput {
            model: session.path().to_path_buf(),
            output: output.to_string(),
            problem,
        })?;
        let classes = scores.shape().last().copied().unwrap_or(0);
        let batch_labels = &labels[rows.start..rows.start + rows.real];
        check_label_range(dataset, batch_labels, rows.start, classes, output)?;
        correct += predicted[..rows.real]
            .iter()
            .zip(&labels[rows.start..rows.start + rows.real])
            .filter(|(p, l)| i64::try_from(**p).is_ok_and(|p| p == **l))
            .count();
        Ok(())
    })?;

    Ok(correct as f64 / dataset.len() as f64)
}

/// Which samples one batch holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows {
    /// The index of the batch's first sample in the dataset.
    pub start: usize,
    /// How many of the batch's rows are samples of the dataset.
    pub real: usize,
    /// How many rows were fed to the model: `real`, or more when the batch was padded.
    pub fed: usize,
}

/// Runs the whole dataset through `session` in batches and hands `visit` each batch's rows and
/// its `output` tensor.
///
/// Batches hold `batch` samples, or the batch size the model fixes on its inputs' first
/// dimension; then the last batch is padded with copies of its last sample, and the tensor has
/// more rows than real samples.
pub(super) fn for_each_batch(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    output: &str,
    batch: usize,
    stop: &AtomicBool,
    mut visit: impl FnMut(&dyn InferenceSession, Rows, Tensor) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let inputs = session.inputs().to_vec();
    dataset.check_inputs(&inputs)?;
    if !session.outputs().iter().any(|o| o.name == output) {
        return Err(EvalError::UnknownOutput {
            model: session.path().to_path_buf(),
            output: output.to_string(),
            outputs: session.outputs().iter().map(|o| o.name.clone()).collect(),
        });
    }
    let (size, fixed) = match fixed_batch(session, dataset)? {
        Some(fixed) => (fixed, true),
        None if batch == 0 => return Err(EvalError::Zero { what: "batch size" }),
        None => (batch, false),
    };

    for start in (0..dataset.len()).step_by(size) {
        check_stop(stop)?;
        let end = (start + size).min(dataset.len());
        let mut feeds = dataset.batch(&inputs, start..end);
        let mut rows = Rows { start, real: end - start, fed: end - start };
        if fixed && rows.real < size {
            feeds = pad_rows(feeds, size);
            rows.fed = size;
        }

        let outputs = session.run(&feeds)?;
        let tensor = outputs.into_iter().find(|(name, _)| name == output).map(|(_, t)| t);
        let Some(tensor) = tensor else {
            return Err(EvalError::BadOutput {
                model: session.path().to_path_buf(),
                output: output.to_string(),
                problem: "was not returned by the run".into(),
            });
        };
        visit(session, rows, tensor)?;
    }
    Ok(())
}

/// The outputs that hold NaN or infinity on the first batch of the evaluation data (up to
/// `batch` samples, or the batch the model fixes), sorted by name.
///
/// A cheap check run on every measured model before its metrics: a candidate whose output
/// goes non-finite where the source's stays finite is broken however its accuracy reads.
/// Integer and boolean outputs are never non-finite.
pub fn non_finite_outputs(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    batch: usize,
) -> Result<Vec<String>, EvalError> {
    let inputs = session.inputs().to_vec();
    dataset.check_inputs(&inputs)?;
    let size = match fixed_batch(session, dataset)? {
        Some(fixed) => fixed,
        None => batch.max(1),
    };
    let feeds = pad_rows(dataset.batch(&inputs, 0..size.min(dataset.len())), size);

    let outputs = session.run(&feeds)?;
    let mut found: Vec<String> = outputs
        .into_iter()
        .filter(|(_, tensor)| match tensor {
            Tensor::F32(a) => a.iter().any(|v| !v.is_finite()),
            Tensor::F16(a) => a.iter().any(|v| !v.is_finite()),
            Tensor::F64(a) => a.iter().any(|v| !v.is_finite()),
            _ => false,
        })
        .map(|(name, _)| name)
        .collect();
    found.sort();
    Ok(found)
}

/// Times `runs` sequential runs of the dataset's first sample (or first fixed-size batch) after
/// `warmup` untimed ones; only the runtime's run is timed, not preparing the inputs.
pub fn latency(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    warmup: usize,
    runs: usize,
) -> Result<LatencyStats, EvalError> {
    latency_until(session, dataset, warmup, runs, &AtomicBool::new(false))
}

/// [`latency`] that gives up with [`EvalError::Interrupted`] when `stop` is set, checked
/// before each run, warmup included, so that Ctrl-C ends even a long measurement within one
/// run's time.
pub fn latency_until(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    warmup: usize,
    runs: usize,
    stop: &AtomicBool,
) -> Result<LatencyStats, EvalError> {
    if runs == 0 {
        return Err(EvalError::Zero { what: "latency runs" });
    }
    let inputs = session.inputs().to_vec();
    dataset.check_inputs(&inputs)?;
    let size = fixed_batch(session, dataset)?.unwrap_or(1);
    let feeds = pad_rows(dataset.batch(&inputs, 0..size.min(dataset.len())), size);

    for _ in 0..warmup {
        check_stop(stop)?;
        session.run_timed(&feeds)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        check_stop(stop)?;
        times.push(session.run_timed(&feeds)?.as_secs_f64() * 1000.0);
    }

    times.sort_by(f64::total_cmp);
    Ok(LatencyStats {
        p50: percentile(&times, 50.0),
        p90: percentile(&times, 90.0),
        p99: percentile(&times, 99.0),
        mean: times.iter().sum::<f64>() / times.len() as f64,
        min: times[0],
        max: times[times.len() - 1],
        runs,
        batch: size,
    })
}

/// The largest absolute difference between two tensors of the same type and shape.
///
/// A NaN facing a number counts as an infinite difference; two NaNs are equal. Booleans compare
/// as 0 and 1.
pub fn compare_outputs(a: &Tensor, b: &Tensor) -> Result<f64, EvalError> {
    let incomparable = || EvalError::Incomparable {
        left: a.elem().to_string(),
        left_shape: a.shape().to_vec(),
        right: b.elem().to_string(),
        right_shape: b.shape().to_vec(),
    };
    if a.elem() != b.elem() || a.shape() != b.shape() {
        return Err(incomparable());
    }
    let (a, b) = (as_f64(a), as_f64(b));

    let mut max = 0.0f64;
    for (x, y) in a.iter().zip(b.iter()) {
        let diff = match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (true, false) | (false, true) => f64::INFINITY,
            (false, false) => (x - y).abs(),
        };
        max = max.max(diff);
    }
    Ok(max)
}

/// The percentile `p` (0 to 100) of `sorted` (ascending, not empty), by linear interpolation
/// between the nearest ranks, as documented on [`LatencyStats`].
fn check_stop(stop: &AtomicBool) -> Result<(), EvalError> {
    if stop.load(Ordering::Relaxed) {
        return Err(EvalError::Interrupted);
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (sorted.len() - 1) as f64 * p / 100.0;
    let below = rank.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (rank - below as f64) * (sorted[above] - sorted[below])
}

/// The most bytes of input a batch padded beyond the data may take.
pub const MAX_PADDED_BYTES: u128 = 1 << 30;

/// The batch size the model fixes on its inputs' first dimension, if any does. A batch larger
/// than the data is filled with copies of the last sample, up to [`MAX_PADDED_BYTES`].
fn fixed_batch(
    session: &dyn InferenceSession,
    dataset: &Dataset,
) -> Result<Option<usize>, EvalError> {
    let fixed = IoInfo::fixed_batch(session.inputs())
        .map_err(|sizes| EvalError::MixedBatch { model: session.path().to_path_buf(), sizes })?;
    let Some(size) = fixed else { return Ok(None) };
    let samples = dataset.len();
    if size > samples {
        let one = dataset.batch(session.inputs(), 0..samples.min(1));
        let per_sample: usize = one.iter().map(|(_, tensor)| tensor.byte_len()).sum();
        let bytes = per_sample as u128 * size as u128;
        if bytes > MAX_PADDED_BYTES {
            let model = session.path().to_path_buf();
            return Err(EvalError::BatchOverData { model, batch: size, samples, bytes });
        }
    }
    Ok(Some(size))
}

/// Grows every tensor to `size` rows by repeating its last row.
fn pad_rows(feeds: Vec<(String, Tensor)>, size: usize) -> Vec<(String, Tensor)> {
    feeds
        .into_iter()
        .map(|(name, tensor)| {
            let rows = tensor.len0();
            if rows >= size || rows == 0 {
                return (name, tensor);
            }
            let mut parts = vec![tensor.clone()];
            parts.extend(std::iter::repeat_n(tensor.slice0(rows - 1..rows), size - rows));
            (name, concat0(&parts))
        })
        .collect()
}

/// Stacks tensors of one type along their first dimension.
fn concat0(parts: &[Tensor]) -> Tensor {
    macro_rules! stack {
        ($variant:ident) => {{
            let views: Vec<_> = parts
                .iter()
                .filter_map(|t| if let Tensor::$variant(a) = t { Some(a.view()) } else { None })
                .collect();
            match ndarray::concatenate(ndarray::Axis(0), &views) {
                Ok(array) => Tensor::$variant(array),
                Err(_) => parts[0].clone(),
            }
        }};
    }
    match &parts[0] {
        Tensor::F32(_) => stack!(F32),
        Tensor::F16(_) => stack!(F16),
        Tensor::F64(_) => stack!(F64),
        Tensor::I8(_) => stack!(I8),
        Tensor::I16(_) => stack!(I16),
        Tensor::I32(_) => stack!(I32),
        Tensor::I64(_) => stack!(I64),
        Tensor::U8(_) => stack!(U8),
        Tensor::U16(_) => stack!(U16),
        Tensor::U32(_) => stack!(U32),
        Tensor::U64(_) => stack!(U64),
        Tensor::Bool(_) => stack!(Bool),
    }
}

/// The dataset's labels as one class index per sample.
fn class_labels(dataset: &Dataset) -> Result<Vec<i64>, EvalError> {
    let Some((array, labels)) = dataset.labels() else {
        return Err(EvalError::NoLabels { data: dataset.path().to_path_buf() });
    };
    let bad = |problem: String| EvalError::BadLabels {
        data: dataset.path().to_path_buf(),
        array: array.to_string(),
        problem,
    };

    let shape = labels.shape();
    if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
        return Err(bad(format!("have shape {shape:?}")));
    }
    let values: Option<Vec<i64>> = match labels {
        Tensor::I8(a) => Some(a.iter().map(|&v| i64::from(v)).collect()),
        Tensor::I16(a) => Some(a.iter().map(|&v| i64::from(v)).collect()),
        Tensor::I32(a) => Some(a.iter().map(|&v| i64::from(v)).collect()),
        Tensor::I64(a) => Some(a.iter().copied().collect()),
        Tensor::U8(a) => Some(a.iter().map(|&v| i64::from(v)).collect()),
        Tensor::U16(a) => Some(a.iter().map(|&v| i64::from(v)).collect()),
        Tensor::U32(a) => Some(a.iter().map(|&v| i64::from(v)).collect()),
        Tensor::U64(a) => {
            let values: Vec<u64> = a.iter().copied().collect();
            if let Some(index) = values.iter().position(|&v| i64::try_from(v).is_err()) {
                let value = values[index];
                return Err(bad(format!(
                    "hold {value} at sample {index}, which is not a class: too large for a \
                     class index"
                )));
            }
            Some(values.into_iter().map(|v| v as i64).collect())
        }
        _ => None,
    };
    values.ok_or_else(|| bad(format!("are {}, not integers", labels.elem())))
}

/// Checks the labels of `data` before anything is measured: integer class indices, one per
/// sample, each below `classes` when the model's output declares how many classes it scores.
pub fn check_labels(data: &Dataset, classes: Option<usize>, output: &str) -> Result<(), EvalError> {
    let labels = class_labels(data)?;
    match classes {
        Some(classes) => check_label_range(data, &labels, 0, classes, output),
        None => match labels.iter().position(|&label| label < 0) {
            Some(index) => check_label_range(data, &labels[index..], index, usize::MAX, output),
            None => Ok(()),
        },
    }
}

/// Fails on the first of `labels` (sample `first` onwards) that is not a class index of an
/// output scoring `classes` classes: a label outside them could never be predicted, and
/// accuracy would quietly count it wrong.
fn check_label_range(
    data: &Dataset,
    labels: &[i64],
    first: usize,
    classes: usize,
    output: &str,
) -> Result<(), EvalError> {
    let outside = |&label: &i64| usize::try_from(label).map_or(true, |label| label >= classes);
    let Some(index) = labels.iter().position(outside) else { return Ok(()) };
    let array = data.labels().map_or("", |(name, _)| name);
    let range = if classes == usize::MAX {
        "class indices start at 0".to_string()
    } else {
        format!("output '{output}' scores {classes} classes, 0 to {}", classes.saturating_sub(1))
    };
    Err(EvalError::BadLabels {
        data: data.path().to_path_buf(),
        array: array.to_string(),
        problem: format!(
            "hold {} at sample {}, which is not a class: {range}",
            labels[index],
            first + index
        ),
    })
}

/// The index of the largest value along the last axis, for each of `rows` samples.
fn argmax_rows(scores: &Tensor, rows: usize) -> Result<Vec<usize>, String> {
    let shape = scores.shape();
    if shape.len() < 2 || shape[0] != rows || shape[1..shape.len() - 1].iter().any(|&d| d != 1) {
        return Err(format!(
            "has shape {shape:?} for a batch of {rows}; top-1 accuracy needs \
             [{rows}, classes], one row of class scores per sample"
        ));
    }
    let classes = shape[shape.len() - 1];
    if classes == 0 {
        return Err("has no class scores (last dimension is 0)".into());
    }
    let flat: Vec<f64> = as_f64(scores).iter().copied().collect();
    Ok(flat.chunks(classes).map(argmax).collect())
}

/// The index of the largest value of `row`: the first of ties, and NaN counts as largest, as
/// `numpy.argmax` does; 0 for an empty row.
pub(super) fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (index, &value) in row.iter().enumerate() {
        let current = row[best];
        if !current.is_nan() && (value > current || value.is_nan()) {
            best = index;
        }
    }
    best
}

/// The values as f64, for numeric comparisons (booleans become 0 and 1).
pub(super) fn as_f64(tensor: &Tensor) -> ArrayD<f64> {
    match tensor {
        Tensor::F32(a) => a.mapv(f64::from),
        Tensor::F16(a) => a.mapv(f64::from),
        Tensor::F64(a) => a.clone(),
        Tensor::I8(a) => a.mapv(f64::from),
        Tensor::I16(a) => a.mapv(f64::from),
        Tensor::I32(a) => a.mapv(f64::from),
        Tensor::I64(a) => a.mapv(|v| v as f64),
        Tensor::U8(a) => a.mapv(f64::from),
        Tensor::U16(a) => a.mapv(f64::from),
        Tensor::U32(a) => a.mapv(f64::from),
        Tensor::U64(a) => a.mapv(|v| v as f64),
        Tensor::Bool(a) => a.mapv(|v| if v { 1.0 } else { 0.0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn percentiles_match_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 99]) == [3.0, 7.6, 9.76]
        let sorted = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&sorted, 50.0), 3.0);
        assert!((percentile(&sorted, 90.0) - 7.6).abs() < 1e-12);
        assert!((percentile(&sorted, 99.0) - 9.76).abs() < 1e-12);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 100.0), 10.0);
        assert_eq!(percentile(&[4.5], 99.0), 4.5);
    }

    #[test]
    fn argmax_takes_the_first_of_ties_and_treats_nan_as_largest() {
        let scores = ArrayD::from_shape_vec(
            IxDyn(&[3, 3]),
            vec![1.0f32, 5.0, 5.0, f32::NAN, 9.0, 1.0, 0.0, 2.0, f32::NAN],
        )
        .unwrap();

        let predicted = argmax_rows(&Tensor::F32(scores), 3).unwrap();

        assert_eq!(predicted, vec![1, 0, 2]);
    }

    #[test]
    fn argmax_rejects_outputs_without_one_row_per_sample() {
        let scores = ArrayD::from_shape_vec(IxDyn(&[2, 2, 3]), vec![0.0f32; 12]).unwrap();
        let problem = argmax_rows(&Tensor::F32(scores), 2).unwrap_err();
        assert!(problem.contains("[2, 2, 3]"), "{problem}");
    }

    #[test]
    fn padding_repeats_the_last_row() {
        let rows = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1i64, 2, 3, 4]).unwrap();

        let padded = pad_rows(vec![("x".into(), Tensor::I64(rows))], 4);

        let expected = ArrayD::from_shape_vec(IxDyn(&[4, 2]), vec![1i64, 2, 3, 4, 3, 4, 3, 4]);
        assert_eq!(padded[0].1, Tensor::I64(expected.unwrap()));
    }

    #[test]
    fn compare_outputs_reports_the_largest_difference() {
        let a = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0f32, 2.0, f32::NAN]).unwrap();
        let b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.5f32, 2.25, f32::NAN]).unwrap();
        let c = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0f32, 2.0, 3.0]).unwrap();

        assert_eq!(compare_outputs(&Tensor::F32(a.clone()), &Tensor::F32(b)).unwrap(), 0.5);
        assert_eq!(
            compare_outputs(&Tensor::F32(a), &Tensor::F32(c.clone())).unwrap(),
            f64::INFINITY
        );
        let other = Tensor::F64(c.mapv(f64::from));
        assert!(compare_outputs(&Tensor::F32(c), &other).is_err());
    }
}
