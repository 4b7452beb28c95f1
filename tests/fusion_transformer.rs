//! The `fuse` rules of transformer blocks: `gelu`, `layer_norm` and `skip_layer_norm`. Each
//! variant that exporters write is fused and run in ONNX Runtime before and after; each
//! near-miss (a wrong constant, a reduction over another axis, a value read outside the
//! pattern, a fed gamma, unknown shapes) is left alone with its reason; a runtime without
//! ONNX Runtime's contrib operators gets ONNX operators or nothing.

mod fusion_support;

use std::f32::consts::SQRT_2;

use fusion_support::*;
use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{ModelProto, NodeProto};
use pipeline_passes::ir::{node_attr_float, node_attr_int, tensor_from_f32};
use pipeline_passes::pass::{PassContext, PassError, Runtime};

/// The hidden size of the test models.
const H: usize = 8;

/// `sqrt(2 / pi)`, the scale of the tanh form of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn weights(seed: u64, shape: &[usize]) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape, 0.5)
}

fn scalar(value: f32) -> ArrayD<f32> {
    ArrayD::from_elem(IxDyn(&[]), value)
}

/// A 3-D activation with symbolic batch and sequence dimensions.
fn activation() -> Vec<D> {
    vec![D::S("batch"), D::S("seq"), D::N(H as i64)]
}

fn standard() -> PassContext<'static> {
    PassContext { runtime: Runtime::Standard, ..PassContext::default() }
}

/// Runs `fuse` with `rules` in `context`.
fn fuse_in(
    model: &ModelProto,
    rules: &[&str],
    context: PassContext,
) -> Result<ModelProto, PassError> {
    run_pass_with("fuse", serde_json::json!({ "rules": rules }), model, context)
}

/// [`assert_fuses`] for a runtime without contrib operators.
fn assert_fuses_standard(
    model: &ModelProto,
    rules: &[&str],
    expected: &[(&str, usize)],
) -> ModelProto {
    let fused = fuse_in(model, rules, standard()).unwrap_or_else(|e| panic!("fuse failed: {e}"));
    assert_eq!(histogram(&fused), ops(expected), "operators after fuse {rules:?}");
    assert_same_outputs(model, &fused, &[], MAX_RELATIVE_DIFFERENCE);
    fused
}

/// [`assert_left_alone`] for a runtime without contrib operators.
fn assert_left_alone_standard(model: &ModelProto, rules: &[&str], reason: &str) {
    match fuse_in(model, rules, standard()) {
        Err(PassError::Unchanged { reason: why, .. }) => {
            assert!(why.contains(reason), "the reason `{why}` does not mention `{reason}`")
        }
        Err(other) => panic!("fuse failed instead of leaving the model alone: {other}"),
        Ok(fused) => panic!("fuse rewrote the model: {:?}", histogram(&fused)),
    }
}

fn inputs_of(node: &NodeProto) -> Vec<&str> {
    node.input.iter().map(String::as_str).collect()
}

fn string_attr(node: &NodeProto, name: &str) -> Option<String> {
    let attribute = node.attribute.iter().find(|a| a.name() == name)?;
    String::from_utf8(attribute.s.clone()?).ok()
}

fn initializer_dims(model: &ModelProto, name: &str) -> Vec<i64> {
    let graph = model.graph.as_ref().expect("a graph");
    let tensor = graph.initializer.iter().find(|t| t.name() == name);
    tensor.unwrap_or_else(|| panic!("no initializer `{name}`")).dims.clone()
}

// GELU.

/// Where the erf form multiplies by 0.5.
#[derive(Clone, Copy, Debug)]
enum Half {
    /// `(x * p) * 0.5`, as PyTorch's `nn.GELU` exports.
    AfterProduct,
    /// `(x * 0.5) * p`.
    OnInput,
    /// `x * (p * 0.5)`, as some TensorFlow graphs have it.
    OnSum,
}

/// How an erf GELU is written.
#[derive(Clone, Copy, Debug)]
struct ErfForm {
    /// `x / sqrt(2)`, or else `x * (1 / sqrt(2))`.
    divide: bool,
    half: Half,
    /// Every commutative operation with its operands the other way round.
    swapped: bool,
    /// The constant standing for 0.5.
    half_value: f32,
    /// The constant standing for sqrt(2) (or its inverse).
    sqrt2_value: f32,
}

impl ErfForm {
    fn new(divide: bool, half: Half, swapped: bool) -> ErfForm {
        ErfForm { divide, half, swapped, half_value: 0.5, sqrt2_value: SQRT_2 }
    }
}

/// Adds `y = gelu(x)` in the erf form; values are named after `y`.
fn erf_gelu(b: Builder, x: &str, y: &str, form: ErfForm) -> Builder {
    let n = |part: &str| format!("{y}_{part}");
    let (half, one, root) = (n("half"), n("one"), n("root"));
    let (scaled, erf, plus, product) = (n("scaled"), n("erf"), n("plus"), n("product"));
    let order = |a: &str, c: &str| -> Vec<String> {
        if form.swapped {
            vec![c.to_string(), a.to_string()]
        } else {
            vec![a.to_string(), c.to_string()]
        }
    };
    let node = |b: Builder, op: &str, inputs: Vec<String>, output: &str| {
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        b.node(op, &inputs, &[output])
    };

    let mut b = b.init(&half, scalar(form.half_value)).init(&one, scalar(1.0));
    b = if form.divide {
        let b = b.init(&root, scalar(form.sqrt2_value));
        node(b, "Div", vec![x.to_string(), root.clone()], &scaled)
    } else {
        let b = b.init(&root, scalar(form.sqrt2_value.recip()));
        node(b, "Mul", order(x, &root), &scaled)
    };
    b = b.node("Erf", &[&scaled], &[&erf]);
    b = node(b, "Add", order(&erf, &one), &plus);
    match form.half {
        Half::AfterProduct => {
            let b = node(b, "Mul", order(x, &plus), &product);
            node(b, "Mul", order(&product, &half), y)
        }
        Half::OnInput => {
            let b = node(b, "Mul", order(x, &half), &product);
            node(b, "Mul", order(&product, &plus), y)
        }
        Half::OnSum => {
            let b = node(b, "Mul", order(&plus, &half), &product);
            node(b, "Mul", order(x, &product), y)
        }
    }
}

/// Adds `y = gelu(x)` in the tanh form, with `x^3` as `Pow(x, 3)` or as `x * x * x`.
fn tanh_gelu(b: Builder, x: &str, y: &str, by_pow: bool, cubic: f32) -> Builder {
    let n = |part: &str| format!("{y}_{part}");
    let (cube, square, term, inner, scaled) = (n("cube"), n("sq"), n("term"), n("in"), n("sc"));
    let (tanh, plus, half_x) = (n("tanh"), n("plus"), n("halfx"));
    let (three, k, s, one, half) = (n("three"), n("k"), n("s"), n("one"), n("half"));

    let mut b = b
        .init(&k, scalar(cubic))
        .init(&s, scalar(SQRT_2_OVER_PI))
        .init(&one, scalar(1.0))
        .init(&half, scalar(0.5));
    b = if by_pow {
        b.init(&three, scalar(3.0)).node("Pow", &[x, &three], &[&cube])
    } else {
        b.node("Mul", &[x, x], &[&square]).node("Mul", &[&square, x], &[&cube])
    };
    b.node("Mul", &[&k, &cube], &[&term])
        .node("Add", &[x, &term], &[&inner])
        .node("Mul", &[&inner, &s], &[&scaled])
        .node("Tanh", &[&scaled], &[&tanh])
        .node("Add", &[&tanh, &one], &[&plus])
        .node("Mul", &[&half, x], &[&half_x])
        .node("Mul", &[&half_x, &plus], &[y])
}

fn erf_model(opset: i64, form: ErfForm) -> ModelProto {
    let b = Builder::new(opset).input("x", activation());
    erf_gelu(b, "x", "y", form).output("y").build()
}

#[test]
fn gelu_erf_variants_become_contrib_gelu() {
    for divide in [true, false] {
        for half in [Half::AfterProduct, Half::OnInput, Half::OnSum] {
            for swapped in [false, true] {
                let form = ErfForm::new(divide, half, swapped);
                let model = erf_model(17, form);

                let fused = assert_fuses(&model, &["gelu"], &[("com.microsoft:Gelu", 1)]);

                let gelu = first_of(&fused, "Gelu");
                assert_eq!(inputs_of(gelu), ["x"], "{form:?}");
                assert_eq!(gelu.output, ["y"], "{form:?}");
                let ms = fused.opset_import.iter().find(|o| o.domain() == "com.microsoft");
                assert_eq!(ms.map(|o| o.version()), Some(1), "{form:?}");
            }
        }
    }
}

#[test]
fn gelu_tanh_with_pow_or_products_becomes_fast_gelu() {
    for by_pow in [true, false] {
        let b = Builder::new(17).input("x", activation());
        let model = tanh_gelu(b, "x", "y", by_pow, 0.044715).output("y").build();

        let fused = assert_fuses(&model, &["gelu"], &[("com.microsoft:FastGelu", 1)]);

        assert_eq!(inputs_of(first_of(&fused, "FastGelu")), ["x"]);
    }
}

#[test]
fn gelu_of_constant_nodes_as_pytorch_exports_them() {
    let constant = |name: &str, value: f32| tensor_from_f32(name, &scalar(value));
    let model = Builder::new(13)
        .input("x", activation())
        .constant("root", constant("", SQRT_2))
        .constant("one", constant("", 1.0))
        .constant("half", constant("", 0.5))
        .node("Div", &["x", "root"], &["scaled"])
        .node("Erf", &["scaled"], &["erf"])
        .node("Add", &["erf", "one"], &["plus"])
        .node("Mul", &["x", "plus"], &["product"])
        .node("Mul", &["product", "half"], &["y"])
        .output("y")
        .build();

    assert_fuses(&model, &["gelu", "dead_nodes"], &[("com.microsoft:Gelu", 1)]);
}

/// `y = gelu(x @ w + bias)` with the bias Add before the GELU.
fn biased_model(opset: i64, tanh: bool) -> Builder {
    let b = Builder::new(opset)
        .input("h", activation())
        .init("w", weights(1, &[H, 2 * H]))
        .init("bias", weights(2, &[2 * H]))
        .node("MatMul", &["h", "w"], &["mm"])
        .node("Add", &["mm", "bias"], &["x"]);
    if tanh {
        tanh_gelu(b, "x", "y", true, 0.044715).output("y")
    } else {
        erf_gelu(b, "x", "y", ErfForm::new(true, Half::AfterProduct, false)).output("y")
    }
}

#[test]
fn gelu_after_a_bias_add_takes_the_bias_in() {
    let erf = biased_model(17, false).build();
    let fused = assert_fuses(&erf, &["gelu"], &[("MatMul", 1), ("com.microsoft:BiasGelu", 1)]);
    assert_eq!(inputs_of(first_of(&fused, "BiasGelu")), ["mm", "bias"]);

    let tanh = biased_model(17, true).build();
    let fused = assert_fuses(&tanh, &["gelu"], &[("MatMul", 1), ("com.microsoft:FastGelu", 1)]);
    assert_eq!(inputs_of(first_of(&fused, "FastGelu")), ["mm", "bias"]);
}

#[test]
fn gelu_keeps_a_bias_add_whose_sum_is_read_elsewhere() {
    let model = biased_model(17, false).output("x").build();

    let fused =
        assert_fuses(&model, &["gelu"], &[("MatMul", 1), ("Add", 1), ("com.microsoft:Gelu", 1)]);

    assert_eq!(inputs_of(first_of(&fused, "Gelu")), ["x"]);
}

#[test]
fn gelu_for_a_standard_runtime_is_onnx_gelu_from_opset_20() {
    let erf = erf_model(20, ErfForm::new(false, Half::OnSum, true));
    let fused = assert_fuses_standard(&erf, &["gelu"], &[("Gelu", 1)]);
    assert_eq!(string_attr(first_of(&fused, "Gelu"), "approximate").as_deref(), Some("none"));
    assert!(fused.opset_import.iter().all(|o| o.domain() != "com.microsoft"));

    let b = Builder::new(20).input("x", activation());
    let tanh = tanh_gelu(b, "x", "y", false, 0.044715).output("y").build();
    let fused = assert_fuses_standard(&tanh, &["gelu"], &[("Gelu", 1)]);
    assert_eq!(string_attr(first_of(&fused, "Gelu"), "approximate").as_deref(), Some("tanh"));

    let biased = biased_model(20, false).build();
    assert_fuses_standard(&biased, &["gelu"], &[("MatMul", 1), ("Add", 1), ("Gelu", 1)]);
}

#[test]
fn gelu_for_a_standard_runtime_below_opset_20_is_left_alone() {
    let model = erf_model(17, ErfForm::new(true, Half::AfterProduct, false));

    assert_left_alone_standard(&model, &["gelu"], "ONNX has Gelu from opset 20");
}

#[test]
fn gelu_with_a_wrong_constant_is_left_alone() {
    let mut wrong_half = ErfForm::new(true, Half::AfterProduct, false);
    wrong_half.half_value = 0.6;
    assert_left_alone(&erf_model(17, wrong_half), &["gelu"], "is 0.6, where GELU has 0.5");

    let mut wrong_root = ErfForm::new(false, Half::OnInput, false);
    wrong_root.sqrt2_value = 1.5;
    assert_left_alone(&erf_model(17, wrong_root), &["gelu"], "where GELU has 0.70710677");

    let b = Builder::new(17).input("x", activation());
    let tanh = tanh_gelu(b, "x", "y", true, 0.05).output("y").build();
    assert_left_alone(&tanh, &["gelu"], "is 0.05, where GELU has 0.044715");
}

#[test]
fn gelu_whose_intermediate_is_read_elsewhere_is_left_alone() {
    let b = Builder::new(17).input("x", activation());
    let model = erf_gelu(b, "x", "y", ErfForm::new(true, Half::AfterProduct, false))
        .node("Relu", &["y_plus"], &["r"])
        .output("y")
        .output("r")
        .build();
    assert_left_alone(&model, &["gelu"], "intermediate `y_plus` is also read outside");

    let b = Builder::new(17).input("x", activation());
    let model = tanh_gelu(b, "x", "y", false, 0.044715).output("y").output("y_sq").build();
    assert_left_alone(&model, &["gelu"], "intermediate `y_sq` is also read outside");
}

// Layer normalization.

/// How a layer normalization chain is written.
#[derive(Clone, Debug)]
struct Chain {
    opset: i64,
    /// The axes both ReduceMeans reduce.
    axes: Vec<i64>,
    /// `Mul(d, d)` instead of `Pow(d, 2)`.
    square_by_mul: bool,
    epsilon: f32,
    /// Multiply by a gamma initializer of this shape, and add a beta of it.
    gamma: Option<Vec<usize>>,
    beta: Option<Vec<usize>>,
}

impl Chain {
    fn new(opset: i64) -> Chain {
        Chain {
            opset,
            axes: vec![-1],
            square_by_mul: false,
            epsilon: 1e-12,
            gamma: Some(vec![H]),
            beta: Some(vec![H]),
        }
    }
}

/// Adds `y = layer_norm(x)` written as its chain; values are named after `y`.
fn layer_norm_chain(mut b: Builder, x: &str, y: &str, chain: &Chain, seed: u64) -> Builder {
    let n = |part: &str| format!("{y}_{part}");
    let (mean, centered, squared, variance) = (n("mean"), n("d"), n("sq"), n("var"));
    let (shifted, deviation, normed, scaled) = (n("veps"), n("std"), n("normed"), n("scaled"));
    let (axes, two, epsilon, gamma, beta) = (n("axes"), n("two"), n("eps"), n("gamma"), n("beta"));

    let reduce = |b: Builder, input: &str, output: &str| {
        if chain.opset >= 18 {
            b.node("ReduceMean", &[input, &axes], &[output])
        } else {
            b.node_with("ReduceMean", &[input], &[output], vec![attr_ints("axes", &chain.axes)])
        }
    };
    if chain.opset >= 18 {
        b = b.init_i64(&axes, &chain.axes);
    }
    b = reduce(b, x, &mean).node("Sub", &[x, &mean], &[&centered]);
    b = if chain.square_by_mul {
        b.node("Mul", &[&centered, &centered], &[&squared])
    } else {
        b.init(&two, scalar(2.0)).node("Pow", &[&centered, &two], &[&squared])
    };
    b = reduce(b, &squared, &variance)
        .init(&epsilon, scalar(chain.epsilon))
        .node("Add", &[&variance, &epsilon], &[&shifted])
        .node("Sqrt", &[&shifted], &[&deviation]);

    let (has_gamma, has_beta) = (chain.gamma.is_some(), chain.beta.is_some());
    let mut last = if has_gamma || has_beta { normed } else { y.to_string() };
    b = b.node("Div", &[&centered, &deviation], &[&last]);
    if let Some(shape) = &chain.gamma {
        let output = if has_beta { scaled } else { y.to_string() };
        b = b.init(&gamma, Rng::new(seed).uniform_array(shape, 0.5, 1.5)).node(
            "Mul",
            &[&last, &gamma],
            &[&output],
        );
        last = output;
    }
    if let Some(shape) = &chain.beta {
        b = b.init(&beta, weights(seed + 1, shape)).node("Add", &[&beta, &last], &[y]);
    }
    b
}

fn chain_model(chain: &Chain, x_shape: Vec<D>) -> ModelProto {
    let b = Builder::new(chain.opset).input("x", x_shape);
    layer_norm_chain(b, "x", "y", chain, 3).output("y").build()
}

#[test]
fn layer_norm_chain_becomes_layer_normalization() {
    let model = chain_model(&Chain::new(17), activation());

    let fused = assert_fuses(&model, &["layer_norm"], &[("LayerNormalization", 1)]);

    let norm = first_of(&fused, "LayerNormalization");
    assert_eq!(inputs_of(norm), ["x", "y_gamma", "y_beta"]);
    assert_eq!(norm.output, ["y"]);
    assert_eq!(node_attr_int(norm, "axis"), Some(-1));
    assert_eq!(node_attr_float(norm, "epsilon"), Some(1e-12));
}

#[test]
fn layer_norm_with_axes_as_input_square_by_mul_and_a_positive_axis() {
    let mut chain = Chain::new(18);
    chain.axes = vec![2];
    chain.square_by_mul = true;
    chain.epsilon = 1e-5;
    let model = chain_model(&chain, activation());

    let fused = assert_fuses(&model, &["layer_norm"], &[("LayerNormalization", 1)]);

    let norm = first_of(&fused, "LayerNormalization");
    assert_eq!(node_attr_int(norm, "axis"), Some(-1));
    assert_eq!(node_attr_float(norm, "epsilon"), Some(1e-5));
}

#[test]
fn layer_norm_without_gamma_or_beta_gets_a_scale_of_ones() {
    let mut bare = Chain::new(17);
    bare.gamma = None;
    bare.beta = None;
    let fused = assert_fuses(
        &chain_model(&bare, activation()),
        &["layer_norm"],
        &[("LayerNormalization", 1)],
    );
    let norm = first_of(&fused, "LayerNormalization");
    assert_eq!(norm.input.len(), 2, "a scale and no bias");
    assert_eq!(initializer_dims(&fused, &norm.input[1]), [H as i64]);

    let mut shift_only = Chain::new(17);
    shift_only.gamma = None;
    let fused = assert_fuses(
        &chain_model(&shift_only, activation()),
        &["layer_norm"],
        &[("LayerNormalization", 1)],
    );
    let norm = first_of(&fused, "LayerNormalization");
    assert_eq!(norm.input[2], "y_beta");
}

#[test]
fn layer_norm_over_two_trailing_axes_broadcasts_gamma_to_them() {
    let mut chain = Chain::new(17);
    chain.axes = vec![-1, -2];
    chain.gamma = Some(vec![H]);
    chain.beta = Some(vec![1, 3, 1]);
    let model = chain_model(&chain, vec![D::S("batch"), D::N(3), D::N(H as i64)]);

    let fused = assert_fuses(&model, &["layer_norm"], &[("LayerNormalization", 1)]);

    let norm = first_of(&fused, "LayerNormalization");
    assert_eq!(node_attr_int(norm, "axis"), Some(-2));
    assert_eq!(initializer_dims(&fused, &norm.input[1]), [3, H as i64]);
    assert_eq!(initializer_dims(&fused, &norm.input[2]), [3, H as i64]);
}

#[test]
fn layer_norm_below_opset_17_is_onnx_runtime_only() {
    let model = chain_model(&Chain::new(13), activation());

    let fused = assert_fuses(&model, &["layer_norm"], &[("LayerNormalization", 1)]);
    assert_eq!(first_of(&fused, "LayerNormalization").domain(), "");

    assert_left_alone_standard(
        &model,
        &["layer_norm"],
        "ONNX has LayerNormalization from opset 17",
    );
}

#[test]
fn layer_norm_for_a_standard_runtime_from_opset_17() {
    let model = chain_model(&Chain::new(17), activation());

    assert_fuses_standard(&model, &["layer_norm"], &[("LayerNormalization", 1)]);
}

#[test]
fn layer_norm_over_a_leading_axis_is_left_alone() {
    let mut chain = Chain::new(17);
    chain.axes = vec![1];
    chain.gamma = None;
    chain.beta = None;
    let model = chain_model(&chain, activation());

    assert_left_alone(&model, &["layer_norm"], "not its trailing axes");
}

#[test]
fn layer_norm_whose_centred_value_is_read_elsewhere_is_left_alone() {
    let b = Builder::new(17).input("x", activation());
    let model = layer_norm_chain(b, "x", "y", &Chain::new(17), 3).output("y").output("y_d").build();

    assert_left_alone(&model, &["layer_norm"], "intermediate `y_d` is also read outside");
}

#[test]
fn layer_norm_with_a_fed_gamma_is_left_alone() {
    let model = chain_model(&Chain::new(17), activation());
    let mut fed = model.clone();
    let graph = fed.graph.as_mut().unwrap();
    graph.initializer.retain(|t| t.name() != "y_gamma");
    let gamma = Builder::new(17).input("y_gamma", dims(&[H as i64])).build();
    graph.input.push(gamma.graph.unwrap().input[0].clone());

    assert_left_alone(&fed, &["layer_norm"], "gamma `y_gamma` is not a constant");
}

#[test]
fn layer_norm_of_a_value_of_unknown_rank_is_left_alone() {
    let b = Builder::new(17)
        .input("h", activation())
        .typed_input("target", DataType::Int64, dims(&[3]))
        .node("Reshape", &["h", "target"], &["x"]);
    let model = layer_norm_chain(b, "x", "y", &Chain::new(17), 3).output("y").build();

    assert_left_alone(&model, &["layer_norm"], "the rank of `x` is unknown");
}

// SkipLayerNormalization.

/// `y = LayerNormalization(a + b)`, with `a` and `b` graph inputs of the given shapes.
fn residual_model(a: Vec<D>, b: Vec<D>) -> Builder {
    residual_model_over(a, b, &[H], -1)
}

/// [`residual_model`] normalizing from `axis`, with a gamma and a beta of `normalized` shape.
fn residual_model_over(a: Vec<D>, b: Vec<D>, normalized: &[usize], axis: i64) -> Builder {
    Builder::new(17)
        .input("a", a)
        .input("b", b)
        .init("gamma", Rng::new(4).uniform_array(normalized, 0.5, 1.5))
        .init("beta", weights(5, normalized))
        .node("Add", &["a", "b"], &["sum"])
        .node_with(
            "LayerNormalization",
            &["sum", "gamma", "beta"],
            &["y"],
            vec![attr_int("axis", axis), attr_float("epsilon", 1e-6)],
        )
        .output("y")
}

#[test]
fn add_before_layer_normalization_becomes_skip_layer_normalization() {
    let model = residual_model(activation(), activation()).build();

    let fused =
        assert_fuses(&model, &["skip_layer_norm"], &[("com.microsoft:SkipLayerNormalization", 1)]);

    let skip = first_of(&fused, "SkipLayerNormalization");
    assert_eq!(inputs_of(skip), ["a", "b", "gamma", "beta"]);
    assert_eq!(skip.output, ["y"]);
    assert_eq!(node_attr_float(skip, "epsilon"), Some(1e-6));
}

#[test]
fn skip_layer_normalization_serves_other_readers_of_the_sum() {
    let model = residual_model(activation(), activation())
        .node("Relu", &["sum"], &["r"])
        .output("r")
        .output("sum")
        .build();

    let fused = assert_fuses(
        &model,
        &["skip_layer_norm"],
        &[("Relu", 1), ("com.microsoft:SkipLayerNormalization", 1)],
    );

    let skip = first_of(&fused, "SkipLayerNormalization");
    assert_eq!(skip.output, ["y", "", "", "sum"]);
    assert_eq!(inputs_of(first_of(&fused, "Relu")), ["sum"]);
}

#[test]
fn skip_layer_normalization_takes_in_a_bias_add_and_a_broadcast_skip() {
    let model = Builder::new(17)
        .input("h", activation())
        .input("b", vec![D::S("seq"), D::N(H as i64)])
        .init("w", weights(6, &[H, H]))
        .init("bias", weights(7, &[H]))
        .init("gamma", Rng::new(8).uniform_array(&[H], 0.5, 1.5))
        .node("MatMul", &["h", "w"], &["mm"])
        .node("Add", &["bias", "mm"], &["a"])
        .node("Add", &["b", "a"], &["sum"])
        .node("LayerNormalization", &["sum", "gamma"], &["y"])
        .output("y")
        .build();

    let fused = assert_fuses(
        &model,
        &["skip_layer_norm"],
        &[("MatMul", 1), ("com.microsoft:SkipLayerNormalization", 1)],
    );

    let skip = first_of(&fused, "SkipLayerNormalization");
    assert_eq!(inputs_of(skip), ["mm", "b", "gamma", "", "bias"]);
    assert_eq!(node_attr_float(skip, "epsilon"), Some(1e-5));
}

#[test]
fn skip_layer_normalization_after_the_layer_norm_chain() {
    let b = Builder::new(17).input("a", activation()).input("b", activation());
    let b = b.node("Add", &["a", "b"], &["sum"]);
    let model = layer_norm_chain(b, "sum", "y", &Chain::new(17), 9).output("y").build();

    let fused = assert_fuses(
        &model,
        &["layer_norm", "skip_layer_norm"],
        &[("com.microsoft:SkipLayerNormalization", 1)],
    );

    assert_eq!(node_attr_float(first_of(&fused, "SkipLayerNormalization"), "epsilon"), Some(1e-12));
}

#[test]
fn add_of_tensors_of_different_shapes_is_left_alone() {
    let model = residual_model(activation(), vec![D::S("batch"), D::N(1), D::N(H as i64)]).build();

    assert_left_alone(&model, &["skip_layer_norm"], "are not two tensors of the same 3-D shape");
}

#[test]
fn add_of_unknown_rank_is_left_alone() {
    let model = Builder::new(17)
        .input("h", activation())
        .input("b", activation())
        .typed_input("target", DataType::Int64, dims(&[3]))
        .init("gamma", Rng::new(4).uniform_array(&[H], 0.5, 1.5))
        .node("Reshape", &["h", "target"], &["a"])
        .node("Add", &["a", "b"], &["sum"])
        .node("LayerNormalization", &["sum", "gamma"], &["y"])
        .output("y")
        .build();

    assert_left_alone(&model, &["skip_layer_norm"], "the rank of `sum` is unknown");
}

#[test]
fn layer_normalization_of_two_axes_or_rank_2_is_left_alone() {
    let shape = vec![D::S("batch"), D::N(2), D::N(H as i64)];
    let two_axes = residual_model_over(shape.clone(), shape, &[2, H], -2).build();
    assert_left_alone(&two_axes, &["skip_layer_norm"], "normalizes the last axis only");

    let flat = residual_model(dims(&[3, H as i64]), dims(&[3, H as i64])).build();
    assert_left_alone(&flat, &["skip_layer_norm"], "has rank 2; SkipLayerNormalization takes 3-D");
}

#[test]
fn skip_layer_norm_for_a_standard_runtime_is_left_alone() {
    let model = residual_model(activation(), activation()).build();

    assert_left_alone_standard(
        &model,
        &["skip_layer_norm"],
        "SkipLayerNormalization is ONNX Runtime's",
    );
}

// A whole block.

/// A BERT-like feed-forward block: LayerNorm chain, MatMul, bias, GELU, MatMul, bias, the
/// residual Add of the first LayerNorm's output, LayerNorm chain. The residual sum is also an
/// output, as the next block would read it.
fn transformer_block(opset: i64) -> ModelProto {
    let mut b = Builder::new(opset)
        .input("x", activation())
        .init("w1", weights(10, &[H, 4 * H]))
        .init("b1", weights(11, &[4 * H]))
        .init("w2", weights(12, &[4 * H, H]))
        .init("b2", weights(13, &[H]));
    b = layer_norm_chain(b, "x", "ln1", &Chain::new(opset), 14);
    b = b.node("MatMul", &["ln1", "w1"], &["h1"]).node("Add", &["h1", "b1"], &["h1b"]);
    b = erf_gelu(b, "h1b", "g", ErfForm::new(true, Half::AfterProduct, false));
    b = b.node("MatMul", &["g", "w2"], &["h2"]).node("Add", &["b2", "h2"], &["h2b"]).node(
        "Add",
        &["ln1", "h2b"],
        &["res"],
    );
    b = layer_norm_chain(b, "res", "y", &Chain::new(opset), 15);
    b.output("y").output("res").build()
}

#[test]
fn transformer_block_fuses_with_every_rule() {
    for opset in [13, 17, 18] {
        let model = transformer_block(opset);

        let fused = assert_fuses(
            &model,
            &[],
            &[
                ("LayerNormalization", 1),
                ("MatMul", 2),
                ("com.microsoft:BiasGelu", 1),
                ("com.microsoft:SkipLayerNormalization", 1),
            ],
        );

        let skip = first_of(&fused, "SkipLayerNormalization");
        assert_eq!(inputs_of(skip), ["h2", "ln1", "y_gamma", "y_beta", "b2"], "opset {opset}");
        assert_eq!(skip.output, ["y", "", "", "res"], "opset {opset}");
        assert_eq!(inputs_of(first_of(&fused, "BiasGelu")), ["h1", "b1"], "opset {opset}");
    }
}

#[test]
fn transformer_block_for_a_standard_runtime_gets_onnx_operators() {
    let model = transformer_block(20);

    assert_fuses_standard(
        &model,
        &["layer_norm", "gelu", "skip_layer_norm"],
        &[("LayerNormalization", 2), ("MatMul", 2), ("Add", 3), ("Gelu", 1)],
    );
}
