//! `pipeline run` with `export: {format: nnef}`: on a float MLP built by the test, the
//! `.nnef.tgz` archive lands beside the best model, loads back in tract-nnef and gives the
//! outputs ONNX Runtime (the Python package) gives on the same images; a second run from the
//! cache writes the same bytes. A model holding an operator tract has no implementation of
//! fails with the node and the operator named, and no archive is written.

#![cfg(feature = "tract")]

mod common;

use std::path::Path;
use std::process::Command as Process;

use common::{outcome, Project};
use ndarray::{Array2, Array4, Axis};
use ndarray_npy::NpzReader;
use tract_onnx::prelude::{Framework, IntoRunnable, IntoTensor, TVec};
use tract_onnx::WithOnnx;

/// The digits recipe with one step, an NNEF export.
fn export_recipe(project: &Project) {
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: nnef}\n",
    );
}

/// The test images of the digits data.
fn test_images(project: &Project) -> Array4<f32> {
    let file = std::fs::File::open(project.path("test.npz")).expect("test.npz opens");
    let mut npz = NpzReader::new(file).expect("test.npz is an npz archive");
    npz.by_name("input").expect("test.npz holds `input` as float32 [N, 1, 8, 8]")
}

/// The logits ONNX Runtime's Python package computes for `model` on the test images.
fn ort_logits(model: &Path, images: &Path) -> Array2<f32> {
    let folder = tempfile::tempdir().unwrap();
    let logits = folder.path().join("logits.npy");
    let script = r#"
import sys
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
images = np.load(sys.argv[2])["input"]
(logits,) = session.run(["logits"], {"input": images})
np.save(sys.argv[3], logits.astype(np.float32))
"#;
    let output = Process::new(common::venv_python())
        .arg("-c")
        .arg(script)
        .arg(model)
        .arg(images)
        .arg(&logits)
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "onnxruntime: {}", String::from_utf8_lossy(&output.stderr));
    ndarray_npy::read_npy(&logits).expect("logits.npy is float32 [N, 10]")
}

/// The logits tract computes with the NNEF archive at `archive` on `images`.
fn nnef_logits(archive: &Path, images: &Array4<f32>) -> Array2<f32> {
    let model = tract_nnef::nnef()
        .with_onnx()
        .model_for_path(archive)
        .unwrap_or_else(|e| panic!("tract-nnef loads {}: {e:?}", archive.display()))
        .into_optimized()
        .expect("tract optimizes the NNEF model")
        .into_runnable()
        .expect("tract plans the NNEF model");
    let inputs: TVec<_> = [images.clone().into_dyn().into_tensor().into()].into_iter().collect();
    let outputs = model.run(inputs).expect("tract runs the NNEF model");
    assert_eq!(outputs.len(), 1, "the model has one output");
    let logits = outputs[0].to_plain_array_view::<f32>().expect("the logits are float32");
    logits.into_dimensionality().expect("the logits are [N, 10]").to_owned()
}

#[test]
fn the_nnef_archive_loads_in_tract_and_matches_onnx_runtime() {
    let project = Project::digits();
    common::write_digits_mlp(&project, 11, false);
    export_recipe(&project);
    outcome(&mut project.run()).expect_code(0).no_panic();

    let archive = project.path("out/model.nnef.tgz");
    assert!(archive.is_file(), "out/ holds {:?}", project.files());
    let images = test_images(&project);
    let from_nnef = nnef_logits(&archive, &images);
    let from_ort = ort_logits(&project.path("model.onnx"), &project.path("test.npz"));
    assert_eq!(from_nnef.dim(), (images.len_of(Axis(0)), 10));
    assert_eq!(from_nnef.dim(), from_ort.dim());
    let worst = from_nnef
        .iter()
        .zip(from_ort.iter())
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "NNEF in tract and ONNX Runtime differ by up to {worst}");
    // Not a model that gives the same answer whatever it is fed.
    let spread = from_ort.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(spread > 0.1, "the logits are all near zero: {spread}");

    let report = std::fs::read_to_string(project.path("out/report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["status"], "passed", "{candidate}");
    let note = candidate["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "artifact")
        .unwrap_or_else(|| panic!("no artifact note in {candidate}"));
    let message = note["message"].as_str().unwrap();
    assert!(message.starts_with("model.nnef.tgz: NNEF archive written by tract"), "{note}");

    // The second run takes the export from the cache and writes the same archive.
    let first = std::fs::read(&archive).unwrap();
    outcome(&mut project.run()).expect_code(0).no_panic();
    assert_eq!(std::fs::read(&archive).unwrap(), first, "the archive changed between runs");
}

/// Adds a second output `det` = Det(input) to the project's model: ONNX Runtime runs it,
/// tract has no implementation of Det.
fn add_det_output(project: &Project) {
    let script = r#"
import sys
import onnx
from onnx import TensorProto, helper

path = sys.argv[1]
model = onnx.load(path)
model.graph.node.append(helper.make_node("Det", ["input"], ["det"], name="determinant"))
model.graph.output.append(helper.make_tensor_value_info("det", TensorProto.FLOAT, ["N", 1]))
onnx.checker.check_model(model)
onnx.save(model, path)
"#;
    let output = Process::new(common::venv_python())
        .arg("-c")
        .arg(script)
        .arg(project.path("model.onnx"))
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_operator_tract_lacks_fails_the_candidate_naming_the_node_and_op() {
    let project = Project::digits();
    common::write_digits_mlp(&project, 11, false);
    add_det_output(&project);
    export_recipe(&project);
    outcome(&mut project.run()).expect_code(1).no_panic();

    let report = std::fs::read_to_string(project.path("out/report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["status"], "failed", "{candidate:#}");
    let reason = candidate["reasons"][0].as_str().unwrap_or_default();
    for part in ["tract has no implementation of", "node `determinant` (op Det)", "hint:"] {
        assert!(reason.contains(part), "{part:?} missing from {reason}");
    }
    assert!(!project.path("out/model.nnef.tgz").exists(), "{:?}", project.files());
}
