//! The pass contract and the registry of every pass.
//!
//! A pass is registered once, in [`registry`], with its name, a one-line summary, the JSON
//! Schema of its configuration and a constructor that turns a JSON configuration into a
//! runnable pass. The engine never names a pass type: it looks passes up here by name.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;

use crate::convert::fp16::ConvertFp16;
use crate::fusion::Fuse;
use crate::ir::proto::ModelProto;
use crate::ir::IrError;
use crate::quantize::dynamic::QuantizeDynamic;
use crate::quantize::static_quant::QuantizeStatic;

/// Why a pass could not be built or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassError {
    /// The configuration does not fit the pass's config type.
    #[error("invalid configuration for pass `{pass}`: {message}")]
    Config { pass: &'static str, message: String },

    /// The model holds something the pass cannot handle.
    #[error("pass `{pass}` cannot handle node `{node}`: {reason}")]
    Unsupported { pass: &'static str, node: String, reason: String },

    /// The model as a whole does not suit the pass (its opset, or nothing to rewrite).
    #[error("pass `{pass}`: {reason}")]
    Model { pass: &'static str, reason: String },

    /// Nothing in the model is of what the pass rewrites: the output would be the input.
    /// The engine reports the candidate as unchanged, never as a success.
    #[error("pass `{pass}` changed nothing: {reason}")]
    Unchanged { pass: &'static str, reason: String },

    /// Running the model for calibration failed.
    #[error("pass `{pass}`: calibration failed: {source}")]
    Calibration { pass: &'static str, source: RunnerError },

    #[error(transparent)]
    Ir(#[from] IrError),
}

/// A model-to-model transformation with a fixed configuration.
pub trait Pass: Send + Sync {
    /// The registry name, as written in recipes.
    fn name(&self) -> &'static str;

    /// Transforms `model` and returns the new model. The pass must not return its input
    /// unchanged while claiming success: when nothing applies it says so with an error.
    fn run(&self, model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError>;
}

/// What a pass may use besides the model: the runtime the model is made for, and a way to
/// run models on the calibration data. The engine provides it; this crate stays free of any
/// runtime.
#[derive(Default, Clone, Copy)]
pub struct PassContext<'a> {
    /// Runs a model on the recipe's calibration data; `None` when the recipe has none.
    pub calibration: Option<&'a dyn ModelRunner>,
    /// The runtime the target runs models in.
    pub runtime: Runtime,
}

/// The runtime a model is optimized for, which decides the operators a pass may write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Runtime {
    /// ONNX Runtime: its `com.microsoft` contrib operators (Gelu, SkipLayerNormalization,
    /// Attention ...) may be written.
    #[default]
    OnnxRuntime,
    /// Any runtime that implements the ONNX standard: only operators of the default domain.
    Standard,
}

/// Runs a model on a fixed set of samples and hands out chosen float outputs, one batch at
/// a time, so that a caller can reduce them as a stream without holding them all.
pub trait ModelRunner: Sync {
    /// How many samples one pass over the data runs.
    fn samples(&self) -> usize;

    /// Runs `model` on every batch of the data, in order. After each batch, `visit` is
    /// called once per name in `outputs`, in that order, with the output's index in
    /// `outputs` and its values. Outputs that are not float32 are an error.
    fn for_each_batch(
        &self,
        model: &ModelProto,
        outputs: &[String],
        visit: &mut dyn FnMut(usize, ndarray::ArrayViewD<'_, f32>) -> Result<(), String>,
    ) -> Result<(), RunnerError>;
}

/// Why a model could not be run on the calibration data.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

/// What the registry knows about one pass.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Whether the pass runs the model on calibration data (`PassContext::calibration`).
    pub needs_calibration: bool,
    /// The JSON Schema of the pass's configuration object.
    pub config_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Builds the pass from its configuration object.
    pub build: fn(&serde_json::Value) -> Result<Box<dyn Pass>, PassError>,
}

impl PassInfo {
    /// The names of the configuration's parameters, for error messages and suggestions.
    pub fn parameter_names(&self) -> Vec<String> {
        let mut generator = SchemaGenerator::default();
        let schema = (self.config_schema)(&mut generator);
        schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Every pass the engine knows, in the order `pipeline passes` lists them.
pub fn registry() -> &'static [PassInfo] {
    static REGISTRY: &[PassInfo] = &[
        PassInfo {
            name: Fuse::NAME,
            summary: "graph fusion: constant folding, no-op removal, Conv+BN, GELU, LayerNorm, attention ...",
            needs_calibration: false,
            config_schema: config_schema::<<Fuse as Configured>::Config>,
            build: build::<Fuse>,
        },
        PassInfo {
            name: QuantizeDynamic::NAME,
            summary: "dynamic INT8 quantization (MatMul, Gemm, Conv, Gather, LSTM, Attention ...)",
            needs_calibration: false,
            config_schema: config_schema::<<QuantizeDynamic as Configured>::Config>,
            build: build::<QuantizeDynamic>,
        },
        PassInfo {
            name: QuantizeStatic::NAME,
            summary: "static INT8/INT16 quantization (QDQ or QOperator), with ranges calibrated on data",
            needs_calibration: true,
            config_schema: config_schema::<<QuantizeStatic as Configured>::Config>,
            build: build::<QuantizeStatic>,
        },
        PassInfo {
            name: ConvertFp16::NAME,
            summary: "float16 weights and computation, with Casts around the ops kept in float32",
            needs_calibration: false,
            config_schema: config_schema::<<ConvertFp16 as Configured>::Config>,
            build: build::<ConvertFp16>,
        },
    ];
    REGISTRY
}

/// Looks a pass up by its registry name.
pub fn find(name: &str) -> Option<&'static PassInfo> {
    registry().iter().find(|info| info.name == name)
}

/// A pass built from a typed configuration.
pub trait Configured: Pass + Sized + 'static {
    const NAME: &'static str;
    type Config: DeserializeOwned + JsonSchema;

    fn from_config(config: Self::Config) -> Result<Self, PassError>;
}

fn config_schema<C: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<C>()
}

fn build<P: Configured>(config: &serde_json::Value) -> Result<Box<dyn Pass>, PassError> {
    let config = serde_json::from_value::<P::Config>(config.clone())
        .map_err(|e| PassError::Config { pass: P::NAME, message: e.to_string() })?;
    Ok(Box::new(P::from_config(config)?))
}
