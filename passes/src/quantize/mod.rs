//! Quantization passes.
