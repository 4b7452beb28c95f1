//! Where the test tools live: the workspace, ONNX Runtime's library and the reference venv.
//! Shared by the helper modules of every integration test.

use std::path::PathBuf;

/// The root of the workspace.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's ONNX Runtime library, installed by the setup scripts.
pub fn ort_library() -> PathBuf {
    let library = root().join(".ort/lib/libonnxruntime.so");
    assert!(library.exists(), "no {}: run scripts/setup-test-env.sh", library.display());
    library
}

/// The venv's Python, which has onnx, onnxruntime and numpy.
pub fn venv_python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "no {}: run scripts/setup-test-env.sh", python.display());
    python
}
