//! Block-quantized weights in one form, whatever ONNX node held them, and their encodings as
//! GGUF tensors: Q4_0, Q8_0, or F32 when neither holds them exactly.
//!
//! A weight of `rows` rows (N, the MatMul's output columns) of `cols` values (K, its input
//! dimension) is stored as signed codes `q = code - zero_point` with one scale per block of
//! `block` values along a row: `value = q * scale`. ggml's layout is the same (`ne[0]` is
//! the row length), so a row of the weight is a row of the GGUF tensor.
//!
//! - Q4_0 blocks hold 32 values: the scale `d` as float16, then 16 bytes where byte `j`
//!   holds `q[j] + 8` in its low nibble and `q[j + 16] + 8` in its high nibble;
//!   `value = (nibble - 8) * d`.
//! - Q8_0 blocks hold 32 values: `d` as float16, then the 32 codes as int8; `value = q * d`.
//!
//! A block of 64, 128 ... values splits into Q4_0 or Q8_0 blocks of 32 with the same scale,
//! which is exact. The codes carry over unchanged; only the scale is rounded to float16, and
//! [`ScaleRounding`] counts the scales that float16 does not hold exactly.

use half::f16;

/// The element types of GGUF tensors this exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q8_0,
}

impl GgmlType {
    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q8_0 => "Q8_0",
        }
    }
}

/// The values of a GGUF block of Q4_0 or Q8_0.
pub const QK: usize = 32;

/// A block-quantized weight: `rows` rows of `cols` signed codes, one scale per `block`
/// values of a row.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub rows: usize,
    pub cols: usize,
    pub block: usize,
    /// The bits of a code as the source stored it (4 or 8 for the GGUF block types).
    pub bits: u32,
    /// Whether every zero point was the middle code (0 for signed codes, 2^(bits-1) for
    /// unsigned ones), so that `q` is the code itself re-centred.
    pub symmetric: bool,
    /// `code - zero_point`, row by row: `rows * cols` values.
    pub q: Vec<i16>,
    /// One scale per block, row by row: `rows * ceil(cols / block)` values.
    pub scales: Vec<f32>,
}

/// How far rounding the scales to float16 moved them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScaleRounding {
    /// Scales written.
    pub scales: usize,
    /// Scales that float16 does not hold exactly.
    pub rounded: usize,
    /// The largest relative change of a rounded scale.
    pub max_relative: f64,
}

impl ScaleRounding {
    pub fn merge(&mut self, other: ScaleRounding) {
        self.scales += other.scales;
        self.rounded += other.rounded;
        self.max_relative = self.max_relative.max(other.max_relative);
    }

    fn record(&mut self, scale: f32, stored: f16) {
        self.scales += 1;
        let back = stored.to_f32();
        if back != scale {
            self.rounded += 1;
            let relative = if scale == 0.0 {
                f64::INFINITY
            } else {
                ((f64::from(back) - f64::from(scale)) / f64::from(scale)).abs()
            };
            self.max_relative = self.max_relative.max(relative);
        }
    }
}

impl Blocked {
    fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(self.block)
    }

    fn scale(&self, row: usize, col: usize) -> f32 {
        self.scales[row * self.blocks_per_row() + col / self.block]
    }

    /// The GGUF block type that holds this weight exactly (but for the scales' rounding to
    /// float16), or why none does.
    pub fn block_type(&self) -> Result<GgmlType, String> {
        if !self.symmetric {
            return Err("its zero points are not all the middle code (asymmetric)".to_string());
        }
        if !self.block.is_multiple_of(QK) {
            return Err(format!("its block size {} is not a multiple of {QK}", self.block));
        }
        if !self.cols.is_multiple_of(QK) {
            return Err(format!("its K = {} is not a multiple of {QK}", self.cols));
        }
        match self.bits {
            4 => Ok(GgmlType::Q4_0),
            8 => Ok(GgmlType::Q8_0),
            bits => Err(format!("{bits}-bit codes have no GGUF block type here")),
        }
    }

    /// The weight as Q4_0 blocks. Every `q` must lie in -8..=7 ([`Blocked::block_type`]
    /// said Q4_0); a code outside is an error naming it.
    pub fn to_q4_0(&self) -> Result<(Vec<u8>, ScaleRounding), String> {
        self.to_blocks(18, |chunk, row, col, out| {
            for j in 0..QK / 2 {
                let low = nibble(chunk[j], row, col + j)?;
                let high = nibble(chunk[j + QK / 2], row, col + j + QK / 2)?;
                out.push(low | (high << 4));
            }
            Ok(())
        })
    }

    /// The weight as Q8_0 blocks. Every `q` must lie in -128..=127.
    pub fn to_q8_0(&self) -> Result<(Vec<u8>, ScaleRounding), String> {
        self.to_blocks(34, |chunk, row, col, out| {
            for (j, &q) in chunk.iter().enumerate() {
                let code = i8::try_from(q).map_err(|_| {
                    format!("code {q} at row {row}, column {} is outside int8", col + j)
                })?;
                out.extend_from_slice(&code.to_le_bytes());
            }
            Ok(())
        })
    }

    /// The weight as GGUF blocks of `QK` codes of `block_bytes` bytes each: the block's
    /// scale as float16, then the codes as `pack` writes them (given the block's codes, its
    /// row and its first column).
    fn to_blocks(
        &self,
        block_bytes: usize,
        mut pack: impl FnMut(&[i16], usize, usize, &mut Vec<u8>) -> Result<(), String>,
    ) -> Result<(Vec<u8>, ScaleRounding), String> {
        let mut out = Vec::with_capacity(self.rows * self.cols / QK * block_bytes);
        let mut rounding = ScaleRounding::default();
        for row in 0..self.rows {
            let codes = &self.q[row * self.cols..(row + 1) * self.cols];
            for (index, chunk) in codes.chunks_exact(QK).enumerate() {
                let scale = self.scale(row, index * QK);
                let d = f16::from_f32(scale);
                rounding.record(scale, d);
                out.extend_from_slice(&d.to_le_bytes());
                pack(chunk, row, index * QK, &mut out)?;
            }
        }
        Ok((out, rounding))
    }

    /// The weight dequantized to float32, row by row: `q * scale` in float32, as ONNX
    /// Runtime computes it.
    pub fn to_f32(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.cols * 4);
        for row in 0..self.rows {
            for col in 0..self.cols {
                let value = f32::from(self.q[row * self.cols + col]) * self.scale(row, col);
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        out
    }
}

fn nibble(q: i16, row: usize, col: usize) -> Result<u8, String> {
    match u8::try_from(q + 8) {
        Ok(code) if code < 16 => Ok(code),
        _ => Err(format!("code {q} at row {row}, column {col} is outside -8..=7")),
    }
}

/// Reads `width` bits (at most 16) starting at bit `offset` of `bytes`, the first bit being
/// the lowest of the first byte. `None` when the bits run past the end.
pub fn read_bits(bytes: &[u8], offset: usize, width: u32) -> Option<u32> {
    let first = offset / 8;
    let shift = offset % 8;
    let needed = (shift + width as usize).div_ceil(8);
    let window = bytes.get(first..first + needed)?;
    let mut value = 0u32;
    for (i, &byte) in window.iter().enumerate() {
        value |= u32::from(byte) << (8 * i);
    }
    Some((value >> shift) & ((1u32 << width) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(bits: u32, q: Vec<i16>, scales: Vec<f32>, cols: usize, block: usize) -> Blocked {
        let rows = q.len() / cols;
        Blocked { rows, cols, block, bits, symmetric: true, q, scales }
    }

    #[test]
    fn bits_are_read_from_the_low_end_across_bytes() {
        let bytes = [0b1010_0110, 0b0000_0011];
        assert_eq!(read_bits(&bytes, 0, 4), Some(0b0110));
        assert_eq!(read_bits(&bytes, 4, 4), Some(0b1010));
        assert_eq!(read_bits(&bytes, 6, 4), Some(0b1110));
        assert_eq!(read_bits(&bytes, 8, 8), Some(3));
        assert_eq!(read_bits(&bytes, 12, 8), None);
    }

    #[test]
    fn q4_0_puts_element_j_low_and_j_plus_16_high() {
        let q: Vec<i16> = (0..32).map(|i| (i % 16) as i16 - 8).collect();
        let (bytes, rounding) = weight(4, q.clone(), vec![0.5], 32, 32).to_q4_0().unwrap();
        assert_eq!(bytes.len(), 18);
        assert_eq!(&bytes[..2], &f16::from_f32(0.5).to_le_bytes());
        for j in 0..16 {
            let expected = ((q[j] + 8) as u8) | (((q[j + 16] + 8) as u8) << 4);
            assert_eq!(bytes[2 + j], expected, "byte {j}");
        }
        assert_eq!(rounding, ScaleRounding { scales: 1, rounded: 0, max_relative: 0.0 });
    }

    #[test]
    fn a_block_of_64_splits_into_two_blocks_with_its_scale() {
        let q: Vec<i16> = (0..64).map(|i| (i % 15) as i16 - 7).collect();
        let (bytes, _) = weight(4, q, vec![0.1], 64, 64).to_q4_0().unwrap();
        assert_eq!(bytes.len(), 36);
        assert_eq!(&bytes[0..2], &bytes[18..20]);
    }

    #[test]
    fn q8_0_stores_the_codes_as_int8() {
        let q: Vec<i16> = (0..32).map(|i| i as i16 * 8 - 128).collect();
        let (bytes, rounding) = weight(8, q.clone(), vec![0.1], 32, 32).to_q8_0().unwrap();
        assert_eq!(bytes.len(), 34);
        let codes: Vec<i16> = bytes[2..].iter().map(|&b| i16::from(b as i8)).collect();
        assert_eq!(codes, q);
        assert_eq!(rounding.rounded, 1);
        assert!(rounding.max_relative > 0.0 && rounding.max_relative < 1e-3);
    }

    #[test]
    fn block_type_says_why_not() {
        let mut w = weight(4, vec![0; 64], vec![1.0; 4], 64, 16);
        assert!(w.block_type().unwrap_err().contains("block size 16"));
        w.block = 64;
        w.scales = vec![1.0];
        w.symmetric = false;
        assert!(w.block_type().unwrap_err().contains("asymmetric"));
        w.symmetric = true;
        assert_eq!(w.block_type(), Ok(GgmlType::Q4_0));
        w.bits = 2;
        assert!(w.block_type().unwrap_err().contains("2-bit"));
    }

    #[test]
    fn a_code_out_of_range_is_an_error_not_a_wrap() {
        let error = weight(4, vec![8; 32], vec![1.0], 32, 32).to_q4_0().unwrap_err();
        assert!(error.contains("outside -8..=7"), "{error}");
    }
}
