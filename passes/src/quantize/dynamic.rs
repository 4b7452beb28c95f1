//! Dynamic INT8 quantization, as ONNX Runtime's `quantize_dynamic` does it.
//!
//! A MatMul, Gemm or Conv whose weight is a constant float initializer becomes
//! `DynamicQuantizeLinear(input) -> MatMulInteger/ConvInteger -> Cast -> Mul(input scale x
//! weight scale) [-> Add bias]`, ending in the node's original output name, so the model's
//! interface does not change. Weights are quantized ahead of time to symmetric INT8 (ORT's
//! default `QInt8`, zero point 0) with the scale and rounding of [`super::params`], so the
//! quantized weights, scales and zero points equal ORT's bit for bit.
//!
//! What ORT's tool does and this pass copies: a Gemm is handled like the MatMul ORT rewrites
//! it into (only with `transA = 0`, `alpha = beta = 1`; a `transB` weight is transposed before
//! it is quantized); per-channel scales run along the weight's last axis (the output
//! columns); Conv weights are always quantized per tensor, because ORT's CPU `ConvInteger`
//! takes a single weight zero point; an activation read by several quantized nodes is
//! quantized once, and so is a weight read by several.
//!
//! Where it differs: ORT's default op list also holds Gather, Transpose, LSTM, Attention and
//! EmbedLayerNormalization, which this pass leaves alone; ORT also quantizes float16 and
//! batched (3-D) MatMul weights, initializers that are graph inputs, and Conv weights that
//! are not constants, which this pass leaves in float with a debug log saying why; and a
//! model below opset 11 is an error here where ORT falls back to QuantizeLinear chains.

use std::collections::{HashMap, HashSet};

use ndarray::{arr0, arr1, ArrayD, Ix2};
use tracing::{debug, info, info_span, warn};

use super::params::{quantize_weight_int8, QuantizedWeight};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::ir::{self, NameGenerator};
use crate::pass::{Configured, Pass, PassContext, PassError};

/// The operator types this pass can quantize.
const SUPPORTED_OP_TYPES: [&str; 3] = ["MatMul", "Gemm", "Conv"];

/// `DynamicQuantizeLinear` first appears in opset 11 (`MatMulInteger` and `ConvInteger` in 10).
const MIN_OPSET: i64 = 11;

/// How many skipped nodes the "nothing quantized" error lists.
const MAX_LISTED_SKIPS: usize = 8;

/// The configuration of [`QuantizeDynamic`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuantizeDynamicConfig {
    /// One scale per output column of MatMul and Gemm weights instead of one per tensor.
    /// Conv weights stay per tensor: ONNX Runtime's ConvInteger takes one weight zero point.
    #[serde(default)]
    pub per_channel: bool,

    /// Quantize weights to 7 bits, [-64, 64], which can be more accurate on CPUs without VNNI.
    #[serde(default)]
    pub reduce_range: bool,

    /// The operator types to quantize, among MatMul, Gemm and Conv.
    #[serde(default = "default_op_types")]
    pub op_types: Vec<String>,

    /// Names of nodes to leave in float.
    #[serde(default)]
    pub nodes_to_exclude: Vec<String>,
}

impl Default for QuantizeDynamicConfig {
    fn default() -> Self {
        QuantizeDynamicConfig {
            per_channel: false,
            reduce_range: false,
            op_types: default_op_types(),
            nodes_to_exclude: Vec::new(),
        }
    }
}

fn default_op_types() -> Vec<String> {
    SUPPORTED_OP_TYPES.iter().map(|op| op.to_string()).collect()
}

/// Dynamic INT8 quantization of MatMul, Gemm and Conv weights.
#[derive(Clone, Debug)]
pub struct QuantizeDynamic {
    config: QuantizeDynamicConfig,
}

impl Configured for QuantizeDynamic {
    const NAME: &'static str = "quantize_dynamic";
    type Config = QuantizeDynamicConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        if config.op_types.is_empty() {
            return Err(config_error(format!(
                "`op_types` is empty; hint: name some of {}",
                SUPPORTED_OP_TYPES.join(", ")
            )));
        }

        if let Some(op) =
            config.op_types.iter().find(|op| !SUPPORTED_OP_TYPES.contains(&op.as_str()))
        {
            return Err(config_error(format!(
                "`op_types` names `{op}`, which this pass cannot quantize; hint: use some of {}",
                SUPPORTED_OP_TYPES.join(", ")
            )));
        }

        Ok(QuantizeDynamic { config })
    }
}

impl Pass for QuantizeDynamic {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, mut model: ModelProto, _context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("quantize_dynamic").entered();

        check_opset(&model)?;
        let graph = model.graph.as_mut().ok_or_else(|| model_error("the model has no graph"))?;

        let summary = quantize_graph(graph, &self.config)?;
        info!(
            quantized = summary.quantized,
            skipped = summary.skipped.len(),
            "quantized {} of {} candidate nodes to INT8",
            summary.quantized,
            summary.quantized + summary.skipped.len()
        );
        Ok(model)
    }
}

impl QuantizeDynamic {
    /// The pass with the given configuration (see [`Configured::from_config`] for checks).
    pub fn new(config: QuantizeDynamicConfig) -> Result<Self, PassError> {
        Self::from_config(config)
    }
}

fn config_error(message: String) -> PassError {
    PassError::Config { pass: QuantizeDynamic::NAME, message }
}

fn model_error(reason: impl Into<String>) -> PassError {
    PassError::Model { pass: QuantizeDynamic::NAME, reason: reason.into() }
}

fn check_opset(model: &ModelProto) -> Result<(), PassError> {
    match ir::opset_version(model, "") {
        Some(version) if version >= MIN_OPSET => Ok(()),
        Some(version) => Err(model_error(format!(
            "the model imports opset {version} of the default domain, and dynamic quantization \
             needs opset {MIN_OPSET} or later (DynamicQuantizeLinear); hint: convert the model \
             to opset {MIN_OPSET} or later first"
        ))),
        None => Err(model_error(
            "the model imports no opset of the default domain (ai.onnx); hint: add one to \
             `opset_import`",
        )),
    }
}

/// What one run did.
struct Summary {
    quantized: usize,
    /// `(node, reason)` for every candidate left in float.
    skipped: Vec<(String, String)>,
}

/// The operator a candidate node is, with what its rewrite needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MatMul,
    /// Gemm with `transA = 0` and `alpha = beta = 1`.
    Gemm {
        trans_b: bool,
    },
    Conv,
}

/// A node that will be quantized.
struct Target {
    kind: Kind,
    activation: String,
    weight: String,
    /// Gemm's `C` or Conv's `B`, when present.
    bias: Option<String>,
    /// The per-channel axis of the weight as fed to the integer op, or `None` for per tensor.
    axis: Option<usize>,
    /// The weight's rank, which is also the rank of a Conv's output.
    rank: usize,
}

/// The names of a quantized tensor and its parameters.
#[derive(Clone)]
struct QuantizedNames {
    values: String,
    scale: String,
    zero_point: String,
}

/// Everything a run adds to the graph besides the rewritten nodes.
struct Additions<'a> {
    names: NameGenerator,
    initializers: Vec<TensorProto>,
    /// Quantized weights by `(weight, transposed, axis)`, so a shared weight is stored once.
    weights: HashMap<(String, bool, Option<usize>), QuantizedNames>,
    /// Quantized activations by name, so an activation read by several nodes is quantized once.
    activations: HashMap<String, QuantizedNames>,
    config: &'a QuantizeDynamicConfig,
}

fn quantize_graph(
    graph: &mut GraphProto,
    config: &QuantizeDynamicConfig,
) -> Result<Summary, PassError> {
    warn_unknown_exclusions(graph, config);

    let mut additions = Additions {
        names: NameGenerator::new(graph),
        initializers: Vec::new(),
        weights: HashMap::new(),
        activations: HashMap::new(),
        config,
    };
    let mut replacements: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut skipped = Vec::new();
    let mut replaced_weights = HashSet::new();

    // TODO: Nodes inside subgraphs (If, Loop, Scan bodies) are not quantized; models that
    // keep their MatMuls in a Loop body stay float there.
    for (index, node) in graph.node.iter().enumerate() {
        if !is_candidate(node, config) {
            continue;
        }
        let label = node_label(node, index);

        let planned = plan(graph, node, config).and_then(|target| {
            let nodes = rewrite(node, &target, graph, &mut additions)?;
            Ok((target, nodes))
        });
        match planned {
            Ok((target, nodes)) => {
                debug!(node = %label, op = node.op_type(), weight = %target.weight, "quantized");
                replaced_weights.insert(target.weight);
                replacements.insert(index, nodes);
            }
            Err(reason) => {
                debug!(node = %label, op = node.op_type(), "left in float: {reason}");
                skipped.push((label, reason));
            }
        }
    }

    if replacements.is_empty() {
        return Err(nothing_quantized(graph, config, &skipped));
    }

    let quantized = replacements.len();
    splice(graph, replacements);
    graph.initializer.append(&mut additions.initializers);
    drop_unused_weights(graph, &replaced_weights);
    Ok(Summary { quantized, skipped })
}

fn warn_unknown_exclusions(graph: &GraphProto, config: &QuantizeDynamicConfig) {
    let node_names: HashSet<&str> = graph.node.iter().map(|n| n.name()).collect();
    for name in &config.nodes_to_exclude {
        if !node_names.contains(name.as_str()) {
            warn!("`nodes_to_exclude` names `{name}`, which is no node of the main graph");
        }
    }
}

fn is_candidate(node: &NodeProto, config: &QuantizeDynamicConfig) -> bool {
    let default_domain = matches!(node.domain(), "" | "ai.onnx");
    default_domain && config.op_types.iter().any(|op| op == node.op_type())
}

fn node_label(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("#{index} ({})", node.op_type()),
        name => name.to_string(),
    }
}

fn nothing_quantized(
    graph: &GraphProto,
    config: &QuantizeDynamicConfig,
    skipped: &[(String, String)],
) -> PassError {
    let mut reason = format!(
        "no node was quantized: the graph has {} nodes, {} of them of the types in `op_types` \
         ({})",
        graph.node.len(),
        skipped.len(),
        config.op_types.join(", ")
    );
    for (node, why) in skipped.iter().take(MAX_LISTED_SKIPS) {
        reason.push_str(&format!("; `{node}`: {why}"));
    }
    if skipped.len() > MAX_LISTED_SKIPS {
        reason.push_str(&format!("; and {} more", skipped.len() - MAX_LISTED_SKIPS));
    }
    model_error(reason)
}

/// Decides whether `node` can be quantized, or says why not.
fn plan(
    graph: &GraphProto,
    node: &NodeProto,
    config: &QuantizeDynamicConfig,
) -> Result<Target, String> {
    if config.nodes_to_exclude.iter().any(|name| name == node.name()) {
        return Err("excluded by `nodes_to_exclude`".into());
    }

    let kind = match node.op_type() {
        "MatMul" => Kind::MatMul,
        "Gemm" => gemm_kind(node)?,
        "Conv" => Kind::Conv,
        other => return Err(format!("{other} is not quantized by this pass")),
    };

    let (Some(activation), Some(weight)) = (node.input.first(), node.input.get(1)) else {
        return Err("the node has fewer than two inputs".into());
    };
    if node.output.len() != 1 {
        return Err("the node does not have exactly one output".into());
    }
    if ir::initializer(graph, activation).is_some() {
        return Err(format!("its first input `{activation}` is a constant; fold constants first"));
    }

    let tensor = check_weight(graph, weight)?;
    let rank = tensor.dims.len();
    match kind {
        Kind::MatMul | Kind::Gemm { .. } if rank != 2 => {
            return Err(format!(
                "weight `{weight}` has rank {rank}; only 2-D weights are quantized"
            ))
        }
        Kind::Conv if rank < 3 => {
            return Err(format!("weight `{weight}` has rank {rank}, which Conv does not take"))
        }
        _ => {}
    }

    let axis = match kind {
        Kind::MatMul | Kind::Gemm { .. } if config.per_channel => Some(1),
        Kind::Conv if config.per_channel => {
            debug!(
                node = node.name(),
                "Conv weight quantized per tensor: ConvInteger takes one weight zero point"
            );
            None
        }
        _ => None,
    };

    let bias = match kind {
        Kind::MatMul => None,
        Kind::Gemm { .. } | Kind::Conv => node.input.get(2).filter(|b| !b.is_empty()).cloned(),
    };

    Ok(Target { kind, activation: activation.clone(), weight: weight.clone(), bias, axis, rank })
}

fn gemm_kind(node: &NodeProto) -> Result<Kind, String> {
    if ir::node_attr_int(node, "transA").unwrap_or(0) != 0 {
        return Err("Gemm with transA = 1 is not quantized".into());
    }

    // ORT rewrites only Gemm with alpha = beta = 1 into MatMul before quantizing; folding
    // other values into the scales would make results differ from ORT's.
    let alpha = ir::node_attr_float(node, "alpha").unwrap_or(1.0);
    let beta = ir::node_attr_float(node, "beta").unwrap_or(1.0);
    if alpha != 1.0 || beta != 1.0 {
        return Err(format!(
            "Gemm with alpha = {alpha} and beta = {beta} is not quantized (needs 1)"
        ));
    }

    Ok(Kind::Gemm { trans_b: ir::node_attr_int(node, "transB").unwrap_or(0) != 0 })
}

/// The weight's initializer, when it is a constant float32 tensor.
fn check_weight<'g>(graph: &'g GraphProto, weight: &str) -> Result<&'g TensorProto, String> {
    let Some(tensor) = ir::initializer(graph, weight) else {
        return Err(format!("weight `{weight}` is not an initializer"));
    };
    if graph.input.iter().any(|input| input.name() == weight) {
        return Err(format!(
            "weight `{weight}` is also a graph input, so it can be overridden at run time"
        ));
    }
    if tensor.data_type() != DataType::Float as i32 {
        let name = ir::data_type_name(tensor.data_type());
        return Err(format!("weight `{weight}` is {name}, not FLOAT"));
    }
    Ok(tensor)
}

/// The nodes that replace `node`, with the activation's quantization first when this is the
/// first quantized reader of that activation.
fn rewrite(
    node: &NodeProto,
    target: &Target,
    graph: &GraphProto,
    additions: &mut Additions<'_>,
) -> Result<Vec<NodeProto>, String> {
    let weight = quantized_weight(graph, target, additions)?;

    let mut nodes = Vec::new();
    let activation = match additions.activations.get(&target.activation) {
        Some(names) => names.clone(),
        None => {
            let (names, dql) = quantize_activation(&target.activation, &mut additions.names);
            nodes.push(dql);
            additions.activations.insert(target.activation.clone(), names.clone());
            names
        }
    };

    integer_nodes(node, target, &activation, &weight, additions, &mut nodes);
    Ok(nodes)
}

/// The names of the weight's quantized initializers, creating them on first use.
fn quantized_weight(
    graph: &GraphProto,
    target: &Target,
    additions: &mut Additions<'_>,
) -> Result<QuantizedNames, String> {
    let transposed = matches!(target.kind, Kind::Gemm { trans_b: true });
    let key = (target.weight.clone(), transposed, target.axis);
    if let Some(names) = additions.weights.get(&key) {
        return Ok(names.clone());
    }

    let tensor = ir::initializer(graph, &target.weight)
        .ok_or_else(|| format!("weight `{}` is not an initializer", target.weight))?;
    let mut data = ir::tensor_to_f32(tensor)
        .map_err(|e| format!("cannot read weight `{}`: {e}", target.weight))?;
    if transposed {
        let matrix = data
            .into_dimensionality::<Ix2>()
            .map_err(|e| format!("weight `{}` is not a matrix: {e}", target.weight))?;
        data = matrix.t().as_standard_layout().into_owned().into_dyn();
    }

    let config = additions.config;
    let quantized = quantize_weight_int8(data.view(), target.axis, true, config.reduce_range)
        .map_err(|e| format!("cannot quantize weight `{}`: {e}", target.weight))?;

    let names = weight_initializers(&target.weight, quantized, additions);
    additions.weights.insert(key, names.clone());
    Ok(names)
}

fn weight_initializers(
    weight: &str,
    quantized: QuantizedWeight,
    additions: &mut Additions<'_>,
) -> QuantizedNames {
    let names = QuantizedNames {
        values: additions.names.fresh(&format!("{weight}_quantized")),
        scale: additions.names.fresh(&format!("{weight}_scale")),
        zero_point: additions.names.fresh(&format!("{weight}_zero_point")),
    };

    let (scale, zero_point): (ArrayD<f32>, ArrayD<i8>) = match quantized.axis {
        None => (arr0(quantized.scales[0]).into_dyn(), arr0(quantized.zero_points[0]).into_dyn()),
        Some(_) => (arr1(&quantized.scales).into_dyn(), arr1(&quantized.zero_points).into_dyn()),
    };
    additions.initializers.push(ir::tensor_from_i8(&names.values, &quantized.values));
    additions.initializers.push(ir::tensor_from_f32(&names.scale, &scale));
    additions.initializers.push(ir::tensor_from_i8(&names.zero_point, &zero_point));
    names
}

/// `DynamicQuantizeLinear` of an activation: UINT8 values, a scalar scale and zero point.
fn quantize_activation(activation: &str, names: &mut NameGenerator) -> (QuantizedNames, NodeProto) {
    let quantized = QuantizedNames {
        values: names.fresh(&format!("{activation}_quantized")),
        scale: names.fresh(&format!("{activation}_scale")),
        zero_point: names.fresh(&format!("{activation}_zero_point")),
    };
    let node = ir::make_node(
        "DynamicQuantizeLinear",
        &[activation],
        &[&quantized.values, &quantized.scale, &quantized.zero_point],
        &names.fresh(&format!("{activation}_QuantizeLinear")),
    );
    (quantized, node)
}

/// The integer op, the cast back to float, the scaling and the bias, ending in the node's
/// own output name.
fn integer_nodes(
    node: &NodeProto,
    target: &Target,
    x: &QuantizedNames,
    w: &QuantizedNames,
    additions: &mut Additions<'_>,
    nodes: &mut Vec<NodeProto>,
) {
    let names = &mut additions.names;
    let output = node.output[0].as_str();
    let base = match node.name() {
        "" => node.op_type().to_string(),
        name => name.to_string(),
    };

    let integer_output = names.fresh(&format!("{output}_output_quantized"));
    let integer_inputs = [x.values.as_str(), &w.values, &x.zero_point, &w.zero_point];
    let integer_name = names.fresh(&format!("{base}_quant"));
    let mut integer = match target.kind {
        Kind::MatMul | Kind::Gemm { .. } => {
            ir::make_node("MatMulInteger", &integer_inputs, &[&integer_output], &integer_name)
        }
        Kind::Conv => {
            let mut conv =
                ir::make_node("ConvInteger", &integer_inputs, &[&integer_output], &integer_name);
            conv.attribute = node.attribute.clone();
            conv
        }
    };
    integer.doc_string = Some(format!("quantized from {} `{}`", node.op_type(), node.name()));
    nodes.push(integer);

    let cast_output = names.fresh(&format!("{integer_output}_cast_output"));
    let mut cast = ir::make_node(
        "Cast",
        &[&integer_output],
        &[&cast_output],
        &names.fresh(&format!("{integer_output}_cast")),
    );
    cast.attribute.push(ir::attr_int("to", DataType::Float as i64));
    nodes.push(cast);

    let scales = names.fresh(&format!("{base}_quant_scales_mul:0"));
    nodes.push(ir::make_node(
        "Mul",
        &[&x.scale, &w.scale],
        &[&scales],
        &names.fresh(&format!("{base}_quant_scales_mul")),
    ));

    let scaled = match target.bias {
        Some(_) => names.fresh(&format!("{output}_scaled")),
        None => output.to_string(),
    };
    nodes.push(ir::make_node(
        "Mul",
        &[&cast_output, &scales],
        &[&scaled],
        &names.fresh(&format!("{base}_quant_output_scale_mul")),
    ));

    let Some(bias) = &target.bias else { return };
    let bias = match target.kind {
        Kind::Conv => reshaped_conv_bias(bias, output, target.rank, additions, nodes),
        Kind::MatMul | Kind::Gemm { .. } => bias.clone(),
    };
    let add_name = additions.names.fresh(&format!("{base}_bias_add"));
    nodes.push(ir::make_node("Add", &[&scaled, &bias], &[output], &add_name));
}

/// Conv's bias `[C]` reshaped to `[1, C, 1, ...]` so it broadcasts over the output.
fn reshaped_conv_bias(
    bias: &str,
    output: &str,
    rank: usize,
    additions: &mut Additions<'_>,
    nodes: &mut Vec<NodeProto>,
) -> String {
    let mut shape = vec![1i64; rank];
    shape[1] = -1;

    let shape_name = additions.names.fresh(&format!("{output}_bias_reshape_shape"));
    additions.initializers.push(ir::tensor_from_i64(&shape_name, &arr1(&shape).into_dyn()));

    let reshaped = additions.names.fresh(&format!("{output}_bias_reshape_output"));
    let reshape_name = additions.names.fresh(&format!("{output}_bias_reshape"));
    nodes.push(ir::make_node("Reshape", &[bias, &shape_name], &[&reshaped], &reshape_name));
    reshaped
}

/// Puts each node's replacement at its position.
fn splice(graph: &mut GraphProto, mut replacements: HashMap<usize, Vec<NodeProto>>) {
    let old = std::mem::take(&mut graph.node);
    for (index, node) in old.into_iter().enumerate() {
        match replacements.remove(&index) {
            Some(nodes) => graph.node.extend(nodes),
            None => graph.node.push(node),
        }
    }
}

/// Removes the float weights no node reads any more, here or in a subgraph.
fn drop_unused_weights(graph: &mut GraphProto, weights: &HashSet<String>) {
    let mut used = HashSet::new();
    collect_used_names(graph, &mut used);
    for output in &graph.output {
        used.insert(output.name().to_string());
    }

    let unused = |name: &str| weights.contains(name) && !used.contains(name);
    graph.initializer.retain(|t| !unused(t.name()));
    graph.value_info.retain(|v| !unused(v.name()));
}

fn collect_used_names(graph: &GraphProto, used: &mut HashSet<String>) {
    for node in &graph.node {
        used.extend(node.input.iter().cloned());
        for attribute in &node.attribute {
            if let Some(subgraph) = &attribute.g {
                collect_used_names(subgraph, used);
            }
            for subgraph in &attribute.graphs {
                collect_used_names(subgraph, used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_quantizes_matmul_gemm_conv() {
        let config: QuantizeDynamicConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, QuantizeDynamicConfig::default());
        assert_eq!(config.op_types, ["MatMul", "Gemm", "Conv"]);
        assert!(!config.per_channel && !config.reduce_range && config.nodes_to_exclude.is_empty());
    }

    #[test]
    fn config_refuses_unknown_fields_and_ops() {
        let err = serde_json::from_str::<QuantizeDynamicConfig>(r#"{"per_chanel": true}"#);
        assert!(err.unwrap_err().to_string().contains("unknown field"));

        let config =
            QuantizeDynamicConfig { op_types: vec!["Gather".into()], ..Default::default() };
        let err = QuantizeDynamic::from_config(config).unwrap_err().to_string();
        assert!(err.contains("`Gather`"), "{err}");

        let config = QuantizeDynamicConfig { op_types: vec![], ..Default::default() };
        assert!(QuantizeDynamic::from_config(config).is_err());
    }
}
