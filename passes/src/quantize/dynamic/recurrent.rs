//! LSTM under dynamic quantization: `com.microsoft.DynamicQuantizeLSTM`, which quantizes the
//! input and the hidden state at each step and multiplies them with INT8 weights.
//!
//! As in ORT's tool, `W` `[directions, 4 x hidden, inputs]` and `R` `[directions, 4 x hidden,
//! hidden]` are quantized to symmetric INT8 with one scale per direction, or one per gate row
//! (`[directions, 4 x hidden]` scales) with `per_channel`, then stored transposed as
//! `[directions, inputs or hidden, 4 x hidden]`, the layout the kernel reads. GRU has no such
//! kernel in ONNX Runtime and stays in float.

use ndarray::{ArrayD, IxDyn};

use super::{
    base_name, check_weight, QuantizedInitializers, Rewriter, Skip, WeightForm, MS_DOMAIN,
};
use crate::ir;
use crate::ir::proto::{NodeProto, TensorProto};
use crate::quantize::params::quantize_weight_int8;

/// The DynamicQuantizeLSTM that replaces an LSTM, or why it stays in float.
pub(super) fn rewrite(
    node: &NodeProto,
    rewriter: &mut Rewriter<'_>,
) -> Result<Vec<NodeProto>, Skip> {
    let graph = rewriter.graph;
    if node.input.len() < 3 {
        return Err("the node has fewer than three inputs".into());
    }
    // DynamicQuantizeLSTM has no `layout`; ORT's tool drops the attribute, which turns a
    // batch-first LSTM into one that reads its input the wrong way round.
    if ir::node_attr_int(node, "layout").unwrap_or(0) != 0 {
        return Err(
            "LSTM with layout = 1 is not quantized: DynamicQuantizeLSTM has no layout".into()
        );
    }

    let (w, r) = (&node.input[1], &node.input[2]);
    let w_dims = check_weight(graph, w)?.dims.clone();
    let r_dims = check_weight(graph, r)?.dims.clone();
    if w_dims.len() != 3 || r_dims.len() != 3 || w_dims[..2] != r_dims[..2] {
        return Err(format!(
            "weights `{w}` {w_dims:?} and `{r}` {r_dims:?} are not [directions, 4 x hidden, _]"
        ));
    }

    let per_channel = rewriter.config.per_channel;
    let reduce_range = rewriter.config.reduce_range;
    let form = WeightForm::Recurrent { per_channel };
    let wq = rewriter
        .weight(w, form.clone(), |t| quantize_recurrent(t, w, per_channel, reduce_range))?;
    let rq = rewriter.weight(r, form, |t| quantize_recurrent(t, r, per_channel, reduce_range))?;
    rewriter.replaced_weights.extend([w.clone(), r.clone()]);
    rewriter.uses_ms_domain = true;

    let optional = |index: usize| node.input.get(index).cloned().unwrap_or_default();
    let mut inputs = vec![node.input[0].clone(), wq.values, rq.values];
    inputs.extend((3..8).map(optional));
    inputs.extend([wq.scale, wq.zero_point, rq.scale, rq.zero_point]);

    let name = rewriter.names.fresh(&format!("{}_quant", base_name(node)));
    let lstm = NodeProto {
        input: inputs,
        output: node.output.clone(),
        name: Some(name),
        op_type: Some("DynamicQuantizeLSTM".into()),
        domain: Some(MS_DOMAIN.into()),
        attribute: node.attribute.iter().filter(|a| a.name() != "layout").cloned().collect(),
        doc_string: Some(format!("quantized from LSTM `{}`", node.name())),
        ..NodeProto::default()
    };
    Ok(vec![lstm])
}

/// An LSTM weight `[directions, rows, columns]` as symmetric INT8 `[directions, columns,
/// rows]`, with one scale per direction or one per row.
fn quantize_recurrent(
    tensor: &TensorProto,
    weight: &str,
    per_channel: bool,
    reduce_range: bool,
) -> Result<QuantizedInitializers, Skip> {
    let data =
        ir::tensor_to_f32(tensor).map_err(|e| format!("cannot read weight `{weight}`: {e}"))?;
    let &[directions, rows, columns] = data.shape() else {
        return Err(format!("weight `{weight}` is not 3-D"));
    };

    // Per channel, each row of each direction is a channel; otherwise each direction is one.
    let channels =
        if per_channel { vec![directions * rows, columns] } else { data.shape().to_vec() };
    let data = data
        .into_shape_with_order(IxDyn(&channels))
        .map_err(|e| format!("cannot reshape weight `{weight}`: {e}"))?;
    let quantized = quantize_weight_int8(data.view(), Some(0), true, reduce_range)
        .map_err(|e| format!("cannot quantize weight `{weight}`: {e}"))?;

    let values = quantized
        .values
        .into_shape_with_order(IxDyn(&[directions, rows, columns]))
        .map_err(|e| format!("cannot reshape weight `{weight}`: {e}"))?
        .permuted_axes(IxDyn(&[0, 2, 1]))
        .as_standard_layout()
        .into_owned();

    let scale_shape = if per_channel { vec![directions, rows] } else { vec![directions] };
    let scale = ArrayD::from_shape_vec(IxDyn(&scale_shape), quantized.scales)
        .map_err(|e| format!("cannot shape the scales of `{weight}`: {e}"))?;
    let zero_point = ArrayD::from_shape_vec(IxDyn(&scale_shape), quantized.zero_points)
        .map_err(|e| format!("cannot shape the zero points of `{weight}`: {e}"))?;
    Ok(QuantizedInitializers {
        values: ir::tensor_from_i8("", &values),
        scale: ir::tensor_from_f32("", &scale),
        zero_point: ir::tensor_from_i8("", &zero_point),
    })
}
