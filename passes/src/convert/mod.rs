//! Conversion passes: the model in another numeric type.
//!
//! [`fp16`] moves float32 computation to float16; [`elem_types`] tells the element type of
//! every value of a graph, which a conversion must know to put Casts where types meet.

pub mod elem_types;
pub mod fp16;
