//! Quantization passes.

pub mod calibrate;
pub mod dynamic;
pub(crate) mod filter;
pub mod importance;
pub mod params;
pub mod static_quant;
pub mod weights;
