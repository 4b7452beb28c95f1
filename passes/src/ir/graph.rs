//! Graph editing helpers: who produces and consumes a value, node order, fresh names, node
//! replacement, dead code removal, and small constructors for nodes and attributes.
//!
//! A node that holds subgraphs (`If`, `Loop`, `Scan`) counts as a consumer of every outer
//! value its subgraphs read, so a value used only inside a branch is still seen as used.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::ir::IrError;

pub use crate::ir::tensor::{
    tensor_from_f32, tensor_from_i32, tensor_from_i64, tensor_from_i8, tensor_from_u8,
    tensor_to_f32, tensor_to_i64,
};

/// Producers and consumers of the values of one graph, by node index.
#[derive(Debug, Clone, Default)]
pub struct GraphIndex {
    producers: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
}

impl GraphIndex {
    /// Indexes the graph's nodes as they are now; edits to the graph need a new index.
    pub fn new(graph: &GraphProto) -> Self {
        let mut index = Self::default();

        for (position, node) in graph.node.iter().enumerate() {
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                index.producers.entry(output.clone()).or_insert(position);
            }
            for input in node_inputs(node) {
                let consumers = index.consumers.entry(input).or_default();
                if consumers.last() != Some(&position) {
                    consumers.push(position);
                }
            }
        }
        index
    }

    /// The node that produces `value`, or `None` for graph inputs, initializers and values
    /// of an outer scope. If several nodes claim the output, the first one.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.producers.get(value).copied()
    }

    /// The nodes that read `value`, each once, in node order; a node whose subgraphs read
    /// the value counts.
    pub fn consumers(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map_or(&[], Vec::as_slice)
    }
}

/// The values a node reads: its inputs (omitted optional inputs left out) and the outer
/// values its subgraphs read, each once.
pub fn node_inputs(node: &NodeProto) -> Vec<String> {
    let mut outer = Vec::new();
    for attribute in &node.attribute {
        for graph in attribute.g.iter().chain(&attribute.graphs) {
            subgraph_outer_values(graph, &mut outer);
        }
    }

    let mut seen = HashSet::new();
    let direct = node.input.iter().filter(|i| !i.is_empty()).cloned();
    direct.chain(outer).filter(|value| seen.insert(value.clone())).collect()
}

/// Appends the values a subgraph reads without defining them itself, nested subgraphs
/// included.
fn subgraph_outer_values(graph: &GraphProto, outer: &mut Vec<String>) {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(graph.input.iter().map(|v| v.name()));
    defined.extend(graph.initializer.iter().map(|t| t.name()));
    defined.extend(
        graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name()),
    );
    for node in &graph.node {
        defined.extend(node.output.iter().map(String::as_str));
    }

    let mut reads = Vec::new();
    for node in &graph.node {
        reads.extend(node_inputs(node));
    }
    reads.extend(graph.output.iter().map(|v| v.name().to_string()));
    for value in reads {
        if !value.is_empty() && !defined.contains(value.as_str()) && !outer.contains(&value) {
            outer.push(value);
        }
    }
}

/// The initializer named `name`, if the graph has one.
pub fn initializer<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name() == name)
}

/// The node indices in an order where every node comes after the producers of its inputs.
///
/// Nodes already in order keep their order; otherwise the earliest ready node goes first.
/// A cycle is an error that names one node on it.
pub fn topological_order(graph: &GraphProto) -> Result<Vec<usize>, IrError> {
    let index = GraphIndex::new(graph);
    let mut waiting = vec![0usize; graph.node.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    for (position, node) in graph.node.iter().enumerate() {
        for input in node_inputs(node) {
            if let Some(producer) = index.producer(&input) {
                waiting[position] += 1;
                dependents[producer].push(position);
            }
        }
    }

    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..graph.node.len()).filter(|&n| waiting[n] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(Reverse(position)) = ready.pop() {
        order.push(position);
        for &dependent in &dependents[position] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.push(Reverse(dependent));
            }
        }
    }

    if order.len() < graph.node.len() {
        let node = node_on_cycle(graph, &index, &waiting);
        return Err(IrError::Cycle {
            graph: graph.name().to_string(),
            node: describe(graph, node),
        });
    }
    Ok(order)
}

/// A node that lies on a cycle, found by walking back from any unordered node through
/// unordered producers until a node repeats.
fn node_on_cycle(graph: &GraphProto, index: &GraphIndex, waiting: &[usize]) -> usize {
    let mut current = waiting.iter().position(|&w| w > 0).unwrap_or(0);
    let mut visited = HashSet::new();
    while visited.insert(current) {
        let next = node_inputs(&graph.node[current])
            .iter()
            .filter_map(|input| index.producer(input))
            .find(|&producer| waiting[producer] > 0);
        match next {
            Some(producer) => current = producer,
            None => break,
        }
    }
    current
}

/// A node's name for messages: its name, or its op type and position when it has none.
fn describe(graph: &GraphProto, position: usize) -> String {
    let node = &graph.node[position];
    if node.name().is_empty() {
        format!("#{position} ({})", node.op_type())
    } else {
        node.name().to_string()
    }
}

/// Makes names that no node, value or initializer of a graph uses yet.
#[derive(Debug, Clone, Default)]
pub struct NameGenerator {
    used: HashSet<String>,
    next_suffix: HashMap<String, usize>,
}

impl NameGenerator {
    /// Collects every name in the graph and its subgraphs: nodes, node inputs and outputs,
    /// graph inputs, outputs and value infos, initializers.
    pub fn new(graph: &GraphProto) -> Self {
        let mut generator = Self::default();
        generator.collect(graph);
        generator
    }

    fn collect(&mut self, graph: &GraphProto) {
        let values = graph.input.iter().chain(&graph.output).chain(&graph.value_info);
        self.used.extend(values.map(|v| v.name().to_string()));
        self.used.extend(graph.initializer.iter().map(|t| t.name().to_string()));
        let sparse = graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref());
        self.used.extend(sparse.map(|t| t.name().to_string()));

        for node in &graph.node {
            self.used.insert(node.name().to_string());
            self.used.extend(node.input.iter().chain(&node.output).cloned());
            for attribute in &node.attribute {
                for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                    self.collect(subgraph);
                }
            }
        }
    }

    /// `base` itself if it is free, otherwise `base_1`, `base_2`, ...: the first free one.
    /// The name returned is taken from then on.
    pub fn fresh(&mut self, base: &str) -> String {
        if !base.is_empty() && self.used.insert(base.to_string()) {
            return base.to_string();
        }

        let suffix = self.next_suffix.entry(base.to_string()).or_insert(1);
        loop {
            let candidate = format!("{base}_{suffix}");
            *suffix += 1;
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
        }
    }
}

/// Replaces the node at `index` with `nodes`, which take its position in the node list.
///
/// # Panics
///
/// If `index` is not a node index of the graph.
pub fn replace_node(graph: &mut GraphProto, index: usize, nodes: Vec<NodeProto>) {
    graph.node.splice(index..=index, nodes);
}

/// Removes the nodes none of whose outputs reach a graph output, then the initializers no
/// remaining node reads (with the graph inputs that only gave them a name, as IR 3 models
/// have) and the value infos of values that no longer exist. Subgraphs are left as they
/// are. Returns how many nodes were removed.
pub fn remove_dead_nodes(graph: &mut GraphProto) -> usize {
    let index = GraphIndex::new(graph);
    let inputs: Vec<Vec<String>> = graph.node.iter().map(node_inputs).collect();

    let mut live_nodes = vec![false; graph.node.len()];
    let mut live_values: HashSet<String> = HashSet::new();
    let mut pending: Vec<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    while let Some(value) = pending.pop() {
        if !live_values.insert(value.clone()) {
            continue;
        }
        if let Some(producer) = index.producer(&value) {
            if !live_nodes[producer] {
                live_nodes[producer] = true;
                pending.extend(inputs[producer].iter().cloned());
            }
        }
    }

    let dead_outputs: HashSet<String> = graph
        .node
        .iter()
        .zip(&live_nodes)
        .filter(|(_, live)| !**live)
        .flat_map(|(node, _)| node.output.iter().cloned())
        .collect();
    let before = graph.node.len();
    let mut position = 0;
    graph.node.retain(|_| {
        position += 1;
        live_nodes[position - 1]
    });
    let removed = before - graph.node.len();

    let sparse_names = graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref());
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .chain(sparse_names)
        .map(|t| t.name().to_string())
        .filter(|name| !live_values.contains(name))
        .collect();
    graph.initializer.retain(|t| !dropped.contains(t.name()));
    graph
        .sparse_initializer
        .retain(|s| s.values.as_ref().is_none_or(|t| !dropped.contains(t.name())));
    graph.input.retain(|i| !dropped.contains(i.name()));
    graph.value_info.retain(|v| !dead_outputs.contains(v.name()));

    if removed > 0 || !dropped.is_empty() {
        tracing::debug!(nodes = removed, initializers = dropped.len(), "removed dead code");
    }
    removed
}

/// Adds to `reads` every value `node` reads: its inputs, and what the nodes of its subgraphs
/// read, at any depth (values of the subgraphs' own scopes included).
pub fn collect_reads(node: &NodeProto, reads: &mut HashSet<String>) {
    reads.extend(node.input.iter().filter(|name| !name.is_empty()).cloned());
    for attribute in &node.attribute {
        for subgraph in attribute.g.iter().chain(&attribute.graphs) {
            for inner in &subgraph.node {
                collect_reads(inner, reads);
            }
        }
    }
}

/// A node of the default domain with the given inputs, outputs and name (no name if empty).
pub fn make_node(op_type: &str, inputs: &[&str], outputs: &[&str], name: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: (!name.is_empty()).then(|| name.to_string()),
        op_type: Some(op_type.to_string()),
        ..NodeProto::default()
    }
}

fn attribute(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(kind as i32),
        ..AttributeProto::default()
    }
}

/// An `INT` attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { i: Some(value), ..attribute(name, AttributeType::Int) }
}

/// A `FLOAT` attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { f: Some(value), ..attribute(name, AttributeType::Float) }
}

/// An `INTS` attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { ints: values.to_vec(), ..attribute(name, AttributeType::Ints) }
}

/// A `STRING` attribute.
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto { s: Some(value.as_bytes().to_vec()), ..attribute(name, AttributeType::String) }
}

/// A `TENSOR` attribute, such as the `value` of a `Constant` node.
pub fn attr_tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto { t: Some(value), ..attribute(name, AttributeType::Tensor) }
}

fn node_attr<'n>(
    node: &'n NodeProto,
    name: &str,
    kind: AttributeType,
) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name && a.r#type() == kind)
}

/// The value of the node's `INT` attribute `name`, if it has one of that type.
pub fn node_attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node_attr(node, name, AttributeType::Int).map(|a| a.i())
}

/// The value of the node's `FLOAT` attribute `name`, if it has one of that type.
pub fn node_attr_float(node: &NodeProto, name: &str) -> Option<f32> {
    node_attr(node, name, AttributeType::Float).map(|a| a.f())
}

/// The values of the node's `INTS` attribute `name`, if it has one of that type.
pub fn node_attr_ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    node_attr(node, name, AttributeType::Ints).map(|a| a.ints.as_slice())
}

/// The version of the operator set `domain` the model imports; `""` and `"ai.onnx"` both
/// name the default domain.
pub fn opset_version(model: &ModelProto, domain: &str) -> Option<i64> {
    let canonical = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
    let wanted = canonical(domain);
    model.opset_import.iter().find(|o| canonical(o.domain()) == wanted).map(|o| o.version())
}

/// Imports operator set `domain` at `version` unless the model imports it already. An import
/// of an older version is left as it is and returned as `Err(found)`, for the caller to
/// explain what that version lacks.
pub fn import_opset(model: &mut ModelProto, domain: &str, version: i64) -> Result<(), i64> {
    use crate::ir::proto::OperatorSetIdProto;

    match opset_version(model, domain) {
        None => {
            let import =
                OperatorSetIdProto { domain: Some(domain.to_string()), version: Some(version) };
            model.opset_import.push(import);
            Ok(())
        }
        Some(found) if found >= version => Ok(()),
        Some(found) => Err(found),
    }
}

/// How many nodes of each op type in `op_types` sit inside the graph's subgraphs (the
/// branches and bodies of `If`, `Loop`, `Scan` and any other node with graph attributes), at
/// any depth. Passes that rewrite only the main graph say so with these counts.
pub fn subgraph_op_counts(graph: &GraphProto, op_types: &[&str]) -> Vec<(String, usize)> {
    fn walk(
        graph: &GraphProto,
        op_types: &[&str],
        inside: bool,
        counts: &mut Vec<(String, usize)>,
    ) {
        for node in &graph.node {
            if inside && op_types.contains(&node.op_type()) {
                match counts.iter_mut().find(|(op, _)| op == node.op_type()) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((node.op_type().to_string(), 1)),
                }
            }
            for attribute in &node.attribute {
                for sub in attribute.g.iter().chain(&attribute.graphs) {
                    walk(sub, op_types, true, counts);
                }
            }
        }
    }
    let mut counts = Vec::new();
    walk(graph, op_types, false, &mut counts);
    counts
}

/// A sentence for a pass's message when `graph` has nodes of `op_types` inside subgraphs,
/// which the pass leaves as they are; `None` when it has none.
pub fn subgraphs_left_alone(graph: &GraphProto, op_types: &[&str]) -> Option<String> {
    let counts = subgraph_op_counts(graph, op_types);
    if counts.is_empty() {
        return None;
    }
    let listed: Vec<String> = counts.iter().map(|(op, n)| format!("{n} {op}")).collect();
    Some(format!(
        "{} inside If/Loop/Scan subgraphs left in float (only the main graph is rewritten)",
        listed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::proto::{OperatorSetIdProto, ValueInfoProto};

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto { name: Some(name.into()), ..ValueInfoProto::default() }
    }

    fn graph(nodes: Vec<NodeProto>, inputs: &[&str], outputs: &[&str]) -> GraphProto {
        GraphProto {
            name: Some("g".into()),
            node: nodes,
            input: inputs.iter().map(|n| value(n)).collect(),
            output: outputs.iter().map(|n| value(n)).collect(),
            ..GraphProto::default()
        }
    }

    fn names(graph: &GraphProto) -> Vec<&str> {
        graph.node.iter().map(|n| n.name()).collect()
    }

    fn weight(name: &str) -> TensorProto {
        tensor_from_f32(name, &ndarray::arr1(&[1.0f32]).into_dyn())
    }

    #[test]
    fn index_finds_producers_and_consumers() {
        let g = graph(
            vec![
                make_node("Relu", &["x"], &["a"], "relu"),
                make_node("Mul", &["a", "a"], &["b"], "square"),
                make_node("Add", &["a", "b"], &["y"], "add"),
            ],
            &["x"],
            &["y"],
        );

        let index = GraphIndex::new(&g);

        assert_eq!(index.producer("a"), Some(0));
        assert_eq!(index.producer("x"), None);
        assert_eq!(index.consumers("a"), &[1, 2]);
        assert_eq!(index.consumers("y"), &[] as &[usize]);
    }

    #[test]
    fn value_read_inside_a_branch_counts_as_consumed() {
        let branch = graph(vec![make_node("Neg", &["a"], &["z"], "neg")], &[], &["z"]);
        let mut node = make_node("If", &["cond"], &["y"], "if");
        node.attribute.push(AttributeProto {
            g: Some(branch),
            ..attribute("then_branch", AttributeType::Graph)
        });
        let g =
            graph(vec![make_node("Relu", &["x"], &["a"], "relu"), node], &["x", "cond"], &["y"]);

        let index = GraphIndex::new(&g);

        assert_eq!(index.consumers("a"), &[1]);
        assert_eq!(index.consumers("z"), &[] as &[usize]);
    }

    #[test]
    fn topological_order_sorts_and_keeps_sorted_graphs_stable() {
        let sorted = graph(
            vec![
                make_node("Relu", &["x"], &["a"], "first"),
                make_node("Relu", &["x"], &["b"], "second"),
                make_node("Add", &["a", "b"], &["y"], "third"),
            ],
            &["x"],
            &["y"],
        );
        let shuffled = graph(
            vec![
                make_node("Add", &["a", "b"], &["y"], "add"),
                make_node("Relu", &["a0"], &["b"], "relu_b"),
                make_node("Relu", &["x"], &["a0"], "relu_a0"),
                make_node("Relu", &["x"], &["a"], "relu_a"),
            ],
            &["x"],
            &["y"],
        );

        assert_eq!(topological_order(&sorted).unwrap(), vec![0, 1, 2]);
        assert_eq!(topological_order(&shuffled).unwrap(), vec![2, 1, 3, 0]);
    }

    #[test]
    fn cycle_is_an_error_naming_a_node_on_it() {
        let g = graph(
            vec![
                make_node("Relu", &["x"], &["a"], "entry"),
                make_node("Add", &["a", "c"], &["b"], "loop_add"),
                make_node("Relu", &["b"], &["c"], "loop_relu"),
                make_node("Neg", &["c"], &["y"], "after"),
            ],
            &["x"],
            &["y"],
        );

        let error = topological_order(&g).unwrap_err();

        let IrError::Cycle { graph, node } = &error else { panic!("not a cycle error: {error}") };
        assert_eq!(graph, "g");
        assert!(node == "loop_add" || node == "loop_relu", "{node} is not on the cycle");
        assert!(error.to_string().contains("cycle through node `loop_"));
    }

    #[test]
    fn unnamed_node_on_a_cycle_is_named_by_position_and_op() {
        let g = graph(vec![make_node("Identity", &["a"], &["a"], "")], &[], &["a"]);

        let error = topological_order(&g).unwrap_err().to_string();

        assert_eq!(error, "graph `g` has a cycle through node `#0 (Identity)`");
    }

    #[test]
    fn fresh_names_avoid_every_existing_name() {
        let mut g = graph(
            vec![
                make_node("Relu", &["x"], &["y"], "relu"),
                make_node("Relu", &["y"], &["y_1"], ""),
            ],
            &["x"],
            &["y_1"],
        );
        g.initializer.push(weight("w"));
        let mut names = NameGenerator::new(&g);

        let fresh: Vec<String> =
            ["new", "new", "y", "relu", "w", "x", ""].iter().map(|b| names.fresh(b)).collect();

        assert_eq!(fresh, ["new", "new_1", "y_2", "relu_1", "w_1", "x_1", "_1"]);
    }

    #[test]
    fn replace_node_puts_new_nodes_in_place() {
        let mut g = graph(
            vec![
                make_node("Relu", &["x"], &["a"], "before"),
                make_node("Gemm", &["a", "w"], &["b"], "old"),
                make_node("Relu", &["b"], &["y"], "after"),
            ],
            &["x"],
            &["y"],
        );
        let new = vec![
            make_node("MatMul", &["a", "w"], &["m"], "matmul"),
            make_node("Add", &["m", "bias"], &["b"], "add"),
        ];

        replace_node(&mut g, 1, new);

        assert_eq!(names(&g), ["before", "matmul", "add", "after"]);
    }

    #[test]
    fn dead_nodes_and_their_initializers_are_removed() {
        let mut g = graph(
            vec![
                make_node("Mul", &["x", "w_live"], &["a"], "live"),
                make_node("Mul", &["x", "w_dead"], &["d1"], "dead"),
                make_node("Relu", &["d1"], &["d2"], "dead_too"),
                make_node("Relu", &["a"], &["y"], "output"),
            ],
            &["x", "w_dead"],
            &["y"],
        );
        g.initializer.extend([weight("w_live"), weight("w_dead"), weight("never_used")]);
        g.value_info.extend([value("a"), value("d1")]);

        let removed = remove_dead_nodes(&mut g);

        assert_eq!(removed, 2);
        assert_eq!(names(&g), ["live", "output"]);
        let initializers: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(initializers, ["w_live"]);
        let inputs: Vec<&str> = g.input.iter().map(|i| i.name()).collect();
        assert_eq!(inputs, ["x"]);
        let value_infos: Vec<&str> = g.value_info.iter().map(|v| v.name()).collect();
        assert_eq!(value_infos, ["a"]);
    }

    #[test]
    fn nothing_is_removed_from_a_live_graph() {
        let mut g = graph(
            vec![make_node("Relu", &["x"], &["a"], "a"), make_node("Relu", &["a"], &["y"], "b")],
            &["x"],
            &["y"],
        );

        assert_eq!(remove_dead_nodes(&mut g), 0);
        assert_eq!(names(&g), ["a", "b"]);
    }

    #[test]
    fn attributes_read_back_by_type() {
        let mut node = make_node("Gemm", &["a", "b"], &["c"], "gemm");
        node.attribute.extend([
            attr_int("transB", 1),
            attr_float("alpha", 0.5),
            attr_ints("perm", &[1, 0]),
        ]);

        assert_eq!(node_attr_int(&node, "transB"), Some(1));
        assert_eq!(node_attr_float(&node, "alpha"), Some(0.5));
        assert_eq!(node_attr_ints(&node, "perm"), Some(&[1, 0][..]));
        assert_eq!(node_attr_int(&node, "alpha"), None);
        assert_eq!(node_attr_int(&node, "transA"), None);
    }

    #[test]
    fn opset_version_treats_empty_and_ai_onnx_alike() {
        let opset = |domain: &str, version| OperatorSetIdProto {
            domain: Some(domain.into()),
            version: Some(version),
        };
        let model = ModelProto {
            opset_import: vec![opset("ai.onnx", 17), opset("com.microsoft", 1)],
            ..ModelProto::default()
        };

        assert_eq!(opset_version(&model, ""), Some(17));
        assert_eq!(opset_version(&model, "ai.onnx"), Some(17));
        assert_eq!(opset_version(&model, "com.microsoft"), Some(1));
        assert_eq!(opset_version(&model, "ai.onnx.ml"), None);
    }
}
