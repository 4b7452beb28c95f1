//! The `fuse` rules that remove nodes (Identity, Dropout, dead nodes) and what the pass does
//! as a whole: unknown rules, models where nothing matches, operators of unknown domains.
//! Every rewrite is checked by running the model before and after in ONNX Runtime.

mod fusion_support;

use fusion_support::*;
use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::pass::PassError;

fn weights(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape, 0.5)
}

#[test]
fn identity_between_two_nodes_is_removed() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .init("w", weights(1, &[4, 3]))
        .node("Relu", &["x"], &["r"])
        .node("Identity", &["r"], &["i"])
        .node("MatMul", &["i", "w"], &["y"])
        .output("y")
        .build();

    let fused = assert_fuses(&model, &["eliminate_identity"], &[("Relu", 1), ("MatMul", 1)]);

    assert_eq!(first_of(&fused, "MatMul").input[0], "r");
}

#[test]
fn identity_that_makes_a_graph_output_gives_the_output_name_to_its_input() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .node("Sigmoid", &["x"], &["s"])
        .node("Identity", &["s"], &["y"])
        .node("Relu", &["s"], &["z"])
        .output("y")
        .output("z")
        .build();

    let fused = assert_fuses(&model, &["eliminate_identity"], &[("Sigmoid", 1), ("Relu", 1)]);

    assert_eq!(first_of(&fused, "Sigmoid").output[0], "y");
    assert_eq!(first_of(&fused, "Relu").input[0], "y");
}

#[test]
fn identity_from_a_graph_input_to_a_graph_output_stays() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .node("Identity", &["x"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, &["eliminate_identity"], "graph input or output");
}

#[test]
fn dropout_at_inference_is_removed_in_old_and_new_opsets() {
    let old = Builder::new(11)
        .input("x", dims(&[3, 5]))
        .node_with("Dropout", &["x"], &["d"], vec![attr_float("ratio", 0.3)])
        .node("Relu", &["d"], &["y"])
        .output("y")
        .build();
    assert_fuses(&old, &["eliminate_dropout"], &[("Relu", 1)]);

    let new = Builder::new(17)
        .input("x", dims(&[3, 5]))
        .tensor(pipeline_passes::ir::tensor_from_f32("ratio", &ndarray::arr0(0.5f32).into_dyn()))
        .constant("train", bool_tensor(false))
        .node("Dropout", &["x", "ratio", "train"], &["d", ""])
        .node("Relu", &["d"], &["y"])
        .output("y")
        .build();
    assert_fuses(&new, &["eliminate_dropout"], &[("Constant", 1), ("Relu", 1)]);
}

#[test]
fn dropout_whose_mask_is_read_or_that_trains_stays() {
    let mask_read = Builder::new(17)
        .input("x", dims(&[3, 5]))
        .node("Dropout", &["x"], &["d", "mask"])
        .node("Relu", &["d"], &["y"])
        .output("y")
        .typed_output("mask", DataType::Bool)
        .build();
    assert_left_alone(&mask_read, &["eliminate_dropout"], "mask");

    let training = Builder::new(17)
        .input("x", dims(&[3, 5]))
        .constant("train", bool_tensor(true))
        .node("Dropout", &["x", "", "train"], &["d"])
        .output("d")
        .build();
    assert_left_alone(&training, &["eliminate_dropout"], "training_mode is true");

    let fed = Builder::new(17)
        .input("x", dims(&[3, 5]))
        .typed_input("train", DataType::Bool, vec![])
        .node("Dropout", &["x", "", "train"], &["d"])
        .output("d")
        .build();
    assert_left_alone(&fed, &["eliminate_dropout"], "not a constant");
}

#[test]
fn nodes_that_reach_no_output_are_removed_with_their_initializers() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .init("w", weights(2, &[4, 3]))
        .init("unused_w", weights(3, &[4, 4]))
        .node("MatMul", &["x", "unused_w"], &["dead1"])
        .node("Relu", &["dead1"], &["dead2"])
        .node("MatMul", &["x", "w"], &["y"])
        .output("y")
        .build();

    let fused = assert_fuses(&model, &["dead_nodes"], &[("MatMul", 1)]);

    let names: Vec<&str> =
        fused.graph.as_ref().unwrap().initializer.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["w"]);
}

#[test]
fn a_graph_with_nothing_to_fuse_is_unchanged_with_the_reasons() {
    let model =
        Builder::new(17).input("x", dims(&[2, 4])).node("Relu", &["x"], &["y"]).output("y").build();

    let reason = assert_left_alone(&model, &[], "");

    assert!(reason.contains("no rule found its pattern"), "{reason}");
}

#[test]
fn unknown_rule_is_a_configuration_error_that_lists_the_rules() {
    let model = Builder::new(17).input("x", dims(&[1])).output("x").build();

    let error = fuse(&model, &["conv_bnn"]).unwrap_err();

    assert!(matches!(error, PassError::Config { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("`conv_bnn`") && text.contains("eliminate_identity"), "{text}");
}

#[test]
fn an_operator_of_an_unknown_domain_passes_through_untouched() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .domain_node("com.example", "Mystery", &["x"], &["m"], vec![attr_int("k", 3)])
        .node("Identity", &["m"], &["i"])
        .domain_node("com.example", "Identity", &["i"], &["y"], vec![])
        .output("y")
        .build();

    let fused = fuse(&model, &["eliminate_identity", "eliminate_dropout", "dead_nodes"])
        .expect("the default-domain Identity goes");

    let graph = fused.graph.as_ref().unwrap();
    let custom: Vec<_> = graph.node.iter().filter(|n| n.domain() == "com.example").collect();
    assert_eq!(custom.len(), 2);
    let original = model.graph.as_ref().unwrap();
    assert_eq!(custom[0], &original.node[0]);
    assert_eq!(custom[1].op_type(), "Identity");
    assert_eq!(custom[1].input[0], "m");
    assert!(fused.opset_import.iter().any(|o| o.domain() == "com.example"));
}

fn bool_tensor(value: bool) -> pipeline_passes::ir::proto::TensorProto {
    pipeline_passes::ir::proto::TensorProto {
        data_type: Some(DataType::Bool as i32),
        int32_data: vec![i32::from(value)],
        ..Default::default()
    }
}

#[allow(dead_code)]
fn scalar(value: f32) -> ArrayD<f32> {
    ArrayD::from_elem(IxDyn(&[]), value)
}
