//! `quantize_weights` with `data_aware: true`, end to end through ONNX Runtime: the column
//! importances come from the engine's `OrtRunner` on calibration data whose input columns
//! differ in scale by orders of magnitude (as activations of real models do), and the model
//! ORT runs must (1) compute `x @ dequantize(B)` of the codes and scales the search chose, and
//! (2) be closer to the float model, on held-out data, than the same pass without the data.
//! A run without calibration data is refused with a hint.

mod fusion_support;
#[path = "../passes/tests/quantize_weights_support/mod.rs"]
mod support;

use std::fs::File;
use std::path::Path;

use fusion_support::{run_model, Rng};
use ndarray::ArrayD;
use ndarray_npy::NpzWriter;
use pipeline::calibrate::OrtRunner;
use pipeline::evaluate::Dataset;
use pipeline::runtime::{self, Tensor, Threads};
use pipeline_passes::ir::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::pass::{self, ModelRunner, PassContext};
use serde_json::json;
use support::{nodes, NBits, Qdq};

const K: usize = 256;
const N: usize = 16;
const SAMPLES: usize = 48;

/// `x [?, K] -> MatMul(W [K, N]) -> y`, opset 21 so that both formats apply.
fn model(w: &ArrayD<f32>) -> ModelProto {
    let graph = GraphProto {
        name: Some("data_aware".into()),
        node: vec![ir::make_node("MatMul", &["x", "W"], &["y"], "fc")],
        initializer: vec![ir::tensor_from_f32("W", w)],
        input: vec![float_value_info("x", &[-1, K as i64])],
        output: vec![float_value_info("y", &[-1, N as i64])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(21) }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// Samples whose column k has the scale `column_scales[k]`.
fn samples(rng: &mut Rng, column_scales: &[f32]) -> ArrayD<f32> {
    let mut x = rng.normal_array(&[SAMPLES, K], 1.0);
    for mut row in x.rows_mut() {
        for (v, s) in row.iter_mut().zip(column_scales) {
            *v *= s;
        }
    }
    x
}

fn runner(dir: &Path, x: &ArrayD<f32>) -> OrtRunner {
    let path = dir.join("calibration.npz");
    let mut npz = NpzWriter::new(File::create(&path).unwrap());
    npz.add_array("x", x).unwrap();
    npz.finish().unwrap();
    OrtRunner::new(Dataset::load(&path, None, None).unwrap(), Threads::default()).with_batch_size(8)
}

fn quantize(model: &ModelProto, config: serde_json::Value, runner: Option<&OrtRunner>) -> String {
    let info = pass::find("quantize_weights").unwrap();
    let pass = (info.build)(&config).unwrap();
    let context = PassContext {
        calibration: runner.map(|r| r as &dyn ModelRunner),
        ..PassContext::default()
    };
    match pass.run(model.clone(), &context) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn run_quantize(model: &ModelProto, config: serde_json::Value, runner: &OrtRunner) -> ModelProto {
    let info = pass::find("quantize_weights").unwrap();
    let pass = (info.build)(&config).unwrap();
    let context = PassContext { calibration: Some(runner), ..PassContext::default() };
    pass.run(model.clone(), &context).unwrap()
}

fn f32_values(outputs: &[(String, Tensor)]) -> Vec<f32> {
    match &outputs[0].1 {
        Tensor::F32(values) => values.iter().copied().collect(),
        other => panic!("output is {:?}", other.elem()),
    }
}

/// `x [S, K] @ w [K, N]` (both row-major), in f64.
fn product(x: &[f32], w: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; x.len() / K * N];
    for (s, row) in x.chunks(K).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            for n in 0..N {
                y[s * N + n] += f64::from(v) * f64::from(w[k * N + n]);
            }
        }
    }
    y
}

fn mean_squared_error(got: &[f32], expected: &[f64]) -> f64 {
    let total: f64 = got.iter().zip(expected).map(|(&g, &e)| (f64::from(g) - e).powi(2)).sum();
    total / expected.len() as f64
}

#[test]
fn data_aware_scales_bring_the_output_closer_to_float() {
    runtime::init(Some(&fusion_support::ort_library())).expect("onnx runtime loads");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(41);
    // Heavy-tailed weights: normal times a per-weight log-normal factor.
    let w = rng.normal_array(&[K, N], 0.05);
    let tails = rng.normal_array(&[K, N], 0.8);
    let w = ndarray::Zip::from(&w).and(&tails).map_collect(|&v, &t| v * t.exp());
    // Input columns whose scales span about three orders of magnitude.
    let column_scales: Vec<f32> = rng.normal_array(&[K], 1.5).iter().map(|&v| v.exp()).collect();
    let calibration = samples(&mut rng, &column_scales);
    let held_out = samples(&mut rng, &column_scales);
    let runner = runner(dir.path(), &calibration);
    let source = model(&w);

    let x: Vec<f32> = held_out.iter().copied().collect();
    let float_y = product(&x, &w.iter().copied().collect::<Vec<_>>());
    let inputs = vec![("x".to_string(), Tensor::F32(held_out.clone()))];

    for format in ["matmul_nbits", "qdq"] {
        for bits in [4u32, 8] {
            for symmetric in [true, false] {
                let case = format!("{format} bits={bits} symmetric={symmetric}");
                let mut errors = Vec::new();
                for data_aware in [false, true] {
                    let config = json!({"bits": bits, "block_size": 32, "symmetric": symmetric,
                        "format": format, "data_aware": data_aware});
                    let ours = run_quantize(&source, config, &runner);
                    let dequantized = match format {
                        "qdq" => {
                            Qdq::read(&ours, nodes(&ours, "DequantizeLinear")[0]).dequantized()
                        }
                        _ => NBits::read(&ours, nodes(&ours, "MatMulNBits")[0]).dequantized(),
                    };
                    let got = f32_values(&run_model(dir.path(), "q.onnx", &ours, &inputs));

                    // ORT computes the product with the codes and scales that were written.
                    let expected = product(&x, &dequantized);
                    let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
                    for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                        let gap = (f64::from(g) - e).abs();
                        assert!(gap <= 1e-4 * scale, "{case} data_aware={data_aware}: {i}");
                    }
                    errors.push(mean_squared_error(&got, &float_y));
                }
                let ratio = errors[1] / errors[0];
                println!("{case}: output MSE with data / without = {ratio:.3}");
                assert!(ratio < 0.9, "{case}: data-aware scales gave {ratio:.3} of RTN's error");
            }
        }
    }
}

#[test]
fn data_aware_without_calibration_data_is_refused() {
    let mut rng = Rng::new(3);
    let source = model(&rng.normal_array(&[K, N], 0.05));
    let error = quantize(&source, json!({"data_aware": true}), None);
    assert!(error.contains("`data_aware`"), "{error}");
    assert!(error.contains("data: {calibration:"), "{error}");

    let info = pass::find("quantize_weights").unwrap();
    let tried = [json!(false), json!(true)];
    assert!(info.needs_calibration(|name| (name == "data_aware").then_some(&tried[..])));
    assert!(!info.needs_calibration(|_| None));
}
