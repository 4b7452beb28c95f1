//! The ONNX IR and the optimization passes of `pipeline`.
//!
//! This crate reads and writes ONNX models and rewrites them; it knows nothing of recipes,
//! search or ONNX Runtime. A pass gets its typed configuration and a model, and returns a
//! new model or an error that says why it could not.

pub mod bytes;
pub mod convert;
pub mod export;
pub mod fusion;
pub mod ir;
pub mod pass;
pub mod quantize;
