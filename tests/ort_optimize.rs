//! The `ort_optimize` pass with the engine's optimizer over the real ONNX Runtime: what each
//! level rewrites, that the optimized model loads again in a fresh session and computes what
//! the source computes, the provider-specific mark, large models through external data, the
//! errors, and `pipeline run` on the digits example.

// Both helper modules load `common/paths.rs`; each is its own module, so that is harmless.
#![allow(clippy::duplicate_mod)]

mod common;
mod fusion_support;

use std::path::Path;

use fusion_support::*;
use ndarray::ArrayD;
use pipeline::runtime::{self, OrtOptimizer, Threads};
use pipeline_passes::ir::proto::tensor_proto::DataLocation;
use pipeline_passes::ir::proto::ModelProto;
use pipeline_passes::ir::{self, SaveOptions};
use pipeline_passes::pass::{
    provider_specific_note, OptimizationLevel, PassContext, PassError, PROVIDER_SPECIFIC_KEY,
};
use serde_json::{json, Value};

fn weights(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape, 0.5)
}

fn positive(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    Rng::new(seed).uniform_array(shape, 0.5, 1.5)
}

/// Conv -> BatchNormalization -> Relu -> Flatten -> MatMul -> Add, with a symbolic batch.
fn conv_bn_relu_matmul_add() -> ModelProto {
    Builder::new(17)
        .input("x", vec![D::S("N"), D::N(3), D::N(5), D::N(5)])
        .init("w", weights(1, &[4, 3, 3, 3]))
        .init("b", weights(2, &[4]))
        .init("scale", positive(3, &[4]))
        .init("shift", weights(4, &[4]))
        .init("mean", weights(5, &[4]))
        .init("var", positive(6, &[4]))
        .init("w2", weights(7, &[100, 6]))
        .init("b2", weights(8, &[6]))
        .node_with("Conv", &["x", "w", "b"], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("BatchNormalization", &["c", "scale", "shift", "mean", "var"], &["bn"])
        .node("Relu", &["bn"], &["r"])
        .node("Flatten", &["r"], &["f"])
        .node("MatMul", &["f", "w2"], &["mm"])
        .node("Add", &["mm", "b2"], &["y"])
        .output("y")
        .build()
}

/// Conv -> Relu: nothing for the basic level, a FusedConv at the extended level.
fn conv_relu(in_channels: usize, out_channels: usize) -> ModelProto {
    Builder::new(17)
        .input("x", vec![D::S("N"), D::N(in_channels as i64), D::N(6), D::N(6)])
        .init("w", weights(11, &[out_channels, in_channels, 3, 3]))
        .init("b", weights(12, &[out_channels]))
        .node_with("Conv", &["x", "w", "b"], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("Relu", &["c"], &["y"])
        .output("y")
        .build()
}

fn optimize(model: &ModelProto, level: &str) -> Result<ModelProto, PassError> {
    let optimizer = OrtOptimizer::new(Threads::default());
    let context = PassContext { optimizer: Some(&optimizer), ..PassContext::default() };
    run_pass_with("ort_optimize", json!({ "level": level }), model, context)
}

fn node_count(model: &ModelProto) -> usize {
    histogram(model).values().sum()
}

#[test]
fn basic_folds_batch_norm_and_matmul_add_and_extended_fuses_the_relu_too() {
    let model = conv_bn_relu_matmul_add();

    let basic = optimize(&model, "basic").expect("basic optimizes");
    let extended = optimize(&model, "extended").expect("extended optimizes");

    assert_eq!(histogram(&basic), ops(&[("Conv", 1), ("Relu", 1), ("Flatten", 1), ("Gemm", 1)]));
    assert_eq!(
        histogram(&extended),
        ops(&[("com.microsoft:FusedConv", 1), ("Flatten", 1), ("Gemm", 1)])
    );
    assert_eq!(
        (node_count(&model), node_count(&basic), node_count(&extended)),
        (6, 4, 3),
        "node counts fall level by level"
    );
    assert_same_outputs(&model, &basic, &[], MAX_RELATIVE_DIFFERENCE);
    assert_same_outputs(&model, &extended, &[], MAX_RELATIVE_DIFFERENCE);

    // The graph's inputs and outputs keep their names; the batch stays symbolic.
    let graph = extended.graph.as_ref().expect("a graph");
    assert_eq!(graph.input.iter().map(|v| v.name()).collect::<Vec<_>>(), ["x"]);
    assert_eq!(graph.output.iter().map(|v| v.name()).collect::<Vec<_>>(), ["y"]);
    let inputs = runtime::IoInfo::model_inputs(&extended);
    assert_eq!(inputs[0].shape, [None, Some(3), Some(5), Some(5)]);
}

#[test]
fn basic_leaves_conv_relu_as_it_is_and_extended_fuses_it() {
    let model = conv_relu(3, 4);

    let error = optimize(&model, "basic").expect_err("nothing for the basic level");
    let extended = optimize(&model, "extended").expect("extended optimizes");

    match error {
        PassError::Unchanged { reason, .. } => {
            assert!(reason.contains("`basic`"), "{reason}");
            assert!(reason.contains("Conv x1, Relu x1"), "{reason}");
        }
        other => panic!("expected an unchanged model, got {other}"),
    }
    assert_eq!(histogram(&extended), ops(&[("com.microsoft:FusedConv", 1)]));
    assert_same_outputs(&model, &extended, &[], MAX_RELATIVE_DIFFERENCE);
}

#[test]
fn layout_writes_nchwc_kernels_that_load_and_compute_the_same() {
    // NCHWc blocks channels by 8 (AVX2) or 16 (AVX-512): 16 channels convert on either.
    let model = conv_relu(16, 16);

    let layout = optimize(&model, "layout").expect("layout optimizes");

    let found = histogram(&layout);
    assert!(found.contains_key("com.microsoft.nchwc:Conv"), "no NCHWc Conv: {found:?}");
    assert!(found.contains_key("com.microsoft.nchwc:ReorderInput"), "{found:?}");
    assert_same_outputs(&model, &layout, &[], MAX_RELATIVE_DIFFERENCE);
    let note = provider_specific_note(&layout).expect("a provider-specific note");
    assert!(note.contains("`layout`") && note.contains("NCHWc"), "{note}");
}

#[test]
fn above_basic_the_model_is_marked_provider_specific_and_keeps_its_metadata() {
    let mut model = conv_bn_relu_matmul_add();
    model.metadata_props.push(ir::proto::StringStringEntryProto {
        key: Some("author".into()),
        value: Some("tests".into()),
    });

    let basic = optimize(&model, "basic").expect("basic optimizes");
    let extended = optimize(&model, "extended").expect("extended optimizes");

    assert_eq!(provider_specific_note(&basic), None);
    let note = provider_specific_note(&extended).expect("a provider-specific note");
    let version = runtime::init(None).expect("ONNX Runtime loads").version;
    assert!(note.contains(&format!("ONNX Runtime {version}")), "{note}");
    assert!(note.contains("CPU execution provider"), "{note}");
    assert!(note.contains("com.microsoft:FusedConv"), "{note}");
    for optimized in [&basic, &extended] {
        let keys: Vec<&str> = optimized.metadata_props.iter().map(|p| p.key()).collect();
        assert!(keys.contains(&"author"), "{keys:?}");
    }
    let marks = extended.metadata_props.iter().filter(|p| p.key() == PROVIDER_SPECIFIC_KEY);
    assert_eq!(marks.count(), 1);
}

#[test]
fn domains_onnx_runtime_imports_but_no_node_uses_are_dropped() {
    let model = conv_bn_relu_matmul_add();

    let basic = optimize(&model, "basic").expect("basic optimizes");
    let extended = optimize(&model, "extended").expect("extended optimizes");

    let domains = |m: &ModelProto| -> Vec<String> {
        m.opset_import.iter().map(|o| o.domain().to_string()).collect()
    };
    assert_eq!(domains(&basic), [""]);
    assert_eq!(domains(&extended), ["", "com.microsoft"]);
}

#[test]
fn a_model_saved_with_external_data_is_optimized_into_external_data() {
    let model = conv_bn_relu_matmul_add();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let input = dir.path().join("model.onnx");
    let output = dir.path().join("optimized.onnx");
    let external = ir::ExternalData { location: "model.onnx.data".into(), size_threshold: 64 };
    let options = SaveOptions { external_data: Some(external) };
    ir::save(&model, &input, &options).expect("the model saves");

    runtime::optimize_file(
        &input,
        &output,
        OptimizationLevel::Extended,
        Threads::default(),
        Some("optimized.onnx.data"),
    )
    .expect("ONNX Runtime optimizes a model with external data");

    assert!(dir.path().join("optimized.onnx.data").is_file(), "no data file was written");
    let stored = ir::decode(&std::fs::read(&output).expect("the model was written"))
        .expect("the model decodes");
    let initializers = &stored.graph.as_ref().expect("a graph").initializer;
    let outside = initializers.iter().filter(|t| t.data_location() == DataLocation::External);
    assert!(outside.count() >= 1, "no initializer was written to the data file");
    let optimized = ir::load(&output).expect("the model loads with its data");
    assert_same_outputs(&model, &optimized, &[], MAX_RELATIVE_DIFFERENCE);
}

#[test]
fn the_pass_takes_large_models_through_external_data() {
    // Every model counts as large here, so the pass writes and reads data files.
    let model = conv_bn_relu_matmul_add();
    let optimizer = OrtOptimizer::new(Threads::default()).with_external_data_above(0);
    let context = PassContext { optimizer: Some(&optimizer), ..PassContext::default() };

    let optimized = run_pass_with("ort_optimize", json!({"level": "extended"}), &model, context)
        .expect("extended optimizes");

    let graph = optimized.graph.as_ref().expect("a graph");
    assert!(graph.initializer.iter().all(|t| t.data_location() != DataLocation::External));
    assert_eq!(
        histogram(&optimized),
        ops(&[("com.microsoft:FusedConv", 1), ("Flatten", 1), ("Gemm", 1)])
    );
    assert_same_outputs(&model, &optimized, &[], MAX_RELATIVE_DIFFERENCE);
}

#[test]
fn the_default_level_is_extended() {
    let model = conv_relu(3, 4);
    let optimizer = OrtOptimizer::new(Threads::default());
    let context = PassContext { optimizer: Some(&optimizer), ..PassContext::default() };

    let optimized = run_pass_with("ort_optimize", json!({}), &model, context).expect("optimizes");

    assert_eq!(histogram(&optimized), ops(&[("com.microsoft:FusedConv", 1)]));
}

#[test]
fn an_unknown_level_is_refused_with_the_levels() {
    let error = run_pass("ort_optimize", json!({"level": "aggressive"}), &conv_relu(3, 4))
        .expect_err("no such level");

    let message = error.to_string();
    assert!(matches!(error, PassError::Config { .. }), "{message}");
    for level in ["aggressive", "basic", "extended", "layout"] {
        assert!(message.contains(level), "`{level}` missing from: {message}");
    }
}

#[test]
fn without_an_optimizer_in_the_context_the_pass_says_so() {
    let error = run_pass("ort_optimize", json!({"level": "basic"}), &conv_relu(3, 4))
        .expect_err("no optimizer");

    let message = error.to_string();
    assert!(matches!(error, PassError::Optimizer { .. }), "{message}");
    assert!(message.contains("no ONNX Runtime") && message.contains("hint:"), "{message}");
}

#[test]
fn a_model_onnx_runtime_cannot_load_fails_with_its_message() {
    // A Relu given two inputs is refused by ONNX Runtime's model check.
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .node("Relu", &["x", "x"], &["y"])
        .output("y")
        .build();

    let error = optimize(&model, "basic").expect_err("ONNX Runtime refuses the model");

    let message = error.to_string();
    assert!(matches!(error, PassError::Optimizer { .. }), "{message}");
    assert!(message.contains("optimizing at level `basic` failed"), "{message}");
}

fn read_report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json was written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

#[test]
fn digits_run_measures_optimized_and_fixed_candidates_and_marks_the_provider_specific_one() {
    let project = common::Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - one_of:\n      - ort_optimize: {level: [basic, extended]}\n      \
         - fix_shapes: {dims: {N: 1}}\n",
    );

    let result = common::outcome(&mut project.run());
    result.expect_code(0).no_panic();

    let report = read_report(&project.path("out"));
    let candidates = report["candidates"].as_array().expect("a list of candidates");
    assert_eq!(candidates.len(), 3, "{report:#}");
    let (basic, extended, fixed) = (&candidates[0], &candidates[1], &candidates[2]);

    // The digits CNN has nothing for the basic level: Conv + Relu is an extended fusion.
    assert_eq!(basic["status"], "unchanged", "{basic:#}");
    let reason = basic["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("`basic` left every operator as it was"), "{reason}");

    let source_accuracy = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    for candidate in [extended, fixed] {
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        let accuracy = candidate["measurement"]["accuracy"].as_f64().expect("an accuracy");
        assert_eq!(accuracy, source_accuracy, "{candidate:#}");
        assert!(candidate["measurement"]["latency_ms"]["p50"].as_f64().is_some());
    }
    assert_eq!(extended["notes"][0]["kind"], "provider_specific", "{extended:#}");
    let note = extended["notes"][0]["message"].as_str().unwrap_or_default();
    assert!(note.contains("com.microsoft:FusedConv"), "{note}");
    assert_eq!(fixed["notes"], json!([]), "{fixed:#}");
    assert_eq!(basic["notes"], json!([]), "{basic:#}");

    let markdown = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    assert!(markdown.contains("## Notes"), "{markdown}");
    assert!(markdown.contains("- c2 `ort_optimize(level=extended)`: **provider-specific**"));
    assert!(result.stdout.contains("passed (provider-specific)"), "{}", result.stdout);

    // The verdict compares the winner's size with the source's in the right direction.
    let best = candidates.iter().find(|c| c["id"] == report["best"]).expect("a winner");
    let size = best["measurement"]["size_bytes"].as_f64().expect("a size");
    let source_size = report["source"]["size_bytes"].as_f64().expect("a source size");
    let verdict = report["verdict"].as_str().unwrap_or_default();
    let expected = if (source_size / size - 1.0).abs() < 0.005 {
        "the same size"
    } else if size > source_size {
        "x larger)"
    } else {
        "x smaller)"
    };
    assert!(verdict.contains(expected), "{size} vs {source_size}: {verdict}");
}
