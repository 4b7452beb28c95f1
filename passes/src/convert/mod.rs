//! Conversions that keep what a model computes but change its form for a target: float16
//! computation, fixed shapes, and ONNX Runtime's own graph optimizer.
//!
//! [`fp16`] moves float32 computation to float16; [`elem_types`] tells the element type of
//! every value of a graph, which a conversion must know to put Casts where types meet;
//! [`shapes`] fixes symbolic dimensions; [`ort_optimize`] keeps the model ONNX Runtime's
//! optimizer writes.

pub mod elem_types;
pub mod fp16;
pub mod ort_optimize;
pub mod shapes;
