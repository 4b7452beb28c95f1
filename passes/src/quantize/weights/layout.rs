//! Blocked quantization of a weight matrix and the tensors each operator reads it from.
//!
//! A weight is quantized as "lines": the columns of a MatMul weight `[K, N]` (blocks along
//! K), the rows of a Gather table `[vocab, dim]` (blocks along dim). [`Blocked`] holds every
//! block's scale, zero point and codes; the writers lay them out:
//! - [`nbits_tensors`]: MatMulNBits' `B` `uint8 [N, k_blocks, block_size * bits / 8]` with the
//!   last block padded with its zero point, `scales [N, k_blocks]` and packed
//!   `zero_points uint8 [N, ceil(k_blocks * bits / 8)]` (an unused last nibble is 8, as ORT
//!   writes it);
//! - [`qdq_tensors`]: the weight in its own shape as INT4/UINT4 (two per byte, low nibble
//!   first) or INT8/UINT8, with scales and zero points of the weight's shape with the blocked
//!   axis divided into blocks, for a blocked `DequantizeLinear`.

use super::block::{self, BlockSpec, ScalePrecision};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::TensorProto;

/// Every block of a weight's lines.
#[derive(Clone, Debug)]
pub struct Blocked {
    /// How many lines (N columns of a MatMul weight, vocab rows of a table).
    pub lines: usize,
    /// The length of a line (K, or dim).
    pub length: usize,
    pub block_size: usize,
    pub spec: BlockSpec,
    /// `[line][block]`.
    pub scales: Vec<f32>,
    /// `[line][block]`.
    pub zero_points: Vec<u8>,
    /// `[line][position]`, unpadded.
    pub codes: Vec<u8>,
}

impl Blocked {
    /// Quantizes `lines` lines of `length` values, the values of line `l` given by `line(l)`.
    pub fn quantize(
        lines: usize,
        length: usize,
        block_size: usize,
        spec: BlockSpec,
        line: impl Fn(usize) -> Vec<f32>,
    ) -> Blocked {
        let plain = |block: Block<'_>| {
            Ok::<_, std::convert::Infallible>(block::quantize_block(block.values, &spec))
        };
        match Self::quantize_with(lines, length, block_size, spec, line, plain) {
            Ok(blocked) => blocked,
            Err(never) => match never {},
        }
    }

    /// Quantizes as [`Blocked::quantize`] does, each block by `quantize_block`, which returns
    /// the block's stored scale, zero point and codes (one per value), or an error that ends
    /// the quantization.
    pub fn quantize_with<E>(
        lines: usize,
        length: usize,
        block_size: usize,
        spec: BlockSpec,
        line: impl Fn(usize) -> Vec<f32>,
        mut quantize_block: impl FnMut(Block<'_>) -> Result<block::QuantizedBlock, E>,
    ) -> Result<Blocked, E> {
        let blocks = length.div_ceil(block_size);
        let mut scales = Vec::with_capacity(lines * blocks);
        let mut zero_points = Vec::with_capacity(lines * blocks);
        let mut codes = Vec::with_capacity(lines * length);
        for l in 0..lines {
            let values = line(l);
            for (position, chunk) in values.chunks(block_size).enumerate() {
                let offset = position * block_size;
                let quantized = quantize_block(Block { values: chunk, offset })?;
                scales.push(quantized.scale);
                zero_points.push(quantized.zero_point);
                codes.extend(quantized.codes);
            }
        }
        Ok(Blocked { lines, length, block_size, spec, scales, zero_points, codes })
    }

    pub fn blocks_per_line(&self) -> usize {
        self.length.div_ceil(self.block_size)
    }

    fn block_of(&self, line: usize, position: usize) -> usize {
        line * self.blocks_per_line() + position / self.block_size
    }

    /// The dequantized value at `position` of `line`.
    pub fn dequantized(&self, line: usize, position: usize) -> f32 {
        let block = self.block_of(line, position);
        let code = self.codes[line * self.length + position];
        block::dequantize(code, self.zero_points[block], self.scales[block])
    }
}

/// One block of a line, as [`Blocked::quantize_with`] hands it out.
pub struct Block<'a> {
    /// The block's values (the last block of a line may be shorter than the block size).
    pub values: &'a [f32],
    /// The position of the block's first value in its line.
    pub offset: usize,
}

/// The tensors of one quantized weight, unnamed.
pub struct WeightTensors {
    pub values: TensorProto,
    pub scales: TensorProto,
    pub zero_points: Option<TensorProto>,
}

/// MatMulNBits' tensors for a weight quantized by columns (`lines` = N, `length` = K).
pub fn nbits_tensors(blocked: &Blocked) -> WeightTensors {
    let bits = blocked.spec.bits as usize;
    let (n, k_blocks, bs) = (blocked.lines, blocked.blocks_per_line(), blocked.block_size);
    let blob = bs * bits / 8;

    let mut packed = vec![0u8; n * k_blocks * blob];
    for line in 0..n {
        for block in 0..k_blocks {
            let zero_point = blocked.zero_points[line * k_blocks + block];
            let codes = (0..bs).map(|i| {
                let position = block * bs + i;
                match position < blocked.length {
                    true => blocked.codes[line * blocked.length + position],
                    false => zero_point,
                }
            });
            let start = (line * k_blocks + block) * blob;
            pack_into(&mut packed[start..start + blob], codes, bits);
        }
    }

    let scales = float_tensor(&blocked.scales, &[n, k_blocks], blocked.spec.precision);
    let zero_points = (!blocked.spec.symmetric).then(|| {
        let per_line = (k_blocks * bits).div_ceil(8);
        let mut bytes = vec![0u8; n * per_line];
        for line in 0..n {
            let zps = &blocked.zero_points[line * k_blocks..(line + 1) * k_blocks];
            // An unused last nibble holds the neutral 8, as ORT's quantizer leaves it.
            let padded = zps.iter().copied().chain(std::iter::repeat(blocked.spec.mid_code()));
            pack_into(&mut bytes[line * per_line..(line + 1) * per_line], padded, bits);
        }
        raw_tensor(DataType::Uint8, &[n, per_line], bytes)
    });

    WeightTensors {
        values: raw_tensor(DataType::Uint8, &[n, k_blocks, blob], packed),
        scales,
        zero_points,
    }
}

/// Blocked DequantizeLinear tensors. `transposed` says the lines are the columns of the
/// weight (a MatMul weight `[K, N]` from lines of length K); otherwise they are its rows (a
/// table `[vocab, dim]`). Symmetric weights are signed without a zero point tensor.
pub fn qdq_tensors(blocked: &Blocked, transposed: bool) -> WeightTensors {
    let bits = blocked.spec.bits as usize;
    let blocks = blocked.blocks_per_line();
    let signed = blocked.spec.symmetric;
    let mid = blocked.spec.mid_code();
    // The stored code: signed types hold `code - 2^(bits-1)`, in two's complement.
    let stored = |code: u8| if signed { code.wrapping_sub(mid) } else { code };

    let (values_shape, scales_shape) = match transposed {
        true => ([blocked.length, blocked.lines], [blocks, blocked.lines]),
        false => ([blocked.lines, blocked.length], [blocked.lines, blocks]),
    };
    let values: Vec<u8> = match transposed {
        true => (0..blocked.length)
            .flat_map(|k| (0..blocked.lines).map(move |n| (k, n)))
            .map(|(k, n)| stored(blocked.codes[n * blocked.length + k]))
            .collect(),
        false => blocked.codes.iter().map(|&c| stored(c)).collect(),
    };
    let reorder = |per_line: &[f32]| -> Vec<f32> {
        match transposed {
            true => (0..blocks)
                .flat_map(|b| (0..blocked.lines).map(move |n| per_line[n * blocks + b]))
                .collect(),
            false => per_line.to_vec(),
        }
    };
    let scales = float_tensor(&reorder(&blocked.scales), &scales_shape, blocked.spec.precision);

    let (data_type, zp_type) = match (bits, signed) {
        (4, true) => (DataType::Int4, DataType::Int4),
        (4, false) => (DataType::Uint4, DataType::Uint4),
        (_, true) => (DataType::Int8, DataType::Int8),
        (_, false) => (DataType::Uint8, DataType::Uint8),
    };
    let zero_points = (!signed).then(|| {
        let zps: Vec<f32> = blocked.zero_points.iter().map(|&z| z as f32).collect();
        let zps: Vec<u8> = reorder(&zps).iter().map(|&z| z as u8).collect();
        raw_tensor(zp_type, &scales_shape, pack(&zps, bits))
    });
    WeightTensors {
        values: raw_tensor(data_type, &values_shape, pack(&values, bits)),
        scales,
        zero_points,
    }
}

/// Packs codes of `bits` (4 or 8) into bytes, low nibble first; an odd count leaves the last
/// high nibble 0.
pub fn pack(codes: &[u8], bits: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; (codes.len() * bits).div_ceil(8)];
    pack_into(&mut bytes, codes.iter().copied(), bits);
    bytes
}

/// Packs codes into `bytes` until it is full.
fn pack_into(bytes: &mut [u8], codes: impl Iterator<Item = u8>, bits: usize) {
    if bits == 8 {
        for (byte, code) in bytes.iter_mut().zip(codes) {
            *byte = code;
        }
        return;
    }
    let slots = bytes.len() * 2;
    for (i, code) in codes.take(slots).enumerate() {
        bytes[i / 2] |= (code & 0x0f) << (4 * (i % 2));
    }
}

/// A float tensor of `values` in the stored precision.
fn float_tensor(values: &[f32], shape: &[usize], precision: ScalePrecision) -> TensorProto {
    match precision {
        ScalePrecision::Float32 => {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            raw_tensor(DataType::Float, shape, bytes)
        }
        ScalePrecision::Float16 => {
            let bytes = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
            raw_tensor(DataType::Float16, shape, bytes)
        }
    }
}

fn raw_tensor(data_type: DataType, shape: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    }
}

/// The bytes a tensor's data takes, for the size summary.
pub fn data_bytes(tensor: &TensorProto) -> usize {
    tensor.raw_data.as_ref().map_or(0, |raw| raw.len())
}

#[cfg(test)]
mod tests {
    use super::super::block::Rounding;
    use super::*;

    #[test]
    fn four_bit_codes_pack_low_nibble_first() {
        assert_eq!(pack(&[1, 2, 3], 4), [0x21, 0x03]);
        assert_eq!(pack(&[1, 200], 8), [1, 200]);
    }

    #[test]
    fn nbits_layout_pads_the_last_block_with_its_zero_point() {
        let spec = BlockSpec {
            bits: 4,
            symmetric: true,
            rounding: Rounding::WithZeroPoint,
            precision: ScalePrecision::Float32,
        };
        // One column of K = 17 with blocks of 16: the second block has one value.
        let blocked = Blocked::quantize(1, 17, 16, spec, |_| (0..17).map(|v| v as f32).collect());
        let tensors = nbits_tensors(&blocked);
        assert_eq!(tensors.values.dims, [1, 2, 8]);
        let raw = tensors.values.raw_data.unwrap();
        // Block 2 holds 16 / -(16 / 8) + 8 = 0 then 15 padding codes of 8.
        assert_eq!(raw[8], 0x80);
        assert!(raw[9..].iter().all(|&b| b == 0x88));
        assert!(tensors.zero_points.is_none());
    }
}
