//! `pipeline run` end to end on the digits example: the table, the report, the best model
//! (checked against ONNX Runtime's Python package), goals nobody meets, and a source model
//! that is never modified.

mod common;

use std::path::Path;
use std::process::Command as Process;

use common::{outcome, Project};
use serde_json::Value;

/// Reads and parses `report.json` from `dir`.
fn read_report(dir: &Path) -> Value {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The cells of the table row whose first cell is `id` (the winner's is marked `* id`).
fn table_row<'a>(stdout: &'a str, id: &str) -> Vec<&'a str> {
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|line| line.contains('┆'))
        .map(|line| line.trim_matches(|c| c == '│' || c == ' ').split('┆').map(str::trim).collect())
        .filter(|cells: &Vec<&str>| cells[0].trim_start_matches("* ") == id)
        .collect();
    assert_eq!(rows.len(), 1, "expected one table row for `{id}` in:\n{stdout}");
    rows[0].clone()
}

/// Asserts that `cell` is an accuracy such as `97.50%` between 90% and 100%.
fn assert_accuracy_cell(cell: &str, stdout: &str) {
    let value: f64 = cell
        .strip_suffix('%')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`{cell}` is not an accuracy in:\n{stdout}"));
    assert!((90.0..=100.0).contains(&value), "accuracy {cell} out of range in:\n{stdout}");
}

/// Asserts that `cell` is a latency such as `0.123 ms` above zero.
fn assert_latency_cell(cell: &str, stdout: &str) {
    let value: f64 = cell
        .strip_suffix(" ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("`{cell}` is not a latency in:\n{stdout}"));
    assert!(value > 0.0, "latency {cell} is not positive in:\n{stdout}");
}

/// Top-1 accuracy of `model` on the project's test.npz, computed by ONNX Runtime's Python
/// package in batches of `batch` rows (dynamic quantization scales each batch on its own, so
/// the batching must be the engine's).
fn reference_accuracy(project: &Project, model: &Path, batch: usize) -> f64 {
    let script = r#"
import sys
import numpy as np
import onnxruntime as ort
model, data, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
test = np.load(data)
x, y = test["input"], test["y"]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
predicted = np.concatenate(
    [session.run(["logits"], {"input": x[i:i + batch]})[0].argmax(axis=1)
     for i in range(0, len(x), batch)]
)
print(float((predicted == y).mean()))
"#;
    let python = common::root().join(".venv/bin/python");
    assert!(python.exists(), "no {}: run scripts/setup-test-env.sh", python.display());
    let output = Process::new(&python)
        .arg("-c")
        .arg(script)
        .arg(model)
        .arg(project.path("test.npz"))
        .arg(batch.to_string())
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("python printed an accuracy")
}

/// One sample of the 360 in test.npz, and a little room for rounding.
const ONE_SAMPLE: f64 = 1.5 / 360.0;

#[test]
fn run_digits_writes_the_best_model_report_and_table() {
    let project = Project::digits();
    let elsewhere = tempfile::tempdir().expect("a temporary folder");

    // No --ort-lib: the binary finds the project's ONNX Runtime by itself. It is started in
    // another folder so that the recipe's relative paths must be resolved against its own.
    let result =
        outcome(common::pipeline().current_dir(elsewhere.path()).arg("run").arg(project.recipe()));
    result.expect_code(0).no_panic();
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).expect("the folder is readable").count(),
        0,
        "the run wrote into the current folder instead of the recipe's"
    );

    let stdout = &result.stdout;
    for id in ["source", "c1", "c2"] {
        let row = table_row(stdout, id);
        assert_accuracy_cell(row[2], stdout);
        assert_latency_cell(row[3], stdout);
    }

    let out = project.path("out");
    let report = read_report(&out);
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 2, "{report:#}");
    for candidate in candidates {
        let measured = &candidate["measurement"];
        let accuracy = measured["accuracy"].as_f64().expect("a measured accuracy");
        assert!((0.9..=1.0).contains(&accuracy), "accuracy {accuracy} in {candidate:#}");
        let p50 = measured["latency_ms"]["p50"].as_f64().expect("a measured p50");
        assert!(p50 > 0.0, "p50 {p50} in {candidate:#}");
        assert_eq!(measured["latency_ms"]["runs"], 5, "{candidate:#}");
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
    }
    let per_channel: Vec<&Value> =
        candidates.iter().map(|c| &c["steps"][0]["config"]["per_channel"]).collect();
    assert_eq!(per_channel, [&Value::Bool(false), &Value::Bool(true)], "{report:#}");

    let best = report["best"].as_str().expect("`best` names a candidate");
    assert!(best == "c1" || best == "c2", "best is {best}");
    assert!(table_row(stdout, best)[0].starts_with("* "), "the winner is not marked:\n{stdout}");
    let winner = candidates.iter().find(|c| c["id"] == best).expect("the winner is listed");

    // The best model is the bytes that were measured, and INT8 weights make it smaller.
    let best_model = out.join("model.onnx");
    let best_size = std::fs::metadata(&best_model).expect("the best model was written").len();
    let source_size = std::fs::metadata(project.path("model.onnx")).expect("the source").len();
    assert!(best_size < source_size / 2, "best {best_size} bytes, source {source_size} bytes");
    assert_eq!(winner["measurement"]["size_bytes"], best_size, "{winner:#}");
    assert_eq!(report["source"]["size_bytes"], source_size, "{report:#}");

    // Accuracy as ONNX Runtime's Python package counts it, for the source and the winner.
    let source_accuracy = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    let reference = reference_accuracy(&project, &project.path("model.onnx"), 64);
    assert!((source_accuracy - reference).abs() < ONE_SAMPLE, "{source_accuracy} vs {reference}");
    let best_accuracy = winner["measurement"]["accuracy"].as_f64().expect("an accuracy");
    let reference = reference_accuracy(&project, &best_model, 64);
    assert!((best_accuracy - reference).abs() < ONE_SAMPLE, "{best_accuracy} vs {reference}");

    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md was written");
    assert!(markdown.contains("c1") && markdown.contains("c2"), "{markdown}");

    let left: Vec<String> = std::fs::read_dir(&out)
        .expect("the output folder is readable")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut left_sorted = left.clone();
    left_sorted.sort();
    assert_eq!(
        left_sorted,
        ["model.onnx", "report.json", "report.md", "report.svg"],
        "output holds {left:?}"
    );
}

#[test]
fn run_where_no_candidate_meets_the_goals_exits_1_with_the_reasons() {
    let project = Project::digits();
    project.edit_recipe("size: {}", "size: {max_bytes: 100}");

    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();

    let out = project.path("out");
    let report = read_report(&out);
    assert!(report["best"].is_null(), "{report:#}");
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 2, "{report:#}");
    for candidate in candidates {
        assert_eq!(candidate["status"], "missed_goals", "{candidate:#}");
        let reasons = candidate["reasons"].as_array().expect("`reasons` is a list");
        assert!(
            reasons.iter().any(|r| r.as_str().is_some_and(|r| r.contains("size"))),
            "no size reason in {candidate:#}"
        );
        assert!(candidate["measurement"]["size_bytes"].as_u64().is_some(), "{candidate:#}");
    }
    assert!(report["verdict"].as_str().is_some_and(|v| !v.is_empty()), "{report:#}");
    assert!(out.join("report.md").exists());
    assert!(!out.join("model.onnx").exists(), "a model was written though none met the goals");
    let left = std::fs::read_dir(&out).expect("the output folder is readable").count();
    assert_eq!(left, 3, "only report.json, report.md and report.svg belong in the output");
}

#[test]
fn run_never_modifies_the_source_model_or_the_data() {
    let project = Project::digits();
    let inputs = ["model.onnx", "test.npz", "calib.npz", "recipe.yaml"];
    let before: Vec<Vec<u8>> =
        inputs.iter().map(|name| std::fs::read(project.path(name)).expect("readable")).collect();
    let modified: Vec<_> = inputs
        .iter()
        .map(|name| std::fs::metadata(project.path(name)).and_then(|m| m.modified()).ok())
        .collect();

    outcome(&mut project.run()).expect_code(0).no_panic();

    for (index, name) in inputs.iter().enumerate() {
        let after = std::fs::read(project.path(name)).expect("still readable");
        assert!(after == before[index], "{name} was modified by the run");
        let time = std::fs::metadata(project.path(name)).and_then(|m| m.modified()).ok();
        assert_eq!(time, modified[index], "{name} was rewritten by the run");
    }
    assert_ne!(
        std::fs::read(project.path("out/model.onnx")).expect("the best model"),
        before[0],
        "the best model is a copy of the source"
    );
}

#[test]
fn run_where_every_pass_fails_exits_1_with_the_pass_error() {
    // A MatMul classifier on opset 10, which ONNX Runtime runs but dynamic quantization refuses
    // (DynamicQuantizeLinear needs opset 11): every candidate fails in its pass.
    let project = Project::digits();
    let script = r#"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
out = sys.argv[1]
rng = np.random.default_rng(3)
w = rng.standard_normal((4, 3)).astype(np.float32)
graph = helper.make_graph(
    [helper.make_node("MatMul", ["input", "w"], ["logits"])],
    "old",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    [numpy_helper.from_array(w, "w")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
model.ir_version = 5
onnx.checker.check_model(model)
onnx.save(model, f"{out}/model.onnx")
x = rng.standard_normal((20, 4)).astype(np.float32)
np.savez(f"{out}/test.npz", input=x, y=(x @ w).argmax(axis=1).astype(np.int64))
np.savez(f"{out}/calib.npz", input=x)
"#;
    let python = common::root().join(".venv/bin/python");
    let status = Process::new(&python)
        .arg("-c")
        .arg(script)
        .arg(project.root())
        .status()
        .expect("the venv's python starts");
    assert!(status.success(), "python could not write the opset 10 model");

    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();

    let report = read_report(&project.path("out"));
    assert!(report["best"].is_null(), "{report:#}");
    assert_eq!(report["source"]["accuracy"], 1.0, "{report:#}");
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 2, "{report:#}");
    for candidate in candidates {
        assert_eq!(candidate["status"], "failed", "{candidate:#}");
        assert!(candidate["measurement"].is_null(), "{candidate:#}");
        let reason = candidate["reasons"][0].as_str().unwrap_or_default();
        assert!(reason.contains("opset 10"), "{candidate:#}");
    }
    assert!(!project.path("out/model.onnx").exists(), "a model was written");
    assert!(result.stdout.contains("failed"), "{}", result.stdout);
}

#[test]
fn second_run_replaces_the_previous_output() {
    let project = Project::digits();
    outcome(&mut project.run()).expect_code(0);
    let first = read_report(&project.path("out"));

    outcome(&mut project.run()).expect_code(0).no_panic();
    let second = read_report(&project.path("out"));
    assert_ne!(first["wall_time_s"], second["wall_time_s"], "report.json was not rewritten");

    let mut left: Vec<String> = std::fs::read_dir(project.path("out"))
        .expect("the output folder is readable")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["model.onnx", "report.json", "report.md", "report.svg"]);
    let size = std::fs::metadata(project.path("out/model.onnx")).expect("the best model").len();
    let best = second["best"].as_str().expect("a winner");
    let winner = second["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == best))
        .expect("the winner is listed");
    assert_eq!(winner["measurement"]["size_bytes"], size, "{winner:#}");
}

#[test]
fn a_run_with_no_winner_removes_the_model_an_earlier_run_wrote() {
    let project = Project::digits();
    let out = project.path("out");
    outcome(&mut project.run()).expect_code(0);
    assert!(out.join("model.onnx").exists());
    // A data file of an earlier, larger winner.
    std::fs::write(out.join("model.onnx.data"), b"stale weights").expect("written");

    project.edit_recipe("size: {}", "size: {max_bytes: 100}");
    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();

    let report = read_report(&out);
    assert!(report["best"].is_null(), "{report:#}");
    assert!(!out.join("model.onnx").exists(), "the earlier winner stands beside a report of none");
    assert!(!out.join("model.onnx.data").exists(), "its data file was left");
    assert!(result.stderr.contains("which an earlier run wrote"), "{}", result.stderr);
}
