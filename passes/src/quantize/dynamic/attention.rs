//! `com.microsoft.Attention` under dynamic quantization: `com.microsoft.QAttention` on the
//! 8-bit input and the INT8 QKV weight.
//!
//! As in ORT's tool, the input is quantized at run time by `DynamicQuantizeLinear` (or used
//! as it is when it is already 8-bit), the weight `[hidden, 3 x hidden]` is quantized like a
//! MatMul weight, per tensor or per column, and the bias stays in float. An Attention that
//! QAttention cannot express stays in float: unequal Q, K and V sizes (`qkv_hidden_sizes`,
//! which ORT's tool skips too), and the `attention_bias` or `past_sequence_length` inputs or
//! the `rotary_embedding_dim` attribute, which ORT's tool would drop or copy into a node that
//! computes something else or does not load.

use super::linear::quantize_matrix;
use super::{base_name, check_activation, check_weight, Rewriter, Skip, WeightForm, MS_DOMAIN};
use crate::ir::proto::NodeProto;

/// The attributes QAttention takes.
const QATTENTION_ATTRIBUTES: [&str; 6] = [
    "num_heads",
    "unidirectional",
    "do_rotary",
    "past_present_share_buffer",
    "mask_filter_value",
    "scale",
];

/// Attention's inputs that QAttention has no place for: `attention_bias` (5) and
/// `past_sequence_length` (6).
const INPUTS_QATTENTION_LACKS: [(usize, &str); 2] =
    [(5, "attention_bias"), (6, "past_sequence_length")];

/// The QAttention that replaces an Attention, or why it stays in float.
pub(super) fn rewrite(
    node: &NodeProto,
    rewriter: &mut Rewriter<'_>,
) -> Result<Vec<NodeProto>, Skip> {
    check_expressible(node)?;

    let graph = rewriter.graph;
    let (input, weight, bias) = (&node.input[0], &node.input[1], &node.input[2]);
    check_activation(graph, input)?;
    let rank = check_weight(graph, weight)?.dims.len();
    if rank != 2 {
        return Err(format!("weight `{weight}` has rank {rank}; QAttention takes a 2-D weight"));
    }

    let axis = rewriter.config.per_channel.then_some(1);
    let reduce_range = rewriter.config.reduce_range;
    let form = WeightForm::Matrix { transposed: false, axis };
    let w =
        rewriter.weight(weight, form, |t| quantize_matrix(t, weight, false, axis, reduce_range))?;
    rewriter.replaced_weights.insert(weight.clone());
    rewriter.uses_ms_domain = true;

    let mut nodes = Vec::new();
    let x = rewriter.activation(input, &mut nodes);
    let optional = |index: usize| node.input.get(index).cloned().unwrap_or_default();
    let mut inputs =
        vec![x.values, w.values, bias.clone(), x.scale, w.scale, optional(3), x.zero_point];
    inputs.extend([w.zero_point, optional(4)]);
    while inputs.last().is_some_and(|name| name.is_empty()) {
        inputs.pop();
    }

    let name = rewriter.names.fresh(&format!("{}_quant", base_name(node)));
    nodes.push(NodeProto {
        input: inputs,
        output: node.output.clone(),
        name: Some(name),
        op_type: Some("QAttention".into()),
        domain: Some(MS_DOMAIN.into()),
        attribute: node.attribute.clone(),
        doc_string: Some(format!("quantized from Attention `{}`", node.name())),
        ..NodeProto::default()
    });
    Ok(nodes)
}

/// Refuses what QAttention cannot express.
fn check_expressible(node: &NodeProto) -> Result<(), Skip> {
    for attribute in &node.attribute {
        match attribute.name() {
            "qkv_hidden_sizes" => {
                return Err("Attention with `qkv_hidden_sizes` is not quantized: QAttention \
                            takes equal Q, K and V sizes"
                    .into())
            }
            name if !QATTENTION_ATTRIBUTES.contains(&name) => {
                return Err(format!("QAttention has no attribute `{name}`"))
            }
            _ => {}
        }
    }

    let present = |index: usize| node.input.get(index).is_some_and(|name| !name.is_empty());
    if !(present(0) && present(1)) {
        return Err("the node lacks its input or its weight".into());
    }
    if !present(2) {
        return Err("Attention without a bias is not quantized: QAttention needs one".into());
    }
    if let Some((_, input)) = INPUTS_QATTENTION_LACKS.iter().find(|(index, _)| present(*index)) {
        return Err(format!("QAttention has no `{input}` input"));
    }
    Ok(())
}
