//! The element type of every value of a graph, as far as it can be told without running
//! the model: declared types first (graph inputs, outputs, value infos, initializers,
//! Constant nodes), then each node's outputs from its inputs by the operator's type rule.
//!
//! Static quantization only touches float tensors, so it needs to know which values are
//! float even in models whose `value_info` is empty. A value whose type cannot be told is
//! left out, which leaves it in float, as ONNX Runtime's tool does for such values.

use std::collections::HashMap;

use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, NodeProto};
use crate::ir::{self, node_attr_int};

/// Element types by value name, as `TensorProto.DataType` numbers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ElemTypes(HashMap<String, i32>);

impl ElemTypes {
    /// The types of the main graph's values (subgraphs are not visited).
    pub(crate) fn infer(graph: &GraphProto) -> Self {
        let mut types = ElemTypes::default();
        for value in graph.input.iter().chain(&graph.output).chain(&graph.value_info) {
            if let Some(elem_type) = ir::declared_elem_type(value) {
                types.0.insert(value.name().to_string(), elem_type);
            }
        }
        for tensor in &graph.initializer {
            types.0.insert(tensor.name().to_string(), tensor.data_type());
        }

        // A graph whose nodes cannot be ordered gets the types its node order allows.
        let order =
            ir::topological_order(graph).unwrap_or_else(|_| (0..graph.node.len()).collect());
        for index in order {
            let node = &graph.node[index];
            for (position, output) in node.output.iter().enumerate() {
                if output.is_empty() || types.0.contains_key(output) {
                    continue;
                }
                if let Some(elem_type) = output_type(node, position, &types) {
                    types.0.insert(output.clone(), elem_type);
                }
            }
        }
        types
    }

    /// The element type of `value`, if known.
    pub(crate) fn get(&self, value: &str) -> Option<i32> {
        self.0.get(value).copied()
    }

    /// Whether `value` is known to hold float32 values.
    pub(crate) fn is_float(&self, value: &str) -> bool {
        self.get(value) == Some(DataType::Float as i32)
    }
}

const INT64: i32 = DataType::Int64 as i32;
const BOOL: i32 = DataType::Bool as i32;
const FLOAT: i32 = DataType::Float as i32;

/// The type of output `position` of `node`, from its attributes and its inputs' types.
fn output_type(node: &NodeProto, position: usize, types: &ElemTypes) -> Option<i32> {
    let input = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| types.get(n));

    if !matches!(node.domain(), "" | "ai.onnx") {
        return None;
    }
    match (node.op_type(), position) {
        ("Constant", 0) => constant_type(node),
        ("Cast", 0) | ("EyeLike", 0) => node_attr_int(node, "to").map(|t| t as i32).or(input(0)),
        ("CastLike", 0) => input(1),
        ("Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" | "NonMaxSuppression", 0) => {
            Some(INT64)
        }
        ("TopK" | "MaxPool", 1) | ("Unique", 1..=3) => Some(INT64),
        ("Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual", 0) => Some(BOOL),
        ("Not" | "And" | "Or" | "Xor" | "IsNaN" | "IsInf", 0) | ("Dropout", 1) => Some(BOOL),
        ("Where", 0) => input(1),
        ("QuantizeLinear", 0) => node_attr_int(node, "output_dtype")
            .filter(|&t| t != 0)
            .map(|t| t as i32)
            .or(input(2))
            .or(Some(DataType::Uint8 as i32)),
        ("DequantizeLinear", 0) => input(1),
        ("DynamicQuantizeLinear", 0 | 2) => Some(DataType::Uint8 as i32),
        ("DynamicQuantizeLinear", 1) => Some(FLOAT),
        ("MatMulInteger" | "ConvInteger", 0) => Some(DataType::Int32 as i32),
        ("QLinearConv" | "QLinearMatMul", 0) => input(7),
        ("ConstantOfShape", 0) => tensor_attr_type(node, "value").or(Some(FLOAT)),
        ("RandomNormal" | "RandomUniform", 0) => {
            Some(node_attr_int(node, "dtype").map_or(FLOAT, |t| t as i32))
        }
        ("RandomNormalLike" | "RandomUniformLike", 0) => {
            node_attr_int(node, "dtype").map(|t| t as i32).or(input(0))
        }
        ("Multinomial", 0) => {
            Some(node_attr_int(node, "dtype").map_or(DataType::Int32 as i32, |t| t as i32))
        }
        // Most operators produce the type of their first input, in every output.
        _ => node.input.iter().filter(|n| !n.is_empty()).find_map(|n| types.get(n)),
    }
}

fn constant_type(node: &NodeProto) -> Option<i32> {
    let attribute = node.attribute.first()?;
    match (attribute.name(), attribute.r#type()) {
        ("value", AttributeType::Tensor) => attribute.t.as_ref().map(|t| t.data_type()),
        ("value_float" | "value_floats", _) => Some(FLOAT),
        ("value_int" | "value_ints", _) => Some(INT64),
        ("value_string" | "value_strings", _) => Some(DataType::String as i32),
        _ => None,
    }
}

fn tensor_attr_type(node: &NodeProto, name: &str) -> Option<i32> {
    let attribute = node.attribute.iter().find(|a| a.name() == name)?;
    attribute.t.as_ref().map(|t| t.data_type())
}

#[cfg(test)]
mod tests {
    use ndarray::arr1;

    use super::*;
    use crate::ir::proto::ValueInfoProto;

    fn typed(name: &str, elem_type: i32) -> ValueInfoProto {
        ir::tensor_value_info(name, elem_type, None)
    }

    #[test]
    fn types_flow_through_nodes() {
        let mut cast = ir::make_node("Cast", &["shape"], &["shape_f"], "cast");
        cast.attribute.push(ir::attr_int("to", FLOAT as i64));
        let mut constant = ir::make_node("Constant", &[], &["k"], "const");
        constant
            .attribute
            .push(ir::attr_tensor("value", ir::tensor_from_f32("", &arr1(&[1.0]).into_dyn())));
        let graph = GraphProto {
            node: vec![
                ir::make_node("Relu", &["x"], &["r"], "relu"),
                ir::make_node("Shape", &["r"], &["shape"], "shape"),
                cast,
                constant,
                ir::make_node("Mul", &["k", "r"], &["m"], "mul"),
                ir::make_node("Greater", &["m", "k"], &["g"], "greater"),
                ir::make_node("Where", &["g", "m", "k"], &["w"], "where"),
                ir::make_node("Custom", &["w"], &["c"], "custom"),
            ],
            input: vec![typed("x", FLOAT)],
            ..Default::default()
        };
        let mut custom = graph.clone();
        custom.node[7].domain = Some("com.example".into());

        let types = ElemTypes::infer(&custom);

        assert!(types.is_float("r") && types.is_float("k") && types.is_float("m"));
        assert_eq!(types.get("shape"), Some(INT64));
        assert!(types.is_float("shape_f"));
        assert_eq!(types.get("g"), Some(BOOL));
        assert!(types.is_float("w"));
        assert_eq!(types.get("c"), None, "a custom domain's outputs are unknown");
    }

    #[test]
    fn declared_types_win() {
        let graph = GraphProto {
            node: vec![ir::make_node("Identity", &["x"], &["y"], "id")],
            input: vec![typed("x", FLOAT)],
            value_info: vec![typed("y", DataType::Float16 as i32)],
            ..Default::default()
        };
        assert_eq!(ElemTypes::infer(&graph).get("y"), Some(DataType::Float16 as i32));
    }
}
