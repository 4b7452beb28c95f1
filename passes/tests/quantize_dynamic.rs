//! Acceptance test of `quantize_dynamic` against ONNX Runtime's own `quantize_dynamic`.
//!
//! A float model with MatMuls of different weight ranges (one all positive, one with a zero
//! column), a Gemm with `transB = 1` and a bias, a Conv with a bias and a MatMul that cannot
//! be quantized is built here, quantized by our pass, and handed with the float model to
//! `scripts/reference/quantize_dynamic.py`, which quantizes the float model with ORT's tool
//! and runs all three models on the same random inputs. Every quantized weight, scale and zero
//! point must equal ORT's bit for bit, and our outputs must be as close to the float outputs
//! as ORT's own quantized model's are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use pipeline_passes::ir::{self, SaveOptions};
use pipeline_passes::pass::{Pass, PassContext};
use pipeline_passes::quantize::dynamic::{QuantizeDynamic, QuantizeDynamicConfig};
use serde_json::Value;

/// Largest error to the float outputs, as a share of the float output's range.
const MAX_ERROR_SHARE_OF_RANGE: f64 = 0.05;

/// How much farther from float our outputs may be than ORT's quantized model's.
const MAX_ERROR_FACTOR_OVER_ORT: f64 = 1.25;

/// Our graph does ORT's arithmetic in ORT's order, so the two quantized models agree to
/// float rounding: this share of the output range.
const MAX_DIFFERENCE_TO_ORT: f64 = 1e-6;

/// A small deterministic generator (SplitMix64), so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box-Muller.
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn array(&mut self, shape: &[usize], mut f: impl FnMut(&mut Rng) -> f64) -> ArrayD<f32> {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || f(self) as f32)
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("passes/ has a parent").to_path_buf()
}

fn python() -> PathBuf {
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-env.sh to create the test environment",
        python.display()
    );
    python
}

fn float_value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor { elem_type: Some(1), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(graph: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("quantize_dynamic test".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// The float model: `x [4,16] -> m1 -> m2 -> m3 -> g (Gemm) -> out_gemm`, `m4` multiplies
/// `y2` by its own transpose (no constant weight: left in float by both tools), and
/// `z [1,3,8,8] -> c (Conv) -> out_conv`.
fn float_model() -> ModelProto {
    let mut rng = Rng(7);
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
        input: vec![float_value("x", &[4, 16]), float_value("z", &[1, 3, 8, 8])],
        output: vec![
            float_value("out_gemm", &[4, 5]),
            float_value("out_gram", &[4, 4]),
            float_value("out_conv", &[1, 4, 8, 8]),
        ],
        ..Default::default()
    };
    model(graph, 13)
}

/// What our model holds for one quantized weight, in the report's terms.
#[derive(Debug, PartialEq)]
struct QuantizedWeight {
    op: String,
    shape: Vec<i64>,
    values: Vec<i64>,
    scale_shape: Vec<i64>,
    scale_bits: Vec<i64>,
    zero_point_shape: Vec<i64>,
    zero_point: Vec<i64>,
}

fn int8_values(tensor: &TensorProto) -> Vec<i64> {
    assert_eq!(tensor.data_type(), 3, "`{}` is not INT8", tensor.name());
    match &tensor.raw_data {
        Some(raw) => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        None => tensor.int32_data.iter().map(|&v| i64::from(v)).collect(),
    }
}

/// Our quantized weights by float name, found through the integer nodes that read them.
fn our_weights(model: &ModelProto) -> BTreeMap<String, QuantizedWeight> {
    let graph = model.graph.as_ref().expect("our model has a graph");
    let mut weights = BTreeMap::new();
    for node in graph.node.iter().filter(|n| n.op_type().ends_with("Integer")) {
        let base = node.input[1].strip_suffix("_quantized").expect("weight named <W>_quantized");
        let zero_point_name = format!("{base}_zero_point");
        let scale_name = format!("{base}_scale");
        assert_eq!(
            node.input[3],
            zero_point_name,
            "node `{}` reads another zero point",
            node.name()
        );
        assert!(
            graph.node.iter().any(|n| n.op_type() == "Mul" && n.input.contains(&scale_name)),
            "no Mul reads `{scale_name}`"
        );

        let tensor = |name: &str| ir::initializer(graph, name).expect("initializer exists");
        let values = tensor(&node.input[1]);
        let scale = tensor(&scale_name);
        let zero_point = tensor(&zero_point_name);
        assert_eq!(scale.data_type(), 1, "`{scale_name}` is not FLOAT");
        let scale_values = ir::tensor_to_f32(scale).expect("scale reads as f32");
        weights.insert(
            base.to_string(),
            QuantizedWeight {
                op: node.op_type().to_string(),
                shape: values.dims.clone(),
                values: int8_values(values),
                scale_shape: scale.dims.clone(),
                scale_bits: scale_values.iter().map(|s| i64::from(s.to_bits())).collect(),
                zero_point_shape: zero_point.dims.clone(),
                zero_point: int8_values(zero_point),
            },
        );
    }
    weights
}

fn report_weights(report: &Value, key: &str) -> BTreeMap<String, QuantizedWeight> {
    let ints = |v: &Value| -> Vec<i64> {
        v.as_array().expect("a list").iter().map(|x| x.as_i64().expect("an integer")).collect()
    };
    let mut weights = BTreeMap::new();
    for (name, w) in report[key].as_object().expect("weights are an object") {
        assert_eq!(w["dtype"], "int8", "{key} `{name}` is not int8");
        assert_eq!(w["zero_point_dtype"], "int8", "{key} `{name}` zero point is not int8");
        weights.insert(
            name.clone(),
            QuantizedWeight {
                op: w["op"].as_str().expect("op").to_string(),
                shape: ints(&w["shape"]),
                values: ints(&w["values"]),
                scale_shape: ints(&w["scale_shape"]),
                scale_bits: ints(&w["scale_bits"]),
                zero_point_shape: ints(&w["zero_point_shape"]),
                zero_point: ints(&w["zero_point"]),
            },
        );
    }
    weights
}

fn run_reference(dir: &Path, config: &QuantizeDynamicConfig) -> Value {
    let report_path = dir.join("report.json");
    let mut command = Command::new(python());
    command
        .arg(workspace().join("scripts/reference/quantize_dynamic.py"))
        .arg("--float")
        .arg(dir.join("float.onnx"))
        .arg("--ours")
        .arg(dir.join("ours.onnx"))
        .arg("--workdir")
        .arg(dir)
        .arg("--report")
        .arg(&report_path)
        .arg("--op-types")
        .arg(config.op_types.join(","))
        .arg("--exclude")
        .arg(config.nodes_to_exclude.join(","));
    if config.per_channel {
        command.arg("--per-channel");
    }
    if config.reduce_range {
        command.arg("--reduce-range");
    }

    let output = command.output().expect("the reference script starts");
    assert!(
        output.status.success(),
        "the reference script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&report_path).expect("the script wrote its report");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn interface(model: &ModelProto) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    let graph = model.graph.as_ref().expect("a graph");
    (graph.input.clone(), graph.output.clone())
}

/// Quantizes the float model with `config`, checks it against ORT, and returns the report.
fn check_against_ort(config: QuantizeDynamicConfig) -> Value {
    check_model_against_ort(float_model(), config)
}

/// Quantizes `float` with `config`, checks the result against ORT, and returns the report.
fn check_model_against_ort(float: ModelProto, config: QuantizeDynamicConfig) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    ir::save(&float, &dir.path().join("float.onnx"), &SaveOptions::default())
        .expect("the float model saves");

    let pass = QuantizeDynamic::new(config.clone()).expect("the configuration is valid");
    let ours =
        pass.run(float.clone(), &PassContext::default()).expect("the pass quantizes the model");
    ir::save(&ours, &dir.path().join("ours.onnx"), &SaveOptions::default())
        .expect("our model saves");
    assert_eq!(interface(&ours), interface(&float), "the model's interface changed");

    let report = run_reference(dir.path(), &config);
    assert_eq!(report["checker"], "ok", "onnx.checker refuses our model");
    assert_eq!(report["ort_load"], "ok", "ONNX Runtime does not load our model");

    let ort = report_weights(&report, "ort_weights");
    let ours_in_memory = our_weights(&ours);
    let ours_from_file = report_weights(&report, "ours_weights");
    assert!(!ort.is_empty(), "ORT quantized nothing, so nothing was compared");
    assert_eq!(
        ours_in_memory.keys().collect::<BTreeSet<_>>(),
        ort.keys().collect::<BTreeSet<_>>(),
        "we and ORT quantized different weights"
    );
    for (name, theirs) in &ort {
        assert_eq!(&ours_in_memory[name], theirs, "weight `{name}` differs from ORT's");
        assert_eq!(&ours_from_file[name], theirs, "weight `{name}` as saved differs from ORT's");
    }

    for (name, out) in report["outputs"].as_object().expect("outputs were compared") {
        let get = |key: &str| out[key].as_f64().expect("a number");
        let (range, ours_err, ort_err, to_ort) = (
            get("float_range"),
            get("ours_max_abs_error"),
            get("ort_max_abs_error"),
            get("ours_vs_ort_max_abs"),
        );
        eprintln!(
            "{name}: range {range:.4}, ours {ours_err:.6}, ORT {ort_err:.6}, ours vs ORT {to_ort}"
        );
        assert!(
            ours_err < MAX_ERROR_SHARE_OF_RANGE * range,
            "output `{name}`: max error {ours_err} is over 5% of the float range {range}"
        );
        assert!(
            ours_err <= MAX_ERROR_FACTOR_OVER_ORT * ort_err + 1e-6 * range,
            "output `{name}`: max error {ours_err} is well over ORT's {ort_err}"
        );
        assert!(
            to_ort <= MAX_DIFFERENCE_TO_ORT * range,
            "output `{name}`: ours and ORT's quantized models differ by {to_ort}"
        );
    }
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
        input: vec![float_value("x", &[2, 4])],
        output: outputs.iter().map(|&name| float_value(name, &[2, 3])).collect(),
        ..Default::default()
    }
}

fn weight(name: &str, seed: u64) -> TensorProto {
    ir::tensor_from_f32(name, &Rng(seed).array(&[4, 3], |r| r.normal()))
}

fn run_pass(model: ModelProto, config: QuantizeDynamicConfig) -> Result<ModelProto, String> {
    let pass = QuantizeDynamic::new(config).map_err(|e| e.to_string())?;
    pass.run(model, &PassContext::default()).map_err(|e| e.to_string())
}

fn op_types(model: &ModelProto) -> Vec<&str> {
    model.graph.as_ref().expect("a graph").node.iter().map(|n| n.op_type()).collect()
}

fn node_named<'m>(model: &'m ModelProto, name: &str) -> Option<&'m NodeProto> {
    model.graph.as_ref().expect("a graph").node.iter().find(|n| n.name() == name)
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
    let half = TensorProto { data_type: Some(10), raw_data: Some(vec![0; 24]), ..half };
    let batched = ir::tensor_from_f32("W5", &Rng(5).array(&[2, 4, 3], |r| r.normal()));

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
    graph.input.push(float_value("W6", &[4, 3]));

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
        let report = check_model_against_ort(float.clone(), config);
        let weights = report_weights(&report, "ort_weights");
        let names: Vec<&str> = weights.keys().map(String::as_str).collect();
        assert_eq!(names, ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]);
    }
}
