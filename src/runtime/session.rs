//! A model loaded in an ONNX Runtime session on the CPU: its inputs and outputs, and runs over
//! owned tensors with errors that name the model file.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use pipeline_passes::ir;
use pipeline_passes::ir::shapes::Dim;

use super::discovery::environment;
use super::{ElemType, RuntimeError, Tensor};

/// The thread pools of a session; 0 lets ONNX Runtime choose (one thread per physical core).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Threads {
    /// Threads that split the work inside one operator.
    pub intra_op: usize,
    /// Threads that run independent operators at once; above 1 this turns on ONNX Runtime's
    /// parallel execution mode, otherwise operators run one after another.
    pub inter_op: usize,
}

/// How far ONNX Runtime may rewrite a model's graph when it loads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Optimization {
    /// ONNX Runtime's default: every graph optimization it has, which is how a deployed model
    /// runs and so how latency and accuracy are measured.
    #[default]
    All,
    /// None at all, as ONNX Runtime's calibrators run a model: fused and reordered kernels
    /// (NCHWc convolutions, for one) change activations in their last bits, and ranges
    /// computed from them would then differ from the reference tool's.
    Disabled,
    /// ONNX Runtime's basic level: constant folding and redundant node removal only.
    Basic,
    /// ONNX Runtime's extended level: the basic rewrites and its contrib-operator fusions,
    /// without the memory layout rewrites.
    Extended,
}

impl Optimization {
    /// Every level, from none to all.
    pub const ALL_LEVELS: [Optimization; 4] =
        [Optimization::Disabled, Optimization::Basic, Optimization::Extended, Optimization::All];

    /// The name ONNX Runtime's Python API gives the level (`ORT_ENABLE_ALL`, ...).
    pub fn ort_name(self) -> &'static str {
        match self {
            Optimization::Disabled => "ORT_DISABLE_ALL",
            Optimization::Basic => "ORT_ENABLE_BASIC",
            Optimization::Extended => "ORT_ENABLE_EXTENDED",
            Optimization::All => "ORT_ENABLE_ALL",
        }
    }
}

/// Everything about how a session is created: thread pools, execution mode, graph
/// optimizations and the execution providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionConfig {
    pub threads: Threads,
    pub optimization: Optimization,
    /// Operators run in parallel (ONNX Runtime's parallel execution mode) when set; `None`
    /// follows [`Threads`]: parallel exactly when `inter_op` is above 1.
    pub parallel: Option<bool>,
    /// Execution providers to register before the CPU provider, by ONNX Runtime's names
    /// (`CUDAExecutionProvider`); one that does not start fails the load.
    pub providers: Vec<String>,
}

impl SessionConfig {
    /// A CPU session with `threads` and every graph optimization.
    pub fn cpu(threads: Threads) -> SessionConfig {
        SessionConfig { threads, ..SessionConfig::default() }
    }

    /// Whether the session runs operators in parallel.
    pub fn is_parallel(&self) -> bool {
        self.parallel.unwrap_or(self.threads.inter_op > 1)
    }
}

/// A model input or output as ONNX Runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoInfo {
    /// The name of the graph input or output.
    pub name: String,
    /// Its element type.
    pub elem: ElemType,
    /// Its dimensions; `None` where a dimension is symbolic or unknown.
    pub shape: Vec<Option<i64>>,
}

impl IoInfo {
    /// The graph inputs of `model` that must be fed, read from the file without a runtime.
    /// Initializers that old exporters also list as inputs are left out.
    pub fn model_inputs(model: &pipeline_passes::ir::proto::ModelProto) -> Vec<IoInfo> {
        let Some(graph) = &model.graph else { return Vec::new() };
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name()).collect();
        graph
            .input
            .iter()
            .filter(|input| !initializers.contains(input.name()))
            .map(|input| {
                let (elem, shape) = match ir::declared_type(input) {
                    Some(declared) => {
                        let shape =
                            declared.dims.unwrap_or_default().iter().map(Dim::known).collect();
                        (ElemType::from_onnx(declared.elem_type), shape)
                    }
                    None => (ElemType::Other("non-tensor".into()), Vec::new()),
                };
                IoInfo { name: input.name().to_string(), elem, shape }
            })
            .collect()
    }
}

impl IoInfo {
    /// The batch size `inputs` fix on their first dimension, if any does. When they fix
    /// different sizes, the error lists each as `'name' size`.
    pub fn fixed_batch(inputs: &[IoInfo]) -> Result<Option<usize>, Vec<String>> {
        let fixed: Vec<(&str, usize)> = inputs
            .iter()
            .filter_map(|input| {
                let size = input.shape.first().copied().flatten()?;
                Some((input.name.as_str(), usize::try_from(size).ok().filter(|&s| s > 0)?))
            })
            .collect();
        let Some(&(_, size)) = fixed.first() else { return Ok(None) };
        if fixed.iter().any(|(_, other)| *other != size) {
            return Err(fixed.iter().map(|(name, n)| format!("'{name}' {n}")).collect());
        }
        Ok(Some(size))
    }

    fn from_outlet(outlet: &ort::value::Outlet) -> IoInfo {
        let shape = outlet
            .dtype()
            .tensor_shape()
            .map(|shape| shape.iter().map(|&d| (d >= 0).then_some(d)).collect())
            .unwrap_or_default();
        IoInfo {
            name: outlet.name().to_string(),
            elem: ElemType::from_value_type(outlet.dtype()),
            shape,
        }
    }
}

/// A loaded model the metrics run: an ONNX Runtime session ([`ModelSession`]) or a tract one
/// ([`super::TractSession`]). Running takes `&mut self`: use one session per thread.
pub trait InferenceSession {
    /// The model file.
    fn path(&self) -> &Path;

    /// The graph inputs the caller must feed.
    fn inputs(&self) -> &[IoInfo];

    /// The graph outputs, in the model's order.
    fn outputs(&self) -> &[IoInfo];

    /// Runs the model once; `inputs` must name every model input exactly once. Returns every
    /// output, in the model's order.
    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError>;

    /// Runs the model once and returns how long the runtime took, outputs included but not
    /// copied out; preparing the inputs is not timed.
    fn run_timed(&mut self, inputs: &[(String, Tensor)]) -> Result<Duration, RuntimeError>;
}

impl InferenceSession for ModelSession {
    fn path(&self) -> &Path {
        ModelSession::path(self)
    }

    fn inputs(&self) -> &[IoInfo] {
        ModelSession::inputs(self)
    }

    fn outputs(&self) -> &[IoInfo] {
        ModelSession::outputs(self)
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        ModelSession::run(self, inputs)
    }

    fn run_timed(&mut self, inputs: &[(String, Tensor)]) -> Result<Duration, RuntimeError> {
        ModelSession::run_timed(self, inputs)
    }
}

/// A model file loaded in an ONNX Runtime session on the CPU execution provider, with ONNX
/// Runtime's default graph optimizations.
///
/// Running takes `&mut self`: use one session per thread.
pub struct ModelSession {
    path: PathBuf,
    threads: Threads,
    session: Session,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
}

impl std::fmt::Debug for ModelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSession")
            .field("path", &self.path)
            .field("threads", &self.threads)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl ModelSession {
    /// Loads the model at `path`, loading ONNX Runtime first with [`super::init`] if no call has
    /// yet.
    pub fn load(path: &Path, threads: Threads) -> Result<ModelSession, RuntimeError> {
        ModelSession::load_with(path, threads, Optimization::All)
    }

    /// Loads the model at `path` as [`ModelSession::load`] does, with graph optimizations at
    /// `optimization`.
    pub fn load_with(
        path: &Path,
        threads: Threads,
        optimization: Optimization,
    ) -> Result<ModelSession, RuntimeError> {
        let config = SessionConfig { optimization, ..SessionConfig::cpu(threads) };
        ModelSession::load_configured(path, &config)
    }

    /// Loads the model at `path` in a session made as `config` says.
    pub fn load_configured(
        path: &Path,
        config: &SessionConfig,
    ) -> Result<ModelSession, RuntimeError> {
        let threads = config.threads;
        let model_error =
            |message: String| RuntimeError::ModelLoad { model: path.to_path_buf(), message };

        if !path.exists() {
            return Err(model_error("no such file".into()));
        }
        if !path.is_file() {
            return Err(model_error("not a file".into()));
        }

        let environment = environment()?;
        let mut providers = Vec::new();
        for name in &config.providers {
            match super::providers::dispatch(name) {
                Some(dispatch) => providers.push(dispatch),
                None if name == super::CPU_PROVIDER => {}
                None => {
                    return Err(model_error(format!(
                        "pipeline cannot register the execution provider {name}"
                    )))
                }
            }
        }
        let session = build_session(environment, path, config, &providers)
            .map_err(|e| model_error(e.to_string()))?;

        let inputs = session.inputs().iter().map(IoInfo::from_outlet).collect();
        let outputs = session.outputs().iter().map(IoInfo::from_outlet).collect();
        tracing::debug!(model = %path.display(), ?config, "loaded model in onnx runtime");
        Ok(ModelSession { path: path.to_path_buf(), threads, session, inputs, outputs })
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The thread settings the session was created with.
    pub fn threads(&self) -> Threads {
        self.threads
    }

    /// The graph inputs the caller must feed (initializers that are also inputs are left out).
    pub fn inputs(&self) -> &[IoInfo] {
        &self.inputs
    }

    /// The graph outputs, in the model's order.
    pub fn outputs(&self) -> &[IoInfo] {
        &self.outputs
    }

    /// Runs the model once; `inputs` must name every model input exactly once.
    ///
    /// Returns every output, in the model's order.
    pub fn run(
        &mut self,
        inputs: &[(String, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let values = self.session_inputs(inputs)?;
        let path = &self.path;
        let outputs = self.session.run(values).map_err(|e| run_error(path, e))?;

        let mut results = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let tensor = Tensor::from_ort(&value).map_err(|e| run_error(path, e))?;
            let Some(tensor) = tensor else {
                return Err(RuntimeError::UnsupportedOutput {
                    model: path.clone(),
                    output: name.to_string(),
                    elem: ElemType::from_value_type(value.dtype()),
                });
            };
            results.push((name.to_string(), tensor));
        }
        Ok(results)
    }

    /// Runs the model once and returns how long ONNX Runtime took, outputs included but not
    /// copied out; preparing the inputs is not timed.
    pub(crate) fn run_timed(
        &mut self,
        inputs: &[(String, Tensor)],
    ) -> Result<Duration, RuntimeError> {
        let values = self.session_inputs(inputs)?;

        let path = &self.path;
        let start = Instant::now();
        let outputs = self.session.run(values).map_err(|e| run_error(path, e))?;
        drop(outputs);
        Ok(start.elapsed())
    }

    /// Checks `inputs` against the model and lends them to ONNX Runtime.
    fn session_inputs<'a>(
        &self,
        inputs: &'a [(String, Tensor)],
    ) -> Result<Vec<(Cow<'a, str>, SessionInputValue<'a>)>, RuntimeError> {
        let input_error =
            |message: String| RuntimeError::Input { model: self.path.clone(), message };

        for info in &self.inputs {
            let given: Vec<_> = inputs.iter().filter(|(name, _)| *name == info.name).collect();
            match given.as_slice() {
                [] => return Err(input_error(format!("input '{}' is not given", info.name))),
                [(_, tensor)] if tensor.elem() != info.elem => {
                    return Err(input_error(format!(
                        "input '{}' expects {} but was given {}",
                        info.name,
                        info.elem,
                        tensor.elem()
                    )));
                }
                [_] => {}
                _ => return Err(input_error(format!("input '{}' is given twice", info.name))),
            }
        }
        if let Some((name, _)) =
            inputs.iter().find(|(name, _)| !self.inputs.iter().any(|info| info.name == *name))
        {
            let known: Vec<_> = self.inputs.iter().map(|info| info.name.as_str()).collect();
            return Err(input_error(format!(
                "the model has no input '{name}'; its inputs are: {}",
                known.join(", ")
            )));
        }

        inputs
            .iter()
            .map(|(name, tensor)| {
                let value = tensor.to_session_input().map_err(|e| {
                    input_error(format!("input '{name}' cannot be passed to onnx runtime: {e}"))
                })?;
                Ok((Cow::Borrowed(name.as_str()), value))
            })
            .collect()
    }
}

fn run_error(model: &Path, error: ort::Error) -> RuntimeError {
    RuntimeError::Run { model: model.to_path_buf(), message: error.to_string() }
}

/// Builds the session; `ort`'s builder errors carry the builder, so they stay in here.
fn build_session(
    environment: &Environment,
    path: &Path,
    config: &SessionConfig,
    providers: &[ort::ep::ExecutionProviderDispatch],
) -> ort::Result<Session> {
    let threads = config.threads;
    // A failing run's error comes back from `run` and is reported with the model and the
    // data; ONNX Runtime's own log line of it would print it again, raw, even under `-q`.
    let mut builder = Session::builder(environment)?
        .with_log_level(ort::logging::LogLevel::Fatal)?
        .with_intra_threads(threads.intra_op)?
        .with_inter_threads(threads.inter_op)?;
    let level = match config.optimization {
        Optimization::All => None,
        Optimization::Disabled => Some(GraphOptimizationLevel::Disable),
        Optimization::Basic => Some(GraphOptimizationLevel::Level1),
        Optimization::Extended => Some(GraphOptimizationLevel::Level2),
    };
    if let Some(level) = level {
        builder = builder.with_optimization_level(level)?;
    }
    if config.is_parallel() {
        builder = builder.with_parallel_execution(true)?;
    }
    if !providers.is_empty() {
        builder = builder.with_execution_providers(providers)?;
    }
    builder.commit_from_file(path)
}
