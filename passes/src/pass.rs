//! The pass contract and the registry of every pass.
//!
//! A pass is registered once, in [`registry`], with its name, a one-line summary, the JSON
//! Schema of its configuration and a constructor that turns a JSON configuration into a
//! runnable pass. The engine never names a pass type: it looks passes up here by name.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;

use crate::convert::fp16::ConvertFp16;
use crate::convert::ort_optimize::OrtOptimize;
use crate::convert::shapes::FixShapes;
use crate::export::Export;
use crate::fusion::Fuse;
use crate::ir::proto::ModelProto;
use crate::ir::IrError;
use crate::quantize::dynamic::QuantizeDynamic;
use crate::quantize::static_quant::QuantizeStatic;
use crate::quantize::weights::QuantizeWeights;

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

    /// The runtime's graph optimizer failed, or the context has none.
    #[error("pass `{pass}`: graph optimization failed: {reason}")]
    Optimizer { pass: &'static str, reason: String },

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

    /// Checks the configuration against the source model and the runtime its models are
    /// made for, before anything runs (names of dimensions or inputs it must find, a format
    /// the runtime decides), so that `pipeline validate` catches what would otherwise fail
    /// every candidate. Only what the passes before it cannot change may be checked; by
    /// default nothing is.
    fn check_source(&self, _model: &ModelProto, _runtime: Runtime) -> Result<(), PassError> {
        Ok(())
    }
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
    /// Runs the runtime's own graph optimizer; `None` where no runtime is at hand.
    pub optimizer: Option<&'a dyn GraphOptimizer>,
    /// Takes the files a pass writes beside the model (an `export` to GGUF); `None` where
    /// nothing would keep them.
    pub artifacts: Option<&'a dyn ArtifactSink>,
}

/// A file a pass makes from the model besides the model itself, such as a GGUF file of its
/// weights. The engine saves it beside the candidate's model as `<model stem>.<extension>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The file extension, without the dot (`gguf`).
    pub extension: &'static str,
    /// The file's content.
    pub bytes: Vec<u8>,
    /// What the file holds, in one line, for the run's report.
    pub summary: String,
}

/// Receives the artifacts passes make. The engine gives each step one.
pub trait ArtifactSink: Sync {
    fn add(&self, artifact: Artifact);
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
        visit: &mut BatchVisitor<'_>,
    ) -> Result<(), RunnerError>;
}

/// What [`ModelRunner::for_each_batch`] hands each output of each batch to: the output's
/// index in the names asked for, and its values; an error ends the run with that message.
pub type BatchVisitor<'a> =
    dyn FnMut(usize, ndarray::ArrayViewD<'_, f32>) -> Result<(), String> + 'a;

/// Why a model could not be run on the calibration data.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

/// Runs a runtime's own graph optimizer on a model and hands back the model it writes, for
/// passes such as `ort_optimize`. The engine implements it over ONNX Runtime.
pub trait GraphOptimizer: Sync {
    /// Optimizes `model` at `level` and returns the optimized model, with every tensor in
    /// memory. The optimized model loads again in a fresh session of the same runtime.
    fn optimize(
        &self,
        model: &ModelProto,
        level: OptimizationLevel,
    ) -> Result<ModelProto, RunnerError>;

    /// Writes `model`, optimized at `level`, in the runtime's own file format (ONNX
    /// Runtime's ORT format) and returns the file's bytes, checked to load again in the
    /// runtime. A runtime without a format of its own says so.
    fn write_runtime_format(
        &self,
        model: &ModelProto,
        level: OptimizationLevel,
    ) -> Result<Vec<u8>, RunnerError> {
        let _ = (model, level);
        Err(RunnerError(format!("{} has no format of its own", self.describe())))
    }

    /// The runtime, its version and the execution providers it optimizes for, as a reader
    /// of a note in the model should see them (`ONNX Runtime 1.31.1 on the CPU execution
    /// provider`).
    fn describe(&self) -> String;
}

/// How far a runtime's graph optimizer rewrites a model; each level includes the ones
/// before it. These are ONNX Runtime's levels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizationLevel {
    /// Rewrites that keep to standard operators and suit every execution provider: constant
    /// folding, removal of redundant nodes, Conv with Add, Mul or BatchNormalization, MatMul
    /// with Add into Gemm.
    Basic,
    /// Fusions into ONNX Runtime's contrib operators, made for the nodes the CPU provider
    /// runs: FusedConv, FusedGemm, GELU, LayerNormalization, attention.
    #[default]
    Extended,
    /// Memory layout rewrites as well: NCHWc convolutions and pooling, blocked for the
    /// instruction set of the CPU they were made on, which only the CPU provider of an ONNX
    /// Runtime build alike runs.
    Layout,
}

impl OptimizationLevel {
    /// Every level, lowest first.
    pub const ALL: [OptimizationLevel; 3] =
        [OptimizationLevel::Basic, OptimizationLevel::Extended, OptimizationLevel::Layout];

    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            OptimizationLevel::Basic => "basic",
            OptimizationLevel::Extended => "extended",
            OptimizationLevel::Layout => "layout",
        }
    }
}

impl std::fmt::Display for OptimizationLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `metadata_props` key under which a pass records that its model runs only on some
/// execution providers; the value says which and why. It stays in the saved model, and the
/// engine's report notes every candidate whose model holds it.
pub const PROVIDER_SPECIFIC_KEY: &str = "pipeline.provider_specific";

/// Records in `model`'s metadata that it runs only where `note` says ([`PROVIDER_SPECIFIC_KEY`]),
/// replacing an earlier note of the same key.
pub fn mark_provider_specific(model: &mut ModelProto, note: String) {
    use crate::ir::proto::StringStringEntryProto;

    model.metadata_props.retain(|entry| entry.key() != PROVIDER_SPECIFIC_KEY);
    model.metadata_props.push(StringStringEntryProto {
        key: Some(PROVIDER_SPECIFIC_KEY.to_string()),
        value: Some(note),
    });
}

/// The note a pass left with [`mark_provider_specific`], if any.
pub fn provider_specific_note(model: &ModelProto) -> Option<&str> {
    model
        .metadata_props
        .iter()
        .find(|entry| entry.key() == PROVIDER_SPECIFIC_KEY)
        .map(|entry| entry.value())
}

/// What the registry knows about one pass.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// The version of the pass's output: bump it when the pass's output for the same input
    /// and configuration changes, so that cached outputs of the old version are not reused.
    pub version: u32,
    /// When the pass runs the model on calibration data (`PassContext::calibration`).
    pub calibration: CalibrationUse,
    /// The JSON Schema of the pass's configuration object.
    pub config_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Builds the pass from its configuration object.
    pub build: fn(&serde_json::Value) -> Result<Box<dyn Pass>, PassError>,
    /// Parameters that only mean something for some values of another parameter; the
    /// planner leaves them out of a searched configuration where they do not apply, so that
    /// they make no duplicate candidates.
    pub applies_when: &'static [AppliesWhen],
}

/// `parameter` applies only when `depends_on` has one of `values` (as a recipe writes them:
/// `percentile`, `true`); when `depends_on` is not set, its default decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliesWhen {
    pub parameter: &'static str,
    pub depends_on: &'static str,
    pub values: &'static [&'static str],
}

impl AppliesWhen {
    pub const fn new(
        parameter: &'static str,
        depends_on: &'static str,
        values: &'static [&'static str],
    ) -> Self {
        AppliesWhen { parameter, depends_on, values }
    }
}

/// When a pass needs calibration data, so that a recipe without it is refused before anything
/// runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationUse {
    /// The pass never runs the model.
    Never,
    /// Every configuration of the pass runs the model on calibration data.
    Always,
    /// Only configurations that set this boolean parameter to `true` run the model.
    When(&'static str),
}

impl PassInfo {
    /// Whether the pass, configured with some of `values` for each parameter, runs the model on
    /// calibration data for at least one of them. `values` maps a parameter's name to the
    /// values the recipe tries.
    pub fn needs_calibration<'v>(
        &self,
        mut values: impl FnMut(&str) -> Option<&'v [serde_json::Value]>,
    ) -> bool {
        match self.calibration {
            CalibrationUse::Never => false,
            CalibrationUse::Always => true,
            CalibrationUse::When(parameter) => values(parameter)
                .is_some_and(|tried| tried.iter().any(|value| value.as_bool() == Some(true))),
        }
    }

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

/// quantize_static's calibration settings that only one calibration method reads (minmax is
/// the default method; `averaging_constant` only weighs a moving average).
const QUANTIZE_STATIC_APPLIES: &[AppliesWhen] = &[
    AppliesWhen::new("moving_average", "calibration", &["minmax"]),
    AppliesWhen::new("averaging_constant", "calibration", &["minmax"]),
    AppliesWhen::new("averaging_constant", "moving_average", &["true"]),
    AppliesWhen::new("num_bins", "calibration", &["entropy", "percentile"]),
    AppliesWhen::new("num_quantized_bins", "calibration", &["entropy"]),
    AppliesWhen::new("percentile", "calibration", &["percentile"]),
];

/// quantize_weights' `accuracy_level` is an attribute of MatMulNBits, which `auto` writes for
/// ONNX Runtime.
const QUANTIZE_WEIGHTS_APPLIES: &[AppliesWhen] =
    &[AppliesWhen::new("accuracy_level", "format", &["matmul_nbits", "auto"])];

/// export's parameters each belong to one format.
const EXPORT_APPLIES: &[AppliesWhen] = &[
    AppliesWhen::new("external_data", "format", &["onnx"]),
    AppliesWhen::new("size_threshold", "format", &["onnx"]),
    AppliesWhen::new("size_threshold", "external_data", &["auto"]),
    AppliesWhen::new("opset", "format", &["onnx"]),
    AppliesWhen::new("ir_version", "format", &["onnx"]),
    AppliesWhen::new("optimization", "format", &["ort"]),
];

/// Every pass the engine knows, in the order `pipeline passes` lists them.
pub fn registry() -> &'static [PassInfo] {
    static REGISTRY: &[PassInfo] = &[
        PassInfo {
            name: Fuse::NAME,
            summary: "graph fusion: constant folding, no-op removal, Conv+BN, GELU, LayerNorm, attention ...",
            version: 1,
            calibration: CalibrationUse::Never,
            config_schema: config_schema::<<Fuse as Configured>::Config>,
            build: build::<Fuse>,
            applies_when: &[],
        },
        PassInfo {
            name: QuantizeDynamic::NAME,
            summary: "dynamic INT8 quantization (MatMul, Gemm, Conv, Gather, LSTM, Attention ...)",
            version: 1,
            calibration: CalibrationUse::Never,
            config_schema: config_schema::<<QuantizeDynamic as Configured>::Config>,
            build: build::<QuantizeDynamic>,
            applies_when: &[],
        },
        PassInfo {
            name: QuantizeStatic::NAME,
            summary: "static INT8/INT16 quantization (QDQ or QOperator), with ranges calibrated on data",
            version: 1,
            calibration: CalibrationUse::Always,
            config_schema: config_schema::<<QuantizeStatic as Configured>::Config>,
            build: build::<QuantizeStatic>,
            applies_when: QUANTIZE_STATIC_APPLIES,
        },
        PassInfo {
            name: QuantizeWeights::NAME,
            summary: "weight-only INT4/INT8 block quantization of MatMul weights (MatMulNBits or QDQ)",
            version: 1,
            calibration: CalibrationUse::When("data_aware"),
            config_schema: config_schema::<<QuantizeWeights as Configured>::Config>,
            build: build::<QuantizeWeights>,
            applies_when: QUANTIZE_WEIGHTS_APPLIES,
        },
        PassInfo {
            name: ConvertFp16::NAME,
            summary: "float16 weights and computation, with Casts around the ops kept in float32",
            version: 1,
            calibration: CalibrationUse::Never,
            config_schema: config_schema::<<ConvertFp16 as Configured>::Config>,
            build: build::<ConvertFp16>,
            applies_when: &[],
        },
        PassInfo {
            name: FixShapes::NAME,
            summary: "symbolic dimensions (batch, sequence) fixed to sizes, for static shapes",
            version: 1,
            calibration: CalibrationUse::Never,
            config_schema: config_schema::<<FixShapes as Configured>::Config>,
            build: build::<FixShapes>,
            applies_when: &[],
        },
        PassInfo {
            name: OrtOptimize::NAME,
            summary: "ONNX Runtime's own graph optimizer; provider-specific above `basic`",
            version: 1,
            calibration: CalibrationUse::Never,
            config_schema: config_schema::<<OrtOptimize as Configured>::Config>,
            build: build::<OrtOptimize>,
            applies_when: &[],
        },
        PassInfo {
            name: Export::NAME,
            summary: "the model as ONNX (inline or external data, opset, IR version), or \
                      beside it in ORT format or GGUF",
            version: 1,
            calibration: CalibrationUse::Never,
            config_schema: config_schema::<<Export as Configured>::Config>,
            build: build::<Export>,
            applies_when: EXPORT_APPLIES,
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
