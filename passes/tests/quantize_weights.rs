//! Tests of `quantize_weights` on models built here: the scales, zero points and codes the
//! pass writes against the test's own block quantization (random blocks and edge cases: an
//! all-zero block, one outlier, all-negative, all-positive, K = 33 with blocks of 32, 8 bits),
//! both layouts; how it handles Transposed, shared and non-constant weights, exclusions,
//! overrides, `more_bits` and embeddings; and the errors of bad configurations.
//! ONNX Runtime runs the results in the root test `tests/quantize_weights_ort.rs`, and
//! `quantize_weights_ort_tool.rs` compares with ORT's own quantizer.

mod quantize_weights_support;
#[path = "common/rng.rs"]
mod rng;

use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::{self};
use pipeline_passes::pass::{PassError, Runtime};
use quantize_weights_support::*;
use rng::Rng;
use serde_json::json;

/// A weight `[k, 6]` whose columns are: random normal, all zero, zeros with one outlier,
/// all negative, all positive, and values on exact halves of a step (rounding ties).
fn edge_case_weight(k: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = Rng::new(seed);
    let mut w = ArrayD::zeros(IxDyn(&[k, 6]));
    for r in 0..k {
        w[[r, 0]] = rng.normal() as f32;
        w[[r, 2]] = if r == k / 2 { 25.0 } else { 0.01 * rng.normal() as f32 };
        w[[r, 3]] = -(rng.uniform() as f32) - 0.1;
        w[[r, 4]] = rng.uniform() as f32 + 0.1;
        // Multiples of 0.5 in [-4, 3.5]: with a scale of 0.5 (symmetric) many are exact
        // halves of a step once divided, which exercises roundf's ties.
        w[[r, 5]] = ((r % 16) as f32 - 8.0) * 0.25;
    }
    w
}

/// The test's reference for a column of `w`: per block, (scale, zp, codes).
fn reference_column(
    w: &ArrayD<f32>,
    column: usize,
    block_size: usize,
    bits: u32,
    symmetric: bool,
    qdq: bool,
) -> Vec<(f32, u8, Vec<u8>)> {
    let k = w.shape()[0];
    let values: Vec<f32> = (0..k).map(|r| w[[r, column]]).collect();
    values.chunks(block_size).map(|b| reference_block(b, bits, symmetric, qdq)).collect()
}

#[test]
fn matmul_nbits_blocks_match_the_formulas() {
    for (k, block_size) in [(33, 32), (64, 16), (96, 32), (256, 128), (300, 256)] {
        let w = edge_case_weight(k, k as u64);
        for bits in [4u32, 8] {
            for symmetric in [true, false] {
                let config = json!({"bits": bits, "block_size": block_size,
                    "symmetric": symmetric, "format": "matmul_nbits"});
                let model = quantize(&matmul_model(&w, 17), config).unwrap();
                let case = format!("K={k} bs={block_size} bits={bits} symmetric={symmetric}");

                let node = nodes(&model, "MatMulNBits")[0];
                assert_eq!(node.domain(), "com.microsoft");
                assert_eq!(node.input[0], "x", "{case}");
                assert_eq!(node.output[0], "y", "{case}");
                let read = NBits::read(&model, node);
                assert_eq!((read.k, read.n, read.bits, read.block_size), (k, 6, bits, block_size));
                assert_eq!(read.has_zero_points, !symmetric, "{case}");

                for column in 0..6 {
                    let expected = reference_column(&w, column, block_size, bits, symmetric, false);
                    for (b, (scale, zp, codes)) in expected.iter().enumerate() {
                        let at = format!("{case} column {column} block {b}");
                        assert_eq!(read.scales[column][b].to_bits(), scale.to_bits(), "{at}");
                        assert_eq!(read.zero_points[column][b], *zp, "{at}");
                        let ours = &read.codes[column][b * block_size..(b + 1) * block_size];
                        assert_eq!(&ours[..codes.len()], &codes[..], "{at}");
                        // The last block's padding holds the zero point, the code of 0.
                        assert!(ours[codes.len()..].iter().all(|c| c == zp), "{at} padding");
                    }
                }

                // Dequantizing what we packed gives back the reference's dequantized values,
                // and those are within half a step of the float weights.
                let ours = read.dequantized();
                for r in 0..k {
                    for c in 0..6 {
                        let (scale, zp, codes) =
                            &reference_column(&w, c, block_size, bits, symmetric, false)
                                [r / block_size];
                        let reference = (codes[r % block_size] as f32 - *zp as f32) * scale;
                        assert_eq!(ours[r * 6 + c], reference, "{case} at ({r}, {c})");
                        let step = scale.abs();
                        let error = (ours[r * 6 + c] - w[[r, c]]).abs();
                        // Asymmetric blocks clamp nothing; symmetric ones may clip the
                        // positive extreme by one step (2^(bits-1) - 1 is the top code).
                        assert!(error <= step * 1.0001 + 1e-7, "{case} at ({r}, {c}): {error}");
                    }
                }
            }
        }
    }
}

#[test]
fn edge_case_blocks_have_the_expected_parameters() {
    let w = edge_case_weight(33, 3);
    let config = json!({"bits": 4, "block_size": 32, "symmetric": true, "format": "matmul_nbits"});
    let model = quantize(&matmul_model(&w, 17), config).unwrap();
    let read = NBits::read(&model, nodes(&model, "MatMulNBits")[0]);
    // All zero: scale 0 and every code 8.
    assert_eq!(read.scales[1], [0.0, 0.0]);
    assert!(read.codes[1].iter().all(|&c| c == 8));
    // The outlier 25 (row 16, block 0) maps to code 0 with scale -25 / 8 ...
    assert_eq!(read.scales[2][0], -25.0 / 8.0);
    assert_eq!(read.codes[2][16], 0);
    // ... and every small value to the zero point.
    assert!(read.codes[2][..32].iter().enumerate().all(|(i, &c)| i == 16 || c == 8));
    // All negative: positive scale, codes at or below 8.
    assert!(read.scales[3][0] > 0.0 && read.codes[3][..32].iter().all(|&c| c <= 8));
    // All positive: negative scale, codes at or below 8 too (the largest maps to 0).
    assert!(read.scales[4][0] < 0.0 && read.codes[4][..32].contains(&0));

    let config = json!({"bits": 4, "block_size": 32, "symmetric": false, "format": "matmul_nbits"});
    let model = quantize(&matmul_model(&w, 17), config).unwrap();
    let read = NBits::read(&model, nodes(&model, "MatMulNBits")[0]);
    // All negative: max is 0, so the zero point is the top code; all positive: 0.
    assert_eq!(read.zero_points[3][0], 15);
    assert_eq!(read.zero_points[4][0], 0);
    // Two blocks per column fill one byte of zero points each.
    let z = initializer(&model, &nodes(&model, "MatMulNBits")[0].input[3]);
    assert_eq!(z.dims, [6, 1]);

    // Three blocks per column: the unused high nibble of the second byte is the neutral 8,
    // as ORT's quantizer leaves it.
    let w = edge_case_weight(96, 3);
    let config = json!({"bits": 4, "block_size": 32, "symmetric": false, "format": "matmul_nbits"});
    let model = quantize(&matmul_model(&w, 17), config).unwrap();
    let z = initializer(&model, &nodes(&model, "MatMulNBits")[0].input[3]);
    assert_eq!(z.dims, [6, 2]);
    let raw = z.raw_data.as_ref().unwrap();
    assert!((0..6).all(|c| raw[c * 2 + 1] >> 4 == 8), "{raw:?}");
}

#[test]
fn qdq_blocks_match_the_formulas() {
    for (k, block_size) in [(33, 32), (128, 64)] {
        let w = edge_case_weight(k, 11);
        for bits in [4u32, 8] {
            for symmetric in [true, false] {
                let config = json!({"bits": bits, "block_size": block_size,
                    "symmetric": symmetric, "format": "qdq"});
                let model = quantize(&matmul_model(&w, 21), config).unwrap();
                let case = format!("K={k} bits={bits} symmetric={symmetric}");
                let dq = nodes(&model, "DequantizeLinear")[0];
                let matmul = nodes(&model, "MatMul")[0];
                assert_eq!(matmul.input[1], dq.output[0], "{case}");
                let read = Qdq::read(&model, dq);
                assert_eq!((read.bits, read.signed), (bits, symmetric), "{case}");
                assert_eq!((read.axis, read.block_size), (0, block_size));
                assert_eq!(read.dims, [k, 6]);

                let blocks = k.div_ceil(block_size);
                for c in 0..6 {
                    let expected = reference_column(&w, c, block_size, bits, symmetric, true);
                    for (b, (scale, zp, codes)) in expected.iter().enumerate() {
                        let offset = if symmetric { *zp as i32 } else { 0 };
                        assert_eq!(read.scales[b * 6 + c].to_bits(), scale.to_bits(), "{case}");
                        assert_eq!(read.zero_points[b * 6 + c], *zp as i32 - offset, "{case}");
                        for (i, &code) in codes.iter().enumerate() {
                            let r = b * block_size + i;
                            assert_eq!(read.codes[r * 6 + c], code as i32 - offset, "{case}");
                        }
                    }
                    assert!(blocks * block_size >= k);
                }
            }
        }
    }
}

/// `x [1, 64] (float16) -> MatMul(w [64, 4] as float16) -> y`.
fn float16_matmul(w: &ArrayD<f32>) -> pipeline_passes::ir::proto::ModelProto {
    let raw: Vec<u8> = w.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let tensor = pipeline_passes::ir::proto::TensorProto {
        name: Some("w".into()),
        dims: vec![64, 4],
        data_type: Some(DataType::Float16 as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    };
    Builder::new(17)
        .typed_input("x", DataType::Float16, &[1, 64])
        .output("y")
        .tensor(tensor)
        .node("MatMul", &["x", "w"], &["y"], "fc")
        .build()
}

#[test]
fn float16_weights_keep_float16_scales() {
    let mut rng = Rng::new(5);
    let w = rng.normal_array(&[64, 4], 1.0);
    let model = float16_matmul(&w);
    let out = quantize(&model, json!({"format": "matmul_nbits"})).unwrap();
    let node = nodes(&out, "MatMulNBits")[0];
    assert_eq!(initializer(&out, &node.input[2]).data_type(), DataType::Float16 as i32);
    let read = NBits::read(&out, node);
    for c in 0..4 {
        let column: Vec<f32> = (0..64).map(|r| half::f16::from_f32(w[[r, c]]).to_f32()).collect();
        for (b, block) in column.chunks(32).enumerate() {
            let (scale, _, _) = reference_block(block, 4, true, false);
            let stored = half::f16::from_f32(scale).to_f32();
            assert_eq!(read.scales[c][b], stored);
            // Codes come from the stored (float16) scale.
            let inverse = 1.0 / stored;
            for (i, &v) in block.iter().enumerate() {
                let code = (v * inverse + 8.0).round().clamp(0.0, 15.0) as u8;
                assert_eq!(read.codes[c][b * 32 + i], code);
            }
        }
    }
}

/// An MLP with named layers: `blocks.{i}.fc` MatMuls on their own weights.
fn layered_model(layers: usize, k: usize) -> pipeline_passes::ir::proto::ModelProto {
    let mut rng = Rng::new(9);
    let mut builder = Builder::new(17).input("x", &[1, k as i64]).output("y");
    let mut previous = "x".to_string();
    for i in 0..layers {
        let weight = format!("blocks.{i}.fc.weight");
        let output = if i + 1 == layers { "y".to_string() } else { format!("h{i}") };
        builder = builder.init(&weight, &rng.normal_array(&[k, k], 0.2)).node(
            "MatMul",
            &[&previous, &weight],
            &[&output],
            &format!("/blocks.{i}/fc/MatMul"),
        );
        previous = output;
    }
    builder.build()
}

fn bits_by_node(model: &pipeline_passes::ir::proto::ModelProto) -> Vec<(String, i64)> {
    nodes(model, "MatMulNBits")
        .iter()
        .map(|n| (n.name().to_string(), attr(n, "bits").unwrap()))
        .collect()
}

#[test]
fn more_bits_follows_the_q4_k_m_rule_on_named_layers() {
    let model = layered_model(16, 32);
    let out = quantize(&model, json!({"more_bits": true, "format": "matmul_nbits"})).unwrap();
    let got = bits_by_node(&out);
    assert_eq!(got.len(), 16);
    for (node, bits) in &got {
        let i: usize =
            node.trim_start_matches("/blocks.").split('/').next().unwrap().parse().unwrap();
        // L = 16: L/8 = 2, 7L/8 = 14.
        let more = !(2..14).contains(&i) || (i - 2) % 3 == 2;
        assert_eq!(*bits, if more { 8 } else { 4 }, "{node}");
    }
    // The 8-bit layers are 0, 1, 4, 7, 10, 13, 14, 15.
    assert_eq!(got.iter().filter(|(_, b)| *b == 8).count(), 8);

    // An override that sets bits wins over more_bits.
    let config = json!({"more_bits": true, "format": "matmul_nbits",
        "overrides": [{"nodes": "/blocks\\.0/.*", "bits": 4}]});
    let got = bits_by_node(&quantize(&model, config).unwrap());
    assert_eq!(got[0], ("/blocks.0/fc/MatMul_Q4".to_string(), 4));
}

#[test]
fn exclusions_and_overrides_pick_nodes_by_name() {
    let model = layered_model(3, 32);
    let config = json!({
        "format": "matmul_nbits",
        "nodes_to_exclude": ["/blocks\\.1/.*"],
        "overrides": [{"nodes": "/blocks\\.2/fc/MatMul", "bits": 8, "block_size": 16,
                       "symmetric": false}]
    });
    let out = quantize(&model, config).unwrap();
    let quantized = nodes(&out, "MatMulNBits");
    assert_eq!(quantized.len(), 2);
    assert_eq!(nodes(&out, "MatMul")[0].name(), "/blocks.1/fc/MatMul");
    let last = quantized.iter().find(|n| n.name().starts_with("/blocks.2")).unwrap();
    assert_eq!((attr(last, "bits"), attr(last, "block_size")), (Some(8), Some(16)));
    assert_eq!(last.input.len(), 4, "asymmetric: zero points");
    // The excluded node's float weight stays; the quantized ones' are gone.
    let graph = out.graph.as_ref().unwrap();
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    assert!(names.contains(&"blocks.1.fc.weight"));
    assert!(!names.contains(&"blocks.0.fc.weight") && !names.contains(&"blocks.2.fc.weight"));
}

#[test]
fn transposed_shared_and_computed_weights() {
    let mut rng = Rng::new(4);
    let wt = rng.normal_array(&[8, 64], 1.0); // [N, K], transposed to [K, N]
    let shared = rng.normal_array(&[64, 8], 1.0);
    let model = Builder::new(17)
        .input("x", &[1, 64])
        .input("dyn_w", &[64, 8])
        .output("y1")
        .output("y2")
        .output("y3")
        .output("y4")
        .init("wt", &wt)
        .init("shared", &shared)
        .node("Transpose", &["wt"], &["w"], "t")
        .node("MatMul", &["x", "w"], &["y1"], "m1")
        .node("MatMul", &["x", "shared"], &["y2"], "m2")
        .node("MatMul", &["x", "shared"], &["y3"], "m3")
        .node("MatMul", &["x", "dyn_w"], &["y4"], "m4")
        .build();
    let out = quantize(&model, json!({"format": "matmul_nbits"})).unwrap();
    let graph = out.graph.as_ref().unwrap();

    // The Transpose is folded: its node and float input are gone, and the weight quantized
    // is wt transposed.
    assert!(nodes(&out, "Transpose").is_empty());
    let m1 = nodes(&out, "MatMulNBits").into_iter().find(|n| n.output[0] == "y1").unwrap();
    let read = NBits::read(&out, m1);
    assert_eq!((read.k, read.n), (64, 8));
    for c in 0..8 {
        let column: Vec<f32> = (0..64).map(|r| wt[[c, r]]).collect();
        let (scale, _, codes) = reference_block(&column[..32], 4, true, false);
        assert_eq!(read.scales[c][0], scale);
        assert_eq!(&read.codes[c][..32], &codes[..]);
    }

    // Both readers of the shared weight read the same packed initializers, stored once.
    let readers: Vec<_> = nodes(&out, "MatMulNBits")
        .into_iter()
        .filter(|n| n.output[0] == "y2" || n.output[0] == "y3")
        .collect();
    assert_eq!(readers.len(), 2);
    assert_eq!(readers[0].input[1..], readers[1].input[1..]);
    let packed = graph.initializer.iter().filter(|t| t.name().starts_with("shared_Q4")).count();
    assert_eq!(packed, 1);

    // The computed weight is left alone.
    assert_eq!(nodes(&out, "MatMul").len(), 1);
    assert_eq!(nodes(&out, "MatMul")[0].name(), "m4");
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    assert!(!names.contains(&"wt") && !names.contains(&"shared"));
    // The graph's inputs and outputs keep their names.
    let outputs: Vec<&str> = graph.output.iter().map(|v| v.name()).collect();
    assert_eq!(outputs, ["y1", "y2", "y3", "y4"]);
    assert_eq!(out.opset_import.iter().filter(|o| o.domain() == "com.microsoft").count(), 1);
}

#[test]
fn constant_node_weights_are_quantized_and_removed() {
    let mut rng = Rng::new(8);
    let w = rng.normal_array(&[32, 4], 1.0);
    let mut constant = ir::make_node("Constant", &[], &["w"], "const_w");
    constant.attribute.push(ir::attr_tensor("value", ir::tensor_from_f32("", &w)));
    let model = Builder::new(17)
        .input("x", &[1, 32])
        .output("y")
        .raw(constant)
        .node("MatMul", &["x", "w"], &["y"], "fc")
        .build();
    let out = quantize(&model, json!({})).unwrap();
    assert!(nodes(&out, "Constant").is_empty());
    assert_eq!(nodes(&out, "MatMulNBits").len(), 1);
}

#[test]
fn nothing_quantizable_is_unchanged_with_reasons() {
    let model = Builder::new(17)
        .input("x", &[1, 64])
        .input("w", &[64, 8])
        .output("y")
        .node("MatMul", &["x", "w"], &["y"], "fc")
        .build();
    let err = quantize(&model, json!({})).unwrap_err();
    assert!(matches!(err, PassError::Unchanged { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("`fc`") && text.contains("not a constant"), "{text}");

    // Excluded everywhere: unchanged too, saying why.
    let w = Rng::new(1).normal_array(&[64, 8], 1.0);
    let err = quantize(&matmul_model(&w, 17), json!({"nodes_to_exclude": ["f."]})).unwrap_err();
    assert!(err.to_string().contains("excluded by `nodes_to_exclude`"), "{err}");

    // A model already quantized by this pass says so.
    let once = quantize(&matmul_model(&w, 17), json!({})).unwrap();
    let err = quantize(&once, json!({})).unwrap_err().to_string();
    assert!(err.contains("already holds 1 weight-quantized node(s)"), "{err}");

    // Gemm is not this pass's: the reason names the passes that quantize it.
    let gemm = Builder::new(17)
        .input("x", &[1, 64])
        .output("y")
        .init("w", &w)
        .node("Gemm", &["x", "w"], &["y"], "fc")
        .build();
    let err = quantize(&gemm, json!({})).unwrap_err().to_string();
    assert!(err.contains("1 Gemm node(s) are not quantized by this pass"), "{err}");
}

/// A runner that must never run: the pass refuses before it measures anything.
struct NeverRuns;

impl pipeline_passes::pass::ModelRunner for NeverRuns {
    fn samples(&self) -> usize {
        4
    }

    fn for_each_batch(
        &self,
        _: &pipeline_passes::ir::proto::ModelProto,
        _: &[String],
        _: &mut pipeline_passes::pass::BatchVisitor<'_>,
    ) -> Result<(), pipeline_passes::pass::RunnerError> {
        panic!("the pass ran the model although it must refuse first")
    }
}

#[test]
fn data_aware_on_float16_activations_is_refused_with_a_hint() {
    let w = Rng::new(6).normal_array(&[64, 4], 1.0);
    let model = float16_matmul(&w);
    let info = pipeline_passes::pass::find("quantize_weights").unwrap();
    let pass = (info.build)(&json!({"data_aware": true})).unwrap();
    let context =
        pipeline_passes::pass::PassContext { calibration: Some(&NeverRuns), ..Default::default() };
    let err = pass.run(model, &context).unwrap_err().to_string();
    assert!(err.contains("the MatMul input `x` is FLOAT16"), "{err}");
    assert!(err.contains("before `convert_fp16`"), "{err}");
}

#[test]
fn embeddings_become_gather_block_quantized_or_qdq() {
    let mut rng = Rng::new(2);
    let table = rng.normal_array(&[10, 64], 1.0);
    let build = |opset| {
        Builder::new(opset)
            .typed_input("ids", DataType::Int64, &[1, 3])
            .output("e")
            .init("table", &table)
            .node("Gather", &["table", "ids"], &["e"], "embed")
            .build()
    };
    let out = quantize(&build(17), json!({"embeddings": true, "block_size": 32})).unwrap();
    let gather = nodes(&out, "GatherBlockQuantized")[0];
    assert_eq!((attr(gather, "quantize_axis"), attr(gather, "block_size")), (Some(1), Some(32)));
    assert_eq!(gather.input[1], "ids");
    let q = initializer(&out, &gather.input[0]);
    assert_eq!((q.data_type(), q.dims.clone()), (DataType::Int4 as i32, vec![10, 64]));
    assert_eq!(initializer(&out, &gather.input[2]).dims, [10, 2]);

    // Without `embeddings`, a Gather is no candidate.
    assert!(quantize(&build(17), json!({})).is_err());
    // 8 bits: GatherBlockQuantized takes 4 only; the QDQ format takes 8.
    let err = quantize(&build(17), json!({"embeddings": true, "bits": 8})).unwrap_err();
    assert!(err.to_string().contains("4-bit tables only"), "{err}");
    let out =
        quantize(&build(21), json!({"embeddings": true, "bits": 8, "format": "qdq"})).unwrap();
    let dq = nodes(&out, "DequantizeLinear")[0];
    let read = Qdq::read(&out, dq);
    assert_eq!((read.axis, read.bits, read.dims.clone()), (1, 8, vec![10, 64]));
    assert_eq!(nodes(&out, "Gather")[0].input[0], dq.output[0]);
    // Each row's blocks quantize as the reference does.
    let dequantized = read.dequantized();
    for v in 0..10 {
        let row: Vec<f32> = (0..64).map(|d| table[[v, d]]).collect();
        for (b, block) in row.chunks(32).enumerate() {
            let (scale, zp, codes) = reference_block(block, 8, true, true);
            for (i, &code) in codes.iter().enumerate() {
                let expected = (code as f32 - zp as f32) * scale;
                assert_eq!(dequantized[v * 64 + b * 32 + i], expected);
            }
        }
    }
}

#[test]
fn auto_format_follows_the_runtime() {
    let w = Rng::new(3).normal_array(&[64, 8], 1.0);
    let out = quantize_for(&matmul_model(&w, 21), json!({}), Runtime::OnnxRuntime).unwrap();
    assert_eq!(nodes(&out, "MatMulNBits").len(), 1);
    let out = quantize_for(&matmul_model(&w, 21), json!({}), Runtime::Standard).unwrap();
    assert_eq!(nodes(&out, "DequantizeLinear").len(), 1);
    assert!(out.opset_import.iter().all(|o| o.domain() != "com.microsoft"));
}

#[test]
fn bad_configurations_are_errors_naming_the_field() {
    let w = Rng::new(3).normal_array(&[64, 8], 1.0);
    let model = matmul_model(&w, 17);
    let config_error = |config: serde_json::Value, expected: &[&str]| {
        let err = quantize(&model, config.clone()).unwrap_err();
        assert!(matches!(err, PassError::Config { .. }), "{config}: {err}");
        let text = err.to_string();
        for part in expected {
            assert!(text.contains(part), "{config}: `{text}` lacks `{part}`");
        }
    };
    config_error(json!({"block_size": 48}), &["`block_size` is 48", "16, 32, 64, 128, 256"]);
    config_error(json!({"block_size": 512}), &["`block_size` is 512", "16, 32, 64, 128, 256"]);
    config_error(json!({"bits": 3}), &["`bits` is 3", "4 and 8"]);
    config_error(json!({"accuracy_level": 4, "format": "qdq"}), &["`accuracy_level`", "qdq"]);
    config_error(json!({"nodes_to_exclude": ["fc("]}), &["`nodes_to_exclude`", "`fc(`"]);
    config_error(json!({"more_bits": true, "bits": 8}), &["`more_bits`", "`bits: 4`"]);
    config_error(json!({"blocksize": 32}), &["unknown field `blocksize`"]);
    // accuracy_level with `auto` resolved to qdq for a standard runtime.
    let err = quantize_for(&matmul_model(&w, 21), json!({"accuracy_level": 4}), Runtime::Standard)
        .unwrap_err();
    assert!(err.to_string().contains("`accuracy_level`"), "{err}");

    let err = quantize(&model, json!({"format": "qdq"})).unwrap_err();
    assert!(matches!(err, PassError::Model { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("opset 21") && text.contains("opset 17") && text.contains("hint"),
        "{text}"
    );
}

#[test]
fn accuracy_level_is_written_when_set() {
    let w = Rng::new(3).normal_array(&[64, 8], 1.0);
    let out = quantize(&matmul_model(&w, 17), json!({"accuracy_level": 4})).unwrap();
    assert_eq!(attr(nodes(&out, "MatMulNBits")[0], "accuracy_level"), Some(4));
    let out = quantize(&matmul_model(&w, 17), json!({})).unwrap();
    assert_eq!(attr(nodes(&out, "MatMulNBits")[0], "accuracy_level"), None);
}
