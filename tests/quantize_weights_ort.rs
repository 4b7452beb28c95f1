//! ONNX Runtime runs what `quantize_weights` writes: a `[1, 2048] x [2048, 4]` MatMul quantized
//! to MatMulNBits and to blocked QDQ, at 4 and 8 bits, symmetric and not, with blocks of 16
//! to 256, must compute `x @ dequantize(B)`, where the test dequantizes the packed tensors
//! itself (see `passes/tests/quantize_weights_support`), within 1e-4 of the output's largest
//! magnitude; and the outputs must be non-zero and near the float model's. The same for an
//! embedding table as GatherBlockQuantized and as DequantizeLinear -> Gather, and for
//! Transposed and shared weights.

mod fusion_support;
#[path = "../passes/tests/quantize_weights_support/mod.rs"]
mod support;

use fusion_support::{run_model, Rng};
use ndarray::{ArrayD, IxDyn};
use pipeline::runtime::Tensor;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::ModelProto;
use pipeline_passes::ir::{self};
use serde_json::json;
use support::{nodes, quantize, Builder, NBits, Qdq};

/// ORT's output must equal the test's `x @ dequantize(B)` within this share of its largest
/// magnitude: float32 summation order over K = 2048 stays far below it; a wrong code, scale,
/// zero point or layout (one block off) lands far above.
const MAX_RELATIVE_ERROR: f32 = 1e-4;

fn f32_output(outputs: &[(String, Tensor)], name: &str) -> ArrayD<f32> {
    match &outputs.iter().find(|(n, _)| n == name).expect("the output").1 {
        Tensor::F32(values) => values.clone(),
        other => panic!("output `{name}` is {:?}, not float32", other.elem()),
    }
}

/// `x [1, K] @ w [K, N]` (w row-major).
fn product(x: &[f32], w: &[f32], n: usize) -> Vec<f32> {
    (0..n).map(|c| x.iter().enumerate().map(|(r, &v)| v * w[r * n + c]).sum()).collect()
}

fn assert_close(got: &[f32], expected: &[f32], case: &str) {
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "{case}: the expected output is all but zero");
    assert!(got.iter().any(|v| v.abs() > 1e-3), "{case}: ORT's output is zero");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= MAX_RELATIVE_ERROR * scale, "{case}: output {i}: {g} vs {e}");
    }
}

fn matmul_model(w: &ArrayD<f32>, opset: i64) -> ModelProto {
    support::matmul_model(w, opset)
}

#[test]
fn ort_computes_x_times_the_dequantized_weight() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(17);
    let (k, n) = (2048, 4);
    let w = rng.normal_array(&[k, n], 0.05);
    let x = rng.normal_array(&[1, k], 1.0);
    let x_values: Vec<f32> = x.iter().copied().collect();
    let inputs = vec![("x".to_string(), Tensor::F32(x.clone()))];
    let float_y = product(&x_values, &w.iter().copied().collect::<Vec<_>>(), n);

    for format in ["matmul_nbits", "qdq"] {
        let opset = if format == "qdq" { 21 } else { 17 };
        let model = matmul_model(&w, opset);
        for bits in [4u32, 8] {
            for symmetric in [true, false] {
                for block_size in [16usize, 32, 64, 128, 256] {
                    let case = format!("{format} bits={bits} sym={symmetric} bs={block_size}");
                    let config = json!({"bits": bits, "block_size": block_size,
                        "symmetric": symmetric, "format": format});
                    let ours = quantize(&model, config).unwrap();
                    let dequantized = match format {
                        "qdq" => {
                            Qdq::read(&ours, nodes(&ours, "DequantizeLinear")[0]).dequantized()
                        }
                        _ => NBits::read(&ours, nodes(&ours, "MatMulNBits")[0]).dequantized(),
                    };
                    let expected = product(&x_values, &dequantized, n);
                    let outputs = run_model(dir.path(), "q.onnx", &ours, &inputs);
                    let got: Vec<f32> = f32_output(&outputs, "y").iter().copied().collect();
                    assert_close(&got, &expected, &case);

                    // And near the float model. Each weight is off by up to half a step
                    // (about a fifteenth of a block's range at 4 bits), so a sum over 2048
                    // terms of random sign is off by some 10% of the output's scale at 4 bits
                    // with large blocks, 1% at 8; a wrong model is off by 100% or more.
                    let tolerance = if bits == 4 { 0.3 } else { 0.03 };
                    let scale = float_y.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (g, f) in got.iter().zip(&float_y) {
                        assert!((g - f).abs() <= tolerance * scale, "{case}: {g} vs float {f}");
                    }
                }
            }
        }
    }
}

#[test]
fn ort_runs_transposed_and_shared_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(23);
    let wt = rng.normal_array(&[8, 96], 0.1);
    let shared = rng.normal_array(&[96, 8], 0.1);
    let model = Builder::new(17)
        .input("x", &[1, 96])
        .output("y1")
        .output("y2")
        .output("y3")
        .init("wt", &wt)
        .init("shared", &shared)
        .node("Transpose", &["wt"], &["w"], "t")
        .node("MatMul", &["x", "w"], &["y1"], "m1")
        .node("MatMul", &["x", "shared"], &["y2"], "m2")
        .node("MatMul", &["x", "shared"], &["y3"], "m3")
        .build();
    let x = rng.normal_array(&[1, 96], 1.0);
    let x_values: Vec<f32> = x.iter().copied().collect();
    let inputs = vec![("x".to_string(), Tensor::F32(x))];
    let ours = quantize(&model, json!({"block_size": 32, "symmetric": false})).unwrap();
    let outputs = run_model(dir.path(), "q.onnx", &ours, &inputs);
    for node in nodes(&ours, "MatMulNBits") {
        let expected = product(&x_values, &NBits::read(&ours, node).dequantized(), 8);
        let got: Vec<f32> = f32_output(&outputs, &node.output[0]).iter().copied().collect();
        assert_close(&got, &expected, &node.output[0]);
    }
}

#[test]
fn ort_runs_quantized_embedding_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(31);
    let (vocab, dim) = (50, 128);
    let table = rng.normal_array(&[vocab, dim], 1.0);
    let ids = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![0i64, 7, 49, 7]).unwrap();
    let inputs = vec![("ids".to_string(), Tensor::I64(ids.clone()))];
    for (format, bits, symmetric) in
        [("matmul_nbits", 4, true), ("matmul_nbits", 4, false), ("qdq", 4, false), ("qdq", 8, true)]
    {
        let case = format!("{format} bits={bits} sym={symmetric}");
        let opset = if format == "qdq" { 21 } else { 17 };
        let model = Builder::new(opset)
            .typed_input("ids", DataType::Int64, &[1, 4])
            .output("e")
            .init("table", &table)
            .node("Gather", &["table", "ids"], &["e"], "embed")
            .build();
        let config = json!({"embeddings": true, "format": format, "bits": bits,
            "symmetric": symmetric, "block_size": 32});
        let ours = quantize(&model, config).unwrap();
        let read = match format {
            "qdq" => Qdq::read(&ours, nodes(&ours, "DequantizeLinear")[0]),
            _ => {
                // GatherBlockQuantized reads (data, indices, scales[, zero points]): the same
                // tensors as a DequantizeLinear on axis 1.
                let gather = nodes(&ours, "GatherBlockQuantized")[0];
                let mut inputs = vec![gather.input[0].as_str(), gather.input[2].as_str()];
                inputs.extend(gather.input.get(3).map(String::as_str));
                let mut dq = ir::make_node("DequantizeLinear", &inputs, &["t"], "t");
                dq.attribute.push(ir::attr_int("axis", 1));
                dq.attribute.push(ir::attr_int("block_size", 32));
                Qdq::read(&ours, &dq)
            }
        };
        let dequantized = read.dequantized();
        let outputs = run_model(dir.path(), "q.onnx", &ours, &inputs);
        let got = f32_output(&outputs, "e");
        assert_eq!(got.shape(), [1, 4, dim], "{case}");
        for (i, &id) in ids.iter().enumerate() {
            for d in 0..dim {
                let expected = dequantized[id as usize * dim + d];
                assert_eq!(got[[0, i, d]], expected, "{case}: id {id} dim {d}");
                let step = if bits == 4 { 0.5 } else { 0.05 };
                assert!((expected - table[[id as usize, d]]).abs() < step, "{case}");
            }
        }
    }
}
