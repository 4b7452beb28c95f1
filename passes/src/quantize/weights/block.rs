//! The arithmetic of one quantization block: choosing its scale and zero point from its values
//! and turning the values into codes.
//!
//! The choice ([`choose_min_max`]) and the encoding ([`encode`]) are separate so that a
//! data-aware search can pick another scale and zero point for a block and still encode it
//! the same way; [`quantize_block`] is the plain min/max path that does both.
//!
//! The formulas are those of ONNX Runtime's MLAS block quantizer, which its
//! `MatMulNBitsQuantizer` runs, so that codes and scales agree bit for bit:
//! - symmetric: the value of largest magnitude `m`, with its sign (the negative one on a tie),
//!   gives `scale = -m / 2^(bits-1)`, and the zero point is `2^(bits-1)`;
//! - asymmetric: `min = min(block min, 0)`, `max = max(block max, 0)`,
//!   `scale = (max - min) / (2^bits - 1)`, `zp = clamp(roundf(-min / scale), 0, 2^bits - 1)`;
//! - codes: `clamp(roundf(v * (1 / scale) + zp), 0, 2^bits - 1)` for MatMulNBits, and
//!   `clamp(roundf(v * (1 / scale)) + zp, ...)` for the QDQ layout (ORT rounds before adding
//!   the zero point there, which differs on negative halves), with `1 / scale` computed in
//!   f32 and taken as 0 when the scale is 0. `roundf` rounds halves away from zero.

/// How codes are rounded, which differs between ORT's two layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// `roundf(v / scale + zp)`: MatMulNBits' quantizer.
    WithZeroPoint,
    /// `roundf(v / scale) + zp`: ORT's QDQ blockwise quantizer.
    BeforeZeroPoint,
}

/// The precision a block's scale is stored in; codes are computed from the stored scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalePrecision {
    Float32,
    Float16,
}

impl ScalePrecision {
    /// `scale` as it reads back after storage.
    pub fn stored(self, scale: f32) -> f32 {
        match self {
            ScalePrecision::Float32 => scale,
            ScalePrecision::Float16 => half::f16::from_f32(scale).to_f32(),
        }
    }
}

/// How the blocks of one weight are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSpec {
    /// 4 or 8.
    pub bits: u32,
    pub symmetric: bool,
    pub rounding: Rounding,
    pub precision: ScalePrecision,
}

impl BlockSpec {
    /// The largest code, `2^bits - 1`.
    pub fn max_code(&self) -> u8 {
        ((1u32 << self.bits) - 1) as u8
    }

    /// The zero point of symmetric blocks, `2^(bits-1)`: the code of 0.
    pub fn mid_code(&self) -> u8 {
        (1u32 << (self.bits - 1)) as u8
    }
}

/// One quantized block: its scale (as stored), its zero point and one unsigned code per value
/// (`value ~ (code - zero_point) * scale`).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedBlock {
    pub scale: f32,
    pub zero_point: u8,
    pub codes: Vec<u8>,
}

/// Quantizes one block with the plain min/max choice of scale and zero point.
pub fn quantize_block(values: &[f32], spec: &BlockSpec) -> QuantizedBlock {
    let (scale, zero_point) = choose_min_max(values, spec);
    let codes = encode(values, scale, zero_point, spec);
    QuantizedBlock { scale, zero_point, codes }
}

/// The scale (rounded to its stored precision) and zero point of a block from its minimum and
/// maximum, as ORT chooses them. An empty block gets scale 0.
pub fn choose_min_max(values: &[f32], spec: &BlockSpec) -> (f32, u8) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in values {
        min = min.min(v);
        max = max.max(v);
    }
    if values.is_empty() {
        (min, max) = (0.0, 0.0);
    }

    if spec.symmetric {
        let extreme = if max.abs() > min.abs() { max } else { min };
        let half_range = spec.mid_code() as f32;
        (spec.precision.stored(-extreme / half_range), spec.mid_code())
    } else {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let max_code = spec.max_code() as f32;
        let scale = (max - min) / max_code;
        let zero_point_fp = if scale != 0.0 { -min / scale } else { min };
        let zero_point = if zero_point_fp < 0.0 {
            0
        } else if zero_point_fp > max_code {
            spec.max_code()
        } else {
            zero_point_fp.round() as u8
        };
        (spec.precision.stored(scale), zero_point)
    }
}

/// The codes of `values` at `scale` and `zero_point`, rounded as `spec` says.
pub fn encode(values: &[f32], scale: f32, zero_point: u8, spec: &BlockSpec) -> Vec<u8> {
    let reciprocal = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let zp = zero_point as f32;
    let max_code = spec.max_code() as f32;
    values
        .iter()
        .map(|&v| {
            // `f32::round` rounds halves away from zero, as C's roundf.
            let code = match spec.rounding {
                Rounding::WithZeroPoint => (v * reciprocal + zp).round(),
                Rounding::BeforeZeroPoint => (v * reciprocal).round() + zp,
            };
            // NaN codes (from NaN weights) are refused before this; clamp maps them to 0.
            code.clamp(0.0, max_code) as u8
        })
        .collect()
}

/// The value a code stands for: `(code - zero_point) * scale`.
pub fn dequantize(code: u8, zero_point: u8, scale: f32) -> f32 {
    (code as f32 - zero_point as f32) * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    const NBITS4_SYM: BlockSpec = BlockSpec {
        bits: 4,
        symmetric: true,
        rounding: Rounding::WithZeroPoint,
        precision: ScalePrecision::Float32,
    };

    #[test]
    fn symmetric_scale_keeps_the_sign_of_the_largest_magnitude() {
        let block = quantize_block(&[1.0, -4.0, 2.0], &NBITS4_SYM);
        assert_eq!(block.scale, 0.5);
        assert_eq!(block.zero_point, 8);
        // -4 / 0.5 + 8 = 0; 1 / 0.5 + 8 = 10; 2 / 0.5 + 8 = 12.
        assert_eq!(block.codes, [10, 0, 12]);

        let block = quantize_block(&[4.0, -1.0], &NBITS4_SYM);
        assert_eq!(block.scale, -0.5);
        assert_eq!(block.codes, [0, 10]);
    }

    #[test]
    fn rounding_of_negative_halves_differs_between_layouts() {
        let spec = BlockSpec { rounding: Rounding::BeforeZeroPoint, ..NBITS4_SYM };
        // scale 1: -2.5 + 8 = 5.5 -> 6, but round(-2.5) + 8 = -3 + 8 = 5.
        assert_eq!(encode(&[-2.5], 1.0, 8, &NBITS4_SYM), [6]);
        assert_eq!(encode(&[-2.5], 1.0, 8, &spec), [5]);
    }

    #[test]
    fn zero_block_has_zero_scale_and_neutral_codes() {
        let block = quantize_block(&[0.0; 4], &NBITS4_SYM);
        assert_eq!(block.scale, 0.0);
        assert_eq!(block.codes, [8; 4]);
        let spec = BlockSpec { symmetric: false, ..NBITS4_SYM };
        let block = quantize_block(&[0.0; 4], &spec);
        assert_eq!((block.scale, block.zero_point), (0.0, 0));
        assert_eq!(block.codes, [0; 4]);
    }
}
