//! Conversions that keep what a model computes but change its form for a target: fixed
//! shapes, and ONNX Runtime's own graph optimizer.

pub mod ort_optimize;
pub mod shapes;
