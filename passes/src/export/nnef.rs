//! NNEF export through tract: the model as one gzip-compressed tar archive (`.nnef.tgz`),
//! the form `tract` loads with `tract_nnef::nnef().model_for_path(..)`.
//!
//! The model's bytes go through `tract-onnx` (parse), then tract types every value
//! (`into_typed`) and simplifies the graph (`into_decluttered`), and `tract-nnef` writes the
//! typed graph: `graph.nnef` (the network in NNEF's textual form, with tract's extensions
//! for operators NNEF lacks) and one `.dat` file per weight. The archive is written with a
//! fixed timestamp, so the same model always gives the same bytes.
//!
//! A model is refused, with the node and operator named where tract names them, when tract
//! has no implementation of one of its operators, cannot infer a type or shape, or has no
//! NNEF form for an operator it runs. The archive is read back in tract before it is handed
//! out, so a file that tract itself would not load is never written.

use std::io::Write;

use tract_nnef::framework::Nnef;
use tract_onnx::prelude::{Framework, InferenceModelExt, TypedModel};
use tract_onnx::tract_hir::ops::unimpl::UnimplementedOp;
use tract_onnx::WithOnnx;

use crate::ir;
use crate::ir::proto::ModelProto;

/// The file extension of the archive, without the leading dot.
pub const EXTENSION: &str = "nnef.tgz";

/// What to do when tract cannot take the model, appended to every [`NnefError`].
const HINT: &str = "hint: NNEF export goes through tract, which takes float32 models but not \
                    the INT8 ones of quantize_static / quantize_dynamic nor the float16 ones of \
                    convert_fp16; put `export` before those passes, or leave `export: {format: \
                    nnef}` out for this model";

/// Why a model could not be exported to NNEF.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnefError {
    /// The model holds operators tract has no implementation of.
    #[error("tract has no implementation of {nodes}; {HINT}")]
    Unimplemented { nodes: String },

    /// tract could not read the model.
    #[error("tract cannot load the model: {reason}; {HINT}")]
    Load { reason: String },

    /// tract read the model but could not give every value a type and shape.
    #[error("tract cannot infer the types and shapes of the model: {reason}; {HINT}")]
    Typing { reason: String },

    /// tract has no NNEF form for an operator of the typed model.
    #[error("tract cannot write the model as NNEF: {reason}; {HINT}")]
    Serialize { reason: String },

    /// The archive tract wrote does not load back in tract.
    #[error("the NNEF archive tract wrote does not load back in tract: {reason}; {HINT}")]
    Reload { reason: String },
}

/// An NNEF archive made from a model.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The `.nnef.tgz` archive.
    pub bytes: Vec<u8>,
    /// What the archive holds, in one line.
    pub summary: String,
}

/// Writes `model` as a gzip-compressed NNEF tar archive through tract.
pub fn export(model: &ModelProto) -> Result<Exported, NnefError> {
    let bytes = ir::encode(model);
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut bytes.as_slice())
        .map_err(|e| NnefError::Load { reason: chain(&e) })?;
    drop(bytes);
    let inference =
        onnx.model_for_proto_model(&proto).map_err(|e| NnefError::Load { reason: chain(&e) })?;
    drop(proto);

    let unimplemented: Vec<String> = inference
        .nodes()
        .iter()
        .filter(|node| node.op_is::<UnimplementedOp>())
        .map(|node| format!("node `{}` ({})", node.name, unimplemented_op(&node.op.name())))
        .collect();
    if !unimplemented.is_empty() {
        return Err(NnefError::Unimplemented { nodes: unimplemented.join(", ") });
    }

    let typed = inference
        .into_typed()
        .and_then(|typed| typed.into_decluttered())
        .map_err(|e| NnefError::Typing { reason: chain(&e) })?;

    let nnef = tract_nnef::nnef().with_onnx();
    let archive = write_archive(&nnef, &typed)?;

    nnef.model_for_read(&mut archive.as_slice())
        .map_err(|e| NnefError::Reload { reason: chain(&e) })?;

    let constants = typed.nodes().iter().filter(|node| node.op.name() == "Const").count();
    let operations = typed.nodes().len().saturating_sub(constants + typed.inputs.len());
    let summary = format!(
        "NNEF archive written by tract (tar.gz): {operations} operations, {constants} \
         constant tensors, {} bytes",
        archive.len()
    );
    Ok(Exported { bytes: archive, summary })
}

/// The typed model as a gzip-compressed tar archive with a fixed timestamp.
fn write_archive(nnef: &Nnef, typed: &TypedModel) -> Result<Vec<u8>, NnefError> {
    let serialize = |reason: String| NnefError::Serialize { reason };
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut encoder = nnef
        .write_to_tar_with_config(typed, encoder, false, true)
        .map_err(|e| serialize(chain(&e)))?;
    encoder.flush().map_err(|e| serialize(e.to_string()))?;
    encoder.finish().map_err(|e| serialize(e.to_string()))
}

/// `Unimplemented(Det)`, as tract names such an operator, as `op Det`.
fn unimplemented_op(name: &str) -> String {
    let op = name.strip_prefix("Unimplemented(").and_then(|rest| rest.strip_suffix(')'));
    format!("op {}", op.unwrap_or(name))
}

/// Every message of a tract error and its causes, outermost first, joined by `: `.
fn chain(error: &tract_onnx::prelude::TractError) -> String {
    error.chain().map(|cause| cause.to_string()).collect::<Vec<_>>().join(": ")
}
