//! `quantize_weights` against ONNX Runtime's own weight-only quantizer
//! (`MatMulNBitsQuantizer` with `DefaultWeightOnlyQuantConfig`), run by
//! `scripts/reference/quantize_weights.py` on the same float model: the packed weights, scales
//! and zero points must be equal byte for byte (but for the
//! padding of the last block, see below), for 4 and 8 bits, symmetric and not, K a
//! multiple of the block size and not, in the QOperator (MatMulNBits) and QDQ formats (ORT's
//! QDQ takes 4 bits only). The weights include values on exact halves of a step, so the two
//! formats' different rounding of ties is covered.

mod quantize_weights_support;
#[path = "common/rng.rs"]
mod rng;

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use pipeline_passes::ir::proto::{ModelProto, TensorProto};
use pipeline_passes::ir::{self, SaveOptions};
use quantize_weights_support::*;
use rng::Rng;
use serde_json::json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("passes/ has a parent").to_path_buf()
}

/// Random columns, columns of exact quarter steps (ties after scaling), an all-zero column
/// and an outlier.
fn weight(k: usize, n: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = Rng::new(seed);
    ArrayD::from_shape_fn(IxDyn(&[k, n]), |index| {
        let (r, c) = (index[0], index[1]);
        match c % 4 {
            0 => rng.normal() as f32,
            1 => ((r * 7 + c) % 16) as f32 * 0.25 - 2.0,
            2 if c == 2 => 0.0,
            _ => {
                let v = 0.05 * rng.normal() as f32;
                if r == k / 3 {
                    4.0
                } else {
                    v
                }
            }
        }
    })
}

/// ORT's tool's model for `float_model`.
fn ort_quantized(dir: &Path, float_model: &ModelProto, args: &[String]) -> ModelProto {
    let float_path = dir.join("float.onnx");
    let out_path = dir.join("ort.onnx");
    ir::save(float_model, &float_path, &SaveOptions::default()).unwrap();
    let python = workspace().join(".venv/bin/python");
    assert!(python.exists(), "run scripts/setup-test-env.sh to create the test environment");
    let output = Command::new(python)
        .arg(workspace().join("scripts/reference/quantize_weights.py"))
        .arg("--float")
        .arg(&float_path)
        .arg("--out")
        .arg(&out_path)
        .args(args)
        .output()
        .expect("python starts");
    assert!(
        output.status.success(),
        "ORT's quantizer failed (run scripts/setup-test-env.sh if a module is missing):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ir::load(&out_path).unwrap()
}

fn same_tensor(ours: &TensorProto, theirs: &TensorProto, what: &str) {
    assert_eq!(ours.data_type(), theirs.data_type(), "{what}: element type");
    assert_eq!(ours.dims, theirs.dims, "{what}: shape");
    let theirs_raw = match &theirs.raw_data {
        Some(raw) if !raw.is_empty() => raw.clone(),
        _ => panic!("{what}: ORT's tensor has no raw data"),
    };
    let ours_raw = ours.raw_data.clone().unwrap();
    if ours_raw != theirs_raw {
        let first = ours_raw.iter().zip(&theirs_raw).position(|(a, b)| a != b);
        panic!("{what}: bytes differ, first at byte {first:?} of {}", ours_raw.len());
    }
}

#[test]
fn matmul_nbits_equals_ort_quantizer() {
    let dir = tempfile::tempdir().unwrap();
    for (k, n, block_size) in [(64, 8, 32), (80, 8, 32), (100, 6, 16), (256, 4, 128)] {
        let w = weight(k, n, (k * n) as u64);
        let model = matmul_model(&w, 17);
        for bits in [4u32, 8] {
            for symmetric in [true, false] {
                let case = format!("K={k} N={n} bs={block_size} bits={bits} sym={symmetric}");
                let ours = quantize(
                    &model,
                    json!({"bits": bits, "block_size": block_size, "symmetric": symmetric,
                           "format": "matmul_nbits", "accuracy_level": 4}),
                )
                .unwrap();
                let mut args = vec![format!("--bits={bits}"), format!("--block-size={block_size}")];
                args.push("--accuracy-level=4".into());
                if symmetric {
                    args.push("--symmetric".into());
                }
                let theirs = ort_quantized(dir.path(), &model, &args);

                let our_node = nodes(&ours, "MatMulNBits")[0];
                let their_node = nodes(&theirs, "MatMulNBits")[0];
                assert_eq!(our_node.input.len(), their_node.input.len(), "{case}: inputs");
                for name in ["K", "N", "bits", "block_size", "accuracy_level"] {
                    assert_eq!(attr(our_node, name), attr(their_node, name), "{case}: {name}");
                }
                // B: equal codes for every real row. In the last block's padding ORT's tool
                // leaves code 0 (its buffer's initial value) and this pass writes the zero
                // point, the code of 0.0: the one difference, and it is asserted exactly.
                let (our_b, their_b) =
                    (NBits::read(&ours, our_node), NBits::read(&theirs, their_node));
                let padded = k.div_ceil(block_size) * block_size;
                for c in 0..n {
                    assert_eq!(our_b.codes[c][..k], their_b.codes[c][..k], "{case}: column {c}");
                    let zp = our_b.zero_points[c][(k - 1) / block_size];
                    for r in k..padded {
                        assert_eq!(our_b.codes[c][r], zp, "{case}: our padding");
                        assert_eq!(their_b.codes[c][r], 0, "{case}: ORT's padding");
                    }
                }
                for (i, what) in [(2, "scales"), (3, "zero points")] {
                    if i < our_node.input.len() {
                        same_tensor(
                            initializer(&ours, &our_node.input[i]),
                            initializer(&theirs, &their_node.input[i]),
                            &format!("{case}: {what}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn qdq_equals_ort_quantizer() {
    let dir = tempfile::tempdir().unwrap();
    for (k, n, block_size) in [(64, 8, 32), (80, 7, 32), (100, 6, 16)] {
        let w = weight(k, n, (k + n) as u64);
        let model = matmul_model(&w, 21);
        for symmetric in [true, false] {
            let case = format!("K={k} N={n} bs={block_size} sym={symmetric}");
            let ours = quantize(
                &model,
                json!({"bits": 4, "block_size": block_size, "symmetric": symmetric,
                       "format": "qdq"}),
            )
            .unwrap();
            let mut args = vec![
                "--bits=4".to_string(),
                format!("--block-size={block_size}"),
                "--format=qdq".into(),
            ];
            if symmetric {
                args.push("--symmetric".into());
            }
            let theirs = ort_quantized(dir.path(), &model, &args);
            let our_dq = nodes(&ours, "DequantizeLinear")[0];
            let their_dq = nodes(&theirs, "DequantizeLinear")[0];
            assert_eq!(our_dq.input.len(), their_dq.input.len(), "{case}: inputs");
            for name in ["axis", "block_size"] {
                assert_eq!(attr(our_dq, name), attr(their_dq, name), "{case}: {name}");
            }
            for (i, what) in [(0, "values"), (1, "scales"), (2, "zero points")] {
                if i < our_dq.input.len() {
                    same_tensor(
                        initializer(&ours, &our_dq.input[i]),
                        initializer(&theirs, &their_dq.input[i]),
                        &format!("{case}: {what}"),
                    );
                }
            }
            assert_eq!(nodes(&ours, "MatMul")[0].input[1], our_dq.output[0]);
        }
    }
}
