//! The plan of a conversion: which nodes stay in float32 and why, and in which precision each
//! float32 value of the graph is produced (its "home"), from what its readers want.
//!
//! A converted node reads its float inputs in float16 (except the few inputs ONNX fixes to
//! float32, such as Resize's `scales`), a kept node in float32, a graph output in the
//! precision `keep_io_types` asks for. A value is produced in float16 when its producer is a
//! converted node whose output type follows its inputs, when it is a graph input and
//! `keep_io_types` is off, or, for constants (initializers, Constant nodes) and values whose
//! type an attribute sets (Cast to float, ConstantOfShape), when its readers want float16.

use std::collections::{HashMap, HashSet};

use crate::convert::elem_types::{output_rules, ElemTypes, Rule};
use crate::ir;
use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, NodeProto, TensorProto};

use super::ConvertFp16Config;

/// The domain of ONNX Runtime's contrib operators.
const MS_DOMAIN: &str = "com.microsoft";

const FLOAT: i32 = DataType::Float as i32;

/// Default-domain operators that ONNX defines without float16, with the opset from which
/// they have it (`None`: no opset has). They always stay in float32.
const FLOAT32_ONLY: &[(&str, Option<i64>)] = &[
    ("Celu", None),
    ("CumSum", Some(14)),
    ("DequantizeLinear", Some(19)),
    ("DynamicQuantizeLinear", None),
    ("IsInf", Some(20)),
    ("NonMaxSuppression", None),
    ("QLinearConv", None),
    ("QLinearMatMul", Some(21)),
    ("QuantizeLinear", Some(19)),
    ("Range", Some(27)),
    ("TfIdfVectorizer", None),
];

/// A precision a float value is produced or read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// float32.
    Single,
    /// float16.
    Half,
}

impl Precision {
    /// The ONNX element type.
    pub fn data_type(self) -> i32 {
        match self {
            Precision::Single => DataType::Float as i32,
            Precision::Half => DataType::Float16 as i32,
        }
    }

    /// The suffix of names made for a value in this precision.
    pub fn suffix(self) -> &'static str {
        match self {
            Precision::Single => "fp32",
            Precision::Half => "fp16",
        }
    }
}

/// Where a float32 value comes from, as far as the rewrite cares: constants can be copied in
/// the other precision, anything else is cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An initializer, at this position of the graph's initializer list (not one that is also
    /// a graph input: that one can be fed, so it counts as an input).
    Initializer(usize),
    /// The output of a Constant node, at this position of the node list.
    Constant(usize),
    /// A graph input, a node output, a sparse initializer.
    Other,
}

/// The decisions of one conversion.
pub struct Plan {
    /// For each node of the graph, why it stays in float32, or `None` when it is converted.
    pub kept: Vec<Option<String>>,
    /// For each float32 value: where it comes from and the precision it is produced in.
    pub homes: HashMap<String, (Source, Precision)>,
    /// For each float32 graph output: the precision `keep_io_types` asks for.
    pub outputs: HashMap<String, Precision>,
    /// Whether graph inputs and outputs stay float32.
    pub keep_io: bool,
    /// The opset of the default domain.
    pub opset: i64,
    /// The element types of the original graph.
    pub types: ElemTypes,
}

impl Plan {
    /// Plans the conversion of `graph`, a graph of a model at `opset`.
    pub fn new(graph: &GraphProto, config: &ConvertFp16Config, opset: i64) -> Plan {
        let types = ElemTypes::infer(graph);
        let blocked_ops: HashSet<&str> = config.op_block_list.iter().map(String::as_str).collect();
        let blocked_nodes: HashSet<&str> =
            config.node_block_list.iter().map(String::as_str).collect();

        let kept = graph
            .node
            .iter()
            .map(|node| keep_reason(node, &types, &blocked_ops, &blocked_nodes, opset))
            .collect();
        let io_precision = if config.keep_io_types { Precision::Single } else { Precision::Half };
        let outputs = graph
            .output
            .iter()
            .filter(|o| types.get(o.name()) == Some(FLOAT))
            .map(|o| (o.name().to_string(), io_precision))
            .collect();

        let mut plan = Plan {
            kept,
            homes: HashMap::new(),
            outputs,
            keep_io: config.keep_io_types,
            opset,
            types,
        };
        plan.homes = plan.place(graph);
        plan
    }

    /// Whether `value` was float32 in the original graph.
    pub fn is_float32(&self, value: &str) -> bool {
        !value.is_empty() && self.types.get(value) == Some(FLOAT)
    }

    /// The precision node `index` reads its float32 input at `slot` in; `None` when any
    /// will do (Shape and Size read only the dimensions), so the value is read as produced.
    pub fn input_precision(
        &self,
        node: &NodeProto,
        index: usize,
        slot: usize,
    ) -> Option<Precision> {
        if self.kept[index].is_some() || fixed_float32_input(node, slot, self.opset) {
            Some(Precision::Single)
        } else if reads_only_dimensions(node) {
            None
        } else {
            Some(Precision::Half)
        }
    }

    /// The precision `value` is produced in, when it was float32.
    pub fn home(&self, value: &str) -> Option<Precision> {
        self.homes.get(value).map(|(_, precision)| *precision)
    }

    /// Whether anything is produced in float16.
    pub fn converts_anything(&self) -> bool {
        self.homes.values().any(|(_, precision)| *precision == Precision::Half)
    }

    /// Decides every float32 value's source and home precision.
    fn place(&self, graph: &GraphProto) -> HashMap<String, (Source, Precision)> {
        let wants = self.wants(graph);
        let io = if self.keep_io { Precision::Single } else { Precision::Half };
        let mut homes = HashMap::new();

        let inputs: HashSet<&str> = graph.input.iter().map(|v| v.name()).collect();
        for input in &graph.input {
            if self.is_float32(input.name()) {
                homes.insert(input.name().to_string(), (Source::Other, io));
            }
        }
        for (position, tensor) in graph.initializer.iter().enumerate() {
            let name = tensor.name();
            if inputs.contains(name) || tensor.data_type() != FLOAT {
                continue;
            }
            let source = Source::Initializer(position);
            homes.insert(name.to_string(), (source, self.constant_home(name, &wants)));
        }
        for tensor in graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()) {
            if tensor.data_type() == FLOAT {
                homes.insert(tensor.name().to_string(), (Source::Other, Precision::Single));
            }
        }

        for (index, node) in graph.node.iter().enumerate() {
            let converted = self.kept[index].is_none();
            let rules = output_rules(node);
            for (output, rule) in node.output.iter().zip(rules) {
                if !self.is_float32(output) {
                    continue;
                }
                let (source, precision) = match (converted, node.op_type(), rule) {
                    (false, _, _) => (Source::Other, Precision::Single),
                    (true, "Constant", _) if is_dense_constant(node) => {
                        (Source::Constant(index), self.constant_home(output, &wants))
                    }
                    (true, "Cast" | "ConstantOfShape", _) => {
                        (Source::Other, self.retypable_home(output, &wants))
                    }
                    (true, _, Rule::Input(_)) => (Source::Other, Precision::Half),
                    (true, _, _) => (Source::Other, Precision::Single),
                };
                homes.insert(output.clone(), (source, precision));
            }
        }
        homes
    }

    /// What each float32 value's readers want: node inputs, values that kept nodes'
    /// subgraphs read, graph outputs.
    fn wants(&self, graph: &GraphProto) -> HashMap<String, Vec<Precision>> {
        let mut wants: HashMap<String, Vec<Precision>> = HashMap::new();
        for (index, node) in graph.node.iter().enumerate() {
            for (slot, input) in node.input.iter().enumerate() {
                if !self.is_float32(input) {
                    continue;
                }
                if let Some(precision) = self.input_precision(node, index, slot) {
                    wants.entry(input.clone()).or_default().push(precision);
                }
            }
            for outer in ir::graph::node_inputs(node) {
                if !node.input.contains(&outer) && self.is_float32(&outer) {
                    wants.entry(outer).or_default().push(Precision::Single);
                }
            }
        }
        for (output, precision) in &self.outputs {
            wants.entry(output.clone()).or_default().push(*precision);
        }
        wants
    }

    /// A constant is stored in float16 when some reader wants float16 and none float32;
    /// with readers of both kinds it stays float32 and gets a float16 copy. A graph output
    /// is stored as the output wants it.
    fn constant_home(&self, name: &str, wants: &HashMap<String, Vec<Precision>>) -> Precision {
        if let Some(&precision) = self.outputs.get(name) {
            return precision;
        }
        let wanted = wants.get(name).map(Vec::as_slice).unwrap_or_default();
        if wanted.contains(&Precision::Half) && !wanted.contains(&Precision::Single) {
            Precision::Half
        } else {
            Precision::Single
        }
    }

    /// A Cast to float or a ConstantOfShape is retyped to float16 when every reader wants
    /// float16; otherwise it stays float32 and float16 readers read it through a Cast.
    fn retypable_home(&self, name: &str, wants: &HashMap<String, Vec<Precision>>) -> Precision {
        if let Some(&precision) = self.outputs.get(name) {
            return precision;
        }
        let wanted = wants.get(name).map(Vec::as_slice).unwrap_or_default();
        if !wanted.is_empty() && wanted.iter().all(|&p| p == Precision::Half) {
            Precision::Half
        } else {
            Precision::Single
        }
    }
}

/// Whether a Constant node holds its value in `value`, `value_float` or `value_floats` (not a
/// sparse one), which the pass can convert.
pub fn is_dense_constant(node: &NodeProto) -> bool {
    let Some(attribute) = node.attribute.first() else { return false };
    matches!(
        (attribute.name(), attribute.r#type()),
        ("value", AttributeType::Tensor)
            | ("value_float", AttributeType::Float)
            | ("value_floats", AttributeType::Floats)
    )
}

/// The tensor a dense Constant node holds (see [`is_dense_constant`]).
pub fn constant_tensor(node: &NodeProto) -> Option<TensorProto> {
    if is_dense_constant(node) {
        ir::shapes::constant_value(node)
    } else {
        None
    }
}

/// Why `node` stays in float32, or `None` when it can run in float16.
fn keep_reason(
    node: &NodeProto,
    types: &ElemTypes,
    blocked_ops: &HashSet<&str>,
    blocked_nodes: &HashSet<&str>,
    opset: i64,
) -> Option<String> {
    if !node.name().is_empty() && blocked_nodes.contains(node.name()) {
        return Some("named in `node_block_list`".into());
    }
    let domain = node.domain();
    if !matches!(domain, "" | "ai.onnx" | MS_DOMAIN) {
        return Some(format!("operators of domain `{domain}` are never converted"));
    }
    if blocked_ops.contains(node.op_type()) {
        return Some(format!("{} is in `op_block_list`", node.op_type()));
    }
    let holds_graph = node
        .attribute
        .iter()
        .any(|a| matches!(a.r#type(), AttributeType::Graph | AttributeType::Graphs));
    // TODO: Subgraphs are not converted: an If, Loop or Scan and everything in its bodies
    // runs in float32, so a model that keeps its work in a Loop body gains nothing.
    if holds_graph {
        return Some(format!("{} holds subgraphs, which stay in float32", node.op_type()));
    }
    if domain != MS_DOMAIN {
        if let Some(reason) = float32_only(node.op_type(), opset) {
            return Some(reason);
        }
    }

    let rules = output_rules(node);
    if domain == MS_DOMAIN && rules.iter().all(|r| *r == Rule::Unknown) {
        return Some(format!("the com.microsoft operator {} is not converted", node.op_type()));
    }
    let values = node.input.iter().chain(&node.output).filter(|v| !v.is_empty());
    if let Some(unknown) = values.into_iter().find(|v| types.get(v).is_none()) {
        return Some(format!("the element type of `{unknown}` is unknown"));
    }
    None
}

/// Why an operator of the default domain cannot run in float16 at `opset`, if it cannot.
fn float32_only(op: &str, opset: i64) -> Option<String> {
    let (_, since) = FLOAT32_ONLY.iter().find(|(name, _)| *name == op)?;
    match since {
        None => Some(format!("ONNX defines {op} on float32 only")),
        Some(since) if opset < *since => {
            Some(format!("ONNX defines {op} on float32 only before opset {since}"))
        }
        Some(_) => None,
    }
}

/// Whether `node` reads nothing of its input but the dimensions: Shape and Size.
fn reads_only_dimensions(node: &NodeProto) -> bool {
    matches!(node.domain(), "" | "ai.onnx") && matches!(node.op_type(), "Shape" | "Size")
}

/// Whether input `slot` of `node` is float32 whatever the node's type: Resize's and
/// Upsample's `scales`.
fn fixed_float32_input(node: &NodeProto, slot: usize, opset: i64) -> bool {
    if !matches!(node.domain(), "" | "ai.onnx") {
        return false;
    }
    match node.op_type() {
        "Resize" if opset >= 11 => slot == 2,
        "Resize" | "Upsample" => slot == 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_only_operators_depend_on_the_opset() {
        assert!(float32_only("Range", 17).is_some_and(|r| r.contains("before opset 27")));
        assert_eq!(float32_only("Range", 27), None);
        assert!(float32_only("DynamicQuantizeLinear", 21).is_some());
        assert_eq!(float32_only("CumSum", 14), None);
        assert_eq!(float32_only("Relu", 7), None);
    }

    #[test]
    fn scales_of_resize_are_float32_in_every_opset() {
        let resize = ir::make_node("Resize", &["x", "roi", "scales"], &["y"], "");
        assert!(fixed_float32_input(&resize, 2, 13));
        assert!(!fixed_float32_input(&resize, 1, 13));
        assert!(fixed_float32_input(&resize, 1, 10));
    }
}
