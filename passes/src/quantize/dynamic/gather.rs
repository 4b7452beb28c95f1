//! Gather on a constant table, and Transpose of a value that is already 8-bit.
//!
//! As ORT's tool does in dynamic mode, a Gather whose data is a float initializer reads the
//! table stored as UINT8 with one asymmetric scale over the full range [0, 255] (never
//! reduced, never per channel), and its output stays 8-bit: a quantized MatMul, Conv or
//! Attention reading it uses it with the table's scale and zero point instead of quantizing
//! it again at run time, a Transpose moves it in 8-bit, and the [`super::Rewriter`] adds a
//! `DequantizeLinear` for every other reader.
//!
//! A Transpose also moves in 8-bit an activation that an earlier node quantized at run time,
//! as ORT's tool does; a float reader of its output then reads it dequantized, with the
//! quantization error, and a quantized MatMul reads it without quantizing it again.

use ndarray::{arr0, ArrayD};

use super::{
    check_weight, QuantizedInitializers, QuantizedNames, Rewrite, Rewriter, Skip, WeightForm,
};
use crate::ir;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{NodeProto, TensorProto};
use crate::quantize::params::{compute_params, min_max, quantize_value, QuantType};

/// Gather reading the quantized table, or why it stays in float; a Gather on a computed
/// tensor or on a table that is not float (shape arithmetic) is left alone silently.
pub(super) fn rewrite_gather(
    node: &NodeProto,
    rewriter: &mut Rewriter<'_>,
) -> Result<Rewrite, Skip> {
    let graph = rewriter.graph;
    let (Some(table), Some(output)) = (node.input.first(), node.output.first()) else {
        return Err("the node has no data input or no output".into());
    };
    match ir::initializer(graph, table) {
        None => return Ok(Rewrite::Untouched),
        Some(tensor) if !is_float_type(tensor.data_type()) => return Ok(Rewrite::Untouched),
        Some(_) => {}
    }
    check_weight(graph, table)?;

    let quantized =
        rewriter.weight(table, WeightForm::Table, |tensor| quantize_table(tensor, table))?;
    rewriter.replaced_weights.insert(table.clone());

    let output_quantized = rewriter.names.fresh(&format!("{output}_quantized"));
    let mut gather = node.clone();
    gather.input[0] = quantized.values.clone();
    gather.output[0] = output_quantized.clone();

    let names = QuantizedNames { values: output_quantized, ..quantized };
    rewriter.integer_only.insert(output.clone(), names);
    Ok(Rewrite::Quantized(vec![gather]))
}

/// Transpose in 8-bit of a value an earlier node quantized: a quantized Gather's output, or
/// an activation an earlier MatMul, Conv or Attention quantized at run time. Any other
/// Transpose is left alone.
pub(super) fn rewrite_transpose(node: &NodeProto, rewriter: &mut Rewriter<'_>) -> Rewrite {
    let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
        return Rewrite::Untouched;
    };
    let quantized = rewriter.integer_only.get(input).or_else(|| rewriter.activations.get(input));
    let Some(quantized) = quantized.cloned() else {
        return Rewrite::Untouched;
    };

    let output_quantized = rewriter.names.fresh(&format!("{output}_quantized"));
    let mut transpose = node.clone();
    transpose.input[0] = quantized.values.clone();
    transpose.output[0] = output_quantized.clone();

    let names = QuantizedNames { values: output_quantized, ..quantized };
    rewriter.integer_only.insert(output.clone(), names);
    Rewrite::Quantized(vec![transpose])
}

/// Whether ORT's tool would treat a table of this type as quantizable (float or float16).
fn is_float_type(data_type: i32) -> bool {
    data_type == DataType::Float as i32 || data_type == DataType::Float16 as i32
}

/// The table as UINT8 with one asymmetric scale and zero point.
pub(super) fn quantize_table(
    tensor: &TensorProto,
    table: &str,
) -> Result<QuantizedInitializers, Skip> {
    let data =
        ir::tensor_to_f32(tensor).map_err(|e| format!("cannot read table `{table}`: {e}"))?;
    let (rmin, rmax) =
        min_max(data.iter()).map_err(|e| format!("cannot quantize table `{table}`: {e}"))?;

    let (qmin, qmax) = QuantType::Uint8.range(false, false);
    let params = compute_params(rmin, rmax, qmin, qmax, false);
    let values: ArrayD<u8> = data.mapv(|x| quantize_value(x, params, QuantType::Uint8) as u8);

    // The zero point lies in [0, 255]: the range always includes 0.
    let zero_point = params.zero_point.clamp(0, 255) as u8;
    Ok(QuantizedInitializers {
        values: ir::tensor_from_u8("", &values),
        scale: ir::tensor_from_f32("", &arr0(params.scale).into_dyn()),
        zero_point: ir::tensor_from_u8("", &arr0(zero_point).into_dyn()),
    })
}
