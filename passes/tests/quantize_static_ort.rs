//! Acceptance test of `quantize_static` (QDQ and QOperator) against ONNX Runtime's own
//! `quantize_static`.
//!
//! Small float models are built here (an MLP, a Conv net with BatchNorm, Relu, Clip and
//! pooling, a residual block with Add, Gemms with and without `transB`, a MatMul with an
//! outlier column feeding data-movement operators, an operator zoo, and variants for
//! Constant/Cast weights, shared initializers and a bias too large for its scale), with
//! calibration samples, and the digits CNN of `examples/digits` is quantized with its own 128
//! calibration images. For each model, format and option set,
//! `scripts/reference/quantize_static.py quantize` runs ORT's tool (MinMax, the samples fed
//! one at a time) and dumps the ranges its calibrator found; our `quantize_qdq` or
//! `quantize_qoperator` rewrites the model from those same ranges. Then:
//! - every initializer of both models must be equal, bit for bit (scales, zero points,
//!   quantized weights, int32 biases, the float tensors left alone), under the same names;
//! - both must have the same nodes (type, name, inputs, outputs, attributes);
//! - `quantize_static.py compare` checks our model with onnx.checker, runs the float model,
//!   ORT's and ours on the samples, and our outputs must equal ORT's to float rounding.
//!
//! Where ORT's QOperator model computes something else than the float model (a bias shared by
//! two Convs, a Relu whose input has two readers, a Gemm with `alpha` and `beta`), the
//! differences that fix it are named in the case, and our outputs must be close to float
//! where ORT's are far.

#[path = "common/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use pipeline_passes::ir::shapes::Dim;
use pipeline_passes::ir::{self, float_value_info, SaveOptions};
use pipeline_passes::quantize::calibrate::TensorRange;
use pipeline_passes::quantize::static_quant::{
    quantize_qdq, quantize_qoperator, IntegerType, QuantFormat, QuantizeStaticConfig,
};
use rng::Rng;
use serde_json::{json, Value};

/// Our graph is ORT's graph with ORT's numbers, so the outputs agree to float rounding: at
/// most this share of the float output's range.
const MAX_DIFFERENCE_TO_ORT: f64 = 1e-6;

/// Where ORT's model is wrong (see `Case::ort_bug`), ours may be at most this much farther
/// from float than ORT's: the bug's effect is small on these models, so ours is about as close.
const MAX_FACTOR_OVER_WRONG_ORT: f64 = 1.5;

/// And there ours must stay within this share of the float output's range, which ORT's wrong
/// models miss by far (16% and 36% on `relu_two_readers` and `gemm_alpha_beta`).
const MAX_ERROR_SHARE_WHERE_ORT_IS_WRONG: f64 = 0.02;

/// A sanity bound on quantization error, as a share of the float output's range: far above
/// what 8-bit quantization of these small models costs, far below a wrong model.
const MAX_ERROR_SHARE_OF_RANGE: f64 = 0.2;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("passes/ has a parent").to_path_buf()
}

fn python() -> PathBuf {
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-env.sh to create the test environment",
        python.display()
    );
    python
}

/// A float model under construction.
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    rng: Rng,
}

impl Builder {
    fn new(seed: u64) -> Self {
        Builder {
            nodes: vec![],
            initializers: vec![],
            inputs: vec![],
            outputs: vec![],
            rng: Rng::new(seed),
        }
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, name: &str) -> &mut NodeProto {
        self.nodes.push(ir::make_node(op, inputs, &[output], name));
        self.nodes.last_mut().expect("just pushed")
    }

    fn weight(&mut self, name: &str, shape: &[usize], scale: f64) -> ArrayD<f32> {
        let values = self.rng.normal_array(shape, scale);
        self.initializers.push(ir::tensor_from_f32(name, &values));
        values
    }

    fn constant(&mut self, name: &str, values: ArrayD<f32>) {
        self.initializers.push(ir::tensor_from_f32(name, &values));
    }

    fn model(self, name: &str, opset: i64) -> ModelProto {
        let graph = GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("quantize_static test".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            graph: Some(graph),
            ..Default::default()
        }
    }
}

fn scalar(value: f32) -> ArrayD<f32> {
    ArrayD::from_elem(IxDyn(&[]), value)
}

/// `x [1,16] -> MatMul -> Add -> Relu -> MatMul -> Add -> Softmax`.
fn mlp(seed: u64) -> ModelProto {
    let mut b = Builder::new(seed);
    b.weight("W1", &[16, 32], 0.3);
    b.weight("b1", &[32], 0.1);
    b.weight("W2", &[32, 10], 0.3);
    b.weight("b2", &[10], 0.1);
    b.node("MatMul", &["x", "W1"], "h1", "mm1");
    b.node("Add", &["h1", "b1"], "h1b", "add1");
    b.node("Relu", &["h1b"], "h1r", "relu1");
    b.node("MatMul", &["h1r", "W2"], "h2", "mm2");
    b.node("Add", &["h2", "b2"], "logits", "add2");
    b.node("Softmax", &["logits"], "probs", "softmax");
    b.inputs.push(float_value_info("x", &[1, 16]));
    b.outputs.push(float_value_info("probs", &[1, 10]));
    b.model("mlp", 13)
}

/// The MLP with `W1` in a Constant node and `W2` a Cast of a float16 initializer, and the
/// same model with both as float32 initializers (what ORT is given).
fn mlp_with_constant_weights() -> (ModelProto, ModelProto) {
    let folded = mlp(11);
    let mut ours = folded.clone();
    let graph = ours.graph.as_mut().expect("a graph");

    let w1 = ir::initializer(graph, "W1").expect("W1").clone();
    let w2 = ir::tensor_to_f32(ir::initializer(graph, "W2").expect("W2")).expect("W2 is float");
    graph.initializer.retain(|t| t.name() != "W1" && t.name() != "W2");

    let mut constant = ir::make_node("Constant", &[], &["W1"], "w1_constant");
    constant.attribute.push(ir::attr_tensor("value", TensorProto { name: None, ..w1 }));
    let mut cast = ir::make_node("Cast", &["W2_f16"], &["W2"], "w2_cast");
    cast.attribute.push(ir::attr_int("to", DataType::Float as i64));
    let halves: Vec<u8> = w2.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    graph.initializer.push(TensorProto {
        name: Some("W2_f16".into()),
        dims: vec![32, 10],
        data_type: Some(DataType::Float16 as i32),
        raw_data: Some(halves.into()),
        ..Default::default()
    });
    graph.node.splice(0..0, [constant, cast]);

    // ORT gets W2 as the float32 values the Cast produces.
    let mut folded = folded;
    let graph = folded.graph.as_mut().expect("a graph");
    let rounded = w2.mapv(|v| half::f16::from_f32(v).to_f32());
    for tensor in &mut graph.initializer {
        if tensor.name() == "W2" {
            *tensor = ir::tensor_from_f32("W2", &rounded);
        }
    }
    (ours, folded)
}

/// `x [1,3,8,8] -> Conv -> BatchNorm -> Relu -> MaxPool -> Conv -> Clip(0, 6) ->
/// GlobalAveragePool -> Flatten -> Gemm`.
fn convnet(opset: i64) -> ModelProto {
    let mut b = Builder::new(3);
    b.weight("W1", &[8, 3, 3, 3], 0.3);
    b.weight("B1", &[8], 0.1);
    let scale = b.rng.array(&[8], |r| 0.5 + r.uniform());
    b.constant("bn_scale", scale);
    b.weight("bn_bias", &[8], 0.1);
    b.weight("bn_mean", &[8], 0.1);
    let var = b.rng.array(&[8], |r| 0.5 + r.uniform());
    b.constant("bn_var", var);
    b.weight("W2", &[16, 8, 3, 3], 0.2);
    b.weight("B2", &[16], 0.1);
    b.constant("clip_min", scalar(0.0));
    b.constant("clip_max", scalar(6.0));
    b.weight("Wf", &[16, 10], 0.3);
    b.weight("Bf", &[10], 0.1);

    b.node("Conv", &["x", "W1", "B1"], "c1", "conv1")
        .attribute
        .push(ir::attr_ints("pads", &[1; 4]));
    b.node("BatchNormalization", &["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], "n1", "bn1");
    b.node("Relu", &["n1"], "r1", "relu1");
    let pool = b.node("MaxPool", &["r1"], "p1", "pool1");
    pool.attribute.push(ir::attr_ints("kernel_shape", &[2, 2]));
    pool.attribute.push(ir::attr_ints("strides", &[2, 2]));
    b.node("Conv", &["p1", "W2", "B2"], "c2", "conv2")
        .attribute
        .push(ir::attr_ints("pads", &[1; 4]));
    b.node("Clip", &["c2", "clip_min", "clip_max"], "r2", "clip2");
    b.node("GlobalAveragePool", &["r2"], "g", "gap");
    b.node("Flatten", &["g"], "f", "flatten");
    b.node("Gemm", &["f", "Wf", "Bf"], "logits", "fc");
    b.inputs.push(float_value_info("x", &[1, 3, 8, 8]));
    b.outputs.push(float_value_info("logits", &[1, 10]));
    b.model("convnet", opset)
}

/// `x -> Conv -> Relu -> Conv -> Add(x) -> Relu -> out`: the last Relu folds into the Add,
/// whose output is then the graph output.
fn residual(opset: i64) -> ModelProto {
    let mut b = Builder::new(5);
    b.weight("W1", &[4, 4, 3, 3], 0.3);
    b.weight("B1", &[4], 0.1);
    b.weight("W2", &[4, 4, 3, 3], 0.3);
    b.weight("B2", &[4], 0.1);
    b.node("Conv", &["x", "W1", "B1"], "c1", "conv1")
        .attribute
        .push(ir::attr_ints("pads", &[1; 4]));
    b.node("Relu", &["c1"], "r1", "relu1");
    b.node("Conv", &["r1", "W2", "B2"], "c2", "conv2")
        .attribute
        .push(ir::attr_ints("pads", &[1; 4]));
    b.node("Add", &["c2", "x"], "sum", "add");
    b.node("Relu", &["sum"], "out", "relu2");
    b.inputs.push(float_value_info("x", &[1, 4, 6, 6]));
    b.outputs.push(float_value_info("out", &[1, 4, 6, 6]));
    b.model("residual", opset)
}

/// `x [2,12] -> Gemm(transB = 1) -> Sigmoid -> Gemm -> out`.
fn gemms(opset: i64) -> ModelProto {
    let mut b = Builder::new(9);
    b.weight("B1", &[8, 12], 0.3);
    b.weight("C1", &[8], 0.1);
    b.weight("B2", &[8, 6], 0.3);
    b.weight("C2", &[6], 0.1);
    b.node("Gemm", &["x", "B1", "C1"], "g1", "gemm1").attribute.push(ir::attr_int("transB", 1));
    b.node("Sigmoid", &["g1"], "s1", "sigmoid");
    b.node("Gemm", &["s1", "B2", "C2"], "out", "gemm2");
    b.inputs.push(float_value_info("x", &[2, 12]));
    b.outputs.push(float_value_info("out", &[2, 6]));
    b.model("gemms", opset)
}

/// `x [4,32]` through a MatMul whose column 3 is 100 times larger than the rest and a second
/// MatMul, concatenated, reshaped, transposed and scaled.
fn outlier() -> ModelProto {
    let mut b = Builder::new(13);
    let mut w = b.rng.normal_array(&[32, 16], 0.2);
    w.slice_mut(ndarray::s![.., 3]).mapv_inplace(|v| 100.0 * v);
    b.constant("W", w);
    b.weight("W2", &[32, 4], 0.2);
    let shape = ArrayD::from_shape_vec(IxDyn(&[3]), vec![4i64, 4, 5]).expect("a shape");
    b.initializers.push(ir::tensor_from_i64("shape", &shape));
    b.constant("k", scalar(0.5));
    b.node("MatMul", &["x", "W"], "y1", "mm_outlier");
    b.node("MatMul", &["x", "W2"], "y2", "mm_small");
    b.node("Concat", &["y1", "y2"], "cat", "concat").attribute.push(ir::attr_int("axis", 1));
    b.node("Reshape", &["cat", "shape"], "rs", "reshape");
    b.node("Transpose", &["rs"], "tr", "transpose")
        .attribute
        .push(ir::attr_ints("perm", &[0, 2, 1]));
    b.node("Mul", &["tr", "k"], "out", "scale");
    b.inputs.push(float_value_info("x", &[4, 32]));
    b.outputs.push(float_value_info("out", &[4, 5, 4]));
    b.model("outlier", 13)
}

/// Two Convs sharing their weight and their bias.
fn shared_initializers() -> ModelProto {
    let mut b = Builder::new(17);
    b.weight("W", &[4, 4, 3, 3], 0.3);
    b.weight("B", &[4], 0.1);
    b.node("Conv", &["x", "W", "B"], "y1", "conv1").attribute.push(ir::attr_ints("pads", &[1; 4]));
    b.node("Conv", &["y1", "W", "B"], "out", "conv2")
        .attribute
        .push(ir::attr_ints("pads", &[1; 4]));
    b.inputs.push(float_value_info("x", &[1, 4, 5, 5]));
    b.outputs.push(float_value_info("out", &[1, 4, 5, 5]));
    b.model("shared", 13)
}

/// A Gemm with tiny weights and a large bias: `input scale x weight scale` cannot hold the
/// bias in int32, so the weight's scale is widened.
fn big_bias() -> ModelProto {
    let mut b = Builder::new(19);
    b.weight("W", &[12, 6], 1e-7);
    b.weight("C", &[6], 1e4);
    b.node("Gemm", &["x", "W", "C"], "out", "gemm");
    b.inputs.push(float_value_info("x", &[2, 12]));
    b.outputs.push(float_value_info("out", &[2, 6]));
    b.model("big_bias", 13)
}

/// `x -> Conv -> c`, then `Add(c, Relu(c))`: the Relu's input has a second reader, so its
/// quantization keeps the negative values the Relu must cut.
fn relu_with_two_readers() -> ModelProto {
    let mut b = Builder::new(29);
    b.weight("W", &[4, 4, 3, 3], 0.3);
    b.weight("B", &[4], 0.1);
    b.node("Conv", &["x", "W", "B"], "c", "conv").attribute.push(ir::attr_ints("pads", &[1; 4]));
    b.node("Relu", &["c"], "r", "relu");
    b.node("Add", &["c", "r"], "out", "add");
    b.inputs.push(float_value_info("x", &[1, 4, 5, 5]));
    b.outputs.push(float_value_info("out", &[1, 4, 5, 5]));
    b.model("relu_two_readers", 13)
}

/// A Gemm with `alpha = 0.5` and `beta = 2`, whose bias QGemm adds before scaling by alpha.
fn gemm_alpha_beta() -> ModelProto {
    let mut b = Builder::new(31);
    b.weight("W", &[12, 6], 0.3);
    b.weight("C", &[6], 1.0);
    let gemm = b.node("Gemm", &["x", "W", "C"], "out", "gemm");
    gemm.attribute.push(ir::attr_float("alpha", 0.5));
    gemm.attribute.push(ir::attr_float("beta", 2.0));
    b.inputs.push(float_value_info("x", &[2, 12]));
    b.outputs.push(float_value_info("out", &[2, 6]));
    b.model("gemm_alpha_beta", 13)
}

fn ints(name: &str, values: &[i64]) -> TensorProto {
    let array = ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).expect("a vector");
    ir::tensor_from_i64(name, &array)
}

/// The rest of the operator table in one opset-17 graph: ConvTranspose, InstanceNorm,
/// LeakyRelu, Pad (zero, reflect and 0.5), AveragePool, Resize, Slice, Split, Squeeze,
/// Unsqueeze, Concat, Reshape, LayerNorm, Sigmoid, Where, Gather (of an activation and of a
/// table), GatherElements, TopK, ArgMax, Softmax and CumSum.
fn operator_zoo() -> ModelProto {
    let mut b = Builder::new(23);
    b.weight("Wt", &[4, 3, 3, 3], 0.3);
    b.weight("Bt", &[3], 0.1);
    let scale = b.rng.array(&[3], |r| 0.5 + r.uniform());
    b.constant("inorm_scale", scale);
    b.weight("inorm_bias", &[3], 0.1);
    b.initializers.push(ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]));
    b.constant("half", scalar(0.5));
    b.constant(
        "resize_scales",
        ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0, 1.0, 2.0, 2.0]).expect("4"),
    );
    b.initializers.push(ints("starts", &[0]));
    b.initializers.push(ints("ends", &[12]));
    b.initializers.push(ints("axes3", &[3]));
    b.initializers.push(ints("split", &[1, 2]));
    b.initializers.push(ints("axes1", &[1]));
    b.initializers.push(ints("shape", &[1, 3, 168]));
    let gamma = b.rng.array(&[168], |r| 0.5 + r.uniform());
    b.constant("gamma", gamma);
    b.weight("beta", &[168], 0.1);
    b.initializers.push(ints("pick", &[0, 2]));
    b.weight("table", &[10, 5], 1.0);
    b.initializers.push(ints("ids", &[1, 3, 3]));
    b.initializers.push(ints("k", &[3]));
    let elements =
        ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![0i64, 5, 9, 167, 1, 1]).expect("6");
    b.initializers.push(ir::tensor_from_i64("elements", &elements));
    let axis = ArrayD::from_shape_vec(IxDyn(&[]), vec![2i64]).expect("a scalar");
    b.initializers.push(ir::tensor_from_i64("cumsum_axis", &axis));

    b.node("ConvTranspose", &["x", "Wt", "Bt"], "ct", "conv_transpose");
    b.node("InstanceNormalization", &["ct", "inorm_scale", "inorm_bias"], "in", "instance_norm");
    b.node("LeakyRelu", &["in"], "lr", "leaky_relu");
    b.node("Pad", &["lr", "pads"], "pd", "pad_zero");
    let pool = b.node("AveragePool", &["pd"], "ap", "average_pool");
    pool.attribute.push(ir::attr_ints("kernel_shape", &[2, 2]));
    pool.attribute.push(ir::attr_ints("strides", &[2, 2]));
    b.node("Resize", &["ap", "", "resize_scales"], "rz", "resize");
    b.node("Pad", &["rz", "pads"], "pr", "pad_reflect")
        .attribute
        .push(ir::attr_string("mode", "reflect"));
    b.node("Pad", &["pr", "pads", "half"], "ph", "pad_half");
    b.node("Slice", &["ph", "starts", "ends", "axes3"], "sl", "slice");
    b.nodes.push(ir::make_node("Split", &["sl", "split"], &["s1", "s2"], "split"));
    b.nodes.last_mut().expect("split").attribute.push(ir::attr_int("axis", 1));
    b.node("Squeeze", &["s1", "axes1"], "sq", "squeeze");
    b.node("Unsqueeze", &["sq", "axes1"], "us", "unsqueeze");
    b.node("Concat", &["us", "s2"], "cc", "concat").attribute.push(ir::attr_int("axis", 1));
    b.node("Reshape", &["cc", "shape"], "rs", "reshape");
    b.node("LayerNormalization", &["rs", "gamma", "beta"], "ln", "layer_norm");
    b.node("Sigmoid", &["ln"], "sg", "sigmoid");
    b.node("Greater", &["sg", "half"], "cond", "greater");
    b.node("Where", &["cond", "sg", "ln"], "wh", "where");
    b.node("Gather", &["wh", "pick"], "ga", "gather_values")
        .attribute
        .push(ir::attr_int("axis", 1));
    b.node("Gather", &["table", "ids"], "rows", "gather_table");
    b.node("GatherElements", &["ga", "elements"], "ge", "gather_elements")
        .attribute
        .push(ir::attr_int("axis", 2));
    b.nodes.push(ir::make_node("TopK", &["ga", "k"], &["top", "top_index"], "top_k"));
    b.node("ArgMax", &["ga"], "best", "arg_max").attribute.push(ir::attr_int("axis", 2));
    b.node("Softmax", &["ga"], "soft", "softmax");
    b.node("CumSum", &["ga", "cumsum_axis"], "sums", "cum_sum");

    b.inputs.push(float_value_info("x", &[1, 4, 6, 6]));
    for (name, dims) in
        [("rows", &[3, 5][..]), ("ge", &[1, 2, 3]), ("top", &[1, 2, 3]), ("soft", &[1, 2, 168])]
    {
        b.outputs.push(float_value_info(name, dims));
    }
    b.outputs.push(float_value_info("sums", &[1, 2, 168]));
    let best = [Dim::Known(1), Dim::Known(2), Dim::Known(1)];
    b.outputs.push(ir::tensor_value_info("best", DataType::Int64 as i32, Some(&best)));
    b.model("operator_zoo", 17)
}

/// The operator zoo with the padding value of `pad_half` in an initializer of its own: ORT's
/// QOperator writer deletes the Pad's constant once it has quantized it, and fails on its own
/// model when another node (here `greater`) reads it too. Ours keeps it for that reader.
fn operator_zoo_own_pad_value() -> ModelProto {
    let mut model = operator_zoo();
    let graph = model.graph.as_mut().expect("a graph");
    graph.initializer.push(ir::tensor_from_f32("pad_value", &scalar(0.5)));
    let pad = graph.node.iter_mut().find(|n| n.name() == "pad_half").expect("pad_half");
    pad.input[2] = "pad_value".into();
    model
}

/// The digits CNN of `examples/digits` (Conv, Relu, MaxPool, Flatten, Gemm), opset 17, with a
/// symbolic batch dimension.
fn digits() -> ModelProto {
    ir::load(&workspace().join("examples/digits/model.onnx")).expect("the digits model loads")
}

/// One model quantized with one option set.
struct Case {
    name: String,
    /// An .npz of calibration samples to use instead of generated ones.
    npz: Option<PathBuf>,
    /// The model ORT quantizes.
    float: ModelProto,
    /// The model our pass quantizes, when it differs (Constant and Cast weights).
    ours: Option<ModelProto>,
    config: QuantizeStaticConfig,
    /// Node names to give ORT for `nodes_to_exclude` and `nodes_to_include`, where ours are
    /// regular expressions.
    ort_exclude: Option<Vec<String>>,
    ort_include: Option<Vec<String>>,
    /// Our Q/DQ nodes are in `com.microsoft` where ORT raised the opset to 21 instead.
    microsoft_domain: bool,
    /// Where ORT's model is wrong and ours differs on purpose: problems that name one of
    /// these are expected, and our outputs must be as close to float as ORT's instead of
    /// equal to them.
    ort_bug: &'static [&'static str],
}

fn case(name: &str, float: ModelProto, config: QuantizeStaticConfig) -> Case {
    Case {
        name: name.into(),
        npz: None,
        float,
        ours: None,
        config,
        ort_exclude: None,
        ort_include: None,
        microsoft_domain: false,
        ort_bug: &[],
    }
}

fn options(config: &QuantizeStaticConfig) -> Vec<(&'static str, QuantizeStaticConfig)> {
    let default = config.clone();
    let per_channel = QuantizeStaticConfig { per_channel: true, ..config.clone() };
    let cpu = QuantizeStaticConfig {
        activation_type: IntegerType::Uint8,
        per_channel: true,
        reduce_range: true,
        ..config.clone()
    };
    let unsigned = QuantizeStaticConfig {
        activation_type: IntegerType::Uint8,
        weight_type: IntegerType::Uint8,
        reduce_range: true,
        ..config.clone()
    };
    let symmetric = QuantizeStaticConfig {
        activation_symmetric: true,
        weight_symmetric: Some(false),
        ..config.clone()
    };
    vec![
        ("default", default),
        ("per_channel", per_channel),
        ("u8s8_reduce_per_channel", cpu),
        ("u8u8_reduce", unsigned),
        ("symmetric_activations", symmetric),
    ]
}

/// The small models every format is checked on with every option set.
fn small_models() -> Vec<(&'static str, ModelProto)> {
    vec![
        ("mlp", mlp(1)),
        ("convnet", convnet(13)),
        ("residual", residual(13)),
        ("gemms", gemms(13)),
        ("outlier", outlier()),
    ]
}

fn cases() -> Vec<Case> {
    let base = QuantizeStaticConfig::default();
    let mut cases = Vec::new();
    for (model_name, model) in small_models() {
        for (option_name, config) in options(&base) {
            cases.push(case(&format!("{model_name}/{option_name}"), model.clone(), config));
        }
    }

    let int16 = QuantizeStaticConfig { activation_type: IntegerType::Int16, ..base.clone() };
    for (name, model) in [("mlp", mlp(1)), ("residual", residual(13))] {
        let mut c = case(&format!("{name}/int16_activations_opset13"), model, int16.clone());
        c.microsoft_domain = true;
        cases.push(c);
    }
    let sixteen = QuantizeStaticConfig {
        activation_type: IntegerType::Uint16,
        weight_type: IntegerType::Int16,
        per_channel: true,
        ..base.clone()
    };
    cases.push(case("convnet/u16s16_per_channel_opset21", convnet(21), sixteen.clone()));
    cases.push(case("gemms/u16s16_per_channel_opset21", gemms(21), sixteen));

    let excluded = QuantizeStaticConfig {
        nodes_to_exclude: vec!["conv(2|9)".into(), "f.".into(), "absent_node".into()],
        ..base.clone()
    };
    let mut c = case("convnet/exclude_regex", convnet(13), excluded);
    c.ort_exclude = Some(vec!["conv2".into(), "fc".into()]);
    cases.push(c);
    let included = QuantizeStaticConfig {
        nodes_to_include: vec!["mm_.*".into(), "concat".into()],
        per_channel: true,
        ..base.clone()
    };
    let mut c = case("outlier/include_regex", outlier(), included);
    c.ort_include = Some(vec!["mm_outlier".into(), "mm_small".into(), "concat".into()]);
    cases.push(c);
    let some_ops = QuantizeStaticConfig {
        op_types: vec!["Conv".into(), "MaxPool".into(), "Gemm".into()],
        ..base.clone()
    };
    cases.push(case("convnet/conv_maxpool_gemm_only", convnet(13), some_ops));

    for (option_name, config) in options(&base).into_iter().take(4) {
        cases.push(case(&format!("operator_zoo/{option_name}"), operator_zoo(), config));
    }
    for (option_name, config) in options(&base) {
        let mut c = case(&format!("digits/{option_name}"), digits(), config);
        c.npz = Some(workspace().join("examples/digits/calib.npz"));
        cases.push(c);
    }

    let (ours, folded) = mlp_with_constant_weights();
    for (option_name, config) in options(&base).into_iter().take(2) {
        let mut c = case(&format!("constant_weights/{option_name}"), folded.clone(), config);
        c.ours = Some(ours.clone());
        cases.push(c);
    }
    for (option_name, config) in options(&base).into_iter().take(3) {
        cases.push(case(&format!("shared/{option_name}"), shared_initializers(), config.clone()));
        cases.push(case(&format!("big_bias/{option_name}"), big_bias(), config));
    }
    cases.extend(qoperator_cases());
    cases
}

/// The same models in the QOperator format, with each 8-bit option set.
fn qoperator_cases() -> Vec<Case> {
    let base = QuantizeStaticConfig { format: QuantFormat::QOperator, ..Default::default() };
    let mut models = small_models();
    models.extend([
        ("operator_zoo", operator_zoo_own_pad_value()),
        ("shared", shared_initializers()),
        ("big_bias", big_bias()),
        ("digits", digits()),
    ]);
    let mut cases = Vec::new();
    for (model_name, model) in models {
        for (option_name, config) in options(&base) {
            let mut c =
                case(&format!("qoperator/{model_name}/{option_name}"), model.clone(), config);
            if model_name == "digits" {
                c.npz = Some(workspace().join("examples/digits/calib.npz"));
            }
            // ORT gives the second Conv the int32 bias it made at the first Conv's input
            // scale; ours has its own copy at its own scale.
            if model_name == "shared" {
                c.ort_bug = &["B_quantized_1", "|conv2_quant|"];
            }
            cases.push(c);
        }
    }
    let excluded = QuantizeStaticConfig {
        nodes_to_exclude: vec!["conv(2|9)".into(), "f.".into()],
        ..base.clone()
    };
    let mut c = case("qoperator/convnet/exclude_regex", convnet(13), excluded);
    c.ort_exclude = Some(vec!["conv2".into(), "fc".into()]);
    cases.push(c);
    // ORT drops the Relu and adds `c` to itself; ours runs the Relu in float.
    let mut c = case("qoperator/relu_two_readers/default", relu_with_two_readers(), base.clone());
    c.ort_bug = &["`r_", "|relu|", "c_DequantizeLinear", "r_QuantizeLinear", "|add_quant|"];
    cases.push(c);
    // ORT divides the bias by beta and leaves out alpha; ours makes QGemm add `beta x C`.
    let mut c = case("qoperator/gemm_alpha_beta/default", gemm_alpha_beta(), base.clone());
    c.ort_bug = &["`C_quantized` differs"];
    cases.push(c);
    let (ours, folded) = mlp_with_constant_weights();
    let mut c = case("qoperator/constant_weights/default", folded, base);
    c.ours = Some(ours);
    cases.push(c);
    cases
}

/// Writes `count` samples for each graph input into `dir` and returns the spec file.
fn write_samples(dir: &Path, model: &ModelProto, count: usize, seed: u64) -> PathBuf {
    let graph = model.graph.as_ref().expect("a graph");
    let mut rng = Rng::new(seed);
    let mut inputs = Vec::new();
    for input in &graph.input {
        let dims = ir::declared_type(input)
            .and_then(|t| t.dims)
            .unwrap_or_else(|| panic!("input `{}` is not a tensor of known rank", input.name()));
        let shape: Vec<usize> = dims
            .iter()
            .map(|d| match d {
                Dim::Known(size) => *size as usize,
                _ => panic!("input `{}` has a symbolic dimension", input.name()),
            })
            .collect();
        let mut bytes = Vec::new();
        for _ in 0..count {
            let sample = rng.array(&shape, |r| 1.5 * r.normal() + 0.25);
            bytes.extend(sample.iter().flat_map(|v| v.to_le_bytes()));
        }
        let file = format!("{}.f32", input.name());
        std::fs::write(dir.join(&file), bytes).expect("samples are written");
        inputs.push(json!({"name": input.name(), "shape": shape, "file": file}));
    }
    let spec = dir.join("samples.json");
    let text = json!({"count": count, "inputs": inputs}).to_string();
    std::fs::write(&spec, text).expect("the sample spec is written");
    spec
}

fn job(dir: &Path, case: &Case, samples: &Path) -> Value {
    let config = &case.config;
    let integer = |t: IntegerType| format!("{t:?}").to_lowercase();
    json!({
        "dir": dir,
        "float": dir.join("float.onnx"),
        "samples": samples,
        "options": {
            "format": match config.format {
                QuantFormat::Qdq => "qdq",
                QuantFormat::QOperator => "qoperator",
            },
            "per_channel": config.per_channel,
            "reduce_range": config.reduce_range,
            "activation_type": integer(config.activation_type),
            "weight_type": integer(config.weight_type),
            "activation_symmetric": config.activation_symmetric,
            "weight_symmetric": config.weight_symmetric,
            "op_types": config.op_types,
            "nodes_to_exclude": case.ort_exclude.clone().unwrap_or(config.nodes_to_exclude.clone()),
            "nodes_to_include": case.ort_include.clone().unwrap_or(config.nodes_to_include.clone()),
        },
    })
}

fn run_script(step: &str, jobs: &Path) {
    let output = Command::new(python())
        .arg(workspace().join("scripts/reference/quantize_static.py"))
        .arg(step)
        .arg(jobs)
        .output()
        .expect("the reference script starts");
    assert!(
        output.status.success(),
        "the reference script failed at `{step}`:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the file is JSON")
}

fn ranges(path: &Path) -> BTreeMap<String, TensorRange> {
    let bits = |v: &Value| f32::from_bits(v.as_u64().expect("bits") as u32);
    read_json(path)
        .as_object()
        .expect("ranges are an object")
        .iter()
        .map(|(name, pair)| {
            (name.clone(), TensorRange { min: bits(&pair[0]), max: bits(&pair[1]) })
        })
        .collect()
}

/// A node as compared: domain, type, name, inputs, outputs, attributes by name.
fn node_key(node: &NodeProto, q_dq_domain_as_default: bool) -> String {
    let mut domain = node.domain().to_string();
    let is_q_dq = matches!(node.op_type(), "QuantizeLinear" | "DequantizeLinear");
    if q_dq_domain_as_default && is_q_dq && domain == "com.microsoft" {
        domain.clear();
    }
    let mut attributes: Vec<&AttributeProto> = node.attribute.iter().collect();
    attributes.sort_by(|a, b| a.name().cmp(b.name()));
    let attributes: Vec<String> = attributes
        .iter()
        .map(|a| {
            format!(
                "{}={:?}/{:?}/{:?}/{:?}/{:?}",
                a.name(),
                a.i,
                a.f.map(f32::to_bits),
                a.ints,
                a.s,
                a.floats.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
            )
        })
        .collect();
    format!(
        "{domain}|{}|{}|{:?}|{:?}|{attributes:?}",
        node.op_type(),
        node.name(),
        node.input,
        node.output
    )
}

/// An initializer as compared: type, dimensions, values (floats by their bits).
fn initializer_key(tensor: &TensorProto) -> String {
    let values = if tensor.data_type() == DataType::Float as i32 {
        let floats = ir::tensor_to_f32(tensor).expect("a float tensor reads");
        format!("{:?}", floats.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    } else {
        let ints = ir::tensor_to_i64(tensor)
            .unwrap_or_else(|e| panic!("initializer `{}` does not read: {e}", tensor.name()));
        format!("{:?}", ints.iter().collect::<Vec<_>>())
    };
    format!("{}|{:?}|{values}", ir::data_type_name(tensor.data_type()), tensor.dims)
}

/// Everything that differs between our model and ORT's, as readable lines.
fn differences(case: &Case, ours: &ModelProto, theirs: &ModelProto) -> Vec<String> {
    let (ours, theirs) =
        (ours.graph.as_ref().expect("ours"), theirs.graph.as_ref().expect("ORT's"));
    let mut problems = Vec::new();

    let ours_inits: BTreeMap<&str, String> =
        ours.initializer.iter().map(|t| (t.name(), initializer_key(t))).collect();
    let their_inits: BTreeMap<&str, String> =
        theirs.initializer.iter().map(|t| (t.name(), initializer_key(t))).collect();
    for (name, theirs) in &their_inits {
        match ours_inits.get(name) {
            None => problems.push(format!("initializer `{name}` is missing from ours")),
            Some(ours) if ours != theirs => problems.push(format!(
                "initializer `{name}` differs:\n  ours {}\n  ORT  {}",
                clip(ours),
                clip(theirs)
            )),
            Some(_) => {}
        }
    }
    for name in ours_inits.keys().filter(|n| !their_inits.contains_key(*n)) {
        problems.push(format!("initializer `{name}` is ours only"));
    }

    let mut ours_nodes: Vec<String> =
        ours.node.iter().map(|n| node_key(n, case.microsoft_domain)).collect();
    let mut their_nodes: Vec<String> = theirs.node.iter().map(|n| node_key(n, false)).collect();
    ours_nodes.sort();
    their_nodes.sort();
    for node in ours_nodes.iter().filter(|n| !their_nodes.contains(n)) {
        problems.push(format!("node only in ours: {node}"));
    }
    for node in their_nodes.iter().filter(|n| !ours_nodes.contains(n)) {
        problems.push(format!("node only in ORT's: {node}"));
    }

    let names =
        |values: &[ValueInfoProto]| values.iter().map(|v| v.name().to_string()).collect::<Vec<_>>();
    if names(&ours.output) != names(&theirs.output) {
        problems.push(format!(
            "outputs differ: {:?} / {:?}",
            names(&ours.output),
            names(&theirs.output)
        ));
    }
    problems
}

fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

#[test]
fn quantize_static_matches_ort_bit_for_bit() {
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let root = temporary.path();
    let cases = cases();

    let mut jobs = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let dir = root.join(format!("{index:02}"));
        std::fs::create_dir_all(&dir).expect("a job folder");
        ir::save(&case.float, &dir.join("float.onnx"), &SaveOptions::default())
            .expect("the float model saves");
        let samples = match &case.npz {
            Some(npz) => {
                let spec = dir.join("samples.json");
                std::fs::write(&spec, json!({ "npz": npz }).to_string()).expect("a spec");
                spec
            }
            None => write_samples(&dir, &case.float, 8, 100 + index as u64),
        };
        jobs.push(job(&dir, case, &samples));
    }
    let jobs_path = root.join("jobs.json");
    std::fs::write(&jobs_path, Value::Array(jobs.clone()).to_string()).expect("jobs are written");
    run_script("quantize", &jobs_path);

    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let dir = root.join(format!("{index:02}"));
        let ranges = ranges(&dir.join("ranges.json"));
        assert!(!ranges.is_empty(), "{}: ORT calibrated nothing", case.name);
        let ort_error = std::fs::read_to_string(dir.join("ort_error.txt")).ok();
        if let Some(error) = &ort_error {
            failures.push(format!("{}: ORT's tool failed: {error}", case.name));
        }

        let input = case.ours.clone().unwrap_or_else(|| case.float.clone());
        let quantized = match case.config.format {
            QuantFormat::Qdq => quantize_qdq(input, &ranges, &case.config),
            QuantFormat::QOperator => quantize_qoperator(input, &ranges, &case.config),
        };
        let ours = match quantized {
            Ok(model) => model,
            Err(e) => {
                failures.push(format!("{}: our pass failed: {e}", case.name));
                continue;
            }
        };
        ir::save(&ours, &dir.join("ours.onnx"), &SaveOptions::default()).expect("ours saves");

        // Each format's own operators, so that no case passes by quantizing nothing.
        let integer = |n: &&NodeProto| match case.config.format {
            QuantFormat::Qdq => n.op_type() == "DequantizeLinear",
            QuantFormat::QOperator => n.op_type().starts_with("QLinear") || n.op_type() == "QGemm",
        };
        let count = ours.graph.as_ref().map_or(0, |g| g.node.iter().filter(integer).count());
        if count == 0 {
            failures.push(format!("{}: our model has no quantized operator", case.name));
        }
        if ort_error.is_some() {
            continue;
        }
        let theirs = ir::load(&dir.join("ort.onnx")).expect("ORT's model loads");
        for problem in differences(case, &ours, &theirs) {
            if !case.ort_bug.iter().any(|expected| problem.contains(expected)) {
                failures.push(format!("{}: {problem}", case.name));
            }
        }
    }

    run_script("compare", &jobs_path);
    for (index, case) in cases.iter().enumerate() {
        let report = read_json(&root.join(format!("{index:02}/compare.json")));
        for key in ["checker", "ort_load", "ort_model_load"] {
            if report[key] != "ok" {
                failures.push(format!("{}: {key}: {}", case.name, report[key]));
            }
        }
        let Some(outputs) = report["outputs"].as_object() else { continue };
        for (output, numbers) in outputs {
            let number = |key: &str| numbers[key].as_f64().expect("a number");
            let range = number("float_range").max(1e-6);
            let error = number("ours_max_abs_error");
            if numbers.get("ort_max_abs_error").is_none() {
                continue; // ORT made no model that loads: a failure is recorded already.
            }
            if !case.ort_bug.is_empty() {
                eprintln!("{}: output `{output}`: {numbers} (ORT's model is wrong)", case.name);
                let ort_error = number("ort_max_abs_error");
                if error > MAX_FACTOR_OVER_WRONG_ORT * ort_error
                    || error > MAX_ERROR_SHARE_WHERE_ORT_IS_WRONG * range
                {
                    failures
                        .push(format!("{}: `{output}` is far from float: {numbers}", case.name));
                }
                continue;
            }
            if number("ours_vs_ort_max_abs") > MAX_DIFFERENCE_TO_ORT * range {
                failures.push(format!(
                    "{}: output `{output}` differs from ORT's: {numbers}",
                    case.name
                ));
            }
            // Some outputs lose more than that in ORT's model too (an ArgMax index, a
            // Softmax over 168 near-equal values); ours may not lose more than ORT's.
            if error > MAX_ERROR_SHARE_OF_RANGE * range && error > number("ort_max_abs_error") {
                failures
                    .push(format!("{}: output `{output}` is far from float: {numbers}", case.name));
            }
        }
    }

    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
