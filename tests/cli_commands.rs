//! The subcommands that do not run a recipe: `plan`, `validate`, `schema`, `passes` and
//! `inspect`, on the digits example and on wrong input.

mod common;

use common::{outcome, pipeline, Project};
use serde_json::Value;

#[test]
fn plan_shows_both_candidates_of_the_digits_recipe() {
    let project = Project::digits();
    let before = project.files();
    let result = outcome(project.pipeline().arg("plan").arg(project.recipe()));
    result.expect_code(0).no_panic();
    assert!(result.stdout.contains("2 candidates"), "{}", result.stdout);
    assert!(result.stdout.contains("[c1]") && result.stdout.contains("[c2]"), "{}", result.stdout);
    assert!(result.stdout.contains("quantize_dynamic"), "{}", result.stdout);
    assert_eq!(project.files(), before, "plan wrote files");
}

#[test]
fn plan_of_a_bad_recipe_exits_2() {
    let project = Project::digits();
    project.edit_recipe("- quantize_dynamic:", "- quantize_dynamc:");
    let result = outcome(project.pipeline().arg("plan").arg(project.recipe()));
    result
        .expect_code(2)
        .no_panic()
        .stderr_has(&[&project.recipe().display().to_string(), "did you mean `quantize_dynamic`"]);
}

#[test]
fn validate_accepts_the_digits_recipe() {
    let project = Project::digits();
    let before = project.files();
    let result = outcome(project.pipeline().arg("validate").arg(project.recipe()));
    result.expect_code(0).no_panic();
    assert!(result.stdout.contains("valid"), "{}", result.stdout);
    assert!(result.stdout.contains("2 candidate"), "{}", result.stdout);
    assert_eq!(project.files(), before, "validate wrote files");
}

#[test]
fn validate_accepts_the_shipped_example_as_is() {
    let recipe = common::root().join("examples/digits/recipe.yaml");
    let result = outcome(pipeline().arg("validate").arg(&recipe));
    result.expect_code(0).no_panic();
    assert!(result.stdout.contains("8 candidate"), "{}", result.stdout);
}

#[test]
fn validate_refuses_a_wrong_parameter_type() {
    let project = Project::digits();
    project.edit_recipe("{per_channel: [false, true]}", "{per_channel: 3}");
    let result = outcome(project.pipeline().arg("validate").arg(project.recipe()));
    result.expect_code(2).no_panic().stderr_has(&[
        &project.recipe().display().to_string(),
        "passes[0].quantize_dynamic.per_channel",
    ]);
}

#[test]
fn schema_prints_json_that_describes_recipes() {
    let result = outcome(pipeline().arg("schema"));
    result.expect_code(0).no_panic();
    let schema: Value = serde_json::from_str(&result.stdout).expect("the schema is JSON");
    let properties = schema["properties"].as_object().expect("the schema has properties");
    for field in ["model", "passes", "metrics", "output"] {
        assert!(properties.contains_key(field), "no `{field}` in {schema:#}");
    }
}

#[test]
fn schema_matches_the_committed_file() {
    let result = outcome(pipeline().arg("schema"));
    result.expect_code(0);
    let committed = common::root().join("schemas/recipe.schema.json");
    let text = std::fs::read_to_string(&committed).expect("the committed schema is readable");
    let committed: Value = serde_json::from_str(&text).expect("the committed schema is JSON");
    let printed: Value = serde_json::from_str(&result.stdout).expect("the schema is JSON");
    assert!(printed == committed, "schemas/recipe.schema.json is stale: run `pipeline schema`");
}

#[test]
fn passes_lists_quantize_dynamic_and_its_parameters() {
    let result = outcome(pipeline().arg("passes"));
    result.expect_code(0).no_panic();
    assert!(result.stdout.contains("quantize_dynamic"), "{}", result.stdout);
    assert!(result.stdout.contains("per_channel"), "{}", result.stdout);
}

#[test]
fn inspect_summarizes_the_digits_model() {
    let model = common::root().join("examples/digits/model.onnx");
    let result = outcome(pipeline().arg("inspect").arg(&model));
    result.expect_code(0).no_panic();
    for part in ["input", "logits", "Conv", "Gemm"] {
        assert!(result.stdout.contains(part), "no `{part}` in:\n{}", result.stdout);
    }

    let result = outcome(pipeline().arg("inspect").arg("--json").arg(&model));
    result.expect_code(0).no_panic();
    let summary: Value = serde_json::from_str(&result.stdout).expect("the summary is JSON");
    assert_eq!(summary["inputs"][0]["name"], "input", "{summary:#}");
    assert_eq!(summary["outputs"][0]["name"], "logits", "{summary:#}");
    assert_eq!(summary["ops"]["Conv"], 2, "{summary:#}");
    assert_eq!(summary["ops"]["Gemm"], 2, "{summary:#}");
    assert_eq!(summary["nodes"], 10, "{summary:#}");
    let size = std::fs::metadata(&model).expect("the model").len();
    assert_eq!(summary["size_bytes"], size, "{summary:#}");
    // The elements of its initializers, as the onnx package counts them.
    assert_eq!(summary["parameters"], 6058, "{summary:#}");
}

/// Weights in Constant nodes (as PaddlePaddle exports them) are parameters too: the OCR
/// classifier showed 0.
#[test]
fn inspect_counts_constant_node_weights() {
    use ndarray::ArrayD;
    use pipeline_passes::ir::{self, proto::GraphProto, proto::ModelProto};

    let weight = ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 3]));
    let mut constant = ir::make_node("Constant", &[], &["w"], "w_const");
    constant.attribute.push(ir::attr_tensor("value", ir::tensor_from_f32("w", &weight)));
    let bias = ir::tensor_from_f32("b", &ArrayD::<f32>::zeros(ndarray::IxDyn(&[3])));
    let graph = GraphProto {
        node: vec![
            constant,
            ir::make_node("MatMul", &["x", "w"], &["h"], "mm"),
            ir::make_node("Add", &["h", "b"], &["y"], "add"),
        ],
        initializer: vec![bias],
        input: vec![ir::float_value_info("x", &[1, 4])],
        output: vec![ir::float_value_info("y", &[1, 3])],
        ..Default::default()
    };
    let model = ModelProto { ir_version: Some(8), graph: Some(graph), ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, ir::encode(&model)).unwrap();

    let result = outcome(pipeline().arg("inspect").arg("--json").arg(&path));
    result.expect_code(0).no_panic();
    let summary: Value = serde_json::from_str(&result.stdout).expect("the summary is JSON");
    assert_eq!(summary["parameters"], 4 * 3 + 3, "{summary:#}");
}

#[test]
fn inspect_refuses_bytes_that_are_not_onnx() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, "hello, this is not an ONNX model\n").expect("written");
    let result = outcome(pipeline().arg("inspect").arg(&garbage));
    result.expect_code(2).no_panic().stderr_has(&[&garbage.display().to_string()]);
}

#[test]
fn inspect_refuses_a_missing_file() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let missing = dir.path().join("missing.onnx");
    let result = outcome(pipeline().arg("inspect").arg(&missing));
    result.expect_code(2).no_panic().stderr_has(&[&missing.display().to_string()]);
}

#[test]
fn unknown_subcommand_or_flag_exits_2() {
    outcome(pipeline().arg("runn")).expect_code(2).no_panic();
    outcome(pipeline().arg("run").arg("--no-such-flag")).expect_code(2).no_panic();
}

#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipeline"))
        .arg("passes")
        .stdout(full)
        .output()
        .expect("the pipeline binary starts");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    use std::process::Stdio;

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipeline"))
        .arg("schema")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the pipeline binary starts");
    // Closing the read end before the command writes makes its first write fail.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("the command ends");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
