//! `pipeline run` with `quantize_weights: {bits: [4, 8]}` on a small MLP built here for the
//! digits data (Flatten -> MatMul -> Relu -> MatMul, its last layer fitted by ridge regression
//! in numpy): both candidates are built, loaded in ONNX Runtime as MatMulNBits models, measured,
//! smaller than the float model, and about as accurate, with and without data-aware scales
//! (which need `data.calibration`: a recipe without it is refused at validation).

mod common;

use common::{outcome, Project, DIGITS_RECIPE};
use serde_json::Value;

#[test]
fn four_and_eight_bit_candidates_are_measured() {
    let project = Project::digits();
    common::write_digits_mlp(&project, 3, false);
    let old = "  - quantize_dynamic: {per_channel: [false, true]}\n";
    let recipe = DIGITS_RECIPE
        .replace(
            old,
            "  - quantize_weights: {bits: [4, 8], block_size: 32, data_aware: [false, true]}\n",
        )
        .replace("max_drop: 0.01", "max_drop: 0.05");
    project.write_recipe(&recipe);

    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let text = std::fs::read_to_string(project.path("out/report.json")).expect("a report");
    let report: Value = serde_json::from_str(&text).expect("JSON");
    let source = &report["source"];
    let source_accuracy = source["accuracy"].as_f64().expect("a source accuracy");
    let source_size = source["size_bytes"].as_u64().expect("a source size");
    assert!(source_accuracy > 0.8, "the fitted MLP should classify digits: {source_accuracy}");

    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 4, "{report:#}");
    let config = |c: &Value, key: &str| c["steps"][0]["config"][key].clone();
    let tried: Vec<(Value, Value)> =
        candidates.iter().map(|c| (config(c, "bits"), config(c, "data_aware"))).collect();
    let expected: Vec<(Value, Value)> = [(4, false), (4, true), (8, false), (8, true)]
        .into_iter()
        .map(|(bits, aware)| (Value::from(bits), Value::from(aware)))
        .collect();
    assert_eq!(tried, expected, "{report:#}");
    for candidate in candidates {
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        let measured = &candidate["measurement"];
        let accuracy = measured["accuracy"].as_f64().expect("a measured accuracy");
        assert!(accuracy >= source_accuracy - 0.05, "{accuracy} vs {source_accuracy}");
        assert!(measured["latency_ms"]["p50"].as_f64().expect("a p50") > 0.0);
        let size = measured["size_bytes"].as_u64().expect("a size");
        assert!(size < source_size * 6 / 10, "{size} bytes against {source_size}");
    }

    let best = pipeline_passes::ir::load(&project.path("out/model.onnx")).expect("a model");
    let ops: Vec<&str> = best.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
    assert_eq!(ops.iter().filter(|op| **op == "MatMulNBits").count(), 2, "{ops:?}");
}

#[test]
fn data_aware_without_calibration_data_is_refused_before_anything_runs() {
    let project = Project::digits();
    common::write_digits_mlp(&project, 3, false);
    let recipe = |pass: &str| {
        DIGITS_RECIPE
            .replace("  - quantize_dynamic: {per_channel: [false, true]}\n", pass)
            .replace("  calibration: {path: calib.npz}\n", "")
    };
    project.write_recipe(&recipe("  - quantize_weights: {data_aware: [false, true]}\n"));
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .no_panic()
        .stderr_has(&[
            "`quantize_weights` with `data_aware: true` calibrates the model",
            "data.calibration",
        ]);

    // Without `data_aware`, the same recipe needs no calibration data.
    project.write_recipe(&recipe("  - quantize_weights: {bits: 8}\n"));
    outcome(project.pipeline().arg("validate").arg(project.recipe())).expect_code(0);
}
