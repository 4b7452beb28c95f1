//! The rules of `quantize_static` one at a time, on small graphs with hand-set ranges: Relu
//! folding, parameters shared through data-movement operators, the int32 bias scale, node
//! filters with regular expressions, copies of initializers two nodes would quantize
//! differently, opset checks, and the errors a user sees (no calibration data, nothing to
//! quantize, a range that is not finite, a range that is missing), and the same rules in the
//! QOperator format. The pass itself runs once on a scripted runner, to check what it asks
//! calibration for.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::attribute_proto::AttributeType;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
};
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::pass::{self, ModelRunner, Pass, PassContext, RunnerError};
use pipeline_passes::quantize::calibrate::TensorRange;
use pipeline_passes::quantize::static_quant::{
    quantize_qdq, quantize_qoperator, IntegerType, QuantFormat, QuantizeStatic,
    QuantizeStaticConfig,
};

fn tensor(name: &str, shape: &[usize], values: &[f32]) -> TensorProto {
    let array = ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("values fit");
    ir::tensor_from_f32(name, &array)
}

fn ramp(name: &str, shape: &[usize], step: f32) -> TensorProto {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|i| (i as f32 - count as f32 / 3.0) * step).collect();
    tensor(name, shape, &values)
}

fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>, opset: i64) -> ModelProto {
    let graph = GraphProto {
        name: Some("rules".into()),
        node: nodes,
        initializer: initializers,
        input: vec![float_value_info("x", &[1, 2, 4, 4])],
        output: vec![float_value_info("out", &[])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn ranges(entries: &[(&str, f32, f32)]) -> BTreeMap<String, TensorRange> {
    entries.iter().map(|&(n, min, max)| (n.to_string(), TensorRange { min, max })).collect()
}

fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("a graph")
}

fn node<'m>(model: &'m ModelProto, name: &str) -> &'m NodeProto {
    graph(model)
        .node
        .iter()
        .find(|n| n.name() == name)
        .unwrap_or_else(|| panic!("no node `{name}`"))
}

fn has_node(model: &ModelProto, name: &str) -> bool {
    graph(model).node.iter().any(|n| n.name() == name)
}

fn floats(model: &ModelProto, name: &str) -> Vec<f32> {
    let tensor = ir::initializer(graph(model), name).unwrap_or_else(|| panic!("no `{name}`"));
    ir::tensor_to_f32(tensor).expect("floats").iter().copied().collect()
}

fn ints(model: &ModelProto, name: &str) -> Vec<i64> {
    let tensor = ir::initializer(graph(model), name).unwrap_or_else(|| panic!("no `{name}`"));
    ir::tensor_to_i64(tensor).expect("integers").iter().copied().collect()
}

fn conv(name: &str, inputs: &[&str], output: &str) -> NodeProto {
    let mut node = ir::make_node("Conv", inputs, &[output], name);
    node.attribute.push(ir::attr_ints("pads", &[1; 4]));
    node
}

/// `x -> conv1 -> y -> relu -> r -> conv2 -> out`.
fn conv_relu_conv() -> ModelProto {
    model(
        vec![
            conv("conv1", &["x", "W1", "B1"], "y"),
            ir::make_node("Relu", &["y"], &["r"], "relu"),
            conv("conv2", &["r", "W2"], "out"),
        ],
        vec![
            ramp("W1", &[2, 2, 3, 3], 0.05),
            tensor("B1", &[2], &[0.5, -0.25]),
            ramp("W2", &[2, 2, 3, 3], -0.03),
        ],
        13,
    )
}

fn conv_relu_conv_ranges() -> BTreeMap<String, TensorRange> {
    ranges(&[("x", -1.0, 1.0), ("y", -3.0, 4.0), ("r", 0.0, 4.0), ("out", -2.0, 2.0)])
}

#[test]
fn relu_folds_into_the_quantization_of_its_input() {
    let config = QuantizeStaticConfig { activation_type: IntegerType::Uint8, ..Default::default() };
    let ours = quantize_qdq(conv_relu_conv(), &conv_relu_conv_ranges(), &config).unwrap();

    assert!(!has_node(&ours, "relu"), "the Relu is folded away");
    assert_eq!(node(&ours, "conv1").output, ["r"], "conv1 writes the Relu's output");
    assert_eq!(floats(&ours, "r_scale"), [4.0 / 255.0]);
    assert_eq!(ints(&ours, "r_zero_point"), [0], "the range [0, 4] needs no negative values");
    assert!(ir::initializer(graph(&ours), "y_scale").is_none());
    assert_eq!(node(&ours, "conv2").input[0], "r_DequantizeLinear_Output");
}

#[test]
fn symmetric_activations_keep_the_relu_with_the_output_range() {
    let config = QuantizeStaticConfig { activation_symmetric: true, ..Default::default() };
    let ours = quantize_qdq(conv_relu_conv(), &conv_relu_conv_ranges(), &config).unwrap();

    assert_eq!(node(&ours, "relu").input, ["y_DequantizeLinear_Output"]);
    // The Relu's input takes the Relu output's range [0, 4], made symmetric: 8 / 254.
    assert_eq!(floats(&ours, "y_scale"), [8.0 / 254.0]);
    assert_eq!(floats(&ours, "y_scale"), floats(&ours, "r_scale"));
    assert_eq!(ints(&ours, "y_zero_point"), [0]);
}

#[test]
fn relu_with_a_second_reader_of_its_input_stays() {
    let mut model = conv_relu_conv();
    let graph = model.graph.as_mut().unwrap();
    graph.node.push(ir::make_node("Add", &["y", "r"], &["extra"], "add"));
    graph.output.push(float_value_info("extra", &[]));
    let mut ranges = conv_relu_conv_ranges();
    ranges.insert("extra".into(), TensorRange { min: -3.0, max: 8.0 });

    let ours = quantize_qdq(model, &ranges, &QuantizeStaticConfig::default()).unwrap();

    assert!(has_node(&ours, "relu"));
    assert_eq!(floats(&ours, "y_scale"), [7.0 / 255.0], "y keeps its own range [-3, 4]");
}

#[test]
fn relu_whose_output_a_subgraph_reads_stays() {
    // An If whose branches both read `r` from the outer graph: folding the Relu would leave
    // them reading conv1's unclipped output, since subgraph reads are not redirected.
    let branch = |name: &str| GraphProto {
        name: Some(name.into()),
        node: vec![ir::make_node("Identity", &["r"], &[&format!("{name}_out")], name)],
        output: vec![float_value_info(&format!("{name}_out"), &[])],
        ..Default::default()
    };
    let graph_attribute = |name: &str, g: GraphProto| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    };
    let mut model = conv_relu_conv();
    let graph = model.graph.as_mut().unwrap();
    let mut branches = ir::make_node("If", &["flag"], &["picked"], "if");
    branches.attribute.push(graph_attribute("then_branch", branch("then")));
    branches.attribute.push(graph_attribute("else_branch", branch("else")));
    graph.node.push(branches);
    graph.input.push(ir::tensor_value_info("flag", DataType::Bool as i32, Some(&[])));
    graph.output.push(float_value_info("picked", &[]));

    let ours =
        quantize_qdq(model, &conv_relu_conv_ranges(), &QuantizeStaticConfig::default()).unwrap();

    assert!(has_node(&ours, "relu"), "the Relu stays for the subgraphs");
    assert_eq!(node(&ours, "relu").output, ["r"]);
    assert_eq!(node(&ours, "conv1").output, ["y"]);
}

#[test]
fn data_movement_shares_its_input_parameters() {
    let mut pool = ir::make_node("MaxPool", &["y"], &["p"], "pool");
    pool.attribute.push(ir::attr_ints("kernel_shape", &[2, 2]));
    let shape = ir::tensor_from_i64("shape", &ndarray::arr1(&[1i64, -1]).into_dyn());
    let nodes = vec![
        conv("conv", &["x", "W"], "y"),
        pool,
        ir::make_node("Reshape", &["p", "shape"], &["out"], "reshape"),
    ];
    let initializers = vec![ramp("W", &[2, 2, 3, 3], 0.05), shape];
    let ranges =
        ranges(&[("x", -1.0, 1.0), ("y", -2.0, 2.0), ("p", -5.0, 5.0), ("out", -5.0, 5.0)]);
    let config = QuantizeStaticConfig::default();

    let ours =
        quantize_qdq(model(nodes.clone(), initializers.clone(), 13), &ranges, &config).unwrap();
    for tensor in ["p", "out"] {
        let quantize = node(&ours, &format!("{tensor}_QuantizeLinear"));
        assert_eq!(quantize.input[1..], ["y_scale", "y_zero_point"], "{tensor} shares y's");
    }
    assert!(ir::initializer(graph(&ours), "p_scale").is_none());
    assert_eq!(node(&ours, "reshape").input, ["p_DequantizeLinear_Output", "shape"]);
    let out = node(&ours, "out_DequantizeLinear");
    assert_eq!(out.output, ["out"], "a graph output keeps its name");

    // MaxPool shares from opset 12 on, as in ORT; below, nothing after the Conv is quantized.
    let ours = quantize_qdq(model(nodes, initializers, 11), &ranges, &config).unwrap();
    assert!(!has_node(&ours, "p_QuantizeLinear") && !has_node(&ours, "out_QuantizeLinear"));
}

#[test]
fn bias_is_int32_at_input_scale_times_weight_scale() {
    let ranges = conv_relu_conv_ranges();
    let ours = quantize_qdq(conv_relu_conv(), &ranges, &QuantizeStaticConfig::default()).unwrap();

    let input_scale = floats(&ours, "x_scale")[0];
    let weight_scale = floats(&ours, "W1_scale")[0];
    assert_eq!(floats(&ours, "B1_quantized_scale"), [input_scale * weight_scale]);
    assert_eq!(ints(&ours, "B1_quantized_zero_point"), [0]);
    let bias = ir::initializer(graph(&ours), "B1_quantized").unwrap();
    assert_eq!(bias.data_type(), DataType::Int32 as i32);
    let scale = f64::from(input_scale * weight_scale);
    let expected: Vec<i64> =
        [0.5f64, -0.25].iter().map(|b| (b / scale).round_ties_even() as i64).collect();
    assert_eq!(ints(&ours, "B1_quantized"), expected);
    assert_eq!(node(&ours, "B1_DequantizeLinear").output, ["B1"]);
    assert!(ir::initializer(graph(&ours), "B1").is_none(), "the float bias is gone");

    let config = QuantizeStaticConfig { per_channel: true, ..Default::default() };
    let ours = quantize_qdq(conv_relu_conv(), &ranges, &config).unwrap();
    let weight_scales = floats(&ours, "W1_scale");
    assert_eq!(weight_scales.len(), 2, "one scale per output channel");
    let bias_scales: Vec<f32> = weight_scales.iter().map(|w| input_scale * w).collect();
    assert_eq!(floats(&ours, "B1_quantized_scale"), bias_scales);
    assert_eq!(ints(&ours, "B1_quantized_zero_point"), [0, 0]);
    let dequantize = node(&ours, "B1_DequantizeLinear");
    assert_eq!(ir::node_attr_int(dequantize, "axis"), Some(0));
    assert_eq!(ir::node_attr_int(node(&ours, "W1_DequantizeLinear"), "axis"), Some(0));
}

#[test]
fn gemm_keeps_beta_and_quantizes_its_bias_at_the_product_scale() {
    let mut gemm = ir::make_node("Gemm", &["x", "W", "C"], &["out"], "gemm");
    gemm.attribute.push(ir::attr_float("beta", 0.5));
    gemm.attribute.push(ir::attr_int("transB", 1));
    let initializers = vec![ramp("W", &[3, 4], 0.1), tensor("C", &[3], &[1.0, -2.0, 0.5])];
    let ranges = ranges(&[("x", -1.0, 1.0), ("out", -2.0, 2.0)]);
    let config = QuantizeStaticConfig { per_channel: true, ..Default::default() };

    let ours = quantize_qdq(model(vec![gemm], initializers, 13), &ranges, &config).unwrap();

    assert_eq!(ir::node_attr_float(node(&ours, "gemm"), "beta"), Some(0.5));
    assert_eq!(ir::node_attr_int(node(&ours, "W_DequantizeLinear"), "axis"), Some(0));
    let input_scale = floats(&ours, "x_scale")[0];
    let expected: Vec<f32> = floats(&ours, "W_scale").iter().map(|w| input_scale * w).collect();
    assert_eq!(floats(&ours, "C_quantized_scale"), expected);
}

#[test]
fn node_filters_take_names_and_whole_name_regular_expressions() {
    let nodes = vec![
        conv("conv1", &["x", "W"], "a"),
        conv("conv22", &["a", "W"], "b"),
        conv("conv_a", &["b", "W"], "c"),
        conv("block(1)", &["c", "W"], "out"),
    ];
    let ranges = ranges(&[
        ("x", -1.0, 1.0),
        ("a", -1.0, 1.0),
        ("b", -1.0, 1.0),
        ("c", -1.0, 1.0),
        ("out", -1.0, 1.0),
    ]);
    let config = QuantizeStaticConfig {
        nodes_to_exclude: vec!["conv[0-9]+".into(), "block(1)".into(), "missing".into()],
        ..Default::default()
    };

    let ours = quantize_qdq(
        model(nodes.clone(), vec![ramp("W", &[2, 2, 3, 3], 0.05)], 13),
        &ranges,
        &config,
    )
    .unwrap();

    assert_eq!(node(&ours, "conv1").input, ["x", "W_DequantizeLinear_Output"]);
    assert_eq!(
        node(&ours, "conv_a").input,
        ["b_DequantizeLinear_Output", "W_DequantizeLinear_Output"]
    );
    assert!(!has_node(&ours, "a_QuantizeLinear"), "only conv_a's tensors are quantized");
    assert!(has_node(&ours, "c_QuantizeLinear"));

    let config =
        QuantizeStaticConfig { nodes_to_include: vec!["conv.?2+".into()], ..Default::default() };
    let ours =
        quantize_qdq(model(nodes, vec![ramp("W", &[2, 2, 3, 3], 0.05)], 13), &ranges, &config)
            .unwrap();
    assert!(has_node(&ours, "a_QuantizeLinear") && has_node(&ours, "b_QuantizeLinear"));
    assert!(!has_node(&ours, "x_QuantizeLinear") && !has_node(&ours, "c_QuantizeLinear"));
}

#[test]
fn an_initializer_quantized_two_ways_is_copied() {
    // W is a MatMul weight (int8, symmetric) and an Add operand (quantized as an activation).
    let nodes = vec![
        ir::make_node("MatMul", &["x", "W"], &["y"], "matmul"),
        ir::make_node("Add", &["y", "W"], &["out"], "add"),
    ];
    let ranges = ranges(&[("x", -1.0, 1.0), ("y", -4.0, 4.0), ("out", -5.0, 5.0)]);
    let config = QuantizeStaticConfig {
        activation_type: IntegerType::Uint8,
        per_channel: true,
        ..Default::default()
    };

    let ours =
        quantize_qdq(model(nodes, vec![ramp("W", &[4, 4], 0.1)], 13), &ranges, &config).unwrap();

    assert_eq!(node(&ours, "matmul").input[1], "W_DequantizeLinear_Output");
    assert_eq!(node(&ours, "add").input[1], "W0_DequantizeLinear_Output");
    assert_eq!(floats(&ours, "W_scale").len(), 4, "the MatMul's copy is per channel");
    assert_eq!(
        ir::initializer(graph(&ours), "W_quantized").unwrap().data_type(),
        DataType::Int8 as i32
    );
    assert_eq!(
        ir::initializer(graph(&ours), "W0_quantized").unwrap().data_type(),
        DataType::Uint8 as i32
    );
}

#[test]
fn nothing_to_quantize_is_an_error() {
    let config = QuantizeStaticConfig { op_types: vec!["Reshape".into()], ..Default::default() };
    let err = quantize_qdq(conv_relu_conv(), &conv_relu_conv_ranges(), &config).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("nothing to quantize"), "{message}");
    assert!(message.contains("0 are of the types in `op_types`"), "{message}");

    let config = QuantizeStaticConfig { nodes_to_exclude: vec![".*".into()], ..Default::default() };
    let err = quantize_qdq(conv_relu_conv(), &conv_relu_conv_ranges(), &config).unwrap_err();
    assert!(err.to_string().contains("0 of those are selected"), "{err}");
}

#[test]
fn ranges_must_be_finite_and_present() {
    let mut bad = conv_relu_conv_ranges();
    bad.insert("r".into(), TensorRange { min: 0.0, max: f32::INFINITY });
    let err = quantize_qdq(conv_relu_conv(), &bad, &QuantizeStaticConfig::default()).unwrap_err();
    assert!(err.to_string().contains("tensor `r`") && err.to_string().contains("inf"), "{err}");

    let mut missing = conv_relu_conv_ranges();
    missing.remove("x");
    let err =
        quantize_qdq(conv_relu_conv(), &missing, &QuantizeStaticConfig::default()).unwrap_err();
    assert!(err.to_string().contains("tensor `x` has no calibrated range"), "{err}");
}

#[test]
fn opsets_are_checked_and_sixteen_bits_use_the_microsoft_domain() {
    let ranges = conv_relu_conv_ranges();
    let mut old = conv_relu_conv();
    old.opset_import[0].version = Some(9);
    let err = quantize_qdq(old, &ranges, &QuantizeStaticConfig::default()).unwrap_err();
    assert!(err.to_string().contains("opset 9") && err.to_string().contains("hint"), "{err}");

    let mut twelve = conv_relu_conv();
    twelve.opset_import[0].version = Some(12);
    let per_channel = QuantizeStaticConfig { per_channel: true, ..Default::default() };
    let err = quantize_qdq(twelve.clone(), &ranges, &per_channel).unwrap_err();
    assert!(err.to_string().contains("per-channel quantization needs opset 13"), "{err}");
    assert!(quantize_qdq(twelve, &ranges, &QuantizeStaticConfig::default()).is_ok());

    let sixteen =
        QuantizeStaticConfig { activation_type: IntegerType::Uint16, ..Default::default() };
    let ours = quantize_qdq(conv_relu_conv(), &ranges, &sixteen).unwrap();
    assert_eq!(node(&ours, "x_QuantizeLinear").domain(), "com.microsoft");
    assert_eq!(node(&ours, "W1_DequantizeLinear").domain(), "com.microsoft");
    assert_eq!(ir::opset_version(&ours, "com.microsoft"), Some(1));
    assert_eq!(
        ir::initializer(graph(&ours), "x_zero_point").unwrap().data_type(),
        DataType::Uint16 as i32
    );

    let mut new = conv_relu_conv();
    new.opset_import[0].version = Some(21);
    let ours = quantize_qdq(new, &ranges, &sixteen).unwrap();
    assert_eq!(node(&ours, "x_QuantizeLinear").domain(), "");
    assert_eq!(ir::opset_version(&ours, "com.microsoft"), None);
}

#[test]
fn configuration_is_checked() {
    let info = pass::find("quantize_static").expect("registered");
    assert_eq!(info.calibration, pass::CalibrationUse::Always);

    assert!((info.build)(&serde_json::json!({"format": "qoperator"})).is_ok());
    let err = (info.build)(&serde_json::json!({"format": "qlinear"})).err().unwrap();
    assert!(err.to_string().contains("unknown variant `qlinear`"), "{err}");
    let sixteen = serde_json::json!({"format": "qoperator", "activation_type": "uint16"});
    let err = (info.build)(&sixteen).err().unwrap();
    assert!(err.to_string().contains("`activation_type` is uint16"), "{err}");
    assert!(err.to_string().contains("use `format: qdq`"), "{err}");
    let mixed = serde_json::json!({"format": "qoperator", "weight_type": "uint8"});
    let err = (info.build)(&mixed).err().unwrap();
    assert!(err.to_string().contains("int8 activations with uint8 weights"), "{err}");
    let err = (info.build)(&serde_json::json!({"op_types": ["LSTM"]})).err().unwrap();
    assert!(err.to_string().contains("`LSTM`"), "{err}");
    let err = (info.build)(&serde_json::json!({"per_chanel": true})).err().unwrap();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err =
        (info.build)(&serde_json::json!({"calibration": "entropy", "num_bins": 8})).err().unwrap();
    assert!(err.to_string().contains("num_bins"), "{err}");

    let config: QuantizeStaticConfig = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(config, QuantizeStaticConfig::default());
    assert_eq!(config.activation_type, IntegerType::Int8);
    assert!(config.op_types.iter().any(|op| op == "Conv") && config.op_types.len() == 34);
}

/// A runner that hands out `[-(k + 1), k + 1] x scale` for the k-th requested tensor, in two
/// batches, and records what it was asked for.
struct ScriptedRunner {
    asked: Mutex<Vec<String>>,
}

impl ModelRunner for ScriptedRunner {
    fn samples(&self) -> usize {
        2
    }

    fn for_each_batch(
        &self,
        _model: &ModelProto,
        outputs: &[String],
        visit: &mut pipeline_passes::pass::BatchVisitor<'_>,
    ) -> Result<(), RunnerError> {
        *self.asked.lock().unwrap() = outputs.to_vec();
        for batch in 1..=2 {
            for index in 0..outputs.len() {
                let bound = (index + 1) as f32 * batch as f32 / 2.0;
                let values = ArrayD::from_shape_vec(IxDyn(&[2]), vec![-bound, bound]).unwrap();
                visit(index, values.view()).map_err(RunnerError)?;
            }
        }
        Ok(())
    }
}

#[test]
fn the_pass_calibrates_the_tensors_it_quantizes() {
    let pass = QuantizeStatic::new(QuantizeStaticConfig::default()).unwrap();
    let err = pass.run(conv_relu_conv(), &PassContext::default()).unwrap_err();
    assert!(err.to_string().contains("needs calibration data"), "{err}");

    let runner = ScriptedRunner { asked: Mutex::new(Vec::new()) };
    let context = PassContext { calibration: Some(&runner), ..PassContext::default() };
    let ours = pass.run(conv_relu_conv(), &context).unwrap();

    // The float inputs and outputs of the selected nodes, sorted by name; the extremes of
    // the second batch win: output k spans [-(k + 1), k + 1].
    assert_eq!(*runner.asked.lock().unwrap(), ["out", "r", "x", "y"]);
    assert_eq!(floats(&ours, "x_scale"), [6.0 / 255.0]);
    assert_eq!(ints(&ours, "x_zero_point"), [0]);
    assert!(!has_node(&ours, "relu"));
}

#[test]
fn new_names_never_collide_with_existing_ones() {
    // The Mul's operand is named as ORT names the scale of `x`, which breaks ORT's model.
    let mut model = conv_relu_conv();
    let graph = model.graph.as_mut().unwrap();
    graph.node[2].output[0] = "c".into();
    graph.node.push(ir::make_node("Mul", &["c", "x_scale"], &["out"], "mul"));
    graph.initializer.push(tensor("x_scale", &[1], &[3.0]));
    let mut ranges = conv_relu_conv_ranges();
    ranges.insert("c".into(), TensorRange { min: -1.0, max: 1.0 });

    let ours = quantize_qdq(model, &ranges, &QuantizeStaticConfig::default()).unwrap();

    assert_eq!(node(&ours, "x_QuantizeLinear").input, ["x", "x_scale_1", "x_zero_point"]);
    assert_eq!(floats(&ours, "x_scale_1"), [2.0 / 255.0]);
    assert_eq!(node(&ours, "mul").input[1], "x_scale_DequantizeLinear_Output");
    assert_eq!(node(&ours, "x_scale_DequantizeLinear").input[0], "x_scale_quantized");
}

#[test]
fn weights_must_be_finite() {
    let mut model = conv_relu_conv();
    let graph = model.graph.as_mut().unwrap();
    graph.initializer[0] = tensor("W1", &[2, 2, 3, 3], &[f32::NAN; 36]);

    let err = quantize_qdq(model, &conv_relu_conv_ranges(), &QuantizeStaticConfig::default())
        .unwrap_err();

    assert!(
        err.to_string().contains("initializer `W1`") && err.to_string().contains("NaN"),
        "{err}"
    );
}

fn qoperator(activation_type: IntegerType) -> QuantizeStaticConfig {
    QuantizeStaticConfig { format: QuantFormat::QOperator, activation_type, ..Default::default() }
}

#[test]
fn qoperator_rewrites_convs_and_drops_a_relu_its_input_already_clips() {
    let config = qoperator(IntegerType::Uint8);
    let ours = quantize_qoperator(conv_relu_conv(), &conv_relu_conv_ranges(), &config).unwrap();

    let ops: Vec<&str> = graph(&ours).node.iter().map(|n| n.op_type()).collect();
    assert_eq!(ops, ["QuantizeLinear", "QLinearConv", "QLinearConv", "DequantizeLinear"]);
    // conv1's output takes the Relu's range [0, 4], so its zero point is 0 and the Relu goes.
    assert_eq!(floats(&ours, "y_scale"), [4.0 / 255.0]);
    assert_eq!(ints(&ours, "y_zero_point"), [0]);
    assert_eq!(node(&ours, "conv2_quant").input[0], "y_quantized");
    assert_eq!(node(&ours, "out_DequantizeLinear").output, ["out"]);
    // The bias is int32 at x scale x W1 scale; conv2 has none.
    let bias_scale = f64::from(floats(&ours, "x_scale")[0] * floats(&ours, "W1_scale")[0]);
    let expected: Vec<i64> =
        [0.5f32, -0.25].iter().map(|&b| (f64::from(b) / bias_scale).round() as i64).collect();
    assert_eq!(ints(&ours, "B1_quantized"), expected);
    assert_eq!(node(&ours, "conv1_quant").input.len(), 9);
    assert_eq!(node(&ours, "conv2_quant").input.len(), 8);
}

#[test]
fn qoperator_keeps_a_relu_whose_input_keeps_negative_values() {
    let mut model = conv_relu_conv();
    let graph_mut = model.graph.as_mut().unwrap();
    graph_mut.node.push(ir::make_node("Add", &["y", "r"], &["extra"], "add"));
    graph_mut.output.push(float_value_info("extra", &[]));
    let mut ranges = conv_relu_conv_ranges();
    ranges.insert("extra".into(), TensorRange { min: -3.0, max: 8.0 });

    let ours = quantize_qoperator(model, &ranges, &qoperator(IntegerType::Uint8)).unwrap();

    // y keeps [-3, 4]; ORT would drop the Relu and hand `add` the negative values of y.
    assert_eq!(ints(&ours, "y_zero_point"), [109]);
    assert_eq!(node(&ours, "relu").input, ["y"]);
    assert_eq!(node(&ours, "y_DequantizeLinear").input[0], "y_quantized");
    assert_eq!(node(&ours, "add_quant").input[3], "r_quantized");
    assert_eq!(node(&ours, "r_QuantizeLinear").input[0], "r");
}

#[test]
fn qoperator_leaves_what_has_no_integer_form_in_float() {
    let config = QuantizeStaticConfig {
        op_types: vec!["ConvTranspose".into(), "Conv".into()],
        nodes_to_exclude: vec!["conv.".into()],
        ..qoperator(IntegerType::Uint8)
    };
    let err = quantize_qoperator(conv_relu_conv(), &conv_relu_conv_ranges(), &config).unwrap_err();
    assert!(err.to_string().contains("changed nothing"), "{err}");

    // Per channel needs no opset 13 here: QLinearConv takes per-channel scales at opset 10.
    let mut ten = conv_relu_conv();
    ten.opset_import[0].version = Some(10);
    let per_channel = QuantizeStaticConfig { per_channel: true, ..qoperator(IntegerType::Uint8) };
    let ours = quantize_qoperator(ten, &conv_relu_conv_ranges(), &per_channel).unwrap();
    assert_eq!(floats(&ours, "W1_scale").len(), 2, "one scale per output channel");
    let weights = ir::initializer(graph(&ours), "W1_quantized").unwrap();
    assert_eq!(weights.data_type(), DataType::Int8 as i32);
}
