//! `pipeline inspect`: what a model holds, read from the file without running it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use pipeline_passes::ir::{self, proto, IrError};
use serde::Serialize;

/// A model's interface, opsets, operators and size.
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub path: PathBuf,
    pub ir_version: i64,
    pub producer: String,
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    /// Operator type (with its domain when not the default one) and how many nodes use it.
    pub ops: BTreeMap<String, usize>,
    pub nodes: usize,
    /// Elements in all initializers and Constant node tensors of the main graph.
    pub parameters: u64,
    /// Bytes of the model file and its external data files.
    pub size_bytes: u64,
}

/// One graph input or output.
#[derive(Debug, Serialize)]
pub struct ValueSummary {
    pub name: String,
    pub elem_type: String,
    /// Each dimension: a number, a symbolic name, or `?` when unknown.
    pub shape: Vec<String>,
}

/// Reads `path` and summarizes it.
pub fn inspect(path: &Path) -> Result<ModelSummary, IrError> {
    let model = ir::load(path)?;
    let graph = model.graph.clone().unwrap_or_default();

    let opsets = model
        .opset_import
        .iter()
        .map(|o| (display_domain(o.domain()).to_string(), o.version()))
        .collect();

    let mut ops = BTreeMap::new();
    for node in &graph.node {
        let key = match node.domain() {
            "" | "ai.onnx" => node.op_type().to_string(),
            domain => format!("{domain}.{}", node.op_type()),
        };
        *ops.entry(key).or_insert(0) += 1;
    }

    // Elements of a tensor; dimensions a hostile file makes negative or huge count as 0 or
    // saturate rather than overflow.
    let elements = |t: &pipeline_passes::ir::proto::TensorProto| {
        t.dims.iter().fold(1u64, |n, &d| n.saturating_mul(u64::try_from(d).unwrap_or(0)))
    };
    // Weights held in Constant nodes (as PaddlePaddle exports them) count too.
    let constants = graph
        .node
        .iter()
        .filter(|node| node.op_type() == "Constant" && matches!(node.domain(), "" | "ai.onnx"))
        .flat_map(|node| &node.attribute)
        .filter(|attribute| attribute.name() == "value")
        .filter_map(|attribute| attribute.t.as_ref());
    let parameters =
        graph.initializer.iter().chain(constants).map(elements).fold(0u64, u64::saturating_add);

    Ok(ModelSummary {
        path: path.to_path_buf(),
        ir_version: model.ir_version(),
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_string(),
        opsets,
        inputs: graph.input.iter().filter(|v| !is_initializer(&graph, v)).map(summarize).collect(),
        outputs: graph.output.iter().map(summarize).collect(),
        ops,
        nodes: graph.node.len(),
        parameters,
        size_bytes: stored_size(path)?,
    })
}

impl ModelSummary {
    /// The summary as aligned text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "model:      {}", self.path.display());
        let _ = writeln!(out, "size:       {}", crate::report::human_bytes(self.size_bytes));
        let _ = writeln!(out, "ir_version: {}", self.ir_version);
        if !self.producer.is_empty() {
            let _ = writeln!(out, "producer:   {}", self.producer);
        }
        let opsets: Vec<String> = self.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
        let _ = writeln!(out, "opsets:     {}", opsets.join(", "));
        let _ = writeln!(out, "parameters: {}", self.parameters);
        let _ = writeln!(out, "nodes:      {}", self.nodes);

        for (title, values) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            let _ = writeln!(out, "{title}:");
            for v in values {
                let _ = writeln!(out, "  {}  {}  [{}]", v.name, v.elem_type, v.shape.join(", "));
            }
        }

        let _ = writeln!(out, "ops:");
        let mut ops: Vec<_> = self.ops.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (op, count) in ops {
            let _ = writeln!(out, "  {count:>5}  {op}");
        }
        out
    }
}

fn display_domain(domain: &str) -> &str {
    if domain.is_empty() {
        "ai.onnx"
    } else {
        domain
    }
}

/// Old exporters list initializers among the graph inputs; they are not inputs to feed.
fn is_initializer(graph: &proto::GraphProto, value: &proto::ValueInfoProto) -> bool {
    graph.initializer.iter().any(|t| t.name() == value.name())
}

fn summarize(value: &proto::ValueInfoProto) -> ValueSummary {
    use proto::tensor_shape_proto::dimension::Value as Dim;
    use proto::type_proto::Value;

    let (elem_type, shape) = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(tensor)) => {
            let elem = proto::tensor_proto::DataType::try_from(tensor.elem_type())
                .map(|t| t.as_str_name().to_lowercase())
                .unwrap_or_else(|_| format!("type {}", tensor.elem_type()));
            let shape = tensor.shape.as_ref().map_or_else(
                || vec!["?".to_string()],
                |s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => v.to_string(),
                            Some(Dim::DimParam(p)) => p.clone(),
                            None => "?".to_string(),
                        })
                        .collect()
                },
            );
            (elem, shape)
        }
        Some(_) => ("non-tensor".to_string(), Vec::new()),
        None => ("unknown".to_string(), Vec::new()),
    };
    ValueSummary { name: value.name().to_string(), elem_type, shape }
}

/// Bytes of the model file plus every external data file its initializers name.
pub fn stored_size(path: &Path) -> Result<u64, IrError> {
    let io = |source| IrError::Io { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(io)?;
    let model = ir::decode(&bytes)?;
    let folder = path.parent().unwrap_or(Path::new("."));

    let mut locations = std::collections::BTreeSet::new();
    for tensor in model.graph.iter().flat_map(|g| &g.initializer) {
        for entry in &tensor.external_data {
            if entry.key() == "location" {
                locations.insert(entry.value().to_string());
            }
        }
    }

    let mut total = bytes.len() as u64;
    for location in locations {
        let data = folder.join(&location);
        total +=
            std::fs::metadata(&data).map_err(|source| IrError::Io { path: data, source })?.len();
    }
    Ok(total)
}
