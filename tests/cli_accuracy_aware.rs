//! `pipeline run` with `accuracy_aware` on an MLP built here whose first MatMul holds one
//! extreme weight (on a pixel that is 0 in every digits image, so the float model does not
//! notice it): per-tensor static INT8 rounds every other weight of that layer to 0 and the
//! quantized candidate misses its accuracy goal. Accuracy-aware quantization must rank that
//! node first, keep it in float, meet the goal, and leave the other MatMul quantized; without
//! `accuracy_aware` the candidate misses as before. Recipes that cannot use it are refused.

mod common;

use common::{outcome, Project, DIGITS_RECIPE};
use serde_json::Value;

/// The MLP project with per-tensor static quantization and a 5-point accuracy goal, plus
/// `extra` at the top level of the recipe.
fn project(extra: &str) -> Project {
    let project = Project::digits();
    common::write_digits_mlp(&project, 5, true);
    let recipe = DIGITS_RECIPE
        .replace(
            "  - quantize_dynamic: {per_channel: [false, true]}\n",
            "  - quantize_static: {calibration: minmax, per_channel: false}\n",
        )
        .replace("max_drop: 0.01", "max_drop: 0.05");
    project.write_recipe(&format!("{recipe}{extra}"));
    project
}

fn report(project: &Project) -> Value {
    let text = std::fs::read_to_string(project.path("out/report.json")).expect("a report");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn the_outlier_layer_is_kept_in_float_and_the_goal_is_met() {
    let project = project("accuracy_aware: {max_reverts: 3, subset: 16}\n");
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let report = report(&project);
    let source = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    assert!(source > 0.8, "the fitted MLP should classify digits: {source}");
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["status"], "passed", "{candidate:#}");
    let aware = &candidate["accuracy_aware"];
    assert_eq!(aware["step"], "quantize_static", "{aware:#}");
    assert_eq!(aware["reverted"], serde_json::json!(["fc1"]), "{aware:#}");
    assert_eq!(aware["goal_met"], true, "{aware:#}");
    let before = aware["accuracy_before"].as_f64().expect("an accuracy before");
    assert!(before < source - 0.05, "the plain candidate must miss: {before} vs {source}");
    // Both MatMuls were quantized, so both are ranked, the outlier layer first.
    let ranked: Vec<&str> =
        aware["ranking"].as_array().unwrap().iter().map(|h| h["node"].as_str().unwrap()).collect();
    assert_eq!(ranked, ["fc1", "fc2"], "{aware:#}");
    let after = aware["accuracies"][0].as_f64().expect("an accuracy after the revert");
    let measured = candidate["measurement"]["accuracy"].as_f64().unwrap();
    assert_eq!(after, measured, "the final model is the one measured");
    assert!(source - after <= 0.05, "{after} vs {source}");
    assert_eq!(report["best"], candidate["id"]);
    // The step's configuration as built names the node.
    assert_eq!(candidate["steps"][0]["config"]["nodes_to_exclude"], serde_json::json!(["fc1"]));

    // The winner: fc1 reads the float input and the float weight; fc2 reads dequantized ones.
    let model = pipeline_passes::ir::load(&project.path("out/model.onnx")).expect("the model");
    let graph = model.graph.as_ref().unwrap();
    let dequantized: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type() == "DequantizeLinear")
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let node = |name: &str| graph.node.iter().find(|n| n.name() == name).expect(name);
    let fc1 = node("fc1");
    assert_eq!(fc1.op_type(), "MatMul");
    assert!(fc1.input.iter().all(|i| !dequantized.contains(&i.as_str())), "{fc1:?}");
    assert!(graph.initializer.iter().any(|t| t.name() == "w1" && t.data_type() == 1));
    let fc2 = node("fc2");
    assert!(fc2.input.iter().all(|i| dequantized.contains(&i.as_str())), "{fc2:?}");

    let markdown = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    assert!(markdown.contains("\n## Accuracy-aware quantization\n"), "{markdown}");
    let line = format!("  - revert 1: `fc1` kept in float: accuracy {:.2}%", after * 100.0);
    assert!(markdown.contains(&line), "{markdown}");
    assert!(markdown.contains("goal met"), "{markdown}");

    // A second run reads the reverted build from the project's cache (its key differs from the
    // plain step's by `nodes_to_exclude`) and comes to the same result.
    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();
    let again = crate::report(&project);
    let candidate = &again["candidates"][0];
    assert_eq!(candidate["accuracy_aware"]["reverted"], serde_json::json!(["fc1"]));
    assert_eq!(candidate["steps"][0]["cached"], true, "{candidate:#}");
    assert_eq!(candidate["measurement"]["accuracy"].as_f64(), Some(after));
}

#[test]
fn without_accuracy_aware_the_candidate_misses() {
    let project = project("");
    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();
    let report = report(&project);
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["status"], "missed_goals", "{candidate:#}");
    assert!(candidate.get("accuracy_aware").is_none(), "{candidate:#}");
}

#[test]
fn recipes_that_cannot_use_it_are_refused() {
    let project = project("accuracy_aware: {max_reverts: 0}\n");
    let result = outcome(&mut project.run());
    result.expect_code(2).no_panic().stderr_has(&["accuracy_aware.max_reverts", "1 or more"]);

    let project = project_without_goal();
    let result = outcome(&mut project.run());
    result.expect_code(2).no_panic().stderr_has(&[
        "accuracy_aware",
        "needs an accuracy goal",
        "max_drop",
    ]);
}

/// The MLP project whose accuracy is measured but has no goal, with `accuracy_aware`.
fn project_without_goal() -> Project {
    let project = project("accuracy_aware: {max_reverts: 2}\n");
    let text = std::fs::read_to_string(project.recipe()).expect("the recipe");
    assert!(text.contains(", max_drop: 0.05"), "{text}");
    project.write_recipe(&text.replace(", max_drop: 0.05", ""));
    project
}
