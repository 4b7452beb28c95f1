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
