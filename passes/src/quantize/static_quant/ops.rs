//! The operators static quantization handles, and how each one's tensors are quantized in the
//! QDQ format and rewritten in the QOperator format, following the rules of ONNX Runtime's
//! QDQ quantizer and of its QLinearOps writer operator by operator.

/// How the QDQ rewrite treats the tensors of one operator type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QdqRule {
    /// Conv and ConvTranspose: the input and output are activations, the weight is quantized
    /// per channel along `weight_axis` when `per_channel` is on, the bias becomes int32.
    Conv { weight_axis: usize },
    /// Gemm: like Conv, with the weight's channel axis 0 when `transB = 1` and 1 otherwise; the
    /// bias `C` becomes int32 when it is an initializer.
    Gemm,
    /// MatMul: every input and the output; an initializer input is a weight with channel
    /// axis 1.
    MatMul,
    /// Relu and Clip: folded into the quantization of their input when that input is
    /// quantized, read by nothing else and activations are asymmetric; left alone when their
    /// input is not quantized.
    RemovableActivation,
    /// Data movement (Reshape, Transpose, MaxPool ...): when the input is quantized, the
    /// output is quantized with the input's scale and zero point. Below `min_opset` the node
    /// is left alone.
    ShareInput { min_opset: i64 },
    /// Pad: every input; the output shares the input's parameters when the padding only
    /// repeats input values or pads with 0.
    Pad,
    /// Split: the input, and every output with the input's parameters.
    Split,
    /// Gather and GatherElements: when the data is a float initializer it is quantized and
    /// the output shares its parameters; otherwise the output shares them only when the data
    /// is quantized already.
    Gather,
    /// Where: the output is quantized when both value inputs are.
    Where,
    /// Instance, Layer and Batch normalization: the input and outputs are activations, the
    /// scale a weight, the bias int32.
    Normalization,
    /// Every other operator: each float input and output is quantized with its own range.
    AllTensors,
}

/// What the QOperator writer makes of one operator type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QOperatorRule {
    /// QLinearConv, with a per-channel INT8 weight along axis 0 when `per_channel` is on.
    Conv,
    /// QLinearMatMul, with a per-column weight when `per_channel` is on.
    MatMul,
    /// `com.microsoft.QGemm`, with the bias `C` in int32.
    Gemm,
    /// `com.microsoft.QLinearAdd` and `QLinearMul` of two quantized inputs.
    Binary,
    /// `com.microsoft.QLinearLeakyRelu` and `QLinearSigmoid`.
    Activation,
    /// Relu and Clip: gone when their input's parameters already clip as they do.
    Removable,
    /// `com.microsoft.QLinearAveragePool`.
    AveragePool,
    /// `com.microsoft.QLinearGlobalAveragePool`, on an input that is quantized already.
    GlobalAveragePool,
    /// `com.microsoft.QLinearConcat`.
    Concat,
    /// `com.microsoft.QLinearSoftmax`, its output at scale 1/256.
    Softmax,
    /// The same operator on the 8-bit input, its output with the input's parameters, when the
    /// input is quantized already and the model's opset is at least `min_opset`.
    Direct { min_opset: i64 },
    /// Split on the 8-bit input, every output with the input's parameters.
    Split,
    /// Pad on the 8-bit input, the padding value quantized with the input's parameters.
    Pad,
    /// Gather on a float table stored in 8 bits.
    Gather,
    /// ArgMax of the 8-bit input, when it is quantized already.
    ArgMax,
}

/// The QOperator rule for an operator type of the default domain; `None` where ONNX Runtime
/// has no QOperator form (ConvTranspose, the normalizations, Slice, TopK, Where ...), and the
/// node stays in float.
pub(crate) fn qoperator_rule(op_type: &str) -> Option<QOperatorRule> {
    use QOperatorRule::*;
    Some(match op_type {
        "Conv" => Conv,
        "MatMul" => MatMul,
        "Gemm" => Gemm,
        "Add" | "Mul" => Binary,
        "LeakyRelu" | "Sigmoid" => Activation,
        "Relu" | "Clip" => Removable,
        "AveragePool" => AveragePool,
        "GlobalAveragePool" => GlobalAveragePool,
        "Concat" => Concat,
        "Softmax" => Softmax,
        "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Flatten" => Direct { min_opset: 0 },
        "MaxPool" => Direct { min_opset: 12 },
        "Resize" => Direct { min_opset: 11 },
        "Split" => Split,
        "Pad" => Pad,
        "Gather" => Gather,
        "ArgMax" => ArgMax,
        _ => return None,
    })
}

/// One operator that static quantization can handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StaticOp {
    pub op_type: &'static str,
    /// The operator's domain: `""` for the default domain.
    pub domain: &'static str,
    pub qdq: QdqRule,
}

const fn op(op_type: &'static str, qdq: QdqRule) -> StaticOp {
    StaticOp { op_type, domain: "", qdq }
}

const SHARE: QdqRule = QdqRule::ShareInput { min_opset: 0 };

/// Every operator type static quantization handles: the union of what ONNX Runtime's tool
/// quantizes statically in either format, which is also the default of `op_types`.
pub(crate) const STATIC_OPS: [StaticOp; 34] = [
    op("Conv", QdqRule::Conv { weight_axis: 0 }),
    op("ConvTranspose", QdqRule::Conv { weight_axis: 1 }),
    op("Gemm", QdqRule::Gemm),
    op("MatMul", QdqRule::MatMul),
    op("Add", QdqRule::AllTensors),
    op("Mul", QdqRule::AllTensors),
    op("Relu", QdqRule::RemovableActivation),
    op("Clip", QdqRule::RemovableActivation),
    op("LeakyRelu", QdqRule::AllTensors),
    op("Sigmoid", QdqRule::AllTensors),
    op("Softmax", QdqRule::AllTensors),
    op("MaxPool", QdqRule::ShareInput { min_opset: 12 }),
    op("AveragePool", SHARE),
    op("GlobalAveragePool", QdqRule::AllTensors),
    op("Concat", QdqRule::AllTensors),
    op("Reshape", SHARE),
    op("Transpose", SHARE),
    op("Squeeze", SHARE),
    op("Unsqueeze", SHARE),
    op("Flatten", SHARE),
    op("Slice", SHARE),
    op("TopK", SHARE),
    op("Resize", QdqRule::ShareInput { min_opset: 11 }),
    op("Pad", QdqRule::Pad),
    op("Split", QdqRule::Split),
    op("Gather", QdqRule::Gather),
    op("GatherElements", QdqRule::Gather),
    op("Where", QdqRule::Where),
    op("InstanceNormalization", QdqRule::Normalization),
    op("LayerNormalization", QdqRule::Normalization),
    op("BatchNormalization", QdqRule::Normalization),
    op("ArgMax", QdqRule::AllTensors),
    op("CumSum", QdqRule::AllTensors),
    StaticOp {
        op_type: "EmbedLayerNormalization",
        domain: "com.microsoft",
        qdq: QdqRule::AllTensors,
    },
];

/// The operator types static quantization handles, in the order of [`STATIC_OPS`].
pub fn supported_op_types() -> impl Iterator<Item = &'static str> {
    STATIC_OPS.iter().map(|op| op.op_type)
}

/// The entry for an operator type, if static quantization handles it.
pub(crate) fn find(op_type: &str) -> Option<&'static StaticOp> {
    STATIC_OPS.iter().find(|op| op.op_type == op_type)
}

/// Whether a node's domain is the one the entry names (`""` and `"ai.onnx"` are the same).
pub(crate) fn domain_matches(op: &StaticOp, node_domain: &str) -> bool {
    let canonical = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
    canonical(op.domain) == canonical(node_domain)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_operator_is_listed_once() {
        let names: HashSet<&str> = supported_op_types().collect();
        assert_eq!(names.len(), STATIC_OPS.len());
        for name in ["Conv", "MatMul", "Relu", "MaxPool", "Softmax", "Where", "ArgMax"] {
            assert!(names.contains(name), "{name} is missing");
        }
    }

    #[test]
    fn every_qoperator_rule_is_of_a_listed_operator() {
        let listed: HashSet<&str> = supported_op_types().collect();
        let with_rule: Vec<&str> =
            supported_op_types().filter(|op| qoperator_rule(op).is_some()).collect();
        assert_eq!(with_rule.len(), 24, "{with_rule:?}");
        assert!(with_rule.iter().all(|op| listed.contains(op)));
        assert_eq!(qoperator_rule("ConvTranspose"), None);
    }

    #[test]
    fn domains_match_by_canonical_name() {
        let conv = find("Conv").unwrap();
        assert!(domain_matches(conv, "") && domain_matches(conv, "ai.onnx"));
        assert!(!domain_matches(conv, "com.microsoft"));
        assert!(domain_matches(find("EmbedLayerNormalization").unwrap(), "com.microsoft"));
    }
}
