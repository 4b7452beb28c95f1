//! The execution providers the loaded ONNX Runtime library was built with, and registering
//! a target's providers on a session.

use std::ffi::{c_char, c_int, CStr};

use ort::ep::ExecutionProviderDispatch;

use super::RuntimeError;

/// ONNX Runtime's name for its CPU execution provider, which every build has.
pub const CPU_PROVIDER: &str = "CPUExecutionProvider";

/// The execution providers the ONNX Runtime library holds, in its order of preference
/// (`CUDAExecutionProvider`, ..., `CPUExecutionProvider`), loading the library with
/// [`super::init`] first if no call has yet.
///
/// A provider listed here is compiled into the library; it may still fail to start when its
/// driver or device is missing, which a session reports when it registers the provider.
pub fn available_providers() -> Result<Vec<String>, RuntimeError> {
    let library = super::init(None)?.library;
    let api = ort::api();
    let mut names: *mut *mut c_char = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: the library is loaded (init above), so `api` points at its function table;
    // GetAvailableProviders writes an array of `count` C strings that we release below.
    let status = unsafe { (api.GetAvailableProviders)(&mut names, &mut count) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is an OrtStatus that we own and release once.
        let message = unsafe {
            let text = CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy();
            let text = text.into_owned();
            (api.ReleaseStatus)(status.0);
            text
        };
        return Err(RuntimeError::Environment { library, message });
    }
    if names.is_null() {
        return Ok(Vec::new());
    }
    let mut providers = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for index in 0..usize::try_from(count).unwrap_or(0) {
        // SAFETY: `names` holds `count` valid, NUL-terminated strings.
        let name = unsafe { CStr::from_ptr(*names.add(index)) };
        providers.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: the array came from GetAvailableProviders with this count and is released once.
    let status = unsafe { (api.ReleaseAvailableProviders)(names, count) };
    if !status.0.is_null() {
        // SAFETY: as above, a status we own.
        unsafe { (api.ReleaseStatus)(status.0) };
    }
    Ok(providers)
}

/// The `ort` registration of the execution provider ONNX Runtime names `name`, failing the
/// session when it does not start (never falling back to the CPU in silence); `None` for the
/// CPU provider, which every session has, and for providers this build cannot register.
pub(crate) fn dispatch(name: &str) -> Option<ExecutionProviderDispatch> {
    use ort::ep;

    let dispatch = match name {
        "CUDAExecutionProvider" => ep::CUDA::default().build(),
        "DmlExecutionProvider" => ep::DirectML::default().build(),
        "QNNExecutionProvider" => ep::QNN::default().build(),
        "OpenVINOExecutionProvider" => ep::OpenVINO::default().build(),
        _ => return None,
    };
    Some(dispatch.error_on_failure())
}
