//! `pipeline run` with `export: {format: onnx}` and `export: {format: ort}`: the best model
//! written with external data above the size threshold and inline below it, stamped with
//! the recipe and its passes; opsets and IR versions set where the model allows and refused
//! with the operator named where it does not; the `.ort` file beside the model loading in
//! ONNX Runtime's Python package with the ONNX model's outputs. Every output is compared in
//! the venv's onnxruntime against the source model.

mod common;

use std::process::Command as Process;

use common::{outcome, write_digits_mlp, Project};

/// Runs `model` (argv 1) and `reference` (argv 2) in onnxruntime on the test images (argv 3)
/// and prints the largest absolute difference of their first outputs; for an `.onnx` model,
/// checks it with onnx's checker and prints its `metadata_props`, opset and IR version as
/// `key=value` lines too.
const COMPARE: &str = r#"
import sys
import numpy as np
import onnx
import onnxruntime as ort

def run(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs = np.load(sys.argv[3])["input"]
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]

found, expected = run(sys.argv[1]), run(sys.argv[2])
assert found.shape == expected.shape, (found.shape, expected.shape)
print(f"max_abs={float(np.abs(found - expected).max())}")
if sys.argv[1].endswith(".onnx"):
    onnx.checker.check_model(sys.argv[1])
    model = onnx.load(sys.argv[1])
    for entry in model.metadata_props:
        print(f"{entry.key}={entry.value}")
    print(f"opset={[o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')][0]}")
    print(f"ir_version={model.ir_version}")
"#;

/// What [`COMPARE`] printed for `model` against `reference`, as `key=value` pairs.
fn compare(project: &Project, model: &str, reference: &str) -> Vec<(String, String)> {
    let output = Process::new(common::venv_python())
        .arg("-c")
        .arg(COMPARE)
        .arg(project.path(model))
        .arg(project.path(reference))
        .arg(project.path("test.npz"))
        .output()
        .expect("the venv's python starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python: {}", String::from_utf8_lossy(&output.stderr));
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    let found = pairs.iter().find(|(k, _)| k == key);
    found.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no `{key}` in {pairs:?}"))
}

fn report(project: &Project) -> serde_json::Value {
    let text = std::fs::read_to_string(project.path("out/report.json")).expect("a report");
    serde_json::from_str(&text).expect("the report is JSON")
}

#[test]
fn a_model_above_the_threshold_is_written_with_one_data_file_and_runs_alike() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: onnx, size_threshold: 1KiB}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();

    let data = project.path("out/model.onnx.data");
    assert!(data.is_file(), "no data file: {:?}", project.files());
    let model_bytes = std::fs::metadata(project.path("out/model.onnx")).unwrap().len();
    let source_bytes = std::fs::metadata(project.path("model.onnx")).unwrap().len();
    assert!(model_bytes < source_bytes / 4, "the weights stayed inline: {model_bytes} bytes");
    assert!(std::fs::metadata(&data).unwrap().len() > 20_000);

    let found = compare(&project, "out/model.onnx", "model.onnx");
    assert_eq!(value(&found, "max_abs"), "0.0", "the same weights give the same outputs");
    assert_eq!(value(&found, "pipeline.recipe"), "digits-int8");
    assert_eq!(value(&found, "pipeline.passes"), "export(format=onnx, size_threshold=1KiB)");
    assert_eq!(value(&found, "opset"), "17", "the opset is kept");
    assert_eq!(value(&found, "ir_version"), "8", "the IR version is kept");

    // Below the threshold the model is one file, and the earlier data file is gone.
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: onnx, external_data: auto, size_threshold: 1MiB}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();
    assert!(!data.exists(), "a stale data file is left: {:?}", project.files());
    let inline_bytes = std::fs::metadata(project.path("out/model.onnx")).unwrap().len();
    assert!(inline_bytes > source_bytes, "{inline_bytes} bytes inline, {source_bytes} source");
    let found = compare(&project, "out/model.onnx", "model.onnx");
    assert_eq!(value(&found, "max_abs"), "0.0");
}

#[test]
fn external_data_always_and_never_decide_alone() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_dynamic: {per_channel: false}\n  - export: {format: onnx, external_data: \
         always}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();
    assert!(project.path("out/model.onnx.data").is_file(), "{:?}", project.files());
    let found = compare(&project, "out/model.onnx", "model.onnx");
    let passes = value(&found, "pipeline.passes");
    assert_eq!(
        passes,
        "quantize_dynamic(per_channel=false) -> export(external_data=always, format=onnx)"
    );

    // `size_threshold` means nothing with `never`: refused before anything runs.
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: onnx, external_data: never, size_threshold: 1KiB}\n",
    );
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&["size_threshold", "external_data: auto"]);
}

#[test]
fn an_opset_is_set_where_the_operators_allow_and_refused_naming_the_one_that_changed() {
    let project = Project::digits();
    // Flatten -> MatMul -> Relu -> MatMul at opset 17, IR version 8.
    write_digits_mlp(&project, 3, false);
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - one_of:\n      \
         - export: {format: onnx, opset: [14, 20, 21, 13], ir_version: 10}\n      \
         - export: {format: onnx, opset: 20}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();

    let report = report(&project);
    let candidates = report["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5, "{report:#}");
    let outcome_of = |label: &str| {
        let candidate = candidates
            .iter()
            .find(|c| c["label"].as_str() == Some(label))
            .unwrap_or_else(|| panic!("no candidate `{label}` in {report:#}"));
        let reasons: Vec<&str> =
            candidate["reasons"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
        (candidate["status"].as_str().unwrap().to_string(), reasons.join("; "))
    };

    for opset in [14, 20] {
        let (status, reasons) =
            outcome_of(&format!("export(format=onnx, ir_version=10, opset={opset})"));
        assert_eq!(status, "passed", "opset {opset}: {reasons}");
    }
    let (status, reason) = outcome_of("export(format=onnx, ir_version=10, opset=21)");
    assert_eq!(status, "failed");
    assert!(reason.contains("`Flatten` changed its definition at opset 21"), "{reason}");
    let (status, reason) = outcome_of("export(format=onnx, ir_version=10, opset=13)");
    assert_eq!(status, "failed");
    assert!(reason.contains("`Relu` changed its definition at opset 14"), "{reason}");
    assert!(!reason.contains("MatMul"), "MatMul is alike at 13 and 17: {reason}");
    let (status, reason) = outcome_of("export(format=onnx, opset=20)");
    assert_eq!(status, "failed");
    assert!(reason.contains("opset 20 needs IR version 9"), "{reason}");

    // The winner declares what was asked, passes onnx's checker and runs as the source.
    let found = compare(&project, "out/model.onnx", "model.onnx");
    assert!(["14", "20"].contains(&value(&found, "opset")), "{found:?}");
    assert_eq!(value(&found, "ir_version"), "10");
    assert_eq!(value(&found, "max_abs"), "0.0");
    assert!(!project.path("out/model.onnx.data").exists(), "a small model stays inline");
}

#[test]
fn the_ort_file_lands_beside_the_model_and_gives_its_outputs() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: ort}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();

    let ort = project.path("out/model.ort");
    assert!(ort.is_file(), "out/ holds {:?}", project.files());
    let bytes = std::fs::read(&ort).unwrap();
    // An ORT format file is a flatbuffer with the file identifier `ORTM` at byte 4.
    assert_eq!(&bytes[4..8], b"ORTM", "not an ORT format file");
    let found = compare(&project, "out/model.ort", "out/model.onnx");
    let max_abs: f64 = value(&found, "max_abs").parse().unwrap();
    assert!(max_abs <= 1e-5, "the ORT file differs from the ONNX model by {max_abs}");

    let report = report(&project);
    let candidate = &report["candidates"][0];
    let note = candidate["notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "artifact")
        .unwrap_or_else(|| panic!("no artifact note in {candidate}"));
    let message = note["message"].as_str().unwrap();
    assert!(message.starts_with("model.ort: ORT format"), "{message}");
    assert!(message.contains("level `basic`"), "{message}");

    // A second run reads the step and its `.ort` file from the cache, byte for byte.
    std::fs::remove_file(&ort).unwrap();
    outcome(&mut project.run()).expect_code(0).no_panic();
    let again = self::report(&project);
    assert_eq!(again["candidates"][0]["steps"][0]["cached"], true, "{again:#}");
    assert_eq!(std::fs::read(&ort).unwrap(), bytes, "the cached file differs");

    // A winner without the export leaves no stale `.ort` beside the new model.
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_dynamic: {per_channel: false}\n",
    );
    outcome(&mut project.run()).expect_code(0).no_panic();
    assert!(!ort.exists(), "a stale model.ort is left: {:?}", project.files());
}

#[test]
fn a_parameter_of_another_format_is_refused_at_validation() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: onnx, optimization: extended}\n",
    );
    let before = project.files();
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&["`optimization` does not apply to `format: onnx`", "format: ort"]);
    assert_eq!(project.files(), before, "nothing was written");
}

/// An opset no ONNX release has needs no model to refuse: `validate` says so at the pass.
#[test]
fn an_opset_that_was_never_released_is_refused_at_validation() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: onnx, opset: 99}\n",
    );
    let before = project.files();
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&["passes[0].export", "`opset: 99` is no released opset", "5 to "]);
    outcome(&mut project.run()).expect_code(2).stderr_has(&["`opset: 99`"]);
    assert_eq!(project.files(), before, "nothing was written");

    // Nor does an IR version too old for the opset asked for.
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - export: {format: onnx, opset: 18, ir_version: 3}\n",
    );
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&["`opset: 18` needs IR version 8 or later", "set `ir_version: 8`"]);
}
