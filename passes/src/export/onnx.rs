//! `export: {format: onnx}`: how the run writes the model file, and the opset and IR version
//! it declares.
//!
//! Setting the opset or the IR version rewrites the model's declarations, after the checks
//! of [`set_opset`] and [`set_ir_version`] against the tables of [`super::opsets`]; no node
//! is converted. How the model is written (inline or with its large tensors in one data
//! file) is for the engine, which saves the model: it reads [`OnnxWrite`] from the step's
//! configuration ([`super::onnx_write`]) and stamps the model's provenance
//! ([`stamp_provenance`]), which the pass cannot know.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};

use super::opsets::{DEPRECATED, LATEST_IR_VERSION, OPERATORS, OPSET_IR_VERSIONS};
use crate::ir::proto::{GraphProto, ModelProto, StringStringEntryProto, TypeProto};
use crate::ir::{ExternalData, SaveOptions};

/// The `metadata_props` key of the name of the recipe that made the model.
pub const RECIPE_KEY: &str = "pipeline.recipe";

/// The `metadata_props` key of the passes applied to the model, in order, with their
/// configurations (`quantize_dynamic(per_channel=false) -> export(format=onnx)`).
pub const PASSES_KEY: &str = "pipeline.passes";

/// The largest protobuf a model file may be.
const PROTOBUF_LIMIT: usize = i32::MAX as usize;

/// Tensors of at least this many bytes go to the data file; smaller ones stay in the model,
/// as ONNX's own tools do by default.
const TENSOR_THRESHOLD: usize = 1024;

/// The model size above which `external_data: auto` writes a data file, by default.
pub const DEFAULT_SIZE_THRESHOLD: u64 = 1 << 30;

/// Whether the model's large tensors are written to a data file beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExternalDataMode {
    /// A data file when the model is larger than `size_threshold`.
    #[default]
    Auto,
    /// Always a data file (when some tensor holds 1 KiB or more).
    Always,
    /// Never: the model is one file, which protobuf limits to 2 GiB.
    Never,
}

impl ExternalDataMode {
    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            ExternalDataMode::Auto => "auto",
            ExternalDataMode::Always => "always",
            ExternalDataMode::Never => "never",
        }
    }
}

/// A byte count written as a number or a size with a unit (`1048576`, `"1MiB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ByteSizeVisitor)
    }
}

struct ByteSizeVisitor;

const BYTES_HINT: &str = "hint: write bytes like `1048576`, or a size like `\"1MiB\"` or \
                          `\"500MB\"`";

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number of bytes, or a size like `\"1MiB\"`")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom(format!("expected 0 bytes or more, found {v}; {BYTES_HINT}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
        Err(E::custom(format!("expected a whole number of bytes, found {v}; {BYTES_HINT}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        crate::bytes::parse_bytes(v)
            .map(ByteSize)
            .ok_or_else(|| E::custom(format!("`{v}` is not a size; {BYTES_HINT}")))
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of bytes, or a size with a unit: kB, MB, GB (powers of \
                            1000) or KiB, MiB, GiB (powers of 1024), like \"1MiB\"",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": crate::bytes::SIZE_PATTERN},
            ],
        })
    }
}

/// How the engine writes a model that `export: {format: onnx}` made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnnxWrite {
    pub external_data: ExternalDataMode,
    /// With [`ExternalDataMode::Auto`], models whose protobuf is larger than this many bytes
    /// are written with a data file.
    pub size_threshold: u64,
}

impl OnnxWrite {
    /// How to save `model` as the file `file_name`: inline, or with its tensors of 1 KiB or
    /// more in the one data file `<file_name>.data` beside it.
    pub fn save_options(&self, model: &ModelProto, file_name: &str) -> SaveOptions {
        let size = prost::Message::encoded_len(model) as u64;
        let external = match self.external_data {
            ExternalDataMode::Always => true,
            ExternalDataMode::Never => false,
            ExternalDataMode::Auto => size > self.size_threshold,
        };
        let external_data = external.then(|| ExternalData {
            location: format!("{file_name}.data"),
            size_threshold: TENSOR_THRESHOLD,
        });
        SaveOptions { external_data }
    }

    /// Why `model` cannot be written this way, if it cannot: one file holds at most 2 GiB.
    pub fn refusal(&self, model: &ModelProto) -> Option<String> {
        let size = prost::Message::encoded_len(model);
        (self.external_data == ExternalDataMode::Never && size > PROTOBUF_LIMIT).then(|| {
            format!(
                "`external_data: never` asks for one file, and the model takes {size} bytes, \
                 above protobuf's limit of 2 GiB; hint: use `external_data: auto`"
            )
        })
    }
}

/// Records in `model`'s metadata the recipe that made it and the passes applied
/// ([`RECIPE_KEY`], [`PASSES_KEY`]), replacing earlier entries of those keys.
pub fn stamp_provenance(model: &mut ModelProto, recipe: &str, passes: &str) {
    model.metadata_props.retain(|entry| entry.key() != RECIPE_KEY && entry.key() != PASSES_KEY);
    for (key, value) in [(RECIPE_KEY, recipe), (PASSES_KEY, passes)] {
        model.metadata_props.push(StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
        });
    }
}

/// Sets the opset of the default domain to `target`, when every operator of that domain in
/// the model has the same definition at `target` as at the model's opset; otherwise says
/// which do not and why. The model's IR version must suit `target` unless the caller sets
/// it next.
pub fn set_opset(model: &mut ModelProto, target: i64) -> Result<(), String> {
    let current = crate::ir::graph::opset_version(model, "")
        .ok_or("the model imports no opset of the default ONNX domain")?;
    if !OPSET_IR_VERSIONS.iter().any(|(opset, _)| *opset == target) {
        return Err(format!(
            "opset {target} is no released opset of the default ONNX domain (known: 1, 5 to \
             {}); hint: leave `opset` out to keep the model's opset {current}",
            OPSET_IR_VERSIONS.last().map_or(0, |(opset, _)| *opset)
        ));
    }
    if model.functions.iter().any(|f| f.opset_import.iter().any(|o| is_default(o.domain()))) {
        return Err("the model holds local functions over the default domain, whose opset \
                    this pass does not change; hint: leave `opset` out"
            .into());
    }

    let mut ops = BTreeSet::new();
    if let Some(graph) = &model.graph {
        default_domain_ops(graph, &mut ops);
    }
    let problems: Vec<String> =
        ops.iter().filter_map(|op| op_problem(op, current, target)).collect();
    if !problems.is_empty() {
        return Err(format!(
            "opset {current} cannot be set to {target}: {}; hint: leave `opset` out to keep \
             {current}, or convert the model with a tool that rewrites these operators",
            problems.join("; ")
        ));
    }

    for import in &mut model.opset_import {
        if is_default(import.domain()) {
            import.version = Some(target);
        }
    }
    Ok(())
}

/// Sets the model's IR version to `target`, when the model holds nothing that `target`
/// lacks; otherwise says what.
pub fn set_ir_version(model: &mut ModelProto, target: i64) -> Result<(), String> {
    if !(3..=LATEST_IR_VERSION).contains(&target) {
        return Err(format!(
            "IR version {target} is not one of 3 to {LATEST_IR_VERSION}; hint: leave \
             `ir_version` out to keep the model's {}",
            model.ir_version()
        ));
    }
    check_ir_version(model, target)?;
    model.ir_version = Some(target);
    Ok(())
}

/// Why IR version `ir_version` cannot declare `model`, if it cannot: the opset of the
/// default domain, local functions (IR 8), initializers that are not graph inputs (IR 4),
/// and the element types of tensors and declared values.
pub fn check_ir_version(model: &ModelProto, ir_version: i64) -> Result<(), String> {
    let mut needs = Vec::new();
    if let Some(opset) = crate::ir::graph::opset_version(model, "") {
        let least = OPSET_IR_VERSIONS.iter().find(|(o, _)| *o == opset).map(|(_, ir)| *ir);
        if let Some(least) = least.filter(|least| *least > ir_version) {
            needs.push(format!("opset {opset} needs IR version {least}"));
        }
    }
    if ir_version < 8 && !model.functions.is_empty() {
        needs.push("local functions need IR version 8".to_string());
    }
    if let Some(graph) = &model.graph {
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        let bare = graph.initializer.iter().find(|t| !inputs.contains(&t.name()));
        if let (true, Some(tensor)) = (ir_version < 4, bare) {
            needs.push(format!(
                "initializer `{}` is no graph input, which needs IR version 4",
                tensor.name()
            ));
        }
        let mut types = Vec::new();
        graph_elem_types(graph, &mut types);
        for elem_type in types {
            if let Some((name, least)) = elem_type_ir(elem_type).filter(|(_, v)| *v > ir_version) {
                needs.push(format!("element type {name} needs IR version {least}"));
            }
        }
    }
    needs.dedup();
    if needs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "IR version {ir_version} cannot declare this model: {}; hint: set `ir_version` to at \
         least what is named, or leave it out",
        needs.join("; ")
    ))
}

/// Why operator `op` cannot move from opset `current` to `target`, if it cannot.
fn op_problem(op: &str, current: i64, target: i64) -> Option<String> {
    let Some((_, versions)) = OPERATORS.iter().find(|(name, _)| *name == op) else {
        return Some(format!("`{op}` is not an operator of the default domain this pass knows"));
    };
    let definition = |opset: i64| versions.iter().copied().filter(|v| *v <= opset).max();
    let (from, to) = (definition(current), definition(target));
    let deprecated = |version: Option<i64>| version.is_some_and(|v| DEPRECATED.contains(&(op, v)));
    match (from, to) {
        (None, _) => Some(format!(
            "`{op}` does not exist at the model's opset {current} (it appears in opset {})",
            versions.first().copied().unwrap_or_default()
        )),
        (Some(_), None) => Some(format!(
            "`{op}` appears in opset {}, after {target}",
            versions.first().copied().unwrap_or_default()
        )),
        (Some(_), Some(to)) if deprecated(Some(to)) => {
            Some(format!("`{op}` is deprecated from opset {to} on"))
        }
        (Some(from), Some(to)) if from != to => {
            let (low, high) = (current.min(target), current.max(target));
            let changes: Vec<String> = versions
                .iter()
                .filter(|v| **v > low && **v <= high)
                .map(|v| v.to_string())
                .collect();
            Some(format!("`{op}` changed its definition at opset {}", changes.join(", ")))
        }
        _ => None,
    }
}

fn is_default(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The operators of the default domain in `graph` and its subgraphs.
fn default_domain_ops(graph: &GraphProto, ops: &mut BTreeSet<String>) {
    for node in &graph.node {
        if is_default(node.domain()) {
            ops.insert(node.op_type().to_string());
        }
        for attribute in &node.attribute {
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                default_domain_ops(subgraph, ops);
            }
        }
    }
}

/// The element types of `graph`'s initializers and declared values.
fn graph_elem_types(graph: &GraphProto, types: &mut Vec<i32>) {
    types.extend(graph.initializer.iter().map(|t| t.data_type()));
    let declared = graph.input.iter().chain(&graph.output).chain(&graph.value_info);
    for value in declared {
        if let Some(elem_type) = value.r#type.as_ref().and_then(tensor_elem_type) {
            types.push(elem_type);
        }
    }
    types.sort_unstable();
    types.dedup();
}

fn tensor_elem_type(value: &TypeProto) -> Option<i32> {
    use crate::ir::proto::type_proto::Value;

    match value.value.as_ref()? {
        Value::TensorType(tensor) => Some(tensor.elem_type()),
        _ => None,
    }
}

/// The element types that came after IR version 3, with the IR version that brought each.
fn elem_type_ir(elem_type: i32) -> Option<(&'static str, i64)> {
    match elem_type {
        17 => Some(("FLOAT8E4M3FN", 9)),
        18 => Some(("FLOAT8E4M3FNUZ", 9)),
        19 => Some(("FLOAT8E5M2", 9)),
        20 => Some(("FLOAT8E5M2FNUZ", 9)),
        21 => Some(("UINT4", 10)),
        22 => Some(("INT4", 10)),
        23 => Some(("FLOAT4E2M1", 11)),
        24 => Some(("FLOAT8E8M0", 12)),
        25 => Some(("UINT2", 13)),
        26 => Some(("INT2", 13)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::make_node;
    use crate::ir::proto::OperatorSetIdProto;

    fn model(opset: i64, ops: &[&str]) -> ModelProto {
        let graph = GraphProto {
            node: ops.iter().map(|op| make_node(op, &["x"], &["y"], op)).collect(),
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(8),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_opset_is_set_where_no_operator_changed_between() {
        // MatMul changed at 13 last, Softmax at 13, Gemm at 13: all alike from 13 to 17.
        let mut raised = model(13, &["MatMul", "Softmax", "Gemm"]);
        set_opset(&mut raised, 17).unwrap();
        assert_eq!(crate::ir::graph::opset_version(&raised, ""), Some(17));
    }

    #[test]
    fn an_operator_that_changed_between_is_named_in_the_refusal() {
        // Relu gained bfloat16 at 14.
        let mut raised = model(13, &["MatMul", "Relu"]);
        let error = set_opset(&mut raised, 17).unwrap_err();
        assert!(error.contains("`Relu` changed its definition at opset 14"), "{error}");
        assert!(!error.contains("MatMul"), "{error}");
        assert_eq!(crate::ir::graph::opset_version(&raised, ""), Some(13), "left as it was");

        // MatMul changed at 13: lowering 17 to 11 crosses it.
        let error = set_opset(&mut model(17, &["MatMul"]), 11).unwrap_err();
        assert!(error.contains("`MatMul` changed its definition at opset 13"), "{error}");
    }

    #[test]
    fn lowering_below_an_operators_first_opset_or_to_a_deprecated_one_is_refused() {
        // Gelu appears in opset 20.
        let error = set_opset(&mut model(21, &["Gelu"]), 19).unwrap_err();
        assert!(error.contains("`Gelu` appears in opset 20, after 19"), "{error}");

        let error = set_opset(&mut model(9, &["Upsample"]), 10).unwrap_err();
        assert!(error.contains("`Upsample` is deprecated from opset 10"), "{error}");

        let error = set_opset(&mut model(13, &["NoSuchOp"]), 14).unwrap_err();
        assert!(error.contains("`NoSuchOp` is not an operator"), "{error}");

        let error = set_opset(&mut model(13, &["MatMul"]), 2).unwrap_err();
        assert!(error.contains("no released opset"), "{error}");
    }

    #[test]
    fn an_ir_version_below_what_the_model_needs_is_refused() {
        let mut declared = model(17, &["MatMul"]);
        let error = set_ir_version(&mut declared, 7).unwrap_err();
        assert!(error.contains("opset 17 needs IR version 8"), "{error}");

        set_ir_version(&mut declared, 9).unwrap();
        assert_eq!(declared.ir_version, Some(9));

        let graph = declared.graph.as_mut().unwrap();
        graph.initializer.push(crate::ir::proto::TensorProto {
            name: Some("w".into()),
            data_type: Some(22),
            ..Default::default()
        });
        let error = set_ir_version(&mut declared, 9).unwrap_err();
        assert!(error.contains("element type INT4 needs IR version 10"), "{error}");
        assert!(set_ir_version(&mut declared, 14).is_err());
    }

    #[test]
    fn auto_writes_a_data_file_above_the_threshold_only() {
        let small = model(17, &["MatMul"]);
        let size = prost::Message::encoded_len(&small) as u64;
        let write = |mode, threshold| OnnxWrite { external_data: mode, size_threshold: threshold };

        let below = write(ExternalDataMode::Auto, size).save_options(&small, "m.onnx");
        assert_eq!(below.external_data, None);
        let above = write(ExternalDataMode::Auto, size - 1).save_options(&small, "m.onnx");
        assert_eq!(above.external_data.map(|e| e.location), Some("m.onnx.data".into()));
        let never = write(ExternalDataMode::Never, 0).save_options(&small, "m.onnx");
        assert_eq!(never.external_data, None);
        let always = write(ExternalDataMode::Always, u64::MAX).save_options(&small, "m.onnx");
        assert!(always.external_data.is_some());
    }

    #[test]
    fn provenance_replaces_an_earlier_stamp() {
        let mut stamped = model(17, &["MatMul"]);
        stamp_provenance(&mut stamped, "old", "fuse()");
        stamp_provenance(&mut stamped, "digits", "fuse() -> export(format=onnx)");
        let entries: Vec<(&str, &str)> =
            stamped.metadata_props.iter().map(|e| (e.key(), e.value())).collect();
        assert_eq!(
            entries,
            [(RECIPE_KEY, "digits"), (PASSES_KEY, "fuse() -> export(format=onnx)")]
        );
    }
}
