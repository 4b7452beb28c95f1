//! Broken library paths given to `runtime::init`: each is an error naming the path, never a
//! panic, and a failed attempt leaves the process free to load the right library afterwards.
//!
//! One test function runs the steps in order, because the first success in a process is final.

mod runtime_support;

use pipeline::runtime::{self, RuntimeError, RuntimeSource};
use runtime_support::ort_library;

#[test]
fn broken_paths_are_errors_and_a_good_one_loads_afterwards() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing/libonnxruntime.so");
    let error = runtime::init(Some(&missing)).unwrap_err();
    assert!(matches!(error, RuntimeError::LibraryMissing { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&missing.display().to_string()) && text.contains("--ort-lib"), "{text}");

    let text_file = dir.path().join("libonnxruntime.so");
    std::fs::write(&text_file, "this is a text file, not a shared library\n".repeat(4)).unwrap();
    let error = runtime::init(Some(&text_file)).unwrap_err();
    assert!(matches!(error, RuntimeError::LibraryLoad { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&text_file.display().to_string()), "{text}");
    assert!(text.contains("invalid ELF header"), "the loader's reason is missing: {text}");

    let folder_with_text_file = dir.path();
    let error = runtime::init(Some(folder_with_text_file)).unwrap_err();
    assert!(error.to_string().contains(&text_file.display().to_string()), "{error}");

    // A real shared library that is not ONNX Runtime: it lacks OrtGetApiBase.
    let not_ort = ort_library().with_file_name("libonnxruntime_providers_shared.so");
    let error = runtime::init(Some(&not_ort)).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&not_ort.display().to_string()), "{text}");
    assert!(text.contains("OrtGetApiBase"), "{text}");

    let info = runtime::init(Some(&ort_library())).unwrap();
    assert_eq!(info.source, RuntimeSource::Flag);
    assert_eq!(info.version, "1.31.1");
}
