//! The `convert_fp16` pass: the model computes in float16 instead of float32.
//!
//! Float32 initializers, Constant nodes and the outputs of every converted node become
//! float16; ONNX types each node's outputs from its inputs, so a graph whose float sources
//! are float16 computes in float16. The pass works out the element type of every value
//! first ([`crate::convert::elem_types`]) and then decides, value by value, the precision its
//! producer writes and the precision each reader wants ([`plan`]), adding one Cast wherever
//! the two differ ([`rewrite`]):
//!
//! - Graph inputs and outputs stay float32 with `keep_io_types` (the default), with a Cast
//!   after each input and before each output; without it they become float16.
//! - Nodes whose op type is in `op_block_list` or whose name is in `node_block_list` stay
//!   float32, and so do nodes ONNX defines on float32 only at the model's opset (Range before
//!   opset 27, QuantizeLinear and DequantizeLinear before 19, DynamicQuantizeLinear, ...),
//!   nodes of domains other than the default one and `com.microsoft` (never touched), the
//!   `com.microsoft` operators without a float16 rule here, and nodes reading or writing a
//!   value whose element type cannot be told. They read float16 values through a Cast to
//!   float32, and float16 readers read their outputs through a Cast to float16.
//! - An initializer or Constant read by both kept and converted nodes stays float32 for the
//!   kept ones and gets a float16 copy for the others: no Cast at run time, and the kept
//!   nodes see the exact weights.
//! - An existing Cast to float32 becomes a Cast to float16 when every reader of its output
//!   runs in float16; otherwise it stays, and float16 readers read it through another Cast.
//!   ConstantOfShape of a float32 value follows the same rule. RandomNormal, RandomUniform,
//!   EyeLike with a `dtype`, and the window operators keep their float32 output type (ONNX
//!   Runtime's CPU kernels have no float16 form of RandomNormal, RandomUniform or typed
//!   EyeLike), and their float16 readers read them through a Cast.
//! - Float64 values stay float64. A model computes in double only where its author asked for
//!   it, and double values meet float ones only through Cast nodes, which the pass retypes
//!   as above, so the double part of a graph stays exact.
//! - Converted values are rounded to the nearest float16. Finite values beyond ±65504 become
//!   ±65504 rather than infinity, and non-zero values smaller in magnitude than 2^-24 (the
//!   smallest float16) become ±2^-24 rather than zero, with a warning that counts them.
//! - If, Loop and Scan nodes stay float32 with their subgraphs untouched; the outer values
//!   their subgraphs read reach them through Casts to float32.
//!
//! Attributes that hold floats (`alpha`, `epsilon`) stay as they are: ONNX defines them as
//! float32 whatever the node's type.

mod plan;
mod rewrite;
pub mod values;

use std::collections::{BTreeMap, HashSet};

use tracing::{debug, info, info_span, warn};

use crate::ir::proto::ModelProto;
use crate::ir::{self};
use crate::pass::{Configured, Pass, PassContext, PassError};
use plan::Plan;
use rewrite::Rewriter;

/// The op types the pass keeps in float32 unless told otherwise: the default-domain part of
/// the list ONNX Runtime's own float16 converter blocks. Resize, Upsample and RoiAlign compute
/// coordinates, Range and CumSum accumulate, and float16 has 11 significant bits (integers
/// above 2048 are not exact); TopK and NonMaxSuppression pick indices by comparing scores
/// that float16 ties; ONNX Runtime has had no float16 kernel for Min and Max on CPU.
pub const DEFAULT_OP_BLOCK_LIST: [&str; 9] = [
    "NonMaxSuppression",
    "TopK",
    "RoiAlign",
    "Resize",
    "Range",
    "CumSum",
    "Min",
    "Max",
    "Upsample",
];

/// How many kept nodes the "nothing converted" error lists.
const MAX_LISTED_KEPT: usize = 8;

/// The configuration of [`ConvertFp16`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertFp16Config {
    /// Keep the graph's float32 inputs and outputs float32, with a Cast after each input and
    /// before each output, so the model is fed and read as before. Off, they become float16.
    #[serde(default = "default_true")]
    pub keep_io_types: bool,

    /// Op types to keep in float32, with Casts around them. The default is the list ONNX
    /// Runtime's float16 converter blocks in the default domain: NonMaxSuppression, TopK,
    /// RoiAlign, Resize, Range, CumSum, Min, Max, Upsample. A list given here replaces it.
    #[serde(default = "default_op_block_list")]
    pub op_block_list: Vec<String>,

    /// Names of nodes to keep in float32, with Casts around them.
    #[serde(default)]
    pub node_block_list: Vec<String>,
}

impl Default for ConvertFp16Config {
    fn default() -> Self {
        ConvertFp16Config {
            keep_io_types: true,
            op_block_list: default_op_block_list(),
            node_block_list: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_op_block_list() -> Vec<String> {
    DEFAULT_OP_BLOCK_LIST.iter().map(|op| op.to_string()).collect()
}

/// Float32 to float16 conversion of a model's weights and computation.
#[derive(Clone, Debug)]
pub struct ConvertFp16 {
    config: ConvertFp16Config,
}

impl Configured for ConvertFp16 {
    const NAME: &'static str = "convert_fp16";
    type Config = ConvertFp16Config;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        let lists = [
            ("op_block_list", &config.op_block_list),
            ("node_block_list", &config.node_block_list),
        ];
        for (field, list) in lists {
            if list.iter().any(String::is_empty) {
                return Err(PassError::Config {
                    pass: Self::NAME,
                    message: format!("`{field}` holds an empty name; hint: remove it"),
                });
            }
        }
        Ok(ConvertFp16 { config })
    }
}

impl ConvertFp16 {
    /// The pass with the given configuration (see [`Configured::from_config`] for checks).
    pub fn new(config: ConvertFp16Config) -> Result<Self, PassError> {
        Self::from_config(config)
    }
}

impl Pass for ConvertFp16 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, mut model: ModelProto, _context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("convert_fp16").entered();

        let opset = ir::opset_version(&model, "").ok_or_else(|| PassError::Model {
            pass: Self::NAME,
            reason: "the model imports no opset of the default domain (ai.onnx); hint: add \
                     one to `opset_import`"
                .into(),
        })?;
        let graph = model.graph.as_mut().ok_or_else(|| PassError::Model {
            pass: Self::NAME,
            reason: "the model has no graph".into(),
        })?;
        warn_unknown_nodes(graph, &self.config);

        let plan = Plan::new(graph, &self.config, opset);
        if !plan.converts_anything() {
            return Err(PassError::Unchanged {
                pass: Self::NAME,
                reason: nothing_converted(graph, &plan),
            });
        }

        let edits = Rewriter::new(graph, &plan).run()?;
        let counts = edits.apply(graph, &plan)?;

        for (node, reason) in &counts.kept {
            debug!(node = %node, "kept in float32: {reason}");
        }
        info!(
            converted = counts.converted,
            kept = counts.kept.len(),
            casts = counts.casts,
            "converted {} nodes to float16 and kept {} in float32{}; added {} Casts, stored {} \
             initializers and {} constants in float16, retyped {} Casts",
            counts.converted,
            counts.kept.len(),
            kept_summary(&counts.kept),
            counts.casts,
            counts.initializers,
            counts.constants,
            counts.retyped_casts
        );
        warn_adjusted(&counts.adjusted);
        Ok(model)
    }
}

fn warn_unknown_nodes(graph: &crate::ir::proto::GraphProto, config: &ConvertFp16Config) {
    let names: HashSet<&str> = graph.node.iter().map(|n| n.name()).collect();
    for name in &config.node_block_list {
        if !names.contains(name.as_str()) {
            warn!("`node_block_list` names `{name}`, which is no node of the main graph");
        }
    }
}

/// The reasons kept nodes stay float32, counted: ` (Resize is in `op_block_list` x2, ...)`.
fn kept_summary(kept: &[(String, String)]) -> String {
    if kept.is_empty() {
        return String::new();
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, reason) in kept {
        *reasons.entry(reason.as_str()).or_default() += 1;
    }
    let parts: Vec<String> =
        reasons.iter().map(|(reason, count)| format!("{reason} x{count}")).collect();
    format!(" ({})", parts.join("; "))
}

/// Warns of values moved to stay within float16's range, naming the tensors.
fn warn_adjusted(adjusted: &[(String, values::Adjusted)]) {
    if adjusted.is_empty() {
        return;
    }
    let mut total = values::Adjusted::default();
    for (_, counts) in adjusted {
        total.add(*counts);
    }
    let mut names: Vec<&str> = adjusted.iter().map(|(name, _)| name.as_str()).collect();
    names.truncate(MAX_LISTED_KEPT);
    let more = adjusted.len().saturating_sub(MAX_LISTED_KEPT);
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    warn!(
        clamped = total.clamped,
        raised = total.raised,
        "{} values beyond float16's range were clamped to ±65504 and {} non-zero values \
         below 2^-24 in magnitude were raised to ±2^-24, in `{}`{tail}",
        total.clamped,
        total.raised,
        names.join("`, `")
    );
}

/// Why nothing was converted: no float32 value at all, or every one is in a kept node.
fn nothing_converted(graph: &crate::ir::proto::GraphProto, plan: &Plan) -> String {
    if plan.homes.is_empty() {
        return "the model holds no float32 values (inputs, initializers, constants or node \
                outputs)"
            .into();
    }
    let kept: Vec<String> = graph
        .node
        .iter()
        .zip(&plan.kept)
        .filter_map(|(node, reason)| {
            let reason = reason.as_ref()?;
            let floats = node.input.iter().chain(&node.output).any(|v| plan.is_float32(v));
            floats.then(|| format!("`{}`: {reason}", node_label(node)))
        })
        .collect();
    let mut reason = "every float32 value stays float32".to_string();
    if plan.keep_io {
        reason.push_str(" (graph inputs and outputs keep their type with `keep_io_types`)");
    }
    for line in kept.iter().take(MAX_LISTED_KEPT) {
        reason.push_str("; ");
        reason.push_str(line);
    }
    if kept.len() > MAX_LISTED_KEPT {
        reason.push_str(&format!("; and {} more", kept.len() - MAX_LISTED_KEPT));
    }
    reason
}

fn node_label(node: &crate::ir::proto::NodeProto) -> String {
    match node.name() {
        "" => node.op_type().to_string(),
        name => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_keeps_io_types_and_blocks_ort_s_list() {
        let config: ConvertFp16Config = serde_json::from_str("{}").unwrap();

        assert_eq!(config, ConvertFp16Config::default());
        assert!(config.keep_io_types);
        assert!(config.op_block_list.iter().any(|op| op == "Resize"));
        assert!(config.op_block_list.iter().any(|op| op == "Range"));
        assert!(config.node_block_list.is_empty());
    }

    #[test]
    fn config_refuses_unknown_fields_and_empty_names() {
        let err = serde_json::from_str::<ConvertFp16Config>(r#"{"keep_io_type": false}"#);
        assert!(err.unwrap_err().to_string().contains("unknown field"));

        let config =
            ConvertFp16Config { node_block_list: vec![String::new()], ..Default::default() };
        let err = ConvertFp16::from_config(config).unwrap_err().to_string();
        assert!(err.contains("`node_block_list` holds an empty name"), "{err}");
    }
}
