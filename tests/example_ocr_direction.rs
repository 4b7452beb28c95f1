//! The text-direction example on its prepared model and data (examples/ocr-direction/, made by
//! its prepare.sh, which scripts/test.sh runs): its recipe is valid against them, and a short
//! run's accuracies equal ONNX Runtime Python's on the source and on the written model. Skipped,
//! with the reason printed, when the example is not prepared. The MiniLM example is not run
//! here: its downloads and its run are too heavy for the suite.

mod common;

use std::path::Path;

use common::{outcome, pipeline, root, venv_python, Project};
use serde_json::Value;

const SAMPLES: usize = 128;

/// A short run of the example's model and data: two candidates, few timed runs.
const SHORT_RECIPE: &str = "\
name: ocr-direction-short
model: EXAMPLE/model.onnx
target: cpu
data:
  calibration: {path: EXAMPLE/calib.npz, samples: 64}
  evaluation: {path: EXAMPLE/test.npz, labels: y, samples: SAMPLES}
metrics:
  accuracy: {kind: top1, max_drop: 0.05}
  latency: {warmup: 2, runs: 5, stat: p50}
objective: [accuracy]
passes:
  - one_of:
      - fuse: {}
      - quantize_static: {calibration: minmax, per_channel: false}
output: out/
";

/// Top-1 accuracy of a model on the first `samples` images of test.npz, in ONNX Runtime
/// Python, in batches of 64 as the engine runs them.
const ORT_ACCURACY: &str = r#"
import sys
import numpy as np
import onnxruntime as ort
model, data, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
arrays = np.load(data)
x, y = arrays["x"][:samples], arrays["y"][:samples]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
scores = np.concatenate([session.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])
print(repr(float((scores.argmax(1) == y).mean())))
"#;

fn ort_accuracy(model: &Path, data: &Path) -> f64 {
    let printed = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(ORT_ACCURACY)
        .arg(model)
        .arg(data)
        .arg(SAMPLES.to_string())
        .output()
        .expect("python runs");
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    String::from_utf8_lossy(&printed.stdout).trim().parse().expect("a number")
}

#[test]
fn ocr_direction_example_accuracies_equal_onnx_runtime_pythons() {
    let example = root().join("examples/ocr-direction");
    let prepared = ["model.onnx", "calib.npz", "test.npz"];
    if let Some(missing) = prepared.iter().find(|name| !example.join(name).exists()) {
        eprintln!(
            "skipped: no examples/ocr-direction/{missing}; run examples/ocr-direction/prepare.sh \
             (scripts/test.sh does)"
        );
        return;
    }

    // The committed recipe is valid against the real model and data.
    let recipe = example.join("recipe.yaml");
    let validated = outcome(pipeline().arg("validate").arg(&recipe));
    validated.expect_code(0).no_panic();
    assert!(validated.stdout.contains("5 candidate(s)"), "{}", validated.stdout);

    // A short run: the source's and the winner's accuracies are ORT Python's.
    let project = Project::digits();
    let example_dir = example.to_str().expect("a UTF-8 path");
    project.write_recipe(
        &SHORT_RECIPE.replace("EXAMPLE", example_dir).replace("SAMPLES", &SAMPLES.to_string()),
    );
    outcome(&mut project.run()).expect_code(0).no_panic();

    let text = std::fs::read_to_string(project.path("out/report.json")).expect("report.json");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    let test_data = example.join("test.npz");
    let source = report["source"]["accuracy"].as_f64().expect("the source's accuracy");
    let expected = ort_accuracy(&example.join("model.onnx"), &test_data);
    assert_eq!(source, expected, "the source's top-1 accuracy: ours, ORT Python's");
    assert!(source > 0.9, "the float model reads the rendered lines: {source}");

    let best = report["best"].as_str().expect("a winner");
    let candidates = report["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2, "{report:#}");
    let winner = candidates.iter().find(|c| c["id"] == best).expect("the winner is listed");
    let accuracy = winner["measurement"]["accuracy"].as_f64().expect("the winner's accuracy");
    let written = ort_accuracy(&project.path("out/model.onnx"), &test_data);
    assert_eq!(accuracy, written, "the winner's accuracy: ours, ORT Python's on out/model.onnx");
}
