//! What every fusion rule works with: a read-only view of the graph (producers, consumers,
//! shapes, constants), a scan that collects non-overlapping rewrites and the reasons a
//! near-match was left alone, and the code that applies a batch of rewrites to the graph.

use std::collections::{HashMap, HashSet};

use ndarray::ArrayD;

use crate::ir::proto::{GraphProto, NodeProto, TensorProto};
use crate::ir::shapes::{constant_value, Shapes};
use crate::ir::{self, GraphIndex, NameGenerator};

/// What the rules may assume of the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The runtime is ONNX Runtime, so `com.microsoft` operators may be written.
    pub contrib_ops: bool,
    /// The model's opset of the default domain.
    pub opset: i64,
}

/// The graph as it is before a scan, with its index and shapes.
pub(crate) struct View<'g> {
    pub graph: &'g GraphProto,
    pub index: GraphIndex,
    pub shapes: Shapes,
    pub target: Target,
    outputs: HashSet<&'g str>,
    inputs: HashSet<&'g str>,
    initializers: HashMap<&'g str, &'g TensorProto>,
}

impl<'g> View<'g> {
    pub(crate) fn new(graph: &'g GraphProto, target: Target) -> Self {
        View {
            graph,
            index: GraphIndex::new(graph),
            shapes: Shapes::infer(graph),
            target,
            outputs: graph.output.iter().map(|v| v.name()).collect(),
            inputs: graph.input.iter().map(|v| v.name()).collect(),
            initializers: graph.initializer.iter().map(|t| (t.name(), t)).collect(),
        }
    }

    pub(crate) fn node(&self, index: usize) -> &'g NodeProto {
        &self.graph.node[index]
    }

    /// The node that writes `value`, with its index.
    pub(crate) fn producer(&self, value: &str) -> Option<(usize, &'g NodeProto)> {
        self.index.producer(value).map(|i| (i, &self.graph.node[i]))
    }

    /// The producer of `value` when it is of type `op_type` in the default domain.
    pub(crate) fn producer_of_type(
        &self,
        value: &str,
        op_type: &str,
    ) -> Option<(usize, &'g NodeProto)> {
        self.producer(value).filter(|(_, node)| is_op(node, op_type))
    }

    pub(crate) fn consumers(&self, value: &str) -> &[usize] {
        self.index.consumers(value)
    }

    pub(crate) fn is_graph_output(&self, value: &str) -> bool {
        self.outputs.contains(value)
    }

    /// Whether `value` is a graph input (initializers listed as inputs included).
    pub(crate) fn is_graph_input(&self, value: &str) -> bool {
        self.inputs.contains(value)
    }

    /// Whether `value` is read by exactly one node, directly, and is no graph output: the
    /// value a fusion may make disappear.
    pub(crate) fn only_read_by(&self, value: &str, reader: usize) -> bool {
        self.consumers(value) == [reader]
            && !self.is_graph_output(value)
            && self.graph.node[reader].input.iter().any(|i| i == value)
    }

    /// The constant tensor `value` holds: an initializer that is no graph input (those can
    /// be fed), or the output of a Constant node.
    pub(crate) fn constant(&self, value: &str) -> Option<TensorProto> {
        if let Some(tensor) = self.initializers.get(value) {
            return (!self.inputs.contains(value)).then(|| (*tensor).clone());
        }
        let (_, node) = self.producer_of_type(value, "Constant")?;
        constant_value(node)
    }

    /// The constant `value` as float32 values.
    pub(crate) fn constant_f32(&self, value: &str) -> Option<ArrayD<f32>> {
        ir::tensor_to_f32(&self.constant(value)?).ok()
    }

    /// The constant `value` when it holds one float32 value, of any rank.
    pub(crate) fn scalar_f32(&self, value: &str) -> Option<f32> {
        let values = self.constant_f32(value)?;
        (values.len() == 1).then(|| values.iter().copied().next()).flatten()
    }

    /// The constant `value` as integers.
    pub(crate) fn constant_i64(&self, value: &str) -> Option<ArrayD<i64>> {
        ir::tensor_to_i64(&self.constant(value)?).ok()
    }
}

/// Whether `node` is of type `op_type` in the default domain.
pub(crate) fn is_op(node: &NodeProto, op_type: &str) -> bool {
    node.op_type() == op_type && matches!(node.domain(), "" | "ai.onnx")
}

/// One rewrite: nodes removed, nodes and initializers added, values renamed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rewrite {
    /// The nodes that go, by index in the scanned graph.
    pub remove: Vec<usize>,
    /// The nodes that come, placed where the last removed node was.
    pub add: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    /// Every reader of the first value reads the second instead.
    pub renames: Vec<(String, String)>,
}

/// One pass of one rule over the graph: the rewrites it found, none touching another, and
/// the near-matches it left alone with the reason.
pub(crate) struct Scan<'v, 'g> {
    pub view: &'v View<'g>,
    pub names: &'v mut NameGenerator,
    rewrites: Vec<Rewrite>,
    touched: HashSet<usize>,
    pub skipped: Vec<(String, String)>,
}

impl<'v, 'g> Scan<'v, 'g> {
    pub(crate) fn new(view: &'v View<'g>, names: &'v mut NameGenerator) -> Self {
        Scan { view, names, rewrites: Vec::new(), touched: HashSet::new(), skipped: Vec::new() }
    }

    /// Whether node `index` is free: no rewrite of this scan touches it or a neighbour.
    pub(crate) fn is_free(&self, index: usize) -> bool {
        !self.touched.contains(&index)
    }

    /// Takes `rewrite` unless it touches a node an earlier rewrite of this scan touches;
    /// the node then waits for the next scan.
    pub(crate) fn offer(&mut self, rewrite: Rewrite) -> bool {
        let view = self.view;
        let mut touched: HashSet<usize> = rewrite.remove.iter().copied().collect();
        for &index in &rewrite.remove {
            let node = view.node(index);
            touched.extend(node.input.iter().filter_map(|i| view.index.producer(i)));
            for output in &node.output {
                touched.extend(view.consumers(output).iter().copied());
            }
        }
        for (from, _) in &rewrite.renames {
            touched.extend(view.consumers(from).iter().copied());
            touched.extend(view.index.producer(from));
        }
        if touched.iter().any(|i| self.touched.contains(i)) {
            return false;
        }
        self.touched.extend(touched);
        self.rewrites.push(rewrite);
        true
    }

    /// Records why node `index` was left alone.
    pub(crate) fn skip(&mut self, index: usize, reason: impl Into<String>) {
        let node = self.view.node(index);
        let label = match node.name() {
            "" => format!("#{index} ({})", node.op_type()),
            name => name.to_string(),
        };
        self.skipped.push((label, reason.into()));
    }

    /// A fresh name built on `base`.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        self.names.fresh(base)
    }

    pub(crate) fn into_rewrites(self) -> (Vec<Rewrite>, Vec<(String, String)>) {
        (self.rewrites, self.skipped)
    }
}

/// Applies `rewrites` (from one scan of `graph`) and puts the nodes back in order.
///
/// A renamed value that is a graph output keeps its name, since callers read outputs by
/// name: the value it is renamed to takes the output's name instead, everywhere, or, when
/// that value is a graph input or output itself, an Identity passes it on under the name.
pub(crate) fn apply(graph: &mut GraphProto, rewrites: Vec<Rewrite>) -> Result<(), ir::IrError> {
    let mut removed: HashSet<usize> = HashSet::new();
    let mut placed: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut renames: HashMap<String, String> = HashMap::new();
    for rewrite in rewrites {
        let anchor = rewrite.remove.iter().copied().max().unwrap_or(graph.node.len());
        removed.extend(&rewrite.remove);
        placed.entry(anchor).or_default().extend(rewrite.add);
        graph.initializer.extend(rewrite.initializers);
        renames.extend(rewrite.renames);
    }

    let old = std::mem::take(&mut graph.node);
    let count = old.len();
    for (index, node) in old.into_iter().enumerate() {
        if !removed.contains(&index) {
            graph.node.push(node);
        }
        if let Some(added) = placed.remove(&index) {
            graph.node.extend(added);
        }
    }
    if let Some(added) = placed.remove(&count) {
        graph.node.extend(added);
    }

    if !renames.is_empty() {
        let resolve = |name: &str| {
            let mut current = name.to_string();
            let mut steps = 0;
            while let Some(next) = renames.get(&current) {
                current = next.clone();
                steps += 1;
                if steps > renames.len() {
                    break;
                }
            }
            current
        };
        for node in &mut graph.node {
            rename_reads(node, &resolve);
        }
        keep_output_names(graph, &renames, &resolve);
    }

    let order = ir::topological_order(graph)?;
    let mut nodes: Vec<Option<NodeProto>> =
        std::mem::take(&mut graph.node).into_iter().map(Some).collect();
    graph.node = order.into_iter().filter_map(|i| nodes[i].take()).collect();
    Ok(())
}

/// Gives each renamed graph output's name to the value it was renamed to (see [`apply`]).
fn keep_output_names(
    graph: &mut GraphProto,
    renames: &HashMap<String, String>,
    resolve: &dyn Fn(&str) -> String,
) {
    let outputs: Vec<String> = graph.output.iter().map(|v| v.name().to_string()).collect();
    let inputs: HashSet<String> = graph.input.iter().map(|v| v.name().to_string()).collect();
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut identities = Vec::new();
    for output in outputs.iter().filter(|o| renames.contains_key(o.as_str())) {
        let value = resolve(output);
        if let Some(named) = taken.get(&value) {
            identities.push(ir::make_node("Identity", &[named], &[output], ""));
        } else if inputs.contains(&value) || outputs.contains(&value) {
            identities.push(ir::make_node("Identity", &[&value], &[output], ""));
        } else {
            taken.insert(value, output.clone());
        }
    }

    if !taken.is_empty() {
        let resolve_taken =
            |name: &str| taken.get(name).cloned().unwrap_or_else(|| name.to_string());
        for node in &mut graph.node {
            rename_reads(node, &resolve_taken);
            for output in node.output.iter_mut() {
                *output = resolve_taken(output);
            }
        }
        for tensor in &mut graph.initializer {
            tensor.name = Some(resolve_taken(tensor.name()));
        }
        graph.value_info.retain(|v| !taken.contains_key(v.name()));
    }
    graph.node.extend(identities);
}

/// Renames what `node` reads, in its inputs and in its subgraphs (except values a subgraph
/// defines itself).
fn rename_reads(node: &mut NodeProto, resolve: &dyn Fn(&str) -> String) {
    for input in node.input.iter_mut().filter(|i| !i.is_empty()) {
        *input = resolve(input);
    }
    for attribute in &mut node.attribute {
        for subgraph in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
            let mut defined: HashSet<String> = HashSet::new();
            defined.extend(subgraph.input.iter().map(|v| v.name().to_string()));
            defined.extend(subgraph.initializer.iter().map(|t| t.name().to_string()));
            defined.extend(subgraph.node.iter().flat_map(|n| n.output.iter().cloned()));
            let inner = |name: &str| {
                if defined.contains(name) {
                    name.to_string()
                } else {
                    resolve(name)
                }
            };
            for inner_node in &mut subgraph.node {
                rename_reads(inner_node, &inner);
            }
            for output in &mut subgraph.output {
                let name = output.name().to_string();
                output.name = Some(inner(&name));
            }
        }
    }
}

/// The permutation of Transpose(`second`) after Transpose(`first`): output axis i is input
/// axis `first[second[i]]`. `None` when `second` names an axis `first` does not have.
pub(crate) fn compose_perms(first: &[i64], second: &[i64]) -> Option<Vec<i64>> {
    second.iter().map(|&p| first.get(usize::try_from(p).ok()?).copied()).collect()
}

/// A node for messages: its type and name, or its type and index when it has no name.
pub(crate) fn node_label(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("{} #{index}", node.op_type()),
        name => format!("{} `{name}`", node.op_type()),
    }
}

/// A node of the default domain, or of `domain`.
pub(crate) fn node_in(
    domain: Option<&str>,
    op_type: &str,
    inputs: &[&str],
    outputs: &[&str],
    name: &str,
) -> NodeProto {
    let mut node = ir::make_node(op_type, inputs, outputs, name);
    node.domain = domain.map(str::to_string);
    node
}
