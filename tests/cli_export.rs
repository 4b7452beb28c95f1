//! `pipeline run` with `export: {format: gguf}` on the digits CNN: the GGUF file lands beside
//! the best model in the output folder, reads in llama.cpp's own reader (gguf-py) with the
//! model's float weights exactly, the report names it, and a later run without an export
//! removes it. An unknown format, and two exports of one format in a chain, are refused at
//! validation.

mod common;

use std::process::Command as Process;

use common::{outcome, Project};

/// Every tensor of the GGUF file as gguf-py reads it, checked against the ONNX model's
/// initializers by the onnx package: prints `name type` per tensor, or fails.
const CHECK_GGUF: &str = r#"
import sys
import numpy as np
import onnx
from onnx import numpy_helper
from gguf import GGUFReader
from gguf.quants import dequantize

reader = GGUFReader(sys.argv[1])
model = onnx.load(sys.argv[2])
floats = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
          if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
assert reader.fields["general.architecture"].contents() == "onnx"
assert reader.alignment == 32 and reader.data_offset % 32 == 0
names = reader.fields["pipeline.onnx_names"].contents()
assert sorted(names) == sorted(floats), (names, sorted(floats))
for tensor, name in zip(reader.tensors, names):
    assert (tensor.data_offset - reader.data_offset) % 32 == 0, name
    values = dequantize(tensor.data, tensor.tensor_type)
    expected = floats[name]
    assert values.shape == expected.shape, (name, values.shape, expected.shape)
    assert np.array_equal(values, expected.astype(np.float32)), name
    print(tensor.name, tensor.tensor_type.name)
"#;

#[test]
fn the_gguf_file_lands_beside_the_best_model_and_reads_in_gguf_py() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: gguf}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();

    let gguf = project.path("out/model.gguf");
    assert!(gguf.is_file(), "out/ holds {:?}", project.files());
    #[cfg(unix)]
    {
        // Readable like the model beside it (0644 less the umask), not a temporary 0600.
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let model = mode(&project.path("out/model.onnx"));
        assert_eq!(mode(&gguf), model & 0o644, "model.onnx has {model:o}");
        assert_ne!(mode(&gguf), 0o600, "the temporary file's mode leaked");
    }
    let output = Process::new(common::venv_python())
        .arg("-c")
        .arg(CHECK_GGUF)
        .arg(&gguf)
        .arg(project.path("model.onnx"))
        .output()
        .expect("the venv's python starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "gguf-py: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.lines().count() >= 2 && stdout.contains(" F32"), "{stdout}");

    let report = std::fs::read_to_string(project.path("out/report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let candidate = &report["candidates"][0];
    let note = candidate["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "artifact")
        .unwrap_or_else(|| panic!("no artifact note in {candidate}"));
    assert!(note["message"].as_str().unwrap().starts_with("model.gguf: GGUF v3"), "{note}");
    assert_eq!(candidate["status"], "passed", "{candidate}");
    let markdown = std::fs::read_to_string(project.path("out/report.md")).unwrap();
    assert!(markdown.contains("model.gguf"), "{markdown}");

    // A run whose winner has no GGUF file must not leave the old one beside the new model.
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_dynamic: {per_channel: false}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();
    assert!(project.path("out/model.onnx").is_file());
    assert!(!gguf.exists(), "a stale model.gguf is left: {:?}", project.files());
}

#[test]
fn an_unknown_format_is_refused_at_validation() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: safetensors}\n",
    );
    let before = project.files();
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&["export", "safetensors", "nnef"]);
    outcome(&mut project.run()).expect_code(2).stderr_has(&["safetensors"]);
    assert_eq!(project.files(), before, "nothing was written");
}

/// Two GGUF exports in one chain would write one `model.gguf`, the later replacing the
/// earlier: refused at the second, by `validate` and `run`, before anything is written.
#[test]
fn two_exports_of_one_format_in_a_chain_are_refused() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: gguf}\n  - quantize_weights: {}\n  - export: {format: gguf}\n",
    );
    let before = project.files();
    let parts = [
        "passes[2].export",
        "a second `export` to `gguf` in the chain",
        "keep one export per format in a chain",
    ];
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&parts);
    outcome(&mut project.run()).expect_code(2).stderr_has(&parts);
    assert_eq!(project.files(), before, "nothing was written");
}

/// `export` after `quantize_dynamic`: every weight is the INT8 input of ConvInteger or
/// MatMulInteger, which GGUF has no type for, so the candidate fails with a reason that says
/// what to do instead of writing the biases and scales alone.
#[test]
fn export_after_int8_quantization_fails_saying_what_to_do() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_dynamic: {per_channel: false}\n  - export: {format: gguf}\n",
    );
    outcome(&mut project.run()).expect_code(1).no_panic();
    let report = std::fs::read_to_string(project.path("out/report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["status"], "failed", "{candidate:#}");
    let reason = candidate["reasons"][0].as_str().unwrap_or_default();
    for part in ["every weight of the model is left out", "read by ConvInteger", "`export` before"]
    {
        assert!(reason.contains(part), "{part:?} missing from {reason}");
    }
    assert!(!project.path("out/model.gguf").exists(), "{:?}", project.files());
}
