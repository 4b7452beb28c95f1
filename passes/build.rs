//! Generates the Rust types of the ONNX protobuf schema in `proto/onnx.proto`.
//!
//! The schema is parsed by `protox` (pure Rust), so building needs no `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");

    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;

    // A tensor's data is reference-counted (`bytes::Bytes`): a model cloned for a pass shares
    // its weights with the original instead of copying them, and a model decoded from a
    // buffer points into it.
    prost_build::Config::new().bytes([".onnx.TensorProto.raw_data"]).compile_fds(descriptors)?;
    Ok(())
}
