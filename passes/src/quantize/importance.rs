//! Data-aware block scales for weight-only quantization: how much each input column of a
//! MatMul matters on the calibration data, and a per-block search for the scale that keeps
//! the weights of the columns that matter closest to their float values.
//!
//! A MatMul's output moves by `sum_k x_k * (w_k - dequant(w_k))` when its weights are
//! quantized; leaving out the cross terms, the expected squared change is
//! `sum_k E[x_k^2] * (w_k - dequant(w_k))^2`. [`collect`] measures `E[x_k^2]`, the mean
//! squared activation of each column `k` of a MatMul's first input, over every row of every
//! calibration sample; [`BlockSearch`] then picks each block's scale to minimise that
//! weighted error instead of taking the min/max choice blindly.
//!
//! The search's baseline is ONNX Runtime's round-to-nearest (RTN) block quantization, the
//! min/max rule of its `MatMulNBits` quantizer. Around it the search tries a grid of
//! narrower ranges (and, when symmetric, the extreme on the positive end of the codes), and
//! for the codes each candidate rounds to, the least-squares scale. RTN is compared last with
//! the exact weighted error of both, so the result is never worse than RTN by that measure.

use std::collections::HashMap;

use ndarray::ArrayViewD;
use tracing::{debug, info_span};

use super::calibrate::{self, CalibrationError};
use crate::ir;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::ModelProto;
use crate::ir::shapes::Shapes;
use crate::pass::{ModelRunner, PassError};

/// Why importances could not be collected or a block could not be quantized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportanceError {
    /// A value has no last axis to take columns of.
    #[error(
        "value `{value}` is a scalar in batch {batch}; hint: importance is measured per column \
         of the last axis of a MatMul's first input, which has rank 1 or more"
    )]
    Scalar { value: String, batch: usize },

    /// A value's last axis changed length between batches.
    #[error(
        "value `{value}` has {found} columns (last axis) in batch {batch} but {expected} before; \
         hint: the last axis of a MatMul's first input must match its weight in every batch"
    )]
    Columns { value: String, batch: usize, expected: usize, found: usize },

    /// A value had no rows, or no columns, in every batch.
    #[error("value `{value}` held no values in any batch, so its columns have no mean")]
    Empty { value: String },

    /// The number of bits is not one a block code can have.
    #[error("cannot quantize to {bits} bits; hint: block quantization takes 2 to 8 bits")]
    Bits { bits: u32 },

    /// A block's values, importances and codes differ in length, or the block is empty.
    #[error(
        "a block of {values} weights came with {importance} importances and room for {codes} \
         codes; the three must be equal and not zero"
    )]
    Lengths { values: usize, importance: usize, codes: usize },

    /// A weight is NaN or infinite.
    #[error("weight {index} of the block is {value}; only finite weights can be quantized")]
    Weight { index: usize, value: f32 },

    /// An importance is negative, NaN or infinite.
    #[error("importance {index} of the block is {value}; it must be finite and not negative")]
    Importance { index: usize, value: f32 },

    /// Running the model or reading its values failed.
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
}

impl ImportanceError {
    /// The error as a pass reports it: a failed run keeps its cause, the rest say what was
    /// wrong with the model, the data or the weights.
    pub fn into_pass_error(self, pass: &'static str) -> PassError {
        match self {
            ImportanceError::Calibration(error) => error.into_pass_error(pass),
            other => PassError::Model { pass, reason: format!("importance search: {other}") },
        }
    }
}

/// The importance of every column of each value in `values`: the mean of `x^2` over all rows
/// (every index but the last axis) of all samples, one vector per name, in the order given.
///
/// `values` name float32 graph inputs or node outputs of `model`'s main graph, typically the
/// first inputs of the MatMuls whose weights are quantized; a name given twice is read once.
/// The runner runs a copy of `model` whose outputs include them all, and the values are
/// reduced batch by batch into one f64 sum per column. NaN or infinity in a value, a value
/// that is not float32, and a last axis that changes between batches are errors naming it.
pub fn collect(
    model: &ModelProto,
    values: &[String],
    runner: &dyn ModelRunner,
) -> Result<Vec<Vec<f32>>, ImportanceError> {
    let _span = info_span!("importance", values = values.len()).entered();
    if values.is_empty() {
        return Ok(Vec::new());
    }
    if runner.samples() == 0 {
        return Err(CalibrationError::NoSamples.into());
    }

    let mut slots = HashMap::new();
    let mut names = Vec::new();
    let order: Vec<usize> = values
        .iter()
        .map(|name| {
            *slots.entry(name.as_str()).or_insert_with(|| {
                names.push(name.clone());
                names.len() - 1
            })
        })
        .collect();

    check_float(model, &names)?;
    let augmented = calibrate::augment(model, &names)?;

    let mut sums: Vec<ColumnSums> = names.iter().map(|_| ColumnSums::default()).collect();
    // `stream` stops on the first error its visitor returns; a shape error of ours is kept
    // here and the stream is stopped with a placeholder that is never shown.
    let mut shape_error = None;
    let result =
        calibrate::stream(&augmented, &names, runner, &mut |batch, index, batch_values| {
            sums[index].add(&names[index], batch, batch_values).map_err(|error| {
                shape_error = Some(error);
                CalibrationError::Runner("stopped on a shape error".into())
            })
        });
    if let Some(error) = shape_error {
        return Err(error);
    }
    let batches = result?;
    debug!(batches, values = names.len(), "collected importances");

    let means = names
        .iter()
        .zip(sums)
        .map(|(name, sums)| {
            sums.means().ok_or_else(|| ImportanceError::Empty { value: name.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(order.into_iter().map(|slot| means[slot].clone()).collect())
}

/// Rejects values whose element type is known and not float32, before anything runs.
fn check_float(model: &ModelProto, names: &[String]) -> Result<(), CalibrationError> {
    let graph = model.graph.as_ref().ok_or(CalibrationError::NoGraph)?;
    let shapes = Shapes::infer(graph);
    for name in names {
        match shapes.elem_type(name) {
            Some(data_type) if data_type != DataType::Float as i32 => {
                let data_type = ir::data_type_name(data_type);
                return Err(CalibrationError::NotFloat { tensor: name.clone(), data_type });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The running sums of `x^2` per column of one value, and how many rows went into them.
#[derive(Default)]
struct ColumnSums {
    sums: Vec<f64>,
    rows: u64,
    columns: Option<usize>,
}

impl ColumnSums {
    fn add(
        &mut self,
        name: &str,
        batch: usize,
        values: ArrayViewD<'_, f32>,
    ) -> Result<(), ImportanceError> {
        let Some(&columns) = values.shape().last() else {
            return Err(ImportanceError::Scalar { value: name.to_string(), batch });
        };
        match self.columns {
            None => {
                self.columns = Some(columns);
                self.sums = vec![0.0; columns];
            }
            Some(expected) if expected != columns => {
                let value = name.to_string();
                return Err(ImportanceError::Columns { value, batch, expected, found: columns });
            }
            Some(_) => {}
        }
        if columns == 0 {
            return Ok(());
        }

        self.rows += (values.len() / columns) as u64;
        if let Some(flat) = values.as_slice() {
            for row in flat.chunks_exact(columns) {
                for (sum, &x) in self.sums.iter_mut().zip(row) {
                    *sum += f64::from(x) * f64::from(x);
                }
            }
        } else {
            // Any other layout: the iterator walks in logical (row-major) order.
            let mut column = 0;
            for &x in values.iter() {
                self.sums[column] += f64::from(x) * f64::from(x);
                column += 1;
                if column == columns {
                    column = 0;
                }
            }
        }
        Ok(())
    }

    /// The mean per column, or `None` when no row was seen.
    fn means(self) -> Option<Vec<f32>> {
        if self.rows == 0 {
            return None;
        }
        let rows = self.rows as f64;
        Some(self.sums.into_iter().map(|sum| (sum / rows) as f32).collect())
    }
}

/// How one block is quantized: a code `q` stands for `(q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockParams {
    pub scale: f32,
    pub zero_point: u8,
}

/// A quantized block: its parameters and one code per value.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockQuant {
    pub scale: f32,
    pub zero_point: u8,
    pub codes: Vec<u8>,
}

/// How many range factors the search tries: 1.0, 0.98, ... 0.70.
const FACTORS: usize = 16;

/// The step between two range factors.
const FACTOR_STEP: f32 = 0.02;

/// Quantizes blocks of weights at a fixed number of bits, choosing each block's scale (and
/// zero point, when asymmetric) to minimise the importance-weighted squared error.
///
/// Symmetric blocks keep the zero point `2^(bits-1)`, so that a model can leave zero points
/// out; asymmetric ones use all codes `0..2^bits` with a zero point per block. One search
/// costs about 32 (symmetric) or 46 (asymmetric) passes over the block, and allocates
/// nothing.
#[derive(Clone, Debug)]
pub struct BlockSearch {
    symmetric: bool,
    /// `2^bits - 1`, the largest code.
    max_code: f32,
    /// `2^(bits-1)`, the symmetric zero point.
    mid: f32,
    factors: [f32; FACTORS],
}

impl BlockSearch {
    /// A search for `bits`-bit codes (2 to 8).
    pub fn new(bits: u32, symmetric: bool) -> Result<Self, ImportanceError> {
        if !(2..=8).contains(&bits) {
            return Err(ImportanceError::Bits { bits });
        }
        let factors = std::array::from_fn(|i| 1.0 - FACTOR_STEP * i as f32);
        let max_code = ((1u32 << bits) - 1) as f32;
        let mid = (1u32 << (bits - 1)) as f32;
        Ok(BlockSearch { symmetric, max_code, mid, factors })
    }

    /// ONNX Runtime's round-to-nearest quantization of `values` into `codes`.
    ///
    /// Symmetric: `scale = m / -2^(bits-1)` with `m` the value of largest magnitude, signed
    /// (the minimum on a tie), and zero point `2^(bits-1)`. Asymmetric: the range
    /// `[min(min, 0), max(max, 0)]` over `2^bits - 1` steps, zero point
    /// `round(-low / scale)` clamped to the codes. A code is
    /// `clamp(round(v * (1 / scale) + zero_point))`, rounding half away from zero, and an
    /// all-zero block has scale 0 and every code at the zero point.
    pub fn round_to_nearest(
        &self,
        values: &[f32],
        codes: &mut [u8],
    ) -> Result<BlockParams, ImportanceError> {
        check_block(values, None, codes)?;
        let params = self.rtn_params(values);
        self.write_codes(values, reciprocal(params.scale), f32::from(params.zero_point), codes);
        Ok(params)
    }

    /// Quantizes `values` into `codes` with the scale that minimises
    /// `sum_k importance_k * (values_k - dequant_k)^2` among the candidates, RTN's among
    /// them. An importance of all zeros weighs every value alike. `importance` is the slice
    /// of the MatMul's column importances that this block covers.
    pub fn quantize(
        &self,
        values: &[f32],
        importance: &[f32],
        codes: &mut [u8],
    ) -> Result<BlockParams, ImportanceError> {
        check_block(values, Some(importance), codes)?;
        let weights = Weights::new(importance);
        let rtn = self.rtn_params(values);
        if rtn.scale == 0.0 {
            self.write_codes(values, 0.0, f32::from(rtn.zero_point), codes);
            return Ok(rtn);
        }

        let best = self.best_candidate(values, weights, rtn);
        let zero_point = best.zero_point as u8;
        self.write_codes(values, best.reciprocal, best.zero_point, codes);
        let params = BlockParams { scale: best.scale, zero_point };
        let searched = block_error(values, weights, params, codes);
        let baseline = self.rtn_error(values, weights, rtn);
        if searched < baseline {
            return Ok(params);
        }
        self.write_codes(values, reciprocal(rtn.scale), f32::from(rtn.zero_point), codes);
        Ok(rtn)
    }

    /// The min/max parameters, computed as ORT computes them.
    fn rtn_params(&self, values: &[f32]) -> BlockParams {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &value in values {
            if value < min {
                min = value;
            }
            if value > max {
                max = value;
            }
        }

        if self.symmetric {
            let extreme = if max.abs() > min.abs() { max } else { min };
            return BlockParams { scale: extreme / -self.mid, zero_point: self.mid as u8 };
        }
        let (low, high) = (if min < 0.0 { min } else { 0.0 }, if max > 0.0 { max } else { 0.0 });
        let scale = (high - low) / self.max_code;
        BlockParams { scale, zero_point: self.asymmetric_zero_point(low, scale) as u8 }
    }

    /// `round(-low / scale)` clamped to the codes, as ORT computes it.
    fn asymmetric_zero_point(&self, low: f32, scale: f32) -> f32 {
        let zero_point = if scale != 0.0 { 0.0 - low / scale } else { low };
        if zero_point < 0.0 {
            0.0
        } else if zero_point > self.max_code {
            self.max_code
        } else {
            zero_point.round()
        }
    }

    /// The candidate whose codes, with their least-squares scale, give the smallest error.
    fn best_candidate(&self, values: &[f32], weights: Weights<'_>, rtn: BlockParams) -> Candidate {
        let total = weighted_square_sum(values, weights);
        let mut best: Option<Candidate> = None;
        let mut consider = |reciprocal: f32, zero_point: f32| {
            let candidate = self.fit(values, weights, reciprocal, zero_point, total);
            if best.is_none_or(|best| candidate.error < best.error) {
                best = Some(candidate);
            }
        };

        let rtn_zero_point = f32::from(rtn.zero_point);
        consider(reciprocal(rtn.scale), rtn_zero_point);
        if self.symmetric {
            // `rtn.scale * -mid` is the signed extreme: it maps to code 0 at RTN's scale, and
            // to the largest code, `mid - 1` above the zero point, at the second scale.
            let extreme = rtn.scale * -self.mid;
            for (i, &factor) in self.factors.iter().enumerate() {
                if i > 0 {
                    consider(reciprocal(factor * extreme / -self.mid), rtn_zero_point);
                }
                consider(reciprocal(factor * extreme / (self.mid - 1.0)), rtn_zero_point);
            }
        } else {
            let (low, high) = self.asymmetric_range(values);
            for &factor in &self.factors[1..] {
                // Shrinking one end alone is new only when both ends are away from 0.
                let ranges =
                    [(factor * low, factor * high), (factor * low, high), (low, factor * high)];
                let count = if low < 0.0 && high > 0.0 { 3 } else { 1 };
                for &(low, high) in &ranges[..count] {
                    let scale = (high - low) / self.max_code;
                    if scale != 0.0 {
                        let zero_point = self.asymmetric_zero_point(low, scale);
                        consider(1.0 / scale, zero_point);
                    }
                }
            }
        }
        best.unwrap_or(Candidate {
            reciprocal: reciprocal(rtn.scale),
            zero_point: rtn_zero_point,
            scale: rtn.scale,
            error: f64::INFINITY,
        })
    }

    /// `[min(min, 0), max(max, 0)]` of the block.
    fn asymmetric_range(&self, values: &[f32]) -> (f32, f32) {
        values.iter().fold((0.0f32, 0.0f32), |(low, high), &v| (low.min(v), high.max(v)))
    }

    /// Rounds `values` with `reciprocal` and `zero_point`, and finds the scale that fits those
    /// codes best in weighted least squares, with its error (`total` is `sum w v^2`).
    fn fit(
        &self,
        values: &[f32],
        weights: Weights<'_>,
        reciprocal: f32,
        zero_point: f32,
        total: f64,
    ) -> Candidate {
        let (mut cross, mut square) = (0.0f64, 0.0f64);
        for (k, &value) in values.iter().enumerate() {
            let step = f64::from(round_code(value * reciprocal + zero_point, self.max_code))
                - f64::from(zero_point);
            let weighted = weights.at(k) * step;
            cross += weighted * f64::from(value);
            square += weighted * step;
        }

        // Error at scale s: total - 2 s cross + s^2 square, least at s = cross / square.
        let (scale, error) = if square > 0.0 {
            (cross / square, total - cross * cross / square)
        } else {
            (0.0, total)
        };
        Candidate { reciprocal, zero_point, scale: scale as f32, error }
    }

    /// The weighted error of RTN's codes, without writing them.
    fn rtn_error(&self, values: &[f32], weights: Weights<'_>, rtn: BlockParams) -> f64 {
        let (inverse, zero_point) = (reciprocal(rtn.scale), f32::from(rtn.zero_point));
        values
            .iter()
            .enumerate()
            .map(|(k, &value)| {
                let code = round_code(value * inverse + zero_point, self.max_code);
                weights.at(k) * squared_error(value, code, rtn)
            })
            .sum()
    }

    fn write_codes(&self, values: &[f32], reciprocal: f32, zero_point: f32, codes: &mut [u8]) {
        for (code, &value) in codes.iter_mut().zip(values) {
            *code = round_code(value * reciprocal + zero_point, self.max_code);
        }
    }
}

/// Quantizes one block with a fresh [`BlockSearch`]; for many blocks, make one search and
/// call [`BlockSearch::quantize`] with a reused code buffer instead.
pub fn search_block(
    values: &[f32],
    importance: &[f32],
    bits: u32,
    symmetric: bool,
) -> Result<BlockQuant, ImportanceError> {
    let search = BlockSearch::new(bits, symmetric)?;
    let mut codes = vec![0; values.len()];
    let BlockParams { scale, zero_point } = search.quantize(values, importance, &mut codes)?;
    Ok(BlockQuant { scale, zero_point, codes })
}

/// One candidate of the search: how its codes were rounded, the scale fitted to them and the
/// weighted error with that scale.
#[derive(Clone, Copy)]
struct Candidate {
    reciprocal: f32,
    zero_point: f32,
    scale: f32,
    error: f64,
}

/// The weight of each value in the error: the importances, or all ones when they are all 0.
#[derive(Clone, Copy)]
struct Weights<'a> {
    importance: &'a [f32],
    uniform: bool,
}

impl<'a> Weights<'a> {
    fn new(importance: &'a [f32]) -> Self {
        Weights { importance, uniform: importance.iter().all(|&w| w == 0.0) }
    }

    fn at(&self, k: usize) -> f64 {
        if self.uniform {
            1.0
        } else {
            f64::from(self.importance[k])
        }
    }
}

/// Checks that a block is not empty, its lengths agree and its numbers are usable.
fn check_block(
    values: &[f32],
    importance: Option<&[f32]>,
    codes: &[u8],
) -> Result<(), ImportanceError> {
    let importance_len = importance.map_or(values.len(), <[f32]>::len);
    if values.is_empty() || importance_len != values.len() || codes.len() != values.len() {
        let (values, codes) = (values.len(), codes.len());
        return Err(ImportanceError::Lengths { values, importance: importance_len, codes });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(ImportanceError::Weight { index, value: values[index] });
    }
    if let Some(index) =
        importance.and_then(|importance| importance.iter().position(|w| !w.is_finite() || *w < 0.0))
    {
        let value = importance.map_or(0.0, |importance| importance[index]);
        return Err(ImportanceError::Importance { index, value });
    }
    Ok(())
}

/// `1 / scale`, or 0 for a zero scale, as ORT's quantizer takes it.
fn reciprocal(scale: f32) -> f32 {
    if scale != 0.0 {
        1.0 / scale
    } else {
        0.0
    }
}

/// `round(x)` half away from zero, clamped to `0..=max_code`: the same code as `roundf` and a
/// clamp, in arithmetic the compiler can vectorise. Clamping first changes nothing, as the
/// bounds are whole numbers; for `x >= 0`, `x - trunc(x)` is exact.
fn round_code(x: f32, max_code: f32) -> u8 {
    let x = x.max(0.0).min(max_code);
    let whole = x as u32;
    (whole + u32::from(x - whole as f32 >= 0.5)) as u8
}

/// `sum_k w_k v_k^2`: the error of dequantizing everything to 0.
fn weighted_square_sum(values: &[f32], weights: Weights<'_>) -> f64 {
    values.iter().enumerate().map(|(k, &v)| weights.at(k) * f64::from(v) * f64::from(v)).sum()
}

/// `(v - dequant(code))^2`, dequantizing in float32 as ORT does.
fn squared_error(value: f32, code: u8, params: BlockParams) -> f64 {
    let dequantized = (f32::from(code) - f32::from(params.zero_point)) * params.scale;
    let difference = f64::from(value - dequantized);
    difference * difference
}

/// `sum_k w_k (v_k - dequant(code_k))^2`.
fn block_error(values: &[f32], weights: Weights<'_>, params: BlockParams, codes: &[u8]) -> f64 {
    values
        .iter()
        .zip(codes)
        .enumerate()
        .map(|(k, (&value, &code))| weights.at(k) * squared_error(value, code, params))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_code_is_roundf_then_clamp() {
        let mut x = -3.0f32;
        while x < 20.0 {
            for probe in [x, x.next_up(), x.next_down()] {
                let expected = probe.round().clamp(0.0, 15.0) as u8;
                assert_eq!(round_code(probe, 15.0), expected, "{probe}");
            }
            x += 0.25;
        }
        assert_eq!(round_code(0.49999997, 255.0), 0);
        assert_eq!(round_code(254.5, 255.0), 255);
        assert_eq!(round_code(1000.0, 255.0), 255);
    }

    #[test]
    fn rtn_follows_the_min_max_rule() {
        let search = BlockSearch::new(4, true).unwrap();
        let mut codes = [0; 3];
        // The extreme is -2: scale 0.25, and v / 0.25 + 8 gives the codes.
        let params = search.round_to_nearest(&[1.0, -2.0, 0.5], &mut codes).unwrap();
        assert_eq!(params, BlockParams { scale: 0.25, zero_point: 8 });
        assert_eq!(codes, [12, 0, 10]);

        // A tie in magnitude takes the minimum, so the scale is positive.
        let params = search.round_to_nearest(&[2.0, -2.0], &mut [0; 2]).unwrap();
        assert_eq!(params.scale, 0.25);

        let search = BlockSearch::new(4, false).unwrap();
        // Range [-1, 2] over 15 steps: scale 0.2, zero point round(5) = 5.
        let params = search.round_to_nearest(&[-1.0, 2.0, 0.3], &mut codes).unwrap();
        assert_eq!(params, BlockParams { scale: 3.0 / 15.0, zero_point: 5 });
        assert_eq!(codes, [0, 15, 7]);

        // Positive values still include 0 in the range, so the zero point is 0.
        let params = search.round_to_nearest(&[0.5, 1.5], &mut [0; 2]).unwrap();
        assert_eq!(params, BlockParams { scale: 0.1, zero_point: 0 });
    }

    #[test]
    fn an_all_zero_block_has_scale_zero_and_codes_at_the_zero_point() {
        for (symmetric, zero_point) in [(true, 8), (false, 0)] {
            let block = search_block(&[0.0; 5], &[1.0; 5], 4, symmetric).unwrap();
            assert_eq!(block.scale, 0.0);
            assert_eq!((block.zero_point, block.codes), (zero_point, vec![zero_point; 5]));
        }
    }

    #[test]
    fn bad_blocks_are_errors_that_say_what_is_wrong() {
        let error = search_block(&[1.0], &[1.0], 9, true).unwrap_err().to_string();
        assert!(error.contains("9 bits") && error.contains("2 to 8"), "{error}");

        let error = search_block(&[1.0, 2.0], &[1.0], 4, true).unwrap_err().to_string();
        assert!(error.contains("2 weights came with 1 importances"), "{error}");

        let error = search_block(&[], &[], 4, true).unwrap_err().to_string();
        assert!(error.contains("not zero"), "{error}");

        let error = search_block(&[1.0, f32::NAN], &[1.0; 2], 4, true).unwrap_err().to_string();
        assert!(error.contains("weight 1 of the block is NaN"), "{error}");

        let error = search_block(&[1.0, 2.0], &[1.0, -0.5], 4, false).unwrap_err().to_string();
        assert!(error.contains("importance 1 of the block is -0.5"), "{error}");
    }
}
