//! The `fix_shapes` pass: symbolic and unknown dimensions become sizes in every place they
//! appear, ONNX Runtime then sees static inputs and computes what the source computes on
//! inputs of those sizes; bad names, sizes and contradictions are refused with what exists;
//! and `pipeline` reads map-valued parameters and measures fixed models on the digits example.

// Both helper modules load `common/paths.rs`; each is its own module, so that is harmless.
#![allow(clippy::duplicate_mod)]

mod common;
mod fusion_support;

use std::path::Path;

use fusion_support::*;
use ndarray::{ArrayD, IxDyn};
use pipeline::runtime::{IoInfo, ModelSession, Optimization, Tensor, Threads};
use pipeline_passes::ir::proto::attribute_proto::AttributeType;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::tensor_shape_proto::dimension::Value as DimValue;
use pipeline_passes::ir::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, ValueInfoProto,
};
use pipeline_passes::ir::shapes::Dim;
use pipeline_passes::ir::{self, SaveOptions};
use pipeline_passes::pass::PassError;
use serde_json::{json, Value};

fn weights(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape, 0.5)
}

/// `[N, 4] -> MatMul [4, 3] -> h [N, 3] -> Relu -> y [N, 3]`, with `h` in the value infos.
fn batch_model() -> ModelProto {
    let mut model = Builder::new(17)
        .input("x", vec![D::S("N"), D::N(4)])
        .init("w", weights(1, &[4, 3]))
        .node("MatMul", &["x", "w"], &["h"])
        .node("Relu", &["h"], &["y"])
        .output_shaped("y", vec![D::S("N"), D::N(3)])
        .build();
    let graph = model.graph.as_mut().expect("a graph");
    graph.value_info.push(declared("h", &[symbol("N"), size(3)]));
    model
}

fn size(n: i64) -> Dim {
    Dim::Known(n)
}

fn symbol(name: &str) -> Dim {
    Dim::Symbol(name.into())
}

/// A float32 value of the given dimensions.
fn declared(name: &str, dims: &[Dim]) -> ValueInfoProto {
    ir::tensor_value_info(name, DataType::Float as i32, Some(dims))
}

/// The dimensions of a declared value as text: `[2, 3]`, `[N, ?]`.
fn shape_of(value: &ValueInfoProto) -> String {
    let Some(type_proto::Value::TensorType(tensor)) =
        value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("`{}` is not a tensor", value.name())
    };
    let dims: Vec<String> = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(n)) => n.to_string(),
            Some(DimValue::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("a graph")
}

fn fix(model: &ModelProto, config: Value) -> Result<ModelProto, PassError> {
    run_pass("fix_shapes", config, model)
}

/// Saves `model` and loads it in ONNX Runtime.
fn session(dir: &Path, name: &str, model: &ModelProto) -> ModelSession {
    let path = dir.join(name);
    ir::save(model, &path, &SaveOptions::default()).expect("the model saves");
    ModelSession::load_with(&path, Threads::default(), Optimization::All)
        .unwrap_or_else(|e| panic!("ONNX Runtime does not load {name}: {e}"))
}

fn config_message(error: PassError) -> String {
    match error {
        PassError::Config { message, .. } => message,
        other => panic!("expected a configuration error, got {other}"),
    }
}

#[test]
fn a_named_batch_is_fixed_in_inputs_outputs_and_value_infos() {
    let model = batch_model();

    let fixed = fix(&model, json!({"dims": {"N": SYMBOLIC_SIZE}})).expect("fix_shapes runs");

    let g = graph(&fixed);
    assert_eq!(shape_of(&g.input[0]), "[2, 4]");
    assert_eq!(shape_of(&g.output[0]), "[2, 3]");
    assert_eq!(shape_of(&g.value_info[0]), "[2, 3]");
    assert_eq!(g.node, graph(&model).node, "the nodes are not touched");
    assert_eq!(g.initializer, graph(&model).initializer);

    let dir = tempfile::tempdir().expect("a temporary folder");
    let loaded = session(dir.path(), "fixed.onnx", &fixed);
    assert_eq!(loaded.inputs()[0].shape, [Some(2), Some(4)]);
    assert_eq!(loaded.outputs()[0].shape, [Some(2), Some(3)]);
    assert_same_outputs(&model, &fixed, &[], MAX_RELATIVE_DIFFERENCE);
}

#[test]
fn a_batch_fixed_to_one_runs_on_one_sample_and_refuses_two() {
    let model = batch_model();
    let one = Tensor::F32(Rng::new(5).normal_array(&[1, 4], 1.0));

    let fixed = fix(&model, json!({"dims": {"N": 1}})).expect("fix_shapes runs");

    assert_same_outputs(&model, &fixed, &[("x", one)], MAX_RELATIVE_DIFFERENCE);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut loaded = session(dir.path(), "fixed.onnx", &fixed);
    let two = Tensor::F32(Rng::new(6).normal_array(&[2, 4], 1.0));
    let refused = loaded.run(&[("x".to_string(), two)]).expect_err("batch 2 is refused");
    assert!(refused.to_string().contains("dimension"), "{refused}");
}

#[test]
fn inputs_gives_sizes_to_dimensions_without_names() {
    let mut model = Builder::new(17)
        .input("x", vec![D::N(2), D::N(4)])
        .node("Relu", &["x"], &["y"])
        .output("y")
        .build();
    graph_mut(&mut model).input[0] = declared("x", &[Dim::Unknown, Dim::Unknown]);

    let fixed = fix(&model, json!({"inputs": {"x": [2, 4]}})).expect("fix_shapes runs");

    assert_eq!(shape_of(&graph(&fixed).input[0]), "[2, 4]");
    let dir = tempfile::tempdir().expect("a temporary folder");
    assert_eq!(session(dir.path(), "fixed.onnx", &fixed).inputs()[0].shape, [Some(2), Some(4)]);
    let x = Tensor::F32(Rng::new(7).normal_array(&[2, 4], 1.0));
    assert_same_outputs(&model, &fixed, &[("x", x)], MAX_RELATIVE_DIFFERENCE);
}

/// PaddleOCR's exporter writes `[-1, 3, ?, ?]`: -1 is a size no more than a missing one, so
/// `inputs` gives it one (it was refused as contradicting a known size of -1).
#[test]
fn a_dimension_of_minus_one_takes_the_size_given() {
    let mut model = Builder::new(17)
        .input("x", vec![D::N(2), D::N(4)])
        .node("Relu", &["x"], &["y"])
        .output("y")
        .build();
    graph_mut(&mut model).input[0] = declared("x", &[size(-1), symbol("?")]);

    let fixed = fix(&model, json!({"inputs": {"x": [1, 4]}})).expect("fix_shapes runs");

    assert_eq!(shape_of(&graph(&fixed).input[0]), "[1, 4]");
    let dir = tempfile::tempdir().expect("a temporary folder");
    assert_eq!(session(dir.path(), "fixed.onnx", &fixed).inputs()[0].shape, [Some(1), Some(4)]);
}

#[test]
fn a_name_an_input_shape_fixes_takes_its_size_everywhere() {
    let model = batch_model();

    let fixed = fix(&model, json!({"inputs": {"x": [2, 4]}})).expect("fix_shapes runs");

    let g = graph(&fixed);
    assert_eq!(shape_of(&g.input[0]), "[2, 4]");
    assert_eq!(shape_of(&g.output[0]), "[2, 3]");
    assert_eq!(shape_of(&g.value_info[0]), "[2, 3]");
    assert_same_outputs(&model, &fixed, &[], MAX_RELATIVE_DIFFERENCE);
}

#[test]
fn names_are_fixed_inside_subgraphs_too() {
    let branch = |op: &str, out: &str| GraphProto {
        name: Some(format!("{op}_branch")),
        node: vec![ir::make_node(op, &["x"], &[out], op)],
        output: vec![declared(out, &[symbol("N"), size(4)])],
        ..Default::default()
    };
    let graph_attr = |name: &str, g: GraphProto| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    };
    let model = Builder::new(17)
        .input("x", vec![D::S("N"), D::N(4)])
        .typed_input("c", DataType::Bool, vec![])
        .node_with(
            "If",
            &["c"],
            &["y"],
            vec![
                graph_attr("then_branch", branch("Relu", "t")),
                graph_attr("else_branch", branch("Neg", "e")),
            ],
        )
        .output_shaped("y", vec![D::S("N"), D::N(4)])
        .build();

    let fixed = fix(&model, json!({"dims": {"N": SYMBOLIC_SIZE}})).expect("fix_shapes runs");

    let if_node = first_of(&fixed, "If");
    for attribute in &if_node.attribute {
        let subgraph = attribute.g.as_ref().expect("a branch");
        assert_eq!(shape_of(&subgraph.output[0]), "[2, 4]", "in {}", attribute.name());
    }
    assert_eq!(shape_of(&graph(&fixed).output[0]), "[2, 4]");
    for cond in [true, false] {
        let c = Tensor::Bool(ArrayD::from_elem(IxDyn(&[]), cond));
        assert_same_outputs(&model, &fixed, &[("c", c)], MAX_RELATIVE_DIFFERENCE);
    }
}

#[test]
fn a_dimension_the_model_does_not_have_is_refused_with_those_it_has() {
    let message = config_message(fix(&batch_model(), json!({"dims": {"batch": 1}})).unwrap_err());

    assert!(message.contains("`batch`"), "{message}");
    assert!(message.contains("its symbolic dimensions are: `N`"), "{message}");
}

#[test]
fn an_input_the_model_does_not_have_is_refused_with_its_inputs() {
    let error = fix(&batch_model(), json!({"inputs": {"pixels": [1, 4]}})).unwrap_err();
    let message = config_message(error);

    assert!(message.contains("`pixels`"), "{message}");
    assert!(message.contains("its inputs are: `x`"), "{message}");
}

#[test]
fn a_shape_that_contradicts_a_known_size_names_the_input() {
    let error = fix(&batch_model(), json!({"inputs": {"x": [1, 5]}})).unwrap_err();
    let message = config_message(error);

    assert!(message.contains("input `x`"), "{message}");
    assert!(message.contains("dimension 1 size 5"), "{message}");
    assert!(message.contains("fixes it to 4 ([N, 4])"), "{message}");
}

#[test]
fn a_shape_of_another_rank_is_refused() {
    let message =
        config_message(fix(&batch_model(), json!({"inputs": {"x": [1, 4, 1]}})).unwrap_err());

    assert!(message.contains("lists 3 dimension(s), but input `x` has 2 ([N, 4])"), "{message}");
}

#[test]
fn one_name_given_two_sizes_is_refused() {
    let error = fix(&batch_model(), json!({"dims": {"N": 1}, "inputs": {"x": [2, 4]}}));
    let message = config_message(error.unwrap_err());

    assert!(message.contains("dimension `N` gets size 1 from `dims.N`"), "{message}");
    assert!(message.contains("size 2 from `inputs.x`"), "{message}");
}

#[test]
fn sizes_must_be_positive_and_something_must_be_given() {
    for (config, expected) in [
        (json!({"dims": {"N": 0}}), "`dims.N` is 0"),
        (json!({"dims": {"N": -1}}), "`dims.N` is -1"),
        (json!({"inputs": {"x": [1, 0]}}), "`inputs.x` gives dimension 1 size 0"),
        (json!({}), "nothing to fix"),
    ] {
        let message = config_message(fix(&batch_model(), config).unwrap_err());
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn a_model_with_static_shapes_is_unchanged() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .node("Relu", &["x"], &["y"])
        .output_shaped("y", vec![D::N(2), D::N(4)])
        .build();

    match fix(&model, json!({"dims": {"N": 1}})) {
        Err(PassError::Unchanged { reason, .. }) => {
            assert!(reason.contains("already has a fixed shape"), "{reason}")
        }
        other => panic!("expected an unchanged model, got {other:?}"),
    }
}

#[test]
fn sizes_the_model_already_has_leave_it_unchanged() {
    let model = Builder::new(17)
        .input("x", vec![D::S("N"), D::N(4)])
        .input("z", dims(&[1, 4]))
        .node("Add", &["x", "z"], &["y"])
        .output("y")
        .build();

    match fix(&model, json!({"inputs": {"z": [1, 4]}})) {
        Err(PassError::Unchanged { reason, .. }) => {
            assert!(reason.contains("already has"), "{reason}")
        }
        other => panic!("expected an unchanged model, got {other:?}"),
    }
}

fn graph_mut(model: &mut ModelProto) -> &mut GraphProto {
    model.graph.as_mut().expect("a graph")
}

fn read_report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json was written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

const DIGITS_PASSES: &str = "  - quantize_dynamic: {per_channel: [false, true]}\n";

#[test]
fn recipes_take_maps_as_parameters_and_lists_of_maps_as_search_dimensions() {
    let project = common::Project::digits();
    project.edit_recipe(
        DIGITS_PASSES,
        "  - one_of:\n      - fix_shapes: {dims: [{N: 1}, {N: 4}]}\n      \
         - fix_shapes: {inputs: {input: [1, 1, 8, 8]}}\n",
    );

    let planned = common::outcome(project.pipeline().arg("plan").arg(project.recipe()));

    planned.expect_code(0);
    for label in [
        r#"fix_shapes(dims={"N":1})"#,
        r#"fix_shapes(dims={"N":4})"#,
        r#"fix_shapes(inputs={"input":[1,1,8,8]})"#,
    ] {
        assert!(planned.stdout.contains(label), "{label} missing:\n{}", planned.stdout);
    }
    assert!(planned.stdout.contains("3 candidates"), "{}", planned.stdout);
}

#[test]
fn a_size_below_one_in_a_recipe_is_refused_at_its_line() {
    let project = common::Project::digits();
    project.edit_recipe(DIGITS_PASSES, "  - fix_shapes: {dims: {N: 0}}\n");

    let checked = common::outcome(project.pipeline().arg("validate").arg(project.recipe()));

    checked.expect_code(2).no_panic();
    checked.stderr_has(&["recipe.yaml:13:", "fix_shapes.dims", "expected a value >= 1"]);
}

#[test]
fn digits_fixed_to_batch_one_or_four_is_measured_with_the_source_accuracy() {
    let project = common::Project::digits();
    project.edit_recipe(
        DIGITS_PASSES,
        "  - one_of:\n      - fix_shapes: {dims: [{N: 1}, {N: 4}, {batch: 1}]}\n      \
         - fix_shapes: {inputs: {input: [1, 1, 8, 8]}}\n",
    );

    let result = common::outcome(&mut project.run());

    result.expect_code(0).no_panic();
    let report = read_report(&project.path("out"));
    let candidates = report["candidates"].as_array().expect("a list of candidates");
    assert_eq!(candidates.len(), 4, "{report:#}");
    let source_accuracy = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    for (index, batch) in [(0, 1), (1, 4), (3, 1)] {
        let candidate = &candidates[index];
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        let measurement = &candidate["measurement"];
        assert_eq!(measurement["accuracy"].as_f64(), Some(source_accuracy), "{candidate:#}");
        assert_eq!(measurement["latency_ms"]["batch"], batch, "{candidate:#}");
    }

    // The batch-4 candidate's latency measures four samples a run: the table and report.md
    // say so beside it.
    assert!(result.stdout.contains("(batch 4)"), "{}", result.stdout);
    let markdown = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    assert_eq!(markdown.matches("(batch 4)").count(), 1, "{markdown}");

    // A name the model lacks fails its candidate alone, naming the one it has.
    let wrong = &candidates[2];
    assert_eq!(wrong["status"], "failed", "{wrong:#}");
    let reason = wrong["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("`batch`") && reason.contains("`N`"), "{reason}");

    // The model written is static.
    let best = ir::load(&project.path("out/model.onnx")).expect("the best model was written");
    let inputs = IoInfo::model_inputs(&best);
    assert!(inputs[0].shape.iter().all(Option::is_some), "{inputs:?}");
}

#[test]
fn calibration_feeds_a_fixed_batch_in_whole_batches() {
    use pipeline::calibrate::OrtRunner;
    use pipeline::evaluate::Dataset;
    use pipeline_passes::pass::ModelRunner;

    let fixed = fix(&batch_model(), json!({"dims": {"N": 4}})).expect("fix_shapes runs");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("calib.npz");
    common::Npz::create(&path).array("x", Rng::new(9).normal_array(&[10, 4], 1.0)).finish();
    let runner =
        OrtRunner::new(Dataset::load(&path, None, None).expect("data"), Threads::default());

    let mut shapes = Vec::new();
    runner
        .for_each_batch(&fixed, &["y".to_string()], &mut |_, values| {
            shapes.push(values.shape().to_vec());
            Ok(())
        })
        .expect("calibration runs");

    // Ten samples make two batches of four; the last two do not fill a batch.
    assert_eq!(shapes, [[4, 3], [4, 3]]);

    let few = dir.path().join("few.npz");
    common::Npz::create(&few).array("x", Rng::new(9).normal_array(&[3, 4], 1.0)).finish();
    let runner = OrtRunner::new(Dataset::load(&few, None, None).expect("data"), Threads::default());
    let error = runner
        .for_each_batch(&fixed, &["y".to_string()], &mut |_, _| Ok(()))
        .expect_err("three samples cannot fill a batch of four");
    let message = error.to_string();
    assert!(message.contains("fixes its batch to 4") && message.contains("hint:"), "{message}");
}

#[test]
fn digits_fixed_to_batch_four_is_calibrated_and_quantized() {
    let project = common::Project::digits();
    project.edit_recipe(DIGITS_PASSES, "  - fix_shapes: {dims: {N: 4}}\n  - quantize_static: {}\n");

    let result = common::outcome(&mut project.run());

    result.expect_code(0).no_panic();
    let report = read_report(&project.path("out"));
    let candidate = &report["candidates"][0];
    assert_eq!(candidate["status"], "passed", "{candidate:#}");
    assert_eq!(candidate["measurement"]["latency_ms"]["batch"], 4, "{candidate:#}");
    let source = report["source"]["accuracy"].as_f64().expect("a source accuracy");
    let accuracy = candidate["measurement"]["accuracy"].as_f64().expect("an accuracy");
    assert!((source - accuracy).abs() <= 0.01, "{source} -> {accuracy}");
}

#[test]
fn a_batch_larger_than_the_data_fails_its_candidate_without_padding_to_it() {
    let project = common::Project::digits();
    // 100 billion rows of padding would need terabytes; the digits test data has 360 samples.
    project.edit_recipe(DIGITS_PASSES, "  - fix_shapes: {dims: [{N: 100000000000}, {N: 2}]}\n");

    let result = common::outcome(&mut project.run());

    result.expect_code(0).no_panic();
    let report = read_report(&project.path("out"));
    let too_large = &report["candidates"][0];
    assert_eq!(too_large["status"], "failed", "{too_large:#}");
    let reason = too_large["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("fixes its batch to 100000000000 samples"), "{reason}");
    assert!(reason.contains("holds 360"), "{reason}");
    assert_eq!(report["candidates"][1]["status"], "passed", "{report:#}");
}
