//! Fidelity: how closely a model's output follows the source model's output on the same
//! inputs, for models judged without labels (sentence encoders, detectors, regressors).
//!
//! The source model is run over the evaluation data once and its output kept as a
//! [`Reference`]; every candidate is then run over the same data, batch for batch, and
//! compared sample by sample. Each sample's output (its row along the first axis, flattened)
//! is one vector:
//!
//! - cosine similarity `a·b / (|a| |b|)`, averaged over samples (and its minimum); two zero
//!   vectors count as 1, one zero vector as 0, and a sample holding NaN or infinity on either
//!   side as 0;
//! - the largest absolute difference `max |a - b|` over every value (a NaN facing a number is
//!   an infinite difference, two NaNs are equal);
//! - the largest relative difference, per sample `max |a - b| / max |b|` with `b` the source's
//!   values, then the largest over samples;
//! - top-1 agreement: the share of rows along the output's last axis (every position of every
//!   sample) whose largest value is at the same index in both, with ties and NaN as
//!   `numpy.argmax` takes them. It is absent for outputs with one value per row.

use std::sync::atomic::AtomicBool;

use super::metrics::{argmax, as_f64, for_each_batch, EvalError, Rows};
use super::Dataset;
use crate::runtime::{InferenceSession, Tensor};

/// The most bytes the source model's output on the evaluation data may take in memory.
pub const MAX_REFERENCE_BYTES: usize = 1 << 30;

/// The source model's output on the whole evaluation data, kept to compare candidates with.
#[derive(Debug, Clone)]
pub struct Reference {
    output: String,
    /// The shape of one sample's output (the output's shape without its first axis).
    row_shape: Vec<usize>,
    /// Every sample's output, flattened, one after the other.
    values: Vec<f64>,
}

/// How closely a model's output follows the source's, as described in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fidelity {
    /// Mean cosine similarity over samples.
    pub cosine_mean: f64,
    /// The lowest cosine similarity of any sample.
    pub cosine_min: f64,
    /// The largest absolute difference of any value.
    pub max_abs_error: f64,
    /// The largest relative difference of any sample.
    pub max_rel_error: f64,
    /// The share of rows whose argmax agrees; absent for one value per row.
    pub top1_agreement: Option<f64>,
}

impl Reference {
    /// The output the reference holds.
    pub fn output(&self) -> &str {
        &self.output
    }

    fn row_len(&self) -> usize {
        self.row_shape.iter().product()
    }

    fn samples(&self) -> usize {
        self.values.len().checked_div(self.row_len()).unwrap_or(0)
    }
}

/// Runs `session` (the source model) over the evaluation data and keeps its `output`.
pub fn reference_outputs(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    output: &str,
    batch: usize,
    stop: &AtomicBool,
) -> Result<Reference, EvalError> {
    let mut row_shape: Option<Vec<usize>> = None;
    let mut values = Vec::new();

    for_each_batch(session, dataset, output, batch, stop, |session, rows, tensor| {
        let shape = sample_shape(session, output, rows, &tensor)?;
        if let Some(known) = &row_shape {
            if *known != shape {
                return Err(bad_output(
                    session,
                    output,
                    format!(
                        "changes its shape per sample from {known:?} to {shape:?} between \
                             batches; fidelity compares outputs of one shape"
                    ),
                ));
            }
        }
        let row_len: usize = shape.iter().product();
        let bytes = (values.len() + rows.real * row_len) * std::mem::size_of::<f64>();
        if bytes > MAX_REFERENCE_BYTES {
            return Err(EvalError::ReferenceTooLarge {
                output: output.to_string(),
                limit: MAX_REFERENCE_BYTES,
            });
        }
        let flat = as_f64(&tensor);
        values.extend(flat.iter().take(rows.real * row_len));
        row_shape = Some(shape);
        Ok(())
    })?;

    let row_shape = row_shape.unwrap_or_default();
    Ok(Reference { output: output.to_string(), row_shape, values })
}

/// Runs `session` over the evaluation data and compares its output with `reference`.
pub fn fidelity(
    session: &mut dyn InferenceSession,
    dataset: &Dataset,
    reference: &Reference,
    batch: usize,
    stop: &AtomicBool,
) -> Result<Fidelity, EvalError> {
    let output = reference.output.as_str();
    let row_len = reference.row_len();
    let classes = reference.row_shape.last().copied().unwrap_or(1);
    let mut sums = Sums::default();

    for_each_batch(session, dataset, output, batch, stop, |session, rows, tensor| {
        let shape = sample_shape(session, output, rows, &tensor)?;
        if shape != reference.row_shape {
            return Err(bad_output(
                session,
                output,
                format!(
                    "has shape {shape:?} per sample where the source model's has {:?}",
                    reference.row_shape
                ),
            ));
        }
        if rows.start + rows.real > reference.samples() {
            return Err(bad_output(session, output, "has more samples than the source's".into()));
        }
        let flat = as_f64(&tensor);
        let ours: Vec<f64> = flat.iter().take(rows.real * row_len).copied().collect();
        let theirs = &reference.values[rows.start * row_len..(rows.start + rows.real) * row_len];
        for (a, b) in ours.chunks(row_len.max(1)).zip(theirs.chunks(row_len.max(1))) {
            sums.add_sample(a, b, classes);
        }
        Ok(())
    })?;

    Ok(sums.finish())
}

/// The running totals of a comparison.
#[derive(Debug, Default)]
struct Sums {
    samples: usize,
    cosine_total: f64,
    cosine_min: Option<f64>,
    max_abs: f64,
    max_rel: f64,
    rows: usize,
    agreeing: usize,
}

impl Sums {
    /// Adds one sample: `ours` against the source's `theirs`, rows of `classes` values.
    fn add_sample(&mut self, ours: &[f64], theirs: &[f64], classes: usize) {
        let cosine = cosine(ours, theirs);
        self.samples += 1;
        self.cosine_total += cosine;
        self.cosine_min = Some(self.cosine_min.map_or(cosine, |min| min.min(cosine)));

        let abs = ours.iter().zip(theirs).map(|(&a, &b)| difference(a, b)).fold(0.0, f64::max);
        let scale = theirs.iter().map(|b| b.abs()).fold(0.0, f64::max);
        let rel = if abs == 0.0 {
            0.0
        } else if scale == 0.0 || scale.is_nan() {
            f64::INFINITY
        } else {
            abs / scale
        };
        self.max_abs = self.max_abs.max(abs);
        self.max_rel = self.max_rel.max(rel);

        if classes >= 2 {
            for (a, b) in ours.chunks(classes).zip(theirs.chunks(classes)) {
                self.rows += 1;
                self.agreeing += usize::from(argmax(a) == argmax(b));
            }
        }
    }

    fn finish(self) -> Fidelity {
        let samples = self.samples.max(1) as f64;
        Fidelity {
            cosine_mean: self.cosine_total / samples,
            cosine_min: self.cosine_min.unwrap_or(1.0),
            max_abs_error: self.max_abs,
            max_rel_error: self.max_rel,
            top1_agreement: (self.rows > 0).then(|| self.agreeing as f64 / self.rows as f64),
        }
    }
}

/// Cosine similarity of two vectors, with the edge cases the module docs give.
fn cosine(a: &[f64], b: &[f64]) -> f64 {
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return 0.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm_a = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm_b = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    match (norm_a == 0.0, norm_b == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        (false, false) => (dot / (norm_a * norm_b)).clamp(-1.0, 1.0),
    }
}

/// `|a - b|`, where a NaN facing a number is infinitely far and two NaNs are equal.
fn difference(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => 0.0,
        (true, false) | (false, true) => f64::INFINITY,
        (false, false) => (a - b).abs(),
    }
}

/// The shape of one sample's output, after checking the output has one row per fed sample.
fn sample_shape(
    session: &dyn InferenceSession,
    output: &str,
    rows: Rows,
    tensor: &Tensor,
) -> Result<Vec<usize>, EvalError> {
    let shape = tensor.shape();
    if shape.first() != Some(&rows.fed) {
        return Err(bad_output(
            session,
            output,
            format!(
                "has shape {shape:?} for a batch of {}; fidelity needs one row per sample \
                     along the first axis",
                rows.fed
            ),
        ));
    }
    Ok(shape[1..].to_vec())
}

fn bad_output(session: &dyn InferenceSession, output: &str, problem: String) -> EvalError {
    EvalError::BadOutput {
        model: session.path().to_path_buf(),
        output: output.to_string(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(ours: &[f64], theirs: &[f64], classes: usize) -> Fidelity {
        let mut sums = Sums::default();
        sums.add_sample(ours, theirs, classes);
        sums.finish()
    }

    #[test]
    fn cosine_matches_the_formula_and_its_edge_cases() {
        // a·b = 1*2 + 2*0 + 2*1 = 4; |a| = 3; |b| = sqrt(5).
        let expected = 4.0 / (3.0 * 5f64.sqrt());
        assert!((cosine(&[1.0, 2.0, 2.0], &[2.0, 0.0, 1.0]) - expected).abs() < 1e-15);
        assert!((cosine(&[1.0, -1.0], &[-1.0, 1.0]) + 1.0).abs() < 1e-15);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[f64::NAN, 1.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn errors_are_absolute_and_relative_to_the_source() {
        let found = compare(&[1.0, 2.5, -4.0], &[1.0, 2.0, -3.0], 3);

        assert_eq!(found.max_abs_error, 1.0);
        // The largest difference (1) over the source's largest magnitude (3).
        assert!((found.max_rel_error - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(found.top1_agreement, Some(1.0), "argmax is index 1 in both");
    }

    #[test]
    fn top1_agreement_counts_rows_along_the_last_axis() {
        // Two rows of three: the first agrees (index 2), the second does not (0 against 1).
        let found = compare(&[0.0, 1.0, 5.0, 9.0, 1.0, 0.0], &[0.0, 1.0, 4.0, 1.0, 9.0, 0.0], 3);
        assert_eq!(found.top1_agreement, Some(0.5));

        let single = compare(&[1.0, 2.0], &[1.0, 2.0], 1);
        assert_eq!(single.top1_agreement, None, "one value per row has no argmax to agree on");
    }

    #[test]
    fn nan_where_the_source_has_a_number_is_an_infinite_error() {
        let found = compare(&[f64::NAN, 1.0], &[0.5, 1.0], 2);
        assert_eq!(found.max_abs_error, f64::INFINITY);
        assert_eq!(found.cosine_mean, 0.0);

        let same = compare(&[f64::NAN, 1.0], &[f64::NAN, 1.0], 2);
        assert_eq!(same.max_abs_error, 0.0);
    }

    #[test]
    fn a_source_of_zeros_makes_any_difference_infinitely_relative() {
        assert_eq!(compare(&[0.1], &[0.0], 1).max_rel_error, f64::INFINITY);
        assert_eq!(compare(&[0.0], &[0.0], 1).max_rel_error, 0.0);
    }
}
