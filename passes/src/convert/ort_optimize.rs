//! The `ort_optimize` pass: ONNX Runtime's own graph optimizer at a chosen level, and the
//! model it writes kept as the pass's output.
//!
//! The optimizer is reached through [`PassContext::optimizer`], which the engine fills with
//! an ONNX Runtime session on the target's providers, so this crate stays free of any
//! runtime. What ONNX Runtime writes above the basic level is made for the provider it ran
//! on: at `extended`, fusions into its contrib operators (FusedConv, FusedGemm ...) decided
//! for the nodes the CPU provider runs; at `layout`, NCHWc kernels blocked for the CPU's
//! instruction set, which only a CPU provider of an alike ONNX Runtime build runs. Such a
//! model is marked provider-specific ([`crate::pass::mark_provider_specific`]), and the
//! engine's report says so.
//!
//! ONNX Runtime imports every domain it knows into the model it writes; imports that no node
//! uses and that the input did not have are dropped again.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, info_span};

use crate::ir::proto::{GraphProto, ModelProto};
use crate::pass::{
    mark_provider_specific, Configured, OptimizationLevel, Pass, PassContext, PassError, Runtime,
};

/// The configuration of [`OrtOptimize`].
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrtOptimizeConfig {
    // How far ONNX Runtime rewrites the graph. Described in `level_schema`, which a doc
    // comment here would override.
    #[serde(default)]
    #[schemars(schema_with = "level_schema")]
    pub level: OptimizationLevel,
}

fn level_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = OptimizationLevel::ALL.iter().map(|level| level.name()).collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names,
        "description": "How far ONNX Runtime rewrites the graph, each level with the ones \
                        before it: `basic`, standard-operator rewrites for every provider \
                        (constant folding, redundant nodes, Conv with Add/Mul/BatchNormalization, \
                        MatMul with Add); `extended`, fusions into ONNX Runtime's contrib \
                        operators for the CPU provider (FusedConv, FusedGemm, GELU, \
                        LayerNormalization, attention); `layout`, NCHWc kernels for this CPU's \
                        instruction set as well. Above `basic` the model is provider-specific.",
        "default": OptimizationLevel::default().name(),
    })
}

/// Runs ONNX Runtime's graph optimizer and keeps the optimized model it writes.
#[derive(Clone, Debug)]
pub struct OrtOptimize {
    level: OptimizationLevel,
}

impl Configured for OrtOptimize {
    const NAME: &'static str = "ort_optimize";
    type Config = OrtOptimizeConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        Ok(OrtOptimize { level: config.level })
    }
}

impl OrtOptimize {
    /// The pass at `level`.
    pub fn new(level: OptimizationLevel) -> Self {
        OrtOptimize { level }
    }
}

impl Pass for OrtOptimize {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("ort_optimize", level = %self.level).entered();
        if context.runtime != Runtime::OnnxRuntime && self.level > OptimizationLevel::Basic {
            return Err(PassError::Model {
                pass: Self::NAME,
                reason: format!(
                    "level `{}` writes ONNX Runtime's own operators, and the target runs \
                     standard ONNX only; hint: use `level: basic`",
                    self.level
                ),
            });
        }
        let optimizer = context.optimizer.ok_or_else(|| PassError::Optimizer {
            pass: Self::NAME,
            reason: "no ONNX Runtime is at hand to optimize with (the pass context has no \
                     graph optimizer); hint: run the pass through `pipeline run`, or give \
                     `PassContext::optimizer` the engine's `OrtOptimizer`"
                .into(),
        })?;

        let before = histogram(&model);
        let mut optimized = optimizer
            .optimize(&model, self.level)
            .map_err(|e| PassError::Optimizer { pass: Self::NAME, reason: e.to_string() })?;
        let after = histogram(&optimized);
        if before == after {
            return Err(PassError::Unchanged {
                pass: Self::NAME,
                reason: format!(
                    "ONNX Runtime's optimizer at level `{}` left every operator as it was ({})",
                    self.level,
                    show(&before)
                ),
            });
        }

        drop_unused_imports(&model, &mut optimized);
        if self.level > OptimizationLevel::Basic {
            mark_provider_specific(&mut optimized, self.note(&after, &optimizer.describe()));
        }
        info!(
            "ONNX Runtime's optimizer at level `{}`: {} -> {} nodes ({})",
            self.level,
            before.values().sum::<usize>(),
            after.values().sum::<usize>(),
            show(&after)
        );
        Ok(optimized)
    }
}

impl OrtOptimize {
    /// Why the optimized model runs only where it was made, naming the operators outside the
    /// standard domain that it holds.
    fn note(&self, after: &BTreeMap<String, usize>, runtime: &str) -> String {
        let special: Vec<&str> =
            after.keys().filter(|op| op.contains(':')).map(String::as_str).collect();
        let holds = if special.is_empty() {
            "its fusions were chosen for that provider".to_string()
        } else {
            format!("it holds {}", special.join(", "))
        };
        let scope = match self.level {
            OptimizationLevel::Layout => {
                "NCHWc layouts are blocked for the instruction set of the CPU it was made on, \
                 so only a CPU provider of an alike ONNX Runtime build on such a CPU runs it"
            }
            _ => "other providers and runtimes may not run its contrib operators",
        };
        format!("optimized at level `{}` by {runtime}: {holds}; {scope}", self.level)
    }
}

/// The operator types of a graph and its subgraphs, `domain:Op` outside the default domain.
fn histogram(model: &ModelProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    if let Some(graph) = &model.graph {
        count_ops(graph, &mut counts);
    }
    counts
}

fn count_ops(graph: &GraphProto, counts: &mut BTreeMap<String, usize>) {
    for node in &graph.node {
        let key = match node.domain() {
            "" | "ai.onnx" => node.op_type().to_string(),
            domain => format!("{domain}:{}", node.op_type()),
        };
        *counts.entry(key).or_default() += 1;
        for attribute in &node.attribute {
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                count_ops(subgraph, counts);
            }
        }
    }
}

fn show(histogram: &BTreeMap<String, usize>) -> String {
    if histogram.is_empty() {
        return "no nodes".into();
    }
    let parts: Vec<String> = histogram.iter().map(|(op, n)| format!("{op} x{n}")).collect();
    parts.join(", ")
}

/// Drops the opset imports ONNX Runtime added that no node of the optimized model uses.
fn drop_unused_imports(source: &ModelProto, optimized: &mut ModelProto) {
    let mut used = BTreeSet::new();
    if let Some(graph) = &optimized.graph {
        used_domains(graph, &mut used);
    }
    for function in &optimized.functions {
        used.insert(function.domain().to_string());
        for node in &function.node {
            used.insert(node.domain().to_string());
        }
    }
    let had: BTreeSet<&str> = source.opset_import.iter().map(|o| o.domain()).collect();
    optimized.opset_import.retain(|import| {
        let domain = import.domain();
        domain.is_empty() || domain == "ai.onnx" || had.contains(domain) || used.contains(domain)
    });
}

fn used_domains(graph: &GraphProto, used: &mut BTreeSet<String>) {
    for node in &graph.node {
        used.insert(node.domain().to_string());
        for attribute in &node.attribute {
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                used_domains(subgraph, used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::make_node;
    use crate::ir::proto::OperatorSetIdProto;
    use crate::pass::{GraphOptimizer, RunnerError};

    /// Stands for ONNX Runtime: replaces the graph's nodes with `nodes` and imports
    /// `imports`, as the real optimizer would write them.
    struct Scripted {
        nodes: Vec<(&'static str, &'static str)>,
        imports: Vec<&'static str>,
    }

    impl GraphOptimizer for Scripted {
        fn optimize(
            &self,
            model: &ModelProto,
            _level: OptimizationLevel,
        ) -> Result<ModelProto, RunnerError> {
            let mut model = model.clone();
            let graph = model.graph.as_mut().ok_or(RunnerError("no graph".into()))?;
            graph.node = self
                .nodes
                .iter()
                .map(|(domain, op)| {
                    let mut node = make_node(op, &["x"], &["y"], op);
                    node.domain = Some(domain.to_string());
                    node
                })
                .collect();
            for domain in &self.imports {
                model.opset_import.push(OperatorSetIdProto {
                    domain: Some(domain.to_string()),
                    version: Some(1),
                });
            }
            Ok(model)
        }

        fn describe(&self) -> String {
            "a scripted runtime".into()
        }
    }

    fn source() -> ModelProto {
        let graph = GraphProto {
            node: vec![
                make_node("Conv", &["x"], &["c"], "conv"),
                make_node("Relu", &["c"], &["y"], "relu"),
            ],
            ..Default::default()
        };
        ModelProto {
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            ..Default::default()
        }
    }

    fn run(level: OptimizationLevel, optimizer: &Scripted) -> Result<ModelProto, PassError> {
        let context = PassContext { optimizer: Some(optimizer), ..PassContext::default() };
        OrtOptimize::new(level).run(source(), &context)
    }

    #[test]
    fn imports_no_node_uses_are_dropped_and_used_ones_kept() {
        let optimizer = Scripted {
            nodes: vec![("com.microsoft", "FusedConv")],
            imports: vec!["com.microsoft", "ai.onnx.ml", "org.pytorch.aten"],
        };

        let model = run(OptimizationLevel::Extended, &optimizer).unwrap();

        let domains: Vec<&str> = model.opset_import.iter().map(|o| o.domain()).collect();
        assert_eq!(domains, ["", "com.microsoft"]);
    }

    #[test]
    fn above_basic_the_model_is_marked_with_the_operators_it_holds() {
        let optimizer = Scripted { nodes: vec![("com.microsoft", "FusedConv")], imports: vec![] };

        let extended = run(OptimizationLevel::Extended, &optimizer).unwrap();
        let note = crate::pass::provider_specific_note(&extended).expect("a note");
        assert!(note.contains("a scripted runtime"), "{note}");
        assert!(note.contains("com.microsoft:FusedConv"), "{note}");
        assert!(note.contains("`extended`"), "{note}");

        let optimizer = Scripted { nodes: vec![("", "Conv")], imports: vec![] };
        let basic = run(OptimizationLevel::Basic, &optimizer).unwrap();
        assert_eq!(crate::pass::provider_specific_note(&basic), None);
    }

    #[test]
    fn a_target_of_standard_onnx_takes_the_basic_level_only() {
        let optimizer = Scripted { nodes: vec![("com.microsoft", "FusedConv")], imports: vec![] };
        let context = PassContext {
            optimizer: Some(&optimizer),
            runtime: Runtime::Standard,
            ..PassContext::default()
        };

        let error = OrtOptimize::new(OptimizationLevel::Extended).run(source(), &context);
        let message = error.unwrap_err().to_string();
        assert!(message.contains("standard ONNX only") && message.contains("basic"), "{message}");

        let optimizer = Scripted { nodes: vec![("", "Conv")], imports: vec![] };
        let context = PassContext { optimizer: Some(&optimizer), ..context };
        assert!(OrtOptimize::new(OptimizationLevel::Basic).run(source(), &context).is_ok());
    }

    #[test]
    fn the_same_operators_are_unchanged() {
        let optimizer = Scripted { nodes: vec![("", "Relu"), ("", "Conv")], imports: vec![] };

        let error = run(OptimizationLevel::Basic, &optimizer).unwrap_err();

        assert!(matches!(error, PassError::Unchanged { .. }), "{error}");
        assert!(error.to_string().contains("Conv x1, Relu x1"), "{error}");
    }
}
