//! The ONNX model in memory: protobuf types, load and save, and graph editing helpers.
//!
//! Models are the prost types generated from `proto/onnx.proto` ([`proto`]), so every field
//! of the format survives a load and save unchanged. [`load`] reads tensors kept in external
//! data files into memory, so passes only ever see in-memory tensors; [`save`] can move large
//! tensors back out. The helpers in [`graph`] and [`tensor`] cover what passes do over and
//! over: find producers and consumers, order nodes, make fresh names, splice nodes, and turn
//! tensors into `ndarray` arrays and back; [`value_info`] declares tensors and reads their
//! declared types. Their helpers are re-exported here, so `ir::tensor_to_f32` and
//! `ir::graph::tensor_to_f32` name the same function.
//!
//! ```no_run
//! use pipeline_passes::ir;
//!
//! let model = ir::load(std::path::Path::new("model.onnx"))?;
//! let graph = model.graph.as_ref().expect("the model has a graph");
//! for index in ir::topological_order(graph)? {
//!     println!("{}", graph.node[index].op_type());
//! }
//! # Ok::<(), ir::IrError>(())
//! ```

pub mod graph;
mod io;
pub mod shapes;
pub mod tensor;
pub mod value_info;

/// The protobuf types of the ONNX format, generated at build time from `proto/onnx.proto`.
///
/// Optional scalar fields are `Option`s (the format is proto2, where presence matters for a
/// byte-identical round trip); each has an accessor of the same name that returns the
/// default when the field is absent, e.g. `node.op_type()`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use std::path::PathBuf;

pub use graph::{
    attr_float, attr_int, attr_ints, attr_string, attr_tensor, collect_reads, import_opset,
    initializer, make_node, node_attr_float, node_attr_int, node_attr_ints, opset_version,
    remove_dead_nodes, replace_node, subgraph_op_counts, subgraphs_left_alone, topological_order,
    GraphIndex, NameGenerator,
};
pub use io::{
    decode, encode, encode_to, has_external_data, load, load_graph, save, ExternalData, SaveOptions,
};
pub use tensor::{
    data_type_name, tensor_from_f32, tensor_from_i32, tensor_from_i64, tensor_from_i8,
    tensor_from_u8, tensor_to_f32, tensor_to_i64,
};
pub use value_info::{declared_elem_type, declared_type, float_value_info, tensor_value_info};

/// Why a model could not be read, written or edited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IrError {
    /// Reading or writing a file failed.
    #[error("cannot access `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// The file is not a valid ONNX protobuf message.
    #[error("cannot decode `{path}` as an ONNX model: {source}")]
    Decode { path: PathBuf, source: prost::DecodeError },

    /// The file decodes, but to a model without a graph: it is empty or not an ONNX model.
    #[error("`{path}` is not an ONNX model: {reason}; hint: check the path and the file")]
    NoGraph { path: PathBuf, reason: &'static str },

    /// The bytes are not a valid ONNX protobuf message.
    #[error("cannot decode the bytes as an ONNX model: {source}")]
    DecodeBytes { source: prost::DecodeError },

    /// The encoded model would pass protobuf's 2 GiB limit.
    #[error("model `{path}` would be {size} bytes, over protobuf's 2 GiB limit; hint: {hint}")]
    TooLarge { path: PathBuf, size: usize, hint: &'static str },

    /// A tensor's external data cannot be read.
    #[error("tensor `{tensor}` of `{model}` has unusable external data: {reason}")]
    ExternalData { model: PathBuf, tensor: String, reason: String },

    /// The external data location given to [`save`] is not a plain relative path.
    #[error("cannot save external data to `{location}`: {reason}")]
    ExternalLocation { location: String, reason: String },

    /// A tensor still points at an external file instead of holding its data.
    #[error(
        "tensor `{tensor}` keeps its data in an external file; \
         hint: read models with `ir::load`, which brings external data into memory"
    )]
    NotInMemory { tensor: String },

    /// A name that should be an initializer of the graph is not.
    #[error("`{name}` is not an initializer of the graph")]
    MissingInitializer { name: String },

    /// A tensor's element type is not the one the caller asked for.
    #[error("tensor `{tensor}` holds {found}, expected {expected}")]
    DataType { tensor: String, expected: String, found: String },

    /// A tensor's dimensions and data do not agree, or its data is malformed.
    #[error("tensor `{tensor}` is malformed: {reason}")]
    TensorData { tensor: String, reason: String },

    /// The graph's nodes cannot be ordered because some depend on each other in a loop.
    #[error("graph `{graph}` has a cycle through node `{node}`")]
    Cycle { graph: String, node: String },
}
