//! Acceptance test of the `export` pass's GGUF files: read back by our GGUF crate and by
//! llama.cpp's own reader (gguf-py, through scripts/reference/gguf_read.py), and compared
//! with weights this test packs and dequantizes itself.
//!
//! The model holds a MatMulNBits weight of every kind the exporter tells apart (4-bit block
//! 32 and 64, 8-bit, asymmetric block 16, K not a multiple of 32), a blocked INT4
//! DequantizeLinear weight, FLOAT and FLOAT16 initializers, one with a name too long for
//! ggml, and an INT64 initializer that is left out. Scales are multiples of 1/256, which
//! float16 holds exactly, so the quantized weights must come back bit for bit.

#[path = "common/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::reader::GGUFFileReader;
use half::f16;
use ndarray::{ArrayD, IxDyn};
use pipeline_passes::export::gguf;
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto};
use pipeline_passes::ir::shapes::Dim;
use pipeline_passes::ir::{self, float_value_info};
use pipeline_passes::pass::{Artifact, ArtifactSink, PassContext};
use rng::Rng;

/// One MatMulNBits weight as the test made it: codes `[N][K]`, scales `[N][k_blocks]` and
/// zero points `[N][k_blocks]` (`None`: the default middle code).
struct NBits {
    name: &'static str,
    k: usize,
    n: usize,
    bits: u32,
    block: usize,
    codes: Vec<Vec<u32>>,
    scales: Vec<Vec<f32>>,
    zero_points: Option<Vec<Vec<u32>>>,
}

impl NBits {
    fn random(name: &'static str, k: usize, n: usize, bits: u32, block: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let k_blocks = k.div_ceil(block);
        let levels = 1u64 << bits;
        let codes: Vec<Vec<u32>> =
            (0..n).map(|_| (0..k).map(|_| (rng.next_u64() % levels) as u32).collect()).collect();
        // Multiples of 1/256 below 8: float16 holds them exactly.
        let scales: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..k_blocks).map(|_| (1 + rng.next_u64() % 2000) as f32 / 256.0).collect())
            .collect();
        NBits { name, k, n, bits, block, codes, scales, zero_points: None }
    }

    fn k_blocks(&self) -> usize {
        self.k.div_ceil(self.block)
    }

    fn zero_point(&self, row: usize, block: usize) -> u32 {
        self.zero_points.as_ref().map_or(1 << (self.bits - 1), |z| z[row][block])
    }

    /// `(code - zero point) * scale`, `[N][K]`, computed in float32 as ONNX Runtime does.
    fn dequantized(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for row in 0..self.n {
            for col in 0..self.k {
                let q = self.codes[row][col] as i32 - self.zero_point(row, col / self.block) as i32;
                out.push(q as f32 * self.scales[row][col / self.block]);
            }
        }
        out
    }

    /// The initializers and node, packed as ONNX Runtime specifies: B `(N, k_blocks,
    /// block * bits / 8)` with the first code in the low bits, padded with zero codes past K.
    fn add_to(&self, graph: &mut GraphProto, input: &str, output: &str) {
        let blob = self.block * self.bits as usize / 8;
        let mut packed = vec![0u8; self.n * self.k_blocks() * blob];
        for row in 0..self.n {
            for col in 0..self.k {
                let bit = (row * self.k_blocks() * blob) * 8 + col * self.bits as usize;
                set_bits(&mut packed, bit, self.bits, self.codes[row][col]);
            }
        }
        let b = format!("{}_B", self.name);
        let scales = format!("{}_scales", self.name);
        let shape = [self.n, self.k_blocks(), blob];
        graph.initializer.push(ir::tensor_from_u8(&b, &array(&shape, packed)));
        let flat: Vec<f32> = self.scales.iter().flatten().copied().collect();
        let scales_shape = [self.n, self.k_blocks()];
        graph.initializer.push(ir::tensor_from_f32(&scales, &array(&scales_shape, flat)));

        let mut inputs = vec![input.to_string(), b, scales];
        if let Some(zero_points) = &self.zero_points {
            let row_bytes = (self.k_blocks() * self.bits as usize).div_ceil(8);
            let mut packed = vec![0u8; self.n * row_bytes];
            for (row, zeros) in zero_points.iter().enumerate() {
                for (block, &zero) in zeros.iter().enumerate() {
                    let bit = row * row_bytes * 8 + block * self.bits as usize;
                    set_bits(&mut packed, bit, self.bits, zero);
                }
            }
            let name = format!("{}_zero_points", self.name);
            graph.initializer.push(ir::tensor_from_u8(&name, &array(&[packed.len()], packed)));
            inputs.push(name);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut node = ir::make_node("MatMulNBits", &inputs, &[output], self.name);
        node.domain = Some("com.microsoft".into());
        for (name, value) in
            [("K", self.k), ("N", self.n), ("bits", self.bits as usize), ("block_size", self.block)]
        {
            node.attribute.push(ir::attr_int(name, value as i64));
        }
        graph.node.push(node);
    }
}

fn set_bits(bytes: &mut [u8], bit: usize, width: u32, value: u32) {
    for i in 0..width as usize {
        if value >> i & 1 == 1 {
            bytes[(bit + i) / 8] |= 1 << ((bit + i) % 8);
        }
    }
}

fn array<T: Clone>(shape: &[usize], values: Vec<T>) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

/// An INT4 `[K, N]` weight behind `DequantizeLinear(block_size 32, axis 0)`: values in
/// -8..=7, scales `[K / 32, N]`.
struct Int4Weight {
    k: usize,
    n: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Int4Weight {
    fn random(k: usize, n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let values = (0..k * n).map(|_| (rng.next_u64() % 16) as i8 - 8).collect();
        let scales = (0..k / 32 * n).map(|_| (1 + rng.next_u64() % 500) as f32 / 256.0).collect();
        Int4Weight { k, n, values, scales }
    }

    /// The weight transposed to `[N][K]`, the layout GGUF stores.
    fn dequantized_transposed(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for col in 0..self.n {
            for row in 0..self.k {
                let scale = self.scales[(row / 32) * self.n + col];
                out.push(f32::from(self.values[row * self.n + col]) * scale);
            }
        }
        out
    }

    fn add_to(&self, graph: &mut GraphProto, output: &str) {
        let mut packed = vec![0u8; (self.k * self.n).div_ceil(2)];
        for (i, &v) in self.values.iter().enumerate() {
            set_bits(&mut packed, i * 4, 4, (v as u8 & 0x0f) as u32);
        }
        graph.initializer.push(TensorProto {
            name: Some("dq_weight".into()),
            dims: vec![self.k as i64, self.n as i64],
            data_type: Some(DataType::Int4 as i32),
            raw_data: Some(packed.into()),
            ..Default::default()
        });
        let scales = array(&[self.k / 32, self.n], self.scales.clone());
        graph.initializer.push(ir::tensor_from_f32("dq_scale", &scales));
        let mut node =
            ir::make_node("DequantizeLinear", &["dq_weight", "dq_scale"], &[output], "dq");
        node.attribute.push(ir::attr_int("axis", 0));
        node.attribute.push(ir::attr_int("block_size", 32));
        graph.node.push(node);
    }
}

const LONG_NAME: &str = "/model/decoder/layers.11/self_attn/o_proj/MatMul.bias_with_a_long_tail";

/// The model and, per ONNX weight name, what the GGUF tensor must dequantize to and its
/// codes as Q4_0 or Q8_0 would hold them.
struct Fixture {
    model: ModelProto,
    expected: BTreeMap<String, Expected>,
}

struct Expected {
    kind: &'static str,
    /// gguf-py's shape: ggml's `ne` reversed.
    shape: Vec<usize>,
    values: Vec<f32>,
    /// For Q4_0 and Q8_0, the codes of each row as stored (Q4_0 nibbles 0..=15, Q8_0 int8).
    codes: Option<Vec<i32>>,
    /// For F32 and F16 tensors stored as they were, the ONNX bytes.
    bytes: Option<Vec<u8>>,
}

fn fixture() -> Fixture {
    let mut graph = GraphProto { name: Some("gguf_export_test".into()), ..Default::default() };
    let mut expected = BTreeMap::new();

    let q4 = NBits::random("q4", 64, 3, 4, 32, 1);
    let mut q4_64 = NBits::random("q4_64", 128, 2, 4, 64, 2);
    q4_64.zero_points = Some(vec![vec![8; 2]; 2]);
    let q8 = NBits::random("q8", 32, 4, 8, 32, 3);
    let mut asym = NBits::random("asym", 48, 2, 4, 16, 4);
    asym.zero_points = Some(vec![vec![3, 8, 12], vec![0, 15, 7]]);
    let odd_k = NBits::random("odd_k", 40, 2, 4, 32, 5);
    let chain = [(&q4, "x", "y1"), (&q4_64, "x2", "y2"), (&q8, "x3", "y3")];
    for (weight, input, output) in
        chain.into_iter().chain([(&asym, "x4", "y4"), (&odd_k, "x5", "y5")])
    {
        weight.add_to(&mut graph, input, output);
        let middle = 1i32 << (weight.bits - 1);
        let codes = weight.codes.iter().flatten().map(|&c| c as i32);
        let (kind, codes) = match weight.name {
            "q4" | "q4_64" => ("Q4_0", Some(codes.collect())),
            "q8" => ("Q8_0", Some(codes.map(|c| c - middle).collect())),
            _ => ("F32", None),
        };
        expected.insert(
            format!("{}_B", weight.name),
            Expected {
                kind,
                shape: vec![weight.n, weight.k],
                values: weight.dequantized(),
                codes,
                bytes: None,
            },
        );
    }

    let dq = Int4Weight::random(64, 3, 6);
    dq.add_to(&mut graph, "dq_out");
    let mut codes = Vec::new();
    for col in 0..dq.n {
        codes.extend((0..dq.k).map(|row| i32::from(dq.values[row * dq.n + col]) + 8));
    }
    expected.insert(
        "dq_weight".into(),
        Expected {
            kind: "Q4_0",
            shape: vec![dq.n, dq.k],
            values: dq.dequantized_transposed(),
            codes: Some(codes),
            bytes: None,
        },
    );

    let mut rng = Rng::new(9);
    let bias = rng.array(&[3], |r| r.normal());
    let long = rng.array(&[2, 3, 4], |r| r.normal());
    let half_values: Vec<f16> = (0..6).map(|i| f16::from_f32(i as f32 * 0.375 - 1.0)).collect();
    let half_bytes: Vec<u8> = half_values.iter().flat_map(|v| v.to_le_bytes()).collect();
    graph.initializer.push(ir::tensor_from_f32("bias", &bias));
    graph.initializer.push(ir::tensor_from_f32(LONG_NAME, &long));
    graph.initializer.push(TensorProto {
        name: Some("half".into()),
        dims: vec![2, 3],
        data_type: Some(DataType::Float16 as i32),
        raw_data: Some(half_bytes.clone().into()),
        ..Default::default()
    });
    graph.initializer.push(ir::tensor_from_i64("shape", &array(&[2], vec![1, -1])));
    graph.node.push(ir::make_node("Add", &["y1", "bias"], &["out"], "add"));
    for (name, tensor, kind) in [("bias", &bias, "F32"), (LONG_NAME, &long, "F32")] {
        let bytes = tensor.iter().flat_map(|v| v.to_le_bytes()).collect();
        expected.insert(
            name.into(),
            Expected {
                kind,
                shape: tensor.shape().to_vec(),
                values: tensor.iter().copied().collect(),
                codes: None,
                bytes: Some(bytes),
            },
        );
    }
    expected.insert(
        "half".into(),
        Expected {
            kind: "F16",
            shape: vec![2, 3],
            values: half_values.iter().map(|v| v.to_f32()).collect(),
            codes: None,
            bytes: Some(half_bytes),
        },
    );

    graph.input.push(float_value_info("x", &[1, 64]));
    graph.output.push(float_value_info("out", &[1, 3]));
    let model = ModelProto {
        ir_version: Some(10),
        opset_import: vec![
            OperatorSetIdProto { domain: Some(String::new()), version: Some(21) },
            OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) },
        ],
        graph: Some(graph),
        ..Default::default()
    };
    Fixture { model, expected }
}

#[derive(Default)]
struct Sink(Mutex<Vec<Artifact>>);

impl ArtifactSink for Sink {
    fn add(&self, artifact: Artifact) {
        self.0.lock().unwrap().push(artifact);
    }
}

/// Runs the `export` pass from its registry entry, as the engine does, and returns the
/// one artifact it made.
fn run_export(model: &ModelProto) -> Artifact {
    let info = pipeline_passes::pass::find("export").expect("export is registered");
    let pass = (info.build)(&serde_json::json!({"format": "gguf"})).unwrap();
    let sink = Sink::default();
    let context = PassContext { artifacts: Some(&sink), ..PassContext::default() };
    let out = pass.run(model.clone(), &context).unwrap();
    assert_eq!(&out, model, "the pass hands the model back unchanged");
    let mut artifacts = sink.0.into_inner().unwrap();
    assert_eq!(artifacts.len(), 1);
    let artifact = artifacts.remove(0);
    assert_eq!(artifact.extension, "gguf");
    artifact
}

/// The ONNX name each GGUF tensor came from, in file order.
fn onnx_names(reader: &GGUFFileReader<std::io::Cursor<Vec<u8>>>) -> Vec<String> {
    let Some(MetadataValue::Array(array)) = reader.metadata().get("pipeline.onnx_names") else {
        panic!("pipeline.onnx_names is missing");
    };
    array
        .values
        .iter()
        .map(|v| match v {
            MetadataValue::String(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Decodes the codes of Q4_0 (nibbles, element j low and j + 16 high) or Q8_0 blocks,
/// and their scales.
fn block_codes(kind: &str, bytes: &[u8]) -> (Vec<i32>, Vec<f32>) {
    let (size, mut codes, mut scales) = (if kind == "Q4_0" { 18 } else { 34 }, vec![], vec![]);
    assert_eq!(bytes.len() % size, 0);
    for block in bytes.chunks_exact(size) {
        scales.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
        if kind == "Q4_0" {
            codes.extend(block[2..].iter().map(|b| i32::from(b & 0x0f)));
            codes.extend(block[2..].iter().map(|b| i32::from(b >> 4)));
        } else {
            codes.extend(block[2..].iter().map(|&b| i32::from(b as i8)));
        }
    }
    (codes, scales)
}

#[test]
fn every_tensor_reads_back_exactly_with_our_reader() {
    let Fixture { model, expected } = fixture();
    let artifact = run_export(&model);
    assert!(artifact.summary.contains("lossless"), "{}", artifact.summary);
    assert!(artifact.summary.contains("asym"), "{}", artifact.summary);

    let mut reader = GGUFFileReader::new(std::io::Cursor::new(artifact.bytes.clone())).unwrap();
    assert_eq!(reader.header().version, 3);
    assert_eq!(&artifact.bytes[..4], b"GGUF");
    assert_eq!(reader.tensor_alignment(), 32);
    assert_eq!(reader.tensor_data_offset() % 32, 0);
    let meta = reader.metadata();
    assert_eq!(meta.get_string("general.architecture"), Some("onnx"));
    assert_eq!(meta.get_string("general.name"), Some("gguf_export_test"));
    assert_eq!(meta.get("general.alignment"), Some(&MetadataValue::U32(32)));
    assert_eq!(meta.get("general.quantization_version"), Some(&MetadataValue::U32(2)));

    let names = onnx_names(&reader);
    let infos = reader.tensor_infos().to_vec();
    assert_eq!(names.len(), infos.len());
    let found: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let wanted: std::collections::BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(found, wanted, "the INT64 initializer and the scales are not tensors");

    for (info, onnx_name) in infos.iter().zip(&names) {
        let want = &expected[onnx_name];
        assert_eq!(info.tensor_type().name(), want.kind, "{onnx_name}");
        assert_eq!(info.data_offset() % 32, 0, "{onnx_name} is aligned");
        let ne: Vec<usize> = info.shape().dims().iter().rev().map(|&d| d as usize).collect();
        assert_eq!(ne, want.shape, "{onnx_name}");
        assert!(info.name().len() <= 63, "{}", info.name());
        if onnx_name == LONG_NAME {
            assert_ne!(info.name(), LONG_NAME);
            assert_eq!(info.name(), gguf::gguf_name(LONG_NAME));
        } else {
            assert_eq!(info.name(), onnx_name);
        }

        let data = reader.load_tensor_data(info.name()).unwrap().unwrap();
        let bytes = data.as_slice();
        if let Some(want_bytes) = &want.bytes {
            assert_eq!(bytes, &want_bytes[..], "{onnx_name} is byte-equal");
        }
        if let Some(want_codes) = &want.codes {
            let (codes, scales) = block_codes(want.kind, bytes);
            assert_eq!(&codes, want_codes, "{onnx_name}: codes carried over exactly");
            // Each block's value is (code - middle) * d: it must equal the test's own
            // dequantization bit for bit.
            let middle = if want.kind == "Q4_0" { 8 } else { 0 };
            let values: Vec<f32> = codes
                .iter()
                .enumerate()
                .map(|(i, &c)| (c - middle) as f32 * scales[i / 32])
                .collect();
            assert_eq!(values, want.values, "{onnx_name}: lossless");
        }
        if want.kind == "F32" && want.bytes.is_none() {
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(values, want.values, "{onnx_name}: dequantized as ORT would");
        }
    }
}

#[test]
fn gguf_py_reads_every_tensor_as_the_test_dequantizes_it() {
    let Fixture { model, expected } = fixture();
    let artifact = run_export(&model);
    let (report, arrays) = read_with_gguf_py(&artifact.bytes, "mixed");

    assert_eq!(report["version"], 3);
    assert_eq!(report["alignment"], 32);
    assert_eq!(report["data_offset"].as_u64().unwrap() % 32, 0);
    let fields = &report["fields"];
    assert_eq!(fields["general.architecture"], "onnx");
    assert_eq!(fields["general.quantization_version"], 2);
    assert_eq!(fields["general.alignment"], 32);
    assert_eq!(fields["general.file_type"], 2, "most values are Q4_0");
    let names: Vec<String> = serde_json::from_value(fields["pipeline.onnx_names"].clone()).unwrap();

    let tensors = report["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), expected.len());
    for (index, (tensor, onnx_name)) in tensors.iter().zip(&names).enumerate() {
        let want = &expected[onnx_name];
        assert_eq!(tensor["type"], want.kind, "{onnx_name}");
        assert_eq!(tensor["offset"].as_u64().unwrap() % 32, 0, "{onnx_name}");
        let values = &arrays[index];
        assert_eq!(values.shape(), &want.shape[..], "{onnx_name}");
        let got: Vec<f32> = values.iter().copied().collect();
        assert_eq!(got, want.values, "{onnx_name}: gguf-py's dequantization");
    }
}

#[test]
fn scales_float16_cannot_hold_are_rounded_and_reported() {
    let mut weight = NBits::random("w", 64, 2, 4, 32, 11);
    weight.scales = vec![vec![0.1, 0.2], vec![0.3, 1.0 / 3.0]];
    let mut graph = GraphProto::default();
    weight.add_to(&mut graph, "x", "y");
    let model = ModelProto { graph: Some(graph), ..Default::default() };

    let artifact = run_export(&model);
    assert!(artifact.summary.contains("4 of 4 block scales rounded"), "{}", artifact.summary);
    let (_, arrays) = read_with_gguf_py(&artifact.bytes, "rounded");
    let got: Vec<f32> = arrays[0].iter().copied().collect();

    let exact = weight.dequantized();
    for row in 0..2 {
        for col in 0..64 {
            let i = row * 64 + col;
            let d = f16::from_f32(weight.scales[row][col / 32]).to_f32();
            let q = weight.codes[row][col] as f32 - 8.0;
            assert_eq!(got[i], q * d, "row {row} col {col}: (q - 8) * f16(scale)");
            assert!((got[i] - exact[i]).abs() <= exact[i].abs() * 1e-3, "row {row} col {col}");
        }
    }
}

#[test]
fn a_model_without_weights_is_an_error_and_no_sink_is_an_error() {
    let graph = GraphProto {
        node: vec![ir::make_node("Relu", &["x"], &["y"], "relu")],
        initializer: vec![ir::tensor_from_i64("ints", &array(&[1], vec![3]))],
        ..Default::default()
    };
    let model = ModelProto { graph: Some(graph), ..Default::default() };
    let info = pipeline_passes::pass::find("export").unwrap();
    let pass = (info.build)(&serde_json::json!({"format": "gguf"})).unwrap();

    let sink = Sink::default();
    let context = PassContext { artifacts: Some(&sink), ..PassContext::default() };
    let error = pass.run(model.clone(), &context).unwrap_err().to_string();
    assert!(error.contains("no float or quantized weights"), "{error}");

    let fixture = fixture();
    let error = pass.run(fixture.model, &PassContext::default()).unwrap_err().to_string();
    assert!(error.contains("artifact sink"), "{error}");
}

#[test]
fn an_unknown_format_is_refused_when_the_pass_is_built() {
    let info = pipeline_passes::pass::find("export").unwrap();
    let error = (info.build)(&serde_json::json!({"format": "safetensors"})).err().unwrap();
    assert!(error.to_string().contains("unknown variant"), "{error}");
}

#[test]
fn a_malformed_weight_names_its_node() {
    let weight = NBits::random("w", 64, 2, 4, 32, 12);
    let mut graph = GraphProto::default();
    weight.add_to(&mut graph, "x", "y");
    graph.node[0].attribute.retain(|a| a.name() != "N");
    graph.node[0].attribute.push(ir::attr_int("N", 3));
    let model = ModelProto { graph: Some(graph), ..Default::default() };

    let error = gguf::export(&model).unwrap_err().to_string();
    assert!(error.contains("MatMulNBits `w`") && error.contains("`B`"), "{error}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs scripts/reference/gguf_read.py on `bytes`: its JSON report and the dequantized
/// tensors in file order.
fn read_with_gguf_py(bytes: &[u8], label: &str) -> (serde_json::Value, Vec<ArrayD<f32>>) {
    use ndarray_npy::NpzReader;

    let python = workspace().join(".venv/bin/python");
    assert!(python.exists(), "run scripts/setup-test-env.sh to create {}", python.display());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{label}.gguf"));
    std::fs::write(&file, bytes).unwrap();
    let (npz, report) = (dir.path().join("values.npz"), dir.path().join("report.json"));
    let output = Command::new(python)
        .arg(workspace().join("scripts/reference/gguf_read.py"))
        .args(["--gguf".as_ref(), file.as_os_str(), "--npz".as_ref(), npz.as_os_str()])
        .args(["--report".as_ref(), report.as_os_str()])
        .output()
        .unwrap();
    assert!(output.status.success(), "gguf_read.py: {}", String::from_utf8_lossy(&output.stderr));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let count = report["tensors"].as_array().unwrap().len();
    let mut npz = NpzReader::new(std::fs::File::open(&npz).unwrap()).unwrap();
    let arrays = (0..count).map(|i| npz.by_name(&format!("t{i}")).unwrap()).collect();
    (report, arrays)
}

/// A float MatMul model quantized by `quantize_weights` (as the engine runs it) and then
/// exported: every code of each MatMulNBits weight lands in the Q4_0 / Q8_0 blocks unchanged,
/// element by element along K, with each block's scale rounded to float16 as GGUF stores it.
#[test]
fn quantize_weights_output_repacks_into_q4_0_and_q8_0_code_for_code() {
    let (k, n) = (96usize, 5usize);
    let mut rng = Rng::new(29);
    let w = rng.normal_array(&[k, n], 0.1);
    let graph = GraphProto {
        name: Some("chain".into()),
        node: vec![ir::make_node("MatMul", &["x", "w"], &["y"], "fc")],
        initializer: vec![ir::tensor_from_f32("w", &w)],
        input: vec![float_value_info("x", &[1, k as i64])],
        output: vec![float_value_info("y", &[1, n as i64])],
        ..Default::default()
    };
    let source = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    };
    let weights = pipeline_passes::pass::find("quantize_weights").unwrap();

    for (bits, kind) in [(4u32, "Q4_0"), (8, "Q8_0")] {
        let config = serde_json::json!({"bits": bits, "block_size": 32, "symmetric": true});
        let pass = (weights.build)(&config).unwrap();
        let model = pass.run(source.clone(), &PassContext::default()).unwrap();
        let graph = model.graph.as_ref().unwrap();
        let node = graph.node.iter().find(|n| n.op_type() == "MatMulNBits").expect("MatMulNBits");
        let initializer = |name: &str| graph.initializer.iter().find(|t| t.name() == name).unwrap();
        let packed = initializer(&node.input[1]).raw_data().to_vec();
        let scales = ir::tensor_to_f32(initializer(&node.input[2])).unwrap();
        assert_eq!(node.input.len(), 3, "symmetric: no zero points");

        // MatMulNBits' codes per column, in order along K (low nibble first at 4 bits).
        let mut expected_codes = Vec::new();
        for column in packed.chunks(k * bits as usize / 8) {
            for &byte in column {
                if bits == 4 {
                    expected_codes.push(i32::from(byte & 0x0f) - 8);
                    expected_codes.push(i32::from(byte >> 4) - 8);
                } else {
                    expected_codes.push(i32::from(byte) - 128);
                }
            }
        }

        let artifact = run_export(&model);
        let mut reader = GGUFFileReader::new(std::io::Cursor::new(artifact.bytes)).unwrap();
        let infos = reader.tensor_infos().to_vec();
        assert_eq!(infos.len(), 1, "only the weight: its codes and scales are not tensors");
        assert_eq!(infos[0].tensor_type().name(), kind);
        let data = reader.load_tensor_data(infos[0].name()).unwrap().unwrap();
        let (codes, gguf_scales) = block_codes(kind, data.as_slice());
        let codes: Vec<i32> =
            codes.iter().map(|&c| if kind == "Q4_0" { c - 8 } else { c }).collect();
        assert_eq!(codes, expected_codes, "{kind}: the codes carry over exactly");
        let rounded: Vec<f32> = scales.iter().map(|&s| f16::from_f32(s).to_f32()).collect();
        assert_eq!(gguf_scales, rounded, "{kind}: each block's scale, as float16");
    }
}

/// The codes of an INT4, UINT4, INT8 or UINT8 initializer, decoded here from its bytes.
fn codes_of(tensor: &TensorProto) -> Vec<i32> {
    let bytes = tensor.raw_data();
    let count: i64 = tensor.dims.iter().product();
    let kind = DataType::try_from(tensor.data_type()).unwrap();
    (0..count as usize)
        .map(|i| match kind {
            DataType::Int4 => ((bytes[i / 2] >> (4 * (i % 2))) << 4) as i8 as i32 >> 4,
            DataType::Uint4 => i32::from((bytes[i / 2] >> (4 * (i % 2))) & 0x0f),
            DataType::Int8 => i32::from(bytes[i] as i8),
            DataType::Uint8 => i32::from(bytes[i]),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn find_initializer<'m>(model: &'m ModelProto, name: &str) -> &'m TensorProto {
    let graph = model.graph.as_ref().unwrap();
    graph.initializer.iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("{name}"))
}

/// The table `[vocab, dim]` a GatherBlockQuantized or blocked DequantizeLinear reads,
/// dequantized here: `(code - zero point) * scale`, one scale per row and block along dim.
fn table_values(model: &ModelProto) -> (String, Vec<f32>, Vec<i32>, Vec<f32>) {
    let graph = model.graph.as_ref().unwrap();
    let node = graph
        .node
        .iter()
        .find(|n| matches!(n.op_type(), "GatherBlockQuantized" | "DequantizeLinear"))
        .expect("a quantized table");
    let gbq = node.op_type() == "GatherBlockQuantized";
    let (scales_at, zeros_at) = if gbq { (2, 3) } else { (1, 2) };
    let axis = ir::node_attr_int(node, if gbq { "quantize_axis" } else { "axis" }).unwrap();
    assert_eq!(axis, 1, "blocks along dim");
    let block = ir::node_attr_int(node, "block_size").unwrap() as usize;
    let table = find_initializer(model, &node.input[0]);
    let (vocab, dim) = (table.dims[0] as usize, table.dims[1] as usize);
    let codes = codes_of(table);
    let scales = ir::tensor_to_f32(find_initializer(model, &node.input[scales_at])).unwrap();
    let scales: Vec<f32> = scales.iter().copied().collect();
    let zeros = match node.input.get(zeros_at) {
        Some(name) => codes_of(find_initializer(model, name)),
        None => vec![0; scales.len()],
    };
    let blocks = dim.div_ceil(block);
    let mut values = Vec::new();
    let mut centred = Vec::new();
    for row in 0..vocab {
        for col in 0..dim {
            let b = row * blocks + col / block;
            centred.push(codes[row * dim + col] - zeros[b]);
            values.push((codes[row * dim + col] - zeros[b]) as f32 * scales[b]);
        }
    }
    (node.input[0].clone(), values, centred, scales)
}

/// `quantize_weights` with `embeddings` on a Gather of a `[vocab, dim]` table: as
/// GatherBlockQuantized or as DequantizeLinear -> Gather, the table lands in the GGUF file
/// (Q4_0 code for code when symmetric with blocks of 32, dequantized F32 with a note
/// otherwise) and its scales and zero points are no tensors of their own.
#[test]
fn quantized_embedding_tables_are_written_not_their_scales() {
    let (vocab, dim) = (40usize, 64usize);
    let mut rng = Rng::new(31);
    let table = rng.normal_array(&[vocab, dim], 0.5);
    let mut gather = ir::make_node("Gather", &["table", "ids"], &["y"], "embed");
    gather.attribute.push(ir::attr_int("axis", 0));
    let graph = GraphProto {
        node: vec![gather],
        initializer: vec![ir::tensor_from_f32("table", &table)],
        input: vec![ir::tensor_value_info("ids", DataType::Int64 as i32, Some(&[Dim::Known(2)]))],
        output: vec![float_value_info("y", &[2, dim as i64])],
        ..Default::default()
    };
    let source = ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(21) }],
        graph: Some(graph),
        ..Default::default()
    };
    let weights = pipeline_passes::pass::find("quantize_weights").unwrap();

    let cases = [
        ("matmul_nbits", true, 32, "Q4_0", "GatherBlockQuantized"),
        ("qdq", true, 32, "Q4_0", "DequantizeLinear"),
        ("matmul_nbits", false, 32, "F32", "GatherBlockQuantized"),
        ("qdq", true, 16, "F32", "DequantizeLinear"),
    ];
    for (format, symmetric, block, kind, op) in cases {
        let config = serde_json::json!({"bits": 4, "block_size": block, "symmetric": symmetric,
                                        "format": format, "embeddings": true});
        let case = format!("{format} symmetric {symmetric} block {block}");
        let model = (weights.build)(&config).unwrap().run(source.clone(), &PassContext::default());
        let model = model.unwrap_or_else(|e| panic!("{case}: {e}"));
        let ops: Vec<&str> =
            model.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
        assert!(ops.contains(&op), "{case}: {ops:?}");
        let (name, values, centred, scales) = table_values(&model);

        let artifact = run_export(&model);
        let mut reader = GGUFFileReader::new(std::io::Cursor::new(artifact.bytes.clone())).unwrap();
        let infos = reader.tensor_infos().to_vec();
        let names = onnx_names(&reader);
        assert_eq!(
            names,
            std::slice::from_ref(&name),
            "{case}: the table only, no scales or zero points"
        );
        assert_eq!(infos[0].tensor_type().name(), kind, "{case}: {}", artifact.summary);
        let ne: Vec<u64> = infos[0].shape().dims().to_vec();
        assert_eq!(ne, [dim as u64, vocab as u64], "{case}: rows of dim values");
        let transposed = reader.metadata().get("pipeline.transposed");
        assert!(format!("{transposed:?}").contains("Bool(false)"), "{case}: {transposed:?}");

        let data = reader.load_tensor_data(infos[0].name()).unwrap().unwrap();
        if kind == "Q4_0" {
            let (codes, gguf_scales) = block_codes(kind, data.as_slice());
            let codes: Vec<i32> = codes.iter().map(|c| c - 8).collect();
            assert_eq!(codes, centred, "{case}: INT4 code q is stored as q + 8");
            let per_32: Vec<f32> = (0..vocab * dim / 32)
                .map(|i| f16::from_f32(scales[i * 32 / block]).to_f32())
                .collect();
            assert_eq!(gguf_scales, per_32, "{case}");
        } else {
            assert!(artifact.summary.contains(&format!("weight `{name}` written as F32")));
            let got: Vec<f32> = data
                .as_slice()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(got, values, "{case}: dequantized as ORT would");
        }
        // gguf-py agrees: every row of the table, dequantized, within float16 scale rounding.
        let (_, arrays) = read_with_gguf_py(&artifact.bytes, "table");
        assert_eq!(arrays[0].shape(), &[vocab, dim], "{case}");
        for (i, (&got, &want)) in arrays[0].iter().zip(&values).enumerate() {
            assert!((got - want).abs() <= want.abs() * 1e-3 + 1e-7, "{case} at {i}");
        }
    }
}

/// A per-axis INT8 and a per-tensor UINT8 DequantizeLinear weight (as `quantize_static`
/// writes them) are dequantized to F32 as ONNX Runtime computes `(q - zp) * scale`; a
/// ConvInteger weight is left out with a note; no scale or zero point becomes a tensor.
#[test]
fn per_channel_weights_are_dequantized_and_integer_operator_weights_named() {
    let mut graph = GraphProto::default();
    let int8: Vec<i8> = (0..12).map(|i| (i * 23 % 255 - 127) as i8).collect();
    graph.initializer.push(TensorProto {
        name: Some("w_axis".into()),
        dims: vec![4, 3],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(int8.iter().map(|&v| v as u8).collect::<Vec<u8>>().into()),
        ..Default::default()
    });
    let axis_scales = [0.5f32, 0.03, 1.0 / 3.0];
    let axis_zeros = [0i8, -3, 7];
    graph.initializer.push(ir::tensor_from_f32("w_axis_scale", &array(&[3], axis_scales.to_vec())));
    graph.initializer.push(TensorProto {
        name: Some("w_axis_zero".into()),
        dims: vec![3],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(axis_zeros.iter().map(|&v| v as u8).collect::<Vec<u8>>().into()),
        ..Default::default()
    });
    let mut dq = ir::make_node(
        "DequantizeLinear",
        &["w_axis", "w_axis_scale", "w_axis_zero"],
        &["w_axis_f"],
        "dq_axis",
    );
    dq.attribute.push(ir::attr_int("axis", 1));
    graph.node.push(dq);

    let uint8: Vec<u8> = (0..6).map(|i| (i * 41 % 256) as u8).collect();
    graph.initializer.push(ir::tensor_from_u8("w_tensor", &array(&[2, 3], uint8.clone())));
    graph.initializer.push(ir::tensor_from_f32("w_tensor_scale", &array(&[], vec![0.1f32])));
    graph.initializer.push(ir::tensor_from_u8("w_tensor_zero", &array(&[], vec![128u8])));
    graph.node.push(ir::make_node(
        "DequantizeLinear",
        &["w_tensor", "w_tensor_scale", "w_tensor_zero"],
        &["w_tensor_f"],
        "dq_tensor",
    ));

    graph.initializer.push(TensorProto {
        name: Some("conv_w".into()),
        dims: vec![2, 1, 3, 3],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(vec![1; 18].into()),
        ..Default::default()
    });
    graph.initializer.push(ir::tensor_from_u8("conv_w_zero", &array(&[], vec![0u8])));
    graph.node.push(ir::make_node(
        "ConvInteger",
        &["x_q", "conv_w", "x_zero", "conv_w_zero"],
        &["c"],
        "conv_quant",
    ));
    let model = ModelProto { graph: Some(graph), ..Default::default() };

    let artifact = run_export(&model);
    let summary = &artifact.summary;
    assert!(
        summary.contains("`conv_w` (INT8 [2, 1, 3, 3], read by ConvInteger `conv_quant`)"),
        "{summary}"
    );
    assert!(summary.contains("2 weights written as F32, dequantized"), "{summary}");
    let mut reader = GGUFFileReader::new(std::io::Cursor::new(artifact.bytes.clone())).unwrap();
    assert_eq!(onnx_names(&reader), ["w_axis", "w_tensor"], "no scales, zero points or codes");
    let infos = reader.tensor_infos().to_vec();

    let mut want_axis = Vec::new();
    for (i, &q) in int8.iter().enumerate() {
        let c = i % 3;
        want_axis.push((i32::from(q) - i32::from(axis_zeros[c])) as f32 * axis_scales[c]);
    }
    let want_tensor: Vec<f32> = uint8.iter().map(|&q| (i32::from(q) - 128) as f32 * 0.1).collect();
    for (info, want, shape) in [(&infos[0], want_axis, [3u64, 4]), (&infos[1], want_tensor, [3, 2])]
    {
        assert_eq!(info.tensor_type().name(), "F32");
        assert_eq!(info.shape().dims(), shape, "ONNX dimensions reversed");
        let data = reader.load_tensor_data(info.name()).unwrap().unwrap();
        let got: Vec<f32> = data
            .as_slice()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, want, "{}", info.name());
    }
}

/// After `quantize_dynamic`, every weight is the INT8 input of MatMulInteger: the export
/// fails, saying why and what to do, rather than write the biases and scales alone.
#[test]
fn a_model_whose_weights_are_all_left_out_is_an_error_that_says_what_to_do() {
    let (k, n) = (8usize, 4usize);
    let mut rng = Rng::new(41);
    let graph = GraphProto {
        node: vec![
            ir::make_node("MatMul", &["x", "w"], &["h"], "fc"),
            ir::make_node("Add", &["h", "b"], &["y"], "bias"),
        ],
        initializer: vec![
            ir::tensor_from_f32("w", &rng.normal_array(&[k, n], 0.3)),
            ir::tensor_from_f32("b", &rng.normal_array(&[n], 0.3)),
        ],
        input: vec![float_value_info("x", &[1, k as i64])],
        output: vec![float_value_info("y", &[1, n as i64])],
        ..Default::default()
    };
    let float = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    };
    let dynamic = pipeline_passes::pass::find("quantize_dynamic").unwrap();
    let pass = (dynamic.build)(&serde_json::json!({})).unwrap();
    let model = pass.run(float, &PassContext::default()).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let integer = graph.node.iter().find(|n| n.op_type() == "MatMulInteger").expect("quantized");
    let weight = integer.input[1].clone();

    let info = pipeline_passes::pass::find("export").unwrap();
    let export = (info.build)(&serde_json::json!({"format": "gguf"})).unwrap();
    let sink = Sink::default();
    let context = PassContext { artifacts: Some(&sink), ..PassContext::default() };
    let error = export.run(model, &context).unwrap_err().to_string();
    for part in [
        "every weight of the model is left out",
        &format!("`{weight}` (INT8 [{k}, {n}], read by MatMulInteger"),
        "only 1 one-dimensional tensors",
        "put `export` before `quantize_dynamic`",
        "quantize_weights",
    ] {
        assert!(error.contains(part), "{part:?} missing from: {error}");
    }
    assert!(sink.0.into_inner().unwrap().is_empty());
}

/// The `(level, message)` of every event logged while `f` runs on this thread.
///
/// The recorder is the global default, set once: a subscriber scoped to one thread can miss
/// events when another test thread registers the same log site at that moment.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<(tracing::Level, String)>) {
    type Events = Mutex<Vec<(std::thread::ThreadId, tracing::Level, String)>>;
    static EVENTS: std::sync::OnceLock<&'static Events> = std::sync::OnceLock::new();
    struct Recorder(&'static Events);
    struct Text(String);
    impl tracing::field::Visit for Text {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    impl tracing::Subscriber for Recorder {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut text = Text(String::new());
            event.record(&mut text);
            let thread = std::thread::current().id();
            self.0.lock().unwrap().push((thread, *event.metadata().level(), text.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let events = *EVENTS.get_or_init(|| {
        let events: &'static Events = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Recorder(events)).expect("no other subscriber");
        events
    });
    let thread = std::thread::current().id();
    events.lock().unwrap().retain(|(t, _, _)| *t != thread);
    let result = f();
    let events = events.lock().unwrap();
    let mine = events.iter().filter(|(t, _, _)| *t == thread);
    let mine = mine.map(|(_, level, message)| (*level, message.clone())).collect();
    (result, mine)
}

#[test]
fn each_note_is_logged_once_at_info() {
    let Fixture { model, .. } = fixture();
    let (artifact, logs) = capture_logs(|| run_export(&model));
    assert!(artifact.summary.contains("weight `asym_B` written as F32"), "{}", artifact.summary);
    let info: Vec<&String> =
        logs.iter().filter(|(level, _)| *level == tracing::Level::INFO).map(|(_, m)| m).collect();
    let mentions = info.iter().filter(|m| m.contains("weight `asym_B` written as F32")).count();
    assert_eq!(mentions, 1, "{info:?}");
}
