//! Quantized weights as the ONNX operators that read them store them, read into one form:
//! [`Blocked`] codes for block-quantized weights, or float values for weights with one
//! scale per tensor or per channel, which GGUF has no block type for.
//!
//! - `com.microsoft.MatMulNBits`: codes `[N, k_blocks, blob]` in blocks along K.
//! - `com.microsoft.GatherBlockQuantized`: a 2-D table of INT4 or UINT4 codes (or UINT8
//!   holding 4- or 8-bit codes, in MatMulNBits' convention) in blocks along `quantize_axis`.
//! - blocked `DequantizeLinear` (`block_size` set) of a 2-D initializer, blocks along
//!   axis 0 (the K of a `[K, N]` MatMul weight) or axis 1 (the dim of a `[vocab, dim]`
//!   table that a Gather reads).
//! - per-tensor or per-axis `DequantizeLinear` of an integer initializer: dequantized to
//!   `(q - zero_point) * scale` in float32, as ONNX Runtime computes it.

use std::collections::HashMap;

use tracing::debug;

use super::blocks::GgmlType;
use super::blocks::{read_bits, Blocked};
use super::source::{check_len, float_values, integer_values, typed_bytes, Tensor, MAX_DIMS};
use super::GgufError;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{NodeProto, TensorProto};
use crate::ir::{data_type_name, node_attr_int};

/// A quantized weight found at a node, or why it is not read.
pub enum Found {
    /// Block-quantized codes; `transposed` when the blocks run along the ONNX weight's
    /// columns (axis 0), so that GGUF's rows are its columns.
    Blocked { blocked: Blocked, transposed: bool },
    /// One scale per tensor or per channel: the weight dequantized to F32.
    Dequantized(Tensor),
    /// Why the weight is left out.
    Skip(String),
}

type Initializers<'g> = HashMap<&'g str, &'g TensorProto>;

fn input(node: &NodeProto, index: usize) -> Option<&str> {
    node.input.get(index).map(String::as_str).filter(|n| !n.is_empty())
}

/// The weight of a MatMulNBits node. `None` when its packed codes are not an initializer.
pub fn matmul_nbits(
    node: &NodeProto,
    initializers: &Initializers<'_>,
) -> Result<Option<Found>, GgufError> {
    let label = format!("MatMulNBits `{}`", node.name());
    let malformed = |reason: String| GgufError::Malformed { what: label.clone(), reason };
    let Some(b) = input(node, 1).and_then(|name| initializers.get(name)) else {
        debug!("{label}: its weight is not an initializer");
        return Ok(None);
    };
    let Some(scales) = input(node, 2).and_then(|name| initializers.get(name)) else {
        return Ok(Some(Found::Skip("its scales are not an initializer".to_string())));
    };
    if input(node, 4).is_some() {
        return Ok(Some(Found::Skip("`g_idx` reorders its blocks, which is not read".into())));
    }
    let attr = |name: &str| {
        node_attr_int(node, name)
            .ok_or_else(|| malformed(format!("it has no integer attribute `{name}`")))
    };
    let (k, n, block) = (attr("K")?, attr("N")?, attr("block_size")?);
    let bits = node_attr_int(node, "bits").unwrap_or(4);
    let (Ok(k), Ok(n), Ok(block), Ok(bits)) =
        (usize::try_from(k), usize::try_from(n), usize::try_from(block), u32::try_from(bits))
    else {
        return Err(malformed(format!("K {k}, N {n}, block_size {block}, bits {bits}")));
    };
    if !(2..=8).contains(&bits) || block == 0 || !(block * bits as usize).is_multiple_of(8) {
        return Ok(Some(Found::Skip(format!("bits {bits} with block_size {block} is not read"))));
    }

    let k_blocks = k.div_ceil(block);
    let blob = block * bits as usize / 8;
    let codes = typed_bytes(b, &[DataType::Uint8]).map_err(&malformed)?;
    check_len("B", codes.len(), n * k_blocks * blob).map_err(&malformed)?;
    let scales = float_values(scales).map_err(&malformed)?;
    check_len("scales", scales.len(), n * k_blocks).map_err(&malformed)?;

    let middle = 1i16 << (bits - 1);
    let zero_points = match input(node, 3) {
        None => None,
        Some(name) => {
            let Some(tensor) = initializers.get(name) else {
                return Ok(Some(Found::Skip("its zero points are not an initializer".into())));
            };
            if tensor.data_type() != DataType::Uint8 as i32 {
                let found = data_type_name(tensor.data_type());
                return Ok(Some(Found::Skip(format!("{found} zero points are not read"))));
            }
            let bytes = typed_bytes(tensor, &[DataType::Uint8]).map_err(&malformed)?;
            let row_bytes = (k_blocks * bits as usize).div_ceil(8);
            check_len("zero_points", bytes.len(), n * row_bytes).map_err(&malformed)?;
            Some((bytes, row_bytes))
        }
    };

    let mut q = Vec::with_capacity(n * k);
    let mut symmetric = true;
    for row in 0..n {
        for col in 0..k {
            let block_index = col / block;
            let offset =
                ((row * k_blocks + block_index) * blob) * 8 + (col % block) * bits as usize;
            let code = read_bits(&codes, offset, bits).map_or(0, |c| c as i16);
            let zero = match &zero_points {
                None => middle,
                Some((bytes, row_bytes)) => {
                    let offset = row * row_bytes * 8 + block_index * bits as usize;
                    read_bits(bytes, offset, bits).map_or(0, |z| z as i16)
                }
            };
            symmetric &= zero == middle;
            q.push(code - zero);
        }
    }
    let blocked = Blocked { rows: n, cols: k, block, bits, symmetric, q, scales };
    Ok(Some(Found::Blocked { blocked, transposed: true }))
}

/// A 2-D weight of codes in blocks along one axis, with one scale (and zero point) per
/// block: the layout of blocked DequantizeLinear and of GatherBlockQuantized.
struct Grid<'a> {
    /// The weight's logical shape (codes, not bytes).
    dims: [usize; 2],
    /// The axis the blocks run along: 0 or 1.
    axis: usize,
    block: usize,
    bits: u32,
    signed: bool,
    codes: &'a [u8],
    scales: &'a [f32],
}

impl Grid<'_> {
    /// GGUF's rows and row length: the blocks run along a row.
    fn rows_cols(&self) -> (usize, usize) {
        match self.axis {
            0 => (self.dims[1], self.dims[0]),
            _ => (self.dims[0], self.dims[1]),
        }
    }

    fn blocks_per_row(&self) -> usize {
        self.rows_cols().1.div_ceil(self.block)
    }

    /// The position of a block's scale in the ONNX scales tensor (and of its zero point,
    /// where zero points have the scales' shape).
    fn scale_index(&self, row: usize, block: usize) -> usize {
        match self.axis {
            0 => block * self.dims[1] + row,
            _ => row * self.blocks_per_row() + block,
        }
    }

    fn code_index(&self, row: usize, col: usize) -> usize {
        match self.axis {
            0 => col * self.dims[1] + row,
            _ => row * self.dims[1] + col,
        }
    }

    /// The codes re-centred on their zero points (`zero(row, block)`), row by row.
    fn read(&self, zero: impl Fn(usize, usize) -> i16) -> Blocked {
        let (rows, cols) = self.rows_cols();
        let blocks = self.blocks_per_row();
        let middle = if self.signed { 0 } else { 1i16 << (self.bits - 1) };
        let mut q = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(rows * blocks);
        let mut symmetric = true;
        for row in 0..rows {
            scales.extend((0..blocks).map(|b| self.scales[self.scale_index(row, b)]));
            for col in 0..cols {
                let zero = zero(row, col / self.block);
                symmetric &= zero == middle;
                let code = code_at(self.codes, self.code_index(row, col), self.bits, self.signed);
                q.push(code - zero);
            }
        }
        Blocked { rows, cols, block: self.block, bits: self.bits, symmetric, q, scales }
    }
}

/// Element `index` of packed codes of `bits`, sign-extended when `signed`.
fn code_at(bytes: &[u8], index: usize, bits: u32, signed: bool) -> i16 {
    let raw = read_bits(bytes, index * bits as usize, bits).unwrap_or(0) as i16;
    if signed && raw >= 1 << (bits - 1) {
        raw - (1 << bits)
    } else {
        raw
    }
}

/// The bits and signedness of INT4, UINT4, INT8 and UINT8 codes.
fn code_type(data_type: i32) -> Option<(u32, bool)> {
    match DataType::try_from(data_type) {
        Ok(DataType::Int4) => Some((4, true)),
        Ok(DataType::Uint4) => Some((4, false)),
        Ok(DataType::Int8) => Some((8, true)),
        Ok(DataType::Uint8) => Some((8, false)),
        _ => None,
    }
}

/// The table of a GatherBlockQuantized node. `None` when its data is not an initializer.
pub fn gather_block_quantized(
    node: &NodeProto,
    initializers: &Initializers<'_>,
) -> Result<Option<Found>, GgufError> {
    let label = format!("GatherBlockQuantized `{}`", node.name());
    let malformed = |reason: String| GgufError::Malformed { what: label.clone(), reason };
    let Some(data) = input(node, 0).and_then(|name| initializers.get(name)) else {
        debug!("{label}: its table is not an initializer");
        return Ok(None);
    };
    let Some(scales) = input(node, 2).and_then(|name| initializers.get(name)) else {
        return Ok(Some(Found::Skip("its scales are not an initializer".to_string())));
    };
    if data.dims.len() != 2 {
        return Ok(Some(Found::Skip(format!(
            "its table has {} dimensions; only 2-D tables are read",
            data.dims.len()
        ))));
    }
    let quantize_axis = node_attr_int(node, "quantize_axis").unwrap_or(1);
    let axis = match quantize_axis {
        0 | -2 => 0,
        1 | -1 => 1,
        other => return Err(malformed(format!("`quantize_axis` {other} of a 2-D table"))),
    };
    let block = node_attr_int(node, "block_size").unwrap_or(128);
    let attr_bits = node_attr_int(node, "bits").unwrap_or(4);
    let (Ok(rows), Ok(stored_cols), Ok(block)) =
        (usize::try_from(data.dims[0]), usize::try_from(data.dims[1]), usize::try_from(block))
    else {
        return Err(malformed(format!("dimensions {:?}, block_size {block}", data.dims)));
    };
    if block == 0 {
        return Err(malformed("`block_size` 0".to_string()));
    }

    // INT4/UINT4 hold one code per element, default zero point 0; UINT8 packs 8 / bits
    // codes per byte along the last axis, default zero point the middle code, zero points
    // packed per row (MatMulNBits' convention).
    let data_type = DataType::try_from(data.data_type()).unwrap_or(DataType::Undefined);
    let (bits, signed, packed) = match (data_type, attr_bits) {
        (DataType::Int4, _) => (4, true, false),
        (DataType::Uint4, _) => (4, false, false),
        (DataType::Uint8, 4) => (4, false, true),
        (DataType::Uint8, 8) => (8, false, true),
        (DataType::Uint8, other) => {
            return Ok(Some(Found::Skip(format!("{other}-bit UINT8 tables are not read"))))
        }
        (other, _) => {
            let name = other.as_str_name();
            return Ok(Some(Found::Skip(format!("{name} tables are not read"))));
        }
    };
    if packed && axis != 1 {
        return Err(malformed("UINT8 tables take `quantize_axis` 1 only".to_string()));
    }
    let cols = if packed { stored_cols * (8 / bits as usize) } else { stored_cols };
    let codes = typed_bytes(data, &[data_type]).map_err(&malformed)?;
    let scale_values = float_values(scales).map_err(&malformed)?;
    let grid = Grid {
        dims: [rows, cols],
        axis,
        block,
        bits,
        signed,
        codes: &codes,
        scales: &scale_values,
    };
    let (grid_rows, _) = grid.rows_cols();
    let blocks = grid.blocks_per_row();
    check_len("scales", scale_values.len(), grid_rows * blocks).map_err(&malformed)?;

    let middle = if packed { 1i16 << (bits - 1) } else { 0 };
    let blocked = match input(node, 3) {
        None => grid.read(|_, _| middle),
        Some(name) => {
            let Some(tensor) = initializers.get(name) else {
                return Ok(Some(Found::Skip("its zero points are not an initializer".into())));
            };
            let zeros = typed_bytes(tensor, &[data_type]).map_err(&malformed)?;
            if packed {
                let row_bytes = (blocks * bits as usize).div_ceil(8);
                check_len("zero_points", zeros.len(), rows * row_bytes).map_err(&malformed)?;
                grid.read(|row, b| {
                    let offset = row * row_bytes * 8 + b * bits as usize;
                    read_bits(&zeros, offset, bits).map_or(0, |z| z as i16)
                })
            } else {
                let expected = (grid_rows * blocks * bits as usize).div_ceil(8);
                check_len("zero_points", zeros.len(), expected).map_err(&malformed)?;
                grid.read(|row, b| code_at(&zeros, grid.scale_index(row, b), bits, signed))
            }
        }
    };
    Ok(Some(Found::Blocked { blocked, transposed: axis == 0 }))
}

/// The weight a DequantizeLinear reads from an initializer: blocked, or per tensor or per
/// axis. `None` when the node dequantizes something else.
pub fn dequantize_linear(
    node: &NodeProto,
    initializers: &Initializers<'_>,
) -> Result<Option<Found>, GgufError> {
    let Some(x) = input(node, 0).and_then(|name| initializers.get(name)) else { return Ok(None) };
    match node_attr_int(node, "block_size").unwrap_or(0) {
        block if block > 0 => blocked_dequantize_linear(node, x, block, initializers),
        _ => dequantized(node, x, initializers),
    }
}

/// A blocked DequantizeLinear of a 2-D INT4, UINT4, INT8 or UINT8 initializer.
fn blocked_dequantize_linear(
    node: &NodeProto,
    x: &TensorProto,
    block: i64,
    initializers: &Initializers<'_>,
) -> Result<Option<Found>, GgufError> {
    let label = format!("DequantizeLinear `{}`", node.name());
    let malformed = |reason: String| GgufError::Malformed { what: label.clone(), reason };
    let Some((bits, signed)) = code_type(x.data_type()) else {
        let found = data_type_name(x.data_type());
        return Ok(Some(Found::Skip(format!("blocked {found} codes are not read"))));
    };
    if x.dims.len() != 2 {
        return Ok(Some(Found::Skip(format!(
            "its blocked codes have {} dimensions; only 2-D weights are read",
            x.dims.len()
        ))));
    }
    let axis = match node_attr_int(node, "axis").unwrap_or(1) {
        0 | -2 => 0,
        1 | -1 => 1,
        other => return Err(malformed(format!("`axis` {other} of a 2-D weight"))),
    };
    let (Ok(d0), Ok(d1), Ok(block)) =
        (usize::try_from(x.dims[0]), usize::try_from(x.dims[1]), usize::try_from(block))
    else {
        return Err(malformed(format!("dimensions {:?}, block_size {block}", x.dims)));
    };
    let Some(scale) = input(node, 1).and_then(|name| initializers.get(name)) else {
        return Ok(Some(Found::Skip("its scale is not an initializer".to_string())));
    };
    let types = [DataType::try_from(x.data_type()).unwrap_or(DataType::Undefined)];
    let codes = typed_bytes(x, &types).map_err(&malformed)?;
    check_len("x", codes.len(), (d0 * d1 * bits as usize).div_ceil(8)).map_err(&malformed)?;
    let scale_values = float_values(scale).map_err(&malformed)?;
    let grid =
        Grid { dims: [d0, d1], axis, block, bits, signed, codes: &codes, scales: &scale_values };
    let (rows, _) = grid.rows_cols();
    let blocks = grid.blocks_per_row();
    check_len("x_scale", scale_values.len(), rows * blocks).map_err(&malformed)?;

    // ONNX's default zero point is 0, for unsigned codes too.
    let blocked = match input(node, 2) {
        None => grid.read(|_, _| 0),
        Some(name) => {
            let Some(tensor) = initializers.get(name) else {
                return Ok(Some(Found::Skip("its zero point is not an initializer".into())));
            };
            let zeros = typed_bytes(tensor, &types).map_err(&malformed)?;
            let expected = (rows * blocks * bits as usize).div_ceil(8);
            check_len("x_zero_point", zeros.len(), expected).map_err(&malformed)?;
            grid.read(|row, b| code_at(&zeros, grid.scale_index(row, b), bits, signed))
        }
    };
    Ok(Some(Found::Blocked { blocked, transposed: axis == 0 }))
}

/// A per-tensor or per-axis DequantizeLinear of an integer initializer, dequantized:
/// `(q - zero_point) * scale` in float32, as ONNX Runtime computes it.
fn dequantized(
    node: &NodeProto,
    x: &TensorProto,
    initializers: &Initializers<'_>,
) -> Result<Option<Found>, GgufError> {
    let label = format!("DequantizeLinear `{}`", node.name());
    let malformed = |reason: String| GgufError::Malformed { what: label.clone(), reason };
    let Ok(codes) = integer_values(x) else {
        let found = data_type_name(x.data_type());
        return Ok(Some(Found::Skip(format!("{found} codes are not read"))));
    };
    if x.dims.len() > MAX_DIMS {
        return Ok(Some(Found::Skip(format!(
            "it has {} dimensions, GGUF at most {MAX_DIMS}",
            x.dims.len()
        ))));
    }
    let Some(scale) = input(node, 1).and_then(|name| initializers.get(name)) else {
        return Ok(Some(Found::Skip("its scale is not an initializer".to_string())));
    };
    let scales = float_values(scale).map_err(&malformed)?;
    let zeros = match input(node, 2) {
        None => vec![0; scales.len()],
        Some(name) => {
            let Some(tensor) = initializers.get(name) else {
                return Ok(Some(Found::Skip("its zero point is not an initializer".into())));
            };
            let zeros = integer_values(tensor).map_err(&malformed)?;
            check_len("x_zero_point", zeros.len(), scales.len()).map_err(&malformed)?;
            zeros
        }
    };

    // The channel of element `i`: 0 for one scale, its index along `axis` otherwise.
    let rank = x.dims.len() as i64;
    let axis = node_attr_int(node, "axis").unwrap_or(1);
    let dims: Vec<usize> = x.dims.iter().map(|&d| d.max(0) as usize).collect();
    let channel: Box<dyn Fn(usize) -> usize> = if scales.len() == 1 {
        Box::new(|_| 0)
    } else {
        let axis = if axis < 0 { axis + rank } else { axis };
        let Some(&length) = usize::try_from(axis).ok().and_then(|a| dims.get(a)) else {
            return Err(malformed(format!("`axis` {axis} of a {rank}-D weight")));
        };
        check_len("x_scale", scales.len(), length).map_err(&malformed)?;
        let inner: usize = dims[axis as usize + 1..].iter().product();
        Box::new(move |i| (i / inner) % length)
    };
    let mut data = Vec::with_capacity(codes.len() * 4);
    for (i, &code) in codes.iter().enumerate() {
        let c = channel(i);
        let value = (i64::from(code) - i64::from(zeros[c])) as f32 * scales[c];
        data.extend_from_slice(&value.to_le_bytes());
    }
    let mut ne: Vec<u64> = dims.iter().rev().map(|&d| d as u64).collect();
    if ne.is_empty() {
        ne.push(1);
    }
    let tensor = Tensor {
        onnx_name: x.name().to_string(),
        ne,
        kind: GgmlType::F32,
        data,
        transposed: false,
    };
    Ok(Some(Found::Dequantized(tensor)))
}
