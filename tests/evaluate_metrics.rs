//! Accuracy and latency measured through ONNX Runtime, checked against counts made by ONNX
//! Runtime's Python API on the same model and data.

mod runtime_support;

use std::path::Path;

use pipeline::evaluate::{accuracy_top1, latency, Dataset, EvalError};
use pipeline::runtime::{ModelSession, Threads};
use runtime_support::{classifier, python};

fn session(dir: &Path) -> ModelSession {
    ModelSession::load(&dir.join("classifier.onnx"), Threads::default()).unwrap()
}

#[test]
fn accuracy_equals_the_count_python_made() {
    let dir = tempfile::tempdir().unwrap();
    let correct = classifier(dir.path(), "N");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let mut session = session(dir.path());

    for batch in [1, 7, 64] {
        let accuracy = accuracy_top1(&mut session, &data, "logits", batch).unwrap();
        assert_eq!(accuracy, correct as f64 / 50.0, "batch {batch}");
    }
    let from_probs = accuracy_top1(&mut session, &data, "probs", 16).unwrap();
    assert_eq!(from_probs, correct as f64 / 50.0);
    assert!(correct > 0 && correct < 50, "the fixture must have right and wrong labels");
}

#[test]
fn a_fixed_batch_is_used_and_the_last_one_padded() {
    let dir = tempfile::tempdir().unwrap();
    let correct = classifier(dir.path(), "8");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let mut session = session(dir.path());
    assert_eq!(session.inputs()[0].shape, vec![Some(8), Some(4)]);

    let accuracy = accuracy_top1(&mut session, &data, "logits", 5).unwrap();

    assert_eq!(accuracy, correct as f64 / 50.0);
}

#[test]
fn labels_of_shape_n_by_1_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let correct = classifier(dir.path(), "N");
    let script = r#"
import sys
import numpy as np
d = sys.argv[1]
data = np.load(f"{d}/data.npz")
np.savez(f"{d}/column.npz", x=data["x"], y=data["y"].astype(np.int32).reshape(-1, 1))
np.savez(f"{d}/floats.npz", x=data["x"], y=data["y"].astype(np.float32))
"#;
    python(script, &[dir.path()]);
    let mut session = session(dir.path());

    let column = Dataset::load(&dir.path().join("column.npz"), Some("y"), None).unwrap();
    let floats = Dataset::load(&dir.path().join("floats.npz"), Some("y"), None).unwrap();

    assert_eq!(accuracy_top1(&mut session, &column, "logits", 10).unwrap(), correct as f64 / 50.0);
    let error = accuracy_top1(&mut session, &floats, "logits", 10).unwrap_err().to_string();
    assert!(error.contains("labels 'y'") && error.contains("are float32, not integers"), "{error}");
}

#[test]
fn accuracy_errors_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let mut session = session(dir.path());
    let labelled = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let unlabelled = Dataset::load(&dir.path().join("reference.npz"), None, None).unwrap();

    let no_output = accuracy_top1(&mut session, &labelled, "scores", 8).unwrap_err();
    let zero_batch = accuracy_top1(&mut session, &labelled, "logits", 0).unwrap_err();
    let wrong_data = accuracy_top1(&mut session, &unlabelled, "logits", 8).unwrap_err();

    let text = no_output.to_string();
    assert!(text.contains("no output 'scores'") && text.contains("logits, probs"), "{text}");
    assert!(zero_batch.to_string().contains("batch size must be at least 1"), "{zero_batch}");
    assert!(matches!(wrong_data, EvalError::Data(_)), "{wrong_data:?}");
    assert!(wrong_data.to_string().contains("model input 'x'"), "{wrong_data}");
}

#[test]
fn accuracy_needs_labels() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    python(
        "import sys, numpy as np\n\
         d = sys.argv[1]\n\
         np.savez(f'{d}/inputs.npz', x=np.load(f'{d}/data.npz')['x'])",
        &[dir.path()],
    );
    let data = Dataset::load(&dir.path().join("inputs.npz"), None, None).unwrap();
    let mut session = session(dir.path());

    let error = accuracy_top1(&mut session, &data, "logits", 8).unwrap_err().to_string();

    assert!(error.contains("accuracy needs labels") && error.contains("inputs.npz"), "{error}");
}

#[test]
fn latency_times_the_requested_runs() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "N");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), None).unwrap();
    let mut session = session(dir.path());

    let stats = latency(&mut session, &data, 3, 25).unwrap();

    assert_eq!(stats.runs, 25);
    assert_eq!(stats.batch, 1);
    assert!(stats.min > 0.0, "{stats:?}");
    assert!(stats.min <= stats.p50 && stats.p50 <= stats.p90, "{stats:?}");
    assert!(stats.p90 <= stats.p99 && stats.p99 <= stats.max, "{stats:?}");
    assert!(stats.min <= stats.mean && stats.mean <= stats.max, "{stats:?}");
    // A 4x3 Gemm takes microseconds; a second would mean something else is being timed.
    assert!(stats.max < 1000.0, "{stats:?}");
    let error = latency(&mut session, &data, 0, 0).unwrap_err().to_string();
    assert!(error.contains("latency runs must be at least 1"), "{error}");
}

#[test]
fn latency_feeds_the_fixed_batch() {
    let dir = tempfile::tempdir().unwrap();
    classifier(dir.path(), "8");
    let data = Dataset::load(&dir.path().join("data.npz"), Some("y"), Some(3)).unwrap();
    let mut session = session(dir.path());

    let stats = latency(&mut session, &data, 1, 5).unwrap();

    assert_eq!(stats.batch, 8);
    assert_eq!(stats.runs, 5);
}
