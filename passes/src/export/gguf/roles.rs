//! Which initializers are quantization parameters: the scales and zero points that quantized
//! operators read beside a weight's codes. They are no weights of their own, so the export
//! never writes them apart from their weight (whether that weight is written or left out).

use std::collections::{HashMap, HashSet};

use crate::ir::proto::{GraphProto, NodeProto};

/// The nodes of a graph that read each value, with the input position they read it at.
pub struct Readers<'g> {
    by_value: HashMap<&'g str, Vec<(&'g NodeProto, usize)>>,
    /// The scale outputs of `DynamicQuantizeLinear` nodes: a `Mul` of one of them by an
    /// initializer is the run-time scale times a weight's scale (as ORT's dynamic
    /// quantization writes it).
    dynamic_scales: HashSet<&'g str>,
}

impl<'g> Readers<'g> {
    pub fn new(graph: &'g GraphProto) -> Self {
        let mut by_value: HashMap<&str, Vec<(&NodeProto, usize)>> = HashMap::new();
        let mut dynamic_scales = HashSet::new();
        for node in &graph.node {
            for (index, input) in node.input.iter().enumerate() {
                if !input.is_empty() {
                    by_value.entry(input.as_str()).or_default().push((node, index));
                }
            }
            if node.op_type() == "DynamicQuantizeLinear" {
                dynamic_scales.extend(node.output.get(1).map(String::as_str));
            }
        }
        Readers { by_value, dynamic_scales }
    }

    /// The nodes that read `name`.
    pub fn of(&self, name: &str) -> &[(&'g NodeProto, usize)] {
        self.by_value.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether every node that reads `name` reads it as a scale or zero point (and one does).
    pub fn only_quantization_parameter(&self, name: &str) -> bool {
        let readers = self.of(name);
        !readers.is_empty()
            && readers.iter().all(|&(node, index)| self.quantization_parameter(node, index))
    }

    /// Whether input `index` of `node` is a scale or zero point.
    fn quantization_parameter(&self, node: &NodeProto, index: usize) -> bool {
        let positions: &[usize] = match node.op_type() {
            "DequantizeLinear" | "QuantizeLinear" => &[1, 2],
            "MatMulNBits"
            | "GatherBlockQuantized"
            | "MatMulInteger"
            | "ConvInteger"
            | "DynamicQuantizeMatMul" => &[2, 3],
            "MatMulIntegerToFloat" => &[2, 3, 4, 5],
            "QLinearConv" | "QLinearMatMul" | "QLinearAdd" | "QLinearMul" => &[1, 2, 4, 5, 6, 7],
            "QGemm" => &[1, 2, 4, 5, 7, 8],
            "QLinearSigmoid"
            | "QLinearLeakyRelu"
            | "QLinearSoftmax"
            | "QLinearAveragePool"
            | "QLinearGlobalAveragePool"
            | "QLinearReduceMean" => &[1, 2, 3, 4],
            "QLinearWhere" => &[2, 3, 5, 6, 7, 8],
            // Y_scale, Y_zero_point, then (tensor, scale, zero point) per input.
            "QLinearConcat" => return index < 2 || !(index - 2).is_multiple_of(3),
            "DynamicQuantizeLSTM" => &[8, 9, 10, 11],
            "QAttention" => &[3, 4, 6, 7],
            "QEmbedLayerNormalization" => &[8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
            "Mul" => {
                return node.input.iter().enumerate().any(|(other, value)| {
                    other != index && self.dynamic_scales.contains(value.as_str())
                })
            }
            _ => &[],
        };
        positions.contains(&index)
    }
}

/// `op `name`` of the first node that reads `name`, for notes.
pub fn first_reader(readers: &Readers<'_>, name: &str) -> String {
    match readers.of(name).first() {
        Some((node, _)) => format!("{} `{}`", node.op_type(), node.name()),
        None => "no node".to_string(),
    }
}
