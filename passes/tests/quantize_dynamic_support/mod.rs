//! What the `quantize_dynamic` test files share: a seeded generator, model builders, the run
//! of `scripts/reference/quantize_dynamic.py` with its bit-for-bit and tolerance checks, and a
//! log recorder.
//!
//! The reference script quantizes the float model with ORT's own `quantize_dynamic` and runs
//! the float model, ours and ORT's on the same random inputs. Every quantized weight, scale
//! and zero point of ours must equal ORT's bit for bit, and our outputs must be as close to
//! the float outputs as ORT's quantized model's are, and equal to ORT's up to float rounding.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use pipeline_passes::ir::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use pipeline_passes::ir::shapes::Dim;
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

/// ONNX's element type numbers.
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;

#[path = "../common/rng.rs"]
mod rng;
pub use rng::Rng;

pub fn workspace() -> PathBuf {
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

/// A tensor value of element type `elem_type` and fixed shape `dims`.
pub fn value(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
    ir::tensor_value_info(name, elem_type, Some(&dims))
}

/// A model importing `opset` of the default domain.
pub fn model(graph: GraphProto, opset: i64) -> ModelProto {
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

/// A node of the `com.microsoft` domain.
pub fn ms_node(op_type: &str, inputs: &[&str], outputs: &[&str], name: &str) -> NodeProto {
    NodeProto {
        domain: Some("com.microsoft".into()),
        ..ir::make_node(op_type, inputs, outputs, name)
    }
}

pub fn run_pass(model: ModelProto, config: QuantizeDynamicConfig) -> Result<ModelProto, String> {
    let pass = QuantizeDynamic::new(config).map_err(|e| e.to_string())?;
    pass.run(model, &PassContext::default()).map_err(|e| e.to_string())
}

pub fn op_types(model: &ModelProto) -> Vec<&str> {
    model.graph.as_ref().expect("a graph").node.iter().map(|n| n.op_type()).collect()
}

pub fn count_op(model: &ModelProto, op_type: &str) -> usize {
    op_types(model).iter().filter(|&&op| op == op_type).count()
}

pub fn node_named<'m>(model: &'m ModelProto, name: &str) -> Option<&'m NodeProto> {
    model.graph.as_ref().expect("a graph").node.iter().find(|n| n.name() == name)
}

/// One quantized weight as the reference script reports it.
#[derive(Debug, PartialEq)]
pub struct QuantizedWeight {
    pub op: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub values: Vec<i64>,
    pub scale_shape: Vec<i64>,
    pub scale_bits: Vec<i64>,
    pub zero_point_dtype: String,
    pub zero_point_shape: Vec<i64>,
    pub zero_point: Vec<i64>,
}

/// The weights under `key` (`ort_weights` or `ours_weights`) of a report, by float name.
pub fn report_weights(report: &Value, key: &str) -> BTreeMap<String, QuantizedWeight> {
    let ints = |v: &Value| -> Vec<i64> {
        v.as_array().expect("a list").iter().map(|x| x.as_i64().expect("an integer")).collect()
    };
    let text = |v: &Value| v.as_str().expect("a string").to_string();
    let mut weights = BTreeMap::new();
    for (name, w) in report[key].as_object().expect("weights are an object") {
        weights.insert(
            name.clone(),
            QuantizedWeight {
                op: text(&w["op"]),
                dtype: text(&w["dtype"]),
                shape: ints(&w["shape"]),
                values: ints(&w["values"]),
                scale_shape: ints(&w["scale_shape"]),
                scale_bits: ints(&w["scale_bits"]),
                zero_point_dtype: text(&w["zero_point_dtype"]),
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

/// Whether ONNX Runtime's CPU kernels for uint8 activations x int8 weights can saturate on
/// this machine: on x86-64 without VNNI (AVX2 only), MLAS sums pairs of products in int16
/// (`vpmaddubsw`), which overflows for large activations and weights. That is why ORT's tool
/// offers `reduce_range`; a model quantized without it can be far from float there, however
/// exact its weights are.
pub fn u8s8_kernels_saturate() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: BTreeSet<&str> = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .flat_map(|line| line.split_whitespace())
        .collect();
    !["avx512_vnni", "avx_vnni", "amx_int8"].iter().any(|flag| flags.contains(flag))
}

fn interface(model: &ModelProto) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    let graph = model.graph.as_ref().expect("a graph");
    (graph.input.clone(), graph.output.clone())
}

/// Quantizes `float` with `config`, checks the result against ORT, and returns our model
/// and the report.
pub fn check_model_against_ort(
    float: ModelProto,
    config: QuantizeDynamicConfig,
) -> (ModelProto, Value) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    ir::save(&float, &dir.path().join("float.onnx"), &SaveOptions::default())
        .expect("the float model saves");

    let ours = run_pass(float.clone(), config.clone()).expect("the pass quantizes the model");
    ir::save(&ours, &dir.path().join("ours.onnx"), &SaveOptions::default())
        .expect("our model saves");
    assert_eq!(interface(&ours), interface(&float), "the model's interface changed");

    let report = run_reference(dir.path(), &config);
    assert_eq!(report["checker"], "ok", "onnx.checker refuses our model");
    assert_eq!(report["ort_load"], "ok", "ONNX Runtime does not load our model");

    let ort = report_weights(&report, "ort_weights");
    let ours_weights = report_weights(&report, "ours_weights");
    assert!(!ort.is_empty(), "ORT quantized nothing, so nothing was compared");
    assert_eq!(
        ours_weights.keys().collect::<BTreeSet<_>>(),
        ort.keys().collect::<BTreeSet<_>>(),
        "we and ORT quantized different weights"
    );
    for (name, theirs) in &ort {
        assert_eq!(&ours_weights[name], theirs, "weight `{name}` differs from ORT's");
    }

    let saturating = u8s8_kernels_saturate();
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
        if saturating && !config.reduce_range {
            eprintln!(
                "{name}: this CPU has no VNNI, so ONNX Runtime's u8 x s8 kernels saturate \
                 without `reduce_range`; the error to float is only compared with ORT's"
            );
        } else {
            assert!(
                ours_err < MAX_ERROR_SHARE_OF_RANGE * range,
                "output `{name}`: max error {ours_err} is over 5% of the float range {range}"
            );
        }
        assert!(
            ours_err <= MAX_ERROR_FACTOR_OVER_ORT * ort_err + 1e-6 * range,
            "output `{name}`: max error {ours_err} is well over ORT's {ort_err}"
        );
        assert!(
            to_ort <= MAX_DIFFERENCE_TO_ORT * range,
            "output `{name}`: ours and ORT's quantized models differ by {to_ort}"
        );
    }
    (ours, report)
}

/// The `(level, message)` of every event logged while `f` runs on this thread.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<(tracing::Level, String)>) {
    let recorder = Recorder::default();
    let events = Arc::clone(&recorder.events);
    let result = tracing::subscriber::with_default(recorder, f);
    let events = events.lock().expect("no test panicked while logging").clone();
    (result, events)
}

/// A subscriber that keeps the level and message of every event.
#[derive(Default)]
struct Recorder {
    events: Arc<Mutex<Vec<(tracing::Level, String)>>>,
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let level = *event.metadata().level();
        self.events.lock().expect("no test panicked while logging").push((level, message.0));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// The `message` field of an event.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
