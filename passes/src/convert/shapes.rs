//! The `fix_shapes` pass: symbolic dimensions (`batch`, `sequence`) become fixed sizes, for
//! NPUs and runtimes that only run models of static shapes.
//!
//! A dimension named in `dims` takes its size wherever the name appears: in the graph's
//! inputs, outputs and value infos, and in those of every subgraph, since ONNX gives one name
//! one size across a model. An input named in `inputs` gets the whole shape listed, which
//! also fixes dimensions that have no name or no size at all; a symbolic dimension of that
//! input then takes its size everywhere too. Dimensions of outputs and intermediate values
//! that are unknown without a name stay unknown: the runtime infers them when it loads the
//! model. Nodes and initializers are not touched, so a model whose graph builds a shape from
//! constants that contradict the sizes given fails when it is loaded, not here.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, info, info_span, warn};

use crate::ir::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::ir::proto::tensor_shape_proto::Dimension;
use crate::ir::proto::type_proto::Value as TypeValue;
use crate::ir::proto::{
    type_proto, GraphProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::pass::{Configured, Pass, PassContext, PassError, Runtime};

/// The configuration of [`FixShapes`].
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FixShapesConfig {
    // The size of each symbolic dimension, by name. Described in `dims_schema`, which a doc
    // comment here would override.
    #[serde(default)]
    #[schemars(schema_with = "dims_schema")]
    pub dims: BTreeMap<String, i64>,

    // The whole shape of graph inputs, by input name. Described in `inputs_schema`.
    #[serde(default)]
    #[schemars(schema_with = "inputs_schema")]
    pub inputs: BTreeMap<String, Vec<i64>>,
}

fn dims_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"type": "integer", "format": "int64", "minimum": 1},
        "description": "The size of each symbolic dimension, by name, such as \
                        `{batch: 1, sequence: 128}`. The name is replaced by its size wherever \
                        it appears: graph inputs, outputs and value infos, of subgraphs too.",
        "default": {},
    })
}

fn inputs_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "type": "array",
            "items": {"type": "integer", "format": "int64", "minimum": 1},
        },
        "description": "The whole shape of graph inputs, by input name, such as \
                        `{pixels: [1, 3, 224, 224]}`, for inputs whose dimensions have no name \
                        or no size. A size must agree with a size the input already has; a \
                        symbolic dimension of the input takes its size everywhere it appears.",
        "default": {},
    })
}

/// Fixes symbolic and unknown dimensions of a model to given sizes.
#[derive(Clone, Debug)]
pub struct FixShapes {
    config: FixShapesConfig,
}

impl Configured for FixShapes {
    const NAME: &'static str = "fix_shapes";
    type Config = FixShapesConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        if config.dims.is_empty() && config.inputs.is_empty() {
            return Err(config_error(
                "nothing to fix; hint: give `dims` (sizes of symbolic dimensions by name, \
                 `{batch: 1}`) or `inputs` (shapes of inputs by name, `{x: [1, 3, 224, 224]}`)"
                    .into(),
            ));
        }

        for (name, &size) in &config.dims {
            if name.is_empty() {
                return Err(config_error("`dims` names a dimension with an empty name".into()));
            }
            if size < 1 {
                return Err(config_error(format!(
                    "`dims.{name}` is {size}; a dimension's size must be at least 1"
                )));
            }
        }

        for (input, shape) in &config.inputs {
            if let Some(position) = shape.iter().position(|&size| size < 1) {
                return Err(config_error(format!(
                    "`inputs.{input}` gives dimension {position} size {}; a dimension's size \
                     must be at least 1",
                    shape[position]
                )));
            }
        }
        Ok(FixShapes { config })
    }
}

impl FixShapes {
    /// The pass with the given configuration (see [`Configured::from_config`] for checks).
    pub fn new(config: FixShapesConfig) -> Result<Self, PassError> {
        Self::from_config(config)
    }
}

impl Pass for FixShapes {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The names in `dims` and `inputs`, and the sizes given, against the source model: no
    /// pass renames a graph input or a symbolic dimension.
    fn check_source(&self, model: &ModelProto, _runtime: Runtime) -> Result<(), PassError> {
        let Some(graph) = model.graph.as_ref() else { return Ok(()) };
        // A cheap copy: tensor data is shared between copies.
        let symbols = symbols(&mut graph.clone());
        self.sizes(graph, &symbols, &fed_inputs(graph)).map(|_| ())
    }

    fn run(&self, mut model: ModelProto, _context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("fix_shapes").entered();
        let graph = model.graph.as_mut().ok_or_else(|| PassError::Model {
            pass: Self::NAME,
            reason: "the model has no graph".into(),
        })?;

        let symbols = symbols(graph);
        let fed = fed_inputs(graph);
        let unknown_inputs: Vec<&str> = graph
            .input
            .iter()
            .filter(|value| fed.contains(value.name()) && !is_static(value))
            .map(|value| value.name())
            .collect();
        if symbols.is_empty() && unknown_inputs.is_empty() {
            return Err(PassError::Unchanged {
                pass: Self::NAME,
                reason: "every input of the model already has a fixed shape, and no dimension \
                         anywhere has a name"
                    .into(),
            });
        }

        let sizes = self.sizes(graph, &symbols, &fed)?;
        let mut fixed: BTreeMap<String, usize> = BTreeMap::new();
        for_each_shape_mut(graph, &mut |shape| {
            for dim in &mut shape.dim {
                let Some(DimValue::DimParam(name)) = &dim.value else { continue };
                if let Some(&size) = sizes.get(name) {
                    *fixed.entry(name.clone()).or_default() += 1;
                    dim.value = Some(DimValue::DimValue(size));
                }
            }
        });
        let mut reshaped = Vec::new();
        for (input, shape) in &self.config.inputs {
            if set_input_shape(graph, input, shape) {
                reshaped.push(input.as_str());
            }
        }

        if fixed.is_empty() && reshaped.is_empty() {
            return Err(PassError::Unchanged {
                pass: Self::NAME,
                reason: "the sizes given are those the model already has".into(),
            });
        }
        let fixed_list: Vec<String> = fixed
            .iter()
            .map(|(name, count)| format!("{name}={} ({count} place(s))", sizes[name]))
            .collect();
        info!("fixed dimensions {}; inputs reshaped: {}", fixed_list.join(", "), {
            if reshaped.is_empty() {
                "none".to_string()
            } else {
                reshaped.join(", ")
            }
        });
        warn_if_still_dynamic(graph);
        Ok(model)
    }
}

impl FixShapes {
    /// The size of every symbolic dimension to replace: those of `dims`, and those of the
    /// inputs that `inputs` shapes. Checks every name and size against the model.
    fn sizes(
        &self,
        graph: &GraphProto,
        symbols: &BTreeSet<String>,
        fed: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, i64>, PassError> {
        let mut sizes: BTreeMap<String, (i64, String)> = BTreeMap::new();
        for (name, &size) in &self.config.dims {
            if !symbols.contains(name) {
                let known = if symbols.is_empty() {
                    "the model has no symbolic dimensions; hint: give shapes of inputs whose \
                     dimensions have no name through `inputs`"
                        .to_string()
                } else {
                    format!("its symbolic dimensions are: {}", join(symbols))
                };
                return Err(config_error(format!(
                    "`dims` names `{name}`, which no dimension of the model is called; {known}"
                )));
            }
            sizes.insert(name.clone(), (size, format!("`dims.{name}`")));
        }

        for (input, shape) in &self.config.inputs {
            let value = graph
                .input
                .iter()
                .find(|value| value.name() == input && fed.contains(value.name()))
                .ok_or_else(|| {
                    config_error(format!(
                        "`inputs` names `{input}`, which is not an input of the model; its \
                         inputs are: {}",
                        join(fed)
                    ))
                })?;
            let declared = input_dims(value)?;
            let Some(declared) = declared else { continue };
            if declared.len() != shape.len() {
                return Err(config_error(format!(
                    "`inputs.{input}` lists {} dimension(s), but input `{input}` has {} ({})",
                    shape.len(),
                    declared.len(),
                    show_dims(declared)
                )));
            }

            for (position, (dim, &size)) in declared.iter().zip(shape).enumerate() {
                match &dim.value {
                    // Exporters write -1 (or 0) for a dimension without a size.
                    Some(DimValue::DimValue(known)) if *known > 0 && *known != size => {
                        return Err(config_error(format!(
                            "`inputs.{input}` gives dimension {position} size {size}, but input \
                             `{input}` fixes it to {known} ({})",
                            show_dims(declared)
                        )));
                    }
                    Some(DimValue::DimParam(name)) => {
                        let origin = format!("`inputs.{input}`");
                        match sizes.get(name) {
                            Some((other, from)) if *other != size => {
                                return Err(config_error(format!(
                                    "dimension `{name}` gets size {other} from {from} and size \
                                     {size} from {origin}; one name has one size in a model"
                                )));
                            }
                            Some(_) => {}
                            None => {
                                sizes.insert(name.clone(), (size, origin));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(sizes.into_iter().map(|(name, (size, _))| (name, size)).collect())
    }
}

fn config_error(message: String) -> PassError {
    PassError::Config { pass: FixShapes::NAME, message }
}

/// The graph inputs that are fed at run time: those that are not also initializers.
fn fed_inputs(graph: &GraphProto) -> BTreeSet<String> {
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    graph
        .input
        .iter()
        .map(|value| value.name())
        .filter(|name| !initializers.contains(name))
        .map(str::to_string)
        .collect()
}

/// Every symbolic dimension name of the graph's and its subgraphs' declared values.
fn symbols(graph: &mut GraphProto) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for_each_shape_mut(graph, &mut |shape| {
        for dim in &shape.dim {
            if let Some(DimValue::DimParam(name)) = &dim.value {
                names.insert(name.clone());
            }
        }
    });
    names
}

/// Whether a value is a tensor whose every dimension has a size.
fn is_static(value: &ValueInfoProto) -> bool {
    match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(tensor)) => tensor.shape.as_ref().is_some_and(|shape| {
            shape.dim.iter().all(|d| matches!(d.value, Some(DimValue::DimValue(size)) if size > 0))
        }),
        // Sequences, maps and other types have no shape this pass can fix.
        _ => true,
    }
}

/// The declared dimensions of a tensor input; `None` when it declares no shape.
fn input_dims(value: &ValueInfoProto) -> Result<Option<&[Dimension]>, PassError> {
    match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(tensor)) => {
            Ok(tensor.shape.as_ref().map(|shape| shape.dim.as_slice()))
        }
        _ => Err(config_error(format!(
            "`inputs` names `{}`, which is not a tensor; only tensor inputs have a shape to fix",
            value.name()
        ))),
    }
}

/// Gives graph input `name` the dimensions `sizes`, keeping each dimension's denotation.
/// Returns whether anything changed.
fn set_input_shape(graph: &mut GraphProto, name: &str, sizes: &[i64]) -> bool {
    let Some(value) = graph.input.iter_mut().find(|value| value.name() == name) else {
        return false;
    };
    let Some(TypeValue::TensorType(tensor)) = value.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        return false;
    };

    let shape = tensor.shape.get_or_insert_with(TensorShapeProto::default);
    let wanted: Vec<Dimension> = sizes
        .iter()
        .enumerate()
        .map(|(position, &size)| Dimension {
            denotation: shape.dim.get(position).and_then(|d| d.denotation.clone()),
            value: Some(DimValue::DimValue(size)),
        })
        .collect();
    if shape.dim == wanted {
        return false;
    }
    debug!(input = name, ?sizes, "set the input's shape");
    shape.dim = wanted;
    true
}

/// Calls `visit` on every shape declared in `graph` (inputs, outputs, value infos, nested in
/// sequence, map and optional types) and in the subgraphs of its nodes.
fn for_each_shape_mut(graph: &mut GraphProto, visit: &mut dyn FnMut(&mut TensorShapeProto)) {
    let values = graph.input.iter_mut().chain(&mut graph.output).chain(&mut graph.value_info);
    for value in values {
        if let Some(ty) = value.r#type.as_mut() {
            type_shapes_mut(ty, visit);
        }
    }
    for node in &mut graph.node {
        for attribute in &mut node.attribute {
            if let Some(subgraph) = attribute.g.as_mut() {
                for_each_shape_mut(subgraph, visit);
            }
            for subgraph in &mut attribute.graphs {
                for_each_shape_mut(subgraph, visit);
            }
        }
    }
}

fn type_shapes_mut(ty: &mut TypeProto, visit: &mut dyn FnMut(&mut TensorShapeProto)) {
    match ty.value.as_mut() {
        Some(TypeValue::TensorType(type_proto::Tensor { shape: Some(shape), .. }))
        | Some(TypeValue::SparseTensorType(type_proto::SparseTensor {
            shape: Some(shape), ..
        })) => visit(shape),
        Some(TypeValue::SequenceType(sequence)) => {
            if let Some(inner) = sequence.elem_type.as_mut() {
                type_shapes_mut(inner, visit);
            }
        }
        Some(TypeValue::OptionalType(optional)) => {
            if let Some(inner) = optional.elem_type.as_mut() {
                type_shapes_mut(inner, visit);
            }
        }
        Some(TypeValue::MapType(map)) => {
            if let Some(inner) = map.value_type.as_mut() {
                type_shapes_mut(inner, visit);
            }
        }
        _ => {}
    }
}

/// Warns about fed inputs that still have a dimension without a size: the model is not
/// static yet, which is what the pass is usually run for.
fn warn_if_still_dynamic(graph: &GraphProto) {
    let fed = fed_inputs(graph);
    for value in graph.input.iter().filter(|v| fed.contains(v.name()) && !is_static(v)) {
        let shape = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(tensor)) => {
                tensor.shape.as_ref().map_or("no shape".to_string(), |s| show_dims(&s.dim))
            }
            _ => continue,
        };
        warn!(
            "input `{}` still has dimensions without a size ({shape}); give them through `dims` \
             or `inputs` if the target needs static shapes",
            value.name()
        );
    }
}

/// `[N, 3, ?, 224]`: sizes, names, and `?` for unknown dimensions.
fn show_dims(dims: &[Dimension]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|dim| match &dim.value {
            Some(DimValue::DimValue(size)) => size.to_string(),
            Some(DimValue::DimParam(name)) => name.clone(),
            None => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn join(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir;
    use crate::ir::proto::tensor_proto::DataType;
    use crate::ir::shapes::Dim;

    fn tensor_value(name: &str, dims: &[Dim]) -> ValueInfoProto {
        ir::tensor_value_info(name, DataType::Float as i32, Some(dims))
    }

    fn sym(name: &str) -> Dim {
        Dim::Symbol(name.into())
    }

    fn size(n: i64) -> Dim {
        Dim::Known(n)
    }

    fn model(inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> ModelProto {
        let graph = GraphProto { input: inputs, output: outputs, ..Default::default() };
        ModelProto { graph: Some(graph), ..Default::default() }
    }

    fn run(config: serde_json::Value, model: &ModelProto) -> Result<ModelProto, PassError> {
        let config = serde_json::from_value(config).expect("a valid config");
        FixShapes::new(config)?.run(model.clone(), &PassContext::default())
    }

    fn dims_of(value: &ValueInfoProto) -> String {
        match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(t)) => show_dims(&t.shape.as_ref().unwrap().dim),
            _ => panic!("not a tensor"),
        }
    }

    #[test]
    fn a_name_inside_a_sequence_type_is_fixed_too() {
        let element = tensor_value("e", &[sym("N"), size(3)]).r#type.unwrap();
        let sequence = type_proto::Sequence { elem_type: Some(Box::new(element)) };
        let output = ValueInfoProto {
            name: Some("s".into()),
            r#type: Some(TypeProto {
                value: Some(TypeValue::SequenceType(Box::new(sequence))),
                ..Default::default()
            }),
            ..Default::default()
        };
        let source = model(vec![tensor_value("x", &[sym("N"), size(3)])], vec![output]);

        let fixed = run(serde_json::json!({"dims": {"N": 2}}), &source).unwrap();

        let graph = fixed.graph.unwrap();
        assert_eq!(dims_of(&graph.input[0]), "[2, 3]");
        let Some(TypeValue::SequenceType(sequence)) =
            graph.output[0].r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("the output is still a sequence")
        };
        let Some(TypeValue::TensorType(element)) =
            sequence.elem_type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("of tensors")
        };
        assert_eq!(show_dims(&element.shape.as_ref().unwrap().dim), "[2, 3]");
    }

    #[test]
    fn an_input_without_a_shape_gets_the_whole_shape() {
        let input = ir::tensor_value_info("x", DataType::Float as i32, None);
        let source = model(vec![input], vec![]);

        let fixed = run(serde_json::json!({"inputs": {"x": [4, 5]}}), &source).unwrap();

        assert_eq!(dims_of(&fixed.graph.unwrap().input[0]), "[4, 5]");
    }

    #[test]
    fn denotations_are_kept() {
        let mut input = tensor_value("x", &[sym("N"), Dim::Unknown]);
        if let Some(TypeValue::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() {
            t.shape.as_mut().unwrap().dim[1].denotation = Some("DATA_CHANNEL".into());
        }
        let source = model(vec![input], vec![]);

        let fixed = run(serde_json::json!({"inputs": {"x": [1, 3]}}), &source).unwrap();

        let graph = fixed.graph.unwrap();
        let Some(TypeValue::TensorType(t)) = graph.input[0].r#type.as_ref().unwrap().value.as_ref()
        else {
            panic!("a tensor")
        };
        assert_eq!(t.shape.as_ref().unwrap().dim[1].denotation(), "DATA_CHANNEL");
        assert_eq!(dims_of(&graph.input[0]), "[1, 3]");
    }

    #[test]
    fn initializers_listed_as_inputs_are_not_inputs_to_fix() {
        let mut source =
            model(vec![tensor_value("x", &[size(1)]), tensor_value("w", &[sym("K")])], vec![]);
        let weight = crate::ir::proto::TensorProto { name: Some("w".into()), ..Default::default() };
        source.graph.as_mut().unwrap().initializer.push(weight);

        let error = run(serde_json::json!({"inputs": {"w": [3]}}), &source).unwrap_err();

        let message = error.to_string();
        assert!(message.contains("not an input") && message.contains("`x`"), "{message}");
    }
}
