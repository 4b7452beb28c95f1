//! `ORT_DYLIB_PATH` in `runtime::init`: it is searched before the project copy, and a wrong
//! value is an error naming the variable and the path.
//!
//! One test function sets the variable, so nothing else in this process reads it meanwhile.

mod runtime_support;

use pipeline::runtime::{self, RuntimeSource};
use runtime_support::ort_library;

#[test]
fn the_variable_is_used_and_a_wrong_value_is_named() {
    std::env::set_var("ORT_DYLIB_PATH", "/no/such/dir/libonnxruntime.so");
    let error = runtime::init(None).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("/no/such/dir/libonnxruntime.so"), "{text}");
    assert!(text.contains("ORT_DYLIB_PATH"), "{text}");

    std::env::set_var("ORT_DYLIB_PATH", ort_library());
    let info = runtime::init(None).unwrap();
    assert_eq!(info.source, RuntimeSource::EnvVar);
    assert_eq!(info.library, ort_library());
    assert_eq!(info.version, "1.31.1");
}
