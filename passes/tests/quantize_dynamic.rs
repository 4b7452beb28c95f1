//! Acceptance test of `quantize_dynamic` on MatMul, Gemm and Conv against ONNX Runtime's own
//! `quantize_dynamic`, and the pass's rules for what it leaves in float.
//!
//! A float model with MatMuls of different weight ranges (one all positive, one with a zero
//! column), a Gemm with `transB = 1` and a bias, a Conv with a bias and a MatMul that cannot
//! be quantized is built here, quantized by our pass, and checked against ORT's tool by
//! `quantize_dynamic_support::check_model_against_ort`: every quantized weight, scale and zero
//! point bit for bit, and the outputs within tolerance.

mod quantize_dynamic_support;

use std::collections::BTreeSet;

use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::quantize::dynamic::QuantizeDynamicConfig;
use quantize_dynamic_support::{
    capture_logs, check_model_against_ort, model, node_named, op_types, report_weights, run_pass,
    workspace, Rng,
};
use serde_json::Value;

/// The float model: `x [4,16] -> m1 -> m2 -> m3 -> g (Gemm) -> out_gemm`, `m4` multiplies
/// `y2` by its own transpose (no constant weight: left in float by both tools, but the
/// Transpose `t` moves `y2` as `m3` quantized it, in 8-bit), and `z [1,3,8,8] -> c (Conv) ->
/// out_conv`.
fn float_model() -> ModelProto {
    let mut rng = Rng::new(7);
    let w1 = rng.array(&[16, 8], |r| 0.5 * r.normal());
    let w2 = rng.array(&[8, 8], |r| 0.1 + 1.9 * r.uniform());
    let mut w3 = rng.array(&[8, 6], |r| 10.0 * r.normal());
    w3.slice_mut(ndarray::s![.., 2]).fill(0.0);
    let b = rng.array(&[5, 6], |r| r.normal());
    let c = rng.array(&[5], |r| r.normal());
    let conv_w = rng.array(&[4, 3, 3, 3], |r| 0.3 * r.normal());
    let conv_b = rng.array(&[4], |r| r.normal());

    let mut gemm = ir::make_node("Gemm", &["y3", "B", "C"], &["out_gemm"], "g");
    gemm.attribute.push(ir::attr_int("transB", 1));
    let mut conv = ir::make_node("Conv", &["z", "CW", "CB"], &["out_conv"], "c");
    conv.attribute.push(ir::attr_ints("pads", &[1, 1, 1, 1]));

    let graph = GraphProto {
        name: Some("quantize_dynamic_test".into()),
        node: vec![
            ir::make_node("MatMul", &["x", "W1"], &["y1"], "m1"),
            ir::make_node("MatMul", &["y1", "W2"], &["y2"], "m2"),
            ir::make_node("MatMul", &["y2", "W3"], &["y3"], "m3"),
            gemm,
            ir::make_node("Transpose", &["y2"], &["y2t"], "t"),
            ir::make_node("MatMul", &["y2", "y2t"], &["out_gram"], "m4"),
            conv,
        ],
        initializer: vec![
            ir::tensor_from_f32("W1", &w1),
            ir::tensor_from_f32("W2", &w2),
            ir::tensor_from_f32("W3", &w3),
            ir::tensor_from_f32("B", &b),
            ir::tensor_from_f32("C", &c),
            ir::tensor_from_f32("CW", &conv_w),
            ir::tensor_from_f32("CB", &conv_b),
        ],
        input: vec![float_value_info("x", &[4, 16]), float_value_info("z", &[1, 3, 8, 8])],
        output: vec![
            float_value_info("out_gemm", &[4, 5]),
            float_value_info("out_gram", &[4, 4]),
            float_value_info("out_conv", &[1, 4, 8, 8]),
        ],
        ..Default::default()
    };
    model(graph, 13)
}

/// Quantizes the float model with `config`, checks it against ORT, and returns the report.
fn check_against_ort(config: QuantizeDynamicConfig) -> Value {
    let (ours, report) = check_model_against_ort(float_model(), config.clone());

    // As in ORT's tool, `t` transposes the 8-bit `y2` that `m3` made, and the float `m4`
    // reads it back through a DequantizeLinear.
    let transpose = node_named(&ours, "t").expect("the Transpose is kept");
    let moves_8_bit = transpose.input[0] == "y2_quantized";
    assert_eq!(moves_8_bit, config.op_types.iter().any(|op| op == "Transpose"), "{transpose:?}");
    report
}

#[test]
fn per_tensor_matches_ort_bit_for_bit() {
    let report = check_against_ort(QuantizeDynamicConfig::default());
    let weights = report_weights(&report, "ort_weights");
    assert_eq!(weights.keys().collect::<Vec<_>>(), ["B", "CW", "W1", "W2", "W3"]);
    assert!(weights.values().all(|w| w.scale_shape.is_empty()));
}

#[test]
fn per_channel_matches_ort_bit_for_bit() {
    let report =
        check_against_ort(QuantizeDynamicConfig { per_channel: true, ..Default::default() });
    let weights = report_weights(&report, "ort_weights");
    assert_eq!(weights["W3"].scale_shape, [6]);
    assert_eq!(weights["B"].shape, [6, 5], "the transB weight is stored transposed");
    assert_eq!(weights["B"].scale_shape, [5]);
    assert!(weights["CW"].scale_shape.is_empty(), "Conv stays per tensor");

    // The zero column of W3 gets ORT's scale of 1.
    assert_eq!(weights["W3"].scale_bits[2], i64::from(1.0f32.to_bits()));
}

#[test]
fn reduce_range_matches_ort_bit_for_bit() {
    let report =
        check_against_ort(QuantizeDynamicConfig { reduce_range: true, ..Default::default() });
    let weights = report_weights(&report, "ort_weights");
    assert!(weights.values().all(|w| w.values.iter().all(|&q| (-64..=64).contains(&q))));
}

#[test]
fn per_channel_reduce_range_matches_ort_bit_for_bit() {
    check_against_ort(QuantizeDynamicConfig {
        per_channel: true,
        reduce_range: true,
        ..Default::default()
    });
}

#[test]
fn excluded_nodes_match_ort() {
    let report = check_against_ort(QuantizeDynamicConfig {
        nodes_to_exclude: vec!["m2".into(), "c".into()],
        ..Default::default()
    });
    let weights = report_weights(&report, "ort_weights");
    assert_eq!(weights.keys().collect::<Vec<_>>(), ["B", "W1", "W3"]);
}

fn matmul_graph(
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    outputs: &[&str],
) -> GraphProto {
    GraphProto {
        name: Some("rules".into()),
        node: nodes,
        initializer,
        input: vec![float_value_info("x", &[2, 4])],
        output: outputs.iter().map(|&name| float_value_info(name, &[2, 3])).collect(),
        ..Default::default()
    }
}

fn weight(name: &str, seed: u64) -> TensorProto {
    ir::tensor_from_f32(name, &Rng::new(seed).array(&[4, 3], |r| r.normal()))
}

#[test]
fn opset_below_11_is_refused_naming_it() {
    let graph = matmul_graph(
        vec![ir::make_node("MatMul", &["x", "W"], &["y"], "m")],
        vec![weight("W", 1)],
        &["y"],
    );
    let err = run_pass(model(graph, 10), QuantizeDynamicConfig::default()).unwrap_err();
    assert!(err.contains("opset 10") && err.contains("opset 11"), "{err}");
}

#[test]
fn nothing_quantizable_is_an_error_that_says_why() {
    let mut gemm = ir::make_node("Gemm", &["x", "W"], &["y"], "g");
    gemm.attribute.push(ir::attr_float("alpha", 0.5));
    let graph = matmul_graph(
        vec![ir::make_node("Transpose", &["x"], &["xt"], "t"), gemm],
        vec![weight("W", 1)],
        &["y", "xt"],
    );
    let err = run_pass(model(graph, 13), QuantizeDynamicConfig::default()).unwrap_err();
    assert!(err.contains("no node was quantized"), "{err}");
    assert!(err.contains("`g`") && err.contains("alpha = 0.5"), "{err}");

    let graph = matmul_graph(
        vec![ir::make_node("MatMul", &["x", "W"], &["y"], "m")],
        vec![weight("W", 1)],
        &["y"],
    );
    let config = QuantizeDynamicConfig { op_types: vec!["Conv".into()], ..Default::default() };
    let err = run_pass(model(graph, 13), config).unwrap_err();
    assert!(err.contains("no node was quantized") && err.contains("Conv"), "{err}");
}

#[test]
fn unsupported_nodes_stay_float_beside_quantized_ones() {
    let mut trans_a = ir::make_node("Gemm", &["xt", "W2"], &["y2"], "gemm_trans_a");
    trans_a.attribute.push(ir::attr_int("transA", 1));
    let mut beta = ir::make_node("Gemm", &["x", "W3", "C"], &["y3"], "gemm_beta");
    beta.attribute.push(ir::attr_float("beta", 2.0));
    let half = ir::tensor_from_f32("W4", &ArrayD::zeros(IxDyn(&[4, 3])));
    let half = TensorProto { data_type: Some(10), raw_data: Some(vec![0; 24].into()), ..half };
    let batched = ir::tensor_from_f32("W5", &Rng::new(5).array(&[2, 4, 3], |r| r.normal()));

    let mut graph = matmul_graph(
        vec![
            ir::make_node("MatMul", &["x", "W1"], &["y1"], "quantized"),
            ir::make_node("Transpose", &["x"], &["xt"], "t"),
            trans_a,
            beta,
            ir::make_node("MatMul", &["x", "W4"], &["y4"], "float16_weight"),
            ir::make_node("MatMul", &["x", "W5"], &["y5"], "batched_weight"),
            ir::make_node("MatMul", &["x", "W6"], &["y6"], "weight_is_input"),
            ir::make_node("MatMul", &["x", "W1"], &["y7"], "excluded"),
        ],
        vec![weight("W1", 1), weight("W2", 2), weight("W3", 3), half, batched, weight("W6", 6)],
        &["y1", "y2", "y3", "y4", "y5", "y6", "y7"],
    );
    graph.initializer.push(ir::tensor_from_f32("C", &ArrayD::zeros(IxDyn(&[3]))));
    graph.input.push(float_value_info("W6", &[4, 3]));

    let config =
        QuantizeDynamicConfig { nodes_to_exclude: vec!["excluded".into()], ..Default::default() };
    let ours = run_pass(model(graph, 13), config).expect("one node is quantized");
    assert!(node_named(&ours, "quantized").is_none(), "the plain MatMul was not replaced");
    for name in [
        "gemm_trans_a",
        "gemm_beta",
        "float16_weight",
        "batched_weight",
        "weight_is_input",
        "excluded",
    ] {
        assert!(node_named(&ours, name).is_some(), "`{name}` should have stayed float");
    }
    assert_eq!(op_types(&ours).iter().filter(|&&op| op == "MatMulInteger").count(), 1);

    // W1 is still read by the excluded MatMul, so its float copy stays beside the INT8 one.
    let graph = ours.graph.as_ref().expect("a graph");
    assert!(ir::initializer(graph, "W1").is_some());
    assert!(ir::initializer(graph, "W1_quantized").is_some());
}

/// Two MatMuls read the same activation and the same weight, and a third reads another
/// weight: ORT quantizes the activation once and the shared weight once; so must we.
fn shared_model() -> ModelProto {
    let graph = matmul_graph(
        vec![
            ir::make_node("MatMul", &["x", "W"], &["y1"], "m1"),
            ir::make_node("MatMul", &["x", "W"], &["y2"], "m2"),
            ir::make_node("MatMul", &["x", "V"], &["y3"], "m3"),
        ],
        vec![weight("W", 1), weight("V", 2)],
        &["y1", "y2", "y3"],
    );
    model(graph, 13)
}

#[test]
fn shared_activation_and_weight_are_quantized_once() {
    let ours = run_pass(shared_model(), QuantizeDynamicConfig::default()).expect("quantizes");
    let ops = op_types(&ours);
    assert_eq!(ops.iter().filter(|&&op| op == "DynamicQuantizeLinear").count(), 1);
    assert_eq!(ops.iter().filter(|&&op| op == "MatMulInteger").count(), 3);

    let graph = ours.graph.as_ref().expect("a graph");
    let names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("W_quantized")).count(), 1, "{names:?}");
    assert!(!names.contains(&"W") && !names.contains(&"V"), "float weights were kept: {names:?}");

    check_model_against_ort(shared_model(), QuantizeDynamicConfig::default());
}

#[test]
fn new_names_never_collide_with_existing_ones() {
    // `W_quantized` and `x_scale` are taken already, by a weight and by a value.
    let graph = matmul_graph(
        vec![
            ir::make_node("Relu", &["x"], &["x_scale"], "relu"),
            ir::make_node("MatMul", &["x_scale", "W_quantized"], &["y1"], "m0"),
            ir::make_node("MatMul", &["x", "W"], &["y2"], "m1"),
        ],
        vec![weight("W", 1), weight("W_quantized", 2)],
        &["y1", "y2"],
    );
    let ours = run_pass(model(graph, 13), QuantizeDynamicConfig::default()).expect("quantizes");
    let graph = ours.graph.as_ref().expect("a graph");

    let mut produced = BTreeSet::new();
    for name in
        graph.initializer.iter().map(|t| t.name()).chain(graph.input.iter().map(|v| v.name()))
    {
        assert!(produced.insert(name.to_string()), "`{name}` is defined twice");
    }
    for node in &graph.node {
        for output in &node.output {
            assert!(produced.insert(output.clone()), "`{output}` is defined twice");
        }
    }
    let node_names: Vec<&str> = graph.node.iter().map(|n| n.name()).collect();
    let unique: BTreeSet<&str> = node_names.iter().copied().collect();
    assert_eq!(unique.len(), node_names.len(), "node names repeat: {node_names:?}");
}

#[test]
fn registry_builds_the_pass_from_json() {
    let info = pipeline_passes::pass::find("quantize_dynamic").expect("registered");
    let pass = (info.build)(&serde_json::json!({"per_channel": true, "reduce_range": true}));
    assert!(pass.is_ok());
    let err = (info.build)(&serde_json::json!({"per_chanel": true})).err().expect("refused");
    assert!(err.to_string().contains("per_chanel"), "{err}");
    let mut names = info.parameter_names();
    names.sort();
    assert_eq!(names, ["nodes_to_exclude", "op_types", "per_channel", "reduce_range"]);
}

#[test]
fn digits_example_matches_ort_bit_for_bit() {
    let path = workspace().join("examples/digits/model.onnx");
    let float = ir::load(&path).expect("the digits example model loads");
    for per_channel in [false, true] {
        let config = QuantizeDynamicConfig { per_channel, ..Default::default() };
        let (_, report) = check_model_against_ort(float.clone(), config);
        let weights = report_weights(&report, "ort_weights");
        let names: Vec<&str> = weights.keys().map(String::as_str).collect();
        assert_eq!(names, ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]);
    }
}

fn warnings(logs: &[(tracing::Level, String)]) -> Vec<&str> {
    logs.iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .map(|(_, m)| m.as_str())
        .collect()
}

#[test]
fn quantized_convs_are_one_warning_with_their_count() {
    let path = workspace().join("examples/digits/model.onnx");
    let float = ir::load(&path).expect("the digits example model loads");

    let (result, logs) = capture_logs(|| run_pass(float.clone(), QuantizeDynamicConfig::default()));
    result.expect("the digits model quantizes");
    let warned = warnings(&logs);
    assert_eq!(warned.len(), 1, "{warned:?}");
    for part in ["quantized 2 Conv node(s)", "slower", "latency", "`op_types: [MatMul, Gemm]`"] {
        assert!(warned[0].contains(part), "the warning lacks {part:?}: {}", warned[0]);
    }

    let config = QuantizeDynamicConfig {
        op_types: vec!["MatMul".into(), "Gemm".into()],
        ..Default::default()
    };
    let (result, logs) = capture_logs(|| run_pass(float, config));
    let ours = result.expect("the digits model quantizes without its Convs");
    assert!(warnings(&logs).is_empty(), "{logs:?}");
    assert_eq!(op_types(&ours).iter().filter(|&&op| op == "Conv").count(), 2);
}

#[test]
fn excluding_a_node_that_does_not_exist_is_a_warning_naming_it() {
    let config = QuantizeDynamicConfig {
        nodes_to_exclude: vec!["m2".into(), "no_such_node".into()],
        op_types: vec!["MatMul".into(), "Gemm".into()],
        ..Default::default()
    };
    let (result, logs) = capture_logs(|| run_pass(float_model(), config));
    let ours = result.expect("the other nodes quantize");
    assert!(node_named(&ours, "m2").is_some(), "the excluded node was quantized");

    let warned = warnings(&logs);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("`no_such_node`") && warned[0].contains("no node"), "{warned:?}");
}
