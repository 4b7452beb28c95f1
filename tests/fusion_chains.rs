//! The `fuse` rules that remove no-op nodes (`eliminate_noop`) and shorten chains of layout
//! operators (`transpose_chain`, `reshape_chain`, `squeeze_unsqueeze`). Each rewrite runs
//! before and after in ONNX Runtime; each near-miss (unknown shape, shared intermediate,
//! wrong axes, a Reshape whose 0 refers to the intermediate ...) must be left alone with the
//! reason.

mod fusion_support;

use fusion_support::*;
use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::ModelProto;
use pipeline_passes::ir::{self};

const NOOP: &[&str] = &["eliminate_noop"];
const TRANSPOSE: &[&str] = &["transpose_chain"];
const RESHAPE: &[&str] = &["reshape_chain"];
const SQUEEZE: &[&str] = &["squeeze_unsqueeze"];

/// `Relu(x) -> middle -> Sigmoid -> y`, where `middle` adds the nodes under test between
/// `r` and `m`.
fn around(opset: i64, x: Vec<D>, middle: impl FnOnce(Builder) -> Builder) -> ModelProto {
    let builder = Builder::new(opset).input("x", x).node("Relu", &["x"], &["r"]);
    middle(builder).node("Sigmoid", &["m"], &["y"]).output("y").build()
}

/// The int64 initializer of `model` named `name`.
fn initializer_i64(model: &ModelProto, name: &str) -> Vec<i64> {
    let graph = model.graph.as_ref().unwrap();
    let tensor = ir::initializer(graph, name).unwrap_or_else(|| panic!("no initializer {name}"));
    ir::tensor_to_i64(tensor).unwrap().iter().copied().collect()
}

fn ints_attribute<'m>(model: &'m ModelProto, op: &str, name: &str) -> &'m [i64] {
    let node = first_of(model, op);
    let attribute = node.attribute.iter().find(|a| a.name() == name);
    &attribute.unwrap_or_else(|| panic!("{op} has no {name}")).ints
}

fn empty_i64(name: &str) -> pipeline_passes::ir::proto::TensorProto {
    ir::tensor_from_i64(name, &ArrayD::from_shape_vec(IxDyn(&[0]), vec![]).unwrap())
}

#[test]
fn reshapes_to_the_shape_the_value_has_are_removed() {
    let model = around(17, vec![D::S("batch"), D::N(3), D::N(4)], |b| {
        b.init_i64("same", &[0, 3, -1])
            .node("Reshape", &["r", "same"], &["same_shape"])
            .node("Relu", &["same_shape"], &["r2"])
            .init_i64("zero_copy", &[0, 0, 4])
            .node("Reshape", &["r2", "zero_copy"], &["m"])
    });

    assert_fuses(&model, NOOP, &[("Relu", 2), ("Sigmoid", 1)]);
}

#[test]
fn layout_nodes_that_do_nothing_are_removed_in_opset_13() {
    let model = around(13, dims(&[3, 4]), |b| {
        b.node_with("Transpose", &["r"], &["t"], vec![attr_ints("perm", &[0, 1])])
            .node_with("Cast", &["t"], &["c"], vec![attr_int("to", DataType::Float as i64)])
            .init_i64("row", &[1, 4])
            .node("Expand", &["c", "row"], &["e"])
            .node("Squeeze", &["e"], &["s"])
            .tensor(empty_i64("no_axes"))
            .node("Unsqueeze", &["s", "no_axes"], &["u"])
            .init_i64("zeros", &[0, 0, 0, 0])
            .node("Pad", &["u", "zeros"], &["p"])
            .init_i64("starts", &[0, -4])
            .init_i64("ends", &[i64::MAX, 4])
            .init_i64("slice_axes", &[0, 1])
            .node("Slice", &["p", "starts", "ends", "slice_axes"], &["sl"])
            .init_i64("ones", &[1, 1])
            .node("Tile", &["sl", "ones"], &["ti"])
            .node_with("Concat", &["ti"], &["cc"], vec![attr_int("axis", 0)])
            .node_with("Split", &["cc"], &["sp"], vec![attr_int("axis", 1)])
            .node("Flatten", &["sp"], &["m"])
    });

    assert_fuses(&model, NOOP, &[("Relu", 1), ("Sigmoid", 1)]);
}

#[test]
fn pad_and_slice_with_attributes_of_opset_9_are_removed() {
    let model = around(9, dims(&[3, 4]), |b| {
        b.node_with("Pad", &["r"], &["p"], vec![attr_ints("pads", &[0, 0, 0, 0])]).node_with(
            "Slice",
            &["p"],
            &["m"],
            vec![attr_ints("starts", &[0]), attr_ints("ends", &[3]), attr_ints("axes", &[0])],
        )
    });

    assert_fuses(&model, NOOP, &[("Relu", 1), ("Sigmoid", 1)]);
}

#[test]
fn a_reshape_of_an_unknown_dimension_is_left_with_the_reason() {
    let model = around(17, vec![D::S("batch"), D::N(12)], |b| {
        b.init_i64("fixed", &[2, 12]).node("Reshape", &["r", "fixed"], &["m"])
    });

    assert_left_alone(&model, NOOP, "dimension 0 of `r` is `batch`, not a number");
}

#[test]
fn a_squeeze_without_axes_of_a_symbolic_dimension_is_left_with_the_reason() {
    let model = around(13, vec![D::S("batch"), D::N(12)], |b| b.node("Squeeze", &["r"], &["m"]));

    assert_left_alone(&model, NOOP, "dimension 0 of `r` is `batch`, not a number, which may be 1");
}

#[test]
fn a_slice_to_a_fixed_end_of_a_symbolic_dimension_is_left_with_the_reason() {
    let model = around(13, vec![D::S("batch"), D::N(12)], |b| {
        b.init_i64("starts", &[0]).init_i64("ends", &[8]).node(
            "Slice",
            &["r", "starts", "ends"],
            &["m"],
        )
    });

    assert_left_alone(&model, NOOP, "dimension 0 of `r` is `batch`");
}

#[test]
fn a_cast_of_a_value_of_unknown_type_is_left_with_the_reason() {
    let model = around(17, dims(&[3]), |b| {
        b.node("Softplus", &["r"], &["soft"]).node_with(
            "Cast",
            &["soft"],
            &["m"],
            vec![attr_int("to", DataType::Float as i64)],
        )
    });

    assert_left_alone(&model, NOOP, "the element type of `soft` is not known");
}

#[test]
fn transposes_that_undo_each_other_vanish() {
    let model =
        around(17, dims(&[2, 3, 4]), |b| {
            b.node_with("Transpose", &["r"], &["t1"], vec![attr_ints("perm", &[1, 2, 0])])
                .node_with("Transpose", &["t1"], &["m"], vec![attr_ints("perm", &[2, 0, 1])])
        });

    let fused = assert_fuses(&model, TRANSPOSE, &[("Relu", 1), ("Sigmoid", 1)]);

    assert_eq!(first_of(&fused, "Sigmoid").input[0], "r");
}

#[test]
fn transposes_without_perm_reverse_twice_and_vanish() {
    let model = around(17, dims(&[2, 3, 4]), |b| {
        b.node("Transpose", &["r"], &["t1"]).node("Transpose", &["t1"], &["m"])
    });

    assert_fuses(&model, TRANSPOSE, &[("Relu", 1), ("Sigmoid", 1)]);
}

#[test]
fn two_transposes_become_one_with_the_composed_perm() {
    let model =
        around(17, dims(&[2, 3, 4]), |b| {
            b.node_with("Transpose", &["r"], &["t1"], vec![attr_ints("perm", &[0, 2, 1])])
                .node_with("Transpose", &["t1"], &["m"], vec![attr_ints("perm", &[1, 0, 2])])
        });

    let fused = assert_fuses(&model, TRANSPOSE, &[("Relu", 1), ("Transpose", 1), ("Sigmoid", 1)]);

    assert_eq!(ints_attribute(&fused, "Transpose", "perm"), [2, 0, 1]);
    assert_eq!(first_of(&fused, "Transpose").input[0], "r");
}

#[test]
fn a_first_transpose_with_other_readers_stays_for_them() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3, 4]))
        .node_with("Transpose", &["x"], &["t1"], vec![attr_ints("perm", &[1, 2, 0])])
        .node_with("Transpose", &["t1"], &["back"], vec![attr_ints("perm", &[2, 0, 1])])
        .node_with("Transpose", &["t1"], &["other"], vec![attr_ints("perm", &[1, 0, 2])])
        .node("Relu", &["back"], &["y"])
        .node("Relu", &["t1"], &["z"])
        .output("y")
        .output("z")
        .output("other")
        .build();

    let fused = assert_fuses(&model, TRANSPOSE, &[("Transpose", 2), ("Relu", 2)]);

    assert_eq!(node(&fused, "Relu_y").input[0], "x");
    let other = node(&fused, "Transpose_other");
    assert_eq!(other.input[0], "x");
    assert_eq!(other.attribute[0].ints, [2, 1, 0]);
    assert_eq!(node(&fused, "Relu_z").input[0], "t1");
}

#[test]
fn transposes_from_a_graph_input_to_a_graph_output_that_cancel_are_left_with_the_reason() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .node("Transpose", &["x"], &["t1"])
        .node("Transpose", &["t1"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, TRANSPOSE, "graph input or output");
}

#[test]
fn a_reshape_of_a_reshape_reads_the_first_input() {
    let model = around(17, dims(&[2, 3, 4]), |b| {
        b.init_i64("first", &[6, 4])
            .node("Reshape", &["r", "first"], &["r1"])
            .init_i64("second", &[4, -1])
            .node("Reshape", &["r1", "second"], &["m"])
    });

    let fused = assert_fuses(&model, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);

    assert_eq!(first_of(&fused, "Reshape").input, ["r", "second"]);
}

#[test]
fn a_zero_copying_a_known_dimension_of_the_intermediate_becomes_its_size() {
    let model = around(17, dims(&[2, 3, 4]), |b| {
        b.init_i64("first", &[6, 4])
            .node("Reshape", &["r", "first"], &["r1"])
            .init_i64("second", &[0, 2, 2])
            .node("Reshape", &["r1", "second"], &["m"])
    });

    let fused = assert_fuses(&model, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);

    let reshape = first_of(&fused, "Reshape");
    assert_eq!(initializer_i64(&fused, &reshape.input[1]), [6, 2, 2]);
}

#[test]
fn a_zero_copying_a_dimension_the_first_input_shares_stays() {
    let model = around(17, vec![D::S("batch"), D::N(3), D::N(4)], |b| {
        b.init_i64("first", &[0, 12])
            .node("Reshape", &["r", "first"], &["r1"])
            .init_i64("second", &[0, 6, 2])
            .node("Reshape", &["r1", "second"], &["m"])
    });

    let fused = assert_fuses(&model, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);

    assert_eq!(first_of(&fused, "Reshape").input, ["r", "second"]);
}

#[test]
fn a_second_reshape_with_allowzero_keeps_it() {
    let model = around(14, dims(&[2, 3, 4]), |b| {
        b.init_i64("first", &[0, 12])
            .node("Reshape", &["r", "first"], &["r1"])
            .init_i64("second", &[4, 6])
            .node_with("Reshape", &["r1", "second"], &["m"], vec![attr_int("allowzero", 1)])
    });

    let fused = assert_fuses(&model, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);

    let reshape = first_of(&fused, "Reshape");
    assert_eq!(reshape.input, ["r", "second"]);
    assert_eq!(reshape.attribute[0].name(), "allowzero");
}

#[test]
fn a_zero_that_refers_to_the_intermediate_is_left_with_the_reason() {
    let model = around(17, vec![D::S("batch"), D::N(3), D::N(4)], |b| {
        b.init_i64("first", &[-1, 4])
            .node("Reshape", &["r", "first"], &["r1"])
            .init_i64("second", &[0, 2, 2])
            .node("Reshape", &["r1", "second"], &["m"])
    });

    assert_left_alone(&model, RESHAPE, "its 0 at position 0 copies dimension 0 of `r1`");
}

#[test]
fn flatten_squeeze_and_unsqueeze_before_a_reshape_go() {
    let flatten = around(17, dims(&[2, 3, 4]), |b| {
        b.node("Flatten", &["r"], &["f"]).init_i64("target", &[0, 2, 6]).node(
            "Reshape",
            &["f", "target"],
            &["m"],
        )
    });
    let fused = assert_fuses(&flatten, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);
    assert_eq!(initializer_i64(&fused, &first_of(&fused, "Reshape").input[1]), [2, 2, 6]);

    let unsqueeze = around(11, dims(&[2, 3, 4]), |b| {
        b.node_with("Unsqueeze", &["r"], &["u"], vec![attr_ints("axes", &[0])])
            .init_i64("target", &[6, 4])
            .node("Reshape", &["u", "target"], &["m"])
    });
    assert_fuses(&unsqueeze, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);

    let squeeze = around(13, dims(&[2, 1, 4]), |b| {
        b.init_i64("axes", &[1])
            .node("Squeeze", &["r", "axes"], &["s"])
            .init_i64("target", &[4, 2])
            .node("Reshape", &["s", "target"], &["m"])
    });
    assert_fuses(&squeeze, RESHAPE, &[("Relu", 1), ("Reshape", 1), ("Sigmoid", 1)]);
}

#[test]
fn a_reshape_whose_intermediate_is_shared_is_left_with_the_reason() {
    let model = around(17, dims(&[2, 3, 4]), |b| {
        b.init_i64("first", &[6, 4])
            .node("Reshape", &["r", "first"], &["r1"])
            .init_i64("second", &[4, 6])
            .node("Reshape", &["r1", "second"], &["r2"])
            .node("Relu", &["r1"], &["other"])
            .node("ReduceSum", &["other"], &["sum"])
            .node("Add", &["r2", "sum"], &["m"])
    });

    assert_left_alone(&model, RESHAPE, "the intermediate `r1` is read by other nodes too");
}

#[test]
fn a_reshape_to_a_fed_shape_is_left_with_the_reason() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3, 4]))
        .typed_input("shape", DataType::Int64, dims(&[2]))
        .init_i64("first", &[6, 4])
        .node("Reshape", &["x", "first"], &["r1"])
        .node("Reshape", &["r1", "shape"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, RESHAPE, "its target shape `shape` is not a constant");
}

fn unsqueeze_then_squeeze(opset: i64, added: &[i64], removed: &[i64]) -> ModelProto {
    around(opset, dims(&[1, 3]), |b| {
        if opset >= 13 {
            b.init_i64("added", added)
                .init_i64("removed", removed)
                .node("Unsqueeze", &["r", "added"], &["u"])
                .node("Squeeze", &["u", "removed"], &["m"])
        } else {
            b.node_with("Unsqueeze", &["r"], &["u"], vec![attr_ints("axes", added)]).node_with(
                "Squeeze",
                &["u"],
                &["m"],
                vec![attr_ints("axes", removed)],
            )
        }
    })
}

#[test]
fn an_unsqueeze_undone_by_a_squeeze_cancels_with_attribute_and_input_axes() {
    for opset in [11, 13] {
        let model = unsqueeze_then_squeeze(opset, &[0, -1], &[3, 0]);

        let fused = assert_fuses(&model, SQUEEZE, &[("Relu", 1), ("Sigmoid", 1)]);

        assert_eq!(first_of(&fused, "Sigmoid").input[0], "r", "opset {opset}");
    }
}

#[test]
fn a_squeeze_of_other_axes_than_the_unsqueeze_added_is_left_with_the_reason() {
    for opset in [11, 13] {
        let model = unsqueeze_then_squeeze(opset, &[0], &[1]);

        assert_left_alone(&model, SQUEEZE, "the Squeeze removes axes [1], not the axes [0]");
    }
}

#[test]
fn a_squeeze_of_dimensions_known_to_be_1_undone_by_an_unsqueeze_cancels() {
    let model = around(13, dims(&[2, 1, 3]), |b| {
        b.init_i64("axes", &[1])
            .init_i64("back", &[-2])
            .node("Squeeze", &["r", "axes"], &["s"])
            .node("Unsqueeze", &["s", "back"], &["m"])
    });

    assert_fuses(&model, SQUEEZE, &[("Relu", 1), ("Sigmoid", 1)]);
}

#[test]
fn a_squeeze_of_a_symbolic_dimension_undone_by_an_unsqueeze_is_left_with_the_reason() {
    let model = around(13, vec![D::N(2), D::S("one"), D::N(3)], |b| {
        b.init_i64("axes", &[1]).node("Squeeze", &["r", "axes"], &["s"]).node(
            "Unsqueeze",
            &["s", "axes"],
            &["m"],
        )
    });

    assert_left_alone(&model, SQUEEZE, "dimension 1 of `r` is not known to be 1");
}

#[test]
fn consecutive_unsqueezes_merge_into_one() {
    let new = around(13, dims(&[3, 4]), |b| {
        b.init_i64("first", &[0])
            .init_i64("second", &[2, -1])
            .node("Unsqueeze", &["r", "first"], &["u"])
            .node("Unsqueeze", &["u", "second"], &["m"])
    });
    let fused = assert_fuses(&new, SQUEEZE, &[("Relu", 1), ("Unsqueeze", 1), ("Sigmoid", 1)]);
    let unsqueeze = first_of(&fused, "Unsqueeze");
    assert_eq!(unsqueeze.input[0], "r");
    assert_eq!(initializer_i64(&fused, &unsqueeze.input[1]), [0, 2, 4]);

    let old = around(11, dims(&[3, 4]), |b| {
        b.node_with("Unsqueeze", &["r"], &["u"], vec![attr_ints("axes", &[0])]).node_with(
            "Unsqueeze",
            &["u"],
            &["m"],
            vec![attr_ints("axes", &[2, -1])],
        )
    });
    let fused = assert_fuses(&old, SQUEEZE, &[("Relu", 1), ("Unsqueeze", 1), ("Sigmoid", 1)]);
    assert_eq!(ints_attribute(&fused, "Unsqueeze", "axes"), [0, 2, 4]);
    assert_eq!(first_of(&fused, "Unsqueeze").input.len(), 1);
}

#[test]
fn consecutive_squeezes_merge_into_one() {
    let new = around(13, dims(&[1, 3, 1, 4, 1]), |b| {
        b.init_i64("first", &[0])
            .init_i64("second", &[1, -1])
            .node("Squeeze", &["r", "first"], &["s"])
            .node("Squeeze", &["s", "second"], &["m"])
    });
    let fused = assert_fuses(&new, SQUEEZE, &[("Relu", 1), ("Squeeze", 1), ("Sigmoid", 1)]);
    assert_eq!(initializer_i64(&fused, &first_of(&fused, "Squeeze").input[1]), [0, 2, 4]);

    let old = around(11, dims(&[1, 3, 1, 4, 1]), |b| {
        b.node_with("Squeeze", &["r"], &["s"], vec![attr_ints("axes", &[0])]).node_with(
            "Squeeze",
            &["s"],
            &["m"],
            vec![attr_ints("axes", &[1, -1])],
        )
    });
    let fused = assert_fuses(&old, SQUEEZE, &[("Relu", 1), ("Squeeze", 1), ("Sigmoid", 1)]);
    assert_eq!(ints_attribute(&fused, "Squeeze", "axes"), [0, 2, 4]);
}

#[test]
fn an_unsqueeze_read_elsewhere_too_is_left_with_the_reason() {
    let model = around(13, dims(&[3, 4]), |b| {
        b.init_i64("axes", &[0])
            .node("Unsqueeze", &["r", "axes"], &["u"])
            .node("Squeeze", &["u", "axes"], &["s"])
            .node("Relu", &["u"], &["other"])
            .node("Add", &["s", "other"], &["m"])
    });

    assert_left_alone(&model, SQUEEZE, "the intermediate `u` is read by other nodes too");
}

#[test]
fn fed_axes_are_left_with_the_reason() {
    let model = Builder::new(13)
        .input("x", dims(&[3, 4]))
        .typed_input("axes", DataType::Int64, dims(&[1]))
        .node("Unsqueeze", &["x", "axes"], &["u"])
        .node("Unsqueeze", &["u", "axes"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, SQUEEZE, "its axes `axes` are not a constant");
}

#[test]
fn every_rule_together_clears_an_exporter_layout_chain() {
    let model = around(17, vec![D::S("batch"), D::N(3), D::N(4)], |b| {
        b.init_i64("flat", &[0, 12])
            .node("Reshape", &["r", "flat"], &["r1"])
            .init_i64("back", &[0, 3, 4])
            .node("Reshape", &["r1", "back"], &["r2"])
            .node_with("Transpose", &["r2"], &["t1"], vec![attr_ints("perm", &[0, 2, 1])])
            .node_with("Transpose", &["t1"], &["t2"], vec![attr_ints("perm", &[0, 2, 1])])
            .init_i64("axes", &[1])
            .node("Unsqueeze", &["t2", "axes"], &["u"])
            .node("Squeeze", &["u", "axes"], &["m"])
    });

    assert_fuses(&model, &[], &[("Relu", 1), ("Sigmoid", 1)]);
}
