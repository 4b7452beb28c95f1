//! Quantization passes.

pub mod dynamic;
pub mod params;
