//! Checks a candidate model against its target's constraints, so that a model the device
//! could not run as built (a symbolic batch on an NPU, dynamic INT8 kernels where only QDQ runs)
//! fails as a candidate with the reason instead of being measured on the CPU fallback.

use pipeline_passes::ir;
use pipeline_passes::ir::proto::ModelProto;
use pipeline_passes::ir::shapes::Dim;

use super::{Constraint, Target};

/// Operators of quantized models that are not QDQ: dynamic quantization, QOperator kernels and
/// ONNX Runtime's weight-only and quantized contrib kernels.
const NOT_QDQ: [&str; 16] = [
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QLinearConcat",
    "QLinearGlobalAveragePool",
    "QLinearSigmoid",
    "QGemm",
    "QAttention",
    "DynamicQuantizeLSTM",
    "QEmbedLayerNormalization",
    "MatMulNBits",
    "GatherBlockQuantized",
];

/// How many offending nodes or inputs one reason names.
const MAX_LISTED: usize = 3;

/// Each way `model` breaks one of `target`'s constraints, in words with what to do; empty when
/// it keeps them all.
pub fn violations(target: Target, model: &ModelProto) -> Vec<String> {
    let mut found = Vec::new();
    for constraint in target.profile().constraints {
        let why = match constraint {
            Constraint::StaticShapes => symbolic_inputs(model).map(|(inputs, first)| {
                // The example names the model's own dimension or input, so that it works.
                let example = match first {
                    Free::Symbol(symbol) => format!("`fix_shapes: {{dims: {{{symbol}: 1}}}}`"),
                    Free::Unnamed(input) => {
                        format!("`fix_shapes: {{inputs: {{{input}: [1, ...]}}}}` with its sizes")
                    }
                };
                format!(
                    "target `{}` needs static shapes, and {}; hint: add `fix_shapes` (e.g. \
                     {example}) before the other passes",
                    target.name(),
                    inputs
                )
            }),
            Constraint::QdqOnly => non_qdq_nodes(model).map(|nodes| {
                format!(
                    "target `{}` runs QDQ quantization only, and the model holds {nodes}; hint: \
                     use `quantize_static` with `format: qdq`",
                    target.name()
                )
            }),
            // A permission, not a restriction.
            Constraint::Uint16Activations => None,
        };
        found.extend(why);
    }
    found
}

/// The first dimension without a size that a hint can name.
enum Free {
    /// A symbolic dimension, by name.
    Symbol(String),
    /// An input with a dimension that has neither a size nor a name.
    Unnamed(String),
}

/// The graph inputs with a dimension that is not a fixed size, as words, and the first such
/// dimension (a symbol where there is one); `None` if none.
fn symbolic_inputs(model: &ModelProto) -> Option<(String, Free)> {
    let graph = model.graph.as_ref()?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name()).collect();
    let mut named = Vec::new();
    let mut first_symbol = None;
    let mut first_unnamed = None;
    for input in graph.input.iter().filter(|i| !initializers.contains(i.name())) {
        let Some(dims) = ir::declared_type(input).and_then(|t| t.dims) else {
            named.push(format!("input `{}` has no declared shape", input.name()));
            first_unnamed.get_or_insert_with(|| input.name().to_string());
            continue;
        };
        let symbolic = dims.iter().find_map(|dim| match dim {
            Dim::Known(size) if *size > 0 => None,
            Dim::Symbol(name) => {
                first_symbol.get_or_insert_with(|| name.clone());
                Some(format!("`{name}`"))
            }
            _ => {
                first_unnamed.get_or_insert_with(|| input.name().to_string());
                Some("a dimension without a size or a name".to_string())
            }
        });
        if let Some(dim) = symbolic {
            named.push(format!("input `{}` has the dimension {dim}", input.name()));
        }
    }
    let first = match (first_symbol, first_unnamed) {
        (Some(symbol), _) => Free::Symbol(symbol),
        (None, unnamed) => Free::Unnamed(unnamed.unwrap_or_default()),
    };
    list(named).map(|inputs| (inputs, first))
}

/// The nodes whose operator is a quantized kernel other than QDQ, as words; `None` if none.
fn non_qdq_nodes(model: &ModelProto) -> Option<String> {
    let graph = model.graph.as_ref()?;
    let named = graph
        .node
        .iter()
        .filter(|node| NOT_QDQ.contains(&node.op_type()))
        .map(|node| match node.name() {
            "" => format!("a {}", node.op_type()),
            name => format!("{} `{name}`", node.op_type()),
        })
        .collect();
    list(named)
}

/// `a, b, c and N more`, or `None` for an empty list.
fn list(items: Vec<String>) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let mut text = items.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_passes::ir::float_value_info;
    use pipeline_passes::ir::proto::GraphProto;

    fn model(input_dims: &[i64], op: &str) -> ModelProto {
        let graph = GraphProto {
            node: vec![ir::make_node(op, &["x", "w"], &["y"], "fc")],
            input: vec![float_value_info("x", input_dims)],
            ..Default::default()
        };
        ModelProto { graph: Some(graph), ..Default::default() }
    }

    #[test]
    fn npu_targets_refuse_symbolic_inputs_and_non_qdq_kernels() {
        let bad = model(&[-1, 4], "MatMulInteger");
        let found = violations(Target::NpuQnn, &bad);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("needs static shapes") && found[0].contains("`x`"), "{found:?}");
        assert!(found[0].contains("`fix_shapes: {inputs: {x: [1, ...]}}`"), "{found:?}");
        assert!(found[1].contains("MatMulInteger `fc`"), "{found:?}");

        assert!(violations(Target::NpuQnn, &model(&[1, 4], "MatMul")).is_empty());
        assert!(violations(Target::NpuOpenvino, &model(&[1, 4], "MatMul")).is_empty());
    }

    /// The hint's example names the model's own symbolic dimension, so that it works as
    /// written (it said `batch` for a model whose dimension is `N`).
    #[test]
    fn the_static_shape_hint_names_the_models_dimension() {
        use pipeline_passes::ir::proto::tensor_shape_proto::dimension::Value as DimValue;
        use pipeline_passes::ir::proto::type_proto;

        let mut named = model(&[1, 4], "MatMul");
        let graph = named.graph.as_mut().expect("a graph");
        let Some(type_proto::Value::TensorType(tensor)) =
            graph.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            panic!("a tensor input")
        };
        let shape = tensor.shape.as_mut().expect("a shape");
        shape.dim[0].value = Some(DimValue::DimParam("N".into()));

        let found = violations(Target::NpuQnn, &named);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("the dimension `N`"), "{found:?}");
        assert!(found[0].contains("`fix_shapes: {dims: {N: 1}}`"), "{found:?}");
    }

    #[test]
    fn cpu_and_gpu_targets_take_any_model() {
        let any = model(&[-1, 4], "MatMulNBits");
        for target in [Target::Cpu, Target::GpuCuda] {
            assert!(violations(target, &any).is_empty(), "{}", target.name());
        }
    }
}
