//! tract (`tract-onnx`) as a second evaluator: a model file loaded, typed and optimized in
//! tract, and run on the same owned [`Tensor`]s as an ONNX Runtime session, so that every
//! metric runs unchanged without ONNX Runtime.
//!
//! tract runs float32 models, `quantize_dynamic`'s INT8 ones and 4-bit `MatMulNBits`; it has
//! no int4 element type (blocked INT4 QDQ), fails on some float16 graphs and has no
//! implementation of some operators (the node and operator are named when a model holds
//! one). It runs on one thread.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tract_onnx::prelude::{
    Arc, DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTensor, TValue, TVec,
    TypedRunnableModel,
};
use tract_onnx::tract_hir::ops::unimpl::UnimplementedOp;

use super::session::InferenceSession;
use super::{ElemType, IoInfo, RuntimeError, Tensor};

/// The version of tract that measures models, for reports and cache keys.
pub const TRACT_VERSION: &str = "0.23.9";

/// A model file loaded in tract, typed, optimized and ready to run.
pub struct TractSession {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
}

impl std::fmt::Debug for TractSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractSession")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl TractSession {
    /// Loads the model at `path` (external data files beside it included) in tract.
    pub fn load(path: &Path) -> Result<TractSession, RuntimeError> {
        let fail = |message: String| RuntimeError::TractLoad { model: path.to_path_buf(), message };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }

        let inference = tract_onnx::onnx().model_for_path(path).map_err(|e| fail(chain(&e)))?;
        let unimplemented: Vec<String> = inference
            .nodes()
            .iter()
            .filter(|node| node.op_is::<UnimplementedOp>())
            .map(|node| format!("node `{}` ({})", node.name, node.op.name()))
            .collect();
        if !unimplemented.is_empty() {
            return Err(fail(format!(
                "tract has no implementation of {}",
                unimplemented.join(", ")
            )));
        }

        let typed = inference.into_optimized().map_err(|e| fail(chain(&e)))?;
        let io = |outlets: &[tract_onnx::prelude::OutletId]| -> Result<Vec<IoInfo>, RuntimeError> {
            outlets
                .iter()
                .map(|&outlet| {
                    let fact = typed.outlet_fact(outlet).map_err(|e| fail(chain(&e)))?;
                    let name = match typed.outlet_label(outlet) {
                        Some(label) => label.to_string(),
                        None => typed.node(outlet.node).name.clone(),
                    };
                    let shape = fact.shape.iter().map(|d| d.to_i64().ok()).collect();
                    Ok(IoInfo { name, elem: elem_type(fact.datum_type), shape })
                })
                .collect()
        };
        let inputs = io(typed.input_outlets().map_err(|e| fail(chain(&e)))?)?;
        let outputs = io(typed.output_outlets().map_err(|e| fail(chain(&e)))?)?;
        let plan = typed.into_runnable().map_err(|e| fail(chain(&e)))?;
        tracing::debug!(model = %path.display(), "loaded model in tract");
        Ok(TractSession { path: path.to_path_buf(), plan, inputs, outputs })
    }

    /// The inputs in the model's order, as tract values.
    fn values(&self, inputs: &[(String, Tensor)]) -> Result<TVec<TValue>, RuntimeError> {
        let input_error =
            |message: String| RuntimeError::Input { model: self.path.clone(), message };
        if let Some((name, _)) =
            inputs.iter().find(|(name, _)| !self.inputs.iter().any(|info| info.name == *name))
        {
            let known: Vec<_> = self.inputs.iter().map(|info| info.name.as_str()).collect();
            return Err(input_error(format!(
                "the model has no input '{name}'; its inputs are: {}",
                known.join(", ")
            )));
        }

        let mut values = TVec::new();
        for info in &self.inputs {
            let given: Vec<_> = inputs.iter().filter(|(name, _)| *name == info.name).collect();
            let tensor = match given.as_slice() {
                [] => return Err(input_error(format!("input '{}' is not given", info.name))),
                [(_, tensor)] if tensor.elem() != info.elem => {
                    return Err(input_error(format!(
                        "input '{}' expects {} but was given {}",
                        info.name,
                        info.elem,
                        tensor.elem()
                    )));
                }
                [(_, tensor)] => tensor,
                _ => return Err(input_error(format!("input '{}' is given twice", info.name))),
            };
            values.push(to_tract(tensor).into());
        }
        Ok(values)
    }
}

impl InferenceSession for TractSession {
    fn path(&self) -> &Path {
        &self.path
    }

    fn inputs(&self) -> &[IoInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[IoInfo] {
        &self.outputs
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let values = self.values(inputs)?;
        let outputs = self.plan.run(values).map_err(|e| self.run_error(&e))?;

        let mut results = Vec::with_capacity(outputs.len());
        for (info, value) in self.outputs.iter().zip(outputs) {
            let tensor =
                from_tract(value.into_tensor()).ok_or_else(|| RuntimeError::UnsupportedOutput {
                    model: self.path.clone(),
                    output: info.name.clone(),
                    elem: info.elem.clone(),
                })?;
            results.push((info.name.clone(), tensor));
        }
        Ok(results)
    }

    fn run_timed(&mut self, inputs: &[(String, Tensor)]) -> Result<Duration, RuntimeError> {
        let values = self.values(inputs)?;

        let start = Instant::now();
        let outputs = self.plan.run(values).map_err(|e| self.run_error(&e))?;
        drop(outputs);
        Ok(start.elapsed())
    }
}

impl TractSession {
    fn run_error(&self, error: &tract_onnx::prelude::TractError) -> RuntimeError {
        RuntimeError::Run { model: self.path.clone(), message: format!("tract: {}", chain(error)) }
    }
}

/// The element type of a tract datum type.
fn elem_type(datum: DatumType) -> ElemType {
    match datum {
        DatumType::F32 => ElemType::F32,
        DatumType::F64 => ElemType::F64,
        DatumType::F16 => ElemType::F16,
        DatumType::I8 => ElemType::I8,
        DatumType::I16 => ElemType::I16,
        DatumType::I32 => ElemType::I32,
        DatumType::I64 => ElemType::I64,
        DatumType::U8 => ElemType::U8,
        DatumType::U16 => ElemType::U16,
        DatumType::U32 => ElemType::U32,
        DatumType::U64 => ElemType::U64,
        DatumType::Bool => ElemType::Bool,
        DatumType::String => ElemType::String,
        other => ElemType::Other(format!("{other:?}").to_lowercase()),
    }
}

/// A copy of `tensor` as a tract tensor.
fn to_tract(tensor: &Tensor) -> tract_onnx::prelude::Tensor {
    match tensor {
        Tensor::F32(a) => a.clone().into_tensor(),
        Tensor::F16(a) => a.clone().into_tensor(),
        Tensor::F64(a) => a.clone().into_tensor(),
        Tensor::I8(a) => a.clone().into_tensor(),
        Tensor::I16(a) => a.clone().into_tensor(),
        Tensor::I32(a) => a.clone().into_tensor(),
        Tensor::I64(a) => a.clone().into_tensor(),
        Tensor::U8(a) => a.clone().into_tensor(),
        Tensor::U16(a) => a.clone().into_tensor(),
        Tensor::U32(a) => a.clone().into_tensor(),
        Tensor::U64(a) => a.clone().into_tensor(),
        Tensor::Bool(a) => a.clone().into_tensor(),
    }
}

/// `tensor` as one of ours; `None` for a type [`Tensor`] cannot hold.
fn from_tract(tensor: tract_onnx::prelude::Tensor) -> Option<Tensor> {
    let tensor = match tensor.datum_type() {
        DatumType::F32 => Tensor::F32(tensor.into_plain_array().ok()?),
        DatumType::F16 => Tensor::F16(tensor.into_plain_array().ok()?),
        DatumType::F64 => Tensor::F64(tensor.into_plain_array().ok()?),
        DatumType::I8 => Tensor::I8(tensor.into_plain_array().ok()?),
        DatumType::I16 => Tensor::I16(tensor.into_plain_array().ok()?),
        DatumType::I32 => Tensor::I32(tensor.into_plain_array().ok()?),
        DatumType::I64 => Tensor::I64(tensor.into_plain_array().ok()?),
        DatumType::U8 => Tensor::U8(tensor.into_plain_array().ok()?),
        DatumType::U16 => Tensor::U16(tensor.into_plain_array().ok()?),
        DatumType::U32 => Tensor::U32(tensor.into_plain_array().ok()?),
        DatumType::U64 => Tensor::U64(tensor.into_plain_array().ok()?),
        DatumType::Bool => Tensor::Bool(tensor.into_plain_array().ok()?),
        _ => return None,
    };
    Some(tensor)
}

/// Every message of a tract error and its causes, outermost first, joined by `: `.
fn chain(error: &tract_onnx::prelude::TractError) -> String {
    error.chain().map(|cause| cause.to_string()).collect::<Vec<_>>().join(": ")
}
