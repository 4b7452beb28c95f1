//! The ONNX model in memory: protobuf types, load and save, and graph editing helpers.

/// The protobuf types of the ONNX format, generated at build time from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use std::path::PathBuf;

/// Why a model could not be read, written or edited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IrError {
    /// Reading or writing a file failed.
    #[error("cannot access `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// The bytes are not a valid ONNX protobuf message.
    #[error("cannot decode `{path}` as an ONNX model: {source}")]
    Decode { path: PathBuf, source: prost::DecodeError },
}
