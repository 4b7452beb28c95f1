//! Finding a node's constant weight: an initializer, a Constant node's value, or either behind
//! a 2-D Transpose (folded: the transposed weight is quantized), read as f32 values.

use super::block::ScalePrecision;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, TensorProto};
use crate::ir::shapes::constant_value;
use crate::ir::{self, GraphIndex};

/// A constant 2-D float weight, row-major after any folded Transpose.
#[derive(Clone, Debug)]
pub struct ConstWeight {
    /// The value the node reads (the initializer, Constant output or Transpose output).
    pub value: String,
    /// The name of the stored tensor: the initializer or the Constant node's output.
    pub stored: String,
    pub rows: usize,
    pub cols: usize,
    /// The values, row-major; a quantizer candidate holds none until it is quantized.
    pub values: Vec<f32>,
    /// The element type, which the scales keep.
    pub precision: ScalePrecision,
    /// The bytes the float weight takes.
    pub bytes: usize,
}

/// Why a node's weight is not quantized.
pub type Skip = String;

/// The constant weight `value`, which must be 2-D float32 or float16.
pub fn find(graph: &GraphProto, index: &GraphIndex, value: &str) -> Result<ConstWeight, Skip> {
    if let Some(producer) = index.producer(value) {
        let node = &graph.node[producer];
        if node.op_type() == "Transpose" && matches!(node.domain(), "" | "ai.onnx") {
            let input = node.input.first().map(String::as_str).unwrap_or_default();
            let perm = ir::node_attr_ints(node, "perm");
            if perm.is_some_and(|p| p != [1, 0]) {
                return Err(format!(
                    "weight `{value}` is a Transpose with perm {perm:?}, not [1, 0]"
                ));
            }
            let (tensor, stored) = stored_tensor(graph, index, input).map_err(|why| {
                format!("weight `{value}` is a Transpose of `{input}`, which {why}")
            })?;
            let mut weight = read(tensor, value, &stored)?;
            let (rows, cols) = (weight.rows, weight.cols);
            let original = std::mem::take(&mut weight.values);
            weight.values = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| original[r * cols + c])
                .collect();
            (weight.rows, weight.cols) = (cols, rows);
            return Ok(weight);
        }
    }
    let (tensor, stored) =
        stored_tensor(graph, index, value).map_err(|why| format!("weight `{value}` {why}"))?;
    read(tensor, value, &stored)
}

/// The tensor behind `value` when it is an initializer or a Constant node's output.
fn stored_tensor<'g>(
    graph: &'g GraphProto,
    index: &GraphIndex,
    value: &str,
) -> Result<(std::borrow::Cow<'g, TensorProto>, String), String> {
    if let Some(tensor) = ir::initializer(graph, value) {
        if graph.input.iter().any(|input| input.name() == value) {
            return Err("is also a graph input, so it can be overridden at run time".into());
        }
        return Ok((std::borrow::Cow::Borrowed(tensor), value.to_string()));
    }
    if let Some(producer) = index.producer(value) {
        let node = &graph.node[producer];
        if node.op_type() == "Constant" && matches!(node.domain(), "" | "ai.onnx") {
            return constant_value(node)
                .map(|t| (std::borrow::Cow::Owned(t), value.to_string()))
                .ok_or_else(|| "is a Constant without a tensor value".to_string());
        }
        return Err(format!("is computed by a {} node, not a constant", node.op_type()));
    }
    Err("is not a constant (a graph input)".into())
}

fn read(
    tensor: std::borrow::Cow<'_, TensorProto>,
    value: &str,
    stored: &str,
) -> Result<ConstWeight, Skip> {
    let dims = &tensor.dims;
    if dims.len() != 2 {
        return Err(format!("weight `{value}` has rank {}, not 2", dims.len()));
    }
    let (rows, cols) = match (usize::try_from(dims[0]), usize::try_from(dims[1])) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => (r, c),
        _ => return Err(format!("weight `{value}` has dimensions {dims:?}")),
    };
    let data_type = tensor.data_type();
    let (values, precision) = if data_type == DataType::Float as i32 {
        let array = ir::tensor_to_f32(&tensor).map_err(|e| format!("weight `{value}`: {e}"))?;
        (array.iter().copied().collect::<Vec<f32>>(), ScalePrecision::Float32)
    } else if data_type == DataType::Float16 as i32 {
        (
            read_f16(&tensor, rows * cols).map_err(|e| format!("weight `{value}`: {e}"))?,
            ScalePrecision::Float16,
        )
    } else {
        let name = ir::data_type_name(data_type);
        return Err(format!("weight `{value}` is {name}, not FLOAT or FLOAT16"));
    };
    if values.len() != rows * cols {
        return Err(format!("weight `{value}` holds {} values for {dims:?}", values.len()));
    }
    if let Some(position) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("weight `{value}` holds {} at element {position}", values[position]));
    }
    let bytes = values.len() * if precision == ScalePrecision::Float16 { 2 } else { 4 };
    Ok(ConstWeight {
        value: value.to_string(),
        stored: stored.to_string(),
        rows,
        cols,
        values,
        precision,
        bytes,
    })
}

/// FLOAT16 values from `raw_data` or from `int32_data` (one value's bits per entry).
fn read_f16(tensor: &TensorProto, count: usize) -> Result<Vec<f32>, String> {
    match &tensor.raw_data {
        Some(raw) if !raw.is_empty() || tensor.int32_data.is_empty() => {
            if raw.len() != count * 2 {
                return Err(format!("raw_data holds {} bytes, expected {}", raw.len(), count * 2));
            }
            Ok(raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect())
        }
        _ => Ok(tensor
            .int32_data
            .iter()
            .map(|&bits| half::f16::from_bits(bits as u16).to_f32())
            .collect()),
    }
}
