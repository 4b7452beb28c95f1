//! `pipeline run` on models built to break things: each test makes its model with the ONNX
//! Python package, runs the binary on it, and checks that the run reports what went wrong for
//! the one candidate it concerns, goes on, and exits with the code the README gives.

mod common;

use std::path::Path;
use std::process::Command as Process;

use common::{ort_library, outcome, pipeline, venv_python};
use serde_json::Value;

/// Runs `script` with the test venv's Python in `dir`, failing the test if Python fails.
fn python_in(dir: &Path, script: &str) {
    let output = Process::new(venv_python())
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("the venv's python starts");
    assert!(
        output.status.success(),
        "python failed (run scripts/setup-test-env.sh if a module is missing):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run(dir: &Path) -> common::Outcome {
    let mut command = pipeline();
    command.current_dir(dir).arg("run").arg("recipe.yaml").arg("--ort-lib").arg(ort_library());
    outcome(&mut command)
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("out/report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// y = 1 / (x0 - x1): the first sample has x0 - x1 = 0.001, which INT8 inputs cannot tell
/// from 0, so the quantized model divides by zero where the float model does not.
const DIVIDES_BY_ZERO_WHEN_QUANTIZED: &str = r#"
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
c = lambda n, v: numpy_helper.from_array(np.array(v, dtype=np.float32), n)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Div", ["one", "m"], ["y"])],
    "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    [c("w", [[1.0], [-1.0]]), c("one", [1.0])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, "model.onnx")
x = np.random.default_rng(0).uniform(-10, 10, (16, 2)).astype(np.float32)
x[0] = [5.001, 5.0]
np.savez("eval.npz", x=x)
"#;

const STATIC_RECIPE: &str = "\
name: nan
model: model.onnx
data:
  calibration: {path: eval.npz}
  evaluation: {path: eval.npz}
metrics:
  latency: {warmup: 1, runs: 3}
objective: [latency]
passes:
  - one_of:
      - quantize_static: {calibration: minmax}
      - quantize_dynamic: {}
output: out/
";

#[test]
fn a_candidate_whose_output_turns_infinite_fails_with_that_reason() {
    let dir = tempfile::tempdir().unwrap();
    python_in(dir.path(), DIVIDES_BY_ZERO_WHEN_QUANTIZED);
    std::fs::write(dir.path().join("recipe.yaml"), STATIC_RECIPE).unwrap();

    let result = run(dir.path());

    result.expect_code(1).no_panic();
    let report = report(dir.path());
    let candidates = report["candidates"].as_array().expect("candidates");
    // Static and dynamic INT8 both quantize x, and so both divide by zero: each fails with
    // the reason, the run measures both, and with no candidate left it exits 1.
    assert_eq!(candidates.len(), 2, "{report:#}");
    for candidate in candidates {
        assert_eq!(candidate["status"], "failed", "{candidate:#}");
        let reason = candidate["reasons"][0].as_str().unwrap_or_default();
        assert!(
            reason.contains("output y holds NaN or infinity")
                && reason.contains("where the source model's is finite"),
            "{reason}"
        );
    }
    assert!(report["best"].is_null());
}

/// y = Sqrt(x): the evaluation data holds negative numbers, so the source's own output is NaN.
const SOURCE_IS_NAN: &str = r#"
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
w = numpy_helper.from_array(np.full((4, 4), 0.5, dtype=np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Sqrt", ["m"], ["y"])],
    "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    [w],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, "model.onnx")
np.savez("eval.npz", x=np.random.default_rng(1).uniform(-2, 1, (16, 4)).astype(np.float32))
"#;

#[test]
fn nan_the_source_has_too_is_not_held_against_a_candidate() {
    let dir = tempfile::tempdir().unwrap();
    python_in(dir.path(), SOURCE_IS_NAN);
    let recipe = STATIC_RECIPE.replace("      - quantize_static: {calibration: minmax}\n", "");
    std::fs::write(dir.path().join("recipe.yaml"), recipe).unwrap();

    let result = run(dir.path());

    result.expect_code(0).no_panic();
    assert!(result.stderr.contains("the source model's output y holds NaN"), "{}", result.stderr);
    let report = report(dir.path());
    assert_eq!(report["candidates"][0]["status"], "passed", "{report:#}");
}

/// Builds the models of the cases below into the current folder, with `data.npz` (64 samples
/// of `x`, float32 [N, 32]); every model maps x to y, float32 [N, 16].
const ZOO: &str = r#"
import numpy as np, onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
rng = np.random.default_rng(0)
K, N = 32, 16
W = rng.standard_normal((K, N)).astype(np.float32)
def save(name, nodes, inits, opset=17, ir=8, inputs=None, outputs=None, extra_opsets=()):
    g = h.make_graph(nodes, name, inputs or [h.make_tensor_value_info("x", T.FLOAT, ["N", K])],
                     outputs or [h.make_tensor_value_info("y", T.FLOAT, ["N", N])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)] + list(extra_opsets))
    m.ir_version = ir
    onnx.save(m, f"{name}.onnx")
x = rng.standard_normal((64, K)).astype(np.float32)
np.savez("data.npz", x=x)
# a: weight from a Constant node
save("constant", [h.make_node("Constant", [], ["w"], value=nh.from_array(W, "wv")),
                  h.make_node("MatMul", ["x", "w"], ["y"])], [])
# b1: weight behind Cast (fp16 initializer)
save("cast", [h.make_node("Cast", ["w16"], ["w"], to=T.FLOAT), h.make_node("MatMul", ["x", "w"], ["y"])],
     [nh.from_array(W.astype(np.float16), "w16")])
# b2: weight behind Transpose
save("transpose", [h.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]), h.make_node("MatMul", ["x", "w"], ["y"])],
     [nh.from_array(W.T.copy(), "wt")])
# c: shared initializer used by two MatMuls
W2 = rng.standard_normal((K, K)).astype(np.float32)
save("shared", [h.make_node("MatMul", ["x", "w2"], ["a"]), h.make_node("Relu", ["a"], ["r"]),
                h.make_node("MatMul", ["r", "w2"], ["b"]), h.make_node("MatMul", ["b", "w"], ["y"])],
     [nh.from_array(W2, "w2"), nh.from_array(W, "w")])
# d: names that collide with names passes make
save("collide", [h.make_node("MatMul", ["x", "w"], ["w_quantized"]), h.make_node("Relu", ["w_quantized"], ["x_scale"]),
                 h.make_node("Add", ["x_scale", "w_scale"], ["y"])],
     [nh.from_array(W, "w"), nh.from_array(np.ones(N, np.float32), "w_scale")])
# e: If with MatMuls in both branches
then_g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["t"])], "then", [], [h.make_tensor_value_info("t", T.FLOAT, ["N", N])])
else_g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Neg", ["m"], ["e"])], "else", [], [h.make_tensor_value_info("e", T.FLOAT, ["N", N])])
save("if", [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0), h.make_node("Greater", ["s", "zero"], ["c"]),
            h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
     [nh.from_array(W, "w"), nh.from_array(np.array(0, np.float32), "zero")], opset=13)
# e2: Loop
body = h.make_graph([h.make_node("MatMul", ["acc_in", "w2"], ["acc_out0"]), h.make_node("Tanh", ["acc_out0"], ["acc_out"]),
                     h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                    [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
                     h.make_tensor_value_info("acc_in", T.FLOAT, ["N", K])],
                    [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("acc_out", T.FLOAT, ["N", K])])
save("loop", [h.make_node("Loop", ["trip", "", "x"], ["l"], body=body), h.make_node("MatMul", ["l", "w"], ["y"])],
     [nh.from_array(W2 * 0.2, "w2"), nh.from_array(W, "w"), nh.from_array(np.array(3, np.int64), "trip")], opset=13)
# f: old opsets
for op in (10, 11):
    save(f"opset{op}", [h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Relu", ["a"], ["y"])], [nh.from_array(W, "w")], opset=op, ir=6)
# g: custom-domain op
save("custom", [h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Frobnicate", ["a"], ["y"], domain="com.example")],
     [nh.from_array(W, "w")], extra_opsets=[h.make_opsetid("com.example", 1)])
"#;

/// Every pass a user would try on such a model, each judged by fidelity to the source.
fn zoo_recipe(model: &str) -> String {
    format!(
        "name: {model}
model: {model}.onnx
data:
  calibration: {{path: data.npz}}
  evaluation: {{path: data.npz}}
metrics:
  accuracy: {{kind: fidelity, output: y, min: 0.99}}
  latency: {{warmup: 1, runs: 2}}
objective: [latency]
passes:
  - one_of:
      - quantize_dynamic: {{}}
      - quantize_static: {{calibration: minmax}}
      - quantize_weights: {{bits: 4, block_size: 16}}
      - convert_fp16: {{}}
output: out/
"
    )
}

/// Builds the zoo, runs the recipe of `model` and returns the run's outcome and report, whose
/// candidates are c1 dynamic, c2 static, c3 weight-only, c4 fp16.
fn run_zoo(model: &str) -> (common::Outcome, Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    python_in(dir.path(), ZOO);
    std::fs::write(dir.path().join("recipe.yaml"), zoo_recipe(model)).unwrap();
    let result = run(dir.path());
    let report =
        if dir.path().join("out/report.json").exists() { report(dir.path()) } else { Value::Null };
    (result, report, dir)
}

/// Asserts that the candidate `index` (0-based) passed, and so kept a mean cosine similarity
/// of at least 0.99 to the source's output: the pass did not corrupt the model.
fn assert_passed(report: &Value, index: usize) {
    let candidate = &report["candidates"][index];
    assert_eq!(candidate["status"], "passed", "{candidate:#}");
    let cosine = candidate["measurement"]["fidelity"]["cosine_mean"].as_f64().unwrap();
    assert!(cosine >= 0.99, "{candidate:#}");
}

fn reason(report: &Value, index: usize) -> String {
    report["candidates"][index]["reasons"][0].as_str().unwrap_or_default().to_string()
}

#[test]
fn weights_in_constant_nodes_are_quantized_by_every_pass() {
    let (result, report, _dir) = run_zoo("constant");
    result.expect_code(0).no_panic();
    for index in 0..4 {
        assert_passed(&report, index);
    }
}

#[test]
fn weights_behind_a_cast_or_a_transpose_are_quantized() {
    let (result, report, _dir) = run_zoo("cast");
    result.expect_code(0).no_panic();
    for index in 0..4 {
        assert_passed(&report, index);
    }

    // Dynamic quantization, like ONNX Runtime's, reads weights from initializers; a
    // Transpose of one is named, with the pass that folds it.
    let (result, report, _dir) = run_zoo("transpose");
    result.expect_code(0).no_panic();
    assert_eq!(report["candidates"][0]["status"], "unchanged", "{report:#}");
    let reason = reason(&report, 0);
    assert!(reason.contains("computed by a Transpose node") && reason.contains("`fuse`"));
    for index in 1..4 {
        assert_passed(&report, index);
    }
}

#[test]
fn shared_weights_and_names_that_passes_would_make_are_kept_apart() {
    // `shared` reads one initializer in two MatMuls; `collide` already has values named
    // `w_quantized`, `x_scale` and `w_scale`, names a quantizer might choose.
    for model in ["shared", "collide"] {
        let (result, report, _dir) = run_zoo(model);
        result.expect_code(0).no_panic();
        for index in 0..4 {
            assert_passed(&report, index);
        }
    }
}

#[test]
fn matmuls_inside_if_branches_are_left_alone_with_a_message() {
    let (result, report, _dir) = run_zoo("if");
    result.expect_code(0).no_panic();
    for index in 0..3 {
        assert_eq!(report["candidates"][index]["status"], "unchanged", "{report:#}");
        let reason = reason(&report, index);
        assert!(
            reason.contains("2 MatMul inside If/Loop/Scan subgraphs left in float"),
            "{reason}"
        );
    }
    assert_passed(&report, 3);
}

#[test]
fn a_loop_body_is_left_alone_and_the_main_graph_quantized() {
    let (result, report, dir) = run_zoo("loop");
    result.expect_code(0).no_panic();
    assert!(result.stderr.contains("1 MatMul inside If/Loop/Scan subgraphs left in float"));
    for index in 0..4 {
        assert_passed(&report, index);
    }
    // The written model's Loop body still holds its float MatMul.
    let check = r#"
import onnx
m = onnx.load("out/loop.onnx")
loop = [n for n in m.graph.node if n.op_type == "Loop"][0]
body = loop.attribute[0].g
assert [n.op_type for n in body.node] == ["MatMul", "Tanh", "Identity"], body.node
"#;
    python_in(dir.path(), check);
}

#[test]
fn opset_10_refuses_dynamic_quantization_with_the_reason_and_the_run_goes_on() {
    let (result, report, _dir) = run_zoo("opset10");
    result.expect_code(0).no_panic();
    assert_eq!(report["candidates"][0]["status"], "failed", "{report:#}");
    assert!(reason(&report, 0).contains("needs opset 11"), "{}", reason(&report, 0));
    for index in 1..4 {
        assert_passed(&report, index);
    }

    let (result, report, _dir) = run_zoo("opset11");
    result.expect_code(0).no_panic();
    for index in 0..4 {
        assert_passed(&report, index);
    }
}

#[test]
fn a_custom_domain_op_is_named_with_what_to_do_and_nothing_is_written() {
    let (result, report, dir) = run_zoo("custom");
    result.expect_code(2).no_panic().stderr_has(&[
        "com.example:Frobnicate",
        "custom-op library",
        "--no-measure",
    ]);
    assert!(report.is_null());
    assert!(!dir.path().join("out").exists());
}

/// A Gather over a 10-row table, fed ids up to 19: the model loads, and the data checks
/// (names, dtypes, shapes) pass, but ONNX Runtime refuses the ids when it runs.
const GATHER_WITH_IDS_OUT_OF_RANGE: &str = r#"
import numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
table = numpy_helper.from_array(np.ones((10, 4), dtype=np.float32), "table")
graph = helper.make_graph(
    [helper.make_node("Gather", ["table", "ids"], ["y"])],
    "g",
    [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    [table],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, "model.onnx")
np.savez("eval.npz", ids=np.arange(20, dtype=np.int64))
"#;

#[test]
fn evaluation_data_the_source_model_cannot_run_on_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    python_in(dir.path(), GATHER_WITH_IDS_OUT_OF_RANGE);
    let recipe = STATIC_RECIPE
        .replace("  calibration: {path: eval.npz}\n", "")
        .replace("      - quantize_static: {calibration: minmax}\n", "      - fuse: {}\n");
    std::fs::write(dir.path().join("recipe.yaml"), recipe).unwrap();

    let outcome = run(dir.path());
    outcome.expect_code(2).no_panic().stderr_has(&[
        "recipe.yaml:4:3: data.evaluation: the source model fails on",
        "eval.npz",
        "out of",
        "hint: check that the arrays hold what the model expects",
    ]);
    // Said once, by pipeline: ONNX Runtime's own log line of the error is not printed.
    assert!(!outcome.stderr.contains("onnxruntime:"), "{}", outcome.stderr);
    assert!(!dir.path().join("out").exists());
}
