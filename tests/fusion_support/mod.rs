//! Shared helpers for the tests of graph rewrites (`fuse` and the conversion passes): models
//! built in the test, the pass run on them, and both models run in ONNX Runtime on the same
//! random inputs, so a rewrite is judged by what ONNX Runtime computes, not by our own code.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use pipeline::runtime::{ModelSession, Optimization, Tensor, Threads};
use pipeline_passes::ir::proto::tensor_proto::DataType;
use pipeline_passes::ir::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use pipeline_passes::ir::shapes::Dim;
use pipeline_passes::ir::{self, SaveOptions};
use pipeline_passes::pass::{self, PassContext, PassError};

#[path = "../common/paths.rs"]
mod paths;
#[allow(unused_imports)]
pub use paths::{ort_library, root, venv_python};

#[path = "../../passes/tests/common/rng.rs"]
mod rng;
pub use rng::Rng;

#[allow(unused_imports)]
pub use pipeline_passes::ir::{attr_float, attr_int, attr_ints, attr_string, attr_tensor};

/// A BERT-like encoder built the way PyTorch exports it, for the transformer fusions.
pub mod encoder;

/// Float32 outputs after a rewrite must equal those before within this share of the largest
/// magnitude of the output: float rounding of a reordered sum stays far below it, a wrong
/// weight, axis or epsilon far above.
pub const MAX_RELATIVE_DIFFERENCE: f64 = 1e-4;

/// One dimension of a declared graph input or output.
#[derive(Clone, Debug)]
pub enum D {
    /// A fixed size.
    N(i64),
    /// A symbolic size; the tests feed `SYMBOLIC_SIZE`.
    S(&'static str),
}

/// What a symbolic dimension is fed in the tests.
pub const SYMBOLIC_SIZE: usize = 2;

/// Fixed dimensions.
pub fn dims(sizes: &[i64]) -> Vec<D> {
    sizes.iter().map(|&n| D::N(n)).collect()
}

/// A model built node by node; graph inputs are fed random values when it runs.
#[derive(Clone, Debug)]
pub struct Builder {
    graph: GraphProto,
    opset: i64,
    ms_domain: bool,
}

impl Builder {
    /// An empty graph at `opset` of the default domain.
    pub fn new(opset: i64) -> Builder {
        let graph = GraphProto { name: Some("test".into()), ..GraphProto::default() };
        Builder { graph, opset, ms_domain: false }
    }

    /// A float32 graph input.
    pub fn input(self, name: &str, shape: Vec<D>) -> Builder {
        self.typed_input(name, DataType::Float, shape)
    }

    /// A graph input of `elem` type.
    pub fn typed_input(mut self, name: &str, elem: DataType, shape: Vec<D>) -> Builder {
        self.graph.input.push(value_info(name, elem, Some(shape)));
        self
    }

    /// A float32 graph output of unknown shape.
    pub fn output(self, name: &str) -> Builder {
        self.typed_output(name, DataType::Float)
    }

    /// A graph output of `elem` type and unknown shape.
    pub fn typed_output(mut self, name: &str, elem: DataType) -> Builder {
        self.graph.output.push(value_info(name, elem, None));
        self
    }

    /// A float32 graph output of the given shape.
    pub fn output_shaped(mut self, name: &str, shape: Vec<D>) -> Builder {
        self.graph.output.push(value_info(name, DataType::Float, Some(shape)));
        self
    }

    /// A float32 initializer.
    pub fn init(mut self, name: &str, values: ArrayD<f32>) -> Builder {
        self.graph.initializer.push(ir::tensor_from_f32(name, &values));
        self
    }

    /// An int64 initializer.
    pub fn init_i64(mut self, name: &str, values: &[i64]) -> Builder {
        let array = ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap();
        self.graph.initializer.push(ir::tensor_from_i64(name, &array));
        self
    }

    /// Any initializer.
    pub fn tensor(mut self, tensor: TensorProto) -> Builder {
        self.graph.initializer.push(tensor);
        self
    }

    /// A node of the default domain, named after its first output.
    pub fn node(self, op: &str, inputs: &[&str], outputs: &[&str]) -> Builder {
        self.node_with(op, inputs, outputs, Vec::new())
    }

    /// A node of the default domain with attributes.
    pub fn node_with(
        mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> Builder {
        let name = format!("{op}_{}", outputs.first().copied().unwrap_or("none"));
        let mut node = ir::make_node(op, inputs, outputs, &name);
        node.attribute = attributes;
        self.graph.node.push(node);
        self
    }

    /// A node of `domain` (which the model then imports at version 1).
    pub fn domain_node(
        mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> Builder {
        self = self.node_with(op, inputs, outputs, attributes);
        let node = self.graph.node.last_mut().expect("just added");
        node.domain = Some(domain.to_string());
        if domain == "com.microsoft" {
            self.ms_domain = true;
        } else {
            self.graph.name = Some(format!("test+{domain}"));
        }
        self
    }

    /// A Constant node holding `tensor`.
    pub fn constant(self, output: &str, tensor: TensorProto) -> Builder {
        self.node_with("Constant", &[], &[output], vec![attr_tensor("value", tensor)])
    }

    /// The model.
    pub fn build(self) -> ModelProto {
        let mut opsets =
            vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(self.opset) }];
        if self.ms_domain {
            opsets.push(OperatorSetIdProto {
                domain: Some("com.microsoft".into()),
                version: Some(1),
            });
        }
        let other_domains: Vec<String> = self
            .graph
            .node
            .iter()
            .map(|n| n.domain().to_string())
            .filter(|d| !d.is_empty() && d != "com.microsoft")
            .collect();
        for domain in other_domains {
            if !opsets.iter().any(|o| o.domain() == domain) {
                opsets.push(OperatorSetIdProto { domain: Some(domain), version: Some(1) });
            }
        }
        let mut graph = self.graph;
        graph.name = Some("test".into());
        ModelProto {
            ir_version: Some(if self.opset >= 21 { 10 } else { 8 }),
            producer_name: Some("pipeline-tests".into()),
            opset_import: opsets,
            graph: Some(graph),
            ..ModelProto::default()
        }
    }
}

fn value_info(name: &str, elem: DataType, shape: Option<Vec<D>>) -> ValueInfoProto {
    let dims: Option<Vec<Dim>> = shape.map(|dims| {
        dims.into_iter()
            .map(|d| match d {
                D::N(n) => Dim::Known(n),
                D::S(s) => Dim::Symbol(s.to_string()),
            })
            .collect()
    });
    ir::tensor_value_info(name, elem as i32, dims.as_deref())
}

/// The operator types of the main graph and how often each occurs (`domain:Op` outside the
/// default domain).
pub fn histogram(model: &ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in &model.graph.as_ref().expect("a graph").node {
        let key = match node.domain() {
            "" | "ai.onnx" => node.op_type().to_string(),
            domain => format!("{domain}:{}", node.op_type()),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// A histogram from `(op, count)` pairs, for comparisons.
pub fn ops(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

/// Runs the pass `name` with `config` on `model`, targeting ONNX Runtime.
pub fn run_pass(
    name: &str,
    config: serde_json::Value,
    model: &ModelProto,
) -> Result<ModelProto, PassError> {
    run_pass_with(name, config, model, PassContext::default())
}

/// Runs the pass `name` with `config` on `model` in `context`.
pub fn run_pass_with(
    name: &str,
    config: serde_json::Value,
    model: &ModelProto,
    context: PassContext,
) -> Result<ModelProto, PassError> {
    let info = pass::find(name).unwrap_or_else(|| panic!("no pass `{name}`"));
    let pass = (info.build)(&config)?;
    pass.run(model.clone(), &context)
}

/// Runs `fuse` with only `rules` on `model`; with every rule when `rules` is empty.
pub fn fuse(model: &ModelProto, rules: &[&str]) -> Result<ModelProto, PassError> {
    let config = if rules.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "rules": rules })
    };
    run_pass("fuse", config, model)
}

/// Random inputs for every graph input of `model` that is not an initializer: float32
/// normal values, integers in [0, 4), booleans; symbolic dimensions get [`SYMBOLIC_SIZE`].
/// `given` replaces the inputs it names.
pub fn random_inputs(
    model: &ModelProto,
    seed: u64,
    given: &[(&str, Tensor)],
) -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(seed);
    let graph = model.graph.as_ref().expect("a graph");
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let mut inputs = Vec::new();
    for input in graph.input.iter().filter(|i| !initializers.contains(&i.name())) {
        if let Some((_, tensor)) = given.iter().find(|(name, _)| *name == input.name()) {
            inputs.push((input.name().to_string(), tensor.clone()));
            continue;
        }
        let declared = ir::declared_type(input)
            .unwrap_or_else(|| panic!("input `{}` is not a tensor", input.name()));
        let shape: Vec<usize> = declared
            .dims
            .expect("inputs have shapes in these tests")
            .iter()
            .map(|d| d.known().map_or(SYMBOLIC_SIZE, |n| n as usize))
            .collect();
        let value = match DataType::try_from(declared.elem_type).expect("a known type") {
            DataType::Float => Tensor::F32(rng.normal_array(&shape, 1.0)),
            DataType::Int64 => Tensor::I64(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
                (rng.next_u64() % 4) as i64
            })),
            DataType::Int32 => Tensor::I32(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
                (rng.next_u64() % 4) as i32
            })),
            DataType::Bool => Tensor::Bool(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
                rng.next_u64().is_multiple_of(2)
            })),
            other => panic!("no random values for input `{}` of {other:?}", input.name()),
        };
        inputs.push((input.name().to_string(), value));
    }
    inputs
}

/// Saves `model` in `dir` under `name` and runs it once in ONNX Runtime, without ONNX
/// Runtime's own graph optimizations (they would hide what our rewrite did).
pub fn run_model(
    dir: &Path,
    name: &str,
    model: &ModelProto,
    inputs: &[(String, Tensor)],
) -> Vec<(String, Tensor)> {
    let path = dir.join(name);
    ir::save(model, &path, &SaveOptions::default()).expect("the model saves");
    let mut session = ModelSession::load_with(&path, Threads::default(), Optimization::Disabled)
        .unwrap_or_else(|e| panic!("ONNX Runtime does not load {name}: {e}"));
    session.run(inputs).unwrap_or_else(|e| panic!("ONNX Runtime cannot run {name}: {e}"))
}

/// The largest difference between `after` and `before` as a share of `before`'s largest
/// magnitude (at least 1e-6, so an all-zero output compares absolutely).
pub fn relative_difference(before: &Tensor, after: &Tensor) -> f64 {
    assert_eq!(before.elem(), after.elem(), "the output's type changed");
    assert_eq!(before.shape(), after.shape(), "the output's shape changed");
    let values = |t: &Tensor| -> Vec<f64> {
        match t {
            Tensor::F32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            Tensor::F64(a) => a.iter().copied().collect(),
            Tensor::I64(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            Tensor::Bool(a) => a.iter().map(|&v| f64::from(u8::from(v))).collect(),
            other => panic!("no comparison for {}", other.elem()),
        }
    };
    let (b, a) = (values(before), values(after));
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (x, y) in b.iter().zip(&a) {
        let diff = if x.is_nan() && y.is_nan() { 0.0 } else { (x - y).abs() };
        worst = worst.max(if diff.is_nan() { f64::INFINITY } else { diff });
    }
    worst / scale
}

/// Runs `before` and `after` in ONNX Runtime on the same random inputs (two seeds) and
/// asserts that every output agrees within `tolerance` (see [`relative_difference`]).
/// Returns the worst difference seen.
pub fn assert_same_outputs(
    before: &ModelProto,
    after: &ModelProto,
    given: &[(&str, Tensor)],
    tolerance: f64,
) -> f64 {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut worst = 0.0f64;
    for seed in [1, 2] {
        let inputs = random_inputs(before, seed, given);
        let expected = run_model(dir.path(), "before.onnx", before, &inputs);
        let actual = run_model(dir.path(), "after.onnx", after, &inputs);
        assert_eq!(expected.len(), actual.len(), "the number of outputs changed");
        for ((name, b), (name_after, a)) in expected.iter().zip(&actual) {
            assert_eq!(name, name_after, "the outputs are in another order");
            let difference = relative_difference(b, a);
            assert!(
                difference <= tolerance,
                "output `{name}` differs by {difference:e} of its range after the rewrite \
                 (tolerance {tolerance:e})"
            );
            worst = worst.max(difference);
        }
    }
    worst
}

/// Fuses `model` with `rules`, asserts the operator histogram afterwards, and that ONNX
/// Runtime computes the same outputs before and after. Returns the fused model.
pub fn assert_fuses(model: &ModelProto, rules: &[&str], expected: &[(&str, usize)]) -> ModelProto {
    let fused = fuse(model, rules).unwrap_or_else(|e| panic!("fuse {rules:?} failed: {e}"));
    assert_eq!(histogram(&fused), ops(expected), "operators after fuse {rules:?}");
    assert_same_outputs(model, &fused, &[], MAX_RELATIVE_DIFFERENCE);
    fused
}

/// Asserts that `rules` leave `model` alone: the pass says it changed nothing, and the
/// reason it gives contains `reason` (empty to skip that check). Returns the reason.
pub fn assert_left_alone(model: &ModelProto, rules: &[&str], reason: &str) -> String {
    match fuse(model, rules) {
        Err(PassError::Unchanged { reason: why, .. }) => {
            assert!(why.contains(reason), "the reason `{why}` does not mention `{reason}`");
            why
        }
        Err(other) => panic!("fuse {rules:?} failed instead of leaving the model alone: {other}"),
        Ok(fused) => panic!(
            "fuse {rules:?} rewrote a model it should leave alone: {:?} -> {:?}",
            histogram(model),
            histogram(&fused)
        ),
    }
}

/// The node of `model` named `name`.
pub fn node<'m>(model: &'m ModelProto, name: &str) -> &'m NodeProto {
    let graph = model.graph.as_ref().expect("a graph");
    graph.node.iter().find(|n| n.name() == name).unwrap_or_else(|| panic!("no node `{name}`"))
}

/// The first node of `model` of type `op`.
pub fn first_of<'m>(model: &'m ModelProto, op: &str) -> &'m NodeProto {
    let graph = model.graph.as_ref().expect("a graph");
    graph.node.iter().find(|n| n.op_type() == op).unwrap_or_else(|| panic!("no {op} node"))
}
