//! MatMul, Gemm and Conv under dynamic quantization: `MatMulInteger` or `ConvInteger` on the
//! 8-bit activation and weight, `Cast` to float, `Mul` by the product of the two scales, and
//! the bias `Add`, ending in the node's own output name.
//!
//! As in ORT's tool: a Gemm is handled like the MatMul ORT rewrites it into (only with
//! `transA = 0`, `alpha = beta = 1`; a `transB` weight is transposed before it is quantized);
//! per-channel scales run along the weight's last axis (the output columns); Conv weights are
//! always quantized per tensor, because ORT's CPU `ConvInteger` takes a single weight zero
//! point.

use ndarray::{arr0, arr1, ArrayD, Ix2};
use tracing::debug;

use super::{
    base_name, check_activation, check_weight, QuantizedInitializers, QuantizedNames, Rewriter,
    Skip, WeightForm,
};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{NodeProto, TensorProto};
use crate::ir::{self};
use crate::quantize::params::quantize_weight_int8;

/// The operator a candidate node is, with what its rewrite needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MatMul,
    /// Gemm with `transA = 0` and `alpha = beta = 1`.
    Gemm {
        trans_b: bool,
    },
    Conv,
}

/// A node that will be quantized.
struct Target {
    kind: Kind,
    activation: String,
    weight: String,
    /// Gemm's `C` or Conv's `B`, when present.
    bias: Option<String>,
    /// The per-channel axis of the weight as fed to the integer op, or `None` for per tensor.
    axis: Option<usize>,
    /// The weight's rank, which is also the rank of a Conv's output.
    rank: usize,
}

/// The nodes that replace a MatMul, Gemm or Conv, or why it stays in float.
pub(super) fn rewrite(
    node: &NodeProto,
    rewriter: &mut Rewriter<'_>,
) -> Result<Vec<NodeProto>, Skip> {
    let target = plan(rewriter, node)?;

    let transposed = matches!(target.kind, Kind::Gemm { trans_b: true });
    let form = WeightForm::Matrix { transposed, axis: target.axis };
    let reduce_range = rewriter.config.reduce_range;
    let weight = rewriter.weight(&target.weight, form, |tensor| {
        quantize_matrix(tensor, &target.weight, transposed, target.axis, reduce_range)
    })?;
    rewriter.replaced_weights.insert(target.weight.clone());

    let mut nodes = Vec::new();
    let activation = rewriter.activation(&target.activation, &mut nodes);
    integer_nodes(node, &target, &activation, &weight, rewriter, &mut nodes);
    Ok(nodes)
}

/// Decides whether `node` can be quantized, or says why not.
fn plan(rewriter: &Rewriter<'_>, node: &NodeProto) -> Result<Target, Skip> {
    let graph = rewriter.graph;
    let kind = match node.op_type() {
        "MatMul" => Kind::MatMul,
        "Gemm" => gemm_kind(node)?,
        _ => Kind::Conv,
    };

    let (Some(activation), Some(weight)) = (node.input.first(), node.input.get(1)) else {
        return Err("the node has fewer than two inputs".into());
    };
    if node.output.len() != 1 {
        return Err("the node does not have exactly one output".into());
    }
    check_activation(graph, activation)?;

    let tensor = check_weight(graph, weight)?;
    let rank = tensor.dims.len();
    match kind {
        Kind::MatMul | Kind::Gemm { .. } if rank != 2 => {
            return Err(format!(
                "weight `{weight}` has rank {rank}; only 2-D weights are quantized"
            ))
        }
        Kind::Conv if rank < 3 => {
            return Err(format!("weight `{weight}` has rank {rank}, which Conv does not take"))
        }
        _ => {}
    }

    let axis = match kind {
        Kind::MatMul | Kind::Gemm { .. } if rewriter.config.per_channel => Some(1),
        Kind::Conv if rewriter.config.per_channel => {
            debug!(
                node = node.name(),
                "Conv weight quantized per tensor: ConvInteger takes one weight zero point"
            );
            None
        }
        _ => None,
    };

    let bias = match kind {
        Kind::MatMul => None,
        Kind::Gemm { .. } | Kind::Conv => node.input.get(2).filter(|b| !b.is_empty()).cloned(),
    };

    Ok(Target { kind, activation: activation.clone(), weight: weight.clone(), bias, axis, rank })
}

fn gemm_kind(node: &NodeProto) -> Result<Kind, Skip> {
    if ir::node_attr_int(node, "transA").unwrap_or(0) != 0 {
        return Err("Gemm with transA = 1 is not quantized".into());
    }

    // ORT rewrites only Gemm with alpha = beta = 1 into MatMul before quantizing; folding
    // other values into the scales would make results differ from ORT's.
    let alpha = ir::node_attr_float(node, "alpha").unwrap_or(1.0);
    let beta = ir::node_attr_float(node, "beta").unwrap_or(1.0);
    if alpha != 1.0 || beta != 1.0 {
        return Err(format!(
            "Gemm with alpha = {alpha} and beta = {beta} is not quantized (needs 1)"
        ));
    }

    Ok(Kind::Gemm { trans_b: ir::node_attr_int(node, "transB").unwrap_or(0) != 0 })
}

/// A float matrix or Conv kernel quantized to symmetric INT8, transposed first if asked;
/// MatMul and Gemm use it, and so does QAttention.
pub(super) fn quantize_matrix(
    tensor: &TensorProto,
    weight: &str,
    transposed: bool,
    axis: Option<usize>,
    reduce_range: bool,
) -> Result<QuantizedInitializers, Skip> {
    let mut data =
        ir::tensor_to_f32(tensor).map_err(|e| format!("cannot read weight `{weight}`: {e}"))?;
    if transposed {
        let matrix = data
            .into_dimensionality::<Ix2>()
            .map_err(|e| format!("weight `{weight}` is not a matrix: {e}"))?;
        data = matrix.t().as_standard_layout().into_owned().into_dyn();
    }

    let quantized = quantize_weight_int8(data.view(), axis, true, reduce_range)
        .map_err(|e| format!("cannot quantize weight `{weight}`: {e}"))?;

    let (scale, zero_point): (ArrayD<f32>, ArrayD<i8>) = match quantized.axis {
        None => (arr0(quantized.scales[0]).into_dyn(), arr0(quantized.zero_points[0]).into_dyn()),
        Some(_) => (arr1(&quantized.scales).into_dyn(), arr1(&quantized.zero_points).into_dyn()),
    };
    Ok(QuantizedInitializers {
        values: ir::tensor_from_i8("", &quantized.values),
        scale: ir::tensor_from_f32("", &scale),
        zero_point: ir::tensor_from_i8("", &zero_point),
    })
}

/// The integer op, the cast back to float, the scaling and the bias, ending in the node's
/// own output name.
fn integer_nodes(
    node: &NodeProto,
    target: &Target,
    x: &QuantizedNames,
    w: &QuantizedNames,
    rewriter: &mut Rewriter<'_>,
    nodes: &mut Vec<NodeProto>,
) {
    let names = &mut rewriter.names;
    let output = node.output[0].as_str();
    let base = base_name(node);

    let integer_output = names.fresh(&format!("{output}_output_quantized"));
    let integer_inputs = [x.values.as_str(), &w.values, &x.zero_point, &w.zero_point];
    let integer_name = names.fresh(&format!("{base}_quant"));
    let mut integer = match target.kind {
        Kind::MatMul | Kind::Gemm { .. } => {
            ir::make_node("MatMulInteger", &integer_inputs, &[&integer_output], &integer_name)
        }
        Kind::Conv => {
            let mut conv =
                ir::make_node("ConvInteger", &integer_inputs, &[&integer_output], &integer_name);
            conv.attribute = node.attribute.clone();
            conv
        }
    };
    integer.doc_string = Some(format!("quantized from {} `{}`", node.op_type(), node.name()));
    nodes.push(integer);

    let cast_output = names.fresh(&format!("{integer_output}_cast_output"));
    let mut cast = ir::make_node(
        "Cast",
        &[&integer_output],
        &[&cast_output],
        &names.fresh(&format!("{integer_output}_cast")),
    );
    cast.attribute.push(ir::attr_int("to", DataType::Float as i64));
    nodes.push(cast);

    let scales = names.fresh(&format!("{base}_quant_scales_mul:0"));
    nodes.push(ir::make_node(
        "Mul",
        &[&x.scale, &w.scale],
        &[&scales],
        &names.fresh(&format!("{base}_quant_scales_mul")),
    ));

    let scaled = match target.bias {
        Some(_) => names.fresh(&format!("{output}_scaled")),
        None => output.to_string(),
    };
    nodes.push(ir::make_node(
        "Mul",
        &[&cast_output, &scales],
        &[&scaled],
        &names.fresh(&format!("{base}_quant_output_scale_mul")),
    ));

    let Some(bias) = &target.bias else { return };
    let bias = match target.kind {
        Kind::Conv => reshaped_conv_bias(bias, output, target.rank, rewriter, nodes),
        Kind::MatMul | Kind::Gemm { .. } => bias.clone(),
    };
    let add_name = rewriter.names.fresh(&format!("{base}_bias_add"));
    nodes.push(ir::make_node("Add", &[&scaled, &bias], &[output], &add_name));
}

/// Conv's bias `[C]` reshaped to `[1, C, 1, ...]` so it broadcasts over the output.
fn reshaped_conv_bias(
    bias: &str,
    output: &str,
    rank: usize,
    rewriter: &mut Rewriter<'_>,
    nodes: &mut Vec<NodeProto>,
) -> String {
    let mut shape = vec![1i64; rank];
    shape[1] = -1;

    let shape_name = rewriter.names.fresh(&format!("{output}_bias_reshape_shape"));
    rewriter.initializers.push(ir::tensor_from_i64(&shape_name, &arr1(&shape).into_dyn()));

    let reshaped = rewriter.names.fresh(&format!("{output}_bias_reshape_output"));
    let reshape_name = rewriter.names.fresh(&format!("{output}_bias_reshape"));
    nodes.push(ir::make_node("Reshape", &[bias, &shape_name], &[&reshaped], &reshape_name));
    reshaped
}
