//! Fuzzes loading an ONNX model: any bytes written as `model.onnx` and inspected as
//! `pipeline inspect` does (decode, external data, opsets, op histogram, shapes) give a
//! summary or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("model.onnx");
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let _ = pipeline::inspect::inspect(&path);
});
