//! `pipeline run` with `convert_fp16` on the digits CNN: float16 candidates, with float32 or
//! float16 inputs and outputs, are built, loaded, measured (the float16 input is fed the data's
//! float32 values rounded to float16) and keep the float model's accuracy.

mod common;

use std::path::Path;
use std::process::Command as Process;

use common::{outcome, Project, DIGITS_RECIPE};
use serde_json::Value;

/// One sample of the 360 in test.npz, and a little room for rounding.
const ONE_SAMPLE: f64 = 1.5 / 360.0;

fn read_report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json was written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// The element type of the model's first input.
fn input_type(model: &Path) -> i32 {
    let model = pipeline_passes::ir::load(model).expect("the model loads");
    let input = &model.graph.expect("a graph").input[0];
    pipeline_passes::ir::declared_type(input).expect("the input is a tensor").elem_type
}

/// Top-1 accuracy of `model` on test.npz in ONNX Runtime's Python package, feeding the
/// images in the input's own type (float16 or float32), in batches of 64 as the engine does.
fn reference_accuracy(project: &Project, model: &Path) -> f64 {
    let script = r#"
import sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
test = np.load(sys.argv[2])
x, y = test["input"], test["y"]
if session.get_inputs()[0].type == "tensor(float16)":
    x = x.astype(np.float16)
predicted = np.concatenate(
    [session.run(["logits"], {"input": x[i:i + 64]})[0].argmax(axis=1)
     for i in range(0, len(x), 64)]
)
print(float((predicted == y).mean()))
"#;
    let output = Process::new(common::venv_python())
        .arg("-c")
        .arg(script)
        .arg(model)
        .arg(project.path("test.npz"))
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("python printed an accuracy")
}

#[test]
fn fp16_candidates_are_measured_and_keep_the_float_accuracy() {
    let project = Project::digits();
    let old = "  - quantize_dynamic: {per_channel: [false, true]}\n";
    let passes =
        "  - one_of:\n      - convert_fp16: {}\n      - convert_fp16: {keep_io_types: false}\n";
    // Ranked by size, the candidate without the two IO Casts wins, so the model written out
    // is the one with float16 inputs and outputs.
    let recipe = DIGITS_RECIPE.replace(old, passes).replace("[latency]", "[size]");
    project.write_recipe(&recipe);

    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let out = project.path("out");
    let report = read_report(&out);
    let source = &report["source"];
    let source_accuracy = source["accuracy"].as_f64().expect("a source accuracy");
    let source_size = source["size_bytes"].as_u64().expect("a source size");
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 2, "{report:#}");
    let keep_io: Vec<&Value> =
        candidates.iter().map(|c| &c["steps"][0]["config"]["keep_io_types"]).collect();
    assert_eq!(keep_io, [&Value::Null, &Value::Bool(false)], "{report:#}");
    for candidate in candidates {
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        let measured = &candidate["measurement"];
        let accuracy = measured["accuracy"].as_f64().expect("a measured accuracy");
        assert!(
            (accuracy - source_accuracy).abs() <= 2.0 * ONE_SAMPLE,
            "float16 moved top-1 accuracy from {source_accuracy} to {accuracy}: {candidate:#}"
        );
        let p50 = measured["latency_ms"]["p50"].as_f64().expect("a measured p50");
        assert!(p50 > 0.0, "{candidate:#}");
        let size = measured["size_bytes"].as_u64().expect("a size");
        assert!(size < source_size * 6 / 10, "{size} bytes against {source_size}");
    }
    assert_eq!(report["best"], "c2", "{report:#}");

    // The winner takes float16 images, and ONNX Runtime's Python package, fed the test images
    // as float16, finds the accuracy the engine reported.
    let best = out.join("model.onnx");
    assert_eq!(input_type(&best), 10, "the best model's input is not float16");
    let reference = reference_accuracy(&project, &best);
    let reported = candidates[1]["measurement"]["accuracy"].as_f64().expect("an accuracy");
    assert!((reported - reference).abs() < ONE_SAMPLE, "{reported} vs {reference}");
}

#[test]
fn keep_io_types_can_be_searched() {
    let project = Project::digits();
    let old = "  - quantize_dynamic: {per_channel: [false, true]}\n";
    let recipe = DIGITS_RECIPE.replace(old, "  - convert_fp16: {keep_io_types: [true, false]}\n");
    project.write_recipe(&recipe);

    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let report = read_report(&project.path("out"));
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    let keep_io: Vec<&Value> =
        candidates.iter().map(|c| &c["steps"][0]["config"]["keep_io_types"]).collect();
    assert_eq!(keep_io, [&Value::Bool(true), &Value::Bool(false)], "{report:#}");
    assert!(candidates.iter().all(|c| c["measurement"]["accuracy"].is_number()), "{report:#}");
}
