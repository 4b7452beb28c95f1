//! Reading `.npz`/`.npy` datasets written by numpy, and every error a data file can earn,
//! alone or against a model's inputs.

mod runtime_support;

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use pipeline::evaluate::{DataError, Dataset, ElemType, Tensor};
use pipeline::runtime::IoInfo;
use runtime_support::python;

/// Writes the data files of these tests into `dir` with numpy.
fn write_fixtures(dir: &Path) {
    let script = r#"
import sys
import numpy as np
d = sys.argv[1]
x = np.arange(24, dtype=np.float32).reshape(6, 4)
y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
np.savez(f"{d}/good.npz", x=x, y=y)
np.savez_compressed(f"{d}/compressed.npz", x=x, y=y)
np.savez(f"{d}/fortran.npz", x=np.asfortranarray(x), y=y)
np.savez(f"{d}/two_inputs.npz", x=x, mask=np.ones((6, 4), dtype=bool), y=y)
np.savez(f"{d}/extra.npz", x=x, y=y, notes=np.zeros(6, dtype=np.int32))
np.savez(f"{d}/uneven.npz", x=x, y=y[:5])
np.savez(f"{d}/zero_rows.npz", x=np.zeros((0, 4), dtype=np.float32))
np.savez(f"{d}/no_arrays.npz")
np.savez(f"{d}/half.npz", x=x.astype(np.float16), y=y)
np.savez(f"{d}/complex.npz", x=x.astype(np.complex64))
np.savez(f"{d}/scalar.npz", x=np.float32(3.0))
np.savez(f"{d}/doubles.npz", x=x.astype(np.float64), y=y)
np.savez(f"{d}/wide.npz", x=np.zeros((6, 5), dtype=np.float32), y=y)
np.savez(f"{d}/flat.npz", x=np.zeros(6, dtype=np.float32), y=y)
np.save(f"{d}/single.npy", x)
open(f"{d}/empty.npz", "wb").close()
open(f"{d}/garbage.npz", "wb").write(b"definitely not a zip archive")
open(f"{d}/data.csv", "w").write("1,2,3\n")
"#;
    python(script, &[dir]);
}

struct Fixtures {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixtures {
    fn new() -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        write_fixtures(dir.path());
        let root = dir.path().to_path_buf();
        Fixtures { _dir: dir, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The error loading `name` gives, as text, after checking it names the file.
    fn load_error(&self, name: &str, labels: Option<&str>, samples: Option<usize>) -> String {
        let error = Dataset::load(&self.path(name), labels, samples).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&self.path(name).display().to_string()), "{text}");
        text
    }
}

fn input(name: &str, elem: ElemType, shape: &[Option<i64>]) -> IoInfo {
    IoInfo { name: name.to_string(), elem, shape: shape.to_vec() }
}

fn x_input() -> Vec<IoInfo> {
    vec![input("x", ElemType::F32, &[None, Some(4)])]
}

fn expected_x() -> Tensor {
    let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
    Tensor::F32(ArrayD::from_shape_vec(vec![6, 4], values).unwrap())
}

#[test]
fn a_npz_with_labels_loads_and_fits_its_model() {
    let fixtures = Fixtures::new();

    for name in ["good.npz", "compressed.npz", "fortran.npz"] {
        let data = Dataset::load(&fixtures.path(name), Some("y"), None).unwrap();

        assert_eq!(data.len(), 6, "{name}");
        assert_eq!(data.inputs().len(), 1, "{name}");
        assert_eq!(data.inputs()[0].0, "x");
        assert_eq!(data.inputs()[0].1, expected_x(), "{name}");
        let (labels_name, labels) = data.labels().unwrap();
        assert_eq!(labels_name, "y");
        let expected = ArrayD::from_shape_vec(vec![6], vec![0i64, 1, 2, 0, 1, 2]).unwrap();
        assert_eq!(labels, &Tensor::I64(expected));
        data.check_inputs(&x_input()).unwrap();
    }
}

#[test]
fn samples_keeps_the_first_rows() {
    let fixtures = Fixtures::new();

    let data = Dataset::load(&fixtures.path("good.npz"), Some("y"), Some(4)).unwrap();
    let all = Dataset::load(&fixtures.path("good.npz"), Some("y"), Some(100)).unwrap();

    assert_eq!(data.len(), 4);
    assert_eq!(data.inputs()[0].1, expected_x().slice0(0..4));
    assert_eq!(data.labels().unwrap().1.shape(), &[4]);
    assert_eq!(all.len(), 6);
    let batch = data.batch(&x_input(), 1..3);
    assert_eq!(batch, vec![("x".to_string(), expected_x().slice0(1..3))]);
}

#[test]
fn a_npy_feeds_the_single_input_of_a_model() {
    let fixtures = Fixtures::new();

    let data = Dataset::load(&fixtures.path("single.npy"), None, None).unwrap();

    assert_eq!(data.len(), 6);
    data.check_inputs(&[input("pixels", ElemType::F32, &[None, Some(4)])]).unwrap();
    let batch = data.batch(&[input("pixels", ElemType::F32, &[None, Some(4)])], 0..2);
    assert_eq!(batch, vec![("pixels".to_string(), expected_x().slice0(0..2))]);

    let two = [input("a", ElemType::F32, &[None, Some(4)]), input("b", ElemType::F32, &[None])];
    let error = data.check_inputs(&two).unwrap_err();
    assert!(matches!(error, DataError::SingleArray { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("single array") && text.contains("2 inputs: a, b"), "{text}");
    assert!(text.contains("single.npy"), "{text}");
}

#[test]
fn file_errors_name_the_file_and_the_problem() {
    let fixtures = Fixtures::new();

    let missing = fixtures.load_error("absent.npz", None, None);
    let empty = fixtures.load_error("empty.npz", None, None);
    let no_arrays = fixtures.load_error("no_arrays.npz", None, None);
    let garbage = fixtures.load_error("garbage.npz", None, None);
    let csv = fixtures.load_error("data.csv", None, None);
    let npy_labels = fixtures.load_error("single.npy", Some("y"), None);
    std::fs::create_dir(fixtures.path("folder.npz")).unwrap();
    let folder = fixtures.load_error("folder.npz", None, None);

    assert!(missing.starts_with("could not read data file"), "{missing}");
    assert!(empty.contains("holds no arrays"), "{empty}");
    assert!(no_arrays.contains("holds no arrays"), "{no_arrays}");
    assert!(garbage.contains("not a .npz (zip) archive"), "{garbage}");
    assert!(csv.contains("neither .npz nor .npy"), "{csv}");
    assert!(folder.ends_with("it is a folder, not a file"), "{folder}");
    assert!(npy_labels.contains("labels 'y' cannot come from"), "{npy_labels}");
    assert!(npy_labels.contains("numpy.savez"), "{npy_labels}");
}

#[test]
fn array_errors_name_the_array() {
    let fixtures = Fixtures::new();

    let labels = fixtures.load_error("good.npz", Some("label"), None);
    let uneven = fixtures.load_error("uneven.npz", Some("y"), None);
    let zero_rows = fixtures.load_error("zero_rows.npz", None, None);
    let zero_samples = fixtures.load_error("good.npz", Some("y"), Some(0));
    let half = fixtures.load_error("half.npz", Some("y"), None);
    let complex = fixtures.load_error("complex.npz", None, None);
    let scalar = fixtures.load_error("scalar.npz", None, None);

    assert!(labels.contains("labels array 'label' not found"), "{labels}");
    assert!(labels.contains("arrays present: x, y"), "{labels}");
    assert!(uneven.contains("different numbers of samples"), "{uneven}");
    assert!(uneven.contains("'x' has 6, 'y' has 5"), "{uneven}");
    assert!(
        zero_rows.contains("no samples") && zero_rows.contains("'x' has 0 rows"),
        "{zero_rows}"
    );
    assert!(zero_samples.contains("0 samples were asked for"), "{zero_samples}");
    assert!(half.contains("array 'x'") && half.contains("dtype float16"), "{half}");
    assert!(complex.contains("array 'x'") && complex.contains("complex64"), "{complex}");
    assert!(scalar.contains("array 'x'") && scalar.contains("is a scalar"), "{scalar}");
}

#[test]
fn check_inputs_names_the_file_the_array_and_the_model_input() {
    let fixtures = Fixtures::new();
    let load = |name: &str| Dataset::load(&fixtures.path(name), Some("y"), None).unwrap();
    let good = load("good.npz");

    let renamed = [input("x_in", ElemType::F32, &[None, Some(4)])];
    let missing = good.check_inputs(&renamed).unwrap_err().to_string();
    let doubles = load("doubles.npz").check_inputs(&x_input()).unwrap_err().to_string();
    let wide = load("wide.npz").check_inputs(&x_input()).unwrap_err().to_string();
    let flat = load("flat.npz").check_inputs(&x_input()).unwrap_err().to_string();
    let extra = load("extra.npz").check_inputs(&x_input()).unwrap_err().to_string();
    let two = [
        input("x", ElemType::F32, &[None, Some(4)]),
        input("mask", ElemType::Bool, &[None, Some(4)]),
    ];
    let both = load("two_inputs.npz");
    let fixed_batch = [input("x", ElemType::F32, &[Some(1), Some(4)])];

    for text in [&missing, &doubles, &wide, &flat, &extra] {
        assert!(text.contains(&fixtures.root.display().to_string()), "{text}");
        assert!(text.contains("hint:"), "{text}");
    }
    assert!(missing.contains("no array for model input 'x_in'"), "{missing}");
    assert!(
        missing.contains("arrays present: x") && missing.contains("did you mean 'x'"),
        "{missing}"
    );
    assert!(doubles.contains("array 'x'") && doubles.contains("is float64"), "{doubles}");
    assert!(doubles.contains("model input 'x' expects float32"), "{doubles}");
    assert!(doubles.contains("astype(numpy.float32)"), "{doubles}");
    assert!(wide.contains("has shape [6, 5] but model input 'x' expects [?, 4]"), "{wide}");
    assert!(flat.contains("has shape [6] but model input 'x' expects [?, 4]"), "{flat}");
    assert!(extra.contains("arrays the model does not take: notes"), "{extra}");
    assert!(extra.contains("model inputs: x"), "{extra}");
    both.check_inputs(&two).unwrap();
    let batch = both.batch(&two, 0..6);
    assert_eq!(batch.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["x", "mask"]);
    good.check_inputs(&fixed_batch).unwrap();
}
