//! The `constant_folding` rule of `fuse`: models built here have nodes whose inputs are all
//! constants (or Shape of a static shape), and every rewrite is run before and after in ONNX
//! Runtime. Where the folded values are themselves graph outputs they must equal ONNX
//! Runtime's bit for bit. Near-misses (a fed input, a symbolic dimension, a result that
//! would bloat the model, an undefined result) must be left alone with the reason.

mod fusion_support;

use fusion_support::*;
use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{ModelProto, TensorProto};
use pipeline_passes::ir::{self};

const FOLD: &[&str] = &["constant_folding"];

fn weights(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape, 0.5)
}

fn scalar_i64(name: &str, value: i64) -> TensorProto {
    ir::tensor_from_i64(name, &ArrayD::from_elem(IxDyn(&[]), value))
}

fn scalar_f32(name: &str, value: f32) -> TensorProto {
    ir::tensor_from_f32(name, &ArrayD::from_elem(IxDyn(&[]), value))
}

fn ints(name: &str, values: &[i64]) -> TensorProto {
    ir::tensor_from_i64(name, &ndarray::arr1(values).into_dyn())
}

fn f64s(name: &str, values: &[f64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(DataType::Double as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>().into()),
        ..TensorProto::default()
    }
}

/// Folds with `constant_folding` alone, checks the histogram, and that every output equals
/// ONNX Runtime's before the rewrite exactly.
fn assert_folds_exactly(model: &ModelProto, expected: &[(&str, usize)]) -> ModelProto {
    let fused = assert_fuses(model, FOLD, expected);
    assert_same_outputs(model, &fused, &[], 0.0);
    fused
}

/// The initializer of `model` named `name`, as integers.
fn initializer_i64(model: &ModelProto, name: &str) -> Vec<i64> {
    let graph = model.graph.as_ref().unwrap();
    let tensor = ir::initializer(graph, name).unwrap_or_else(|| panic!("no initializer {name}"));
    ir::tensor_to_i64(tensor).unwrap().iter().copied().collect()
}

/// `Shape(x) -> Gather(0) -> Unsqueeze(0) -> Concat(.., [12]) -> Reshape(x, ..)`, as torch
/// exports `x.view(x.size(0), -1)`-like code, with `axes` as opset 11 or 13 writes them.
fn exporter_chain(opset: i64) -> ModelProto {
    let builder = Builder::new(opset)
        .input("x", dims(&[2, 3, 4]))
        .tensor(scalar_i64("zero", 0))
        .node("Shape", &["x"], &["shape"])
        .node("Gather", &["shape", "zero"], &["batch"]);
    let builder = if opset >= 13 {
        builder.init_i64("axes", &[0]).node("Unsqueeze", &["batch", "axes"], &["batch_1d"])
    } else {
        builder.node_with("Unsqueeze", &["batch"], &["batch_1d"], vec![attr_ints("axes", &[0])])
    };
    builder
        .constant("rest", ints("", &[12]))
        .node_with("Concat", &["batch_1d", "rest"], &["target"], vec![attr_int("axis", 0)])
        .node("Reshape", &["x", "target"], &["flat"])
        .node("Relu", &["flat"], &["y"])
        .output("y")
        .build()
}

#[test]
fn exporter_shape_chain_folds_to_one_reshape_with_attribute_axes() {
    let model = exporter_chain(11);

    let fused = assert_fuses(&model, FOLD, &[("Reshape", 1), ("Relu", 1)]);

    let reshape = first_of(&fused, "Reshape");
    assert_eq!(reshape.input[0], "x");
    assert_eq!(initializer_i64(&fused, &reshape.input[1]), [2, 12]);
}

#[test]
fn exporter_shape_chain_folds_to_one_reshape_with_input_axes() {
    let model = exporter_chain(13);

    let fused = assert_fuses(&model, FOLD, &[("Reshape", 1), ("Relu", 1)]);

    let reshape = first_of(&fused, "Reshape");
    assert_eq!(initializer_i64(&fused, &reshape.input[1]), [2, 12]);
    let initializers = fused.graph.as_ref().unwrap().initializer.len();
    assert_eq!(initializers, 1, "the shape pieces are pruned once folded");
}

#[test]
fn exporter_shape_chain_folds_with_every_rule() {
    let model = exporter_chain(17);

    assert_fuses(&model, &[], &[("Reshape", 1), ("Relu", 1)]);
}

#[test]
fn shape_with_start_and_end_folds_in_opset_15() {
    let model = Builder::new(15)
        .input("x", dims(&[2, 3, 4]))
        .input("z", dims(&[6, 12]))
        .node_with("Shape", &["x"], &["tail"], vec![attr_int("start", -2)])
        .node_with("Shape", &["x"], &["middle"], vec![attr_int("start", 1), attr_int("end", 2)])
        .init_i64("minus_one", &[-1])
        .node_with(
            "Concat",
            &["minus_one", "middle", "tail"],
            &["target"],
            vec![attr_int("axis", 0)],
        )
        .node("Reshape", &["z", "target"], &["y"])
        .output("y")
        .build();

    let fused = assert_fuses(&model, FOLD, &[("Reshape", 1)]);

    assert_eq!(initializer_i64(&fused, "target"), [-1, 3, 3, 4]);
}

#[test]
fn folded_graph_outputs_equal_onnx_runtime_and_keep_their_names() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .node("Shape", &["x"], &["s"])
        .node("Size", &["x"], &["n"])
        .node("Relu", &["x"], &["y"])
        .typed_output("s", DataType::Int64)
        .typed_output("n", DataType::Int64)
        .output("y")
        .build();

    let fused = assert_folds_exactly(&model, &[("Relu", 1)]);

    assert_eq!(initializer_i64(&fused, "s"), [2, 3]);
    assert_eq!(initializer_i64(&fused, "n"), [6]);
}

#[test]
fn integer_shape_arithmetic_folds_in_int64_and_int32() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3, 8]))
        .tensor(scalar_i64("last", -1))
        .tensor(scalar_i64("heads", 2))
        .node("Shape", &["x"], &["shape"])
        .node("Gather", &["shape", "last"], &["hidden"])
        .node("Div", &["hidden", "heads"], &["head_size"])
        .node_with("Cast", &["head_size"], &["head_size32"], vec![attr_int("to", 6)])
        .tensor(ir::tensor_from_i32("one32", &ArrayD::from_elem(IxDyn(&[]), 1)))
        .node("Mul", &["head_size32", "one32"], &["times_one"])
        .node_with("Cast", &["times_one"], &["head_size64"], vec![attr_int("to", 7)])
        .init_i64("zero_axis", &[0])
        .node("Unsqueeze", &["head_size64", "zero_axis"], &["head_size_1d"])
        .init_i64("front", &[2, 3, 2])
        .node_with("Concat", &["front", "head_size_1d"], &["target"], vec![attr_int("axis", 0)])
        .node("Reshape", &["x", "target"], &["y"])
        .output("y")
        .build();

    let fused = assert_fuses(&model, FOLD, &[("Reshape", 1)]);

    assert_eq!(initializer_i64(&fused, "target"), [2, 3, 2, 4]);
}

#[test]
fn float_arithmetic_on_initializers_folds_with_broadcasting() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4, 3]))
        .init("a", weights(1, &[2, 1, 3]))
        .init("b", weights(2, &[4, 1]))
        .init("c", weights(3, &[3]))
        .tensor(scalar_f32("two", 2.0))
        .tensor(scalar_f32("one", 1.0))
        .node("Sub", &["a", "b"], &["difference"])
        .node("Abs", &["difference"], &["magnitude"])
        .node("Sqrt", &["magnitude"], &["root"])
        .node("Pow", &["root", "two"], &["squared"])
        .node("Max", &["squared", "c", "one"], &["floor"])
        .node("Min", &["floor", "two"], &["clipped"])
        .node("Reciprocal", &["clipped"], &["inverse"])
        .node("Div", &["inverse", "two"], &["half"])
        .node("Neg", &["half"], &["negative"])
        .node("Mul", &["negative", "a"], &["scaled"])
        .node("Add", &["x", "scaled"], &["y"])
        .node("Identity", &["scaled"], &["folded"])
        .output("y")
        .output("folded")
        .build();

    let fused = assert_folds_exactly(&model, &[("Add", 1), ("Identity", 1)]);

    let add = first_of(&fused, "Add");
    assert_eq!(add.input[1], "scaled");
}

#[test]
fn casts_of_initializers_fold_exactly() {
    let model = Builder::new(17)
        .init("w", weights(4, &[3, 4]))
        .tensor(f64s("d", &[0.1, 1.0 + 2f64.powi(-11) + 2f64.powi(-40), -3.75]))
        .tensor(ints("i", &[-7, 300, 16_777_217]))
        .node_with("Cast", &["w"], &["w16"], vec![attr_int("to", DataType::Float16 as i64)])
        .node_with("Cast", &["w16"], &["w_back"], vec![attr_int("to", 1)])
        .node_with("Cast", &["d"], &["d16"], vec![attr_int("to", DataType::Float16 as i64)])
        .node_with("Cast", &["d16"], &["d_back"], vec![attr_int("to", DataType::Double as i64)])
        .node_with("Cast", &["d"], &["d32"], vec![attr_int("to", 1)])
        .node_with("Cast", &["i"], &["i32"], vec![attr_int("to", 1)])
        .node_with("Cast", &["i32"], &["i_back"], vec![attr_int("to", DataType::Int32 as i64)])
        .output("w_back")
        .typed_output("d_back", DataType::Double)
        .output("d32")
        .typed_output("i_back", DataType::Int32)
        .build();

    let fused = assert_folds_exactly(&model, &[]);

    assert_eq!(fused.graph.as_ref().unwrap().initializer.len(), 4);
}

#[test]
fn comparisons_where_and_boolean_logic_fold() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .init_i64("positions", &[0, 1, 2])
        .tensor(ir::tensor_from_i64("lengths", &ndarray::arr2(&[[1], [2]]).into_dyn()))
        .node("Less", &["positions", "lengths"], &["valid"])
        .node("Equal", &["positions", "lengths"], &["at_end"])
        .node("Or", &["valid", "at_end"], &["kept"])
        .node("Not", &["kept"], &["masked"])
        .tensor(scalar_f32("large_negative", -1e4))
        .tensor(scalar_f32("zero", 0.0))
        .node("Where", &["masked", "large_negative", "zero"], &["bias"])
        .node("Add", &["x", "bias"], &["y"])
        .output("y")
        .typed_output("masked", DataType::Bool)
        .build();

    let fused = assert_folds_exactly(&model, &[("Add", 1)]);

    let graph = fused.graph.as_ref().unwrap();
    assert!(ir::initializer(graph, "bias").is_some());
}

#[test]
fn generators_and_data_movement_of_constants_fold() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3, 4]))
        .input("v", dims(&[5]))
        .tensor(scalar_i64("start", 0))
        .tensor(scalar_i64("limit", 5))
        .tensor(scalar_i64("step", 1))
        .node("Range", &["start", "limit", "step"], &["ids"])
        .node_with("Cast", &["ids"], &["ids_f"], vec![attr_int("to", 1)])
        .node("Add", &["v", "ids_f"], &["v_out"])
        .init_i64("fill_shape", &[2, 1, 4])
        .node_with(
            "ConstantOfShape",
            &["fill_shape"],
            &["filled"],
            vec![attr_tensor("value", ir::tensor_from_f32("", &ndarray::arr1(&[1.5]).into_dyn()))],
        )
        .init("w", weights(5, &[4, 6]))
        .node_with("Transpose", &["w"], &["w_t"], vec![attr_ints("perm", &[1, 0])])
        .init_i64("starts", &[1])
        .init_i64("ends", &[4])
        .init_i64("slice_axes", &[0])
        .node("Slice", &["w_t", "starts", "ends", "slice_axes"], &["w_rows"])
        .init_i64("expand_to", &[2, 3, 4])
        .node("Expand", &["filled", "expand_to"], &["expanded"])
        .node_with("Flatten", &["w_rows"], &["w_flat"], vec![attr_int("axis", 2)])
        .init_i64("row_shape", &[3, 4])
        .node("Reshape", &["w_flat", "row_shape"], &["w_3x4"])
        .tensor(scalar_i64("first", 0))
        .node_with("Gather", &["w_3x4", "first"], &["w_row"], vec![attr_int("axis", 0)])
        .init_i64("squeeze_axes", &[0])
        .node("Unsqueeze", &["w_row", "squeeze_axes"], &["w_row_2d"])
        .node("Squeeze", &["w_row_2d", "squeeze_axes"], &["w_row_again"])
        .node("Mul", &["x", "expanded"], &["scaled"])
        .node("Add", &["scaled", "w_row_again"], &["y"])
        .output("y")
        .output("v_out")
        .build();

    assert_folds_exactly(&model, &[("Add", 2), ("Mul", 1)]);
}

#[test]
fn constant_nodes_go_with_the_folds_that_read_them_and_stay_for_other_readers() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .constant("a", ir::tensor_from_f32("", &weights(6, &[4])))
        .constant("b", ir::tensor_from_f32("", &weights(7, &[4])))
        .constant("w", ir::tensor_from_f32("", &weights(8, &[4, 4])))
        .node("Add", &["a", "b"], &["sum"])
        .node("MatMul", &["x", "w"], &["projected"])
        .node("Mul", &["projected", "sum"], &["y"])
        .output("y")
        .build();

    let fused = assert_fuses(&model, FOLD, &[("Constant", 1), ("MatMul", 1), ("Mul", 1)]);

    assert_eq!(first_of(&fused, "Constant").output[0], "w");
}

#[test]
fn shape_of_a_symbolic_dimension_is_left_with_the_reason() {
    let model = Builder::new(17)
        .input("x", vec![D::S("batch"), D::N(12)])
        .tensor(scalar_i64("zero", 0))
        .node("Shape", &["x"], &["shape"])
        .node("Gather", &["shape", "zero"], &["batch"])
        .init_i64("axes", &[0])
        .node("Unsqueeze", &["batch", "axes"], &["batch_1d"])
        .init_i64("rest", &[3, 4])
        .node_with("Concat", &["batch_1d", "rest"], &["target"], vec![attr_int("axis", 0)])
        .node("Reshape", &["x", "target"], &["y"])
        .output("y")
        .build();

    let reason = assert_left_alone(&model, FOLD, "dimension 0 of `x` is `batch`, not a number");

    assert!(!reason.contains("Gather") && !reason.contains("Concat"), "one reason: {reason}");
}

#[test]
fn shape_arithmetic_on_a_fed_input_is_left_with_the_reason() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 12]))
        .typed_input("heads", DataType::Int64, dims(&[1]))
        .init_i64("front", &[2, -1])
        .node_with("Concat", &["front", "heads"], &["target"], vec![attr_int("axis", 0)])
        .node("Reshape", &["x", "target"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, FOLD, "input `heads` is not a constant");
}

#[test]
fn an_initializer_that_is_also_a_graph_input_is_not_folded() {
    let model = Builder::new(17)
        .input("x", dims(&[4]))
        .input("w", dims(&[4]))
        .init("w", weights(9, &[4]))
        .node("Neg", &["w"], &["negative"])
        .node("Add", &["x", "negative"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, FOLD, "");
}

#[test]
fn expand_far_larger_than_its_inputs_is_left_with_the_reason() {
    let model = Builder::new(17)
        .input("x", dims(&[256, 256]))
        .tensor(scalar_f32("one", 1.0))
        .init_i64("big", &[256, 256])
        .node("Expand", &["one", "big"], &["ones"])
        .node("Add", &["x", "ones"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, FOLD, "folding would bloat the model");
}

#[test]
fn integer_division_by_zero_is_left_with_the_reason() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .init_i64("numerator", &[6])
        .init_i64("zero", &[0])
        .node("Div", &["numerator", "zero"], &["quotient"])
        .node("Reshape", &["x", "quotient"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, FOLD, "Div by zero");
}

#[test]
fn operators_the_evaluator_does_not_compute_are_left_alone_silently() {
    let model = Builder::new(17)
        .input("x", dims(&[3]))
        .init("w", weights(10, &[3]))
        .node("Exp", &["w"], &["e"])
        .node("Add", &["x", "e"], &["y"])
        .output("y")
        .build();

    let reason = assert_left_alone(&model, FOLD, "");

    assert!(!reason.contains("Exp"), "{reason}");
}
