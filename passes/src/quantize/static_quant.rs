//! Static quantization, as ONNX Runtime's `quantize_static` does it, in the QDQ and the
//! QOperator formats.
//!
//! The pass calibrates the float inputs and outputs of the nodes it will quantize on the
//! recipe's calibration data ([`super::calibrate`]), then rewrites the model. In the QDQ format
//! ([`quantize_qdq`], the default) every quantized tensor gets QuantizeLinear/DequantizeLinear
//! pairs and ONNX Runtime fuses them into integer kernels where it has them; in the QOperator
//! format ([`quantize_qoperator`]) the nodes themselves become integer operators
//! (QLinearConv, QLinearMatMul, QGemm, QLinearAdd ...), as `qoperator` explains, with the
//! same numbers. In QDQ, activations get scales and zero
//! points from their calibrated ranges, weights are stored quantized (per channel along
//! Conv 0, ConvTranspose 1, MatMul 1, Gemm 0 or 1 by `transB`), biases are stored as int32
//! with scale `input scale x weight scale`, a Relu or Clip is folded into the quantization
//! of its input, and data-movement operators reuse their input's parameters. Given the same
//! ranges, every scale, zero point and quantized value equals ORT's bit for bit.
//!
//! The steps live in the submodules: [`ops`] is the table of operators and their rules,
//! `prepare` turns Constant and Cast weights into initializers, `plan` decides what to
//! quantize node by node for QDQ, `values` computes the numbers, `qdq` writes the QDQ graph
//! and `qoperator` the QOperator graph.
//!
//! Where this pass differs from ORT's tool, deliberately (`qoperator` lists what differs in
//! that format):
//! - a float `Constant` weight, or a `Cast` to float of a float16/bfloat16/float64
//!   initializer, is quantized as a weight; ORT quantizes it like an activation;
//! - an initializer two nodes would quantize differently is copied for the second node;
//!   ORT copies biases only and quantizes other initializers the first way it meets;
//! - a Gemm's `beta` stays on the node and its bias is quantized at `input scale x weight
//!   scale`; ORT folds `beta` into the bias scale and sets `beta` to 1, which changes the
//!   result when `beta` is not 1;
//! - models below opset 10 (13 with `per_channel`) are refused, where ORT raises the opset
//!   number without converting the model; 16-bit types below opset 21 use the
//!   `com.microsoft` QuantizeLinear/DequantizeLinear, where ORT's `quantize_static` raises
//!   the opset number to 21;
//! - float16 models are not quantized (no tensor of them counts as float);
//! - only the tensors of the selected nodes are calibrated, where ORT calibrates those of
//!   every node of the types in `op_types`; the ranges that matter are the same;
//! - new names never collide with existing ones (a numeric suffix is added), where ORT's can
//!   and then break its model.
//!
//! TODO: Nodes inside subgraphs (If, Loop, Scan bodies) are not quantized, as in ORT's
//! default; models that keep their convolutions in a Loop body stay float there.

mod ops;
mod plan;
pub(crate) mod prepare;
mod qdq;
mod qoperator;
mod types;
mod values;

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, info_span, warn};

pub use ops::supported_op_types;

use super::calibrate::{calibrate, CalibrationMethod, CalibrationOptions, TensorRange};
use super::params::QuantType;
use crate::ir;
use crate::ir::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use crate::pass::{Configured, Pass, PassContext, PassError};
use plan::{NodeFilter, Settings};
use types::ElemTypes;

/// QuantizeLinear and DequantizeLinear first appear in opset 10.
const MIN_OPSET: i64 = 10;

/// The `axis` attribute of QuantizeLinear and DequantizeLinear, which per-channel weights
/// need, first appears in opset 13.
const MIN_PER_CHANNEL_OPSET: i64 = 13;

/// 16-bit QuantizeLinear and DequantizeLinear first appear in opset 21.
const MIN_SIXTEEN_BIT_OPSET: i64 = 21;

/// The domain of ONNX Runtime's own QuantizeLinear and DequantizeLinear, which take 16-bit
/// types at any opset.
const MICROSOFT_DOMAIN: &str = "com.microsoft";

/// The layout of the quantized model.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum QuantFormat {
    /// QuantizeLinear/DequantizeLinear pairs around float operators, which ONNX Runtime fuses
    /// into integer kernels where it has them.
    #[default]
    #[serde(rename = "qdq")]
    Qdq,
    /// Integer operators in place of the float ones (QLinearConv, QLinearMatMul, QGemm,
    /// QLinearAdd ...), 8-bit types only; what has no integer operator stays in float.
    #[serde(rename = "qoperator")]
    QOperator,
}

/// An integer type values are quantized to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum IntegerType {
    /// Signed 8-bit, [-128, 127].
    Int8,
    /// Unsigned 8-bit, [0, 255].
    Uint8,
    /// Signed 16-bit, for NPUs; ONNX Runtime's CPU kernels run it unfused.
    Int16,
    /// Unsigned 16-bit, for NPUs; ONNX Runtime's CPU kernels run it unfused.
    Uint16,
}

impl IntegerType {
    fn quant_type(self) -> QuantType {
        match self {
            IntegerType::Int8 => QuantType::Int8,
            IntegerType::Uint8 => QuantType::Uint8,
            IntegerType::Int16 => QuantType::Int16,
            IntegerType::Uint16 => QuantType::Uint16,
        }
    }
}

/// The configuration of [`QuantizeStatic`], named as ONNX Runtime's `quantize_static` names
/// its options.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuantizeStaticConfig {
    /// How activation ranges are found on the calibration data: `minmax` (the extremes),
    /// `entropy` (the range whose quantized histogram is closest in KL divergence) or
    /// `percentile` (cut the outliers beyond a percentile).
    #[serde(default = "default_calibration")]
    pub calibration: CalibrationMethod,

    /// The layout of the quantized model: `qdq` (QuantizeLinear/DequantizeLinear pairs) or
    /// `qoperator` (integer operators such as QLinearConv and QLinearMatMul).
    #[serde(default)]
    pub format: QuantFormat,

    /// One scale per output channel of Conv, ConvTranspose, MatMul and Gemm weights instead of
    /// one per tensor; needs opset 13 in the QDQ format.
    #[serde(default)]
    pub per_channel: bool,

    /// Quantize weights to 7 bits, which can be more accurate on CPUs without VNNI.
    #[serde(default)]
    pub reduce_range: bool,

    /// The integer type of activations: int8 (ONNX Runtime's default), uint8, int16 or uint16.
    #[serde(default = "default_integer_type")]
    pub activation_type: IntegerType,

    /// The integer type of weights: int8 (ONNX Runtime's default), uint8, int16 or uint16.
    #[serde(default = "default_integer_type")]
    pub weight_type: IntegerType,

    /// Make activation ranges symmetric around 0 (zero point 0 or the middle of the type).
    #[serde(default)]
    pub activation_symmetric: bool,

    /// Make weight ranges symmetric around 0; by default symmetric for signed weight types
    /// and asymmetric for unsigned ones, as in ONNX Runtime. In the QDQ format per-channel
    /// weights are always symmetric; in QOperator, per-channel Conv weights are INT8.
    #[serde(default)]
    pub weight_symmetric: Option<bool>,

    /// The operator types to quantize; by default every type this pass handles.
    #[serde(default = "default_op_types")]
    pub op_types: Vec<String>,

    /// Nodes to leave in float: names, or regular expressions that match a whole name.
    #[serde(default)]
    pub nodes_to_exclude: Vec<String>,

    /// When not empty, quantize only these nodes: names, or regular expressions that match a
    /// whole name.
    #[serde(default)]
    pub nodes_to_include: Vec<String>,

    /// MinMax: average the per-batch minimum and maximum instead of taking the extremes.
    #[serde(default)]
    pub moving_average: bool,

    /// MinMax with `moving_average`: the weight of a new stride's range (default 0.01).
    #[serde(default)]
    pub averaging_constant: Option<f64>,

    /// Entropy and Percentile: the number of histogram bins (default 2048).
    #[serde(default)]
    pub num_bins: Option<usize>,

    /// Entropy: the number of bins of the quantized histogram (default 128).
    #[serde(default)]
    pub num_quantized_bins: Option<usize>,

    /// Percentile: the share of values the range keeps, in percent (default 99.999).
    #[serde(default)]
    pub percentile: Option<f64>,
}

impl Default for QuantizeStaticConfig {
    fn default() -> Self {
        QuantizeStaticConfig {
            calibration: default_calibration(),
            format: QuantFormat::Qdq,
            per_channel: false,
            reduce_range: false,
            activation_type: default_integer_type(),
            weight_type: default_integer_type(),
            activation_symmetric: false,
            weight_symmetric: None,
            op_types: default_op_types(),
            nodes_to_exclude: Vec::new(),
            nodes_to_include: Vec::new(),
            moving_average: false,
            averaging_constant: None,
            num_bins: None,
            num_quantized_bins: None,
            percentile: None,
        }
    }
}

fn default_calibration() -> CalibrationMethod {
    CalibrationMethod::MinMax
}

fn default_integer_type() -> IntegerType {
    IntegerType::Int8
}

fn default_op_types() -> Vec<String> {
    supported_op_types().map(str::to_string).collect()
}

impl QuantizeStaticConfig {
    /// The calibration options these settings ask for, ORT's defaults elsewhere.
    pub fn calibration_options(&self) -> CalibrationOptions {
        let mut options = CalibrationOptions::new(self.calibration);
        options.moving_average = self.moving_average;
        if let Some(constant) = self.averaging_constant {
            options.averaging_constant = constant;
        }
        if let Some(bins) = self.num_bins {
            options.num_bins = bins;
        }
        if let Some(bins) = self.num_quantized_bins {
            options.num_quantized_bins = bins;
        }
        if let Some(percentile) = self.percentile {
            options.percentile = percentile;
        }
        options
    }
}

/// Static quantization to the QDQ format, with ranges calibrated on the recipe's data.
#[derive(Clone, Debug)]
pub struct QuantizeStatic {
    config: QuantizeStaticConfig,
}

impl Configured for QuantizeStatic {
    const NAME: &'static str = "quantize_static";
    type Config = QuantizeStaticConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        if config.op_types.is_empty() {
            return Err(config_error(format!(
                "`op_types` is empty; hint: name some of {}",
                supported_op_types().collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(op) = config.op_types.iter().find(|op| ops::find(op).is_none()) {
            return Err(config_error(format!(
                "`op_types` names `{op}`, which this pass cannot quantize; hint: use some of {}",
                supported_op_types().collect::<Vec<_>>().join(", ")
            )));
        }
        config.calibration_options().validate().map_err(|e| config_error(e.to_string()))?;
        if config.format == QuantFormat::QOperator {
            check_qoperator_types(&config)?;
        }
        Ok(QuantizeStatic { config })
    }
}

impl QuantizeStatic {
    /// The pass with the given configuration (see [`Configured::from_config`] for checks).
    pub fn new(config: QuantizeStaticConfig) -> Result<Self, PassError> {
        Self::from_config(config)
    }
}

impl Pass for QuantizeStatic {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, mut model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("quantize_static").entered();
        let Some(runner) = context.calibration else {
            return Err(model_error(
                "static quantization needs calibration data and the recipe has none; hint: add \
                 `data: {calibration: {path: ...}}` to the recipe",
            ));
        };

        let settings = resolve(&self.config, &model)?;
        let graph = model.graph.as_mut().ok_or_else(|| model_error("the model has no graph"))?;
        prepare::fold_constant_weights(graph, |node| settings.selects(node));
        let tensors = calibration_tensors(graph, &settings);
        if tensors.is_empty() {
            return Err(nothing_to_quantize(graph, &settings));
        }

        let options = self.config.calibration_options();
        let ranges = calibrate(&model, &tensors, &options, runner)
            .map_err(|e| e.into_pass_error(Self::NAME))?;
        match self.config.format {
            QuantFormat::Qdq => quantize_qdq(model, &ranges, &self.config),
            QuantFormat::QOperator => quantize_qoperator(model, &ranges, &self.config),
        }
    }
}

/// ONNX Runtime's integer operators take 8-bit types only, and no int8 activations with uint8
/// weights.
fn check_qoperator_types(config: &QuantizeStaticConfig) -> Result<(), PassError> {
    let types = [("activation_type", config.activation_type), ("weight_type", config.weight_type)];
    for (field, integer) in types {
        if matches!(integer, IntegerType::Int16 | IntegerType::Uint16) {
            let name = format!("{integer:?}").to_lowercase();
            return Err(config_error(format!(
                "`{field}` is {name} and `format: qoperator` has 8-bit operators only; hint: \
                 use `format: qdq` for 16-bit types"
            )));
        }
    }
    if config.activation_type == IntegerType::Int8 && config.weight_type == IntegerType::Uint8 {
        return Err(config_error(
            "int8 activations with uint8 weights have no integer operators in ONNX Runtime; \
             hint: use `weight_type: int8`, or `activation_type: uint8`"
                .to_string(),
        ));
    }
    Ok(())
}

/// Rewrites `model` in the QOperator format with the given activation ranges, which must
/// cover the float inputs and outputs of every node to quantize. As [`quantize_qdq`] is for
/// QDQ, this is the pass without calibration: given the ranges ONNX Runtime's calibrator
/// found, the integer operators get ORT's scales, zero points and quantized values bit for bit.
pub fn quantize_qoperator(
    mut model: ModelProto,
    ranges: &BTreeMap<String, TensorRange>,
    config: &QuantizeStaticConfig,
) -> Result<ModelProto, PassError> {
    let config = QuantizeStaticConfig { format: QuantFormat::QOperator, ..config.clone() };
    check_qoperator_types(&config)?;
    let settings = resolve(&config, &model)?;
    let mut graph = model.graph.take().ok_or_else(|| model_error("the model has no graph"))?;
    check_filters(&graph, &config)?;
    prepare_weights(&mut graph, &settings);

    let nothing = nothing_to_quantize(&graph, &settings);
    let (graph, written) =
        qoperator::write_qoperator(graph, ranges, &settings).map_err(model_error)?;
    let rewritten: usize = written.quantized.values().sum();
    if rewritten == 0 && written.folded == 0 {
        return Err(nothing);
    }

    model.graph = Some(graph);
    if written.uses_ms_domain && ir::opset_version(&model, MICROSOFT_DOMAIN).is_none() {
        model
            .opset_import
            .push(OperatorSetIdProto { domain: Some(MICROSOFT_DOMAIN.into()), version: Some(1) });
    }
    let counts = |map: &BTreeMap<String, usize>| {
        map.iter().map(|(op, n)| format!("{n} {op}")).collect::<Vec<_>>().join(", ")
    };
    info!(
        rewritten,
        folded = written.folded,
        "rewrote {rewritten} nodes to integer operators ({}); dropped {} Relu/Clip",
        counts(&written.quantized),
        written.folded
    );
    if !written.left_in_float.is_empty() {
        info!("left in float, with no integer form here: {}", counts(&written.left_in_float));
    }
    Ok(model)
}

/// Makes Constant and Cast weights of the selected nodes initializers, and says so.
fn prepare_weights(graph: &mut GraphProto, settings: &Settings) {
    let folded = prepare::fold_constant_weights(graph, |node| settings.selects(node));
    if folded.constants + folded.casts > 0 {
        info!(
            constants = folded.constants,
            casts = folded.casts,
            "made Constant and Cast weights initializers"
        );
    }
}

/// Rewrites `model` in the QDQ format with the given activation ranges, which must cover the
/// float inputs and outputs of every node to quantize (what the pass calibrates). This is
/// the pass without calibration: given the ranges ONNX Runtime's calibrator found, the
/// result has ORT's scales, zero points and quantized values bit for bit.
pub fn quantize_qdq(
    mut model: ModelProto,
    ranges: &BTreeMap<String, TensorRange>,
    config: &QuantizeStaticConfig,
) -> Result<ModelProto, PassError> {
    let config = QuantizeStaticConfig { format: QuantFormat::Qdq, ..config.clone() };
    let config = &config;
    let settings = resolve(config, &model)?;
    let mut graph = model.graph.take().ok_or_else(|| model_error("the model has no graph"))?;
    check_filters(&graph, config)?;
    prepare_weights(&mut graph, &settings);

    // The error names the input graph's counts, so it is made before the graph is rewritten.
    let nothing = nothing_to_quantize(&graph, &settings);
    let plan = plan::plan(graph, ranges, &settings);
    tracing::debug!(selected = plan.selected, tensors = plan.tensors.len(), "planned");
    if plan.tensors.is_empty() && plan.biases.is_empty() {
        return Err(nothing);
    }

    let domain = sixteen_bit_domain(&settings);
    let (graph, written) = qdq::write_qdq(plan, &settings, domain).map_err(model_error)?;
    if written.activations + written.shared + written.initializers + written.biases == 0 {
        return Err(nothing);
    }

    model.graph = Some(graph);
    if let Some(domain) = domain {
        if ir::opset_version(&model, domain).is_none() {
            model
                .opset_import
                .push(OperatorSetIdProto { domain: Some(domain.to_string()), version: Some(1) });
        }
    }
    info!(
        activations = written.activations + written.shared,
        initializers = written.initializers,
        biases = written.biases,
        folded = written.folded,
        "quantized {} activations ({} sharing their input's parameters), {} initializers and {} \
         biases; folded {} Relu/Clip",
        written.activations + written.shared,
        written.shared,
        written.initializers,
        written.biases,
        written.folded
    );
    Ok(model)
}

/// The tensors static quantization needs ranges for: the float inputs and outputs of the
/// selected nodes that are not initializers, sorted by name.
fn calibration_tensors(graph: &GraphProto, settings: &Settings) -> Vec<String> {
    let types = ElemTypes::infer(graph);
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let mut tensors = BTreeSet::new();
    for node in graph.node.iter().filter(|n| settings.selects(n)) {
        for name in node.input.iter().chain(&node.output) {
            if !name.is_empty() && !initializers.contains(name.as_str()) && types.is_float(name) {
                tensors.insert(name.clone());
            }
        }
    }
    tensors.into_iter().collect()
}

/// The settings for `model`, after checking its opset against what they need.
fn resolve(config: &QuantizeStaticConfig, model: &ModelProto) -> Result<Settings, PassError> {
    let opset = match ir::opset_version(model, "") {
        Some(version) if version >= MIN_OPSET => version,
        Some(version) => {
            return Err(model_error(format!(
                "the model imports opset {version} of the default domain, and QuantizeLinear \
                 needs opset {MIN_OPSET} or later; hint: convert the model to opset 13 or later"
            )))
        }
        None => {
            return Err(model_error(
                "the model imports no opset of the default domain (ai.onnx); hint: add one to \
                 `opset_import`",
            ))
        }
    };
    // QOperator's integer operators take per-channel scales at any opset.
    if config.per_channel && opset < MIN_PER_CHANNEL_OPSET && config.format == QuantFormat::Qdq {
        return Err(model_error(format!(
            "per-channel quantization needs opset {MIN_PER_CHANNEL_OPSET} (the `axis` of \
             DequantizeLinear) and the model imports opset {opset}; hint: convert the model to \
             opset {MIN_PER_CHANNEL_OPSET} or later, or set `per_channel: false`"
        )));
    }

    let weight_type = config.weight_type.quant_type();
    Ok(Settings {
        activation_type: config.activation_type.quant_type(),
        weight_type,
        activation_symmetric: config.activation_symmetric,
        weight_symmetric: config.weight_symmetric.unwrap_or(weight_type.is_signed()),
        weight_symmetric_asked: config.weight_symmetric,
        per_channel: config.per_channel,
        reduce_range: config.reduce_range,
        op_types: config.op_types.iter().cloned().collect(),
        include: NodeFilter::new(&config.nodes_to_include),
        exclude: NodeFilter::new(&config.nodes_to_exclude),
        opset,
    })
}

/// `com.microsoft` when 16-bit types are asked for below opset 21, `None` otherwise.
fn sixteen_bit_domain(settings: &Settings) -> Option<&'static str> {
    let sixteen = |t: QuantType| matches!(t, QuantType::Int16 | QuantType::Uint16);
    let needed = sixteen(settings.activation_type) || sixteen(settings.weight_type);
    (needed && settings.opset < MIN_SIXTEEN_BIT_OPSET).then(|| {
        info!(
            "16-bit QuantizeLinear needs opset {MIN_SIXTEEN_BIT_OPSET}; the model imports opset \
             {}, so ONNX Runtime's {MICROSOFT_DOMAIN} operators are used",
            settings.opset
        );
        MICROSOFT_DOMAIN
    })
}

/// Warns about node filter entries that match no node of the main graph, and refuses one
/// that is neither a node's name nor a valid regular expression: it can only be a mistake.
fn check_filters(graph: &GraphProto, config: &QuantizeStaticConfig) -> Result<(), PassError> {
    let names: Vec<&str> = graph.node.iter().map(|n| n.name()).collect();
    let lists = [
        ("nodes_to_exclude", &config.nodes_to_exclude),
        ("nodes_to_include", &config.nodes_to_include),
    ];
    for (field, entries) in lists {
        for entry in NodeFilter::new(entries).unmatched(&names) {
            if let Err(error) = crate::quantize::filter::whole_match(entry) {
                return Err(config_error(format!(
                    "`{field}` names `{entry}`, which is no node of the main graph and no valid \
                     regular expression: {error}"
                )));
            }
            warn!("`{field}` names `{entry}`, which matches no node of the main graph");
        }
    }
    Ok(())
}

fn nothing_to_quantize(graph: &GraphProto, settings: &Settings) -> PassError {
    let typed = graph.node.iter().filter(|n| settings.op_types.contains(n.op_type())).count();
    let selected = graph.node.iter().filter(|n| settings.selects(n)).count();
    let reason = format!(
        "nothing to quantize: of the graph's {} nodes, {typed} are of the types in `op_types` \
         and {selected} of those are selected by `nodes_to_include` and `nodes_to_exclude`, and \
         none of them has a float32 tensor to quantize; hint: check `op_types` and the node \
         filters, or leave this model in float",
        graph.node.len()
    );
    let op_types: Vec<&str> = settings.op_types.iter().map(|op| op.as_ref()).collect();
    let reason = match ir::subgraphs_left_alone(graph, &op_types) {
        Some(left) => format!("{reason}; {left}"),
        None => reason,
    };
    PassError::Unchanged { pass: QuantizeStatic::NAME, reason }
}

fn config_error(message: String) -> PassError {
    PassError::Config { pass: QuantizeStatic::NAME, message }
}

fn model_error(reason: impl Into<String>) -> PassError {
    PassError::Model { pass: QuantizeStatic::NAME, reason: reason.into() }
}
