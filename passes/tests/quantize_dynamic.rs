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
    tensor_shape_proto, type_proto, GraphProto, ModelProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use pipeline_passes::ir::{self, SaveOptions};
use pipeline_passes::pass::Pass;
use pipeline_passes::quantize::dynamic::{QuantizeDynamic, QuantizeDynamicConfig};
use serde_json::Value;

/// Largest error to the float outputs, as a share of the float output's range.
const MAX_ERROR_SHARE_OF_RANGE: f64 = 0.05;

/// How much farther from float our outputs may be than ORT's quantized model's.
const MAX_ERROR_FACTOR_OVER_ORT: f64 = 1.25;

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
    let dir = tempfile::tempdir().expect("a temporary directory");
    let float = float_model();
    ir::save(&float, &dir.path().join("float.onnx"), &SaveOptions::default())
        .expect("the float model saves");

    let pass = QuantizeDynamic::new(config.clone()).expect("the configuration is valid");
    let ours = pass.run(float.clone()).expect("the pass quantizes the model");
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
        let (range, ours_err, ort_err) =
            (get("float_range"), get("ours_max_abs_error"), get("ort_max_abs_error"));
        eprintln!(
            "{name}: range {range:.4}, ours {ours_err:.6}, ORT {ort_err:.6}, ours vs ORT {:.6}",
            get("ours_vs_ort_max_abs")
        );
        assert!(
            ours_err < MAX_ERROR_SHARE_OF_RANGE * range,
            "output `{name}`: max error {ours_err} is over 5% of the float range {range}"
        );
        assert!(
            ours_err <= MAX_ERROR_FACTOR_OVER_ORT * ort_err + 1e-6 * range,
            "output `{name}`: max error {ours_err} is well over ORT's {ort_err}"
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
