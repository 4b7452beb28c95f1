//! The `convert_fp16` pass on models built here: each converted model is loaded and run in ONNX
//! Runtime next to its float32 source on the same inputs, and its Casts, initializers and
//! input and output types are checked.
//!
//! Tolerance: [`FP16_TOLERANCE`], 1e-2 of the output's largest magnitude. Float16 keeps 11
//! significant bits, so every rounding moves a value by at most 2^-11 (about 4.9e-4) of
//! itself; these models round inputs, weights and a few layers' results, so their error stays
//! within a few 1e-3 (each test prints the worst it saw; they are below 1e-3). On the CPU,
//! ONNX Runtime runs float16 nodes that have no float16 kernel in float32 and drops the Cast
//! pairs it puts between them, so fewer values are rounded than the model says and some
//! differences are 0. A wrong conversion moves outputs by their own size: a weight written
//! with the wrong bits, a value that overflows to infinity and makes `0 x -infinity` NaN
//! (`a_wrong_conversion_exceeds_the_tolerance` checks both).

mod fusion_support;

use fusion_support::*;
use half::f16;
use ndarray::{ArrayD, IxDyn};
use pipeline::runtime::Tensor;
use pipeline_passes::ir;
use pipeline_passes::ir::proto::attribute_proto::AttributeType;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{AttributeProto, GraphProto, ModelProto, TensorProto};
use pipeline_passes::pass::PassError;
use serde_json::json;

/// Outputs of a float16 model must be within this share of the float32 output's largest
/// magnitude (see the file's documentation for why).
const FP16_TOLERANCE: f64 = 1e-2;

const FLOAT: i32 = DataType::Float as i32;
const FLOAT16: i32 = DataType::Float16 as i32;
const DOUBLE: i32 = DataType::Double as i32;

fn weights(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f64;
    Rng::new(seed).normal_array(shape, 1.0 / fan_in.sqrt())
}

fn convert(model: &ModelProto, config: serde_json::Value) -> ModelProto {
    run_pass("convert_fp16", config, model).unwrap_or_else(|e| panic!("convert_fp16 failed: {e}"))
}

fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("a graph")
}

/// The element type each graph input or output (`io` = input or output) declares.
fn io_types(model: &ModelProto, inputs: bool) -> Vec<(String, i32)> {
    let graph = graph(model);
    let values = if inputs { &graph.input } else { &graph.output };
    values
        .iter()
        .map(|v| {
            let elem = ir::declared_type(v).map_or(0, |t| t.elem_type);
            (v.name().to_string(), elem)
        })
        .collect()
}

/// The element type of each initializer, by name.
fn initializer_types(model: &ModelProto) -> Vec<(String, i32)> {
    graph(model).initializer.iter().map(|t| (t.name().to_string(), t.data_type())).collect()
}

/// The names of the initializers still stored as float32.
fn float32_initializers(model: &ModelProto) -> Vec<String> {
    let mut names: Vec<String> = initializer_types(model)
        .into_iter()
        .filter(|(_, elem)| *elem == FLOAT)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// The `to` of every Cast node, by the Cast's output.
fn casts(model: &ModelProto) -> Vec<(String, String, i64)> {
    graph(model)
        .node
        .iter()
        .filter(|n| n.op_type() == "Cast")
        .map(|n| (n.input[0].clone(), n.output[0].clone(), ir::node_attr_int(n, "to").unwrap_or(0)))
        .collect()
}

/// The values of a tensor as f64, float16 included.
fn values(tensor: &Tensor) -> Vec<f64> {
    match tensor {
        Tensor::F32(a) => a.iter().map(|&v| f64::from(v)).collect(),
        Tensor::F16(a) => a.iter().map(|&v| f64::from(v)).collect(),
        Tensor::F64(a) => a.iter().copied().collect(),
        Tensor::I64(a) => a.iter().map(|&v| v as f64).collect(),
        other => panic!("no comparison for {}", other.elem()),
    }
}

/// The largest difference between two outputs as a share of the first's largest magnitude;
/// NaN facing a number is an infinite difference.
fn difference(before: &Tensor, after: &Tensor) -> f64 {
    assert_eq!(before.shape(), after.shape(), "the output's shape changed");
    let (b, a) = (values(before), values(after));
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let worst = b.iter().zip(&a).fold(0.0f64, |worst, (x, y)| {
        let diff = if x.is_nan() && y.is_nan() { 0.0 } else { (x - y).abs() };
        worst.max(if diff.is_nan() { f64::INFINITY } else { diff })
    });
    worst / scale
}

/// The inputs of `before` as `after` takes them: float32 values rounded to float16 where
/// `after`'s input is float16.
fn inputs_for(after: &ModelProto, inputs: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let types = io_types(after, true);
    inputs
        .iter()
        .map(|(name, tensor)| {
            let half = types.iter().any(|(input, elem)| input == name && *elem == FLOAT16);
            match tensor {
                Tensor::F32(a) if half => (name.clone(), Tensor::F16(a.mapv(f16::from_f32))),
                other => (name.clone(), other.clone()),
            }
        })
        .collect()
}

/// Runs `before` and `after` in ONNX Runtime on the same random inputs (two seeds) and returns
/// the worst difference of any output (see [`difference`]); the output names must agree.
fn worst_difference(before: &ModelProto, after: &ModelProto, given: &[(&str, Tensor)]) -> f64 {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut worst = 0.0f64;
    for seed in [1, 2] {
        let inputs = random_inputs(before, seed, given);
        let expected = run_model(dir.path(), "before.onnx", before, &inputs);
        let actual = run_model(dir.path(), "after.onnx", after, &inputs_for(after, &inputs));
        assert_eq!(expected.len(), actual.len(), "the number of outputs changed");
        for ((name, b), (name_after, a)) in expected.iter().zip(&actual) {
            assert_eq!(name, name_after, "the outputs are in another order");
            worst = worst.max(difference(b, a));
        }
    }
    worst
}

/// Asserts that `after` computes what `before` does within [`FP16_TOLERANCE`].
fn assert_close(before: &ModelProto, after: &ModelProto, given: &[(&str, Tensor)]) -> f64 {
    let worst = worst_difference(before, after, given);
    println!("worst difference to float32: {worst:e} of the output's magnitude");
    assert!(
        worst <= FP16_TOLERANCE,
        "the float16 model differs by {worst:e} of the output's magnitude (tolerance \
         {FP16_TOLERANCE:e})"
    );
    worst
}

/// Asserts that the pass changes nothing, with a reason that contains `reason`.
fn assert_unchanged(model: &ModelProto, config: serde_json::Value, reason: &str) {
    match run_pass("convert_fp16", config, model) {
        Err(PassError::Unchanged { reason: why, .. }) => {
            assert!(why.contains(reason), "the reason `{why}` does not mention `{reason}`")
        }
        Err(other) => panic!("convert_fp16 failed instead of leaving the model alone: {other}"),
        Ok(converted) => panic!("convert_fp16 converted a model it should leave alone: {:?}", {
            histogram(&converted)
        }),
    }
}

/// The values of a float16 initializer.
fn f16_values(tensor: &TensorProto) -> Vec<f32> {
    assert_eq!(tensor.data_type(), FLOAT16, "`{}` is not float16", tensor.name());
    let raw = tensor.raw_data.as_deref().expect("float16 data in raw_data");
    raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

fn initializer<'m>(model: &'m ModelProto, name: &str) -> &'m TensorProto {
    ir::initializer(graph(model), name).unwrap_or_else(|| panic!("no initializer `{name}`"))
}

/// A two-layer perceptron: Gemm, Relu, MatMul, Add, Softmax.
fn mlp() -> ModelProto {
    Builder::new(17)
        .input("x", dims(&[4, 8]))
        .init("w1", weights(1, &[16, 8]))
        .init("b1", weights(2, &[16]))
        .init("w2", weights(3, &[16, 5]))
        .init("b2", weights(4, &[5]))
        .node_with("Gemm", &["x", "w1", "b1"], &["h"], vec![attr_int("transB", 1)])
        .node("Relu", &["h"], &["r"])
        .node("MatMul", &["r", "w2"], &["m"])
        .node("Add", &["m", "b2"], &["logits"])
        .node_with("Softmax", &["logits"], &["y"], vec![attr_int("axis", -1)])
        .output("y")
        .build()
}

#[test]
fn mlp_runs_in_float16_between_casts_of_its_input_and_output() {
    let model = mlp();

    let converted = convert(&model, json!({}));

    let expected = [("Cast", 2), ("Gemm", 1), ("Relu", 1), ("MatMul", 1), ("Add", 1)];
    assert_eq!(histogram(&converted), ops(&[expected.as_slice(), &[("Softmax", 1)]].concat()));
    assert_eq!(io_types(&converted, true), [("x".to_string(), FLOAT)]);
    assert_eq!(io_types(&converted, false), [("y".to_string(), FLOAT)]);
    assert!(float32_initializers(&converted).is_empty(), "{:?}", initializer_types(&converted));
    let casts = casts(&converted);
    assert_eq!(casts[0], ("x".into(), "x_fp16".into(), i64::from(FLOAT16)));
    assert_eq!(casts[1], ("y_fp16".into(), "y".into(), i64::from(FLOAT)));
    assert_eq!(first_of(&converted, "Gemm").input[0], "x_fp16");
    assert_eq!(first_of(&converted, "Softmax").output[0], "y_fp16");
    assert_close(&model, &converted, &[]);
}

#[test]
fn without_keep_io_types_inputs_and_outputs_are_float16() {
    let model = mlp();

    let converted = convert(&model, json!({"keep_io_types": false}));

    assert_eq!(histogram(&converted).get("Cast"), None);
    assert_eq!(io_types(&converted, true), [("x".to_string(), FLOAT16)]);
    assert_eq!(io_types(&converted, false), [("y".to_string(), FLOAT16)]);
    assert!(float32_initializers(&converted).is_empty());
    assert_close(&model, &converted, &[]);
}

#[test]
fn conv_net_with_batch_norm_and_pooling_converts() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3, 8, 8]))
        .init("w1", weights(1, &[4, 3, 3, 3]))
        .init("b1", weights(2, &[4]))
        .init("scale", Rng::new(3).uniform_array(&[4], 0.5, 1.5))
        .init("shift", weights(4, &[4]))
        .init("mean", weights(5, &[4]))
        .init("var", Rng::new(6).uniform_array(&[4], 0.5, 2.0))
        .init("w2", weights(7, &[6, 4, 3, 3]))
        .init("fc", weights(8, &[6, 3]))
        .node_with("Conv", &["x", "w1", "b1"], &["c1"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("BatchNormalization", &["c1", "scale", "shift", "mean", "var"], &["bn"])
        .node("Relu", &["bn"], &["r1"])
        .node_with(
            "MaxPool",
            &["r1"],
            &["p1"],
            vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
        )
        .node("Conv", &["p1", "w2"], &["c2"])
        .node("Sigmoid", &["c2"], &["s2"])
        .node("GlobalAveragePool", &["s2"], &["g"])
        .node("Flatten", &["g"], &["f"])
        .node("MatMul", &["f", "fc"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(histogram(&converted).get("Cast"), Some(&2));
    assert!(float32_initializers(&converted).is_empty(), "{:?}", initializer_types(&converted));
    assert_close(&model, &converted, &[]);
}

/// Conv, then Resize (blocked by default) with float32 scales, then Relu.
fn resize_model() -> ModelProto {
    let scales = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0f32, 1.0, 2.0, 2.0]).unwrap();
    Builder::new(13)
        .input("x", dims(&[1, 2, 4, 4]))
        .init("w", weights(1, &[3, 2, 1, 1]))
        .init("scales", scales)
        .node("Conv", &["x", "w"], &["c"])
        .node_with("Resize", &["c", "", "scales"], &["up"], vec![attr_string("mode", "linear")])
        .node("Relu", &["up"], &["y"])
        .output("y")
        .build()
}

#[test]
fn resize_stays_float32_between_casts() {
    let model = resize_model();

    let converted = convert(&model, json!({}));

    let expected = [("Cast", 4), ("Conv", 1), ("Resize", 1), ("Relu", 1)];
    assert_eq!(histogram(&converted), ops(&expected));
    assert_eq!(float32_initializers(&converted), ["scales"]);
    let resize = first_of(&converted, "Resize");
    assert_eq!(resize.input[0], "c_fp32", "Resize reads its input through a Cast to float32");
    assert_eq!(resize.input[2], "scales");
    assert_eq!(first_of(&converted, "Relu").input[0], "up_fp16");
    let to: Vec<i64> = casts(&converted).iter().map(|(_, _, to)| *to).collect();
    assert_eq!(to, [FLOAT16, FLOAT, FLOAT16, FLOAT].map(i64::from));
    assert_close(&model, &converted, &[]);
}

#[test]
fn resize_without_a_block_list_keeps_its_scales_float32() {
    let model = resize_model();

    let converted = convert(&model, json!({"op_block_list": []}));

    assert_eq!(histogram(&converted).get("Cast"), Some(&2));
    assert_eq!(float32_initializers(&converted), ["scales"], "ONNX fixes Resize's scales to float");
    assert_eq!(first_of(&converted, "Resize").input[0], "c");
    assert_close(&model, &converted, &[]);
}

#[test]
fn top_k_is_blocked_and_its_indices_are_left_alone() {
    let model = Builder::new(17)
        .input("x", dims(&[3, 10]))
        .init("w", weights(1, &[10, 10]))
        .init_i64("k", &[4])
        .node("MatMul", &["x", "w"], &["m"])
        .node("TopK", &["m", "k"], &["values", "indices"])
        .node("Tanh", &["values"], &["y"])
        .output("y")
        .typed_output("indices", DataType::Int64)
        .build();

    let converted = convert(&model, json!({}));

    let expected = [("Cast", 4), ("MatMul", 1), ("TopK", 1), ("Tanh", 1)];
    assert_eq!(histogram(&converted), ops(&expected));
    assert_eq!(first_of(&converted, "TopK").output, ["values", "indices"]);
    assert_eq!(io_types(&converted, false)[1], ("indices".to_string(), DataType::Int64 as i32));
    assert_close(&model, &converted, &[]);
}

#[test]
fn a_node_in_node_block_list_stays_float32_between_casts() {
    let model = mlp();

    let converted = convert(&model, json!({"node_block_list": ["Relu_r"]}));

    assert_eq!(histogram(&converted).get("Cast"), Some(&4));
    let relu = node(&converted, "Relu_r");
    assert_eq!(relu.input[0], "h_fp32");
    assert_eq!(first_of(&converted, "MatMul").input[0], "r_fp16");
    assert!(float32_initializers(&converted).is_empty());
    assert_close(&model, &converted, &[]);
}

#[test]
fn existing_casts_to_float_become_casts_to_float16_where_only_float16_reads_them() {
    // ids -> Cast(float) -> Add(x): retyped. ids -> Cast(float) -> Mul and TopK: the Cast
    // stays, Mul reads it through a second Cast. ids -> Cast(float) -> graph output: stays.
    let model = Builder::new(17)
        .input("x", dims(&[2, 6]))
        .typed_input("ids", DataType::Int64, dims(&[2, 6]))
        .init_i64("k", &[3])
        .node_with("Cast", &["ids"], &["ids_a"], vec![attr_int("to", FLOAT.into())])
        .node("Add", &["x", "ids_a"], &["sum"])
        .node_with("Cast", &["ids"], &["ids_b"], vec![attr_int("to", FLOAT.into())])
        .node("Mul", &["sum", "ids_b"], &["prod"])
        .node("TopK", &["ids_b", "k"], &["top", "top_indices"])
        .node_with("Cast", &["ids"], &["ids_c"], vec![attr_int("to", FLOAT.into())])
        .output("prod")
        .output("top")
        .output("ids_c")
        .build();

    let converted = convert(&model, json!({}));

    let to = |output: &str| {
        let cast = graph(&converted).node.iter().find(|n| n.output[0] == output).unwrap();
        ir::node_attr_int(cast, "to")
    };
    assert_eq!(to("ids_a"), Some(FLOAT16.into()), "read only by a float16 Add");
    assert_eq!(to("ids_b"), Some(FLOAT.into()), "TopK reads it in float32");
    assert_eq!(to("ids_b_fp16"), Some(FLOAT16.into()), "Mul reads a float16 copy");
    assert_eq!(to("ids_c"), Some(FLOAT.into()), "a float32 graph output");
    assert_eq!(first_of(&converted, "TopK").input[0], "ids_b");
    assert_close(&model, &converted, &[]);
}

#[test]
fn float64_constants_stay_float64_and_their_cast_to_float_is_retyped() {
    let factor = TensorProto {
        dims: vec![6],
        data_type: Some(DOUBLE),
        double_data: vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
        ..TensorProto::default()
    };
    let model = Builder::new(17)
        .input("x", dims(&[2, 6]))
        .init("w", weights(1, &[6]))
        .constant("factor", factor)
        .node_with("Cast", &["x"], &["x64"], vec![attr_int("to", DOUBLE.into())])
        .node("Mul", &["x64", "factor"], &["scaled"])
        .node_with("Cast", &["scaled"], &["back"], vec![attr_int("to", FLOAT.into())])
        .node("Add", &["back", "w"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    let constant = first_of(&converted, "Constant");
    let value = constant.attribute[0].t.as_ref().expect("a tensor");
    assert_eq!(value.data_type(), DOUBLE, "the float64 constant is kept");
    let to: Vec<(String, i64)> =
        casts(&converted).into_iter().map(|(_, output, to)| (output, to)).collect();
    assert!(to.contains(&("x64".into(), DOUBLE.into())), "{to:?}");
    assert!(to.contains(&("back".into(), FLOAT16.into())), "{to:?}");
    assert_eq!(initializer(&converted, "w").data_type(), FLOAT16);
    assert_close(&model, &converted, &[]);
}

/// Scores masked the way exporters of attention write it, `(1 - keep) * lowest` with the
/// lowest float32 as `lowest`, then Softmax; then an epsilon of 1e-10 and a cap of 7e4. Three
/// constants out of float16's range: `lowest` only works as -65504 (as -infinity,
/// `0 x -infinity` is NaN and so is every output), 1e-10 would round to zero, 7e4 to infinity.
fn masked_softmax() -> ModelProto {
    let keep = vec![1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let scalar = |value: f32| ArrayD::from_shape_vec(IxDyn(&[1]), vec![value]).unwrap();
    Builder::new(17)
        .input("x", dims(&[2, 6]))
        .init("w", weights(1, &[6, 5]))
        .init("keep", ArrayD::from_shape_vec(IxDyn(&[2, 5]), keep).unwrap())
        .init("one", scalar(1.0))
        .init("lowest", scalar(f32::MIN))
        .init("tiny", scalar(1e-10))
        .init("big", scalar(7e4))
        .node("MatMul", &["x", "w"], &["scores"])
        .node("Sub", &["one", "keep"], &["dropped"])
        .node("Mul", &["dropped", "lowest"], &["bias"])
        .node("Add", &["scores", "bias"], &["masked"])
        .node_with("Softmax", &["masked"], &["p"], vec![attr_int("axis", -1)])
        .node("Add", &["p", "tiny"], &["p_eps"])
        .node("Min", &["p_eps", "big"], &["y"])
        .output("y")
        .build()
}

#[test]
fn initializers_beyond_float16_are_clamped_and_tiny_ones_raised() {
    let model = masked_softmax();

    let converted = convert(&model, json!({}));

    assert_eq!(f16_values(initializer(&converted, "lowest")), [-65504.0]);
    let tiny = f16_values(initializer(&converted, "tiny"));
    assert_eq!(tiny, [f16::from_bits(1).to_f32()], "1e-10 is raised to 2^-24, not zero");
    // Min is blocked by default: `big` stays float32 and keeps 7e4 exactly.
    assert_eq!(float32_initializers(&converted), ["big"]);
    assert_close(&model, &converted, &[]);
}

#[test]
fn a_wrong_conversion_exceeds_the_tolerance() {
    let model = masked_softmax();
    let converted = convert(&model, json!({}));

    // Without clamping, the lowest float32 becomes -infinity, and every output NaN.
    let mut unclamped = converted.clone();
    let lowest = unclamped.graph.as_mut().unwrap().initializer.iter_mut();
    let lowest = lowest.into_iter().find(|t| t.name() == "lowest").unwrap();
    lowest.raw_data = Some(f16::NEG_INFINITY.to_le_bytes().to_vec().into());
    assert_eq!(worst_difference(&model, &unclamped, &[]), f64::INFINITY);

    // A weight written as the upper half of its float32 bits (bfloat16's bits read as
    // float16) is a value of another size.
    let mut wrong_bits = converted;
    let w = wrong_bits.graph.as_mut().unwrap().initializer.iter_mut();
    let w = w.into_iter().find(|t| t.name() == "w").unwrap();
    let original = ir::tensor_to_f32(initializer(&model, "w")).unwrap();
    let bits: Vec<u8> =
        original.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect();
    w.raw_data = Some(bits.into());
    assert!(worst_difference(&model, &wrong_bits, &[]) > FP16_TOLERANCE);
}

#[test]
fn an_initializer_read_by_kept_and_converted_nodes_gets_a_float16_copy() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 5]))
        .init("w", weights(1, &[5]))
        .node("Add", &["x", "w"], &["a"])
        .node("Max", &["a", "w"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(float32_initializers(&converted), ["w"]);
    assert_eq!(initializer(&converted, "w_fp16").data_type(), FLOAT16);
    assert_eq!(first_of(&converted, "Add").input[1], "w_fp16");
    assert_eq!(first_of(&converted, "Max").input, ["a_fp32", "w"]);
    assert_close(&model, &converted, &[]);
}

#[test]
fn constant_nodes_are_converted_or_copied() {
    let value_float = attr_float("value_float", 0.25);
    let model = Builder::new(17)
        .input("x", dims(&[2, 5]))
        .node_with("Constant", &[], &["quarter"], vec![value_float])
        .constant("shift", ir::tensor_from_f32("", &weights(2, &[5])))
        .node("Mul", &["x", "quarter"], &["a"])
        .node("Add", &["a", "shift"], &["b"])
        .node("Max", &["b", "shift"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    let quarter = node(&converted, "Constant_quarter");
    let tensor = quarter.attribute[0].t.as_ref().expect("value_float became a tensor");
    assert_eq!((quarter.attribute[0].name(), tensor.data_type()), ("value", FLOAT16));
    let shift = node(&converted, "Constant_shift");
    assert_eq!(shift.attribute[0].t.as_ref().unwrap().data_type(), FLOAT, "Max reads it");
    assert_eq!(first_of(&converted, "Add").input[1], "shift_fp16");
    assert_eq!(histogram(&converted).get("Constant"), Some(&3));
    assert_close(&model, &converted, &[]);
}

#[test]
fn constant_of_shape_with_a_float_value_is_retyped() {
    let value = ir::tensor_from_f32("", &ArrayD::from_shape_vec(IxDyn(&[1]), vec![0.5]).unwrap());
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .node("Shape", &["x"], &["shape"])
        .node_with("ConstantOfShape", &["shape"], &["halves"], vec![attr_tensor("value", value)])
        .node("Add", &["x", "halves"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    let node = first_of(&converted, "ConstantOfShape");
    assert_eq!(node.attribute[0].t.as_ref().unwrap().data_type(), FLOAT16);
    assert_eq!(first_of(&converted, "Shape").input[0], "x", "Shape reads x as it comes");
    assert_close(&model, &converted, &[]);
}

#[test]
fn random_normal_keeps_its_float32_dtype_behind_a_cast() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 3]))
        .node_with(
            "RandomNormal",
            &[],
            &["noise"],
            vec![attr_ints("shape", &[2, 3]), attr_float("seed", 3.0), attr_float("scale", 0.1)],
        )
        .node("Add", &["x", "noise"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(ir::node_attr_int(first_of(&converted, "RandomNormal"), "dtype"), None);
    assert_eq!(first_of(&converted, "Add").input[1], "noise_fp16");
    assert_close(&model, &converted, &[]);
}

#[test]
fn a_graph_output_read_inside_the_graph_keeps_its_name() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .init("w", weights(1, &[4]))
        .node("Relu", &["x"], &["r"])
        .node("Mul", &["r", "w"], &["y"])
        .output("r")
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(first_of(&converted, "Relu").output[0], "r_fp16");
    assert_eq!(first_of(&converted, "Mul").input[0], "r_fp16");
    assert_eq!(io_types(&converted, false), [("r".to_string(), FLOAT), ("y".to_string(), FLOAT)]);
    assert_close(&model, &converted, &[]);
}

#[test]
fn a_kept_node_making_a_float16_graph_output_writes_it_through_a_cast() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 5]))
        .init("w", weights(1, &[5, 5]))
        .init_i64("k", &[2])
        .node("MatMul", &["x", "w"], &["m"])
        .node("TopK", &["m", "k"], &["top", "indices"])
        .output("top")
        .build();

    let converted = convert(&model, json!({"keep_io_types": false}));

    assert_eq!(first_of(&converted, "TopK").output[0], "top_fp32");
    assert_eq!(io_types(&converted, false), [("top".to_string(), FLOAT16)]);
    assert_close(&model, &converted, &[]);
}

#[test]
fn layer_norm_statistics_stay_float32() {
    let model = Builder::new(17)
        .input("x", dims(&[3, 8]))
        .init("gamma", Rng::new(1).uniform_array(&[8], 0.5, 1.5))
        .init("beta", weights(2, &[8]))
        .init("w", weights(3, &[1]))
        .node_with(
            "LayerNormalization",
            &["x", "gamma", "beta"],
            &["y", "mean", "inv_std"],
            vec![attr_int("axis", -1)],
        )
        .node("Mul", &["mean", "w"], &["scaled_mean"])
        .output("y")
        .output("scaled_mean")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(first_of(&converted, "Mul").input[0], "mean_fp16");
    assert_close(&model, &converted, &[]);
}

#[test]
fn com_microsoft_operators_with_float16_kernels_convert() {
    let model = Builder::new(17)
        .input("x", dims(&[2, 8]))
        .init("bias", weights(1, &[8]))
        .init("w", weights(2, &[8, 4]))
        .domain_node("com.microsoft", "FastGelu", &["x", "bias"], &["g"], vec![])
        .domain_node(
            "com.microsoft",
            "FusedMatMul",
            &["g", "w"],
            &["y"],
            vec![attr_float("alpha", 0.5)],
        )
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(histogram(&converted).get("Cast"), Some(&2));
    assert!(float32_initializers(&converted).is_empty());
    assert_close(&model, &converted, &[]);
}

#[test]
fn operators_of_other_domains_stay_float32_and_declared_types_let_readers_convert() {
    let mut model = Builder::new(17)
        .input("x", dims(&[3, 4]))
        .init("w", weights(1, &[4]))
        .node("Relu", &["x"], &["r"])
        .domain_node("ai.onnx.ml", "Normalizer", &["r"], &["n"], vec![attr_string("norm", "L2")])
        .node("Mul", &["n", "w"], &["y"])
        .output("y")
        .build();
    let undeclared = convert(&model, json!({}));
    model.graph.as_mut().unwrap().value_info.push(ir::tensor_value_info("n", FLOAT, None));

    let converted = convert(&model, json!({}));

    // Without a declared type for `n`, nothing tells Mul's type: it stays float32 too.
    assert_eq!(float32_initializers(&undeclared), ["w"]);
    assert_eq!(first_of(&undeclared, "Normalizer").input[0], "r_fp32");
    assert_close(&model, &undeclared, &[]);
    // With one, Mul reads the Normalizer's output through a Cast.
    assert!(float32_initializers(&converted).is_empty());
    assert_eq!(first_of(&converted, "Normalizer").input[0], "r_fp32");
    assert_eq!(first_of(&converted, "Mul").input[0], "n_fp16");
    assert_close(&model, &converted, &[]);
}

#[test]
fn if_branches_stay_float32_and_read_outer_values_through_casts() {
    let branch = |name: &str, op: &str| {
        let mut graph = GraphProto { name: Some(name.into()), ..GraphProto::default() };
        graph.node.push(ir::make_node(op, &["h", "w"], &[&format!("{name}_out")], name));
        graph.output.push(ir::tensor_value_info(&format!("{name}_out"), FLOAT, None));
        graph
    };
    let graph_attribute = |name: &str, graph: GraphProto| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(graph),
        ..AttributeProto::default()
    };
    let then_branch = graph_attribute("then_branch", branch("then", "Add"));
    let else_branch = graph_attribute("else_branch", branch("else", "Sub"));
    let model = Builder::new(17)
        .input("x", dims(&[2, 4]))
        .typed_input("flag", DataType::Bool, dims(&[]))
        .init("w", weights(1, &[4]))
        .init("v", weights(2, &[4]))
        .node("Sigmoid", &["x"], &["h"])
        .node_with("If", &["flag"], &["chosen"], vec![then_branch, else_branch])
        .node("Mul", &["chosen", "v"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    let node = first_of(&converted, "If");
    let then_graph = node.attribute[0].g.as_ref().unwrap();
    assert_eq!(then_graph.node[0].input, ["h_fp32", "w"], "outer values read in float32");
    assert_eq!(initializer(&converted, "w").data_type(), FLOAT);
    assert_eq!(first_of(&converted, "Mul").input[0], "chosen_fp16");
    for flag in [true, false] {
        let flag = Tensor::Bool(ArrayD::from_elem(IxDyn(&[]), flag));
        assert_close(&model, &converted, &[("flag", flag)]);
    }
}

#[test]
fn quantize_and_dequantize_before_opset_19_stay_float32() {
    let scale = ArrayD::from_shape_vec(IxDyn(&[]), vec![0.05f32]).unwrap();
    let zero = TensorProto {
        name: Some("zero".into()),
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(vec![128].into()),
        ..TensorProto::default()
    };
    let model = Builder::new(13)
        .input("x", dims(&[2, 4]))
        .init("scale", scale)
        .tensor(zero)
        .init("w", weights(1, &[4, 3]))
        .node("QuantizeLinear", &["x", "scale", "zero"], &["q"])
        .node("DequantizeLinear", &["q", "scale", "zero"], &["dq"])
        .node("MatMul", &["dq", "w"], &["y"])
        .output("y")
        .build();

    let converted = convert(&model, json!({}));

    assert_eq!(float32_initializers(&converted), ["scale"]);
    assert_eq!(first_of(&converted, "QuantizeLinear").input[0], "x");
    assert_eq!(first_of(&converted, "MatMul").input[0], "dq_fp16");
    assert_close(&model, &converted, &[]);
}

#[test]
fn a_model_without_float32_is_unchanged() {
    let model = Builder::new(17)
        .typed_input("a", DataType::Int64, dims(&[3]))
        .typed_input("b", DataType::Int64, dims(&[3]))
        .node("Add", &["a", "b"], &["y"])
        .typed_output("y", DataType::Int64)
        .build();

    assert_unchanged(&model, json!({}), "holds no float32 values");
}

#[test]
fn a_model_whose_float32_work_is_in_another_domain_is_unchanged() {
    let model = Builder::new(17)
        .input("x", dims(&[3, 4]))
        .domain_node("ai.onnx.ml", "Normalizer", &["x"], &["y"], vec![attr_string("norm", "L1")])
        .output("y")
        .build();

    assert_unchanged(&model, json!({}), "operators of domain `ai.onnx.ml` are never converted");
}

#[test]
fn a_model_whose_float32_work_is_all_blocked_is_unchanged() {
    let scales = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0f32, 1.0, 2.0, 2.0]).unwrap();
    let model = Builder::new(13)
        .input("x", dims(&[1, 1, 2, 2]))
        .init("scales", scales)
        .node("Resize", &["x", "", "scales"], &["y"])
        .output("y")
        .build();

    assert_unchanged(&model, json!({}), "`Resize_y`: Resize is in `op_block_list`");
}

#[test]
fn converted_models_keep_every_value_info_consistent_for_onnx_s_checker() {
    let model = resize_model();
    let converted = convert(&model, json!({"keep_io_types": false}));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("converted.onnx");
    ir::save(&converted, &path, &ir::SaveOptions::default()).expect("the model saves");

    let script = "import sys, onnx\n\
                  m = onnx.load(sys.argv[1])\n\
                  onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)\n\
                  print('ok')";
    let output = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python starts");

    assert!(output.status.success(), "onnx: {}", String::from_utf8_lossy(&output.stderr));
}
