//! Device targets from the command line: `pipeline targets` (table and JSON), a recipe whose
//! target this host cannot measure (refused, or built without measuring under
//! `--no-measure`), and target names that do not exist.

mod common;

use common::{ort_library, outcome, Project};
use serde_json::Value;

const ALL: [&str; 7] =
    ["cpu", "cpu-x86-vnni", "cpu-arm64", "gpu-cuda", "gpu-directml", "npu-qnn", "npu-openvino"];

/// The providers the project's ONNX Runtime has, asked from its Python package (the same
/// build): the test's own view of what can be measured here.
fn python_providers() -> Vec<String> {
    let python = common::venv_python();
    let output = std::process::Command::new(&python)
        .args(["-c", "import onnxruntime as o; print(','.join(o.get_available_providers()))"])
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().split(',').map(str::to_string).collect()
}

#[test]
fn targets_lists_every_profile_and_marks_cpu_measurable() {
    let project = Project::digits();
    let mut command = project.pipeline();
    command.args(["targets", "--json", "--ort-lib"]).arg(ort_library());
    let result = outcome(&mut command);
    result.expect_code(0);
    let listing: Value = serde_json::from_str(&result.stdout).expect("JSON");

    let providers: Vec<String> = listing["providers"]["available"]
        .as_array()
        .expect("the runtime loaded")
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let mut expected = python_providers();
    expected.sort();
    let mut got = providers.clone();
    got.sort();
    assert_eq!(got, expected, "the engine and ORT's Python package disagree");

    let targets = listing["targets"].as_array().unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ALL);
    for target in targets {
        let name = target["name"].as_str().unwrap();
        let wanted: Vec<&str> =
            target["providers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        let missing: Vec<&&str> =
            wanted.iter().filter(|p| !providers.iter().any(|have| have == *p)).collect();
        let measurable = target["measurable"].as_bool().unwrap();
        if !missing.is_empty() {
            assert!(!measurable, "{name} is marked measurable without {missing:?}");
            let reason = target["reason"].as_str().unwrap();
            assert!(reason.contains(missing[0]), "{name}: {reason}");
        }
        assert!(!target["precisions"].as_array().unwrap().is_empty(), "{name}");
    }
    assert_eq!(targets[0]["measurable"], Value::Bool(true), "cpu: {}", targets[0]);
    let qnn = &targets[5];
    let constraints = qnn["constraints"].to_string();
    assert!(constraints.contains("static shapes") && constraints.contains("QDQ"), "{qnn}");

    let mut command = project.pipeline();
    command.args(["targets", "--ort-lib"]).arg(ort_library());
    let table = outcome(&mut command);
    table.expect_code(0);
    for name in ALL {
        assert!(table.stdout.contains(name), "{name} missing:\n{}", table.stdout);
    }
    assert!(table.stdout.contains("host: "), "{}", table.stdout);
}

#[test]
fn a_target_whose_provider_is_missing_is_refused_before_anything_is_written() {
    if python_providers().iter().any(|p| p == "CUDAExecutionProvider") {
        eprintln!("skipped: this host's ONNX Runtime has CUDA");
        return;
    }
    let project = Project::digits();
    project.edit_recipe("target: cpu", "target: gpu-cuda");
    let before = project.files();
    outcome(&mut project.run()).expect_code(2).stderr_has(&[
        "target `gpu-cuda` cannot be measured on this host",
        "CUDAExecutionProvider is not available",
        "--no-measure",
    ]);
    assert_eq!(project.files(), before, "a refused run wrote files");
}

#[test]
fn no_measure_builds_and_saves_every_candidate_and_ranks_none() {
    let project = Project::digits();
    // Static shapes and QDQ, as the NPU needs, and a dynamic INT8 branch it cannot run.
    let recipe = common::DIGITS_RECIPE.replace("target: cpu", "target: npu-qnn").replace(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - fix_shapes: {dims: {N: 1}}\n  - one_of:\n      - quantize_static: {format: qdq}\n      \
         - quantize_dynamic: {}\n",
    );
    project.write_recipe(&recipe);
    let missing_qnn = !python_providers().iter().any(|p| p == "QNNExecutionProvider");
    let result = outcome(project.run().arg("--no-measure"));
    result.expect_code(0);

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(project.path("out/report.json")).expect("report.json"),
    )
    .expect("JSON");
    assert_eq!(report["best"], Value::Null);
    assert_eq!(report["target"], "npu-qnn");
    let why = report["not_measured"].as_str().expect("the report says why");
    if missing_qnn {
        assert!(why.contains("QNNExecutionProvider is not available"), "{why}");
    }
    assert!(report["source"]["latency_ms"].is_null());
    let candidates = report["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2);
    // The dynamic INT8 candidate breaks the target's QDQ-only rule: it fails, saying so.
    let dynamic = &candidates[1];
    assert_eq!(dynamic["status"], "failed", "{dynamic}");
    let reason = dynamic["reasons"][0].as_str().expect("a reason");
    assert!(reason.contains("target `npu-qnn` runs QDQ quantization only"), "{reason}");
    assert!(reason.contains("DynamicQuantizeLinear"), "{reason}");
    for candidate in &candidates[..1] {
        assert_eq!(candidate["status"], "not_measured", "{candidate}");
        assert!(candidate["measurement"]["latency_ms"].is_null());
        assert!(candidate["measurement"]["accuracy"].is_null());
        let id = candidate["id"].as_str().unwrap();
        let model = project.path(&format!("out/candidates/{id}/model.onnx"));
        let size = std::fs::metadata(&model).expect("the candidate is saved").len();
        assert_eq!(candidate["measurement"]["size_bytes"], size, "{id}");
    }
    assert!(!project.path("out/model.onnx").exists(), "an unmeasured model was chosen");
    let markdown = std::fs::read_to_string(project.path("out/report.md")).unwrap();
    assert!(markdown.contains("- not measured: "), "{markdown}");
    assert!(result.stdout.contains("Not measured: "), "{}", result.stdout);
}

#[test]
fn an_unknown_target_suggests_the_closest_at_its_line() {
    let project = Project::digits();
    project.edit_recipe("target: cpu", "target: gpu-cuad");
    outcome(&mut project.run()).expect_code(2).stderr_has(&[
        "recipe.yaml:3:",
        "target",
        "unknown value `gpu-cuad`",
        "did you mean `gpu-cuda`?",
    ]);
}

#[test]
fn session_tune_writes_inference_json_with_every_tried_setting() {
    let project = Project::digits();
    project.edit_recipe("output: out/", "output: out/\nsession_tune: {}");
    outcome(&mut project.run()).expect_code(0);

    let path = project.path("out/inference.json");
    let inference: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("inference.json")).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let tried = inference["tried"].as_array().unwrap();
    // intra-op 1..=cores, then 2..=min(max(cores, 2), 4) inter-op threads, then 3 levels.
    let expected = cores + (cores.clamp(2, 4) - 1) + 3;
    assert_eq!(tried.len(), expected, "{inference}");
    let intra: Vec<u64> =
        tried[..cores].iter().map(|t| t["intra_op_threads"].as_u64().unwrap()).collect();
    assert_eq!(intra, (1..=cores as u64).collect::<Vec<_>>());
    let levels: Vec<&str> =
        tried.iter().map(|t| t["graph_optimization_level"].as_str().unwrap()).collect();
    for level in ["ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC", "ORT_DISABLE_ALL"] {
        assert!(levels.contains(&level), "{level} not tried: {levels:?}");
    }
    assert!(tried.iter().any(|t| t["execution_mode"] == "parallel"));

    // The best is the fastest setting tried, and each latency is a real measurement.
    let latencies: Vec<f64> = tried.iter().map(|t| t["latency_ms"].as_f64().unwrap()).collect();
    assert!(latencies.iter().all(|l| *l > 0.0), "{latencies:?}");
    let fastest = latencies.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(inference["best"]["latency_ms"].as_f64().unwrap(), fastest);
    assert_eq!(inference["model"], "model.onnx");
    assert_eq!(inference["runs"], 5);
    assert!(inference["onnxruntime_version"].as_str().unwrap().starts_with("1."));

    let markdown = std::fs::read_to_string(project.path("out/report.md")).unwrap();
    assert!(markdown.contains("- session_tune: best of"), "{markdown}");

    // A later run without session_tune leaves no inference.json for another model.
    project.write_recipe(common::DIGITS_RECIPE);
    outcome(&mut project.run()).expect_code(0);
    assert!(!path.exists(), "a stale inference.json was left");
}

#[test]
fn targets_with_an_ort_lib_that_does_not_load_is_a_wrong_flag() {
    let project = Project::digits();
    let missing = project.path("nonexistent.so");
    let mut command = project.pipeline();
    command.args(["targets", "--ort-lib"]).arg(&missing);
    let result = outcome(&mut command);
    result.expect_code(2).stderr_has(&["nonexistent.so", "--ort-lib", "hint:"]).no_panic();
    assert!(result.stdout.is_empty(), "a table was printed:\n{}", result.stdout);
}

#[test]
fn a_measured_run_removes_the_candidates_of_an_earlier_no_measure_run() {
    let project = Project::digits();
    outcome(project.run().arg("--no-measure")).expect_code(0);
    assert!(project.path("out/candidates").is_dir(), "--no-measure saved no candidates");

    let result = outcome(&mut project.run());
    result.expect_code(0).stderr_has(&["removed", "candidates", "--no-measure run wrote"]);
    assert!(!project.path("out/candidates").exists(), "stale candidates were left");
    assert!(project.path("out/model.onnx").is_file());
}
