//! Shared helpers of the `quantize_weights` tests: small MatMul models, the test's own
//! reference block quantization (written from the formulas, independent of the pass), and
//! readers that unpack what the pass wrote.

#![allow(dead_code)]

use ndarray::ArrayD;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use pipeline_passes::ir::shapes::Dim;
use pipeline_passes::ir::{self};
use pipeline_passes::pass::{self, PassContext, PassError, Runtime};

/// A float model under construction.
pub struct Builder {
    pub graph: GraphProto,
    pub opset: i64,
}

impl Builder {
    pub fn new(opset: i64) -> Builder {
        Builder { graph: GraphProto { name: Some("test".into()), ..Default::default() }, opset }
    }

    pub fn input(mut self, name: &str, dims: &[i64]) -> Builder {
        self.graph.input.push(info(name, DataType::Float, dims));
        self
    }

    pub fn typed_input(mut self, name: &str, elem: DataType, dims: &[i64]) -> Builder {
        self.graph.input.push(info(name, elem, dims));
        self
    }

    pub fn output(mut self, name: &str) -> Builder {
        self.graph.output.push(ir::tensor_value_info(name, DataType::Float as i32, None));
        self
    }

    pub fn init(mut self, name: &str, values: &ArrayD<f32>) -> Builder {
        self.graph.initializer.push(ir::tensor_from_f32(name, values));
        self
    }

    pub fn tensor(mut self, tensor: TensorProto) -> Builder {
        self.graph.initializer.push(tensor);
        self
    }

    pub fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str], name: &str) -> Builder {
        self.graph.node.push(ir::make_node(op, inputs, outputs, name));
        self
    }

    pub fn raw(mut self, node: NodeProto) -> Builder {
        self.graph.node.push(node);
        self
    }

    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: Some(if self.opset >= 21 { 10 } else { 8 }),
            producer_name: Some("pipeline-tests".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph),
            ..ModelProto::default()
        }
    }
}

fn info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Known(d)).collect();
    ir::tensor_value_info(name, elem as i32, Some(&dims))
}

/// `y = x @ w` with `x: [1, K]` and `w: [K, N]` an initializer.
pub fn matmul_model(w: &ArrayD<f32>, opset: i64) -> ModelProto {
    let k = w.shape()[0] as i64;
    Builder::new(opset)
        .input("x", &[1, k])
        .output("y")
        .init("w", w)
        .node("MatMul", &["x", "w"], &["y"], "fc")
        .build()
}

/// Runs `quantize_weights` with `config` for ONNX Runtime.
pub fn quantize(model: &ModelProto, config: serde_json::Value) -> Result<ModelProto, PassError> {
    quantize_for(model, config, Runtime::OnnxRuntime)
}

pub fn quantize_for(
    model: &ModelProto,
    config: serde_json::Value,
    runtime: Runtime,
) -> Result<ModelProto, PassError> {
    let info = pass::find("quantize_weights").expect("quantize_weights is registered");
    let pass = (info.build)(&config)?;
    pass.run(model.clone(), &PassContext { runtime, ..PassContext::default() })
}

/// The test's own block quantization of one block, written from the formulas: returns
/// (scale, zero point, unsigned codes). `qdq` rounds before adding the zero point.
pub fn reference_block(
    values: &[f32],
    bits: u32,
    symmetric: bool,
    qdq: bool,
) -> (f32, u8, Vec<u8>) {
    let levels = (1u32 << bits) - 1;
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (scale, zp) = if symmetric {
        let half = (1u32 << (bits - 1)) as f32;
        let extreme = if hi.abs() > lo.abs() { hi } else { lo };
        (-extreme / half, 1u32 << (bits - 1))
    } else {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let scale = (hi - lo) / levels as f32;
        let zp = if scale == 0.0 { 0.0 } else { (-lo / scale).round().clamp(0.0, levels as f32) };
        (scale, zp as u32)
    };
    let inverse = if scale == 0.0 { 0.0 } else { 1.0 / scale };
    let codes = values
        .iter()
        .map(|&v| {
            let q = if qdq {
                (v * inverse).round() + zp as f32
            } else {
                (v * inverse + zp as f32).round()
            };
            q.clamp(0.0, levels as f32) as u8
        })
        .collect();
    (scale, zp as u8, codes)
}

/// A named initializer of the main graph.
pub fn initializer<'m>(model: &'m ModelProto, name: &str) -> &'m TensorProto {
    let graph = model.graph.as_ref().expect("a graph");
    graph
        .initializer
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no initializer `{name}`"))
}

/// The nodes of the main graph of type `op`.
pub fn nodes<'m>(model: &'m ModelProto, op: &str) -> Vec<&'m NodeProto> {
    model.graph.as_ref().expect("a graph").node.iter().filter(|n| n.op_type() == op).collect()
}

pub fn attr(node: &NodeProto, name: &str) -> Option<i64> {
    ir::node_attr_int(node, name)
}

/// Float32 or float16 values of a tensor's raw data.
pub fn floats(tensor: &TensorProto) -> Vec<f32> {
    let raw = tensor.raw_data.as_ref().expect("raw data");
    if tensor.data_type() == DataType::Float16 as i32 {
        raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
    } else {
        raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
}

/// `count` codes of `bits` unpacked from bytes, low nibble first.
pub fn unpack(bytes: &[u8], bits: u32, count: usize) -> Vec<u8> {
    match bits {
        8 => bytes[..count].to_vec(),
        _ => (0..count).map(|i| (bytes[i / 2] >> (4 * (i % 2))) & 0x0f).collect(),
    }
}

/// What a MatMulNBits node reads, unpacked: codes `[n][k]` (K padded to whole blocks),
/// scales `[n][block]`, zero points `[n][block]` (the implicit middle code when absent).
pub struct NBits {
    pub k: usize,
    pub n: usize,
    pub bits: u32,
    pub block_size: usize,
    pub codes: Vec<Vec<u8>>,
    pub scales: Vec<Vec<f32>>,
    pub zero_points: Vec<Vec<u8>>,
    pub has_zero_points: bool,
}

impl NBits {
    pub fn read(model: &ModelProto, node: &NodeProto) -> NBits {
        let k = attr(node, "K").expect("K") as usize;
        let n = attr(node, "N").expect("N") as usize;
        let bits = attr(node, "bits").expect("bits") as u32;
        let bs = attr(node, "block_size").expect("block_size") as usize;
        let blocks = k.div_ceil(bs);
        let b = initializer(model, &node.input[1]);
        assert_eq!(b.data_type(), DataType::Uint8 as i32);
        assert_eq!(b.dims, [n as i64, blocks as i64, (bs * bits as usize / 8) as i64]);
        let raw = b.raw_data.as_ref().expect("raw");
        let per_column = blocks * bs * bits as usize / 8;
        let codes = (0..n)
            .map(|c| unpack(&raw[c * per_column..(c + 1) * per_column], bits, blocks * bs))
            .collect();
        let s = initializer(model, &node.input[2]);
        assert_eq!(s.dims, [n as i64, blocks as i64]);
        let flat = floats(s);
        let scales = flat.chunks(blocks).map(<[f32]>::to_vec).collect();
        let has_zero_points = node.input.len() > 3 && !node.input[3].is_empty();
        let zero_points = if has_zero_points {
            let z = initializer(model, &node.input[3]);
            let per = (blocks * bits as usize).div_ceil(8);
            assert_eq!(z.dims, [n as i64, per as i64]);
            let raw = z.raw_data.as_ref().expect("raw");
            (0..n).map(|c| unpack(&raw[c * per..(c + 1) * per], bits, blocks)).collect()
        } else {
            vec![vec![1u8 << (bits - 1); blocks]; n]
        };
        NBits { k, n, bits, block_size: bs, codes, scales, zero_points, has_zero_points }
    }

    /// The dequantized weight `[K, N]` (row-major), padding dropped.
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.k * self.n];
        for c in 0..self.n {
            for r in 0..self.k {
                let b = r / self.block_size;
                let code = self.codes[c][r] as f32 - self.zero_points[c][b] as f32;
                w[r * self.n + c] = code * self.scales[c][b];
            }
        }
        w
    }
}

/// What a blocked DequantizeLinear on axis `axis` reads, unpacked to unsigned codes (signed
/// codes offset by 2^(bits-1)) in the tensor's row-major order, with scales and zero points
/// in theirs.
pub struct Qdq {
    pub dims: Vec<usize>,
    pub bits: u32,
    pub signed: bool,
    pub codes: Vec<i32>,
    pub scales: Vec<f32>,
    pub zero_points: Vec<i32>,
    pub block_size: usize,
    pub axis: usize,
}

impl Qdq {
    pub fn read(model: &ModelProto, dq: &NodeProto) -> Qdq {
        let q = initializer(model, &dq.input[0]);
        let dims: Vec<usize> = q.dims.iter().map(|&d| d as usize).collect();
        let count = dims.iter().product();
        let (bits, signed) = match DataType::try_from(q.data_type()).expect("a type") {
            DataType::Int4 => (4, true),
            DataType::Uint4 => (4, false),
            DataType::Int8 => (8, true),
            DataType::Uint8 => (8, false),
            other => panic!("unexpected quantized type {other:?}"),
        };
        let to_int = |code: u8| -> i32 {
            match (signed, bits) {
                (true, 4) => ((code << 4) as i8 >> 4) as i32,
                (true, _) => code as i8 as i32,
                _ => code as i32,
            }
        };
        let codes = unpack(q.raw_data.as_ref().expect("raw"), bits, count);
        let codes = codes.into_iter().map(to_int).collect();
        let s = initializer(model, &dq.input[1]);
        let scales = floats(s);
        let zero_points = match dq.input.get(2) {
            Some(name) if !name.is_empty() => {
                let z = initializer(model, name);
                assert_eq!(z.data_type(), q.data_type(), "zero points of the values' type");
                assert_eq!(z.dims, s.dims, "zero points of the scales' shape");
                unpack(z.raw_data.as_ref().expect("raw"), bits, scales.len())
                    .into_iter()
                    .map(to_int)
                    .collect()
            }
            _ => vec![0; scales.len()],
        };
        let block_size = attr(dq, "block_size").expect("block_size") as usize;
        let axis = attr(dq, "axis").expect("axis") as usize;
        Qdq { dims, bits, signed, codes, scales, zero_points, block_size, axis }
    }

    /// The dequantized tensor (row-major, 2-D).
    pub fn dequantized(&self) -> Vec<f32> {
        let (rows, cols) = (self.dims[0], self.dims[1]);
        let scale_cols = if self.axis == 0 { cols } else { cols.div_ceil(self.block_size) };
        (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                let s = if self.axis == 0 {
                    (r / self.block_size) * scale_cols + c
                } else {
                    r * scale_cols + c / self.block_size
                };
                (self.codes[i] - self.zero_points[s]) as f32 * self.scales[s]
            })
            .collect()
    }
}
