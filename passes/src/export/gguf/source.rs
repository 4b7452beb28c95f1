//! What of an ONNX graph goes into the GGUF file, and in which form.
//!
//! - Every quantized weight [`quantized`] reads: block-quantized ones as [`Blocked`] codes,
//!   per-tensor and per-channel ones dequantized to F32.
//! - Every other FLOAT or FLOAT16 initializer of the main graph, as stored, except the
//!   scales and zero points of quantized operators ([`roles`]): they are part of their
//!   weight, written with it or left out with it, never apart.
//!
//! A weight is left out, named in a note with the reason, when it is quantized in a form
//! GGUF has no type for: 8-bit (or 4-bit) codes read by integer operators (MatMulInteger,
//! ConvInteger, QLinearConv ...) or by a quantized operator whose configuration is not read.
//! Initializers of other element types (shapes, indices, INT32 biases of integer
//! operators), subgraphs' initializers and Constant nodes are left out without a note.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use tracing::debug;

use super::blocks::{Blocked, GgmlType, ScaleRounding};
use super::quantized::{self, Found};
use super::roles::{first_reader, Readers};
use super::GgufError;
use crate::ir::data_type_name;
use crate::ir::proto::tensor_proto::{DataLocation, DataType};
use crate::ir::proto::{GraphProto, TensorProto};
use crate::ir::tensor::element_count;

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
    /// The weights left out, each named in a note.
    pub left_out: Vec<String>,
}

/// GGUF allows at most this many dimensions.
pub const MAX_DIMS: usize = 4;

/// A quantized weight as it will be written.
enum Weight {
    Blocked { blocked: Blocked, transposed: bool, label: String },
    Dequantized { tensor: Tensor, label: String },
}

/// Collects the tensors of `graph` in the order of its initializers.
pub fn collect(graph: &GraphProto) -> Result<Collected, GgufError> {
    let initializers: HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name(), t)).collect();
    let readers = Readers::new(graph);
    let mut collected = Collected::default();
    let mut weights: HashMap<String, Weight> = HashMap::new();
    let mut skipped: HashSet<String> = HashSet::new();

    for node in &graph.node {
        let found = match (node.domain(), node.op_type()) {
            ("com.microsoft", "MatMulNBits") => quantized::matmul_nbits(node, &initializers)?,
            ("com.microsoft", "GatherBlockQuantized") => {
                quantized::gather_block_quantized(node, &initializers)?
            }
            ("" | "ai.onnx" | "com.microsoft", "DequantizeLinear") => {
                quantized::dequantize_linear(node, &initializers)?
            }
            _ => continue,
        };
        let weight = node.input.get(usize::from(node.op_type() == "MatMulNBits"));
        let weight = weight.cloned().unwrap_or_default();
        let label = format!("{} `{}`", node.op_type(), node.name());
        match found {
            Some(Found::Blocked { blocked, transposed }) => {
                weights.entry(weight).or_insert(Weight::Blocked { blocked, transposed, label });
            }
            Some(Found::Dequantized(tensor)) => {
                weights.entry(weight).or_insert(Weight::Dequantized { tensor, label });
            }
            Some(Found::Skip(reason)) => {
                let first = skipped.insert(weight.clone());
                if first && !weights.contains_key(&weight) {
                    collected.notes.push(format!("{label}: weight `{weight}` left out: {reason}"));
                    collected.left_out.push(weight);
                }
            }
            None => {}
        }
    }

    let mut dequantized: Vec<String> = Vec::new();
    let mut unread: Vec<String> = Vec::new();
    for initializer in &graph.initializer {
        let name = initializer.name();
        match weights.remove(name) {
            Some(Weight::Blocked { blocked, transposed, label }) => {
                let tensor = encode(name, &blocked, transposed, &label, &mut collected)?;
                collected.tensors.push(tensor);
                continue;
            }
            Some(Weight::Dequantized { tensor, label }) => {
                dequantized.push(format!("`{name}` ({label})"));
                collected.tensors.push(tensor);
                continue;
            }
            None => {}
        }
        if skipped.contains(name) {
            continue;
        }
        if readers.only_quantization_parameter(name) {
            debug!("initializer `{name}` left out: it is a scale or zero point of a weight");
            continue;
        }
        match float_tensor(initializer)? {
            Ok(tensor) => collected.tensors.push(tensor),
            Err(_) if quantized_codes(initializer) => {
                let kind = data_type_name(initializer.data_type());
                let reader = first_reader(&readers, name);
                unread.push(format!("`{name}` ({kind} {:?}, read by {reader})", initializer.dims));
                collected.left_out.push(name.to_string());
            }
            Err(reason) => debug!("initializer `{name}` left out: {reason}"),
        }
    }
    if !dequantized.is_empty() {
        collected.notes.push(format!(
            "{} written as F32, dequantized as (q - zero point) * scale, since GGUF has no type \
             for codes with one scale per tensor or per channel: {}",
            count(dequantized.len(), "weight"),
            dequantized.join(", ")
        ));
    }
    if !unread.is_empty() {
        collected.notes.push(format!(
            "{} left out, since GGUF has no type for the codes of integer operators: {}",
            count(unread.len(), "weight"),
            unread.join(", ")
        ));
    }
    Ok(collected)
}

fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ => format!("{n} {what}s"),
    }
}

/// Whether `tensor` holds 4-, 8- or 16-bit integer codes: a quantized weight, not shape
/// arithmetic (INT64) or a bias of an integer operator (INT32).
fn quantized_codes(tensor: &TensorProto) -> bool {
    matches!(
        DataType::try_from(tensor.data_type()),
        Ok(DataType::Int4
            | DataType::Uint4
            | DataType::Int8
            | DataType::Uint8
            | DataType::Int16
            | DataType::Uint16)
    )
}

/// The weight as Q4_0 or Q8_0 when one holds it, otherwise dequantized to F32 with a note.
fn encode(
    name: &str,
    blocked: &Blocked,
    transposed: bool,
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
        transposed,
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

pub(super) fn check_len(input: &str, found: usize, expected: usize) -> Result<(), String> {
    if found == expected {
        return Ok(());
    }
    Err(format!(
        "`{input}` holds {found} elements or bytes where its attributes call for {expected}"
    ))
}

/// A FLOAT or FLOAT16 tensor's values as f32 (float16 widens exactly).
pub(super) fn float_values(tensor: &TensorProto) -> Result<Vec<f32>, String> {
    let bytes = typed_bytes(tensor, &[DataType::Float, DataType::Float16])?;
    let values = if tensor.data_type() == DataType::Float as i32 {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    };
    Ok(values)
}

/// The values of an INT4, UINT4, INT8, UINT8, INT16, UINT16 or INT32 tensor.
pub(super) fn integer_values(tensor: &TensorProto) -> Result<Vec<i32>, String> {
    use DataType::*;
    let data_type = DataType::try_from(tensor.data_type()).unwrap_or(Undefined);
    let allowed = [Int4, Uint4, Int8, Uint8, Int16, Uint16, Int32];
    let bytes = typed_bytes(tensor, &allowed)?;
    let count = element_count(tensor).map_err(|e| e.to_string())?;
    let values = match data_type {
        Int4 | Uint4 => (0..count)
            .map(|i| {
                let nibble = i32::from(bytes[i / 2] >> (4 * (i % 2)) & 0x0f);
                match data_type == Int4 && nibble >= 8 {
                    true => nibble - 16,
                    false => nibble,
                }
            })
            .collect(),
        Int8 => bytes.iter().map(|&b| i32::from(b as i8)).collect(),
        Uint8 => bytes.iter().map(|&b| i32::from(b)).collect(),
        Int16 => {
            bytes.chunks_exact(2).map(|c| i32::from(i16::from_le_bytes([c[0], c[1]]))).collect()
        }
        Uint16 => {
            bytes.chunks_exact(2).map(|c| i32::from(u16::from_le_bytes([c[0], c[1]]))).collect()
        }
        _ => bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    };
    Ok(values)
}

/// The tensor's bytes as ONNX packs them in `raw_data`, when its type is one of `allowed`.
pub(super) fn typed_bytes<'t>(
    tensor: &'t TensorProto,
    allowed: &[DataType],
) -> Result<Cow<'t, [u8]>, String> {
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
        DataType::Float16 | DataType::Int16 | DataType::Uint16 => 16,
        DataType::Float | DataType::Int32 => 32,
        other => return Err(format!("{} data is not read", other.as_str_name())),
    };
    let expected = (count * bits).div_ceil(8);

    let bytes: Cow<'_, [u8]> = match &tensor.raw_data {
        Some(raw) if !raw.is_empty() || count == 0 => Cow::Borrowed(raw),
        _ => match data_type {
            DataType::Float => {
                Cow::Owned(tensor.float_data.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
            DataType::Float16 | DataType::Int16 | DataType::Uint16 => Cow::Owned(
                tensor.int32_data.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
            ),
            DataType::Int32 => {
                Cow::Owned(tensor.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
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
