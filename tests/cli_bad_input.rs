//! `pipeline run` on wrong input: each is refused with exit code 2, a message that names the
//! file and the field, array or node at fault, and nothing written anywhere.

mod common;

use common::{labels, outcome, Npz, Outcome, Project};
use ndarray::{Array2, Array4};

/// Runs the project's recipe, expects exit code 2 with each of `parts` on stderr, and checks
/// that the run created, removed or renamed nothing in the project's folder.
fn refused(project: &Project, parts: &[&str]) -> Outcome {
    let before = project.files();
    let result = outcome(&mut project.run());
    result.expect_code(2).no_panic().stderr_has(parts);
    assert_eq!(project.files(), before, "refused input changed the folder\n{}", result.stderr);
    result
}

/// The project's path for `name`, as the binary prints it.
fn shown(project: &Project, name: &str) -> String {
    project.path(name).display().to_string()
}

/// Asserts that stderr holds `recipe.yaml:LINE:COLUMN:` with numbers for both.
fn assert_located(result: &Outcome) {
    let located = result.stderr.split("recipe.yaml:").skip(1).any(|rest| {
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or_default();
        let column = parts.next().unwrap_or_default();
        line.parse::<u32>().is_ok() && column.parse::<u32>().is_ok()
    });
    assert!(located, "no recipe.yaml:line:column in:\n{}", result.stderr);
}

#[test]
fn missing_model_file() {
    let project = Project::digits();
    std::fs::remove_file(project.path("model.onnx")).expect("removed");
    let result = refused(&project, &[": model: ", &shown(&project, "model.onnx")]);
    assert_located(&result);
}

#[test]
fn model_path_that_is_a_folder() {
    let project = Project::digits();
    std::fs::remove_file(project.path("model.onnx")).expect("removed");
    std::fs::create_dir(project.path("model.onnx")).expect("a folder in its place");
    refused(&project, &[&shown(&project, "model.onnx")]);
}

#[test]
fn model_bytes_that_are_not_onnx() {
    let project = Project::digits();
    std::fs::write(project.path("model.onnx"), "hello, this is not an ONNX model\n").unwrap();
    refused(&project, &[&shown(&project, "model.onnx"), "ONNX"]);
}

#[test]
fn model_file_that_is_empty_or_holds_no_graph() {
    let project = Project::digits();
    std::fs::write(project.path("model.onnx"), b"").unwrap();
    refused(&project, &[&shown(&project, "model.onnx"), "the file is empty"]);

    // A valid protobuf (ir_version 7) of no graph.
    std::fs::write(project.path("model.onnx"), [0x08, 0x07]).unwrap();
    refused(&project, &[&shown(&project, "model.onnx"), "holds no graph"]);
}

#[test]
fn recipe_yaml_syntax_error_gives_line_and_column() {
    let project = Project::digits();
    project.edit_recipe("objective: [latency]", "objective: [latency");
    let result = refused(&project, &[&shown(&project, "recipe.yaml"), "YAML"]);
    assert_located(&result);
}

#[test]
fn unknown_pass_suggests_the_closest() {
    let project = Project::digits();
    project.edit_recipe("- quantize_dynamic:", "- quantize_dynamc:");
    let result = refused(
        &project,
        &[
            &shown(&project, "recipe.yaml"),
            "passes[0]",
            "quantize_dynamc",
            "did you mean `quantize_dynamic`",
        ],
    );
    assert_located(&result);
}

#[test]
fn unknown_key_suggests_the_closest() {
    let project = Project::digits();
    project.edit_recipe("{warmup: 2,", "{wamup: 2,");
    let result = refused(
        &project,
        &[&shown(&project, "recipe.yaml"), "metrics.latency.wamup", "did you mean `warmup`"],
    );
    assert_located(&result);
}

#[test]
fn wrong_parameter_type() {
    let project = Project::digits();
    project.edit_recipe("{per_channel: [false, true]}", "{per_channel: 3}");
    let result = refused(
        &project,
        &[&shown(&project, "recipe.yaml"), "passes[0].quantize_dynamic.per_channel", "boolean"],
    );
    assert_located(&result);
}

#[test]
fn evaluation_array_with_the_wrong_name() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("pixels", Array4::<f32>::zeros((10, 1, 8, 8)))
        .array("y", labels(10))
        .finish();
    refused(&project, &[&shown(&project, "test.npz"), "'input'", "pixels"]);
}

#[test]
fn evaluation_array_of_float64() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f64>::zeros((10, 1, 8, 8)))
        .array("y", labels(10))
        .finish();
    refused(&project, &[&shown(&project, "test.npz"), "'input'", "float64", "float32"]);
}

#[test]
fn evaluation_array_of_integers() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<i64>::zeros((10, 1, 8, 8)))
        .array("y", labels(10))
        .finish();
    refused(&project, &[&shown(&project, "test.npz"), "'input'", "int64", "float32"]);
}

#[test]
fn evaluation_array_of_the_wrong_shape() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array2::<f32>::zeros((10, 64)))
        .array("y", labels(10))
        .finish();
    refused(&project, &[&shown(&project, "test.npz"), "'input'", "[10, 64]", "shape"]);
}

#[test]
fn evaluation_file_with_zero_samples() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((0, 1, 8, 8)))
        .array("y", labels(0))
        .finish();
    refused(&project, &[&shown(&project, "test.npz"), "no samples"]);
}

#[test]
fn evaluation_file_of_zero_bytes() {
    let project = Project::digits();
    std::fs::write(project.path("test.npz"), b"").expect("written");
    refused(&project, &[&shown(&project, "test.npz")]);
}

#[test]
fn evaluation_file_without_the_labels_array() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((10, 1, 8, 8)))
        .finish();
    let result =
        refused(&project, &["data.evaluation.labels: ", &shown(&project, "test.npz"), "'y'"]);
    assert_located(&result);
}

#[test]
fn missing_evaluation_file() {
    let project = Project::digits();
    std::fs::remove_file(project.path("test.npz")).expect("removed");
    refused(&project, &[&shown(&project, "test.npz")]);
}

/// Accuracy is asked for but the recipe names no labels array: the input is wrong, so this
/// is exit code 2 and not a failed job.
#[test]
fn accuracy_without_labels_in_the_recipe() {
    let project = Project::digits();
    project.edit_recipe("{path: test.npz, labels: y}", "{path: test.npz}");
    refused(&project, &["labels"]);
}

#[test]
fn calibration_array_of_the_wrong_shape() {
    let project = Project::digits();
    Npz::create(&project.path("calib.npz")).array("input", Array2::<f32>::zeros((10, 64))).finish();
    let result = refused(
        &project,
        &["data.calibration: ", &shown(&project, "calib.npz"), "'input'", "[10, 64]"],
    );
    assert_located(&result);
}

#[test]
fn static_quantization_without_calibration_data() {
    let project = Project::digits();
    let text = common::DIGITS_RECIPE
        .replace("  calibration: {path: calib.npz}\n", "")
        .replace("quantize_dynamic: {per_channel: [false, true]}", "quantize_static: {}");
    project.write_recipe(&text);
    let result = refused(
        &project,
        &[&shown(&project, "recipe.yaml"), "passes[0].quantize_static", "`data.calibration`"],
    );
    assert_located(&result);
}

#[test]
fn accuracy_output_the_model_does_not_have() {
    let project = Project::digits();
    project.edit_recipe("output: logits", "output: logit");
    let result = refused(
        &project,
        &[&shown(&project, "recipe.yaml"), "metrics.accuracy.output: `logit`", "logits"],
    );
    assert_located(&result);
}

#[test]
fn output_in_the_models_own_folder() {
    let project = Project::digits();
    project.edit_recipe("output: out/", "output: .");
    let result = refused(&project, &[": output: ", "own folder", "model.onnx"]);
    assert_located(&result);

    // `..` out of a folder that does not exist yet is the model's folder too: the run wrote
    // its best model over the source.
    let project = Project::digits();
    project.edit_recipe("output: out/", "output: newdir/..");
    let result = refused(&project, &[": output: ", "newdir/.. is the model's own folder"]);
    assert_located(&result);
    outcome(project.pipeline().arg("validate").arg(project.recipe())).expect_code(2);
}

#[test]
fn output_that_is_a_file() {
    let project = Project::digits();
    std::fs::write(project.path("out"), "a file where the output folder should be").unwrap();
    let result = refused(&project, &[": output: ", "out is a file, not a folder"]);
    assert_located(&result);

    // A folder below a file cannot be made: refused before anything runs, not when the run
    // first writes (it was exit 1 after the source had been measured).
    project.edit_recipe("output: out/", "output: out/best/");
    let result =
        refused(&project, &[": output: ", "cannot be made", "out is a file, not a folder"]);
    assert_located(&result);
}

#[test]
fn recipe_file_that_does_not_exist() {
    let project = Project::digits();
    std::fs::remove_file(project.recipe()).expect("removed");
    refused(&project, &[&shown(&project, "recipe.yaml")]);
}

#[test]
fn max_time_out_of_range_is_refused_at_its_field_for_validate_plan_and_run() {
    let cases = [
        "1e30",
        "1e20",
        "2592001",
        "\"31 days\"",
        "-1",
        "0",
        "1e-12",
        "0.0005",
        "\"1ns\"",
        "\"999us\"",
        "\"0s\"",
    ];
    for written in cases {
        let project = Project::digits();
        project.edit_recipe(
            "search: {strategy: exhaustive, max_candidates: 8}",
            &format!("search: {{strategy: exhaustive, max_time: {written}}}"),
        );
        let parts = ["search.max_time", "expected a time from 1ms to 30 days", "hint:"];
        for command in ["validate", "plan"] {
            let result = outcome(project.pipeline().arg(command).arg(project.recipe()));
            result.no_panic().expect_code(2).stderr_has(&parts);
        }
        refused(&project, &parts);
    }
}

/// Runs `pipeline validate` on the project's recipe and expects exit code 2 with each of
/// `parts` on stderr: the same check `run` makes, before anything is built.
fn invalid(project: &Project, parts: &[&str]) {
    let result = outcome(project.pipeline().arg("validate").arg(project.recipe()));
    result.expect_code(2).no_panic().stderr_has(parts);
}

/// A label of 57 for a model scoring 10 classes could never be predicted: accuracy would
/// count it wrong without a word. The digits model declares its 10 classes.
#[test]
fn labels_outside_the_model_classes() {
    let project = Project::digits();
    let mut y = labels(20);
    y[13] = 57;
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((20, 1, 8, 8)))
        .array("y", y)
        .finish();
    let place = "recipe.yaml:6:32: data.evaluation.labels: labels 'y' in";
    let parts =
        [place, &shown(&project, "test.npz"), "'y'", "57 at sample 13", "10 classes, 0 to 9"];
    invalid(&project, &parts);
    refused(&project, &parts);

    let mut y = labels(20);
    y[4] = -1;
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((20, 1, 8, 8)))
        .array("y", y)
        .finish();
    refused(&project, &["'y'", "-1 at sample 4"]);
}

#[test]
fn labels_that_are_floats_or_two_columns() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((10, 1, 8, 8)))
        .array("y", labels(10).mapv(|v| v as f32))
        .finish();
    let parts = [&shown(&project, "test.npz"), "'y'", "float32, not integers"];
    invalid(&project, &parts);
    refused(&project, &parts);

    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((10, 1, 8, 8)))
        .array("y", Array2::<i64>::zeros((10, 2)))
        .finish();
    refused(&project, &["'y'", "shape [10, 2]"]);

    // uint64 labels are class indices too, until one is too large for one.
    let mut y = labels(10).mapv(|v| v as u64);
    y[6] = (1 << 63) + 5;
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::zeros((10, 1, 8, 8)))
        .array("y", y)
        .finish();
    refused(&project, &["'y'", "hold 9223372036854775813 at sample 6", "too large"]);
}

/// Evaluation images that are all NaN give NaN scores for the source and every candidate
/// alike; the run would rank noise. (NaN in calibration data fails the static candidates:
/// tests/cli_static.rs.)
#[test]
fn evaluation_array_of_nan() {
    let project = Project::digits();
    Npz::create(&project.path("test.npz"))
        .array("input", Array4::<f32>::from_elem((10, 1, 8, 8), f32::NAN))
        .array("y", labels(10))
        .finish();
    let parts = [
        &format!("data.evaluation: array 'input' in {}", shown(&project, "test.npz")),
        "only NaN or infinite values (640 of 640)",
    ];
    invalid(&project, &parts);
    refused(&project, &parts);
}

/// `fix_shapes` names a dimension and an input the model does not have: `validate` has the
/// model at hand and refuses them at the step (every candidate would fail otherwise).
#[test]
fn fix_shapes_names_that_the_model_does_not_have() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - fix_shapes: {dims: {batch: 1}}\n",
    );
    let parts = ["passes[0].fix_shapes", "`dims` names `batch`", "dimensions are: `N`"];
    invalid(&project, &parts);
    refused(&project, &parts);

    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - fix_shapes: {inputs: {pixels: [1, 1, 8, 8]}}\n",
    );
    refused(&project, &["`inputs` names `pixels`", "inputs are: `input`"]);
}

/// `embeddings` at 8 bits cannot be written as MatMulNBits, the format `auto` takes for
/// ONNX Runtime: `validate` refuses the step (the plan alone does not know the runtime).
#[test]
fn quantize_weights_embeddings_at_eight_bits_for_onnx_runtime() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_weights: {embeddings: true, bits: 8}\n",
    );
    let parts = ["passes[0].quantize_weights", "`embeddings` with `bits: 8`", "hint:"];
    invalid(&project, &parts);
    refused(&project, &parts);
}
