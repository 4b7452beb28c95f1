//! The ONNX model in memory: protobuf types, load and save, and graph editing helpers.
