//! `quantize::importance::collect` on a model that ONNX Runtime really runs, through the
//! engine's `OrtRunner`: the mean squared activation of each column of a MatMul's input (after
//! a Relu, so ORT computes it) against the same means computed here from the samples, in
//! batches of several samples of a rank-3 input; and a NaN in the data named in the error.

// Only the library path is used here, not the venv's Python.
#[allow(dead_code)]
#[path = "common/paths.rs"]
mod paths;
#[path = "../passes/tests/common/rng.rs"]
mod rng;

use std::fs::File;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;
use pipeline::calibrate::OrtRunner;
use pipeline::evaluate::Dataset;
use pipeline::runtime::{self, Threads};
use pipeline_passes::ir::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::quantize::importance::collect;
use rng::Rng;

const SAMPLES: usize = 10;
const ROWS: usize = 5;
const COLUMNS: usize = 8;

/// `x [?, 5, 8] -> Add(shift) -> s -> Relu -> r -> MatMul(W [8, 3]) -> y`.
fn model() -> ModelProto {
    let mut rng = Rng::new(2);
    let weights = ArrayD::from_shape_simple_fn(IxDyn(&[COLUMNS, 3]), || rng.normal() as f32);
    let shift = ArrayD::from_shape_fn(IxDyn(&[COLUMNS]), |i| i[0] as f32 * 0.1 - 0.05);
    let graph = GraphProto {
        name: Some("importance_ort".into()),
        node: vec![
            ir::make_node("Add", &["x", "shift"], &["s"], "add"),
            ir::make_node("Relu", &["s"], &["r"], "relu"),
            ir::make_node("MatMul", &["r", "W"], &["y"], "matmul"),
        ],
        initializer: vec![ir::tensor_from_f32("W", &weights), ir::tensor_from_f32("shift", &shift)],
        input: vec![float_value_info("x", &[-1, ROWS as i64, COLUMNS as i64])],
        output: vec![float_value_info("y", &[-1, ROWS as i64, 3])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn samples() -> ArrayD<f32> {
    let mut rng = Rng::new(7);
    ArrayD::from_shape_fn(IxDyn(&[SAMPLES, ROWS, COLUMNS]), |i| {
        // Columns spread from small to large, so the means differ by orders of magnitude.
        (rng.normal() * (1.0 + i[2] as f64).powi(2) * 0.1) as f32
    })
}

fn runner(dir: &Path, x: &ArrayD<f32>) -> OrtRunner {
    let path = dir.join("calib.npz");
    let mut npz = NpzWriter::new(File::create(&path).unwrap());
    npz.add_array("x", x).unwrap();
    npz.finish().unwrap();
    OrtRunner::new(Dataset::load(&path, None, None).unwrap(), Threads::default()).with_batch_size(4)
}

#[test]
fn collect_matches_means_computed_from_the_samples() {
    runtime::init(Some(&paths::ort_library())).expect("onnx runtime loads");
    let dir = tempfile::tempdir().unwrap();
    let x = samples();
    let runner = runner(dir.path(), &x);

    let means = collect(&model(), &["r".into(), "x".into()], &runner).unwrap();

    let shift = |k: usize| k as f32 * 0.1 - 0.05;
    let mut expected_r = [0.0f64; COLUMNS];
    let mut expected_x = [0.0f64; COLUMNS];
    for ((_, _, k), &v) in x.view().into_dimensionality::<ndarray::Ix3>().unwrap().indexed_iter() {
        let relu = (v + shift(k)).max(0.0);
        expected_r[k] += f64::from(relu).powi(2);
        expected_x[k] += f64::from(v).powi(2);
    }
    let rows = (SAMPLES * ROWS) as f64;
    for (ours, expected, name) in [(&means[0], expected_r, "r"), (&means[1], expected_x, "x")] {
        assert_eq!(ours.len(), COLUMNS, "{name}");
        for (k, (&ours, expected)) in ours.iter().zip(expected).enumerate() {
            let expected = expected / rows;
            assert!(expected > 0.0, "{name} column {k} is never active");
            let gap = (f64::from(ours) - expected).abs();
            assert!(gap <= 1e-6 * expected, "{name} column {k}: {ours} vs {expected}");
        }
    }
}

#[test]
fn nan_in_the_data_is_named() {
    runtime::init(Some(&paths::ort_library())).expect("onnx runtime loads");
    let dir = tempfile::tempdir().unwrap();
    let mut x = samples();
    x[[6, 2, 3]] = f32::NAN;
    let runner = runner(dir.path(), &x);

    let error = collect(&model(), &["x".into()], &runner).unwrap_err().to_string();
    // Sample 6 is in the second batch of four.
    assert!(error.contains("`x` holds NaN or Inf in batch 1"), "{error}");
}
