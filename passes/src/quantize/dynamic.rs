//! Dynamic INT8 quantization, as ONNX Runtime's `quantize_dynamic` does it.
//!
//! Weights are quantized ahead of time and activations at run time by `DynamicQuantizeLinear`,
//! with the scale and rounding of [`super::params`], so quantized weights, scales and zero
//! points equal those of ORT's tool bit for bit. The nodes are visited in order, as ORT's tool
//! visits them, and each operator type has its own rewrite:
//!
//! - MatMul, Gemm, Conv ([`linear`]): `MatMulInteger`/`ConvInteger -> Cast -> Mul(input scale x
//!   weight scale) [-> Add bias]`, with symmetric INT8 weights.
//! - Gather on a constant table ([`gather`]): the table is stored as asymmetric UINT8 and the
//!   Gather picks 8-bit rows. Its output then exists only in 8-bit form: a later MatMul, Conv
//!   or Attention reads it as already quantized, a Transpose moves it in 8-bit, and any other
//!   reader gets a `DequantizeLinear` back to float, once.
//! - Transpose ([`gather`]) of a value an earlier node quantized (a Gather's output, or an
//!   activation quantized at run time) moves the 8-bit value; its float readers get it back
//!   through a `DequantizeLinear`, with the quantization error, as in ORT's tool.
//! - LSTM ([`recurrent`]): `com.microsoft.DynamicQuantizeLSTM` with INT8 weights, scaled per
//!   direction, or per gate row with `per_channel`. GRU has no such kernel in ORT, so it stays
//!   in float.
//! - `com.microsoft.Attention` ([`attention`]): `com.microsoft.QAttention`.
//! - `com.microsoft.EmbedLayerNormalization` ([`embed`]): `com.microsoft.QEmbedLayerNormalization`
//!   with its tables, gamma and beta stored as Gather tables are.
//!
//! Where this pass differs from ORT's tool, on purpose or not yet:
//! - ORT also quantizes float16 weights and tables, batched (3-D) MatMul weights, initializers
//!   that are graph inputs, Attention weights that are not constants and Conv weights that are
//!   not constants; this pass leaves those in float with a debug log saying why.
//! - ORT rewrites an LSTM with `layout = 1`, or an Attention or EmbedLayerNormalization with
//!   inputs, outputs or attributes that the quantized operator lacks, into a node that
//!   computes something else or does not load; this pass leaves them in float.
//! - When a node left in float reads a weight that another node quantized, ORT feeds it the
//!   dequantized weight; this pass keeps the float weight for it. ORT also keeps one quantized
//!   form per initializer, whichever reader came first (a table shared by a Gather and a
//!   MatMul is UINT8 for both; a Transpose of a quantized weight moves its 8-bit form); this
//!   pass stores each form its readers need.
//! - ORT's tool matches Attention by name alone, so it would turn the ONNX-domain Attention
//!   of opset 23 into a QAttention; this pass only rewrites `com.microsoft.Attention`.
//! - A model below opset 11 is an error here where ORT falls back to QuantizeLinear chains.

mod attention;
mod embed;
mod gather;
mod linear;
mod recurrent;

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{debug, info, info_span, warn};

use crate::quantize::static_quant::prepare::fold_constant_weights;

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::ir::{self, NameGenerator};
use crate::pass::{Configured, Pass, PassContext, PassError};

/// The operator types this pass can quantize.
const SUPPORTED_OP_TYPES: [&str; 8] = [
    "MatMul",
    "Gemm",
    "Conv",
    "Gather",
    "Transpose",
    "LSTM",
    "Attention",
    "EmbedLayerNormalization",
];

/// Operator types this pass refuses by name, with the reason.
const REFUSED_OP_TYPES: [(&str, &str); 1] =
    [("GRU", "ONNX Runtime has no dynamically quantized GRU kernel, so GRU stays in float")];

/// `DynamicQuantizeLinear` first appears in opset 11 (`MatMulInteger` and `ConvInteger` in 10).
const MIN_OPSET: i64 = 11;

/// The domain of ORT's contrib operators (`DynamicQuantizeLSTM`, `QAttention` ...).
const MS_DOMAIN: &str = "com.microsoft";

/// How many skipped nodes the "nothing quantized" error lists.
const MAX_LISTED_SKIPS: usize = 8;

/// The configuration of [`QuantizeDynamic`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuantizeDynamicConfig {
    /// One scale per output column of MatMul, Gemm and Attention weights, and per gate row of
    /// LSTM weights, instead of one per tensor (one per direction for LSTM). Conv weights and
    /// Gather tables stay per tensor, as ONNX Runtime's tool keeps them.
    #[serde(default)]
    pub per_channel: bool,

    /// Quantize weights to 7 bits, [-64, 64], which can be more accurate on CPUs without VNNI.
    /// Gather tables keep 8 bits.
    #[serde(default)]
    pub reduce_range: bool,

    /// The operator types to quantize, among MatMul, Gemm, Conv, Gather, Transpose, LSTM,
    /// Attention and EmbedLayerNormalization (both com.microsoft). The default is all of
    /// them, as in ONNX Runtime's tool. Transpose only moves values that earlier nodes
    /// quantized, in 8-bit. GRU has no quantized kernel in ONNX Runtime. Conv runs many times
    /// slower as ConvInteger on CPU: `[MatMul, Gemm]` leaves it in float.
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

/// Dynamic INT8 quantization of MatMul, Gemm, Conv, Gather, LSTM, Attention and
/// EmbedLayerNormalization weights.
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

        for op in &config.op_types {
            if SUPPORTED_OP_TYPES.contains(&op.as_str()) {
                continue;
            }
            let why = REFUSED_OP_TYPES
                .iter()
                .find(|(refused, _)| refused == op)
                .map_or("this pass cannot quantize it", |(_, why)| why);
            return Err(config_error(format!(
                "`op_types` names `{op}`: {why}; hint: use some of {}",
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
        // Weights held by Constant nodes or behind a Cast of an initializer are quantized like
        // initializers, as static quantization does.
        let excluded: HashSet<&str> =
            self.config.nodes_to_exclude.iter().map(String::as_str).collect();
        let folded = fold_constant_weights(graph, |node| {
            is_candidate(node, &self.config) && !excluded.contains(node.name())
        });
        debug!(?folded, "constant weights folded into initializers");

        let summary = quantize_graph(graph, &self.config)?;
        let op_types: Vec<&str> = self.config.op_types.iter().map(String::as_str).collect();
        if let Some(left) = ir::subgraphs_left_alone(graph, &op_types) {
            warn!("quantize_dynamic: {left}");
        }
        if summary.uses_ms_domain {
            import_ms_domain(&mut model)?;
        }

        let quantized: usize = summary.quantized.values().sum();
        info!(
            quantized,
            skipped = summary.skipped.len(),
            "quantized {quantized} of {} candidate nodes to INT8 ({})",
            quantized + summary.skipped.len(),
            summary.by_op_type()
        );
        if let Some(&convs) = summary.quantized.get("Conv") {
            warn!(
                "quantized {convs} Conv node(s) to ConvInteger, which ONNX Runtime runs many \
                 times slower than float Conv on CPU; the report's latency shows the cost, and \
                 `op_types: [MatMul, Gemm]` leaves Conv in float"
            );
        }
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

/// Adds `com.microsoft` version 1 to the model's imports unless it is there.
fn import_ms_domain(model: &mut ModelProto) -> Result<(), PassError> {
    ir::import_opset(model, MS_DOMAIN, 1).map_err(|version| {
        model_error(format!(
            "the model imports version {version} of `{MS_DOMAIN}`, which has no \
             quantized contrib operators; hint: import version 1"
        ))
    })
}

/// What one run did.
struct Summary {
    /// How many nodes of each op type were rewritten.
    quantized: BTreeMap<String, usize>,
    /// `(node, reason)` for every candidate left in float.
    skipped: Vec<(String, String)>,
    /// Whether the graph now holds contrib operators.
    uses_ms_domain: bool,
}

impl Summary {
    fn by_op_type(&self) -> String {
        let counts: Vec<String> =
            self.quantized.iter().map(|(op, count)| format!("{count} {op}")).collect();
        counts.join(", ")
    }
}

/// The names of an 8-bit tensor and of its scale and zero point.
#[derive(Clone, Debug)]
struct QuantizedNames {
    values: String,
    scale: String,
    zero_point: String,
}

/// A quantized weight's three initializers, named by [`Rewriter::add_weight`].
struct QuantizedInitializers {
    values: TensorProto,
    scale: TensorProto,
    zero_point: TensorProto,
}

/// How a weight is quantized and laid out for the node that reads it; one initializer can
/// be stored in several forms, each once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum WeightForm {
    /// Symmetric INT8 for MatMulInteger, ConvInteger or QAttention, transposed first for a
    /// Gemm with `transB`, with a per-channel axis or none.
    Matrix { transposed: bool, axis: Option<usize> },
    /// Asymmetric UINT8 with one scale, for Gather.
    Table,
    /// Symmetric INT8 in DynamicQuantizeLSTM's `[directions, inputs, 4 x hidden]` layout.
    Recurrent { per_channel: bool },
}

/// The state of one walk over the graph: the nodes written so far and what they quantized.
struct Rewriter<'g> {
    graph: &'g GraphProto,
    config: &'g QuantizeDynamicConfig,
    names: NameGenerator,
    /// The new node list, in order.
    nodes: Vec<NodeProto>,
    /// New initializers.
    initializers: Vec<TensorProto>,
    /// Quantized weights by float name and form, so each is stored once.
    weights: HashMap<(String, WeightForm), QuantizedNames>,
    /// Activations quantized by `DynamicQuantizeLinear`, so each is quantized once.
    activations: HashMap<String, QuantizedNames>,
    /// Values that no node produces in float any more (the output of a quantized Gather or of
    /// an 8-bit Transpose), by their float name, with the 8-bit value that replaced them.
    integer_only: HashMap<String, QuantizedNames>,
    /// The values of `integer_only` that a `DequantizeLinear` already brought back to float.
    dequantized: HashSet<String>,
    /// Float initializers some rewrite stopped reading.
    replaced_weights: HashSet<String>,
    uses_ms_domain: bool,
}

/// What a rewrite makes of one node.
enum Rewrite {
    /// The node is replaced by these nodes.
    Quantized(Vec<NodeProto>),
    /// The node stays as it is, and is not reported: nothing in it is quantizable (a
    /// Transpose of a float value, a Gather on a computed tensor).
    Untouched,
}

/// The reason a candidate node stays in float.
type Skip = String;

impl<'g> Rewriter<'g> {
    fn new(graph: &'g GraphProto, config: &'g QuantizeDynamicConfig) -> Self {
        Rewriter {
            graph,
            config,
            names: NameGenerator::new(graph),
            nodes: Vec::with_capacity(graph.node.len()),
            initializers: Vec::new(),
            weights: HashMap::new(),
            activations: HashMap::new(),
            integer_only: HashMap::new(),
            dequantized: HashSet::new(),
            replaced_weights: HashSet::new(),
            uses_ms_domain: false,
        }
    }

    /// The weight's quantized form, quantizing it with `quantize` on first use.
    fn weight(
        &mut self,
        weight: &str,
        form: WeightForm,
        quantize: impl FnOnce(&TensorProto) -> Result<QuantizedInitializers, Skip>,
    ) -> Result<QuantizedNames, Skip> {
        let key = (weight.to_string(), form);
        if let Some(names) = self.weights.get(&key) {
            return Ok(names.clone());
        }

        let tensor = ir::initializer(self.graph, weight)
            .ok_or_else(|| format!("weight `{weight}` is not an initializer"))?;
        let quantized = quantize(tensor)?;

        let names = QuantizedNames {
            values: self.names.fresh(&format!("{weight}_quantized")),
            scale: self.names.fresh(&format!("{weight}_scale")),
            zero_point: self.names.fresh(&format!("{weight}_zero_point")),
        };
        let QuantizedInitializers { mut values, mut scale, mut zero_point } = quantized;
        values.name = Some(names.values.clone());
        scale.name = Some(names.scale.clone());
        zero_point.name = Some(names.zero_point.clone());
        self.initializers.extend([values, scale, zero_point]);

        self.weights.insert(key, names.clone());
        Ok(names)
    }

    /// The 8-bit form of an activation: the value that replaced it when it exists only in
    /// 8-bit, else its `DynamicQuantizeLinear`, which is added to `nodes` on first use.
    fn activation(&mut self, activation: &str, nodes: &mut Vec<NodeProto>) -> QuantizedNames {
        if let Some(names) = self.integer_only.get(activation) {
            return names.clone();
        }
        if let Some(names) = self.activations.get(activation) {
            return names.clone();
        }

        let names = QuantizedNames {
            values: self.names.fresh(&format!("{activation}_quantized")),
            scale: self.names.fresh(&format!("{activation}_scale")),
            zero_point: self.names.fresh(&format!("{activation}_zero_point")),
        };
        nodes.push(ir::make_node(
            "DynamicQuantizeLinear",
            &[activation],
            &[&names.values, &names.scale, &names.zero_point],
            &self.names.fresh(&format!("{activation}_QuantizeLinear")),
        ));
        self.activations.insert(activation.to_string(), names.clone());
        names
    }

    /// Appends `nodes`, each preceded by the `DequantizeLinear` of any 8-bit-only value it
    /// reads in float, here or in a subgraph, that is not back in float yet.
    fn emit(&mut self, nodes: Vec<NodeProto>) {
        for node in nodes {
            // Sorted, so that the new nodes come in the same order on every run.
            let mut read: Vec<String> = {
                let mut read = HashSet::new();
                ir::collect_reads(&node, &mut read);
                read.into_iter().collect()
            };
            read.sort();

            for value in &read {
                self.dequantize(value);
            }
            self.nodes.push(node);
        }
    }

    /// Adds the `DequantizeLinear` that brings `value` back to float, if it exists only in
    /// 8-bit and no earlier one did.
    fn dequantize(&mut self, value: &str) {
        let Some(quantized) = self.integer_only.get(value) else { return };
        if !self.dequantized.insert(value.to_string()) {
            return;
        }

        let node = ir::make_node(
            "DequantizeLinear",
            &[&quantized.values, &quantized.scale, &quantized.zero_point],
            &[value],
            &self.names.fresh(&format!("{value}_DequantizeLinear")),
        );
        self.nodes.push(node);
    }
}

fn quantize_graph(
    graph: &mut GraphProto,
    config: &QuantizeDynamicConfig,
) -> Result<Summary, PassError> {
    warn_unknown_exclusions(graph, config);

    let mut rewriter = Rewriter::new(graph, config);
    let mut quantized: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = Vec::new();

    // TODO: Nodes inside subgraphs (If, Loop, Scan bodies) are not quantized; models that
    // keep their MatMuls in a Loop body stay float there.
    for (index, node) in graph.node.iter().enumerate() {
        let label = node_label(node, index);
        let rewrite = if is_candidate(node, config) {
            rewrite_node(node, &mut rewriter)
        } else {
            Ok(Rewrite::Untouched)
        };

        match rewrite {
            Ok(Rewrite::Quantized(nodes)) => {
                debug!(node = %label, op = node.op_type(), "quantized");
                *quantized.entry(node.op_type().to_string()).or_default() += 1;
                rewriter.emit(nodes);
            }
            Ok(Rewrite::Untouched) => rewriter.emit(vec![node.clone()]),
            Err(reason) => {
                debug!(node = %label, op = node.op_type(), "left in float: {reason}");
                skipped.push((label, reason));
                rewriter.emit(vec![node.clone()]);
            }
        }
    }
    for output in &graph.output {
        rewriter.dequantize(output.name());
    }

    if quantized.is_empty() {
        return Err(nothing_quantized(graph, config, &skipped));
    }

    let Rewriter {
        nodes,
        mut initializers,
        replaced_weights,
        integer_only,
        dequantized,
        uses_ms_domain,
        ..
    } = rewriter;
    graph.node = nodes;

    let mut read: HashSet<String> = graph.output.iter().map(|v| v.name().to_string()).collect();
    for node in &graph.node {
        ir::collect_reads(node, &mut read);
    }

    // A weight quantized for a node that then stayed in float is read by nothing, and so
    // is a float weight that every reader now reads quantized.
    initializers.retain(|t| read.contains(t.name()));
    graph.initializer.append(&mut initializers);
    let unused = |name: &str| replaced_weights.contains(name) && !read.contains(name);
    graph.initializer.retain(|t| !unused(t.name()));

    // A value left only in 8-bit form has no float value info any more.
    let gone = |name: &str| integer_only.contains_key(name) && !dequantized.contains(name);
    graph.value_info.retain(|v| !unused(v.name()) && !gone(v.name()));

    Ok(Summary { quantized, skipped, uses_ms_domain })
}

/// The rewrite for `node`, which is of a type in `op_types`, or why it stays in float.
fn rewrite_node(node: &NodeProto, rewriter: &mut Rewriter<'_>) -> Result<Rewrite, Skip> {
    if rewriter.config.nodes_to_exclude.iter().any(|name| name == node.name()) {
        return Err("excluded by `nodes_to_exclude`".into());
    }

    match node.op_type() {
        "MatMul" | "Gemm" | "Conv" => linear::rewrite(node, rewriter).map(Rewrite::Quantized),
        "Gather" => gather::rewrite_gather(node, rewriter),
        "Transpose" => Ok(gather::rewrite_transpose(node, rewriter)),
        "LSTM" => recurrent::rewrite(node, rewriter).map(Rewrite::Quantized),
        "Attention" => attention::rewrite(node, rewriter).map(Rewrite::Quantized),
        "EmbedLayerNormalization" => embed::rewrite(node, rewriter).map(Rewrite::Quantized),
        other => Err(format!("{other} is not quantized by this pass")),
    }
}

fn warn_unknown_exclusions(graph: &GraphProto, config: &QuantizeDynamicConfig) {
    let node_names: HashSet<&str> = graph.node.iter().map(|n| n.name()).collect();
    for name in &config.nodes_to_exclude {
        if !node_names.contains(name.as_str()) {
            warn!("`nodes_to_exclude` names `{name}`, which is no node of the main graph");
        }
    }
}

/// Whether the node is of a type in `op_types`, in the domain this pass expects for it.
fn is_candidate(node: &NodeProto, config: &QuantizeDynamicConfig) -> bool {
    let domain_fits = match node.op_type() {
        "Attention" | "EmbedLayerNormalization" => node.domain() == MS_DOMAIN,
        _ => matches!(node.domain(), "" | "ai.onnx"),
    };
    domain_fits && config.op_types.iter().any(|op| op == node.op_type())
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
        "no node was quantized: the graph has {} nodes, {} of them quantizable in principle \
         (op types {})",
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
    let op_types: Vec<&str> = config.op_types.iter().map(String::as_str).collect();
    if let Some(left) = ir::subgraphs_left_alone(graph, &op_types) {
        reason.push_str(&format!("; {left}"));
    }
    PassError::Unchanged { pass: QuantizeDynamic::NAME, reason }
}

/// The weight's initializer, when it is a constant float32 tensor.
fn check_weight<'g>(graph: &'g GraphProto, weight: &str) -> Result<&'g TensorProto, Skip> {
    let Some(tensor) = ir::initializer(graph, weight) else {
        let producer = graph.node.iter().find(|n| n.output.iter().any(|o| o == weight));
        return Err(match producer {
            Some(node) => format!(
                "weight `{weight}` is computed by a {} node, not a constant (hint: `fuse` \
                 first folds constant computations such as Cast or Transpose of a weight into \
                 initializers)",
                node.op_type()
            ),
            None => format!("weight `{weight}` is not an initializer"),
        });
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

/// Refuses an activation that is an initializer: it should have been folded away.
fn check_activation(graph: &GraphProto, activation: &str) -> Result<(), Skip> {
    match ir::initializer(graph, activation) {
        Some(_) => {
            Err(format!("its first input `{activation}` is a constant; fold constants first"))
        }
        None => Ok(()),
    }
}

/// A name for new nodes made from `node`: its name, or its op type when it has none.
fn base_name(node: &NodeProto) -> String {
    match node.name() {
        "" => node.op_type().to_string(),
        name => name.to_string(),
    }
}

/// Every name the node reads: its inputs, and every input of a node in its subgraphs.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_quantizes_what_ort_does_by_default() {
        let config: QuantizeDynamicConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, QuantizeDynamicConfig::default());
        assert_eq!(
            config.op_types,
            [
                "MatMul",
                "Gemm",
                "Conv",
                "Gather",
                "Transpose",
                "LSTM",
                "Attention",
                "EmbedLayerNormalization"
            ]
        );
        assert!(!config.per_channel && !config.reduce_range && config.nodes_to_exclude.is_empty());
    }

    #[test]
    fn config_refuses_unknown_fields_and_ops() {
        let err = serde_json::from_str::<QuantizeDynamicConfig>(r#"{"per_chanel": true}"#);
        assert!(err.unwrap_err().to_string().contains("unknown field"));

        let config = QuantizeDynamicConfig { op_types: vec!["Relu".into()], ..Default::default() };
        let err = QuantizeDynamic::from_config(config).unwrap_err().to_string();
        assert!(err.contains("`Relu`") && err.contains("cannot quantize"), "{err}");

        let config = QuantizeDynamicConfig { op_types: vec!["GRU".into()], ..Default::default() };
        let err = QuantizeDynamic::from_config(config).unwrap_err().to_string();
        assert!(err.contains("no dynamically quantized GRU kernel"), "{err}");

        let config = QuantizeDynamicConfig { op_types: vec![], ..Default::default() };
        assert!(QuantizeDynamic::from_config(config).is_err());
    }
}
