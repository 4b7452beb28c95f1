//! Fidelity of one model's output to another's, checked against the same figures computed by
//! NumPy from ONNX Runtime Python's outputs of both models on the same data.

mod runtime_support;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use pipeline::evaluate::{fidelity, reference_outputs, Dataset};
use pipeline::runtime::{ModelSession, Threads};
use runtime_support::{classifier, python};

/// Writes `perturbed.onnx` beside the classifier: the same graph with noise added to its
/// weights, so that a few argmaxes flip; prints NumPy's fidelity figures of its `logits`
/// against the classifier's on `data.npz`, one per line, in the order of [`Figures`].
const PERTURB: &str = r#"
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

d = sys.argv[1]
model = onnx.load(f"{d}/classifier.onnx")
rng = np.random.default_rng(11)
for init in model.graph.initializer:
    values = numpy_helper.to_array(init)
    noisy = values + rng.standard_normal(values.shape).astype(np.float32) * 0.4
    init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
onnx.save(model, f"{d}/perturbed.onnx")

x = np.load(f"{d}/data.npz")["x"]
run = lambda path: ort.InferenceSession(path).run(["logits"], {"x": x})[0].astype(np.float64)
ref, ours = run(f"{d}/classifier.onnx"), run(f"{d}/perturbed.onnx")
cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
abs_err = np.abs(ours - ref)
rel = abs_err.max(1) / np.abs(ref).max(1)
agree = (ours.argmax(1) == ref.argmax(1)).mean()
for value in [cos.mean(), cos.min(), abs_err.max(), rel.max(), agree]:
    print(repr(float(value)))
"#;

fn session(path: &Path) -> ModelSession {
    ModelSession::load(path, Threads::default()).expect("the model loads")
}

#[test]
fn fidelity_figures_equal_numpys() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let printed = python(PERTURB, &[dir.path()]);
    let expected: Vec<f64> = printed.lines().map(|l| l.parse().expect("a number")).collect();
    assert_eq!(expected.len(), 5, "{printed}");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let stop = AtomicBool::new(false);

    let mut source = session(&dir.path().join("classifier.onnx"));
    let reference = reference_outputs(&mut source, &data, "logits", 16, &stop).unwrap();
    let mut candidate = session(&dir.path().join("perturbed.onnx"));
    // Batches of 7 do not line up with the reference's 16: samples are matched by index.
    let found = fidelity(&mut candidate, &data, &reference, 7, &stop).unwrap();

    let close = |ours: f64, theirs: f64, what: &str| {
        assert!((ours - theirs).abs() <= 1e-6 * theirs.abs().max(1.0), "{what}: {ours} {theirs}");
    };
    close(found.cosine_mean, expected[0], "mean cosine");
    close(found.cosine_min, expected[1], "min cosine");
    close(found.max_abs_error, expected[2], "max abs error");
    close(found.max_rel_error, expected[3], "max rel error");
    let agreement = found.top1_agreement.expect("three classes per row");
    assert_eq!(agreement, expected[4]);
    // The noise is large enough to matter, so the test can tell figures apart.
    assert!(expected[0] < 0.999 && expected[4] < 1.0, "{expected:?}");
}

#[test]
fn a_model_compared_with_itself_is_faithful() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let stop = AtomicBool::new(false);
    let mut source = session(&dir.path().join("classifier.onnx"));

    let reference = reference_outputs(&mut source, &data, "probs", 64, &stop).unwrap();
    let found = fidelity(&mut source, &data, &reference, 64, &stop).unwrap();

    assert!((found.cosine_mean - 1.0).abs() < 1e-12, "{found:?}");
    assert_eq!(found.max_abs_error, 0.0);
    assert_eq!(found.top1_agreement, Some(1.0));
}

#[test]
fn an_unknown_output_is_named_with_the_ones_there_are() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let mut source = session(&dir.path().join("classifier.onnx"));

    let error = reference_outputs(&mut source, &data, "scores", 8, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();

    assert!(error.contains("no output 'scores'") && error.contains("logits, probs"), "{error}");
}
