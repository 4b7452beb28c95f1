//! Calibration: the range of values each chosen tensor takes on the calibration data, as
//! ONNX Runtime's calibrators (`MinMaxCalibrater`, `EntropyCalibrater`,
//! `PercentileCalibrater` and their `HistogramCollector`) compute it.
//!
//! [`calibrate`] makes a copy of the model whose graph outputs include every requested
//! tensor, has a [`ModelRunner`] run it batch by batch, and reduces the outputs as they
//! come: nothing that grows with the number of samples is kept but, for MinMax with a moving
//! average, two floats per tensor and batch (see [`CalibrationOptions::moving_average`]).
//!
//! ORT's calibrators read every batch of one `collect_data` call before they reduce it:
//! MinMax takes the minimum (or the mean) of the per-batch extremes, and the histogram
//! methods build one histogram over all values at once, its range set by the extreme of all
//! of them. A streaming reduction gets the same numbers this way: MinMax keeps running
//! extremes; the histogram methods run the data twice, first for the extremes that fix the
//! histogram's range and then to count the values into it. ORT's `CalibStridedMinMax`
//! option, which calls `collect_data` once per stride of samples and merges the results
//! (histograms that grow when a later stride reaches further out), is
//! [`CalibrationOptions::stride`].

mod histogram;
mod minmax;
mod numpy;
mod threshold;

use std::collections::{BTreeMap, HashSet};

use ndarray::ArrayViewD;
use tracing::{debug, info_span};

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::type_proto;
use crate::ir::proto::{ModelProto, ValueInfoProto};
use crate::ir::{self, IrError};
use crate::pass::{ModelRunner, PassError, RunnerError};

/// How a tensor's range is chosen from the values it takes.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum CalibrationMethod {
    /// The smallest and largest value seen (or their average over batches).
    #[serde(rename = "minmax")]
    MinMax,
    /// The range whose quantized histogram is closest to the real one in KL divergence.
    #[serde(rename = "entropy")]
    Entropy,
    /// The range that keeps a given percentile of the values, cutting the outliers.
    #[serde(rename = "percentile")]
    Percentile,
}

/// The settings of a calibration, named as in ORT's calibrators. [`CalibrationOptions::new`]
/// gives ORT's defaults for a method, except Entropy's `num_bins` (see there).
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationOptions {
    pub method: CalibrationMethod,

    /// MinMax only: average the per-batch minimum and maximum over the batches instead of
    /// taking the extremes of all of them (ORT's `CalibMovingAverage`). ORT averages with
    /// NumPy's pairwise summation, whose order depends on the number of batches, so the
    /// per-batch extremes (two floats per tensor and batch) are kept until a stride ends.
    pub moving_average: bool,

    /// MinMax with `moving_average` and a `stride` only: the weight of a new stride's range
    /// when it is merged into the running one, `old + c * (new - old)` (ORT's
    /// `CalibMovingAverageConstant`, default 0.01). Without a stride there is nothing to
    /// merge and ORT ignores it too. Between 0 and 1.
    pub averaging_constant: f64,

    /// Entropy and Percentile: how many bins the histogram starts with; it grows when a later
    /// stride reaches beyond its range. ORT's default is 2048 for Percentile and 128 for
    /// Entropy; ours is 2048 for both. With 128 bins and 128 quantized bins, ORT's entropy
    /// search has a single candidate, the whole histogram, so its "entropy" range is the
    /// MinMax range. 2048 bins give the search 961 candidates, as TensorRT's entropy
    /// calibration has. Set 128 to get ORT's default result.
    pub num_bins: usize,

    /// Entropy only: how many bins the quantized distribution has (ORT's default 128). At most
    /// `num_bins`.
    pub num_quantized_bins: usize,

    /// Percentile only: the share of values, in percent, the range keeps (ORT's default
    /// 99.999). Symmetric ranges keep it of the absolute values; asymmetric ones cut half of
    /// the rest at each end.
    pub percentile: f64,

    /// Make the range symmetric around 0 (ORT's `CalibTensorRangeSymmetric`). ORT's default is
    /// `true` for Percentile, `false` otherwise. MinMax returns `[-m, m]` with `m` the larger
    /// magnitude; Percentile builds its histogram on absolute values and returns `[-t, t]`,
    /// each end then clipped to the extremes seen, as ORT does; Entropy ignores it, as ORT's
    /// entropy search is symmetric by construction.
    pub symmetric: bool,

    /// Reduce the data in strides of this many batches and merge the results, as ORT does with
    /// `CalibStridedMinMax` (one `collect_data` call per stride). `None` reduces all batches
    /// at once, which is what ORT does by default. The number of batches must be a multiple
    /// of the stride.
    pub stride: Option<usize>,
}

impl CalibrationOptions {
    /// ORT's defaults for `method`, except 2048 bins for Entropy (ORT: 128).
    pub fn new(method: CalibrationMethod) -> Self {
        CalibrationOptions {
            method,
            moving_average: false,
            averaging_constant: 0.01,
            num_bins: 2048,
            num_quantized_bins: 128,
            percentile: 99.999,
            symmetric: method == CalibrationMethod::Percentile,
            stride: None,
        }
    }

    /// Checks the settings that matter for the method.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        let invalid = |field, reason: String| Err(CalibrationError::Options { field, reason });
        let histogram =
            matches!(self.method, CalibrationMethod::Entropy | CalibrationMethod::Percentile);
        if histogram && self.num_bins > MAX_BINS {
            let reason = format!(
                "{} is more than {MAX_BINS}; hint: finer histograms cost memory for every \
                 tensor and, for Entropy, time that grows with the square of the bins; the \
                 default is 2048",
                self.num_bins
            );
            return invalid("num_bins", reason);
        }

        if self.stride == Some(0) {
            return invalid("stride", "must be at least 1".into());
        }

        match self.method {
            CalibrationMethod::MinMax => {
                let constant = self.averaging_constant;
                if self.moving_average && !(0.0..=1.0).contains(&constant) {
                    return invalid("averaging_constant", format!("{constant} is not in [0, 1]"));
                }
            }
            CalibrationMethod::Entropy => {
                if self.num_quantized_bins < 1 {
                    return invalid("num_quantized_bins", "must be at least 1".into());
                }
                if self.num_bins < self.num_quantized_bins {
                    let reason = format!(
                        "{} bins cannot be quantized into {} bins; hint: num_bins must be at \
                         least num_quantized_bins",
                        self.num_bins, self.num_quantized_bins
                    );
                    return invalid("num_bins", reason);
                }
            }
            CalibrationMethod::Percentile => {
                if self.num_bins < 1 {
                    return invalid("num_bins", "must be at least 1".into());
                }
                if !(0.0..=100.0).contains(&self.percentile) {
                    let reason = format!("{} is not in [0, 100]", self.percentile);
                    return invalid("percentile", reason);
                }
            }
        }
        Ok(())
    }
}

/// The most histogram bins Entropy and Percentile take.
pub const MAX_BINS: usize = 16384;

impl Default for CalibrationOptions {
    /// MinMax with ORT's defaults.
    fn default() -> Self {
        CalibrationOptions::new(CalibrationMethod::MinMax)
    }
}

/// The range chosen for one tensor: what ORT's `TensorData` holds as `lowest` and `highest`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRange {
    pub min: f32,
    pub max: f32,
}

/// Why a calibration could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// A setting is out of its range.
    #[error("invalid calibration option `{field}`: {reason}")]
    Options { field: &'static str, reason: String },

    /// The model has no graph.
    #[error("the model has no graph")]
    NoGraph,

    /// A requested tensor is neither a graph input nor a node output of the main graph.
    #[error(
        "tensor `{tensor}` is not an input or a node output of the main graph; hint: tensors \
         inside subgraphs (If, Loop, Scan) cannot be calibrated"
    )]
    UnknownTensor { tensor: String },

    /// A requested tensor is an initializer, whose values are known without running anything.
    #[error("tensor `{tensor}` is an initializer; hint: take its range from its values")]
    Initializer { tensor: String },

    /// A requested tensor is not float32.
    #[error("tensor `{tensor}` is {data_type}; only float32 tensors can be calibrated")]
    NotFloat { tensor: String, data_type: String },

    /// The runner has no samples.
    #[error("the calibration data has no samples")]
    NoSamples,

    /// A tensor holds NaN or an infinity, which has no finite range.
    #[error(
        "tensor `{tensor}` holds NaN or Inf in batch {batch}; hint: check the calibration data \
         and the model's numerics on it"
    )]
    NonFinite { tensor: String, batch: usize },

    /// A tensor had no values in any batch.
    #[error("tensor `{tensor}` was empty in every batch, so it has no range")]
    Empty { tensor: String },

    /// A histogram could not be built or cut, as ORT's could not either.
    #[error("cannot calibrate tensor `{tensor}` from its histogram: {reason}")]
    Histogram { tensor: String, reason: String },

    /// The number of batches is not a multiple of the stride.
    #[error("{batches} batches cannot be cut into strides of {stride}; hint: {hint}")]
    Stride { batches: usize, stride: usize, hint: &'static str },

    /// The runner broke the [`ModelRunner`] contract.
    #[error("the model runner misbehaved: {0}")]
    Runner(String),

    /// Running the model failed.
    #[error(transparent)]
    Run(#[from] RunnerError),

    #[error(transparent)]
    Ir(#[from] IrError),
}

impl CalibrationError {
    /// The error as a pass reports it: a failed run keeps its cause, the rest say what was
    /// wrong with the model, the data or the options.
    pub fn into_pass_error(self, pass: &'static str) -> PassError {
        match self {
            CalibrationError::Run(source) => PassError::Calibration { pass, source },
            CalibrationError::Ir(error) => PassError::Ir(error),
            other => PassError::Model { pass, reason: format!("calibration failed: {other}") },
        }
    }
}

/// The range of each tensor in `tensors` over the runner's data, keyed by tensor name.
///
/// `tensors` name float32 graph inputs or node outputs of `model`'s main graph (not
/// initializers); a name given twice is calibrated once. The runner runs a copy of `model`
/// whose outputs include them all.
pub fn calibrate(
    model: &ModelProto,
    tensors: &[String],
    options: &CalibrationOptions,
    runner: &dyn ModelRunner,
) -> Result<BTreeMap<String, TensorRange>, CalibrationError> {
    let _span =
        info_span!("calibrate", method = ?options.method, tensors = tensors.len()).entered();
    options.validate()?;

    if runner.samples() == 0 {
        return Err(CalibrationError::NoSamples);
    }

    let mut seen = HashSet::new();
    let names: Vec<String> = tensors.iter().filter(|t| seen.insert(t.as_str())).cloned().collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }

    let augmented = augment(model, &names)?;
    debug!(outputs = augmented.graph.as_ref().map_or(0, |g| g.output.len()), "augmented model");

    let ranges = match options.method {
        CalibrationMethod::MinMax => minmax::calibrate(&augmented, &names, options, runner)?,
        CalibrationMethod::Entropy | CalibrationMethod::Percentile => {
            histogram::calibrate(&augmented, &names, options, runner)?
        }
    };

    Ok(names.into_iter().zip(ranges).collect())
}

/// A copy of `model` whose graph outputs include every tensor of `names`, after checking that
/// each is a float32 graph input or node output. Also used by `importance`, which reads the
/// same tensors for another reduction. A tensor that is already an output stays
/// where it is; the others are appended with their `value_info` when the model has one, as
/// ORT's calibrators do, or declared float32 of unknown shape otherwise.
pub(super) fn augment(
    model: &ModelProto,
    names: &[String],
) -> Result<ModelProto, CalibrationError> {
    let mut augmented = model.clone();
    let graph = augmented.graph.as_mut().ok_or(CalibrationError::NoGraph)?;

    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let produced: HashSet<&str> =
        graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
    let declared = |name: &str| {
        let infos = graph.output.iter().chain(&graph.input).chain(&graph.value_info);
        infos.into_iter().find(|info| info.name() == name)
    };

    let mut added = Vec::new();
    for name in names {
        if initializers.contains(name.as_str()) && !produced.contains(name.as_str()) {
            return Err(CalibrationError::Initializer { tensor: name.clone() });
        }
        let is_input = graph.input.iter().any(|input| input.name() == name);
        if !is_input && !produced.contains(name.as_str()) {
            return Err(CalibrationError::UnknownTensor { tensor: name.clone() });
        }

        let info = declared(name);
        if let Some(data_type) = info.and_then(tensor_elem_type) {
            if data_type != DataType::Float as i32 {
                let data_type = ir::data_type_name(data_type);
                return Err(CalibrationError::NotFloat { tensor: name.clone(), data_type });
            }
        }

        if !outputs.contains(name.as_str()) {
            let float = || ir::tensor_value_info(name, DataType::Float as i32, None);
            added.push(info.cloned().unwrap_or_else(float));
        }
    }

    graph.output.extend(added);
    Ok(augmented)
}

/// The element type a value's declaration gives, when it declares a tensor with one.
fn tensor_elem_type(info: &ValueInfoProto) -> Option<i32> {
    match info.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tensor) => tensor.elem_type,
        _ => None,
    }
}

/// What [`stream`] hands each tensor's values of each batch to: the batch's index, the
/// tensor's index, the values.
pub(super) type Visit<'a> =
    dyn FnMut(usize, usize, ArrayViewD<'_, f32>) -> Result<(), CalibrationError> + 'a;

/// Runs the augmented model over the runner's data and hands `visit` each batch's values of
/// each tensor, with the batch's index. Checks the runner's order of calls and rejects NaN
/// and infinities. Returns the number of batches.
pub(super) fn stream(
    model: &ModelProto,
    names: &[String],
    runner: &dyn ModelRunner,
    visit: &mut Visit<'_>,
) -> Result<usize, CalibrationError> {
    let mut batches = 0;
    let mut next = 0;
    let mut failure = None;

    let mut check = |index: usize, values: ArrayViewD<'_, f32>| {
        let result = (|| {
            if index != next {
                let reason = format!("output {index} came when output {next} was due");
                return Err(CalibrationError::Runner(reason));
            }
            if index == 0 {
                batches += 1;
            }
            next = (index + 1) % names.len();

            let batch = batches - 1;
            if values.iter().any(|value| !value.is_finite()) {
                return Err(CalibrationError::NonFinite { tensor: names[index].clone(), batch });
            }
            visit(batch, index, values)
        })();

        result.map_err(|error| {
            let message = error.to_string();
            failure = Some(error);
            message
        })
    };

    let result = runner.for_each_batch(model, names, &mut check);
    if let Some(error) = failure {
        return Err(error);
    }
    result?;

    if next != 0 {
        let reason = format!("the last batch stopped after {next} of {} outputs", names.len());
        return Err(CalibrationError::Runner(reason));
    }
    Ok(batches)
}

/// Checks that `batches` is a whole number of strides, and says how many batches one stride
/// (or the whole run, without a stride) covers.
fn stride_length(batches: usize, stride: Option<usize>) -> Result<usize, CalibrationError> {
    match stride {
        None => Ok(batches),
        Some(stride) if batches.is_multiple_of(stride) => Ok(stride),
        Some(stride) => Err(CalibrationError::Stride {
            batches,
            stride,
            hint: "choose a stride that divides the number of calibration samples",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_ort_but_entropy_bins() {
        let minmax = CalibrationOptions::new(CalibrationMethod::MinMax);
        assert!(!minmax.symmetric && !minmax.moving_average);
        assert_eq!(minmax.averaging_constant, 0.01);

        let percentile = CalibrationOptions::new(CalibrationMethod::Percentile);
        assert!(percentile.symmetric);
        assert_eq!((percentile.num_bins, percentile.percentile), (2048, 99.999));

        let entropy = CalibrationOptions::new(CalibrationMethod::Entropy);
        assert!(!entropy.symmetric);
        assert_eq!((entropy.num_bins, entropy.num_quantized_bins), (2048, 128));
    }

    #[test]
    fn method_names_are_snake_case() {
        let names: Vec<String> =
            [CalibrationMethod::MinMax, CalibrationMethod::Entropy, CalibrationMethod::Percentile]
                .iter()
                .map(|m| serde_json::to_string(m).unwrap())
                .collect();
        assert_eq!(names, ["\"minmax\"", "\"entropy\"", "\"percentile\""]);
    }

    #[test]
    fn options_out_of_range_name_the_field() {
        let mut options = CalibrationOptions::new(CalibrationMethod::Entropy);
        options.num_bins = 64;
        let error = options.validate().unwrap_err().to_string();
        assert!(error.contains("`num_bins`") && error.contains("64 bins"), "{error}");

        let mut options = CalibrationOptions::new(CalibrationMethod::MinMax);
        options.moving_average = true;
        options.averaging_constant = 1.5;
        let error = options.validate().unwrap_err().to_string();
        assert!(error.contains("`averaging_constant`: 1.5 is not in [0, 1]"), "{error}");

        let mut options = CalibrationOptions::new(CalibrationMethod::Percentile);
        options.percentile = 100.5;
        assert!(options.validate().is_err());

        for method in [CalibrationMethod::Entropy, CalibrationMethod::Percentile] {
            let mut options = CalibrationOptions::new(method);
            options.num_bins = MAX_BINS;
            assert!(options.validate().is_ok());
            options.num_bins = 4_000_000_000_000;
            let error = options.validate().unwrap_err().to_string();
            assert!(error.contains("`num_bins`") && error.contains("more than 16384"), "{error}");
        }
    }
}
