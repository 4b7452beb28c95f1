//! The importance-weighted block search of `quantize::importance` against references computed
//! here: ORT's round-to-nearest (RTN) rule written out from its formulas, the weighted error
//! of a block, and the least-squares scale of a set of codes. Thousands of random blocks
//! (normal, heavy-tailed, with outliers) at 4 and 8 bits, symmetric and not, must never be
//! worse than RTN and must beat it on average where the tails are heavy; a skewed importance
//! must buy the important columns lower error. `collect` is checked against means computed
//! here from the values a scripted runner hands out, and for the errors a user can meet.

#[path = "common/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::sync::Mutex;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use pipeline_passes::ir::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::pass::{ModelRunner, RunnerError};
use pipeline_passes::quantize::importance::{collect, search_block, BlockSearch};
use rng::Rng;

/// ORT's RTN quantization of one block, from the formulas: `(scale, zero_point, codes)`.
fn reference_rtn(values: &[f32], bits: u32, symmetric: bool) -> (f32, u8, Vec<u8>) {
    let max_code = ((1u32 << bits) - 1) as f32;
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (scale, zero_point) = if symmetric {
        let extreme = if max.abs() > min.abs() { max } else { min };
        (extreme / -((1u32 << (bits - 1)) as f32), (1u32 << (bits - 1)) as f32)
    } else {
        let (low, high) = (min.min(0.0), max.max(0.0));
        let scale = (high - low) / max_code;
        let zero_point =
            if scale == 0.0 { 0.0 } else { (-low / scale).round().clamp(0.0, max_code) };
        (scale, zero_point)
    };
    let inverse = if scale == 0.0 { 0.0 } else { 1.0 / scale };
    let codes =
        values.iter().map(|v| (v * inverse + zero_point).round().clamp(0.0, max_code) as u8);
    (scale, zero_point as u8, codes.collect())
}

/// The weights the error uses: the importances, or ones where they are all zero.
fn weights(importance: &[f32]) -> Vec<f64> {
    if importance.iter().all(|&w| w == 0.0) {
        vec![1.0; importance.len()]
    } else {
        importance.iter().map(|&w| f64::from(w)).collect()
    }
}

fn dequantize(code: u8, zero_point: u8, scale: f32) -> f32 {
    (f32::from(code) - f32::from(zero_point)) * scale
}

/// `sum_k w_k (v_k - dequant(q_k))^2`, dequantizing in float32.
fn weighted_error(values: &[f32], importance: &[f32], scale: f32, zp: u8, codes: &[u8]) -> f64 {
    let weights = weights(importance);
    let terms = values.iter().zip(codes).zip(&weights);
    terms.map(|((&v, &q), &w)| w * f64::from(v - dequantize(q, zp, scale)).powi(2)).sum()
}

/// The scale that minimises the weighted error for fixed codes and zero point.
fn least_squares_scale(values: &[f32], importance: &[f32], zp: u8, codes: &[u8]) -> f64 {
    let weights = weights(importance);
    let (mut cross, mut square) = (0.0, 0.0);
    for ((&v, &q), &w) in values.iter().zip(codes).zip(&weights) {
        let step = f64::from(q) - f64::from(zp);
        cross += w * step * f64::from(v);
        square += w * step * step;
    }
    cross / square
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Normal,
    /// Student's t with 3 degrees of freedom.
    HeavyTailed,
    /// Normal, with one value in 32 eight times larger.
    Outliers,
}

fn block(rng: &mut Rng, shape: Shape, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let normal = rng.normal();
            let value = match shape {
                Shape::Normal => normal,
                Shape::HeavyTailed => {
                    let chi2: f64 = (0..3).map(|_| rng.normal().powi(2)).sum();
                    normal / (chi2 / 3.0).sqrt()
                }
                Shape::Outliers if rng.uniform() < 1.0 / 32.0 => 8.0 * normal,
                Shape::Outliers => normal,
            };
            (0.05 * value) as f32
        })
        .collect()
}

/// Runs the search on `count` blocks and checks each against the references; returns the
/// mean over blocks of (search error / RTN error).
fn mean_ratio(
    rng: &mut Rng,
    shape: Shape,
    bits: u32,
    symmetric: bool,
    count: usize,
    importance_of: &mut dyn FnMut(&mut Rng, usize) -> Vec<f32>,
) -> f64 {
    let search = BlockSearch::new(bits, symmetric).unwrap();
    let sizes = [16, 32, 64, 128, 256];
    let mut ratios = 0.0;
    let mut codes = Vec::new();
    for i in 0..count {
        let len = sizes[i % sizes.len()];
        let values = block(rng, shape, len);
        let importance = importance_of(rng, len);
        codes.resize(len, 0);
        let params = search.quantize(&values, &importance, &mut codes).unwrap();
        let case = format!("{shape:?} bits {bits} symmetric {symmetric} block {i}");

        let (rtn_scale, rtn_zp, rtn_codes) = reference_rtn(&values, bits, symmetric);
        let rtn = weighted_error(&values, &importance, rtn_scale, rtn_zp, &rtn_codes);
        let ours = weighted_error(&values, &importance, params.scale, params.zero_point, &codes);
        assert!(ours <= rtn, "{case}: {ours} > RTN's {rtn}");
        assert!(codes.iter().all(|&q| u32::from(q) < 1 << bits), "{case}: {codes:?}");
        if symmetric {
            assert_eq!(params.zero_point, 1 << (bits - 1), "{case}");
        }

        // Either RTN itself, or codes with the scale that fits them best.
        if ours == rtn && params.scale == rtn_scale {
            assert_eq!((params.zero_point, codes.as_slice()), (rtn_zp, rtn_codes.as_slice()));
        } else {
            let fitted = least_squares_scale(&values, &importance, params.zero_point, &codes);
            let gap = (f64::from(params.scale) - fitted).abs();
            assert!(gap <= 1e-6 * fitted.abs(), "{case}: scale {} not {fitted}", params.scale);
        }
        ratios += if rtn > 0.0 { ours / rtn } else { 1.0 };
    }
    ratios / count as f64
}

fn ones(_: &mut Rng, len: usize) -> Vec<f32> {
    vec![1.0; len]
}

/// Log-normal importances, spread as mean squared activations of transformer layers are.
fn log_normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| (1.5 * rng.normal()).exp() as f32).collect()
}

#[test]
fn the_search_is_never_worse_than_rtn_and_better_on_heavy_tails() {
    let mut rng = Rng::new(5);
    let mut report = BTreeMap::new();
    for bits in [4, 8] {
        for symmetric in [true, false] {
            for shape in [Shape::Normal, Shape::HeavyTailed, Shape::Outliers] {
                for (weighting, importance) in [
                    ("uniform", &mut ones as &mut dyn FnMut(&mut Rng, usize) -> Vec<f32>),
                    ("log-normal", &mut log_normal),
                ] {
                    let ratio = mean_ratio(&mut rng, shape, bits, symmetric, 1000, importance);
                    let key = format!("{bits}-bit {:<10} {shape:<12?} {weighting}", sym(symmetric));
                    report.insert(key, ratio);
                }
            }
        }
    }
    for (case, ratio) in &report {
        println!("mean error ratio vs RTN, {case}: {ratio:.3}");
    }

    // Heavy tails stretch the min/max range over values that are mostly small: a narrower
    // range must pay off clearly at 4 bits and measurably at 8. (Measured: 0.88 to 0.91 at 4
    // bits and 0.94 to 0.99 at 8 with uniform weights, 0.72 to 0.89 with log-normal ones.)
    for (case, ratio) in &report {
        let bound = if case.starts_with("4-bit") { 0.95 } else { 0.99 };
        if case.contains("HeavyTailed") || case.contains("Outliers") {
            assert!(*ratio < bound, "{case}: {ratio}");
        }
        assert!(*ratio < 1.0, "{case}: {ratio}");
    }
}

fn sym(symmetric: bool) -> &'static str {
    if symmetric {
        "symmetric"
    } else {
        "asymmetric"
    }
}

#[test]
fn important_columns_get_lower_error_than_rtn_gives_them() {
    // One column in eight carries nearly all the weight of the error.
    let mut rng = Rng::new(9);
    let len = 64;
    let importance: Vec<f32> = (0..len).map(|k| if k % 8 == 0 { 100.0 } else { 0.1 }).collect();
    for (bits, symmetric) in [(4, true), (4, false), (8, true)] {
        let (mut ours, mut rtn) = (0.0, 0.0);
        for _ in 0..2000 {
            let values = block(&mut rng, Shape::Normal, len);
            let block = search_block(&values, &importance, bits, symmetric).unwrap();
            let (scale, zp, codes) = reference_rtn(&values, bits, symmetric);
            for k in (0..len).step_by(8) {
                let error = |q, zp, scale| f64::from(values[k] - dequantize(q, zp, scale)).powi(2);
                ours += error(block.codes[k], block.zero_point, block.scale);
                rtn += error(codes[k], zp, scale);
            }
        }
        println!(
            "{bits}-bit {}: important columns' error vs RTN {:.3}",
            sym(symmetric),
            ours / rtn
        );
        assert!(ours < 0.8 * rtn, "bits {bits} symmetric {symmetric}: {ours} vs RTN's {rtn}");
    }
}

#[test]
fn zero_importance_weighs_every_value_alike() {
    let mut rng = Rng::new(3);
    for symmetric in [true, false] {
        for _ in 0..200 {
            let values = block(&mut rng, Shape::HeavyTailed, 32);
            let zeros = search_block(&values, &[0.0; 32], 4, symmetric).unwrap();
            let ones = search_block(&values, &[1.0; 32], 4, symmetric).unwrap();
            assert_eq!(zeros, ones);
        }
    }
}

#[test]
fn round_to_nearest_is_orts_rule() {
    let mut rng = Rng::new(21);
    for bits in [2, 4, 8] {
        for symmetric in [true, false] {
            let search = BlockSearch::new(bits, symmetric).unwrap();
            for i in 0..500 {
                let values = block(&mut rng, Shape::Outliers, 16 + i % 113);
                let mut codes = vec![0; values.len()];
                let params = search.round_to_nearest(&values, &mut codes).unwrap();
                let (scale, zp, expected) = reference_rtn(&values, bits, symmetric);
                assert_eq!((params.scale.to_bits(), params.zero_point), (scale.to_bits(), zp));
                assert_eq!(codes, expected);
            }
        }
    }
}

/// Hands out fixed arrays for the names it is asked for, batch by batch, and records the
/// names.
struct ScriptedRunner {
    batches: Vec<BTreeMap<String, ArrayD<f32>>>,
    asked: Mutex<Vec<String>>,
}

impl ScriptedRunner {
    fn new(batches: Vec<BTreeMap<String, ArrayD<f32>>>) -> Self {
        ScriptedRunner { batches, asked: Mutex::new(Vec::new()) }
    }
}

impl ModelRunner for ScriptedRunner {
    fn samples(&self) -> usize {
        self.batches.len()
    }

    fn for_each_batch(
        &self,
        _model: &ModelProto,
        outputs: &[String],
        visit: &mut pipeline_passes::pass::BatchVisitor<'_>,
    ) -> Result<(), RunnerError> {
        *self.asked.lock().unwrap() = outputs.to_vec();
        for batch in &self.batches {
            for (index, name) in outputs.iter().enumerate() {
                let values = batch.get(name).ok_or_else(|| RunnerError(format!("no `{name}`")))?;
                // `t` comes transposed, a view that is not in standard layout.
                let view = if name == "t" { values.view().reversed_axes() } else { values.view() };
                visit(index, view).map_err(RunnerError)?;
            }
        }
        Ok(())
    }
}

/// `x [?, 3, 6] -> Relu -> r -> MatMul(W [6, 4]) -> y`, plus `t` (another float value) and
/// `i` (an int64 Cast of `x`) as node outputs.
fn model() -> ModelProto {
    let mut rng = Rng::new(1);
    let mut cast = ir::make_node("Cast", &["x"], &["i"], "cast");
    cast.attribute.push(ir::attr_int("to", 7));
    let graph = GraphProto {
        name: Some("importance".into()),
        node: vec![
            ir::make_node("Relu", &["x"], &["r"], "relu"),
            ir::make_node("MatMul", &["r", "W"], &["y"], "matmul"),
            ir::make_node("Neg", &["x"], &["t"], "neg"),
            cast,
        ],
        initializer: vec![ir::tensor_from_f32("W", &rng.normal_array(&[6, 4], 1.0))],
        input: vec![float_value_info("x", &[-1, 3, 6])],
        output: vec![float_value_info("y", &[-1, 3, 4])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// The mean of `x^2` per last-axis column over every row of `arrays`, in f64.
fn mean_squares<'a>(arrays: impl Iterator<Item = ArrayViewD<'a, f32>>) -> Vec<f64> {
    let (mut sums, mut rows) = (Vec::new(), 0usize);
    for array in arrays {
        let columns = *array.shape().last().unwrap();
        sums.resize(columns, 0.0);
        for row in array.to_shape((array.len() / columns, columns)).unwrap().rows() {
            rows += 1;
            for (sum, &x) in sums.iter_mut().zip(row) {
                *sum += f64::from(x).powi(2);
            }
        }
    }
    sums.into_iter().map(|sum| sum / rows as f64).collect()
}

#[test]
fn collect_takes_the_mean_square_of_every_column_over_all_rows() {
    let mut rng = Rng::new(17);
    // Batches of different sizes; `t` is stored [6, 2, b] and handed out transposed.
    let batches: Vec<BTreeMap<String, ArrayD<f32>>> = [1, 3, 2]
        .iter()
        .map(|&b| {
            let r = rng.normal_array(&[b, 3, 6], 1.0).mapv(|v| v.max(0.0));
            let t = rng.normal_array(&[6, 2, b], 2.0);
            [("r".to_string(), r), ("t".to_string(), t)].into()
        })
        .collect();
    let runner = ScriptedRunner::new(batches.clone());

    let names = ["t", "r", "t"].map(String::from);
    let means = collect(&model(), &names, &runner).unwrap();
    assert_eq!(*runner.asked.lock().unwrap(), ["t", "r"]);

    let expected_r = mean_squares(batches.iter().map(|b| b["r"].view()));
    let transposed = batches.iter().map(|b| b["t"].view().reversed_axes().to_owned());
    let transposed: Vec<ArrayD<f32>> = transposed.collect();
    let expected_t = mean_squares(transposed.iter().map(|t| t.view()));
    assert_eq!(means.len(), 3);
    for (ours, expected) in
        [(&means[0], &expected_t), (&means[1], &expected_r), (&means[2], &expected_t)]
    {
        assert_eq!(ours.len(), expected.len());
        for (a, b) in ours.iter().zip(expected) {
            assert!((f64::from(*a) - b).abs() <= 1e-6 * b, "{ours:?} vs {expected:?}");
        }
    }
}

#[test]
fn collect_names_the_value_with_nan_or_the_wrong_type_or_shape() {
    let nan = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, f32::NAN]).unwrap();
    let runner = ScriptedRunner::new(vec![[("r".to_string(), nan)].into()]);
    let error = collect(&model(), &["r".into()], &runner).unwrap_err().to_string();
    assert!(error.contains("`r` holds NaN or Inf in batch 0"), "{error}");

    let runner = ScriptedRunner::new(vec![BTreeMap::new()]);
    let error = collect(&model(), &["i".into()], &runner).unwrap_err().to_string();
    assert!(error.contains("`i` is INT64") && error.contains("float32"), "{error}");
    assert!(runner.asked.lock().unwrap().is_empty(), "nothing runs");

    let error = collect(&model(), &["nowhere".into()], &runner).unwrap_err().to_string();
    assert!(error.contains("`nowhere` is not an input or a node output"), "{error}");

    let scalar = ArrayD::from_elem(IxDyn(&[]), 1.0);
    let runner = ScriptedRunner::new(vec![[("r".to_string(), scalar)].into()]);
    let error = collect(&model(), &["r".into()], &runner).unwrap_err().to_string();
    assert!(error.contains("`r` is a scalar in batch 0"), "{error}");

    let columns = |n| ArrayD::zeros(IxDyn(&[2, n]));
    let runner = ScriptedRunner::new(vec![
        [("r".to_string(), columns(6))].into(),
        [("r".to_string(), columns(5))].into(),
    ]);
    let error = collect(&model(), &["r".into()], &runner).unwrap_err().to_string();
    assert!(error.contains("`r` has 5 columns (last axis) in batch 1 but 6"), "{error}");

    let runner =
        ScriptedRunner::new(vec![[("r".to_string(), ArrayD::zeros(IxDyn(&[0, 6])))].into()]);
    let error = collect(&model(), &["r".into()], &runner).unwrap_err().to_string();
    assert!(error.contains("`r` held no values in any batch"), "{error}");

    let error = collect(&model(), &["r".into()], &ScriptedRunner::new(vec![])).unwrap_err();
    assert!(error.to_string().contains("no samples"), "{error}");
}

#[test]
fn collect_reads_the_rows_of_rank_one_values() {
    let row = |values: &[f32]| ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec());
    let runner = ScriptedRunner::new(vec![
        [("r".to_string(), row(&[1.0, -2.0, 0.0]).unwrap())].into(),
        [("r".to_string(), row(&[3.0, 0.0, 0.5]).unwrap())].into(),
    ]);
    let means = collect(&model(), &["r".into()], &runner).unwrap();
    assert_eq!(means, [vec![5.0, 2.0, 0.125]]);
}
