//! Which tensors static quantization quantizes and how, decided node by node as ONNX
//! Runtime's QDQ quantizer decides it: each selected node marks its inputs and outputs as
//! activations, weights (with a channel axis) or int32 biases, or makes an output share its
//! input's parameters; a Relu or Clip whose input is quantized is folded into it.
//!
//! The decisions depend on earlier ones (a Reshape's output is quantized only when its input
//! is), so nodes are visited in graph order, as ORT does. The result, a [`Plan`], says what
//! to quantize; [`super::qdq`] writes it out as QuantizeLinear/DequantizeLinear pairs.
//!
//! Where ORT would quantize one initializer two ways (a weight per channel for one node and
//! per tensor for another, a bias shared by two nodes whose input scales differ), the later
//! node gets its own copy of the initializer under a fresh name; ORT does so for biases only.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::debug;

use super::super::calibrate::TensorRange;
use super::super::params::QuantType;
use super::ops::{self, QdqRule};
use super::types::ElemTypes;
use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, NodeProto};
use crate::ir::{self, node_attr_int};
pub(crate) use crate::quantize::filter::NodeFilter;

/// The resolved settings of one static quantization.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub activation_type: QuantType,
    pub weight_type: QuantType,
    pub activation_symmetric: bool,
    /// Whether weights of `weight_type` are symmetric: as asked, or by the type's sign.
    pub weight_symmetric: bool,
    /// `weight_symmetric` as the configuration gives it, for weights of another type.
    pub weight_symmetric_asked: Option<bool>,
    pub per_channel: bool,
    pub reduce_range: bool,
    pub op_types: HashSet<String>,
    pub include: NodeFilter,
    pub exclude: NodeFilter,
    /// The model's opset of the default domain.
    pub opset: i64,
}

impl Settings {
    /// Whether `node` is quantized: its type is in `op_types` (in the operator's domain), it
    /// matches `nodes_to_include` when that is set, and it matches no `nodes_to_exclude`.
    pub(crate) fn selects(&self, node: &NodeProto) -> bool {
        let Some(op) = ops::find(node.op_type()) else { return false };
        self.op_types.contains(node.op_type())
            && ops::domain_matches(op, node.domain())
            && (self.include.is_empty() || self.include.matches(node.name()))
            && !self.exclude.matches(node.name())
    }
}

/// Whether a quantized initializer is a weight (weight type and symmetry) or quantized like
/// an activation (activation type and symmetry). Other tensors are activations either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Activation,
    Weight,
}

/// How one tensor is quantized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub role: Role,
    /// The channel axis of a per-channel weight.
    pub axis: Option<usize>,
    /// The input whose parameters this tensor reuses, and the node that reads that input.
    pub shared_from: Option<(String, usize)>,
}

/// A bias to quantize to int32 at the scale `input scale x weight scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BiasMark {
    /// The index of the node that reads the bias.
    pub node: usize,
    pub input: String,
    pub weight: String,
}

/// What to quantize in a graph.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The graph with folded activations renamed into their producers and duplicated
    /// initializers in place; nodes keep their indices.
    pub graph: GraphProto,
    /// The nodes to remove: Relu and Clip folded into their input's quantization.
    pub removed: HashSet<usize>,
    /// The tensors to quantize, in the order they were marked.
    pub tensors: Vec<(String, Mark)>,
    /// The biases to quantize to int32, in the order they were marked.
    pub biases: Vec<(String, BiasMark)>,
    /// The calibrated ranges, adjusted as ORT adjusts them (a folded Relu's input takes its
    /// output's range, Softmax outputs are `[0, 1]`).
    pub ranges: BTreeMap<String, TensorRange>,
    /// How many nodes were selected for quantization.
    pub selected: usize,
}

/// A map that keeps the order keys were first inserted in, as Python's `dict` does.
#[derive(Clone, Debug)]
struct Ordered<V> {
    entries: Vec<Option<(String, V)>>,
    positions: HashMap<String, usize>,
}

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered { entries: Vec::new(), positions: HashMap::new() }
    }
}

impl<V> Ordered<V> {
    fn contains(&self, key: &str) -> bool {
        self.positions.contains_key(key)
    }

    /// Sets the value; a new key goes last, an existing one keeps its place.
    fn insert(&mut self, key: &str, value: V) {
        match self.positions.get(key) {
            Some(&position) => self.entries[position] = Some((key.to_string(), value)),
            None => {
                self.positions.insert(key.to_string(), self.entries.len());
                self.entries.push(Some((key.to_string(), value)));
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(position) = self.positions.remove(key) {
            self.entries[position] = None;
        }
    }

    fn into_vec(self) -> Vec<(String, V)> {
        self.entries.into_iter().flatten().collect()
    }
}

/// How an initializer has been claimed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    Tensor(Role, Option<usize>),
    Bias,
}

struct Planner<'s> {
    graph: GraphProto,
    settings: &'s Settings,
    types: ElemTypes,
    ranges: BTreeMap<String, TensorRange>,
    tensors: Ordered<Mark>,
    biases: Ordered<BiasMark>,
    claims: HashMap<String, Claim>,
    removed: HashSet<usize>,
    initializers: HashMap<String, i32>,
    graph_inputs: HashSet<String>,
    graph_outputs: HashSet<String>,
    used_names: HashSet<String>,
    /// How many times nodes read each value (see [`Planner::reader_count`]). Folding renames
    /// outputs only, so this changes only when an initializer is copied.
    readers: HashMap<String, usize>,
    /// The values that subgraphs (of If, Loop, Scan) read from this graph. Their reads are
    /// never redirected to a dequantized value, so a Relu they read must stay.
    subgraph_reads: HashSet<String>,
}

/// Decides what to quantize in `graph` given the calibrated `ranges`.
pub(crate) fn plan(
    graph: GraphProto,
    ranges: &BTreeMap<String, TensorRange>,
    settings: &Settings,
) -> Plan {
    let types = ElemTypes::infer(&graph);
    let mut used_names = HashSet::new();
    used_names.extend(graph.node.iter().flat_map(|n| n.input.iter().chain(&n.output)).cloned());
    used_names.extend(graph.initializer.iter().map(|t| t.name().to_string()));
    used_names.extend(graph.input.iter().chain(&graph.output).map(|v| v.name().to_string()));

    let readers = count_readers(&graph);
    let mut planner = Planner {
        readers,
        subgraph_reads: subgraph_reads(&graph),
        initializers: graph
            .initializer
            .iter()
            .map(|t| (t.name().to_string(), t.data_type()))
            .collect(),
        graph_inputs: graph.input.iter().map(|v| v.name().to_string()).collect(),
        graph_outputs: graph.output.iter().map(|v| v.name().to_string()).collect(),
        graph,
        settings,
        types,
        ranges: ranges.clone(),
        tensors: Ordered::default(),
        biases: Ordered::default(),
        claims: HashMap::new(),
        removed: HashSet::new(),
        used_names,
    };

    planner.adjust_ranges();
    let mut selected = 0;
    for index in 0..planner.graph.node.len() {
        let node = &planner.graph.node[index];
        if !settings.selects(node) {
            continue;
        }
        selected += 1;
        let Some(op) = ops::find(node.op_type()) else { continue };
        planner.mark_node(index, op.qdq);
    }

    Plan {
        graph: planner.graph,
        removed: planner.removed,
        tensors: planner.tensors.into_vec(),
        biases: planner.biases.into_vec(),
        ranges: planner.ranges,
        selected,
    }
}

/// The values of `graph` that the subgraphs of its nodes read from the outer scope.
fn subgraph_reads(graph: &GraphProto) -> HashSet<String> {
    let index = ir::GraphIndex::new(graph);
    let mut values: HashSet<&str> =
        graph.node.iter().flat_map(|n| n.output.iter()).map(String::as_str).collect();
    values.extend(graph.input.iter().map(|v| v.name()));
    values
        .into_iter()
        .filter(|value| {
            let inputs_of = |n: usize| &graph.node[n].input;
            index.consumers(value).iter().any(|&n| !inputs_of(n).iter().any(|i| i == value))
        })
        .map(str::to_string)
        .collect()
}

/// How many times the nodes of `graph` read each value: every input slot, and once for each
/// node whose subgraphs read it from the outer scope.
pub(crate) fn count_readers(graph: &GraphProto) -> HashMap<String, usize> {
    let mut readers: HashMap<String, usize> = HashMap::new();
    for node in &graph.node {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            *readers.entry(input.clone()).or_default() += 1;
        }
    }

    let index = ir::GraphIndex::new(graph);
    let mut values: HashSet<&str> =
        graph.node.iter().flat_map(|n| n.output.iter()).map(String::as_str).collect();
    values.extend(graph.input.iter().map(|v| v.name()));
    values.extend(graph.initializer.iter().map(|t| t.name()));
    for value in values {
        let through_subgraphs = index
            .consumers(value)
            .iter()
            .filter(|&&n| !graph.node[n].input.iter().any(|i| i == value))
            .count();
        if through_subgraphs > 0 {
            *readers.entry(value.to_string()).or_default() += through_subgraphs;
        }
    }
    readers
}

/// ORT's range adjustments, made before any node is quantized: the input of a selected Relu
/// or Clip read by nothing else takes the output's range, and a selected Softmax's output is
/// `[0, 1]`. `readers` counts the reads of each value ([`count_readers`]).
pub(crate) fn adjust_ranges(
    graph: &GraphProto,
    ranges: &mut BTreeMap<String, TensorRange>,
    readers: &HashMap<String, usize>,
    settings: &Settings,
) {
    for node in graph.node.iter().filter(|node| settings.selects(node)) {
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        match node.op_type() {
            "Relu" | "Clip" if readers.get(input) == Some(&1) => {
                if let (true, Some(&range)) = (ranges.contains_key(input), ranges.get(output)) {
                    ranges.insert(input.clone(), range);
                }
            }
            "Softmax" => {
                ranges.insert(output.clone(), TensorRange { min: 0.0, max: 1.0 });
            }
            _ => {}
        }
    }
}

impl Planner<'_> {
    fn adjust_ranges(&mut self) {
        adjust_ranges(&self.graph, &mut self.ranges, &self.readers, self.settings);
    }

    fn mark_node(&mut self, index: usize, rule: QdqRule) {
        let node = self.graph.node[index].clone();
        let input = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).cloned();
        let output = node.output.first().filter(|n| !n.is_empty()).cloned();

        match rule {
            QdqRule::Conv { weight_axis } => {
                self.mark_input(index, 0, Role::Activation, None);
                self.mark_outputs(&node.output[..1.min(node.output.len())]);
                self.mark_weight(index, 1, weight_axis);
                if node.input.len() == 3 {
                    self.mark_bias(index, 2);
                }
            }
            QdqRule::Gemm => {
                self.mark_input(index, 0, Role::Activation, None);
                self.mark_outputs(&node.output[..1.min(node.output.len())]);
                let trans_b = node_attr_int(&node, "transB").unwrap_or(0) > 0;
                self.mark_weight(index, 1, if trans_b { 0 } else { 1 });
                match input(2) {
                    Some(bias) if self.initializers.contains_key(&bias) => self.mark_bias(index, 2),
                    Some(bias) => debug!(node = node.name(), "Gemm bias `{bias}` is not constant"),
                    None => {}
                }
            }
            QdqRule::MatMul => {
                for slot in 0..node.input.len() {
                    match input(slot) {
                        Some(name) if self.initializers.contains_key(&name) => {
                            self.mark_weight(index, slot, 1)
                        }
                        Some(_) => self.mark_input(index, slot, Role::Activation, None),
                        None => {}
                    }
                }
                self.mark_outputs(&node.output);
            }
            QdqRule::RemovableActivation => {
                let (Some(input), Some(output)) = (input(0), output) else { return };
                if !self.is_marked(&input) {
                    return;
                }
                if !self.settings.activation_symmetric && self.fold_into_producer(&input, &output) {
                    debug!(node = node.name(), "folded into the quantization of its input");
                    self.removed.insert(index);
                } else {
                    self.mark_activation(&input);
                }
                self.mark_activation(&output);
            }
            QdqRule::ShareInput { min_opset } => {
                let (Some(input), Some(output)) = (input(0), output) else { return };
                if self.settings.opset >= min_opset && self.is_marked(&input) {
                    self.mark_shared(&output, &input, index);
                }
            }
            QdqRule::Pad => {
                for slot in 0..node.input.len() {
                    self.mark_input(index, slot, Role::Activation, None);
                }
                let (Some(input), Some(output)) = (input(0), output) else { return };
                if self.pad_keeps_range(&node) {
                    self.mark_shared(&output, &input, index);
                } else {
                    self.mark_activation(&output);
                }
            }
            QdqRule::Split => {
                let Some(input) = input(0) else { return };
                if !self.is_marked(&input) {
                    self.mark_input(index, 0, Role::Activation, None);
                }
                let input = self.graph.node[index].input[0].clone();
                for output in node.output.iter().filter(|o| !o.is_empty()) {
                    self.mark_shared(output, &input, index);
                }
            }
            QdqRule::Gather => {
                let (Some(data), Some(output)) = (input(0), output) else { return };
                if self.initializers.get(&data) == Some(&(DataType::Float as i32)) {
                    self.mark_input(index, 0, Role::Activation, None);
                    let data = self.graph.node[index].input[0].clone();
                    self.mark_shared(&output, &data, index);
                } else if self.is_marked(&data) {
                    self.mark_shared(&output, &data, index);
                }
            }
            QdqRule::Where => {
                let (Some(a), Some(b)) = (input(1), input(2)) else { return };
                if self.is_marked(&a) && self.is_marked(&b) {
                    self.mark_outputs(&node.output);
                }
            }
            QdqRule::Normalization => {
                self.mark_input(index, 0, Role::Activation, None);
                match input(1) {
                    Some(scale) if self.initializers.contains_key(&scale) => {
                        self.mark_weight(index, 1, 1)
                    }
                    Some(_) => self.mark_input(index, 1, Role::Activation, None),
                    None => {}
                }
                if input(2).is_some() {
                    self.mark_bias(index, 2);
                }
                self.mark_outputs(&node.output);
            }
            QdqRule::AllTensors => {
                for slot in 0..node.input.len() {
                    self.mark_input(index, slot, Role::Activation, None);
                }
                self.mark_outputs(&node.output);
            }
        }
    }

    /// Whether the tensor is marked for quantization, as an activation, weight or bias.
    fn is_marked(&self, name: &str) -> bool {
        self.tensors.contains(name) || self.biases.contains(name)
    }

    /// Whether static quantization can quantize the value: a float32 initializer or a value
    /// known to be float32.
    fn is_quantizable(&self, name: &str) -> bool {
        match self.initializers.get(name) {
            Some(&data_type) => data_type == DataType::Float as i32,
            None => self.types.is_float(name),
        }
    }

    fn mark_outputs(&mut self, outputs: &[String]) {
        for output in outputs.iter().filter(|o| !o.is_empty()) {
            self.mark_activation(output);
        }
    }

    /// Marks a value as an activation unless it is marked already.
    fn mark_activation(&mut self, name: &str) {
        if !self.is_quantizable(name) || self.tensors.contains(name) {
            return;
        }
        self.tensors.insert(name, Mark { role: Role::Activation, axis: None, shared_from: None });
    }

    /// Marks `output` to be quantized with the parameters of `input`, read by node `node`.
    fn mark_shared(&mut self, output: &str, input: &str, node: usize) {
        if !self.is_quantizable(output) {
            return;
        }
        let mark = Mark {
            role: Role::Activation,
            axis: None,
            shared_from: Some((input.to_string(), node)),
        };
        self.tensors.insert(output, mark);
    }

    /// Marks input `slot` of node `index` as a weight, per channel along `axis` when
    /// `per_channel` is on and the weight is an initializer with that axis.
    fn mark_weight(&mut self, index: usize, slot: usize, axis: usize) {
        let Some(name) = self.graph.node[index].input.get(slot).cloned() else { return };
        let rank = ir::initializer(&self.graph, &name).map(|t| t.dims.len());
        let per_channel = self.settings.per_channel && rank.is_some_and(|rank| axis < rank);
        if self.settings.per_channel && rank.is_some() && !per_channel {
            debug!(weight = %name, axis, "quantized per tensor: the weight has no such axis");
        }
        self.mark_input(index, slot, Role::Weight, per_channel.then_some(axis));
    }

    /// Marks input `slot` of node `index`. An initializer that another node already claimed
    /// differently gets a copy for this node.
    fn mark_input(&mut self, index: usize, slot: usize, role: Role, axis: Option<usize>) {
        let Some(name) = self.graph.node[index].input.get(slot).filter(|n| !n.is_empty()).cloned()
        else {
            return;
        };
        if !self.initializers.contains_key(&name) {
            if self.is_quantizable(&name) && !self.tensors.contains(&name) {
                self.tensors.insert(&name, Mark { role, axis, shared_from: None });
            }
            return;
        }
        if !self.is_quantizable(&name) {
            return;
        }

        let claim = Claim::Tensor(role, axis);
        let name = match self.claims.get(&name) {
            None => name,
            Some(&existing) if existing == claim => return,
            Some(_) => self.duplicate_initializer(index, &name),
        };
        self.claims.insert(name.clone(), claim);
        self.tensors.insert(&name, Mark { role, axis, shared_from: None });
    }

    /// Marks input `slot` of node `index` as an int32 bias, given a copy of its own when
    /// another node claimed it already.
    fn mark_bias(&mut self, index: usize, slot: usize) {
        let node = &self.graph.node[index];
        let Some(name) = node.input.get(slot).filter(|n| !n.is_empty()).cloned() else { return };
        let (Some(input), Some(weight)) = (node.input.first().cloned(), node.input.get(1).cloned())
        else {
            return;
        };
        match self.initializers.get(&name) {
            Some(&data_type) if data_type == DataType::Float as i32 => {}
            _ => {
                let node = node.name();
                debug!(node, bias = %name, "bias left in float: not a float initializer");
                return;
            }
        }

        let name = match self.claims.contains_key(&name) {
            true => self.duplicate_initializer(index, &name),
            false => name,
        };
        self.claims.insert(name.clone(), Claim::Bias);
        self.biases.insert(&name, BiasMark { node: index, input, weight });
    }

    /// Adds a copy of initializer `name` for node `index` alone and returns its name: `name`
    /// followed by one more than the largest number that follows `name` in an initializer's
    /// name, as ORT names copies, or the next free number after that.
    fn duplicate_initializer(&mut self, index: usize, name: &str) -> String {
        let largest = self
            .graph
            .initializer
            .iter()
            .filter_map(|t| t.name().strip_prefix(name))
            .filter_map(|suffix| suffix.parse::<i64>().ok())
            .max()
            .unwrap_or(-1);
        let mut suffix = largest + 1;
        while self.used_names.contains(&format!("{name}{suffix}")) {
            suffix += 1;
        }
        let copy_name = format!("{name}{suffix}");
        self.used_names.insert(copy_name.clone());

        if let Some(tensor) = ir::initializer(&self.graph, name) {
            let mut copy = tensor.clone();
            copy.name = Some(copy_name.clone());
            self.graph.initializer.push(copy);
        }
        if let Some(&data_type) = self.initializers.get(name) {
            self.initializers.insert(copy_name.clone(), data_type);
        }
        for input in self.graph.node[index].input.iter_mut().filter(|i| *i == name) {
            *input = copy_name.clone();
            *self.readers.entry(name.to_string()).or_default() -= 1;
            *self.readers.entry(copy_name.clone()).or_default() += 1;
        }
        debug!(
            node = self.graph.node[index].name(),
            "copied initializer `{name}` to `{copy_name}`"
        );
        copy_name
    }

    /// Folds a Relu or Clip into the quantization of its input `upstream`: the producer of
    /// `upstream` writes `output` instead. Only when `upstream` is read by nothing else, is
    /// no graph input or output, both have a calibrated range, and no subgraph reads `output`
    /// (it would read the unclipped value: ORT's tool folds it anyway).
    fn fold_into_producer(&mut self, upstream: &str, output: &str) -> bool {
        let foldable = self.ranges.contains_key(output)
            && !self.subgraph_reads.contains(output)
            && self.ranges.contains_key(upstream)
            && self.reader_count(upstream) == 1
            && !self.graph_outputs.contains(upstream)
            && !self.graph_inputs.contains(upstream);
        if !foldable {
            return false;
        }

        for node in &mut self.graph.node {
            for name in node.output.iter_mut().filter(|o| *o == upstream) {
                *name = output.to_string();
            }
        }
        self.tensors.remove(upstream);
        true
    }

    /// How many times nodes read `name`: every input slot that names it, and once for each
    /// node whose subgraphs read it.
    fn reader_count(&self, name: &str) -> usize {
        self.readers.get(name).copied().unwrap_or(0)
    }

    /// Whether a Pad's output stays within its input's range: edge, reflect and wrap repeat
    /// input values, and constant padding with 0 adds a value every range holds.
    fn pad_keeps_range(&self, node: &NodeProto) -> bool {
        let mode = node
            .attribute
            .iter()
            .find(|a| a.name() == "mode" && a.r#type() == AttributeType::String)
            .map_or(b"constant".as_slice(), |a| a.s());
        if matches!(mode, b"reflect" | b"edge" | b"wrap") {
            return true;
        }
        if mode != b"constant" || !node.input.first().is_some_and(|i| self.types.is_float(i)) {
            return false;
        }

        if self.settings.opset < 11 {
            return ir::node_attr_float(node, "value").unwrap_or(0.0) == 0.0;
        }
        match node.input.get(2).filter(|n| !n.is_empty()) {
            None => true,
            Some(value) => ir::initializer(&self.graph, value)
                .and_then(|t| ir::tensor_to_f32(t).ok())
                .is_some_and(|v| v.len() == 1 && v.iter().all(|&x| x == 0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_map_keeps_first_insertion_order() {
        let mut map = Ordered::default();
        map.insert("b", 1);
        map.insert("a", 2);
        map.insert("b", 3);
        map.remove("a");
        map.insert("c", 4);
        map.insert("a", 5);
        let keys: Vec<(String, i32)> = map.into_vec();
        assert_eq!(keys, [("b".to_string(), 3), ("c".into(), 4), ("a".into(), 5)]);
    }
}
