//! Quantization passes.

pub mod calibrate;
pub mod dynamic;
pub mod importance;
pub mod params;
pub mod static_quant;
