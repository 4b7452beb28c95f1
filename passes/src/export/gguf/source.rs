//! What of an ONNX graph goes into the GGUF file, and in which form.
//!
//! - The weight of every `com.microsoft.MatMulNBits` node whose packed codes, scales and
//!   zero points are initializers, as a block-quantized weight ([`Blocked`]).
//! - The weight of every blocked `DequantizeLinear` (`block_size` set, blocks along axis 0,
//!   the K of a `[K, N]` MatMul weight) of a 2-D INT4, UINT4, INT8 or UINT8 initializer.
//! - Every other FLOAT or FLOAT16 initializer of the main graph, as stored.
//!
//! The codes, scales and zero points a quantized weight is made of are not written apart
//! from it. Initializers of other element types, subgraphs' initializers and Constant nodes
//! are left out.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use tracing::debug;

use super::blocks::{read_bits, Blocked, GgmlType, ScaleRounding};
use super::GgufError;
use crate::ir::proto::tensor_proto::{DataLocation, DataType};
use crate::ir::proto::{GraphProto, NodeProto, TensorProto};
use crate::ir::tensor::element_count;
use crate::ir::{data_type_name, node_attr_int};

/// A tensor to write, before it gets its GGUF name.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// The ONNX initializer it comes from (a quantized weight's packed codes).
    pub onnx_name: String,
    /// ggml's dimensions, the row length first.
    pub ne: Vec<u64>,
    pub kind: GgmlType,
    pub data: Vec<u8>,
    /// Whether the rows are the columns of the ONNX weight: a quantized MatMul weight
    /// `[K, N]` is written as N rows of K values.
    pub transposed: bool,
}

/// The tensors of a graph and what a reader should know about them.
#[derive(Debug, Default)]
pub struct Collected {
    pub tensors: Vec<Tensor>,
    /// What was left out or written in another form than it could have been, and why.
    pub notes: Vec<String>,
    /// How far the quantized weights' scales moved when rounded to float16.
    pub rounding: ScaleRounding,
}

/// GGUF allows at most this many dimensions.
const MAX_DIMS: usize = 4;

/// A quantized weight found at a node, or why it is not read.
enum Found {
    Weight { blocked: Blocked, parts: Vec<String> },
    Skip(String),
}

/// Collects the tensors of `graph` in the order of its initializers.
pub fn collect(graph: &GraphProto) -> Result<Collected, GgufError> {
    let initializers: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut collected = Collected::default();
    let mut weights: HashMap<String, (Blocked, String)> = HashMap::new();
    let mut parts: HashSet<String> = HashSet::new();

    for node in &graph.node {
        let found = match (node.domain(), node.op_type()) {
            ("com.microsoft", "MatMulNBits") => matmul_nbits(node, &initializers)?,
            ("" | "ai.onnx", "DequantizeLinear") => dequantize_linear(node, &initializers)?,
            _ => continue,
        };
        let weight = node.input.get(usize::from(node.op_type() == "MatMulNBits"));
        let weight = weight.cloned().unwrap_or_default();
        let label = format!("{} `{}`", node.op_type(), node.name());
        match found {
            Some(Found::Weight { blocked, parts: used }) => {
                parts.extend(used);
                weights.entry(weight).or_insert((blocked, label));
            }
            Some(Found::Skip(reason)) => {
                collected.notes.push(format!("{label}: weight `{weight}` left out: {reason}"))
            }
            None => {}
        }
    }

    for initializer in &graph.initializer {
        let name = initializer.name();
        if let Some((blocked, label)) = weights.remove(name) {
            let tensor = encode(name, &blocked, &label, &mut collected)?;
            collected.tensors.push(tensor);
        } else if !parts.contains(name) {
            match float_tensor(initializer)? {
                Ok(tensor) => collected.tensors.push(tensor),
                Err(reason) => debug!("initializer `{name}` left out: {reason}"),
            }
        }
    }
    Ok(collected)
}

/// The weight as Q4_0 or Q8_0 when one holds it, otherwise dequantized to F32 with a note.
fn encode(
    name: &str,
    blocked: &Blocked,
    label: &str,
    collected: &mut Collected,
) -> Result<Tensor, GgufError> {
    let malformed = |reason: String| GgufError::Malformed { what: label.to_string(), reason };
    let (kind, data) = match blocked.block_type() {
        Ok(GgmlType::Q4_0) => {
            let (data, rounding) = blocked.to_q4_0().map_err(malformed)?;
            collected.rounding.merge(rounding);
            (GgmlType::Q4_0, data)
        }
        Ok(GgmlType::Q8_0) => {
            let (data, rounding) = blocked.to_q8_0().map_err(malformed)?;
            collected.rounding.merge(rounding);
            (GgmlType::Q8_0, data)
        }
        Ok(_) | Err(_) => {
            let why = blocked.block_type().err().unwrap_or_default();
            collected.notes.push(format!(
                "{label}: weight `{name}` written as F32 (dequantized), not Q4_0 or Q8_0: {why}"
            ));
            (GgmlType::F32, blocked.to_f32())
        }
    };
    Ok(Tensor {
        onnx_name: name.to_string(),
        ne: vec![blocked.cols as u64, blocked.rows as u64],
        kind,
        data,
        transposed: true,
    })
}

/// A FLOAT or FLOAT16 initializer as stored, or why it is left out. Malformed data is an
/// error.
fn float_tensor(tensor: &TensorProto) -> Result<Result<Tensor, String>, GgufError> {
    let kind = match DataType::try_from(tensor.data_type()) {
        Ok(DataType::Float) => GgmlType::F32,
        Ok(DataType::Float16) => GgmlType::F16,
        _ => return Ok(Err(format!("{} is not a float type", data_type_name(tensor.data_type())))),
    };
    if tensor.dims.len() > MAX_DIMS {
        return Ok(Err(format!(
            "it has {} dimensions, GGUF at most {MAX_DIMS}",
            tensor.dims.len()
        )));
    }
    if tensor.dims.contains(&0) {
        return Ok(Err("it is empty".to_string()));
    }
    let data = stored_bytes(tensor).map_err(|reason| malformed_tensor(tensor, reason))?;
    // ggml lists dimensions innermost first; a scalar is one value.
    let mut ne: Vec<u64> = tensor.dims.iter().rev().map(|&d| d as u64).collect();
    if ne.is_empty() {
        ne.push(1);
    }
    Ok(Ok(Tensor {
        onnx_name: tensor.name().to_string(),
        ne,
        kind,
        data: data.into_owned(),
        transposed: false,
    }))
}

/// The weight of a MatMulNBits node. `None` when its packed codes are not an initializer.
fn matmul_nbits(
    node: &NodeProto,
    initializers: &HashMap<&str, &TensorProto>,
) -> Result<Option<Found>, GgufError> {
    let label = format!("MatMulNBits `{}`", node.name());
    let malformed = |reason: String| GgufError::Malformed { what: label.clone(), reason };
    let input = |i: usize| node.input.get(i).map(String::as_str).filter(|n| !n.is_empty());
    let Some(b) = input(1).and_then(|name| initializers.get(name)) else {
        debug!("{label}: its weight is not an initializer");
        return Ok(None);
    };
    let Some(scales) = input(2).and_then(|name| initializers.get(name)) else {
        return Ok(Some(Found::Skip("its scales are not an initializer".to_string())));
    };
    if input(4).is_some() {
        return Ok(Some(Found::Skip("`g_idx` reorders its blocks, which is not read".into())));
    }
    let attr = |name: &str| {
        node_attr_int(node, name)
            .ok_or_else(|| malformed(format!("it has no integer attribute `{name}`")))
    };
    let (k, n, block) = (attr("K")?, attr("N")?, attr("block_size")?);
    let bits = node_attr_int(node, "bits").unwrap_or(4);
    let (Ok(k), Ok(n), Ok(block), Ok(bits)) =
        (usize::try_from(k), usize::try_from(n), usize::try_from(block), u32::try_from(bits))
    else {
        return Err(malformed(format!("K {k}, N {n}, block_size {block}, bits {bits}")));
    };
    if !(2..=8).contains(&bits) || block == 0 || !(block * bits as usize).is_multiple_of(8) {
        return Ok(Some(Found::Skip(format!("bits {bits} with block_size {block} is not read"))));
    }

    let k_blocks = k.div_ceil(block);
    let blob = block * bits as usize / 8;
    let codes = typed_bytes(b, &[DataType::Uint8]).map_err(&malformed)?;
    check_len("B", codes.len(), n * k_blocks * blob).map_err(&malformed)?;
    let scales = float_values(scales).map_err(&malformed)?;
    check_len("scales", scales.len(), n * k_blocks).map_err(&malformed)?;

    let middle = 1i16 << (bits - 1);
    let mut parts = vec![b.name().to_string(), scales_name(node)];
    let zero_points = match input(3) {
        None => None,
        Some(name) => {
            let Some(tensor) = initializers.get(name) else {
                return Ok(Some(Found::Skip("its zero points are not an initializer".into())));
            };
            if tensor.data_type() != DataType::Uint8 as i32 {
                let found = data_type_name(tensor.data_type());
                return Ok(Some(Found::Skip(format!("{found} zero points are not read"))));
            }
            let bytes = typed_bytes(tensor, &[DataType::Uint8]).map_err(&malformed)?;
            let row_bytes = (k_blocks * bits as usize).div_ceil(8);
            check_len("zero_points", bytes.len(), n * row_bytes).map_err(&malformed)?;
            parts.push(name.to_string());
            Some((bytes, row_bytes))
        }
    };

    let mut q = Vec::with_capacity(n * k);
    let mut symmetric = true;
    for row in 0..n {
        for col in 0..k {
            let block_index = col / block;
            let offset =
                ((row * k_blocks + block_index) * blob) * 8 + (col % block) * bits as usize;
            let code = read_bits(&codes, offset, bits).map_or(0, |c| c as i16);
            let zero = match &zero_points {
                None => middle,
                Some((bytes, row_bytes)) => {
                    let offset = row * row_bytes * 8 + block_index * bits as usize;
                    read_bits(bytes, offset, bits).map_or(0, |z| z as i16)
                }
            };
            symmetric &= zero == middle;
            q.push(code - zero);
        }
    }
    let blocked = Blocked { rows: n, cols: k, block, bits, symmetric, q, scales };
    Ok(Some(Found::Weight { blocked, parts }))
}

fn scales_name(node: &NodeProto) -> String {
    node.input.get(2).cloned().unwrap_or_default()
}

/// The weight of a blocked DequantizeLinear of a 2-D integer initializer. `None` when the
/// node dequantizes something else.
fn dequantize_linear(
    node: &NodeProto,
    initializers: &HashMap<&str, &TensorProto>,
) -> Result<Option<Found>, GgufError> {
    let label = format!("DequantizeLinear `{}`", node.name());
    let malformed = |reason: String| GgufError::Malformed { what: label.clone(), reason };
    let input = |i: usize| node.input.get(i).map(String::as_str).filter(|n| !n.is_empty());
    let Some(x) = input(0).and_then(|name| initializers.get(name)) else { return Ok(None) };
    let (bits, signed) = match DataType::try_from(x.data_type()) {
        Ok(DataType::Int4) => (4, true),
        Ok(DataType::Uint4) => (4, false),
        Ok(DataType::Int8) => (8, true),
        Ok(DataType::Uint8) => (8, false),
        _ => return Ok(None),
    };
    let block = node_attr_int(node, "block_size").unwrap_or(0);
    if x.dims.len() != 2 || block <= 0 {
        debug!("{label}: not a blocked 2-D weight");
        return Ok(None);
    }
    let axis = node_attr_int(node, "axis").unwrap_or(1);
    if axis != 0 && axis != -2 {
        return Ok(Some(Found::Skip(format!(
            "its blocks run along axis {axis}, not along K (axis 0)"
        ))));
    }
    let (Ok(k), Ok(n), Ok(block)) =
        (usize::try_from(x.dims[0]), usize::try_from(x.dims[1]), usize::try_from(block))
    else {
        return Err(malformed(format!("dimensions {:?}, block_size {block}", x.dims)));
    };
    let Some(scale) = input(1).and_then(|name| initializers.get(name)) else {
        return Ok(Some(Found::Skip("its scale is not an initializer".to_string())));
    };
    let k_blocks = k.div_ceil(block);
    let scale_values = float_values(scale).map_err(&malformed)?;
    check_len("x_scale", scale_values.len(), k_blocks * n).map_err(&malformed)?;

    let types = [DataType::try_from(x.data_type()).unwrap_or(DataType::Undefined)];
    let codes = typed_bytes(x, &types).map_err(&malformed)?;
    check_len("x", codes.len(), (k * n * bits as usize).div_ceil(8)).map_err(&malformed)?;
    let mut parts = vec![x.name().to_string(), scale.name().to_string()];
    let zero_points = match input(2) {
        None => None,
        Some(name) => {
            let Some(tensor) = initializers.get(name) else {
                return Ok(Some(Found::Skip("its zero point is not an initializer".into())));
            };
            let bytes = typed_bytes(tensor, &types).map_err(&malformed)?;
            check_len("x_zero_point", bytes.len(), (k_blocks * n * bits as usize).div_ceil(8))
                .map_err(&malformed)?;
            parts.push(name.to_string());
            Some(bytes)
        }
    };

    let value = |bytes: &[u8], index: usize| {
        let raw = read_bits(bytes, index * bits as usize, bits).unwrap_or(0) as i16;
        if signed && raw >= 1 << (bits - 1) {
            raw - (1 << bits)
        } else {
            raw
        }
    };
    let middle = if signed { 0 } else { 1i16 << (bits - 1) };
    let mut q = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n * k_blocks);
    let mut symmetric = true;
    for row in 0..n {
        for block_index in 0..k_blocks {
            scales.push(scale_values[block_index * n + row]);
        }
        for col in 0..k {
            let zero = zero_points.as_ref().map_or(middle, |z| value(z, (col / block) * n + row));
            symmetric &= zero == middle;
            q.push(value(&codes, col * n + row) - zero);
        }
    }
    let blocked = Blocked { rows: n, cols: k, block, bits, symmetric, q, scales };
    Ok(Some(Found::Weight { blocked, parts }))
}

fn check_len(input: &str, found: usize, expected: usize) -> Result<(), String> {
    if found == expected {
        return Ok(());
    }
    Err(format!(
        "`{input}` holds {found} elements or bytes where its attributes call for {expected}"
    ))
}

/// A FLOAT or FLOAT16 tensor's values as f32 (float16 widens exactly).
fn float_values(tensor: &TensorProto) -> Result<Vec<f32>, String> {
    let bytes = typed_bytes(tensor, &[DataType::Float, DataType::Float16])?;
    let values = if tensor.data_type() == DataType::Float as i32 {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    };
    Ok(values)
}

/// The tensor's bytes as ONNX packs them in `raw_data`, when its type is one of `allowed`.
fn typed_bytes<'t>(tensor: &'t TensorProto, allowed: &[DataType]) -> Result<Cow<'t, [u8]>, String> {
    if !allowed.iter().any(|&t| t as i32 == tensor.data_type()) {
        let allowed: Vec<_> = allowed.iter().map(|t| t.as_str_name()).collect();
        return Err(format!(
            "`{}` is {}, not {}",
            tensor.name(),
            data_type_name(tensor.data_type()),
            allowed.join(" or ")
        ));
    }
    stored_bytes(tensor).map_err(|reason| format!("`{}`: {reason}", tensor.name()))
}

/// The tensor's data as little-endian packed bytes, from `raw_data` or a typed field, checked
/// against its dimensions.
fn stored_bytes(tensor: &TensorProto) -> Result<Cow<'_, [u8]>, String> {
    if tensor.data_location() == DataLocation::External {
        return Err("its data is in an external file that was not loaded".to_string());
    }
    let count = element_count(tensor).map_err(|e| e.to_string())?;
    let data_type = DataType::try_from(tensor.data_type()).unwrap_or(DataType::Undefined);
    let bits = match data_type {
        DataType::Int4 | DataType::Uint4 => 4,
        DataType::Int8 | DataType::Uint8 => 8,
        DataType::Float16 => 16,
        DataType::Float => 32,
        other => return Err(format!("{} data is not read", other.as_str_name())),
    };
    let expected = (count * bits).div_ceil(8);

    let bytes: Cow<'_, [u8]> = match &tensor.raw_data {
        Some(raw) if !raw.is_empty() || count == 0 => Cow::Borrowed(raw),
        _ => match data_type {
            DataType::Float => {
                Cow::Owned(tensor.float_data.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
            DataType::Float16 => Cow::Owned(
                tensor.int32_data.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
            ),
            DataType::Int8 | DataType::Uint8 => {
                Cow::Owned(tensor.int32_data.iter().map(|&v| v as u8).collect())
            }
            _ => return Err("4-bit data outside `raw_data` is not read".to_string()),
        },
    };
    if bytes.len() != expected {
        return Err(format!(
            "dimensions {:?} call for {expected} bytes of {}, found {}",
            tensor.dims,
            data_type.as_str_name(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn malformed_tensor(tensor: &TensorProto, reason: String) -> GgufError {
    GgufError::Malformed { what: format!("initializer `{}`", tensor.name()), reason }
}
