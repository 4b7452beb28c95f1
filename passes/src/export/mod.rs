//! The `export` pass: decides how the model is written, or writes it in another format
//! beside the model.
//!
//! `onnx` ([`onnx`]) sets the model's opset and IR version where that is safe and tells the
//! engine, which saves the model, whether its tensors go to a data file. `ort` ([`ort`]),
//! `gguf` ([`gguf`]) and `nnef` ([`nnef`]) leave the model as it is and hand the file they
//! make to the engine as an [`Artifact`] through [`PassContext::artifacts`]; the engine saves
//! it next to the candidate's model as `<model stem>.<extension>`.

pub mod gguf;
#[cfg(feature = "nnef")]
pub mod nnef;
#[cfg(not(feature = "nnef"))]
#[path = "nnef_absent.rs"]
pub mod nnef;
pub mod onnx;
pub mod opsets;
pub mod ort;

use tracing::{info, info_span};

use self::onnx::{ByteSize, ExternalDataMode, OnnxWrite};
use crate::ir::proto::ModelProto;
use crate::pass::{Artifact, Configured, OptimizationLevel, Pass, PassContext, PassError};

/// The extensions of the files this pass may write beside a model, so that the engine can
/// clear the ones an earlier run left.
pub const ARTIFACT_EXTENSIONS: &[&str] = &["gguf", "ort", nnef::EXTENSION];

/// The configuration of [`Export`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The format to write: `onnx`, the model file itself, written as the other parameters
    /// say; `ort`, ONNX Runtime's own format beside the model (`<stem>.ort`); `gguf`, the
    /// model's weights as a GGUF file beside the model (MatMulNBits weights as Q4_0 or Q8_0
    /// where they fit, other float weights as F32 or F16); `nnef`, the whole model as tract's
    /// NNEF archive beside the model (`<stem>.nnef.tgz`).
    pub format: ExportFormat,

    /// `onnx`: `auto`, the model's tensors of 1 KiB or more go to one data file
    /// `<model file>.data` when the model is larger than `size_threshold`; `always`, they
    /// always do; `never`, the model is one file (at most 2 GiB).
    #[serde(default)]
    #[schemars(extend("default" = "auto"))]
    pub external_data: Option<ExternalDataMode>,

    /// `onnx` with `external_data: auto`: the model size above which a data file is written,
    /// in bytes or with a unit (`"1MiB"`).
    #[serde(default)]
    #[schemars(extend("default" = "1GiB"))]
    pub size_threshold: Option<ByteSize>,

    /// `onnx`: the opset of the default domain to declare; left out, the model's is kept. It
    /// is set only when every operator of the model has the same definition at both opsets.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub opset: Option<i64>,

    /// `onnx`: the IR version to declare; left out, the model's is kept. It is refused when
    /// the model's opset, functions or element types need a newer one.
    #[serde(default)]
    #[schemars(range(min = 3))]
    pub ir_version: Option<i64>,

    // `ort`: ONNX Runtime's optimization level. Described in `ort_level_schema`, which a doc
    // comment here would override.
    #[serde(default)]
    #[schemars(schema_with = "ort_level_schema")]
    pub optimization: Option<OptimizationLevel>,
}

fn ort_level_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = OptimizationLevel::ALL.iter().map(|level| level.name()).collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names,
        "description": "`ort`: how far ONNX Runtime optimizes the model it writes in its \
                        format: `basic` (standard operators, every execution provider), or \
                        `extended` and `layout`, made for the CPU provider it runs on.",
        "default": OptimizationLevel::Basic.name(),
    })
}

impl ExportConfig {
    /// How the engine writes the model of a step configured with `config`, when the step
    /// exports ONNX; `None` for another format or a configuration that does not parse.
    pub fn onnx_write(config: &serde_json::Value) -> Option<OnnxWrite> {
        let config: ExportConfig = serde_json::from_value(config.clone()).ok()?;
        (config.format == ExportFormat::Onnx).then(|| OnnxWrite {
            external_data: config.external_data.unwrap_or_default(),
            size_threshold: config.size_threshold.map_or(onnx::DEFAULT_SIZE_THRESHOLD, |s| s.0),
        })
    }

    /// The parameters set that `format` does not read, by name.
    fn foreign_parameters(&self) -> Vec<&'static str> {
        let onnx = [
            ("external_data", self.external_data.is_some()),
            ("size_threshold", self.size_threshold.is_some()),
            ("opset", self.opset.is_some()),
            ("ir_version", self.ir_version.is_some()),
        ];
        let ort = [("optimization", self.optimization.is_some())];
        let foreign: Vec<(&'static str, bool)> = match self.format {
            ExportFormat::Onnx => ort.to_vec(),
            ExportFormat::Ort => onnx.to_vec(),
            _ => onnx.iter().chain(&ort).copied().collect(),
        };
        let mut names: Vec<&'static str> =
            foreign.into_iter().filter(|(_, set)| *set).map(|(name, _)| name).collect();
        let auto = self.external_data.unwrap_or_default() == ExternalDataMode::Auto;
        if self.format == ExportFormat::Onnx && !auto && self.size_threshold.is_some() {
            names.push("size_threshold");
        }
        names
    }
}

/// The formats a recipe may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// GGUF version 3, the file format of ggml and llama.cpp.
    Gguf,
    /// ONNX, with its tensors inline or in one data file beside it.
    Onnx,
    /// ONNX Runtime's own format, written by ONNX Runtime.
    Ort,
    /// NNEF through tract, as one `.nnef.tgz` archive.
    Nnef,
}

impl ExportFormat {
    fn name(self) -> &'static str {
        match self {
            ExportFormat::Gguf => "gguf",
            ExportFormat::Onnx => "onnx",
            ExportFormat::Ort => "ort",
            ExportFormat::Nnef => "nnef",
        }
    }
}

/// Decides how the model is written (`onnx`), or writes it in another format beside the
/// model (`ort`, `gguf`, `nnef`).
#[derive(Clone, Debug)]
pub struct Export {
    format: ExportFormat,
    /// `onnx`: how the engine writes the model.
    write: OnnxWrite,
    opset: Option<i64>,
    ir_version: Option<i64>,
    /// `ort`: the optimization level of the file ONNX Runtime writes.
    level: OptimizationLevel,
}

impl Configured for Export {
    const NAME: &'static str = "export";
    type Config = ExportConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        let foreign = config.foreign_parameters();
        if let Some(name) = foreign.first() {
            let hint = match *name {
                "size_threshold" if config.format == ExportFormat::Onnx => {
                    "`size_threshold` applies with `external_data: auto` only"
                }
                "optimization" => "`optimization` applies to `format: ort` only",
                _ => {
                    "`external_data`, `size_threshold`, `opset` and `ir_version` apply to \
                      `format: onnx` only"
                }
            };
            return Err(PassError::Config {
                pass: Self::NAME,
                message: format!(
                    "`{name}` does not apply to `format: {}` here; hint: {hint}",
                    config.format.name()
                ),
            });
        }
        // What needs no model is refused here, before anything runs.
        let config_error = |message: String| PassError::Config { pass: Self::NAME, message };
        let latest_opset = opsets::OPSET_IR_VERSIONS.last().map_or(0, |(opset, _)| *opset);
        if let Some(opset) = config.opset {
            if !opsets::OPSET_IR_VERSIONS.iter().any(|(known, _)| *known == opset) {
                return Err(config_error(format!(
                    "`opset: {opset}` is no released opset of the default ONNX domain (known: \
                     1, 5 to {latest_opset}); hint: leave `opset` out to keep the model's"
                )));
            }
        }
        if let Some(ir_version) = config.ir_version {
            if !(3..=opsets::LATEST_IR_VERSION).contains(&ir_version) {
                return Err(config_error(format!(
                    "`ir_version: {ir_version}` is not one of 3 to {}; hint: leave \
                     `ir_version` out to keep the model's",
                    opsets::LATEST_IR_VERSION
                )));
            }
        }
        let needs = |opset: i64| {
            opsets::OPSET_IR_VERSIONS.iter().find(|(known, _)| *known == opset).map(|(_, ir)| *ir)
        };
        if let (Some(opset), Some(ir_version)) = (config.opset, config.ir_version) {
            if let Some(least) = needs(opset).filter(|least| *least > ir_version) {
                return Err(config_error(format!(
                    "`opset: {opset}` needs IR version {least} or later, and `ir_version` is \
                     {ir_version}; hint: set `ir_version: {least}`, or leave it out"
                )));
            }
        }

        let write = OnnxWrite {
            external_data: config.external_data.unwrap_or_default(),
            size_threshold: config.size_threshold.map_or(onnx::DEFAULT_SIZE_THRESHOLD, |s| s.0),
        };
        let export = Export {
            format: config.format,
            write,
            opset: config.opset,
            ir_version: config.ir_version,
            level: config.optimization.unwrap_or(OptimizationLevel::Basic),
        };
        Ok(export)
    }
}

impl Pass for Export {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("export", format = self.format.name()).entered();
        if self.format == ExportFormat::Onnx {
            return self.declare(model);
        }
        let Some(sink) = context.artifacts else {
            return Err(PassError::Model {
                pass: Self::NAME,
                reason: "nothing receives the exported file here (the pass context has no \
                         artifact sink); run the pass through the engine"
                    .to_string(),
            });
        };

        let fail = |reason: String| PassError::Model { pass: Self::NAME, reason };
        let (extension, bytes, summary) = if self.format == ExportFormat::Ort {
            let (bytes, summary) = ort::export(&model, self.level, context, Self::NAME)?;
            ("ort", bytes, summary)
        } else if self.format == ExportFormat::Nnef {
            let exported = nnef::export(&model).map_err(|error| fail(error.to_string()))?;
            (nnef::EXTENSION, exported.bytes, exported.summary)
        } else {
            let exported = gguf::export(&model).map_err(|error| PassError::Model {
                pass: Self::NAME,
                reason: error.to_string(),
            })?;
            ("gguf", exported.bytes, exported.summary)
        };
        info!("{summary}");
        sink.add(Artifact { extension, bytes, summary });
        Ok(model)
    }
}

impl Export {
    /// `onnx`: the model with the opset and IR version asked for, checked to be writable as
    /// the configuration says.
    fn declare(&self, mut model: ModelProto) -> Result<ModelProto, PassError> {
        let refuse = |reason: String| PassError::Model { pass: Self::NAME, reason };

        if let Some(opset) = self.opset {
            onnx::set_opset(&mut model, opset).map_err(refuse)?;
        }
        match self.ir_version {
            Some(ir_version) => onnx::set_ir_version(&mut model, ir_version).map_err(refuse)?,
            None if self.opset.is_some() => onnx::check_ir_version(&model, model.ir_version())
                .map_err(|reason| refuse(format!("after the opset is set, {reason}")))?,
            None => {}
        }
        if let Some(reason) = self.write.refusal(&model) {
            return Err(refuse(reason));
        }

        info!(
            "ONNX with opset {} and IR version {}, external data: {}",
            crate::ir::graph::opset_version(&model, "").unwrap_or_default(),
            model.ir_version(),
            self.write.external_data.name()
        );
        Ok(model)
    }
}
