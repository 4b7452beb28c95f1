//! Quantization passes.

pub mod calibrate;
pub mod dynamic;
pub(crate) mod filter;
pub mod params;
pub mod static_quant;
pub mod weights;
