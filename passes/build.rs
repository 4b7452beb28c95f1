//! Generates the Rust types of the ONNX protobuf schema in `proto/onnx.proto`.
//!
//! The schema is parsed by `protox` (pure Rust), so building needs no `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");

    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;

    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
