//! Saving and loading models with external data, checked against the `onnx` Python package
//! and ONNX Runtime: files we write must load there, and files `onnx` writes must load here;
//! and the loader's refusal of inline tensors whose data disagrees with their dimensions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{arr1, Array2, ArrayD, IxDyn};
use pipeline_passes::ir::proto::tensor_proto::{DataLocation, DataType};
use pipeline_passes::ir::proto::{
    GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
};
use pipeline_passes::ir::{self, float_value_info, ExternalData, IrError, SaveOptions};

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing; run scripts/setup-test-env.sh to install the Python reference tools",
        python.display()
    );
    python
}

/// Runs a Python script with `args` and returns its standard output.
fn run_python(script: &str, args: &[&Path]) -> String {
    let output =
        Command::new(python()).arg("-c").arg(script).args(args).output().expect("python starts");
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("python prints UTF-8")
}

fn weights() -> ArrayD<f32> {
    let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    ArrayD::from_shape_vec(IxDyn(&[3, 4]), values).unwrap()
}

fn bias() -> ArrayD<f32> {
    arr1(&[0.5f32, -0.5, 2.0, 0.0]).into_dyn()
}

/// `y = x @ w + b` with `x: [2, 3]`: `w` in `float_data`, `b` in `raw_data`, and a tiny
/// scale that stays inline under any threshold above 4 bytes.
fn matmul_model() -> ModelProto {
    let mut w = TensorProto {
        name: Some("w".into()),
        dims: vec![3, 4],
        data_type: Some(DataType::Float as i32),
        float_data: weights().iter().copied().collect(),
        ..Default::default()
    };
    w.doc_string = Some("weights in float_data".into());
    let scale = ir::tensor_from_f32("scale", &arr1(&[2.0f32]).into_dyn());

    let graph = GraphProto {
        name: Some("matmul".into()),
        node: vec![
            ir::make_node("MatMul", &["x", "w"], &["m"], "matmul"),
            ir::make_node("Add", &["m", "b"], &["a"], "add"),
            ir::make_node("Mul", &["a", "scale"], &["y"], "mul"),
        ],
        initializer: vec![w, ir::tensor_from_f32("b", &bias()), scale],
        input: vec![float_value_info("x", &[2, 3])],
        output: vec![float_value_info("y", &[2, 4])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("pipeline-tests".into()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn external(location: &str, size_threshold: usize) -> SaveOptions {
    SaveOptions { external_data: Some(ExternalData { location: location.into(), size_threshold }) }
}

fn entry<'t>(tensor: &'t TensorProto, key: &str) -> Option<&'t str> {
    tensor.external_data.iter().find(|e| e.key() == key).map(|e| e.value())
}

#[test]
fn saved_pair_loads_back_with_equal_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let model = matmul_model();

    ir::save(&model, &path, &external("model.onnx.data", 16)).unwrap();

    // The model file itself refers to the data file for `w` and `b` only.
    let stored = ir::decode(&fs::read(&path).unwrap()).unwrap();
    let initializers = &stored.graph.as_ref().unwrap().initializer;
    let data_len = fs::metadata(dir.path().join("model.onnx.data")).unwrap().len();
    for tensor in &initializers[..2] {
        assert_eq!(tensor.data_location(), DataLocation::External, "{}", tensor.name());
        assert!(tensor.raw_data.is_none() && tensor.float_data.is_empty());
        assert_eq!(entry(tensor, "location"), Some("model.onnx.data"));
        let offset: u64 = entry(tensor, "offset").unwrap().parse().unwrap();
        let length: u64 = entry(tensor, "length").unwrap().parse().unwrap();
        assert_eq!(offset % 64, 0);
        assert!(offset + length <= data_len);
    }
    assert_eq!(initializers[2].data_location(), DataLocation::Default);
    assert!(initializers[2].raw_data.is_some());

    let loaded = ir::load(&path).unwrap();
    let graph = loaded.graph.as_ref().unwrap();
    assert_eq!(ir::tensor_to_f32(&graph.initializer[0]).unwrap(), weights());
    assert_eq!(ir::tensor_to_f32(&graph.initializer[1]).unwrap(), bias());
    assert_eq!(graph.initializer[0].doc_string(), "weights in float_data");
    assert!(graph.initializer.iter().all(|t| t.external_data.is_empty()));
    assert_eq!(graph.node, model.graph.as_ref().unwrap().node);
}

#[test]
fn saved_pair_passes_onnx_checker_and_runs_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    ir::save(&matmul_model(), &path, &external("weights/data.bin", 1)).unwrap();

    let script = r#"
import sys, numpy as np, onnx, onnxruntime as ort
path = sys.argv[1]
onnx.checker.check_model(path)
model = onnx.load(path, load_external_data=False)
assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
print(" ".join(repr(float(v)) for v in session.run(None, {"x": x})[0].ravel()))
"#;
    let printed = run_python(script, &[&path]);

    let got: Vec<f32> = printed.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let x = Array2::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32 - 2.5);
    let w: Array2<f32> = weights().into_dimensionality().unwrap();
    let expected = (x.dot(&w) + bias()) * 2.0;
    assert_eq!(got.len(), 8);
    for (g, e) in got.iter().zip(expected.iter()) {
        assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0), "got {got:?}, expected {expected}");
    }
}

#[test]
fn model_saved_by_onnx_with_external_data_loads_here() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from_onnx.onnx");
    let script = r#"
import sys, numpy as np, onnx
from onnx import helper, numpy_helper
w = numpy_helper.from_array(np.arange(24, dtype=np.float32).reshape(4, 6) / 7, "w")
s = numpy_helper.from_array(np.array([3, -9, 2**40], dtype=np.int64), "s")
graph = helper.make_graph(
    [helper.make_node("Identity", ["w"], ["y"])], "g", [],
    [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 6])], [w, s])
model = helper.make_model(graph)
onnx.save_model(model, sys.argv[1], save_as_external_data=True,
                all_tensors_to_one_file=True, location="blob.bin", size_threshold=0)
"#;
    run_python(script, &[&path]);

    let raw = ir::decode(&fs::read(&path).unwrap()).unwrap();
    let loaded = ir::load(&path).unwrap();

    let stored = &raw.graph.as_ref().unwrap().initializer;
    assert!(stored.iter().all(|t| t.data_location() == DataLocation::External));
    let graph = loaded.graph.as_ref().unwrap();
    let w = ir::tensor_to_f32(&graph.initializer[0]).unwrap();
    let expected = ArrayD::from_shape_fn(IxDyn(&[4, 6]), |i| (i[0] * 6 + i[1]) as f32 / 7.0);
    assert_eq!(w, expected);
    assert_eq!(
        ir::tensor_to_i64(&graph.initializer[1]).unwrap(),
        arr1(&[3, -9, 1 << 40]).into_dyn()
    );
}

#[test]
fn inline_save_is_the_encoded_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inline.onnx");
    let model = matmul_model();

    ir::save(&model, &path, &SaveOptions::default()).unwrap();

    assert_eq!(fs::read(&path).unwrap(), ir::encode(&model));
    assert_eq!(ir::load(&path).unwrap(), model);
    let leftovers = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temporary files were left behind");
}

#[test]
fn subgraph_initializers_move_out_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("branch.onnx");
    let inner = ir::tensor_from_f32("inner", &weights());
    let branch = GraphProto {
        name: Some("then".into()),
        node: vec![ir::make_node("Identity", &["inner"], &["z"], "id")],
        initializer: vec![inner.clone()],
        output: vec![float_value_info("z", &[3, 4])],
        ..Default::default()
    };
    let mut model = matmul_model();
    let mut node = ir::make_node("If", &["cond"], &["z_out"], "if");
    node.attribute.push(pipeline_passes::ir::proto::AttributeProto {
        name: Some("then_branch".into()),
        g: Some(branch),
        ..Default::default()
    });
    model.graph.as_mut().unwrap().node.push(node);

    ir::save(&model, &path, &external("data", 1)).unwrap();

    let stored = ir::decode(&fs::read(&path).unwrap()).unwrap();
    let stored_if = &stored.graph.as_ref().unwrap().node[3];
    let stored_inner = &stored_if.attribute[0].g.as_ref().unwrap().initializer[0];
    assert_eq!(stored_inner.data_location(), DataLocation::External);
    assert_eq!(
        ir::load(&path).unwrap().graph.unwrap().node[3].attribute[0]
            .g
            .as_ref()
            .unwrap()
            .initializer[0],
        inner
    );
}

/// A model with one external tensor `t` of 4 floats at `location`, written beside a data
/// file of `file_len` bytes.
fn model_with_reference(dir: &Path, location: &str, offset: u64, file_len: usize) -> PathBuf {
    fs::write(dir.join("data.bin"), vec![0u8; file_len]).unwrap();
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    };
    let tensor = TensorProto {
        name: Some("t".into()),
        dims: vec![4],
        data_type: Some(DataType::Float as i32),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", "16".into()),
        ],
        ..Default::default()
    };
    let model = ModelProto {
        graph: Some(GraphProto { initializer: vec![tensor], ..Default::default() }),
        ..Default::default()
    };
    let path = dir.join("model.onnx");
    fs::write(&path, ir::encode(&model)).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    match ir::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn external_reference_reads_the_recorded_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_reference(dir.path(), "data.bin", 8, 24);
    let mut bytes = vec![0u8; 8];
    bytes.extend([1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()));
    fs::write(dir.path().join("data.bin"), bytes).unwrap();

    let model = ir::load(&path).unwrap();

    let tensor = &model.graph.unwrap().initializer[0];
    assert_eq!(ir::tensor_to_f32(tensor).unwrap(), arr1(&[1.0f32, 2.0, 3.0, 4.0]).into_dyn());
}

#[test]
fn truncated_data_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_reference(dir.path(), "data.bin", 8, 20);

    let error = load_error(&path);

    assert!(error.contains("tensor `t`"), "{error}");
    assert!(error.contains("holds 20 bytes but the tensor needs bytes 8..24"), "{error}");
}

#[test]
fn missing_data_file_names_the_tensor_and_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_reference(dir.path(), "data.bin", 0, 16);
    fs::remove_file(dir.path().join("data.bin")).unwrap();

    let error = load_error(&path);

    assert!(error.contains("tensor `t`"), "{error}");
    assert!(error.contains("its data file `data.bin` cannot be opened at"), "{error}");
    assert!(error.contains(&dir.path().join("data.bin").display().to_string()), "{error}");
    assert!(error.contains("hint: keep the data file beside the model"), "{error}");
}

#[test]
fn absolute_location_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = dir.path().join("data.bin");
    let path = model_with_reference(dir.path(), absolute.to_str().unwrap(), 0, 16);

    assert!(load_error(&path).contains("is an absolute path"));
}

#[test]
fn location_leaving_the_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    let path = model_with_reference(&inner, "sub/../../data.bin", 0, 16);
    fs::write(dir.path().join("data.bin"), vec![0u8; 16]).unwrap();

    assert!(load_error(&path).contains("leaves the model's folder"));
}

#[cfg(unix)]
#[test]
fn symbolic_link_leaving_the_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    let path = model_with_reference(&inner, "link.bin", 0, 16);
    fs::write(dir.path().join("outside.bin"), vec![0u8; 16]).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.bin"), inner.join("link.bin")).unwrap();

    assert!(load_error(&path).contains("outside the model's folder"));
}

#[test]
fn length_that_disagrees_with_dimensions_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_reference(dir.path(), "data.bin", 0, 32);
    let mut model = ir::decode(&fs::read(&path).unwrap()).unwrap();
    model.graph.as_mut().unwrap().initializer[0].dims = vec![5];
    fs::write(&path, ir::encode(&model)).unwrap();

    assert!(load_error(&path).contains("stores 16 bytes but dimensions [5] call for 20"));
}

#[test]
fn save_rejects_locations_outside_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");

    for location in ["../data.bin", "/tmp/data.bin", "", "model.onnx"] {
        let result = ir::save(&matmul_model(), &path, &external(location, 1));
        assert!(
            matches!(result, Err(IrError::ExternalLocation { .. })),
            "`{location}` was accepted: {result:?}"
        );
    }
    assert!(!path.exists());
}

#[test]
fn save_refuses_tensors_whose_data_is_not_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_reference(dir.path(), "data.bin", 0, 16);
    let model = ir::decode(&fs::read(&path).unwrap()).unwrap();

    let result = ir::save(&model, &dir.path().join("copy.onnx"), &SaveOptions::default());

    assert!(matches!(result, Err(IrError::NotInMemory { tensor }) if tensor == "t"));
}

/// The matmul model saved inline with `w` changed by `edit`, and the loader's error.
fn inline_load_error(edit: impl FnOnce(&mut TensorProto)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let mut model = matmul_model();
    edit(&mut model.graph.as_mut().unwrap().initializer[0]);
    fs::write(&path, ir::encode(&model)).unwrap();
    load_error(&path)
}

#[test]
fn inline_tensor_whose_data_disagrees_with_its_dimensions_is_an_error() {
    // float_data holds 12 values for dims [3, 4].
    let error = inline_load_error(|w| w.dims = vec![30, 4]);
    assert!(
        error.contains(
            "tensor `w` is malformed: dimensions [30, 4] call for 120 elements, found 12"
        ) && error.contains("model.onnx"),
        "{error}"
    );

    let error = inline_load_error(|w| {
        w.raw_data = Some(vec![0u8; 40].into());
        w.float_data.clear();
    });
    assert!(
        error.contains("raw_data has 40 bytes but dimensions [3, 4] of FLOAT call for 48"),
        "{error}"
    );

    let error = inline_load_error(|w| w.float_data.clear());
    assert!(error.contains("call for 12 elements, and it holds no data"), "{error}");

    let error = inline_load_error(|w| {
        w.dims = vec![1 << 40, 1 << 40];
        w.float_data.clear();
    });
    assert!(error.contains("overflow the element count"), "{error}");

    let error = inline_load_error(|w| w.dims = vec![-3, -4]);
    assert!(error.contains("negative dimension -3"), "{error}");
}

#[test]
fn inline_tensors_in_every_typed_field_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let mut model = matmul_model();
    let graph = model.graph.as_mut().unwrap();
    let typed = [
        (DataType::Int64, TensorProto { int64_data: vec![1, 2], ..Default::default() }),
        (DataType::Int8, TensorProto { int32_data: vec![1, 2], ..Default::default() }),
        (DataType::Float16, TensorProto { int32_data: vec![1, 2], ..Default::default() }),
        (DataType::Double, TensorProto { double_data: vec![1.0, 2.0], ..Default::default() }),
        (DataType::Uint64, TensorProto { uint64_data: vec![1, 2], ..Default::default() }),
        (DataType::Complex64, TensorProto { float_data: vec![1.0; 4], ..Default::default() }),
        (DataType::Int4, TensorProto { int32_data: vec![0x21], ..Default::default() }),
    ];
    for (index, (data_type, mut tensor)) in typed.into_iter().enumerate() {
        tensor.name = Some(format!("t{index}"));
        tensor.dims = vec![2];
        tensor.data_type = Some(data_type as i32);
        graph.initializer.push(tensor);
    }
    let empty = TensorProto {
        name: Some("empty".into()),
        dims: vec![0, 3],
        data_type: Some(DataType::Float as i32),
        ..Default::default()
    };
    graph.initializer.push(empty);
    fs::write(&path, ir::encode(&model)).unwrap();

    ir::load(&path).unwrap();
}
