//! Before quantizing: constant weights that are not initializers are made initializers, so
//! they are quantized as weights (ahead of time, per channel where asked) instead of as
//! activations. Two forms are recognized: a float `Constant` node, and a `Cast` to float of
//! a float16, bfloat16 or float64 initializer. Both rewrites keep every value exact (a
//! float64 weight is rounded to float32, which is what the Cast did).
//!
//! ONNX Runtime's tool does neither: it quantizes such weights like activations, with a
//! calibrated range and one scale per tensor.

use std::collections::{HashMap, HashSet};

use half::{bf16, f16};
use tracing::debug;

use super::values::float_tensor;
use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::{DataLocation, DataType};
use crate::ir::proto::{GraphProto, NodeProto, TensorProto};
use crate::ir::{self, node_attr_int};

/// What [`fold_constant_weights`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Folded {
    pub constants: usize,
    pub casts: usize,
}

/// Turns float `Constant` nodes and `Cast`s of float initializers into float32 initializers,
/// where some node for which `selected` holds reads their output.
pub(crate) fn fold_constant_weights(
    graph: &mut GraphProto,
    selected: impl Fn(&NodeProto) -> bool,
) -> Folded {
    let read_by_selected: HashSet<String> = graph
        .node
        .iter()
        .filter(|node| selected(node))
        .flat_map(|node| node.input.iter().cloned())
        .collect();
    let graph_outputs: HashSet<String> =
        graph.output.iter().map(|o| o.name().to_string()).collect();
    let graph_inputs: HashSet<String> = graph.input.iter().map(|i| i.name().to_string()).collect();
    let initializers: HashMap<String, usize> =
        graph.initializer.iter().enumerate().map(|(i, t)| (t.name().to_string(), i)).collect();

    let mut folded = Folded::default();
    let mut new_initializers = Vec::new();
    let mut removed = HashSet::new();
    for (index, node) in graph.node.iter().enumerate() {
        let [output] = node.output.as_slice() else { continue };
        if !read_by_selected.contains(output) || graph_outputs.contains(output) {
            continue;
        }
        if !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }

        let tensor = match node.op_type() {
            "Constant" => constant_value(node).inspect(|_| folded.constants += 1),
            "Cast" => {
                let source = node.input.first().filter(|s| !graph_inputs.contains(*s));
                let source =
                    source.and_then(|s| initializers.get(s)).map(|&i| &graph.initializer[i]);
                source.and_then(|s| cast_initializer(node, s)).inspect(|_| folded.casts += 1)
            }
            _ => None,
        };
        if let Some(mut tensor) = tensor {
            debug!(node = node.name(), value = %output, "made a constant weight an initializer");
            tensor.name = Some(output.clone());
            new_initializers.push(tensor);
            removed.insert(index);
        }
    }

    if removed.is_empty() {
        return folded;
    }
    let mut position = 0;
    graph.node.retain(|_| {
        position += 1;
        !removed.contains(&(position - 1))
    });
    graph.initializer.extend(new_initializers);
    drop_unread_initializers(graph, &initializers);
    folded
}

/// The float32 value of a `Constant` node holding a float tensor or float attributes.
fn constant_value(node: &NodeProto) -> Option<TensorProto> {
    let [attribute] = node.attribute.as_slice() else { return None };
    match (attribute.name(), attribute.r#type()) {
        ("value", AttributeType::Tensor) => {
            let tensor = attribute.t.as_ref()?;
            let in_memory = tensor.data_location() != DataLocation::External;
            (tensor.data_type() == DataType::Float as i32 && in_memory).then(|| tensor.clone())
        }
        ("value_float", AttributeType::Float) => Some(float_tensor("", &[], &[attribute.f()])),
        ("value_floats", AttributeType::Floats) => {
            Some(float_tensor("", &[attribute.floats.len() as i64], &attribute.floats))
        }
        _ => None,
    }
}

/// The float32 result of casting `source` to float, when `node` is such a Cast and the
/// source holds float16, bfloat16 or float64 values in memory.
fn cast_initializer(node: &NodeProto, source: &TensorProto) -> Option<TensorProto> {
    if node_attr_int(node, "to") != Some(DataType::Float as i64) {
        return None;
    }
    if source.data_location() == DataLocation::External {
        return None;
    }

    let raw = source.raw_data.as_deref().filter(|r| !r.is_empty());
    let values: Vec<f32> = match DataType::try_from(source.data_type()).ok()? {
        DataType::Float16 => match raw {
            Some(raw) => pairs(raw).map(|b| f16::from_le_bytes(b).to_f32()).collect(),
            None => source.int32_data.iter().map(|&v| f16::from_bits(v as u16).to_f32()).collect(),
        },
        DataType::Bfloat16 => match raw {
            Some(raw) => pairs(raw).map(|b| bf16::from_le_bytes(b).to_f32()).collect(),
            None => source.int32_data.iter().map(|&v| bf16::from_bits(v as u16).to_f32()).collect(),
        },
        DataType::Double => match raw {
            Some(raw) => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            None => source.double_data.iter().map(|&v| v as f32).collect(),
        },
        _ => return None,
    };

    let count: i64 = source.dims.iter().product();
    if values.len() as i64 != count {
        return None;
    }
    Some(float_tensor("", &source.dims, &values))
}

fn pairs(raw: &[u8]) -> impl Iterator<Item = [u8; 2]> + '_ {
    raw.chunks_exact(2).map(|c| [c[0], c[1]])
}

/// Removes the initializers among `candidates` that nothing reads any more.
fn drop_unread_initializers(graph: &mut GraphProto, candidates: &HashMap<String, usize>) {
    let mut read: HashSet<String> = HashSet::new();
    let index = ir::GraphIndex::new(graph);
    for name in candidates.keys() {
        if !index.consumers(name).is_empty() {
            read.insert(name.clone());
        }
    }
    read.extend(graph.output.iter().map(|o| o.name().to_string()));
    graph.initializer.retain(|t| !candidates.contains_key(t.name()) || read.contains(t.name()));
}

#[cfg(test)]
mod tests {
    use ndarray::arr1;

    use super::*;

    fn f16_initializer(name: &str, values: &[f32]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: vec![values.len() as i64],
            data_type: Some(DataType::Float16 as i32),
            raw_data: Some(
                values
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect::<Vec<_>>()
                    .into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn constants_and_casts_read_by_selected_nodes_become_initializers() {
        let mut constant = ir::make_node("Constant", &[], &["w"], "const_w");
        constant.attribute.push(ir::attr_tensor(
            "value",
            ir::tensor_from_f32("", &arr1(&[1.5, -2.0]).into_dyn()),
        ));
        let mut cast = ir::make_node("Cast", &["w16"], &["w2"], "cast_w2");
        cast.attribute.push(ir::attr_int("to", DataType::Float as i64));
        let mut unread = ir::make_node("Constant", &[], &["k"], "const_k");
        unread.attribute.push(ir::attr_float("value_float", 3.0));
        let mut graph = GraphProto {
            node: vec![
                constant,
                cast,
                unread,
                ir::make_node("MatMul", &["x", "w"], &["y"], "m1"),
                ir::make_node("MatMul", &["y", "w2"], &["z"], "m2"),
                ir::make_node("Add", &["z", "k"], &["out"], "add"),
            ],
            initializer: vec![f16_initializer("w16", &[0.5, 0.25])],
            ..Default::default()
        };

        let folded = fold_constant_weights(&mut graph, |n| n.op_type() == "MatMul");

        assert_eq!(folded, Folded { constants: 1, casts: 1 });
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(ops, ["Constant", "MatMul", "MatMul", "Add"]);
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["w", "w2"], "the float16 source is dropped once unread");
        let w2 = ir::tensor_to_f32(ir::initializer(&graph, "w2").unwrap()).unwrap();
        assert_eq!(w2, arr1(&[0.5, 0.25]).into_dyn());
    }
}
