//! `evaluate: {runtime: tract}`: the digits example measured in tract gives the accuracy ONNX
//! Runtime gives, with a library path that does not exist, so ONNX Runtime is never loaded;
//! the table, report.md and report.json say tract timed the runs. A recipe that calibrates
//! needs ONNX Runtime whatever measures, and the error names the pass.

#![cfg(feature = "tract")]

mod common;

use common::{outcome, Project};
use serde_json::Value;

/// A library path that holds nothing.
const NO_LIBRARY: &str = "/nonexistent/libonnxruntime.so";

fn report(project: &Project) -> Value {
    let text = std::fs::read_to_string(project.path("out/report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// `pipeline run` with `--ort-lib` at a file that does not exist, and no cache, so that every
/// figure is measured now.
fn run_without_onnx_runtime(project: &Project) -> common::Outcome {
    let mut command = common::pipeline();
    command.current_dir(project.root());
    command.arg("run").arg(project.recipe()).arg("--ort-lib").arg(NO_LIBRARY);
    outcome(&mut command)
}

#[test]
fn tract_measures_the_digits_model_as_onnx_runtime_does_without_onnx_runtime() {
    let project = Project::digits();
    outcome(&mut project.run()).expect_code(0).no_panic();
    let by_ort = report(&project);
    let ort_accuracy = by_ort["source"]["accuracy"].as_f64().expect("a source accuracy");
    assert_eq!(by_ort["runtime"]["name"], "onnxruntime");

    project.edit_recipe("output: out/\n", "output: out/\nevaluate: {runtime: tract}\n");
    let ran = run_without_onnx_runtime(&project);
    ran.expect_code(0).no_panic();
    let by_tract = report(&project);
    assert_eq!(by_tract["runtime"]["name"], "tract", "{}", by_tract["runtime"]);
    let tract_accuracy = by_tract["source"]["accuracy"].as_f64().expect("a source accuracy");
    assert_eq!(tract_accuracy, ort_accuracy, "tract and ONNX Runtime disagree on the source");
    // 360 images: an accuracy of a model that guesses would be near 0.1.
    assert!(tract_accuracy > 0.9, "{tract_accuracy}");
    let latency = &by_tract["source"]["latency_ms"];
    assert!(latency["p50"].as_f64().is_some_and(|ms| ms > 0.0), "{latency}");

    // Every candidate is measured in tract, or fails saying tract could not load it.
    for candidate in by_tract["candidates"].as_array().expect("candidates") {
        match candidate["status"].as_str() {
            Some("passed") | Some("missed_goals") => {
                assert!(candidate["measurement"]["accuracy"].as_f64().is_some(), "{candidate}");
            }
            _ => {
                let reason = candidate["reasons"][0].as_str().unwrap_or_default();
                assert!(reason.starts_with("tract cannot load the model"), "{candidate}");
            }
        }
    }

    let markdown = std::fs::read_to_string(project.path("out/report.md")).unwrap();
    assert!(markdown.contains("| tract latency p50 | tract latency p90 |"), "{markdown}");
    assert!(markdown.contains("- runtime: tract 0.23"), "{markdown}");
    assert!(ran.stdout.contains("tract p50"), "{}", ran.stdout);
}

#[test]
fn calibration_needs_onnx_runtime_and_the_error_names_the_pass() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_static: {calibration: minmax}\n",
    );
    let recipe = std::fs::read_to_string(project.recipe()).unwrap();
    project.write_recipe(&format!("{recipe}evaluate: {{runtime: tract}}\n"));
    let before = project.files();
    run_without_onnx_runtime(&project)
        .expect_code(2)
        .no_panic()
        .stderr_has(&["quantize_static (calibration) runs models in ONNX Runtime", NO_LIBRARY]);
    assert_eq!(project.files(), before, "nothing was written");
}
