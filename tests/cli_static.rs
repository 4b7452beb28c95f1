//! `pipeline run` with static quantization on the digits CNN: the calibrated candidates keep
//! their accuracy, and what goes wrong in calibration or quantization fails or marks one
//! candidate, with its reason, while the run goes on.

mod common;

use std::path::Path;

use common::{outcome, Npz, Project, DIGITS_RECIPE};
use ndarray::Array4;
use serde_json::{json, Value};

/// The digits recipe with the passes replaced by `passes` (YAML lines under `passes:`).
fn recipe_with(passes: &str) -> String {
    let old = "  - quantize_dynamic: {per_channel: [false, true]}\n";
    assert!(DIGITS_RECIPE.contains(old));
    DIGITS_RECIPE.replace(old, passes)
}

fn read_report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json was written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn candidates(report: &Value) -> &Vec<Value> {
    report["candidates"].as_array().expect("`candidates` is a list")
}

/// The calibration images of the example, as a 4-d array.
fn calibration_images() -> Array4<f32> {
    let path = common::root().join("examples/digits/calib.npz");
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path).expect("calib.npz"))
        .expect("calib.npz is an .npz");
    npz.by_name("input").expect("calib.npz holds `input`")
}

#[test]
fn static_candidates_keep_accuracy_within_half_a_point_of_float() {
    let project = Project::digits();
    project.write_recipe(&recipe_with(
        "  - one_of:\n      - quantize_dynamic: {}\n      - quantize_static:\n          \
         calibration: [minmax, entropy, percentile]\n",
    ));
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let report = read_report(&project.path("out"));
    let source = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    let candidates = candidates(&report);
    assert_eq!(candidates.len(), 4, "{report:#}");
    let methods: Vec<&Value> =
        candidates[1..].iter().map(|c| &c["steps"][0]["config"]["calibration"]).collect();
    assert_eq!(methods, ["minmax", "entropy", "percentile"], "{report:#}");
    for candidate in &candidates[1..] {
        assert_eq!(candidate["steps"][0]["pass"], "quantize_static", "{candidate:#}");
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        let accuracy = candidate["measurement"]["accuracy"].as_f64().expect("an accuracy");
        assert!(
            (source - accuracy).abs() <= 0.005,
            "static QDQ moved top-1 accuracy from {source} to {accuracy}: {candidate:#}"
        );
        let size = candidate["measurement"]["size_bytes"].as_u64().expect("a size");
        let source_size = report["source"]["size_bytes"].as_u64().expect("a source size");
        assert!(size < source_size / 2, "{size} bytes against {source_size}: {candidate:#}");
    }

    // The winner really holds QuantizeLinear/DequantizeLinear pairs or integer Conv kernels.
    let inspected =
        outcome(project.pipeline().args(["inspect", "--json"]).arg(project.path("out/model.onnx")));
    inspected.expect_code(0);
    assert!(
        ["DequantizeLinear", "ConvInteger"].iter().any(|op| inspected.stdout.contains(op)),
        "{}",
        inspected.stdout
    );
}

#[test]
fn calibration_data_with_nan_fails_the_static_candidate_and_names_the_tensor() {
    let project = Project::digits();
    let mut images = calibration_images();
    images[[5, 0, 3, 3]] = f32::NAN;
    Npz::create(&project.path("calib.npz")).array("input", images).finish();
    project.write_recipe(&recipe_with(
        "  - one_of:\n      - quantize_dynamic: {}\n      - quantize_static: {}\n",
    ));

    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic().stderr_has(&[
        "calib.npz: array 'input' holds 1 NaN or infinite values of",
        "(the first in sample 5)",
    ]);
    let report = read_report(&project.path("out"));
    let candidates = candidates(&report);
    assert_eq!(candidates[0]["status"], "passed", "{report:#}");
    assert_eq!(candidates[1]["status"], "failed", "{report:#}");
    let reason = candidates[1]["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("NaN") && reason.contains("tensor `"), "{reason}");
    assert!(reason.contains("batch 5"), "{reason}");
    assert_eq!(report["best"], "c1", "{report:#}");
}

#[test]
fn calibration_data_all_infinite_fails_every_static_candidate() {
    let project = Project::digits();
    let images = calibration_images().mapv(|_| f32::INFINITY);
    Npz::create(&project.path("calib.npz")).array("input", images).finish();
    project.write_recipe(&recipe_with("  - quantize_static: {per_channel: [false, true]}\n"));

    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();
    let report = read_report(&project.path("out"));
    assert!(report["best"].is_null(), "{report:#}");
    for candidate in candidates(&report) {
        assert_eq!(candidate["status"], "failed", "{candidate:#}");
        let reason = candidate["reasons"][0].as_str().unwrap_or_default();
        assert!(reason.contains("NaN or Inf"), "{reason}");
    }
    assert!(!project.path("out/model.onnx").exists(), "a model was written");
}

#[test]
fn an_excluded_node_that_does_not_exist_is_named_in_a_warning() {
    let project = Project::digits();
    project.write_recipe(&recipe_with(
        "  - quantize_static: {nodes_to_exclude: [conv1, no_such_node]}\n",
    ));
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();
    assert!(
        result.stderr.contains("`nodes_to_exclude` names `no_such_node`"),
        "no warning naming the node in:\n{}",
        result.stderr
    );
    assert!(result.stderr.contains("WARN"), "{}", result.stderr);
}

#[test]
fn a_pass_with_nothing_to_quantize_marks_its_candidate_unchanged() {
    let project = Project::digits();
    project.write_recipe(&recipe_with(
        "  - one_of:\n      - quantize_dynamic: {op_types: [Attention]}\n      - \
         quantize_static: {op_types: [Softmax]}\n",
    ));
    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();

    let report = read_report(&project.path("out"));
    assert!(report["best"].is_null(), "{report:#}");
    for candidate in candidates(&report) {
        assert_eq!(candidate["status"], "unchanged", "{candidate:#}");
        assert!(candidate["measurement"].is_null(), "{candidate:#}");
        let reason = candidate["reasons"][0].as_str().unwrap_or_default();
        assert!(reason.contains("changed nothing"), "{reason}");
    }
    let verdict = report["verdict"].as_str().unwrap_or_default();
    assert!(verdict.contains("2 left the model unchanged"), "{verdict}");
    assert!(result.stdout.contains("unchanged"), "{}", result.stdout);
    assert!(!project.path("out/model.onnx").exists(), "a model was written");
}

#[test]
fn both_formats_are_searched_and_measured() {
    let project = Project::digits();
    // Ranked by size, which QOperator wins: no QuantizeLinear/DequantizeLinear pairs.
    let text =
        recipe_with("  - quantize_static: {format: [qdq, qoperator], activation_type: uint8}\n");
    project.write_recipe(&text.replace("objective: [latency]", "objective: [size]"));
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let report = read_report(&project.path("out"));
    let source = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    let candidates = candidates(&report);
    assert_eq!(candidates.len(), 2, "{report:#}");
    for (candidate, format) in candidates.iter().zip(["qdq", "qoperator"]) {
        assert_eq!(candidate["steps"][0]["config"]["format"], format, "{candidate:#}");
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        let accuracy = candidate["measurement"]["accuracy"].as_f64().expect("an accuracy");
        assert!((source - accuracy).abs() <= 0.005, "{format}: {accuracy} against {source}");
    }

    // The winner is the QOperator candidate, with the integer operators.
    assert_eq!(report["best"], "c2", "{report:#}");
    let inspected =
        outcome(project.pipeline().args(["inspect", "--json"]).arg(project.path("out/model.onnx")));
    inspected.expect_code(0);
    let ops: Value = serde_json::from_str(&inspected.stdout).expect("inspect prints JSON");
    let ops = &ops["ops"];
    assert_eq!((&ops["QLinearConv"], &ops["com.microsoft.QGemm"]), (&json!(2), &json!(2)), "{ops}");
    assert_eq!(ops["DequantizeLinear"], 1, "only the logits go back to float: {ops}");
    assert!(ops["Conv"].is_null() && ops["Gemm"].is_null(), "{ops}");
}

#[test]
fn a_step_that_changes_nothing_passes_the_model_on_to_the_next_step() {
    let project = Project::digits();
    // The digits CNN has nothing to remove or fold; quantization then changes it.
    project.write_recipe(&recipe_with(
        "  - fuse: {rules: [eliminate_identity, eliminate_dropout]}\n  - one_of:\n      - \
         quantize_dynamic: {op_types: [Gemm]}\n      - quantize_dynamic: {op_types: [Attention]}\n",
    ));
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let report = read_report(&project.path("out"));
    let candidates = candidates(&report);
    assert_eq!(candidates.len(), 2, "{report:#}");
    assert_eq!(candidates[0]["status"], "passed", "{:#}", candidates[0]);
    let note = &candidates[0]["notes"][0];
    assert_eq!(note["kind"], "unchanged_step", "{:#}", candidates[0]);
    assert!(note["message"].as_str().unwrap_or_default().contains("`fuse` changed nothing"));

    // Both steps unchanged: the candidate is the source.
    assert_eq!(candidates[1]["status"], "unchanged", "{:#}", candidates[1]);
    let reason = candidates[1]["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("fuse") && reason.contains("quantize_dynamic"), "{reason}");
}

#[test]
fn the_evaluation_file_calibrates_when_its_labels_are_named() {
    let project = Project::digits();
    let text = recipe_with("  - quantize_static: {}\n");
    let unlabeled = text.replace("calibration: {path: calib.npz}", "calibration: {path: test.npz}");

    // Without `labels`, the labels array is an array the model does not take.
    project.write_recipe(&unlabeled);
    let result = outcome(&mut project.run());
    result.expect_code(2).no_panic();
    assert!(result.stderr.contains("does not take: y"), "{}", result.stderr);
    assert!(result.stderr.contains("name the labels array in `labels`"), "{}", result.stderr);

    project.write_recipe(&unlabeled.replace("{path: test.npz}", "{path: test.npz, labels: y}"));
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();
    let report = read_report(&project.path("out"));
    assert_eq!(candidates(&report)[0]["status"], "passed", "{report:#}");
}

/// A filter entry that is neither a node's name nor a valid regular expression can only be a
/// mistake: the candidate fails saying so, rather than quantizing everything with a warning.
#[test]
fn a_node_filter_that_is_no_name_and_no_regular_expression_fails_the_candidate() {
    let project = Project::digits();
    project.write_recipe(&recipe_with("  - quantize_static: {nodes_to_exclude: ['(']}\n"));

    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();
    let report = read_report(&project.path("out"));
    let candidate = &candidates(&report)[0];
    assert_eq!(candidate["status"], "failed", "{report:#}");
    let reason = candidate["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("`nodes_to_exclude` names `(`"), "{reason}");
    assert!(reason.contains("no valid regular expression"), "{reason}");
}
