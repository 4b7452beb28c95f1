//! Weight-only block quantization to 4 or 8 bits (`quantize_weights`), as ONNX Runtime's
//! `MatMulNBitsQuantizer` does it with its default (round-to-nearest) algorithm.
//!
//! Every MatMul whose second input is a constant 2-D float32 or float16 weight `[K, N]` (an
//! initializer, a Constant, or either behind a Transpose, which is folded) gets its weight
//! quantized in blocks of `block_size` along K, one scale (and zero point) per block and
//! output column; activations stay in float. The formulas are in [`block`], the layouts in
//! [`layout`]. Two formats:
//! - `matmul_nbits`: `com.microsoft.MatMulNBits`, ORT's fused kernel;
//! - `qdq`: a blocked `DequantizeLinear` (opset 21) feeding the original MatMul, for any
//!   runtime.
//!
//! With `embeddings`, Gathers on a constant table `[vocab, dim]` are quantized too, in blocks
//! along dim: `com.microsoft.GatherBlockQuantized` (4 bits only), or DequantizeLinear ->
//! Gather in the QDQ format. `more_bits` keeps some layers at 8 bits ([`layers`]).
//!
//! Where this pass differs from ORT's tool:
//! - ORT's QDQ format takes 4 bits only; this pass also writes INT8/UINT8 QDQ weights.
//! - ORT's Gather quantization rounds with numpy (halves to even, division by the scale);
//!   this pass uses the same formulas for tables as for MatMul weights (the QDQ rounding).
//! - ORT also quantizes N-D weights whose leading dimensions are 1; this pass leaves them.
//! - Nodes inside subgraphs (If, Loop, Scan) are left alone here.

pub mod block;
pub mod layers;
pub mod layout;
mod rewrite;
mod source;

use crate::quantize::static_quant::prepare::fold_constant_weights;
use regex::Regex;
use tracing::{info, info_span};

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::ModelProto;
use crate::ir::{self};
use crate::pass::{Configured, Pass, PassContext, PassError, Runtime};
use crate::quantize::filter::{whole_match, NodeFilter};
use crate::quantize::importance;

/// The block sizes this pass allows (and its tests cover).
pub const BLOCK_SIZES: [usize; 5] = [16, 32, 64, 128, 256];

/// Blocked DequantizeLinear and INT4 types first appear in opset 21.
const MIN_QDQ_OPSET: i64 = 21;

/// The domain of ORT's contrib operators.
const MS_DOMAIN: &str = "com.microsoft";

/// The configuration of [`QuantizeWeights`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuantizeWeightsConfig {
    /// Bits per weight: 4 or 8.
    #[serde(default = "default_bits")]
    pub bits: u32,

    /// Weights per block along K (along dim for tables), each block with its own scale: a
    /// power of two from 16 to 256.
    #[serde(default = "default_block_size")]
    pub block_size: usize,

    /// Symmetric blocks: the scale maps the value of largest magnitude to -2^(bits-1) and the
    /// zero point is 2^(bits-1), not stored. Asymmetric blocks (false) store a zero point and
    /// use the full range of the codes.
    #[serde(default = "default_true")]
    pub symmetric: bool,

    /// MatMulNBits' `accuracy_level` (0 to 4): the lowest precision ORT may compute in (0
    /// unset, 1 float32, 2 float16, 3 bfloat16, 4 int8 activations). Not for `format: qdq`.
    #[serde(default)]
    pub accuracy_level: Option<u8>,

    /// `matmul_nbits` (ONNX Runtime's com.microsoft.MatMulNBits), `qdq` (a blocked
    /// DequantizeLinear before each MatMul, opset 21, any runtime) or `auto`: `matmul_nbits`
    /// for ONNX Runtime, `qdq` otherwise.
    #[serde(default)]
    pub format: WeightFormat,

    /// Nodes to leave in float: names or regular expressions that match a whole name.
    #[serde(default)]
    pub nodes_to_exclude: Vec<String>,

    /// Options for some nodes: the first entry whose `nodes` regular expression matches a
    /// node's whole name sets its `bits`, `block_size` or `symmetric`.
    #[serde(default)]
    pub overrides: Vec<Override>,

    /// llama.cpp's Q4_K_M mixture: with L transformer layers, layer i stays at 8 bits when
    /// i < L/8, i >= 7L/8 or (i - L/8) % 3 == 2. Layers are read from names (`layers.3.`,
    /// `h.3.`, `blocks.3.` ...), or each MatMul in order is a layer. Needs `bits: 4`.
    #[serde(default)]
    pub more_bits: bool,

    /// Also quantize Gathers on constant 2-D tables (embeddings), in blocks along the
    /// embedding dimension (4 bits only for `matmul_nbits`, as com.microsoft.GatherBlockQuantized).
    #[serde(default)]
    pub embeddings: bool,

    /// Choose each MatMul block's scale on calibration data (`data.calibration`): the mean
    /// squared activation of each input column weighs a search over candidate scales that
    /// minimises the weighted squared error of the block, never worse than min/max by it.
    /// Gather tables keep min/max scales.
    #[serde(default)]
    pub data_aware: bool,
}

/// Options that an override sets for the nodes it matches.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// A regular expression that must match a node's whole name.
    pub nodes: String,
    /// Bits for these nodes: 4 or 8.
    #[serde(default)]
    pub bits: Option<u32>,
    /// Block size for these nodes.
    #[serde(default)]
    pub block_size: Option<usize>,
    /// Symmetric blocks for these nodes.
    #[serde(default)]
    pub symmetric: Option<bool>,
}

/// The operators the quantized weights are written for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// `matmul_nbits` for ONNX Runtime, `qdq` for other runtimes.
    #[default]
    Auto,
    /// com.microsoft.MatMulNBits (and GatherBlockQuantized).
    MatmulNbits,
    /// Blocked DequantizeLinear feeding the original MatMul (and Gather).
    Qdq,
}

impl Default for QuantizeWeightsConfig {
    fn default() -> Self {
        QuantizeWeightsConfig {
            bits: default_bits(),
            block_size: default_block_size(),
            symmetric: true,
            accuracy_level: None,
            format: WeightFormat::Auto,
            nodes_to_exclude: Vec::new(),
            overrides: Vec::new(),
            more_bits: false,
            embeddings: false,
            data_aware: false,
        }
    }
}

fn default_bits() -> u32 {
    4
}

fn default_block_size() -> usize {
    32
}

fn default_true() -> bool {
    true
}

/// The options one node is quantized with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NodeOptions {
    pub bits: u32,
    pub block_size: usize,
    pub symmetric: bool,
}

/// Weight-only 4/8-bit block quantization of MatMul weights (and embedding tables).
#[derive(Clone, Debug)]
pub struct QuantizeWeights {
    config: QuantizeWeightsConfig,
    exclude: NodeFilter,
    overrides: Vec<(Regex, Override)>,
}

impl Configured for QuantizeWeights {
    const NAME: &'static str = "quantize_weights";
    type Config = QuantizeWeightsConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        check_bits(config.bits, "`bits`")?;
        check_block_size(config.block_size, "`block_size`")?;
        if let Some(level) = config.accuracy_level {
            if level > 4 {
                return Err(config_error(format!(
                    "`accuracy_level` is {level}; MatMulNBits takes 0 (unset), 1 (float32), 2 \
                     (float16), 3 (bfloat16) or 4 (int8)"
                )));
            }
            if config.format == WeightFormat::Qdq {
                return Err(config_error(
                    "`accuracy_level` is an attribute of MatMulNBits and `format` is `qdq`; \
                     hint: remove `accuracy_level` or use `format: matmul_nbits`"
                        .into(),
                ));
            }
        }
        if config.embeddings && config.bits == 8 && config.format == WeightFormat::MatmulNbits {
            return Err(embeddings_at_eight_bits());
        }
        if config.more_bits && config.bits != 4 {
            return Err(config_error(format!(
                "`more_bits` keeps some layers at 8 bits among 4-bit ones, and `bits` is {}; \
                 hint: set `bits: 4` or remove `more_bits`",
                config.bits
            )));
        }

        let exclude = NodeFilter::strict(&config.nodes_to_exclude)
            .map_err(|why| config_error(format!("`nodes_to_exclude`: {why}")))?;
        let mut overrides = Vec::with_capacity(config.overrides.len());
        for (position, entry) in config.overrides.iter().enumerate() {
            let field = format!("`overrides[{position}]`");
            let regex = whole_match(&entry.nodes).map_err(|e| {
                config_error(format!(
                    "{field}.nodes `{}` is no valid regular expression: {e}",
                    entry.nodes
                ))
            })?;
            if let Some(bits) = entry.bits {
                check_bits(bits, &format!("{field}.bits"))?;
            }
            if let Some(block_size) = entry.block_size {
                check_block_size(block_size, &format!("{field}.block_size"))?;
            }
            overrides.push((regex, entry.clone()));
        }
        Ok(QuantizeWeights { config, exclude, overrides })
    }
}

impl QuantizeWeights {
    /// The pass with the given configuration (see [`Configured::from_config`] for checks).
    pub fn new(config: QuantizeWeightsConfig) -> Result<Self, PassError> {
        Self::from_config(config)
    }

    /// The options for the node named `name`: the first matching override's, else the
    /// configuration's. The second value says whether an override set `bits`.
    pub(crate) fn options_for(&self, name: &str) -> (NodeOptions, bool) {
        let mut options = NodeOptions {
            bits: self.config.bits,
            block_size: self.config.block_size,
            symmetric: self.config.symmetric,
        };
        let Some((_, entry)) = self.overrides.iter().find(|(regex, _)| regex.is_match(name)) else {
            return (options, false);
        };
        options.bits = entry.bits.unwrap_or(options.bits);
        options.block_size = entry.block_size.unwrap_or(options.block_size);
        options.symmetric = entry.symmetric.unwrap_or(options.symmetric);
        (options, entry.bits.is_some())
    }
}

impl QuantizeWeights {
    /// The format written for `runtime` (`auto`: MatMulNBits for ONNX Runtime, QDQ
    /// otherwise), or why the configuration cannot be written in it.
    fn format_for(&self, runtime: Runtime) -> Result<WeightFormat, PassError> {
        let format = match (self.config.format, runtime) {
            (WeightFormat::Auto, Runtime::OnnxRuntime) => WeightFormat::MatmulNbits,
            (WeightFormat::Auto, _) => WeightFormat::Qdq,
            (format, _) => format,
        };
        if format == WeightFormat::Qdq && self.config.accuracy_level.is_some() {
            return Err(config_error(
                "`accuracy_level` is an attribute of MatMulNBits, and `format: auto` chose \
                 `qdq` for this runtime; hint: remove `accuracy_level`"
                    .into(),
            ));
        }
        if self.config.embeddings && self.config.bits == 8 && format == WeightFormat::MatmulNbits {
            return Err(embeddings_at_eight_bits());
        }
        Ok(format)
    }
}

impl Pass for QuantizeWeights {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// What `format: auto` resolves to decides whether `accuracy_level` and 8-bit
    /// `embeddings` can apply; both are known before the model is.
    fn check_source(&self, _model: &ModelProto, runtime: Runtime) -> Result<(), PassError> {
        self.format_for(runtime).map(|_| ())
    }

    fn run(&self, mut model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("quantize_weights").entered();

        let format = self.format_for(context.runtime)?;
        let opset = ir::opset_version(&model, "").ok_or_else(|| {
            model_error("the model imports no opset of the default domain (ai.onnx)")
        })?;
        if format == WeightFormat::Qdq && opset < MIN_QDQ_OPSET {
            return Err(model_error(format!(
                "the QDQ format needs opset {MIN_QDQ_OPSET} of the default domain (blocked \
                 DequantizeLinear, INT4 types) and the model imports opset {opset}; hint: \
                 convert the model to opset {MIN_QDQ_OPSET} or later, or use `format: \
                 matmul_nbits` on ONNX Runtime"
            )));
        }

        let importance = match self.config.data_aware {
            true => Some(self.importance(&model, format, context)?),
            false => None,
        };

        let graph = model.graph.as_mut().ok_or_else(|| model_error("the model has no graph"))?;
        // A weight behind a Cast of an initializer (a float16 weight read as float32) is read
        // as the float32 initializer the Cast makes.
        let folded = fold_constant_weights(graph, |node| {
            matches!(node.op_type(), "MatMul" | "Gather") && matches!(node.domain(), "" | "ai.onnx")
        });
        tracing::debug!(?folded, "constant weights folded into initializers");
        let summary = rewrite::quantize_graph(graph, self, format, importance.as_ref())?;
        if summary.uses_ms_domain {
            import_ms_domain(&mut model)?;
        }
        info!("{}", summary.describe());
        Ok(model)
    }
}

impl QuantizeWeights {
    /// The importance of each input column of every MatMul this pass would quantize, by the
    /// MatMul's first input: the mean squared activation on the calibration data.
    fn importance(
        &self,
        model: &ModelProto,
        format: WeightFormat,
        context: &PassContext,
    ) -> Result<Importance, PassError> {
        let runner = context.calibration.ok_or_else(|| {
            config_error(
                "`data_aware` chooses scales on calibration data and the run has none; hint: \
                 add `data: {calibration: {path: calib.npz}}` to the recipe, or remove \
                 `data_aware`"
                    .into(),
            )
        })?;
        let graph = model.graph.as_ref().ok_or_else(|| model_error("the model has no graph"))?;
        let activations = rewrite::matmul_activations(graph, self, format)?;
        let shapes = ir::shapes::Shapes::infer(graph);
        let float = DataType::Float as i32;
        let not_float = activations.iter().find_map(|name| {
            let data_type = shapes.elem_type(name).filter(|&t| t != float)?;
            Some((name, ir::data_type_name(data_type)))
        });
        if let Some((name, data_type)) = not_float {
            return Err(model_error(format!(
                "`data_aware` measures float32 activations, and the MatMul input `{name}` is \
                 {data_type}; hint: run `quantize_weights` before `convert_fp16`, or remove \
                 `data_aware`"
            )));
        }
        info!(
            "data_aware: measuring {} MatMul input(s) on {} calibration sample(s)",
            activations.len(),
            runner.samples()
        );
        let vectors = importance::collect(model, &activations, runner)
            .map_err(|e| e.into_pass_error(Self::NAME))?;
        Ok(activations.into_iter().zip(vectors).collect())
    }
}

/// Column importances by the name of the activation a MatMul reads.
pub(crate) type Importance = std::collections::HashMap<String, Vec<f32>>;

fn check_bits(bits: u32, field: &str) -> Result<(), PassError> {
    match bits {
        4 | 8 => Ok(()),
        _ => Err(config_error(format!("{field} is {bits}; allowed values are 4 and 8"))),
    }
}

fn check_block_size(block_size: usize, field: &str) -> Result<(), PassError> {
    if BLOCK_SIZES.contains(&block_size) {
        return Ok(());
    }
    Err(config_error(format!(
        "{field} is {block_size}; allowed values are {} (powers of two from 16 to 256)",
        BLOCK_SIZES.map(|s| s.to_string()).join(", ")
    )))
}

/// GatherBlockQuantized takes 4-bit tables only: an 8-bit run with `embeddings` would leave
/// every table in float and make the same model as one without.
fn embeddings_at_eight_bits() -> PassError {
    config_error(
        "`embeddings` with `bits: 8`: ONNX Runtime's GatherBlockQuantized takes 4-bit tables \
         only, so the tables would stay in float; hint: use `bits: 4`, `format: qdq`, or an \
         override that sets the MatMuls to 8 bits"
            .into(),
    )
}

fn config_error(message: String) -> PassError {
    PassError::Config { pass: QuantizeWeights::NAME, message }
}

fn model_error(reason: impl Into<String>) -> PassError {
    PassError::Model { pass: QuantizeWeights::NAME, reason: reason.into() }
}

/// Adds `com.microsoft` version 1 to the model's imports unless it is there.
fn import_ms_domain(model: &mut ModelProto) -> Result<(), PassError> {
    ir::import_opset(model, MS_DOMAIN, 1).map_err(|version| {
        model_error(format!(
            "the model imports version {version} of `{MS_DOMAIN}`, which has no MatMulNBits; \
             hint: import version 1"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> Result<QuantizeWeights, String> {
        let config: QuantizeWeightsConfig =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        QuantizeWeights::from_config(config).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_4_bit_symmetric_blocks_of_32() {
        let config: QuantizeWeightsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, QuantizeWeightsConfig::default());
        assert_eq!((config.bits, config.block_size, config.symmetric), (4, 32, true));
    }

    #[test]
    fn overrides_apply_the_first_match() {
        let pass = build(
            r#"{"overrides": [{"nodes": "fc.*", "bits": 8}, {"nodes": "fc2", "block_size": 64}]}"#,
        )
        .unwrap();
        let (options, bits_set) = pass.options_for("fc2");
        assert_eq!((options.bits, options.block_size, bits_set), (8, 32, true));
        let (options, bits_set) = pass.options_for("xfc2");
        assert_eq!((options.bits, bits_set), (4, false));
    }

    #[test]
    fn bad_configs_name_the_field_and_allowed_values() {
        let err = build(r#"{"overrides": [{"nodes": "a", "block_size": 48}]}"#).unwrap_err();
        assert!(err.contains("`overrides[0]`.block_size is 48"), "{err}");
        let err = build(r#"{"overrides": [{"nodes": "a(", "bits": 8}]}"#).unwrap_err();
        assert!(err.contains("`overrides[0]`.nodes `a(`"), "{err}");
        let err = build(r#"{"accuracy_level": 5}"#).unwrap_err();
        assert!(err.contains("`accuracy_level` is 5"), "{err}");
    }
}
