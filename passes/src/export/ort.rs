//! `export: {format: ort}`: ONNX Runtime's own model format, written by ONNX Runtime itself
//! through [`PassContext::optimizer`], so that this crate stays free of any runtime.
//!
//! ONNX Runtime writes the model as it would run it after its graph optimizations at the
//! level asked; at `basic` the rewrites keep to standard operators and the file suits every
//! execution provider, above it the file holds choices made for the provider it was made on.

use crate::ir::proto::ModelProto;
use crate::pass::{OptimizationLevel, PassContext, PassError};

/// The `.ort` file of `model` at `level`, and a one-line summary of it.
pub fn export(
    model: &ModelProto,
    level: OptimizationLevel,
    context: &PassContext,
    pass: &'static str,
) -> Result<(Vec<u8>, String), PassError> {
    let optimizer = context.optimizer.ok_or_else(|| PassError::Optimizer {
        pass,
        reason: "no ONNX Runtime is at hand to write the ORT format (the pass context has no \
                 graph optimizer); hint: run the pass through `pipeline run`"
            .into(),
    })?;

    let bytes = optimizer
        .write_runtime_format(model, level)
        .map_err(|e| PassError::Model { pass, reason: format!("ORT format: {e}") })?;

    let scope = match level {
        OptimizationLevel::Basic => "standard operators only, for any execution provider",
        _ => "provider-specific: made for the provider it was optimized on",
    };
    let summary = format!(
        "ORT format, {} bytes, optimized at level `{level}` by {} ({scope})",
        bytes.len(),
        optimizer.describe()
    );
    Ok((bytes, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::{GraphOptimizer, RunnerError};

    /// Stands for a runtime that writes its format as the model's protobuf bytes.
    struct Echo;

    impl GraphOptimizer for Echo {
        fn optimize(
            &self,
            model: &ModelProto,
            _level: OptimizationLevel,
        ) -> Result<ModelProto, RunnerError> {
            Ok(model.clone())
        }

        fn write_runtime_format(
            &self,
            model: &ModelProto,
            _level: OptimizationLevel,
        ) -> Result<Vec<u8>, RunnerError> {
            Ok(prost::Message::encode_to_vec(model))
        }

        fn describe(&self) -> String {
            "an echoing runtime".into()
        }
    }

    /// A runtime that only optimizes, as implementors written before the format was.
    struct OptimizeOnly;

    impl GraphOptimizer for OptimizeOnly {
        fn optimize(
            &self,
            model: &ModelProto,
            _level: OptimizationLevel,
        ) -> Result<ModelProto, RunnerError> {
            Ok(model.clone())
        }

        fn describe(&self) -> String {
            "an optimizing runtime".into()
        }
    }

    #[test]
    fn the_summary_says_the_level_and_the_runtime() {
        let model = ModelProto { ir_version: Some(8), ..Default::default() };
        let context = PassContext { optimizer: Some(&Echo), ..PassContext::default() };

        let (bytes, summary) = export(&model, OptimizationLevel::Basic, &context, "export")
            .expect("the echo runtime writes");
        assert_eq!(bytes, prost::Message::encode_to_vec(&model));
        assert!(summary.contains("`basic` by an echoing runtime"), "{summary}");
        assert!(summary.contains("for any execution provider"), "{summary}");

        let (_, summary) = export(&model, OptimizationLevel::Extended, &context, "export").unwrap();
        assert!(summary.contains("provider-specific"), "{summary}");
    }

    #[test]
    fn without_a_runtime_or_its_format_the_pass_says_so() {
        let model = ModelProto::default();
        let error = export(&model, OptimizationLevel::Basic, &PassContext::default(), "export");
        assert!(error.unwrap_err().to_string().contains("pipeline run"));

        let context = PassContext { optimizer: Some(&OptimizeOnly), ..PassContext::default() };
        let error = export(&model, OptimizationLevel::Basic, &context, "export").unwrap_err();
        assert!(error.to_string().contains("no format of its own"), "{error}");
    }
}
