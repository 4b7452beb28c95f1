//! `pipeline tune` end to end on the digits example: the resolved recipe beside the output,
//! its report, a rerun of that recipe with `pipeline run`, and bad input (unknown target,
//! missing files, an NPU target without calibration data).

mod common;

use common::{ort_library, outcome, Project};
use serde_json::Value;

fn tune(project: &Project, args: &[&str]) -> assert_cmd::Command {
    let mut command = project.pipeline();
    command.arg("tune").args(args).arg("--ort-lib").arg(ort_library());
    command
}

fn report(project: &Project, dir: &str) -> Value {
    let text = std::fs::read_to_string(project.path(&format!("{dir}/report.json")))
        .expect("report.json is written");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn tune_writes_a_resolved_recipe_that_reruns() {
    let project = Project::digits();
    let args = [
        "model.onnx",
        "--target",
        "cpu",
        "--data",
        "test.npz",
        "--calibration",
        "calib.npz",
        "--labels",
        "y",
        "--output",
        "tuned",
    ];
    let result = outcome(&mut tune(&project, &args));
    result.expect_code(0);
    assert!(result.stdout.contains("recipe: tuned/recipe.yaml"), "{}", result.stdout);

    let text = std::fs::read_to_string(project.path("tuned/recipe.yaml")).unwrap();
    for wanted in [
        "model: \"../model.onnx\"",
        "calibration: {path: \"../calib.npz\"}",
        "evaluation: {path: \"../test.npz\", labels: \"y\"}",
        "target: cpu",
        "quantize_static",
        "accuracy: {kind: top1",
    ] {
        assert!(text.contains(wanted), "`{wanted}` missing from:\n{text}");
    }
    let first = report(&project, "tuned");
    assert_eq!(first["target"], "cpu");
    let best = first["best"].as_str().expect("a winner");
    assert!(project.path("tuned/model.onnx").is_file());
    let labels: Vec<&str> = first["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert!(labels.iter().any(|l| l.contains("quantize_static")), "{labels:?}");
    assert!(first["source"]["accuracy"].as_f64().unwrap() > 0.9);

    // The written recipe is a plain recipe: `pipeline run` reruns it from anywhere.
    let mut rerun = common::pipeline();
    rerun.arg("run").arg(project.path("tuned/recipe.yaml")).arg("--ort-lib").arg(ort_library());
    outcome(&mut rerun).expect_code(0);
    let second = report(&project, "tuned");
    assert_eq!(second["candidates"].as_array().unwrap().len(), labels.len());
    assert!(second["best"].is_string(), "{best} then {}", second["best"]);
}

#[test]
fn tune_without_labels_or_calibration_drops_accuracy_and_static_quantization() {
    let project = Project::digits();
    // calib.npz holds inputs only: evaluation data without labels.
    let args = ["model.onnx", "--target", "cpu", "--data", "calib.npz", "--output", "t"];
    outcome(&mut tune(&project, &args)).expect_code(0);
    let text = std::fs::read_to_string(project.path("t/recipe.yaml")).unwrap();
    assert!(!text.contains("accuracy") && !text.contains("quantize_static"), "{text}");
    let report = report(&project, "t");
    assert!(report["source"]["accuracy"].is_null());
}

#[test]
fn tune_refuses_bad_input_and_writes_nothing() {
    let project = Project::digits();
    let before = project.files();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["model.onnx", "--target", "gpu-cuad", "--data", "test.npz"],
            &["unknown target `gpu-cuad`", "did you mean `gpu-cuda`?"],
        ),
        (
            &["missing.onnx", "--target", "cpu", "--data", "test.npz"],
            &["the model missing.onnx does not exist"],
        ),
        (
            &["model.onnx", "--target", "cpu", "--data", "nope.npz"],
            &["the data file nope.npz does not exist"],
        ),
        (
            &["model.onnx", "--target", "npu-qnn", "--data", "test.npz"],
            &["target `npu-qnn` runs only QDQ-quantized models", "--calibration"],
        ),
    ];
    for (args, messages) in cases {
        outcome(&mut tune(&project, args)).expect_code(2).stderr_has(messages).no_panic();
        assert_eq!(project.files(), before, "{args:?} wrote files");
    }
}

#[test]
fn tune_for_an_npu_fixes_shapes_and_builds_qdq_without_measuring() {
    let project = Project::digits();
    let args = [
        "model.onnx",
        "--target",
        "npu-qnn",
        "--data",
        "test.npz",
        "--calibration",
        "calib.npz",
        "--labels",
        "y",
        "--output",
        "npu",
        "--no-measure",
    ];
    outcome(&mut tune(&project, &args)).expect_code(0);
    let text = std::fs::read_to_string(project.path("npu/recipe.yaml")).unwrap();
    assert!(text.contains("- fix_shapes: {dims: {\"N\": 1}}"), "{text}");
    let report = report(&project, "npu");
    for candidate in report["candidates"].as_array().unwrap() {
        assert_eq!(candidate["status"], "not_measured", "{candidate}");
        let id = candidate["id"].as_str().unwrap();
        assert!(project.path(&format!("npu/candidates/{id}/model.onnx")).is_file());
    }
}
