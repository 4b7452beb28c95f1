//! Writes the converted graph from a [`Plan`]: nodes in order, each reading every float input
//! in the precision it wants. A value wanted in the other precision than its home gets one
//! Cast, made before its first such reader and shared by the rest; a constant gets a
//! converted copy instead. Graph outputs keep their names: when an output's producer writes
//! the other precision, the producer's output is renamed and the Cast writes the output.

use std::collections::HashMap;

use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{type_proto, GraphProto, NodeProto, TensorProto, TypeProto};
use crate::ir::proto::{AttributeProto, ValueInfoProto};
use crate::ir::{self, attr_int, attr_tensor, IrError, NameGenerator};

use super::plan::{constant_tensor, Plan, Precision, Source};
use super::values::{tensor_to_f16, Adjusted};

/// What a rewrite did, for the pass's log and its tests.
#[derive(Debug, Default)]
pub struct Counts {
    /// Nodes that handle float values and now run in float16.
    pub converted: usize,
    /// Nodes that handle float values and stay in float32, with the reason: (node, reason).
    pub kept: Vec<(String, String)>,
    /// Cast nodes added.
    pub casts: usize,
    /// Initializers stored in float16 (copies included).
    pub initializers: usize,
    /// Constant nodes and ConstantOfShape values turned into float16 (copies included).
    pub constants: usize,
    /// Existing Cast nodes retyped from float32 to float16.
    pub retyped_casts: usize,
    /// Values moved to stay within float16's range, by tensor name.
    pub adjusted: Vec<(String, Adjusted)>,
}

/// The state of one rewrite.
pub struct Rewriter<'g> {
    graph: &'g GraphProto,
    plan: &'g Plan,
    names: NameGenerator,
    /// The name each float32 value's producer writes it under, where it is not its own.
    renamed: HashMap<String, String>,
    /// Values made in the other precision than their home, by (value, precision).
    versions: HashMap<(String, Precision), String>,
    /// Names kept for versions not made yet: a graph output's name, for the Cast that makes
    /// it from its renamed producer.
    reserved: HashMap<(String, Precision), String>,
    /// Declared types of the original values, to describe the new ones.
    declared: HashMap<String, TypeProto>,
    nodes: Vec<NodeProto>,
    copies: Vec<TensorProto>,
    /// New values and the precision they hold: (name, original value, precision).
    new_values: Vec<(String, String, Precision)>,
    counts: Counts,
}

impl<'g> Rewriter<'g> {
    pub fn new(graph: &'g GraphProto, plan: &'g Plan) -> Self {
        let mut names = NameGenerator::new(graph);

        // A graph output whose producer writes the other precision keeps its name for the
        // Cast that makes it; the producer writes under a new name.
        let mut renamed = HashMap::new();
        let mut reserved = HashMap::new();
        for output in &graph.output {
            let name = output.name();
            let (Some(home), Some(&wanted)) = (plan.home(name), plan.outputs.get(name)) else {
                continue;
            };
            if home != wanted && !renamed.contains_key(name) {
                renamed.insert(name.to_string(), names.fresh(&format!("{name}_{}", home.suffix())));
                reserved.insert((name.to_string(), wanted), name.to_string());
            }
        }

        let declared = graph
            .input
            .iter()
            .chain(&graph.output)
            .chain(&graph.value_info)
            .filter_map(|v| Some((v.name().to_string(), v.r#type.clone()?)))
            .collect();

        Rewriter {
            graph,
            plan,
            names,
            renamed,
            versions: HashMap::new(),
            reserved,
            declared,
            nodes: Vec::with_capacity(graph.node.len()),
            copies: Vec::new(),
            new_values: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Writes the new node list and what else must change in the graph, without touching it.
    pub fn run(mut self) -> Result<Edits, IrError> {
        let graph = self.graph;
        let order = ir::topological_order(graph)?;

        for index in order {
            let node = self.rewrite_node(index)?;
            self.nodes.push(node);
        }
        // A graph output no node read in its wanted precision is made last.
        for output in &graph.output {
            if let Some(&wanted) = self.plan.outputs.get(output.name()) {
                self.resolve(output.name(), wanted)?;
            }
        }

        Ok(Edits {
            nodes: self.nodes,
            copies: self.copies,
            renamed: self.renamed,
            new_values: self.new_values,
            declared: self.declared,
            counts: self.counts,
        })
    }

    /// The node at `index` with its inputs read in the precisions it wants, any Casts those
    /// need added before it.
    fn rewrite_node(&mut self, index: usize) -> Result<NodeProto, IrError> {
        let original = &self.graph.node[index];
        let mut node = original.clone();
        let handles_floats =
            original.input.iter().chain(&original.output).any(|v| self.plan.is_float32(v));

        for (slot, input) in original.input.iter().enumerate() {
            if self.plan.is_float32(input) {
                let precision = self.plan.input_precision(original, index, slot);
                let precision = precision.or_else(|| self.plan.home(input));
                if let Some(precision) = precision {
                    node.input[slot] = self.resolve(input, precision)?;
                }
            }
        }

        match &self.plan.kept[index] {
            Some(reason) => {
                self.read_outer_values_in_float32(&mut node)?;
                if handles_floats {
                    self.counts.kept.push((label(original, index), reason.clone()));
                }
            }
            None => {
                self.retype_source(&mut node)?;
                if handles_floats {
                    self.counts.converted += 1;
                }
            }
        }

        for output in &mut node.output {
            if let Some(new_name) = self.renamed.get(output.as_str()) {
                *output = new_name.clone();
            }
        }
        Ok(node)
    }

    /// Points the subgraphs of a kept node at float32 versions of the outer values they read.
    fn read_outer_values_in_float32(&mut self, node: &mut NodeProto) -> Result<(), IrError> {
        // The node's own inputs are among these, already read in float32: resolving them
        // again gives the same name.
        let outer: Vec<String> =
            ir::graph::node_inputs(node).into_iter().filter(|v| self.plan.is_float32(v)).collect();
        for value in outer {
            let name = self.resolve(&value, Precision::Single)?;
            if name == value {
                continue;
            }
            for attribute in &mut node.attribute {
                for graph in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
                    rename_outer(graph, &value, &name);
                }
            }
        }
        Ok(())
    }

    /// Retypes a converted node whose float32 output type an attribute sets, when its output
    /// is to be float16: Cast's `to`, ConstantOfShape's and Constant's value.
    fn retype_source(&mut self, node: &mut NodeProto) -> Result<(), IrError> {
        let Some(output) = node.output.first().cloned() else { return Ok(()) };
        if self.plan.home(&output) != Some(Precision::Half) {
            return Ok(());
        }

        match node.op_type() {
            "Cast" => {
                set_attribute(node, attr_int("to", i64::from(FLOAT16)));
                self.counts.retyped_casts += 1;
            }
            "ConstantOfShape" => {
                let value = crate::convert::elem_types::tensor_attribute(node, "value")
                    .cloned()
                    .unwrap_or_else(|| ir::tensor_from_f32("", &ndarray::arr1(&[0.0]).into_dyn()));
                let (converted, adjusted) = tensor_to_f16(&value)?;
                self.note_adjusted(&output, adjusted);
                set_attribute(node, attr_tensor("value", converted));
                self.counts.constants += 1;
            }
            "Constant" => {
                if let Some(tensor) = constant_tensor(node) {
                    let (converted, adjusted) = tensor_to_f16(&tensor)?;
                    self.note_adjusted(&output, adjusted);
                    node.attribute = vec![attr_tensor("value", converted)];
                    self.counts.constants += 1;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The name under which `value` can be read in `precision`, making a Cast or a converted
    /// copy when its home is the other precision. Values that were not float32 are read as
    /// they are.
    fn resolve(&mut self, value: &str, precision: Precision) -> Result<String, IrError> {
        let Some(&(source, home)) = self.plan.homes.get(value) else {
            return Ok(value.to_string());
        };
        let home_name = self.renamed.get(value).cloned().unwrap_or_else(|| value.to_string());
        if home == precision {
            return Ok(home_name);
        }
        let key = (value.to_string(), precision);
        if let Some(name) = self.versions.get(&key) {
            return Ok(name.clone());
        }

        let name = match self.reserved.remove(&key) {
            Some(reserved) => reserved,
            None => self.names.fresh(&format!("{value}_{}", precision.suffix())),
        };
        match self.constant_of(source) {
            Some(tensor) => self.copy_constant(source, tensor, &name, precision)?,
            None => {
                let node_name = self.names.fresh(&format!("{value}_cast_{}", precision.suffix()));
                let mut cast = ir::make_node("Cast", &[&home_name], &[&name], &node_name);
                cast.attribute.push(attr_int("to", i64::from(precision.data_type())));
                self.nodes.push(cast);
                self.counts.casts += 1;
            }
        }
        self.new_values.push((name.clone(), value.to_string(), precision));
        self.versions.insert(key, name.clone());
        Ok(name)
    }

    /// The float32 tensor of a constant source.
    fn constant_of(&self, source: Source) -> Option<TensorProto> {
        match source {
            Source::Initializer(position) => self.graph.initializer.get(position).cloned(),
            Source::Constant(index) => constant_tensor(&self.graph.node[index]),
            _ => None,
        }
    }

    /// Stores a copy of a constant in `precision` under `name`: an initializer for an
    /// initializer, a Constant node for a Constant node.
    fn copy_constant(
        &mut self,
        source: Source,
        tensor: TensorProto,
        name: &str,
        precision: Precision,
    ) -> Result<(), IrError> {
        let mut copy = match precision {
            Precision::Half => {
                let (converted, adjusted) = tensor_to_f16(&tensor)?;
                self.note_adjusted(name, adjusted);
                converted
            }
            Precision::Single => tensor,
        };

        if let Source::Constant(_) = source {
            copy.name = None;
            let node_name = self.names.fresh(&format!("{name}_Constant"));
            let node = ir::make_node("Constant", &[], &[name], &node_name);
            self.nodes.push(NodeProto { attribute: vec![attr_tensor("value", copy)], ..node });
            self.counts.constants += usize::from(precision == Precision::Half);
        } else {
            copy.name = Some(name.to_string());
            self.copies.push(copy);
            self.counts.initializers += usize::from(precision == Precision::Half);
        }
        Ok(())
    }

    fn note_adjusted(&mut self, tensor: &str, adjusted: Adjusted) {
        note_adjusted(&mut self.counts, tensor, adjusted);
    }
}

/// What a rewrite changes in the graph, made while reading it and applied after.
pub struct Edits {
    nodes: Vec<NodeProto>,
    copies: Vec<TensorProto>,
    renamed: HashMap<String, String>,
    new_values: Vec<(String, String, Precision)>,
    declared: HashMap<String, TypeProto>,
    counts: Counts,
}

impl Edits {
    /// Applies the edits to the graph they were made from, converting its initializers in
    /// place.
    pub fn apply(mut self, graph: &mut GraphProto, plan: &Plan) -> Result<Counts, IrError> {
        graph.node = std::mem::take(&mut self.nodes);
        self.rewrite_initializers(graph, plan)?;
        self.retype_values(graph, plan);
        Ok(self.counts)
    }

    /// Converts the initializers stored in float16 and adds the copies.
    fn rewrite_initializers(&mut self, graph: &mut GraphProto, plan: &Plan) -> Result<(), IrError> {
        for tensor in &mut graph.initializer {
            if tensor.data_type() != FLOAT32 || plan.home(tensor.name()) != Some(Precision::Half) {
                continue;
            }
            let (converted, adjusted) = tensor_to_f16(tensor)?;
            note_adjusted(&mut self.counts, tensor.name(), adjusted);
            *tensor = converted;
            self.counts.initializers += 1;
        }
        graph.initializer.append(&mut self.copies);
        Ok(())
    }

    /// Sets the element type of graph inputs, outputs and value infos to what the values now
    /// hold, and describes the new values where the original was described.
    fn retype_values(&self, graph: &mut GraphProto, plan: &Plan) {
        let renamed = &self.renamed;
        // What the value of each original name holds now: a renamed output holds the
        // precision its reader wants, every other value its home.
        let now = |name: &str| -> Option<Precision> {
            if renamed.contains_key(name) {
                return plan.outputs.get(name).copied();
            }
            plan.home(name)
        };

        for value in graph.input.iter_mut().chain(&mut graph.output).chain(&mut graph.value_info) {
            if let Some(precision) = now(value.name()) {
                set_elem_type(value, precision);
            }
        }

        let mut described: Vec<(String, String, Precision)> = self.new_values.clone();
        for (value, new_name) in renamed {
            if let Some(home) = plan.home(value) {
                described.push((new_name.clone(), value.clone(), home));
            }
        }
        described.sort();
        for (name, original, precision) in described {
            let Some(type_proto) = self.declared.get(&original) else { continue };
            let mut info = ValueInfoProto {
                name: Some(name),
                r#type: Some(type_proto.clone()),
                ..ValueInfoProto::default()
            };
            set_elem_type(&mut info, precision);
            graph.value_info.push(info);
        }
    }
}

fn note_adjusted(counts: &mut Counts, tensor: &str, adjusted: Adjusted) {
    if adjusted.any() {
        counts.adjusted.push((tensor.to_string(), adjusted));
    }
}

const FLOAT32: i32 = DataType::Float as i32;
const FLOAT16: i32 = DataType::Float16 as i32;

/// Replaces the node's attribute of the same name, or adds it.
fn set_attribute(node: &mut NodeProto, attribute: AttributeProto) {
    match node.attribute.iter_mut().find(|a| a.name == attribute.name) {
        Some(existing) => *existing = attribute,
        None => node.attribute.push(attribute),
    }
}

fn set_elem_type(value: &mut ValueInfoProto, precision: Precision) {
    let tensor = value.r#type.as_mut().and_then(|t| t.value.as_mut());
    if let Some(type_proto::Value::TensorType(tensor)) = tensor {
        tensor.elem_type = Some(precision.data_type());
    }
}

/// Renames the reads of the outer value `from` in `graph` and its subgraphs to `to`, unless a
/// scope defines a value of that name itself.
fn rename_outer(graph: &mut GraphProto, from: &str, to: &str) {
    let defines = graph.input.iter().any(|v| v.name() == from)
        || graph.initializer.iter().any(|t| t.name() == from)
        || graph.node.iter().any(|n| n.output.iter().any(|o| o == from));
    if defines {
        return;
    }

    for node in &mut graph.node {
        for input in node.input.iter_mut().filter(|i| *i == from) {
            *input = to.to_string();
        }
        for attribute in &mut node.attribute {
            for subgraph in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
                rename_outer(subgraph, from, to);
            }
        }
    }
    for output in graph.output.iter_mut().filter(|o| o.name() == from) {
        output.name = Some(to.to_string());
    }
}

/// A node's name for messages: its name, or its op type and position when it has none.
fn label(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("#{index} ({})", node.op_type()),
        name => name.to_string(),
    }
}
