//! Writes static quantization in the QOperator format, as ONNX Runtime's quantizer does in its
//! QLinearOps mode: each selected node becomes an integer operator that reads and writes 8-bit
//! values (QLinearConv, QLinearMatMul, and `com.microsoft` QGemm, QLinearAdd, QLinearMul,
//! QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool, QLinearLeakyRelu,
//! QLinearSigmoid, QLinearSoftmax), and data-movement operators (Reshape, Transpose, Squeeze,
//! Unsqueeze, Flatten, MaxPool, Resize, Split, Pad, Gather, ArgMax) run on the 8-bit values
//! with their input's parameters. A float value enters through one QuantizeLinear; a node left
//! in float, and every graph output, reads an 8-bit-only value through one DequantizeLinear.
//!
//! Nodes are visited in graph order, as ORT visits them, and new values are named as ORT names
//! them (`x_quantized`, `x_scale`, `x_zero_point`, `x_QuantizeLinear`, `y_DequantizeLinear`,
//! `conv1_quant`), with a numeric suffix where a name is taken. Given the same ranges, every
//! scale, zero point and quantized value equals ORT's bit for bit, with these exceptions, each
//! where ORT's model computes something other than the float model:
//! - ORT drops a Relu or Clip whenever its input is quantized, also when that input's
//!   parameters keep values the Relu would cut (the input has other readers, or shares another
//!   value's parameters); here it is dropped only when they already clip as it does, and it
//!   runs in float otherwise.
//! - ORT's Where can read a value that no longer exists in float; here Where reads it back
//!   through a DequantizeLinear.
//! - ORT quantizes a Gemm's bias at `input scale x weight scale x beta`, which QGemm reads
//!   right only when `alpha` and `beta` are 1; here the bias is quantized so that QGemm adds
//!   `beta x C`.
//! - ORT keeps one quantized form of each initializer, the first node's, and gives it to every
//!   other reader (a per-channel weight to a per-tensor input, a bias at another node's
//!   scale); here each form is stored once, under its own name. A node left in float reads the
//!   float initializer, where ORT's reads a DequantizeLinear that has the initializer's name.
//! - ORT widens the scale of a weight that is no initializer for an int32 bias without
//!   requantizing the weight; here such a weight keeps its scale.

mod rules;

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::debug;

use super::super::calibrate::TensorRange;
use super::super::params::{QuantParams, QuantType};
use super::ops::qoperator_rule;
use super::plan::{adjust_ranges, count_readers, Settings};
use super::qdq::{drop_stale_value_info, drop_unread_initializers};
use super::types::ElemTypes;
use super::values::{
    activation_params, float_tensor, initializer_params, integer_tensor, quantize, TensorParams,
};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use crate::ir::{self, NameGenerator};

/// The domain of ONNX Runtime's contrib operators.
const MS_DOMAIN: &str = "com.microsoft";

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Nodes rewritten to integer operators or run on 8-bit values, by operator type.
    pub quantized: BTreeMap<String, usize>,
    /// Relu and Clip nodes dropped because their input's quantization clips as they do.
    pub folded: usize,
    /// Selected nodes left in float: no QOperator form, or nothing to quantize them with.
    pub left_in_float: BTreeMap<String, usize>,
    /// Whether the graph now holds `com.microsoft` operators.
    pub uses_ms_domain: bool,
}

/// The 8-bit form of a value: its name, the names of its scale and zero point, and their
/// numbers.
#[derive(Clone, Debug)]
struct Quantized {
    values: String,
    scale: String,
    zero_point: String,
    params: TensorParams,
}

impl Quantized {
    /// The value, scale and zero point, as integer operators take them.
    fn triple(&self) -> [String; 3] {
        [self.values.clone(), self.scale.clone(), self.zero_point.clone()]
    }
}

/// How a node quantizes one of its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// As an activation: a float initializer is stored with the activation type, per tensor.
    Activation,
    /// As a weight: a float initializer is stored with `qtype`, per channel along `axis`.
    Weight { qtype: QuantType, axis: Option<usize> },
}

/// The state of one walk over the graph.
struct Writer<'g> {
    settings: &'g Settings,
    types: ElemTypes,
    ranges: BTreeMap<String, TensorRange>,
    initializers: HashMap<&'g str, &'g TensorProto>,
    names: NameGenerator,
    nodes: Vec<NodeProto>,
    new_initializers: Vec<TensorProto>,
    /// Values (not initializers) quantized so far, by their float name.
    quantized: HashMap<String, Quantized>,
    /// Quantized initializers, by float name and parameters, so each form is stored once.
    forms: HashMap<(String, String), Quantized>,
    /// Int32 biases, by float name and scales.
    biases: HashMap<(String, Vec<u32>), String>,
    /// The scale and zero point initializers written for each activation, by its name.
    activation_params: HashMap<String, (String, String)>,
    /// Values that exist in float: graph inputs and the outputs of the nodes written so far.
    produced: HashSet<String>,
    written: Written,
}

/// Rewrites `graph` in the QOperator format with the calibrated `ranges`. Fails when a range
/// is not finite or a weight or bias cannot be quantized.
pub(crate) fn write_qoperator(
    mut graph: GraphProto,
    ranges: &BTreeMap<String, TensorRange>,
    settings: &Settings,
) -> Result<(GraphProto, Written), String> {
    let order = ir::topological_order(&graph).map_err(|e| e.to_string())?;
    let mut nodes: Vec<Option<NodeProto>> =
        std::mem::take(&mut graph.node).into_iter().map(Some).collect();
    graph.node = order.into_iter().filter_map(|i| nodes[i].take()).collect();

    let mut adjusted = ranges.clone();
    adjust_ranges(&graph, &mut adjusted, &count_readers(&graph), settings);
    let types = ElemTypes::infer(&graph);
    let names = NameGenerator::new(&graph);
    let source_nodes = std::mem::take(&mut graph.node);

    let mut writer = Writer {
        settings,
        types,
        ranges: adjusted,
        initializers: graph.initializer.iter().map(|t| (t.name(), t)).collect(),
        names,
        nodes: Vec::with_capacity(source_nodes.len()),
        new_initializers: Vec::new(),
        quantized: HashMap::new(),
        forms: HashMap::new(),
        biases: HashMap::new(),
        activation_params: HashMap::new(),
        produced: HashSet::new(),
        written: Written::default(),
    };
    let inputs = graph.input.iter().map(|v| v.name());
    let fed = inputs.filter(|name| !writer.initializers.contains_key(name));
    writer.produced = fed.map(str::to_string).collect();

    for node in &source_nodes {
        let rule = qoperator_rule(node.op_type()).filter(|_| is_default_domain(node));
        let rewritten = match rule {
            Some(rule) if settings.selects(node) => writer.rewrite(node, rule)?,
            _ => false,
        };
        if rewritten {
            *writer.written.quantized.entry(node.op_type().to_string()).or_default() += 1;
            continue;
        }
        if settings.selects(node) {
            debug!(node = node.name(), op = node.op_type(), "left in float");
            *writer.written.left_in_float.entry(node.op_type().to_string()).or_default() += 1;
        }
        writer.keep_float(node.clone());
    }
    for output in &graph.output {
        writer.dequantize(output.name());
    }

    let Writer { nodes, new_initializers, mut written, .. } = writer;
    written.uses_ms_domain = nodes.iter().any(|n| n.domain() == MS_DOMAIN);
    graph.node = nodes;
    graph.initializer.extend(new_initializers);
    drop_unread_initializers(&mut graph);
    drop_stale_value_info(&mut graph);
    Ok((graph, written))
}

fn is_default_domain(node: &NodeProto) -> bool {
    matches!(node.domain(), "" | "ai.onnx")
}

impl Writer<'_> {
    /// Whether the value is float32: a float32 initializer, or a value known to be float32.
    fn is_float(&self, name: &str) -> bool {
        match self.initializers.get(name) {
            Some(tensor) => tensor.data_type() == DataType::Float as i32,
            None => self.types.is_float(name),
        }
    }

    /// Whether input `name` can be given in 8 bits: quantized already, a float initializer,
    /// or a float value with a calibrated range.
    fn can_quantize(&self, name: &str) -> bool {
        self.quantized.contains_key(name)
            || self.is_float(name) && (self.initializers.contains_key(name) || self.has_range(name))
    }

    fn has_range(&self, name: &str) -> bool {
        self.ranges.contains_key(name) && self.types.is_float(name)
    }

    /// The parameters of the activation `name`, from its calibrated range.
    fn range_params(&self, name: &str) -> Result<TensorParams, String> {
        let range = self.ranges.get(name).copied().ok_or_else(|| {
            format!("tensor `{name}` has no calibrated range; hint: calibrate it")
        })?;
        let qtype = self.settings.activation_type;
        let params = activation_params(name, range, qtype, self.settings.activation_symmetric)?;
        Ok(TensorParams::single(qtype, params))
    }

    /// The scale and zero point initializers of activation `name` with `params`, written on
    /// first use.
    fn activation_names(&mut self, name: &str, params: &TensorParams) -> (String, String) {
        if let Some(names) = self.activation_params.get(name) {
            return names.clone();
        }
        let scale = self.names.fresh(&format!("{name}_scale"));
        let zero_point = self.names.fresh(&format!("{name}_zero_point"));
        self.new_initializers.push(float_tensor(&scale, &[], &params.scales));
        self.new_initializers.push(integer_tensor(
            &zero_point,
            params.qtype,
            &[],
            params.zero_points.iter().copied(),
        ));
        self.activation_params.insert(name.to_string(), (scale.clone(), zero_point.clone()));
        (scale, zero_point)
    }

    /// The quantized form of the output `name` of a rewritten node, with `fixed` parameters
    /// or those of its calibrated range, under the name `{name}{suffix}`.
    fn output(
        &mut self,
        name: &str,
        fixed: Option<QuantParams>,
        suffix: &str,
    ) -> Result<Quantized, String> {
        let params = match fixed {
            Some(params) => TensorParams::single(self.settings.activation_type, params),
            None => self.range_params(name)?,
        };
        let (scale, zero_point) = self.activation_names(name, &params);
        let values = self.names.fresh(&format!("{name}{suffix}"));
        let quantized = Quantized { values, scale, zero_point, params };
        self.quantized.insert(name.to_string(), quantized.clone());
        Ok(quantized)
    }

    /// An output that reuses the parameters of `from`.
    fn shared_output(&mut self, name: &str, from: &Quantized, suffix: &str) -> Quantized {
        let values = self.names.fresh(&format!("{name}{suffix}"));
        let quantized = Quantized { values, ..from.clone() };
        self.quantized.insert(name.to_string(), quantized.clone());
        quantized
    }

    /// The 8-bit form of input `name` used as `usage`: the form it has already, an
    /// initializer stored quantized, or a new QuantizeLinear (added to `pending`). The caller
    /// checks [`Writer::can_quantize`] first.
    fn input(
        &mut self,
        name: &str,
        usage: Use,
        pending: &mut Vec<NodeProto>,
    ) -> Result<Quantized, String> {
        if let Some(quantized) = self.quantized.get(name) {
            return Ok(quantized.clone());
        }
        if let Some(&tensor) = self.initializers.get(name) {
            let params = self.initializer_params(tensor, usage)?;
            return self.store_initializer(tensor, params);
        }

        let params = self.range_params(name)?;
        let (scale, zero_point) = self.activation_names(name, &params);
        let values = self.names.fresh(&format!("{name}_quantized"));
        let node_name = self.names.fresh(&format!("{name}_QuantizeLinear"));
        pending.push(ir::make_node(
            "QuantizeLinear",
            &[name, &scale, &zero_point],
            &[&values],
            &node_name,
        ));
        let quantized = Quantized { values, scale, zero_point, params };
        self.quantized.insert(name.to_string(), quantized.clone());
        Ok(quantized)
    }

    /// The parameters of a float initializer used as `usage`, with ORT's symmetry rule: the
    /// weight type's symmetry for tensors of the weight type (and every per-channel tensor),
    /// the activations' otherwise.
    fn initializer_params(&self, tensor: &TensorProto, usage: Use) -> Result<TensorParams, String> {
        let settings = self.settings;
        let (qtype, axis, reduce_range) = match usage {
            Use::Activation => (settings.activation_type, None, false),
            Use::Weight { qtype, axis } => (qtype, axis, settings.reduce_range),
        };
        let symmetric = if axis.is_some() || qtype == settings.weight_type {
            settings.weight_symmetric_asked.unwrap_or(qtype.is_signed())
        } else {
            settings.activation_symmetric
        };
        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        initializer_params(tensor.name(), data.view(), qtype, axis, symmetric, reduce_range)
    }

    /// The initializer stored with `params`, once for each form.
    fn store_initializer(
        &mut self,
        tensor: &TensorProto,
        params: TensorParams,
    ) -> Result<Quantized, String> {
        let name = tensor.name();
        let key = (name.to_string(), format!("{params:?}"));
        if let Some(quantized) = self.forms.get(&key) {
            return Ok(quantized.clone());
        }

        let data = ir::tensor_to_f32(tensor).map_err(|e| e.to_string())?;
        let values = self.names.fresh(&format!("{name}_quantized"));
        let scale = self.names.fresh(&format!("{name}_scale"));
        let zero_point = self.names.fresh(&format!("{name}_zero_point"));
        let dims: Vec<i64> = match params.axis {
            Some(_) => vec![params.scales.len() as i64],
            None => vec![],
        };
        let codes = quantize(data.view(), &params);
        self.new_initializers.push(float_tensor(&scale, &dims, &params.scales));
        self.new_initializers.push(integer_tensor(
            &zero_point,
            params.qtype,
            &dims,
            params.zero_points.iter().copied(),
        ));
        self.new_initializers.push(integer_tensor(
            &values,
            params.qtype,
            &tensor.dims,
            codes.iter().copied(),
        ));

        let quantized = Quantized { values, scale, zero_point, params };
        self.forms.insert(key, quantized.clone());
        Ok(quantized)
    }

    /// Appends `node` in float, after a DequantizeLinear for each 8-bit-only value it reads,
    /// in its inputs or in its subgraphs.
    fn keep_float(&mut self, node: NodeProto) {
        let mut reads = HashSet::new();
        ir::collect_reads(&node, &mut reads);
        let mut others: Vec<String> =
            reads.into_iter().filter(|name| !node.input.contains(name)).collect();
        others.sort();
        for name in node.input.iter().chain(&others) {
            self.dequantize(name);
        }
        self.push(node);
    }

    /// Appends the QuantizeLinear nodes a rewrite needed, then the rewritten node.
    fn emit(&mut self, pending: Vec<NodeProto>, node: NodeProto) {
        for quantize in pending {
            self.push(quantize);
        }
        self.push(node);
    }

    fn push(&mut self, node: NodeProto) {
        self.produced.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        self.nodes.push(node);
    }

    /// Adds the DequantizeLinear that gives `value` back in float, if it exists only in 8 bits.
    fn dequantize(&mut self, value: &str) {
        if self.produced.contains(value) {
            return;
        }
        let Some(quantized) = self.quantized.get(value).cloned() else { return };
        let name = self.names.fresh(&format!("{value}_DequantizeLinear"));
        let inputs = [quantized.values.as_str(), &quantized.scale, &quantized.zero_point];
        let mut node = ir::make_node("DequantizeLinear", &inputs, &[value], &name);
        if let Some(axis) = quantized.params.axis {
            node.attribute.push(ir::attr_int("axis", axis as i64));
        }
        self.push(node);
    }

    /// A new node named `{source}_quant` (no name if the source has none) with the source's
    /// attributes plus `extra`, sorted by name as ORT's writer sorts them.
    fn new_node(
        &mut self,
        op_type: &str,
        source: &NodeProto,
        inputs: &[&str],
        outputs: &[&str],
        domain: Option<&str>,
        extra: Vec<AttributeProto>,
    ) -> NodeProto {
        let name = match source.name() {
            "" => String::new(),
            base => self.names.fresh(&format!("{base}_quant")),
        };
        let mut node = ir::make_node(op_type, inputs, outputs, &name);
        node.domain = domain.map(str::to_string);
        node.attribute = source.attribute.iter().cloned().chain(extra).collect();
        node.attribute.sort_by(|a, b| a.name().cmp(b.name()));
        node
    }
}
