//! GGUF export: a model's weights as a GGUF version 3 file.
//!
//! The file is written with the `gguf-rs-lib` crate. Of the crates that write GGUF, it is the
//! one kept up to date that writes version 3 with exact Q4_0 and Q8_0 block sizes, a chosen
//! alignment and metadata in a stable (sorted) order, and reads the same files back, over
//! `serde` and `thiserror` only. `ggus` writes raw bytes with panics on bad input, and
//! `candle-core` would bring a whole tensor framework for its GGUF module.
//!
//! What the file holds ([`source`] decides, [`quantized`] reads, [`blocks`] encodes):
//! - each block-quantized weight (`com.microsoft.MatMulNBits`, `GatherBlockQuantized`,
//!   blocked `DequantizeLinear`): as Q4_0 (4-bit) or Q8_0 (8-bit) when its zero points are
//!   the middle code, its block size a multiple of 32 and its row a multiple of 32, with the
//!   codes carried over exactly and the scales rounded to float16; otherwise dequantized to
//!   F32. A MatMul weight `[K, N]` blocked along K is written as ggml's `ne = [K, N]`: N rows
//!   of K values, its transpose (the way llama.cpp stores linear layers); a table `[vocab,
//!   dim]` blocked along dim keeps its layout;
//! - each per-tensor or per-axis `DequantizeLinear` weight, dequantized to F32;
//! - every other FLOAT or FLOAT16 initializer as F32 or F16, as stored, its ONNX dimensions
//!   reversed into ggml's order (a reader that reverses them back, as gguf-py does, sees the
//!   ONNX shape), but for the scales and zero points of quantized operators ([`roles`]).
//!
//! Weights GGUF has no type for (the INT8 codes of MatMulInteger, ConvInteger ...) are left
//! out and named in the summary; when that leaves only 1-D tensors (biases, scales, norms),
//! the export fails with [`GgufError::AllLeftOut`].
//!
//! Metadata: `general.architecture` = `onnx` (the file is no llama.cpp architecture),
//! `general.name` (the graph's name, when it has one), `general.alignment` = 32,
//! `general.quantization_version` = 2, `general.file_type` (ggml's file type of the type
//! holding most values: 0 all F32, 1 mostly F16, 2 mostly Q4_0, 7 mostly Q8_0), and
//! per tensor, in file order, `pipeline.onnx_names` (the ONNX initializer each tensor comes
//! from) and `pipeline.transposed` (whether its rows are the ONNX weight's columns).
//!
//! Tensor names are the ONNX initializer names when they fit ggml's 63 bytes (its 64-byte
//! name field ends with a NUL); longer ones become their first bytes, `~` and a 16-digit
//! hash of the whole name, and `pipeline.onnx_names` keeps the original.

pub mod blocks;
pub mod quantized;
pub mod roles;
pub mod source;

use std::collections::{BTreeMap, HashMap};

use gguf_rs_lib::builder::GGUFBuilder;
use gguf_rs_lib::format::metadata::{MetadataArray, MetadataValue};
use gguf_rs_lib::format::types::GGUFValueType;
use gguf_rs_lib::tensor::TensorType;

use crate::ir::proto::ModelProto;
use blocks::GgmlType;

/// The alignment of tensor data in the file.
pub const ALIGNMENT: u32 = 32;

/// The longest tensor name ggml loads, in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// The value of `general.architecture`.
pub const ARCHITECTURE: &str = "onnx";

/// Why a model could not be exported to GGUF.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The model has no weight to write.
    #[error("the model has no float or quantized weights to write to GGUF{detail}")]
    Nothing { detail: String },

    /// Every weight is quantized in a form GGUF has no type for, so the file would hold
    /// nothing but biases, scales and norms.
    #[error(
        "every weight of the model is left out of the GGUF file, which would hold only \
         {written} one-dimensional tensors (biases, scales, norms): {notes}. GGUF holds float \
         weights and block-quantized ones (Q4_0, Q8_0), not the 8-bit codes of integer \
         operators such as MatMulInteger, ConvInteger or QLinearConv: put `export` before \
         `quantize_dynamic` / `quantize_static` in the recipe, or quantize with \
         `quantize_weights` instead"
    )]
    AllLeftOut { written: usize, notes: String },

    /// A node or initializer the export reads holds data its own attributes contradict.
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },

    /// Two tensors would have the same GGUF name.
    #[error("tensors `{first}` and `{second}` both get the GGUF name `{name}`; rename one")]
    NameClash { name: String, first: String, second: String },

    /// The GGUF writer refused the file.
    #[error("writing the GGUF file failed: {0}")]
    Write(String),
}

/// A GGUF file made from a model.
#[derive(Debug, Clone)]
pub struct Exported {
    pub bytes: Vec<u8>,
    /// What the file holds, in one line.
    pub summary: String,
}

/// Writes the weights of `model`'s main graph as a GGUF file.
pub fn export(model: &ModelProto) -> Result<Exported, GgufError> {
    let Some(graph) = model.graph.as_ref() else {
        return Err(GgufError::Nothing { detail: " (it has no graph)".to_string() });
    };
    // The notes reach the log once, in the summary the pass logs.
    let collected = source::collect(graph)?;
    // Biases, norms and other 1-D tensors are no model without the weights they go with.
    let only_vectors = collected.tensors.iter().all(|t| t.ne.len() < 2);
    if !collected.left_out.is_empty() && only_vectors {
        return Err(GgufError::AllLeftOut {
            written: collected.tensors.len(),
            notes: collected.notes.join("; "),
        });
    }
    if collected.tensors.is_empty() {
        let detail = match collected.notes.is_empty() {
            true => String::new(),
            false => format!(": {}", collected.notes.join("; ")),
        };
        return Err(GgufError::Nothing { detail });
    }

    let names = gguf_names(&collected.tensors)?;
    let mut builder = GGUFBuilder::new()
        .with_tensor_alignment(ALIGNMENT as usize)
        .add_metadata("general.architecture", MetadataValue::String(ARCHITECTURE.into()))
        .add_metadata("general.alignment", MetadataValue::U32(ALIGNMENT))
        .add_metadata("general.quantization_version", MetadataValue::U32(2))
        .add_metadata("general.file_type", MetadataValue::U32(file_type(&collected.tensors)))
        .add_metadata(
            "pipeline.onnx_names",
            string_array(collected.tensors.iter().map(|t| t.onnx_name.clone())),
        )
        .add_metadata(
            "pipeline.transposed",
            array(
                GGUFValueType::Bool,
                collected.tensors.iter().map(|t| MetadataValue::Bool(t.transposed)),
            ),
        );
    if !graph.name().is_empty() {
        builder = builder.add_metadata("general.name", MetadataValue::String(graph.name().into()));
    }

    let mut counts: BTreeMap<GgmlType, usize> = BTreeMap::new();
    for (tensor, name) in collected.tensors.into_iter().zip(names) {
        *counts.entry(tensor.kind).or_default() += 1;
        builder = builder
            .add_tensor(name, tensor.ne, tensor_type(tensor.kind), tensor.data)
            .map_err(|e| GgufError::Write(e.to_string()))?;
    }
    let (bytes, _) = builder.build_to_bytes().map_err(|e| GgufError::Write(e.to_string()))?;

    let summary = summary(&counts, bytes.len(), &collected.rounding, &collected.notes);
    Ok(Exported { bytes, summary })
}

/// The GGUF name of every tensor: its ONNX name, shortened when ggml could not load it.
fn gguf_names(tensors: &[source::Tensor]) -> Result<Vec<String>, GgufError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut names = Vec::with_capacity(tensors.len());
    for tensor in tensors {
        let name = gguf_name(&tensor.onnx_name);
        if let Some(first) = seen.insert(name.clone(), &tensor.onnx_name) {
            return Err(GgufError::NameClash {
                name,
                first: first.to_string(),
                second: tensor.onnx_name.clone(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// `name` if it fits in [`MAX_NAME_BYTES`]; otherwise its first bytes (whole characters),
/// `~` and the 64-bit FNV-1a hash of the whole name in hex.
pub fn gguf_name(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_string();
    }
    let hash = fnv1a(name.as_bytes());
    let room = MAX_NAME_BYTES - 17;
    let mut end = room;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash:016x}", &name[..end])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// ggml's `general.file_type` for the type that holds the most values.
fn file_type(tensors: &[source::Tensor]) -> u32 {
    let mut values: BTreeMap<GgmlType, u64> = BTreeMap::new();
    for tensor in tensors {
        *values.entry(tensor.kind).or_default() += tensor.ne.iter().product::<u64>();
    }
    let most = values.into_iter().max_by_key(|&(kind, count)| (count, kind)).map(|(k, _)| k);
    match most {
        Some(GgmlType::F16) => 1,
        Some(GgmlType::Q4_0) => 2,
        Some(GgmlType::Q8_0) => 7,
        Some(GgmlType::F32) | None => 0,
    }
}

fn tensor_type(kind: GgmlType) -> TensorType {
    match kind {
        GgmlType::F32 => TensorType::F32,
        GgmlType::F16 => TensorType::F16,
        GgmlType::Q4_0 => TensorType::Q4_0,
        GgmlType::Q8_0 => TensorType::Q8_0,
    }
}

fn string_array(values: impl Iterator<Item = String>) -> MetadataValue {
    array(GGUFValueType::String, values.map(MetadataValue::String))
}

fn array(
    element_type: GGUFValueType,
    values: impl Iterator<Item = MetadataValue>,
) -> MetadataValue {
    let values: Vec<MetadataValue> = values.collect();
    MetadataValue::Array(Box::new(MetadataArray {
        element_type,
        length: values.len() as u64,
        values,
    }))
}

fn summary(
    counts: &BTreeMap<GgmlType, usize>,
    bytes: usize,
    rounding: &blocks::ScaleRounding,
    notes: &[String],
) -> String {
    let total: usize = counts.values().sum();
    let kinds: Vec<String> =
        counts.iter().map(|(kind, count)| format!("{count} {}", kind.name())).collect();
    let mut summary = format!("GGUF v3 with {total} tensors ({}), {bytes} bytes", kinds.join(", "));
    if rounding.scales > 0 {
        if rounding.rounded == 0 {
            summary.push_str(&format!(
                "; the {} block scales are exact in float16, so the quantized weights are \
                 lossless",
                rounding.scales
            ));
        } else {
            summary.push_str(&format!(
                "; {} of {} block scales rounded to float16 (largest relative change {:.2e})",
                rounding.rounded, rounding.scales, rounding.max_relative
            ));
        }
    }
    if !notes.is_empty() {
        summary.push_str(&format!("; {}", notes.join("; ")));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_stay_and_long_ones_get_a_stable_hash() {
        assert_eq!(gguf_name("layer.0.weight"), "layer.0.weight");
        let exact = "x".repeat(MAX_NAME_BYTES);
        assert_eq!(gguf_name(&exact), exact);

        let long =
            format!("/model/encoder/layer.{}/attention/self/query/MatMul_weight", "0".repeat(40));
        let short = gguf_name(&long);
        assert!(short.len() <= MAX_NAME_BYTES, "{short}");
        assert!(short.starts_with("/model/encoder/layer.000"), "{short}");
        assert_eq!(short, gguf_name(&long));
        assert_ne!(short, gguf_name(&format!("{long}2")));
    }

    #[test]
    fn a_long_name_is_cut_between_characters() {
        let long = "é".repeat(40);
        let short = gguf_name(&long);
        assert!(short.len() <= MAX_NAME_BYTES);
        assert!(short.starts_with("éé"));
    }

    #[test]
    fn fnv1a_matches_its_published_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
