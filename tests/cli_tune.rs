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
fn tune_without_labels_or_calibration_judges_by_fidelity_and_drops_static_quantization() {
    let project = Project::digits();
    // calib.npz holds inputs only: evaluation data without labels.
    let args = ["model.onnx", "--target", "cpu", "--data", "calib.npz", "--output", "t"];
    outcome(&mut tune(&project, &args)).expect_code(0);
    let text = std::fs::read_to_string(project.path("t/recipe.yaml")).unwrap();
    assert!(text.contains("accuracy: {kind: fidelity, min: 0.99}"), "{text}");
    assert!(!text.contains("kind: top1") && !text.contains("quantize_static"), "{text}");
    let report = report(&project, "t");
    assert!((report["source"]["accuracy"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{report:#}");
    let candidates = report["candidates"].as_array().unwrap();
    let measured: Vec<_> =
        candidates.iter().filter(|c| c["measurement"]["accuracy"].is_f64()).collect();
    assert!(!measured.is_empty(), "{report:#}");
    assert!(measured.iter().all(|c| c["measurement"]["fidelity"]["cosine_mean"].is_f64()));
}

#[test]
fn tune_refuses_bad_input_and_writes_nothing() {
    let project = Project::digits();
    let before = project.files();
    let cases: [(&[&str], &[&str]); 5] = [
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
            &["model.onnx", "--target", "cpu", "--data", "test.npz", "--calibration", "."],
            &["the calibration file . is a folder, not a file"],
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
    assert!(text.contains("- fix_shapes: {inputs: {\"input\": [1, 1, 8, 8]}}"), "{text}");
    let report = report(&project, "npu");
    for candidate in report["candidates"].as_array().unwrap() {
        assert_eq!(candidate["status"], "not_measured", "{candidate}");
        let id = candidate["id"].as_str().unwrap();
        assert!(project.path(&format!("npu/candidates/{id}/model.onnx")).is_file());
    }
}

#[test]
fn tune_checks_the_data_and_output_before_writing_and_names_the_flags() {
    let project = Project::digits();
    // The user's own recipe beside the model, as in examples/digits.
    std::fs::write(project.path("recipe.yaml"), "# mine\n").unwrap();
    std::fs::write(project.path("afile"), "not a folder").unwrap();
    let before = project.files();
    let base = ["model.onnx", "--target", "cpu"];
    let cases: [(&[&str], &[&str]); 8] = [
        // test.npz holds labels `y`: without --labels the hint says to pass it.
        (
            &["--data", "test.npz", "--output", "t"],
            &["--data: test.npz holds arrays the model does not take: y", "pass --labels y"],
        ),
        (
            &["--data", "test.npz", "--labels", "z", "--output", "t"],
            &["--labels: test.npz has no array `z`", "input, y"],
        ),
        // Calibration data with labels in it does not fit a calibration set.
        (
            &["--data", "calib.npz", "--calibration", "test.npz", "--output", "t"],
            &["--calibration: test.npz holds arrays the model does not take: y"],
        ),
        // The model's own folder, which also holds the user's recipe.yaml.
        (
            &["--data", "test.npz", "--labels", "y", "--output", "."],
            &["--output: . is the model's own folder", "pass --output another folder"],
        ),
        (
            &["--data", "test.npz", "--labels", "y", "--output", "afile"],
            &["--output: afile is a file, not a folder", "hint: pass --output a folder"],
        ),
        // A folder below a file cannot be made: named as the flag, not as a recipe field.
        (
            &["--data", "test.npz", "--labels", "y", "--output", "afile/sub"],
            &["--output: afile/sub cannot be made: afile is a file", "pass --output a folder"],
        ),
        // A folder that does not exist yet, and `..` out of it: the model's folder again.
        (
            &["--data", "test.npz", "--labels", "y", "--output", "new/.."],
            &["--output: new/.. is the model's own folder"],
        ),
        // Paths as given: not relative to the recipe that would be written.
        (
            &["--data", "t/../nope.npz", "--output", "t"],
            &["the data file t/../nope.npz does not exist"],
        ),
    ];
    for (args, messages) in cases {
        let result = outcome(tune(&project, &base).args(args));
        result.expect_code(2).stderr_has(messages).no_panic();
        assert!(!result.stderr.contains("`output`"), "a recipe field named:\n{}", result.stderr);
        assert_eq!(project.files(), before, "{args:?} wrote files");
    }
    assert_eq!(std::fs::read_to_string(project.path("recipe.yaml")).unwrap(), "# mine\n");
}

#[test]
fn tune_overwrites_only_a_recipe_it_wrote() {
    let project = Project::digits();
    let args = ["model.onnx", "--target", "cpu", "--data", "calib.npz", "--output", "t"];
    outcome(&mut tune(&project, &args)).expect_code(0);
    // Its own recipe is rewritten by a second tune.
    outcome(&mut tune(&project, &args)).expect_code(0);

    std::fs::write(project.path("t/recipe.yaml"), "name: mine\n").unwrap();
    let before = project.files();
    outcome(&mut tune(&project, &args)).expect_code(2).stderr_has(&[
        "--output: t/recipe.yaml already exists and `pipeline tune` did not write it",
        "hint: pass --output another folder, or remove t/recipe.yaml",
    ]);
    assert_eq!(std::fs::read_to_string(project.path("t/recipe.yaml")).unwrap(), "name: mine\n");
    assert_eq!(project.files(), before);
}

#[test]
fn tune_refuses_an_unmeasurable_target_before_writing() {
    let project = Project::digits();
    let before = project.files();
    // The project's ONNX Runtime is a CPU build: no CUDA provider.
    let args = ["model.onnx", "--target", "gpu-cuda", "--data", "calib.npz", "--output", "g"];
    let result = outcome(&mut tune(&project, &args));
    if result.code == Some(0) {
        eprintln!("skipped: this host can measure gpu-cuda");
        return;
    }
    result.expect_code(2).stderr_has(&[
        "target `gpu-cuda` cannot be measured",
        "CUDAExecutionProvider",
        "--no-measure",
    ]);
    assert_eq!(project.files(), before, "a refused tune wrote files");
}

/// Labels that are not class indices of the model's output are the `--labels` flag's doing:
/// the error names it, not a field of a recipe tune has not written.
#[test]
fn tune_names_the_labels_flag_for_labels_that_are_no_classes() {
    let project = Project::digits();
    let mut y = common::labels(20);
    y[3] = 12;
    common::Npz::create(&project.path("bad.npz"))
        .array("input", ndarray::Array4::<f32>::zeros((20, 1, 8, 8)))
        .array("y", y)
        .finish();
    let before = project.files();
    let args = ["model.onnx", "--target", "cpu", "--data", "bad.npz", "--labels", "y"];
    let result = outcome(tune(&project, &args).args(["--output", "t"]));
    result.expect_code(2).no_panic().stderr_has(&[
        "--labels: `y` in bad.npz hold 12 at sample 3, which is not a class",
        "10 classes",
        "hint: pass --labels the array of integer class indices",
    ]);
    assert!(!result.stderr.contains("recipe.yaml"), "{}", result.stderr);
    assert_eq!(project.files(), before, "tune wrote files");
}

/// An error whose cause carries a hint is printed once: the cause is not repeated under
/// `caused by:` when the message already quotes it.
#[test]
fn a_data_error_is_printed_once() {
    let project = Project::digits();
    let result =
        outcome(&mut tune(&project, &["model.onnx", "--target", "cpu", "--data", "model.onnx"]));
    result.expect_code(2).stderr_has(&["--data: data file model.onnx is neither .npz nor .npy"]);
    assert_eq!(result.stderr.matches("neither .npz nor .npy").count(), 1, "{}", result.stderr);
    assert!(!result.stderr.contains("caused by"), "{}", result.stderr);
}

/// Labels that are no class indices are the `--labels` flag's error, not a field of the
/// recipe tune would write.
#[test]
fn float_labels_are_the_labels_flags_error() {
    let project = Project::digits();
    common::Npz::create(&project.path("float-labels.npz"))
        .array("input", ndarray::Array4::<f32>::zeros((10, 1, 8, 8)))
        .array("z", common::labels(10).mapv(|v| v as f32))
        .finish();
    let before = project.files();
    let args = ["model.onnx", "--target", "cpu", "--data", "float-labels.npz", "--labels", "z"];
    outcome(&mut tune(&project, &args)).expect_code(2).stderr_has(&[
        "error: --labels: `z` in float-labels.npz are float32, not integers",
        "hint: pass --labels the array of integer class indices",
    ]);
    assert_eq!(project.files(), before, "tune wrote files");
}
