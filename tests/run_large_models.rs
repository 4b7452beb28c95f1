//! The path a model over 2 GiB takes, on a small model: the external-data threshold is set to
//! 0, so the source is read from a data file, every candidate (dynamic, weight-only and static
//! quantization, the last calibrated in ONNX Runtime) is written with its tensors in a data
//! file and loaded by ONNX Runtime, and a second run reads every step from the cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ort_library, venv_python, write_digits_mlp, Project};
use pipeline::report::Status;
use pipeline::run::{run, RunOptions};
use pipeline_passes::ir;

const RECIPE: &str = "\
name: large
model: model.onnx
target: cpu
data:
  calibration: {path: calib.npz}
  evaluation: {path: test.npz, labels: y}
metrics:
  accuracy: {kind: fidelity, output: logits, min: 0.99}
  size: {}
objective: [size]
passes:
  - one_of:
      - quantize_dynamic: {per_channel: true}
      - quantize_weights: {bits: 4, block_size: 32}
      - quantize_static: {calibration: minmax, per_channel: true}
output: out/
";

/// The digits MLP saved with every tensor in `model.onnx.data`, and [`RECIPE`].
fn project() -> Project {
    let project = Project::digits();
    write_digits_mlp(&project, 3, false);
    let path = project.path("model.onnx");
    let model = ir::load(&path).expect("the MLP loads");
    let external = ir::ExternalData { location: "model.onnx.data".into(), size_threshold: 0 };
    let options = ir::SaveOptions { external_data: Some(external) };
    ir::save(&model, &path, &options).expect("the MLP is saved with external data");
    assert!(project.path("model.onnx.data").is_file());
    project.write_recipe(RECIPE);
    project
}

fn options(project: &Project, no_measure: bool) -> RunOptions {
    RunOptions {
        ort_lib: Some(ort_library()),
        external_data_above: 0,
        cache_dir: Some(project.cache_dir().to_path_buf()),
        no_measure,
        ..RunOptions::default()
    }
}

/// Runs each saved candidate and the source in onnxruntime's Python package on the test
/// images and says, per candidate, whether its data file is there, the count of its tensors
/// stored externally, the largest absolute difference from the source's logits over the
/// largest absolute logit, and the lowest cosine similarity of a row of logits to the source's.
fn compare_in_ort(source: &Path, candidates: &[PathBuf]) -> Vec<(bool, usize, f64, f64)> {
    let script = r#"
import os, sys
import numpy as np
import onnx
import onnxruntime as ort

source, test, candidates = sys.argv[1], sys.argv[2], sys.argv[3:]
x = np.load(test)["input"].astype(np.float32)
run = lambda path: ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
    ["logits"], {"input": x})[0]
expected = run(source)
for path in candidates:
    model = onnx.load(path, load_external_data=False)
    external = sum(1 for t in model.graph.initializer
                   if t.data_location == onnx.TensorProto.EXTERNAL)
    data = os.path.isfile(path + ".data")
    found = run(path)
    error = np.abs(found - expected).max() / np.abs(expected).max()
    cosine = (found * expected).sum(1) / np.linalg.norm(found, axis=1) / np.linalg.norm(
        expected, axis=1)
    print(int(data), external, error, cosine.min())
"#;
    let test = source.with_file_name("test.npz");
    let output = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .arg(source)
        .arg(test)
        .args(candidates)
        .output()
        .expect("the venv's python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| fields[i].parse::<f64>().unwrap();
            (fields[0] == "1", fields[1].parse().unwrap(), number(2), number(3))
        })
        .collect()
}

#[test]
fn every_quantizer_writes_external_data_that_onnx_runtime_runs() {
    let project = project();

    let report = run(&project.recipe(), &options(&project, true)).expect("the run succeeds");

    assert_eq!(report.candidates.len(), 3);
    let mut paths = Vec::new();
    for candidate in &report.candidates {
        assert_eq!(candidate.status, Status::NotMeasured, "{}: {:?}", candidate.id, candidate);
        paths.push(project.path(&format!("out/candidates/{}/model.onnx", candidate.id)));
    }
    let compared = compare_in_ort(&project.path("model.onnx"), &paths);
    assert_eq!(compared.len(), 3);
    for ((data, external, error, cosine), candidate) in compared.iter().zip(&report.candidates) {
        let label = &candidate.label;
        assert!(*data, "{label}: no data file beside the model");
        assert!(*external >= 1, "{label}: no tensor in the data file");
        // INT8 weights stay within 3% of the largest logit; INT8 activations too (static)
        // within 10%; 4-bit weights (16 levels) within 15%, every row still pointing the
        // source's way.
        let (bound, lowest) = match candidate.steps[0].pass.as_str() {
            "quantize_dynamic" => (0.03, 0.99),
            "quantize_static" => (0.10, 0.99),
            _ => (0.15, 0.95),
        };
        assert!(*error < bound, "{label}: outputs differ from the source's by {error}");
        assert!(*cosine > lowest, "{label}: a row of logits has cosine {cosine} to the source's");
    }
}

#[test]
fn measured_candidates_with_external_data_pass_and_a_second_run_reads_the_cache() {
    let project = project();

    let first = run(&project.recipe(), &options(&project, false)).expect("the first run");

    for candidate in &first.candidates {
        assert_eq!(candidate.status, Status::Passed, "{}: {:?}", candidate.id, candidate.reasons);
        assert!(candidate.steps.iter().all(|s| !s.cached), "{}", candidate.label);
    }
    assert!(project.path("out/model.onnx.data").is_file(), "the winner has its data file");

    let second = run(&project.recipe(), &options(&project, false)).expect("the second run");

    for (again, before) in second.candidates.iter().zip(&first.candidates) {
        assert!(again.steps.iter().all(|s| s.cached), "{} was built again", again.label);
        let sizes =
            |c: &pipeline::report::CandidateReport| c.measurement.as_ref().unwrap().size_bytes;
        assert_eq!(sizes(again), sizes(before), "{}", again.label);
        assert_eq!(again.status, Status::Passed);
    }
    assert_eq!(second.best, first.best);
}
