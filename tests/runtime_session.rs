//! Loading ONNX Runtime and running models through `pipeline::runtime`, checked against ONNX
//! Runtime's own Python API on the same models and inputs.

mod runtime_support;

use std::fs::File;

use ndarray::ArrayD;
use ndarray_npy::NpzReader;
use pipeline::evaluate::compare_outputs;
use pipeline::runtime::{self, ElemType, ModelSession, RuntimeError, Tensor, Threads};
use runtime_support::{classifier, ort_library};

#[test]
fn init_finds_the_library_and_reports_its_version() {
    let info = runtime::init(None).unwrap();

    assert_eq!(info.version, "1.31.1");
    assert!(info.library.exists(), "{}", info.library.display());
    assert!(
        info.library.file_name().unwrap().to_string_lossy().starts_with("libonnxruntime.so"),
        "{}",
        info.library.display()
    );
    assert_eq!(runtime::init(None).unwrap(), info);
}

#[test]
fn init_after_success_keeps_the_first_library() {
    let first = runtime::init(Some(&ort_library())).unwrap();

    let again = runtime::init(Some("/somewhere/else/libonnxruntime.so".as_ref())).unwrap();

    assert_eq!(again, first);
}

#[test]
fn a_model_of_garbage_bytes_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.onnx");
    std::fs::write(&path, b"this is not a protobuf \x00\xff\x13 at all").unwrap();

    let error = ModelSession::load(&path, Threads::default()).unwrap_err();

    assert!(matches!(error, RuntimeError::ModelLoad { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.len() > path.display().to_string().len() + 40, "no reason given: {text}");
}

#[test]
fn a_missing_model_file_is_an_error_naming_it() {
    let error = ModelSession::load("/no/such/model.onnx".as_ref(), Threads::default()).unwrap_err();

    let text = error.to_string();
    assert!(text.contains("/no/such/model.onnx") && text.contains("no such file"), "{text}");
}

#[test]
fn inputs_and_outputs_are_described() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");

    let session =
        ModelSession::load(&dir.path().join("classifier.onnx"), Threads::default()).unwrap();

    assert_eq!(session.inputs().len(), 1);
    assert_eq!(session.inputs()[0].name, "x");
    assert_eq!(session.inputs()[0].elem, ElemType::F32);
    assert_eq!(session.inputs()[0].shape, vec![None, Some(4)]);
    let outputs: Vec<_> = session.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "probs"]);
    assert_eq!(session.outputs()[1].shape, vec![None, Some(3)]);
}

#[test]
fn run_gives_the_outputs_of_onnx_runtime_python() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let mut data = NpzReader::new(File::open(dir.path().join("data.npz")).unwrap()).unwrap();
    let x: ArrayD<f32> = data.by_name("x").unwrap();
    let mut reference =
        NpzReader::new(File::open(dir.path().join("reference.npz")).unwrap()).unwrap();
    let threads = Threads { intra_op: 1, inter_op: 1 };
    let mut session = ModelSession::load(&dir.path().join("classifier.onnx"), threads).unwrap();

    let outputs = session.run(&[("x".to_string(), Tensor::F32(x))]).unwrap();

    assert_eq!(outputs.len(), 2);
    for (name, tensor) in &outputs {
        let expected: ArrayD<f32> = reference.by_name(name).unwrap();
        assert_eq!(tensor.shape(), &[50, 3]);
        let diff = compare_outputs(tensor, &Tensor::F32(expected)).unwrap();
        assert!(diff <= 1e-6, "output {name} differs from python by {diff}");
    }
}

#[test]
fn run_rejects_inputs_that_do_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let model = dir.path().join("classifier.onnx");
    let mut session = ModelSession::load(&model, Threads::default()).unwrap();
    let floats = Tensor::F32(ArrayD::zeros(vec![2, 4]));
    let doubles = Tensor::F64(ArrayD::zeros(vec![2, 4]));

    let wrong_type = session.run(&[("x".to_string(), doubles)]).unwrap_err().to_string();
    let missing = session.run(&[]).unwrap_err().to_string();
    let unknown = session
        .run(&[("x".to_string(), floats.clone()), ("z".to_string(), floats.clone())])
        .unwrap_err()
        .to_string();
    let bad_shape =
        session.run(&[("x".to_string(), Tensor::F32(ArrayD::zeros(vec![2, 5])))]).unwrap_err();

    assert!(wrong_type.contains("'x' expects float32 but was given float64"), "{wrong_type}");
    assert!(missing.contains("input 'x' is not given"), "{missing}");
    assert!(unknown.contains("no input 'z'") && unknown.contains("inputs are: x"), "{unknown}");
    assert!(matches!(bad_shape, RuntimeError::Run { .. }), "{bad_shape:?}");
    assert!(bad_shape.to_string().contains(&model.display().to_string()), "{bad_shape}");
}
