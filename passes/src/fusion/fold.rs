//! The `constant_folding` rule: a node whose inputs are all constants is computed once, at
//! rewrite time, and becomes an initializer; so does Shape (and Size) of a value whose shape
//! is statically known, which turns the shape arithmetic exporters emit
//! (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`) into one constant target.
//!
//! Constants are initializers that are no graph input (those can be fed) and the outputs of
//! Constant nodes. A Constant node whose only reader is folded goes with it, so a chain that
//! folds leaves no Constant behind; a Constant node read by anything else stays as it is,
//! since turning it into an initializer would change nothing ONNX Runtime computes.
//!
//! A result is not folded when it would bloat the model (an Expand or ConstantOfShape far
//! larger than its inputs): see [`SMALL_RESULT_BYTES`] and [`MAX_GROWTH`].

use std::collections::HashSet;

use super::evaluate::{self, EvalError, Value, EVALUATED_OPS};
use super::pattern::{Rewrite, Scan, View};
use super::Rule;
use crate::ir::node_attr_int;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::NodeProto;
use crate::ir::shapes::Dim;

pub(crate) const CONSTANT_FOLDING: Rule = Rule {
    name: "constant_folding",
    summary: "computes nodes whose inputs are all constants, and Shape of static shapes, into \
              initializers",
    scan: constant_folding,
};

/// A folded result may take this many bytes whatever its inputs take.
const SMALL_RESULT_BYTES: usize = 64 * 1024;

/// A larger result may take at most this many times the bytes of its constant inputs (a
/// float16 weight cast to float32 doubles; an Expand of a scalar to a large shape is left).
const MAX_GROWTH: usize = 4;

fn constant_folding(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    let initializers: HashSet<&str> = view
        .graph
        .initializer
        .iter()
        .map(|t| t.name())
        .filter(|name| !view.is_graph_input(name))
        .collect();
    let is_constant = |name: &str| {
        initializers.contains(name) || view.producer_of_type(name, "Constant").is_some()
    };

    for (index, node) in view.graph.node.iter().enumerate() {
        if !scan.is_free(index) || !foldable_node(node) {
            continue;
        }
        let op = node.op_type();
        let folded = match op {
            "Shape" | "Size" => static_shape(view, node),
            _ if EVALUATED_OPS.contains(&op) => {
                let missing = node.input.iter().find(|i| !i.is_empty() && !is_constant(i));
                if let Some(missing) = missing {
                    if let Some(reason) = near_match(view, node, missing) {
                        scan.skip(index, reason);
                    }
                    continue;
                }
                evaluate_constants(view, node)
            }
            _ => continue,
        };

        match folded {
            Ok(_) if view.graph.initializer.iter().any(|t| t.name() == node.output[0]) => {
                scan.skip(index, format!("its output `{}` is an initializer too", node.output[0]));
            }
            Ok(value) => {
                let rewrite = replace_by_initializer(view, index, value);
                scan.offer(rewrite);
            }
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// A node of the default domain with one output and no subgraph.
fn foldable_node(node: &NodeProto) -> bool {
    let has_subgraph = node.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty());
    matches!(node.domain(), "" | "ai.onnx")
        && node.output.len() == 1
        && !node.output[0].is_empty()
        && !has_subgraph
}

/// Why a node that computes integers (shape arithmetic) is not folded, when its input
/// `missing` is no constant and nothing upstream will fold into one; `None` for the nodes not
/// worth a word (arithmetic on activations, or a chain whose first node says why).
fn near_match(view: &View<'_>, node: &NodeProto, missing: &str) -> Option<String> {
    let integer_output = view.shapes.elem_type(&node.output[0]).is_some_and(is_integer_type);
    let upstream_folds = view.producer(missing).is_some_and(|(_, producer)| {
        let op = producer.op_type();
        EVALUATED_OPS.contains(&op) || op == "Shape" || op == "Size"
    });
    (integer_output && !upstream_folds).then(|| format!("input `{missing}` is not a constant"))
}

fn is_integer_type(data_type: i32) -> bool {
    use DataType as T;
    [T::Int64, T::Int32, T::Int16, T::Int8, T::Uint64, T::Uint32, T::Uint16, T::Uint8]
        .iter()
        .any(|t| *t as i32 == data_type)
}

/// Shape or Size of a value whose every dimension is a number.
fn static_shape(view: &View<'_>, node: &NodeProto) -> Result<Value, String> {
    let input = node.input.first().map(String::as_str).unwrap_or_default();
    let dims =
        view.shapes.dims(input).ok_or_else(|| format!("the shape of `{input}` is not known"))?;
    let mut known = Vec::with_capacity(dims.len());
    for (i, dim) in dims.iter().enumerate() {
        match dim {
            Dim::Known(size) => known.push(*size),
            Dim::Symbol(name) => {
                return Err(format!("dimension {i} of `{input}` is `{name}`, not a number"))
            }
            Dim::Unknown => return Err(format!("dimension {i} of `{input}` is not known")),
        }
    }

    if node.op_type() == "Size" {
        return Ok(evaluate::size_of(&known));
    }
    let (start, end) = (node_attr_int(node, "start"), node_attr_int(node, "end"));
    Ok(evaluate::shape_of(&known, start, end))
}

/// The value of a node whose inputs are all constants, or why it is not folded.
fn evaluate_constants(view: &View<'_>, node: &NodeProto) -> Result<Value, String> {
    let mut inputs = Vec::with_capacity(node.input.len());
    let mut input_bytes = 0usize;
    for name in &node.input {
        if name.is_empty() {
            inputs.push(None);
            continue;
        }
        let tensor =
            view.constant(name).ok_or_else(|| format!("constant `{name}` is unreadable"))?;
        let value = Value::from_tensor(&tensor).map_err(|e| format!("input `{name}`: {e}"))?;
        input_bytes += value.bytes();
        inputs.push(Some(value));
    }

    let max_bytes = SMALL_RESULT_BYTES.max(MAX_GROWTH.saturating_mul(input_bytes));
    let too_large = |bytes: usize| {
        format!(
            "its result would take {bytes} bytes from {input_bytes} bytes of constant inputs; \
             folding would bloat the model"
        )
    };
    match evaluate::evaluate(node, &inputs, max_bytes) {
        Ok(value) if value.bytes() > max_bytes => Err(too_large(value.bytes())),
        Ok(value) => Ok(value),
        Err(EvalError::TooLarge { bytes }) => Err(too_large(bytes)),
        Err(error) => Err(error.to_string()),
    }
}

/// Removes node `index` (with the Constant nodes only it reads) and gives its output to an
/// initializer holding `value`.
fn replace_by_initializer(view: &View<'_>, index: usize, value: Value) -> Rewrite {
    let node = view.node(index);
    let mut remove = vec![index];
    for input in node.input.iter().filter(|i| !i.is_empty()) {
        if let Some((producer, _)) = view.producer_of_type(input, "Constant") {
            if view.only_read_by(input, index) && !remove.contains(&producer) {
                remove.push(producer);
            }
        }
    }
    Rewrite { remove, initializers: vec![value.to_tensor(&node.output[0])], ..Rewrite::default() }
}
