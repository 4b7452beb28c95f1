//! Element types of every value of a graph, told without running it: declared types first
//! (graph inputs, outputs, value infos, initializers), then each node's outputs by the
//! operator's type rule, in node order. A rule says whether an output's type follows one of
//! the node's inputs, or is fixed (by the operator, or by an attribute such as Cast's `to`);
//! a conversion pass needs exactly that distinction. Operators without a rule here leave their
//! outputs unknown.

use std::collections::HashMap;

use crate::ir::proto::attribute_proto::AttributeType;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{GraphProto, NodeProto, TensorProto};
use crate::ir::{self, node_attr_int};

/// The domain of ONNX Runtime's contrib operators.
const MS_DOMAIN: &str = "com.microsoft";

/// How the element type of one output of a node is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The type of the node's input at this position.
    Input(usize),
    /// A type the operator or one of the node's attributes fixes.
    Fixed(i32),
    /// No rule is known.
    Unknown,
}

/// Default-domain operators whose every output has the type of their first input.
#[rustfmt::skip]
const SAME_AS_FIRST: &[&str] = &[
    "Abs", "Acos", "Acosh", "Add", "AffineGrid", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Ceil", "Celu",
    "CenterCropPad", "Clip", "Col2Im", "Compress", "Concat", "Conv", "ConvTranspose", "Cos",
    "Cosh", "CumSum", "DFT", "DeformConv", "DepthToSpace", "Det", "Div", "Einsum", "Elu", "Erf",
    "Exp", "Expand", "Flatten", "Floor", "GRU", "Gather", "GatherElements", "GatherND", "Gelu",
    "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GridSample",
    "GroupNormalization", "HardSigmoid", "HardSwish", "Hardmax", "Identity",
    "InstanceNormalization", "LRN", "LSTM", "LeakyRelu", "Log", "LogSoftmax", "LpNormalization",
    "LpPool", "MatMul", "Max", "MaxRoiPool", "MaxUnpool", "Mean", "MeanVarianceNormalization",
    "Min", "Mish", "Mod", "Mul", "Neg", "NegativeLogLikelihoodLoss", "PRelu", "Pad", "Pow",
    "RMSNormalization", "RNN", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign",
    "RotaryEmbedding", "Round", "STFT", "Scatter", "ScatterElements", "ScatterND", "Selu",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Slice", "Softmax", "SoftmaxCrossEntropyLoss",
    "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Swish",
    "Tan", "Tanh", "ThresholdedRelu", "Tile", "Transpose", "Trilu", "Unsqueeze", "Upsample",
];

/// Default-domain operators whose outputs are booleans.
#[rustfmt::skip]
const BOOLEAN: &[&str] = &[
    "And", "Equal", "Greater", "GreaterOrEqual", "IsInf", "IsNaN", "Less", "LessOrEqual", "Not",
    "Or", "RegexFullMatch", "Xor",
];

/// Default-domain operators whose outputs are int64 indices or sizes.
const INDICES: &[&str] = &["ArgMax", "ArgMin", "NonMaxSuppression", "NonZero", "Shape", "Size"];

/// ONNX Runtime contrib operators whose every output has the type of their first input.
#[rustfmt::skip]
const MS_SAME_AS_FIRST: &[&str] = &[
    "BiasAdd", "BiasGelu", "BiasSoftmax", "BiasSplitGelu", "FastGelu", "FusedConv", "FusedGemm",
    "FusedMatMul", "GatedRelativePositionBias", "Gelu", "GemmFastGelu", "Inverse", "MatMulNBits",
    "NhwcConv", "QuickGelu", "RotaryEmbedding", "Trilu",
];

/// The element types of the values of one graph (its subgraphs' own values are not typed).
#[derive(Clone, Debug, Default)]
pub struct ElemTypes {
    types: HashMap<String, i32>,
}

impl ElemTypes {
    /// Types every value of `graph` that declarations or rules can type.
    pub fn infer(graph: &GraphProto) -> ElemTypes {
        let mut types = ElemTypes::default();
        for value in graph.input.iter().chain(&graph.output).chain(&graph.value_info) {
            if let Some(elem) = ir::declared_elem_type(value) {
                types.types.insert(value.name().to_string(), elem);
            }
        }
        for tensor in &graph.initializer {
            types.types.insert(tensor.name().to_string(), tensor.data_type());
        }
        for tensor in graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()) {
            types.types.insert(tensor.name().to_string(), tensor.data_type());
        }

        let order =
            ir::topological_order(graph).unwrap_or_else(|_| (0..graph.node.len()).collect());
        for index in order {
            let node = &graph.node[index];
            let rules = output_rules(node);
            for (output, rule) in node.output.iter().zip(rules) {
                if output.is_empty() || types.types.contains_key(output) {
                    continue;
                }
                let elem = match rule {
                    Rule::Input(position) => node.input.get(position).and_then(|i| types.get(i)),
                    Rule::Fixed(elem) => Some(elem),
                    Rule::Unknown => None,
                };
                if let Some(elem) = elem.filter(|&t| t != 0) {
                    types.types.insert(output.clone(), elem);
                }
            }
        }
        types
    }

    /// The element type of `value`, when known.
    pub fn get(&self, value: &str) -> Option<i32> {
        self.types.get(value).copied()
    }
}

/// One rule per output of `node`, in output order. Operators of other domains than the
/// default one and `com.microsoft` get no rule.
pub fn output_rules(node: &NodeProto) -> Vec<Rule> {
    let count = node.output.len();
    let rules = match node.domain() {
        "" | "ai.onnx" => default_domain_rules(node),
        MS_DOMAIN => contrib_rules(node),
        _ => Vec::new(),
    };
    (0..count).map(|i| rules.get(i).copied().unwrap_or(Rule::Unknown)).collect()
}

fn default_domain_rules(node: &NodeProto) -> Vec<Rule> {
    use Rule::{Fixed, Input};

    let op = node.op_type();
    let every = |rule: Rule| vec![rule; node.output.len()];
    if SAME_AS_FIRST.contains(&op) {
        return every(Input(0));
    }
    if BOOLEAN.contains(&op) {
        return every(Fixed(DataType::Bool as i32));
    }
    if INDICES.contains(&op) {
        return every(Fixed(DataType::Int64 as i32));
    }

    let float = DataType::Float as i32;
    let int64 = DataType::Int64 as i32;
    match op {
        "BatchNormalization" => vec![Input(0), Input(3), Input(3)],
        "Dropout" => vec![Input(0), Fixed(DataType::Bool as i32)],
        "MaxPool" => vec![Input(0), Fixed(int64)],
        "TopK" => vec![Input(0), Fixed(int64)],
        "Unique" => vec![Input(0), Fixed(int64), Fixed(int64), Fixed(int64)],
        "Attention" => vec![Input(0), Input(0), Input(2), Input(0)],
        "LayerNormalization" => {
            let stash = attr_type(node, "stash_type").unwrap_or(float);
            vec![Input(0), Fixed(stash), Fixed(stash)]
        }
        // ONNX Runtime's own schema in the default domain: Y has the scale's type.
        "SimplifiedLayerNormalization" => vec![Input(1), Fixed(float)],
        "Where" | "CastLike" => vec![Input(1)],
        "OneHot" => vec![Input(2)],
        "Cast" => attr_type(node, "to").map(Fixed).into_iter().collect(),
        "Constant" => {
            let tensor = ir::shapes::constant_value(node);
            tensor.map(|t| Fixed(t.data_type())).into_iter().collect()
        }
        "ConstantOfShape" => {
            let value = tensor_attribute(node, "value");
            vec![Fixed(value.map_or(float, |t| t.data_type()))]
        }
        "RandomNormal" | "RandomUniform" => vec![Fixed(attr_type(node, "dtype").unwrap_or(float))],
        "RandomNormalLike" | "RandomUniformLike" | "Bernoulli" | "EyeLike" => {
            vec![attr_type(node, "dtype").map_or(Input(0), Fixed)]
        }
        "Multinomial" => {
            vec![Fixed(attr_type(node, "dtype").unwrap_or(DataType::Int32 as i32))]
        }
        "HannWindow" | "HammingWindow" | "BlackmanWindow" | "MelWeightMatrix" => {
            vec![Fixed(attr_type(node, "output_datatype").unwrap_or(float))]
        }
        "QuantizeLinear" => match node.input.get(2).filter(|z| !z.is_empty()) {
            Some(_) => vec![Input(2)],
            None => {
                let elem = attr_type(node, "output_dtype").unwrap_or(DataType::Uint8 as i32);
                vec![Fixed(elem)]
            }
        },
        "DequantizeLinear" => vec![attr_type(node, "output_dtype").map_or(Input(1), Fixed)],
        "DynamicQuantizeLinear" => {
            let uint8 = DataType::Uint8 as i32;
            vec![Fixed(uint8), Fixed(float), Fixed(uint8)]
        }
        "MatMulInteger" | "ConvInteger" => vec![Fixed(DataType::Int32 as i32)],
        "QLinearConv" | "QLinearMatMul" => vec![Input(7)],
        "TfIdfVectorizer" => vec![Fixed(float)],
        "ImageDecoder" => vec![Fixed(DataType::Uint8 as i32)],
        "If" => subgraph_outputs(node, "then_branch", 0),
        "Loop" => subgraph_outputs(node, "body", 1),
        "Scan" => subgraph_outputs(node, "body", 0),
        _ => Vec::new(),
    }
}

fn contrib_rules(node: &NodeProto) -> Vec<Rule> {
    use Rule::{Fixed, Input};

    let op = node.op_type();
    let float = DataType::Float as i32;
    if MS_SAME_AS_FIRST.contains(&op) {
        return vec![Input(0); node.output.len()];
    }
    match op {
        "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => {
            vec![Input(0), Fixed(float), Fixed(float), Input(0)]
        }
        "Attention" => vec![Input(0), Input(0)],
        "MultiHeadAttention" => vec![Input(0), Input(0), Input(0)],
        "EmbedLayerNormalization" => vec![Input(2), Fixed(DataType::Int32 as i32), Input(2)],
        _ => Vec::new(),
    }
}

/// The tensor attribute `name` of `node`, if it has one.
pub fn tensor_attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n TensorProto> {
    node.attribute
        .iter()
        .find(|a| a.name() == name && a.r#type() == AttributeType::Tensor)
        .and_then(|a| a.t.as_ref())
}

/// An attribute that names an element type (`to`, `dtype`), when the node has it and it is
/// not 0.
fn attr_type(node: &NodeProto, name: &str) -> Option<i32> {
    let value = node_attr_int(node, name)?;
    i32::try_from(value).ok().filter(|&t| t != 0)
}

/// The declared types of a subgraph's outputs from position `skip` on (a Loop body's first
/// output is its condition).
fn subgraph_outputs(node: &NodeProto, attribute: &str, skip: usize) -> Vec<Rule> {
    let graph = node
        .attribute
        .iter()
        .find(|a| a.name() == attribute && a.r#type() == AttributeType::Graph)
        .and_then(|a| a.g.as_ref());
    let Some(graph) = graph else { return Vec::new() };
    graph
        .output
        .iter()
        .skip(skip)
        .map(|output| ir::declared_elem_type(output).map_or(Rule::Unknown, Rule::Fixed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::proto::ValueInfoProto;
    use crate::ir::shapes::Dim;
    use crate::ir::{attr_int, make_node};

    fn typed(name: &str, elem: DataType) -> ValueInfoProto {
        ir::tensor_value_info(name, elem as i32, Some(&[Dim::Unknown]))
    }

    #[test]
    fn types_follow_inputs_attributes_and_fixed_rules() {
        let mut cast = make_node("Cast", &["ids"], &["ids_float"], "cast");
        cast.attribute.push(attr_int("to", DataType::Float as i64));
        let graph = GraphProto {
            node: vec![
                make_node("Relu", &["x"], &["a"], "relu"),
                make_node("Shape", &["a"], &["s"], "shape"),
                make_node("TopK", &["a", "k"], &["values", "indices"], "topk"),
                cast,
                make_node("Equal", &["a", "ids_float"], &["same"], "equal"),
                make_node("Where", &["same", "ids", "ids"], &["picked"], "where"),
                make_node("Mystery", &["a"], &["m"], "mystery"),
                make_node("Relu", &["m"], &["after_mystery"], "relu2"),
            ],
            input: vec![typed("x", DataType::Float), typed("ids", DataType::Int64)],
            ..GraphProto::default()
        };

        let types = ElemTypes::infer(&graph);

        assert_eq!(types.get("a"), Some(DataType::Float as i32));
        assert_eq!(types.get("s"), Some(DataType::Int64 as i32));
        assert_eq!(types.get("values"), Some(DataType::Float as i32));
        assert_eq!(types.get("indices"), Some(DataType::Int64 as i32));
        assert_eq!(types.get("ids_float"), Some(DataType::Float as i32));
        assert_eq!(types.get("same"), Some(DataType::Bool as i32));
        assert_eq!(types.get("picked"), Some(DataType::Int64 as i32));
        assert_eq!(types.get("m"), None);
        assert_eq!(types.get("after_mystery"), None);
    }

    #[test]
    fn layer_normalization_statistics_have_the_stash_type() {
        let node = make_node("LayerNormalization", &["x", "g", "b"], &["y", "mean", "inv"], "");

        let rules = output_rules(&node);

        let float = DataType::Float as i32;
        assert_eq!(rules, [Rule::Input(0), Rule::Fixed(float), Rule::Fixed(float)]);
    }

    #[test]
    fn unknown_domains_have_no_rules() {
        let mut node = make_node("Relu", &["x"], &["y"], "");
        node.domain = Some("my.domain".into());

        assert_eq!(output_rules(&node), [Rule::Unknown]);
    }
}
