//! ONNX Runtime through `ort` (load-dynamic): finding and loading the library once per process,
//! CPU sessions over model files, and running them on owned [`Tensor`]s; tract
//! ([`TractSession`]) runs the same tensors without ONNX Runtime. Both are an
//! [`InferenceSession`], which every metric takes.
//!
//! ```no_run
//! use pipeline::runtime::{self, ModelSession, Threads};
//!
//! let info = runtime::init(None)?;
//! println!("onnx runtime {} from {}", info.version, info.library.display());
//! let session = ModelSession::load("model.onnx".as_ref(), Threads::default())?;
//! for input in session.inputs() {
//!     println!("{}: {} {:?}", input.name, input.elem, input.shape);
//! }
//! # Ok::<(), runtime::RuntimeError>(())
//! ```

mod discovery;
mod optimize;
mod providers;
mod session;
mod tensor;
#[cfg(feature = "tract")]
mod tract;
#[cfg(not(feature = "tract"))]
#[path = "tract_absent.rs"]
mod tract;

use std::path::PathBuf;

pub use discovery::{init, RuntimeInfo, RuntimeSource};
pub use optimize::{optimize_file, write_ort_format, OrtOptimizer};
pub use providers::{available_providers, CPU_PROVIDER};
pub use session::{InferenceSession, IoInfo, ModelSession, Optimization, SessionConfig, Threads};
pub use tensor::{ElemType, Tensor};
pub use tract::{TractSession, TRACT_VERSION};

/// What can go wrong while finding ONNX Runtime, loading a model into it or running one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A path that was named explicitly holds no library.
    #[error(
        "the onnx runtime library {path} given by {origin} does not exist\n\
         hint: point {origin} at libonnxruntime.so, or unset it and run \
         `scripts/setup-onnxruntime.sh` from the repository root"
    )]
    LibraryMissing {
        /// The path that was named.
        path: PathBuf,
        /// Where it was named.
        origin: RuntimeSource,
    },

    /// A library was found but could not be loaded as ONNX Runtime.
    #[error(
        "could not load the onnx runtime library {path} (found through {origin}): {message}\n\
         hint: it must be libonnxruntime.so 1.17 or newer; `scripts/setup-onnxruntime.sh` \
         installs a matching one in .ort/lib"
    )]
    LibraryLoad {
        /// The library file.
        path: PathBuf,
        /// How it was found.
        origin: RuntimeSource,
        /// What the loader said.
        message: String,
    },

    /// No library was found anywhere.
    #[error(
        "onnx runtime library not found; looked at:\n{}\n\
         hint: run `scripts/setup-onnxruntime.sh` from the repository root to install it, \
         or pass --ort-lib /path/to/libonnxruntime.so",
        looked.iter().map(|place| format!("  - {place}")).collect::<Vec<_>>().join("\n")
    )]
    NotFound {
        /// Every place searched, in order, with what was there.
        looked: Vec<String>,
    },

    /// The library loaded but its environment could not be created.
    #[error("onnx runtime {library} loaded but could not start: {message}")]
    Environment {
        /// The library file.
        library: PathBuf,
        /// What ONNX Runtime said.
        message: String,
    },

    /// A model file could not be loaded in tract.
    #[error(
        "could not load model {model} in tract: {message}; hint: tract 0.23 runs fewer models \
         than ONNX Runtime (no int4 type, some float16 graphs and operators missing); measure \
         this one with `evaluate: {{runtime: onnxruntime}}`"
    )]
    TractLoad {
        /// The model file.
        model: PathBuf,
        /// What tract (or the file system) said.
        message: String,
    },

    /// tract was asked for in a build without the `tract` cargo feature.
    #[error(
        "could not load model {model} in tract: this build of pipeline has no tract (the cargo \
         feature `tract` is off); hint: build with default features, or measure with \
         `evaluate: {{runtime: onnxruntime}}`"
    )]
    TractNotBuilt {
        /// The model file.
        model: PathBuf,
    },

    /// A model file could not be loaded into a session.
    #[error("could not load model {model} in onnx runtime: {message}")]
    ModelLoad {
        /// The model file.
        model: PathBuf,
        /// What ONNX Runtime (or the file system) said.
        message: String,
    },

    /// The inputs given to a run do not fit the model.
    #[error("bad input for model {model}: {message}")]
    Input {
        /// The model file.
        model: PathBuf,
        /// What is wrong, naming the input.
        message: String,
    },

    /// ONNX Runtime failed while running a model.
    #[error("running model {model} failed: {message}")]
    Run {
        /// The model file.
        model: PathBuf,
        /// What ONNX Runtime said.
        message: String,
    },

    /// A model output has a type that [`Tensor`] cannot hold.
    #[error(
        "output '{output}' of model {model} has type {elem}, which pipeline cannot read yet\n\
         hint: supported element types are float32, float16, float64, int8..int64, uint8..uint64 \
         and bool"
    )]
    UnsupportedOutput {
        /// The model file.
        model: PathBuf,
        /// The output's name.
        output: String,
        /// Its type.
        elem: ElemType,
    },
}
