//! The `export` pass: writes the model's weights in another format beside the model.
//!
//! The pass leaves the model as it is and hands the file it makes to the engine as an
//! [`Artifact`] through [`PassContext::artifacts`]; the engine saves it next to the
//! candidate's model as `<model stem>.<extension>`. GGUF ([`gguf`]) and NNEF ([`nnef`]) are
//! built; the other formats a recipe may name (`onnx`, `ort`) are refused when the pass is
//! built, so a recipe that asks for them fails at validation rather than after a run.

pub mod gguf;
pub mod nnef;

use tracing::{info, info_span};

use crate::ir::proto::ModelProto;
use crate::pass::{Artifact, Configured, Pass, PassContext, PassError};

/// The extensions of the files this pass may write beside a model, so that the engine can
/// clear the ones an earlier run left.
pub const ARTIFACT_EXTENSIONS: &[&str] = &["gguf", nnef::EXTENSION];

/// The configuration of [`Export`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The format to write: `gguf`, the model's weights as a GGUF file (MatMulNBits weights
    /// as Q4_0 or Q8_0 where they fit, other float weights as F32 or F16); `nnef`, the whole
    /// model as tract's NNEF archive `<stem>.nnef.tgz`. `onnx` and `ort` are not built yet.
    pub format: ExportFormat,
}

/// The formats a recipe may name. [`ExportFormat::Gguf`] and [`ExportFormat::Nnef`] are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// GGUF version 3, the file format of ggml and llama.cpp.
    Gguf,
    /// ONNX with inline or external data (not built yet).
    Onnx,
    /// ONNX Runtime's own format (not built yet).
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

/// Writes the model's weights as a GGUF file, or the model as an NNEF archive, beside the
/// model, which it returns unchanged.
#[derive(Clone, Debug)]
pub struct Export {
    format: ExportFormat,
}

impl Configured for Export {
    const NAME: &'static str = "export";
    type Config = ExportConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        match config.format {
            ExportFormat::Gguf | ExportFormat::Nnef => Ok(Export { format: config.format }),
            other => Err(PassError::Config {
                pass: Self::NAME,
                message: format!(
                    "`format: {}` is not built yet; the formats built are `gguf` and `nnef` \
                     (hint: for the optimized ONNX model itself no export step is needed, the \
                     run writes it)",
                    other.name()
                ),
            }),
        }
    }
}

impl Pass for Export {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("export", format = self.format.name()).entered();
        let Some(sink) = context.artifacts else {
            return Err(PassError::Model {
                pass: Self::NAME,
                reason: "nothing receives the exported file here (the pass context has no \
                         artifact sink); run the pass through the engine"
                    .to_string(),
            });
        };

        let fail = |reason: String| PassError::Model { pass: Self::NAME, reason };
        let (extension, bytes, summary) = match self.format {
            ExportFormat::Nnef => {
                let exported = nnef::export(&model).map_err(|e| fail(e.to_string()))?;
                (nnef::EXTENSION, exported.bytes, exported.summary)
            }
            _ => {
                let exported = gguf::export(&model).map_err(|e| fail(e.to_string()))?;
                (ARTIFACT_EXTENSIONS[0], exported.bytes, exported.summary)
            }
        };
        info!("{summary}");
        sink.add(Artifact { extension, bytes, summary });
        Ok(model)
    }
}
