//! The `fuse` pass: graph rewrites that make the same function out of fewer, larger
//! operators, as exporters leave many small ones behind.
//!
//! Each rule is a function over a [`pattern::Scan`] of the graph: it walks the nodes, and for
//! each place its pattern matches it offers a [`pattern::Rewrite`] (nodes out, nodes in,
//! values renamed), or it records why a near-match was left alone. The driver applies the
//! rules in the order of [`RULES`], each until it finds nothing more, and repeats the round
//! while any rule changed the graph, since one rewrite can open the way for another (a folded
//! constant makes a Conv's bias constant). Rules that write `com.microsoft` operators run only
//! when the target's runtime is ONNX Runtime.
//!
//! A rule never changes what the model computes beyond float rounding: the tests run every
//! rule's model before and after in ONNX Runtime on the same inputs.

mod attention;
mod chains;
mod conv;
mod eliminate;
mod evaluate;
mod fold;
mod gelu;
mod gemm;
mod layer_norm;
mod noop;
mod operands;
mod pattern;
mod squeeze;

use std::collections::{BTreeMap, HashSet};

use tracing::{debug, info, info_span};

use crate::ir::proto::{GraphProto, ModelProto};
use crate::ir::{self, GraphIndex, NameGenerator};
use crate::pass::{Configured, Pass, PassContext, PassError, Runtime};
use pattern::{Scan, Target, View};

/// The domain of ONNX Runtime's contrib operators.
pub(crate) const MS_DOMAIN: &str = "com.microsoft";

/// How many rounds of every rule the driver runs at most; real models settle in two or three.
const MAX_ROUNDS: usize = 8;

/// How many scans one rule makes in a round at most; a scan takes every match that does not
/// overlap another, so chains of a pattern need a few.
const MAX_SCANS: usize = 64;

/// How many near-matches the "nothing fused" error lists.
const MAX_LISTED_SKIPS: usize = 6;

/// One fusion rule.
pub(crate) struct Rule {
    /// The name recipes use in `rules`.
    pub name: &'static str,
    /// What the rule does, in one line, for `pipeline passes` and the docs.
    pub summary: &'static str,
    /// Finds the rule's matches in a scan of the graph.
    pub scan: fn(&mut Scan<'_, '_>),
}

/// Every rule, in the order the driver applies them.
pub(crate) const RULES: &[Rule] = &[
    // Folding and removal first: they expose the patterns the fusions look for.
    fold::CONSTANT_FOLDING,
    eliminate::IDENTITY,
    eliminate::DROPOUT,
    noop::NOOP,
    chains::TRANSPOSE_CHAIN,
    chains::RESHAPE_CHAIN,
    squeeze::SQUEEZE_UNSQUEEZE,
    // Convolution fusions.
    conv::CONV_BN,
    conv::CONV_MUL,
    conv::CONV_ADD,
    // Transformer fusions, before MatMul + Add becomes a Gemm that they could not match.
    layer_norm::LAYER_NORM,
    gelu::GELU,
    layer_norm::SKIP_LAYER_NORM,
    attention::ATTENTION,
    // Then 2-D MatMul + Add into Gemm.
    gemm::MATMUL_ADD,
    // Last, what the others left unread.
    eliminate::DEAD_NODES,
];

/// The names of every rule, in the order they apply.
pub fn rule_names() -> Vec<&'static str> {
    RULES.iter().map(|rule| rule.name).collect()
}

/// The configuration of [`Fuse`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FuseConfig {
    // The rules to apply, by name; every rule by default. Described in `rules_schema`, which a
    // doc comment here would override.
    #[serde(default = "default_rules")]
    #[schemars(schema_with = "rules_schema")]
    pub rules: Vec<String>,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig { rules: default_rules() }
    }
}

fn default_rules() -> Vec<String> {
    RULES.iter().map(|rule| rule.name.to_string()).collect()
}

/// A list of rule names, each one of [`RULES`], described one by one.
fn rules_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let described: Vec<String> =
        RULES.iter().map(|rule| format!("`{}`: {}", rule.name, rule.summary)).collect();
    let description = format!(
        "The rules to apply, by name; every rule by default. They always run in this order, \
         whatever the order of the list: {}.",
        described.join("; ")
    );
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": rule_names()},
        "description": description,
        "default": rule_names(),
    })
}

/// Graph fusion: constant folding, removal of no-op nodes, and operator fusions.
#[derive(Debug, Clone)]
pub struct Fuse {
    rules: Vec<&'static str>,
}

impl Configured for Fuse {
    const NAME: &'static str = "fuse";
    type Config = FuseConfig;

    fn from_config(config: Self::Config) -> Result<Self, PassError> {
        let config_error = |message: String| PassError::Config { pass: Self::NAME, message };
        if config.rules.is_empty() {
            return Err(config_error(format!(
                "`rules` is empty; hint: leave it out for every rule, or name some of {}",
                rule_names().join(", ")
            )));
        }

        for name in &config.rules {
            if !RULES.iter().any(|rule| rule.name == name) {
                return Err(config_error(format!(
                    "`rules` names `{name}`, which is no fusion rule; the rules are {}",
                    rule_names().join(", ")
                )));
            }
        }

        let wanted: HashSet<&str> = config.rules.iter().map(String::as_str).collect();
        let rules = RULES.iter().map(|r| r.name).filter(|name| wanted.contains(name)).collect();
        Ok(Fuse { rules })
    }
}

impl Fuse {
    /// The pass with the given configuration (see [`Configured::from_config`] for checks).
    pub fn new(config: FuseConfig) -> Result<Self, PassError> {
        Self::from_config(config)
    }
}

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, mut model: ModelProto, context: &PassContext) -> Result<ModelProto, PassError> {
        let _span = info_span!("fuse").entered();

        let opset = ir::opset_version(&model, "").unwrap_or(0);
        let target = Target { contrib_ops: context.runtime == Runtime::OnnxRuntime, opset };
        let rules: Vec<&Rule> =
            RULES.iter().filter(|rule| self.rules.contains(&rule.name)).collect();
        let graph = model.graph.as_mut().ok_or_else(|| PassError::Model {
            pass: Self::NAME,
            reason: "the model has no graph".into(),
        })?;

        let nodes_before = graph.node.len();
        let summary = fuse_graph(graph, &rules, target)?;
        if summary.applied.is_empty() {
            return Err(PassError::Unchanged { pass: Self::NAME, reason: summary.why_nothing() });
        }

        if uses_domain(graph, MS_DOMAIN) {
            import_domain(&mut model, MS_DOMAIN, 1);
        }
        let nodes_after = model.graph.as_ref().map_or(0, |g| g.node.len());
        info!(
            "fused the graph from {nodes_before} to {nodes_after} nodes ({})",
            summary.applied_list()
        );
        Ok(model)
    }
}

/// What the rules did to a graph.
#[derive(Debug, Default)]
struct Summary {
    /// How many rewrites each rule made, by rule name.
    applied: BTreeMap<&'static str, usize>,
    /// Near-matches left alone in the last scan of each rule: (rule, node, reason).
    skipped: Vec<(&'static str, String, String)>,
}

impl Summary {
    fn applied_list(&self) -> String {
        let parts: Vec<String> =
            self.applied.iter().map(|(rule, count)| format!("{rule} x{count}")).collect();
        parts.join(", ")
    }

    fn why_nothing(&self) -> String {
        if self.skipped.is_empty() {
            return "no rule found its pattern in the model".into();
        }
        let listed: Vec<String> = self
            .skipped
            .iter()
            .take(MAX_LISTED_SKIPS)
            .map(|(rule, node, reason)| format!("{rule} left `{node}` alone: {reason}"))
            .collect();
        let more = self.skipped.len().saturating_sub(MAX_LISTED_SKIPS);
        let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
        format!("no rule found its pattern; {}{tail}", listed.join("; "))
    }
}

/// Applies `rules` to `graph` until none finds anything more (or the round limit).
fn fuse_graph(
    graph: &mut GraphProto,
    rules: &[&Rule],
    target: Target,
) -> Result<Summary, PassError> {
    let mut names = NameGenerator::new(graph);
    let mut summary = Summary::default();

    for round in 0..MAX_ROUNDS {
        let mut changed = false;
        let mut next = 0;
        let mut scans = 0;
        while next < rules.len() {
            // One view of the graph serves every rule that finds nothing, until one rewrites:
            // indexing and shape inference are the cost of a scan.
            let found = {
                let view = View::new(graph, target);
                let mut found = None;
                while let Some(rule) = rules.get(next) {
                    let mut scan = Scan::new(&view, &mut names);
                    (rule.scan)(&mut scan);
                    let (rewrites, skipped) = scan.into_rewrites();
                    if !rewrites.is_empty() {
                        found = Some((*rule, rewrites));
                        break;
                    }
                    summary.skipped.retain(|(name, _, _)| *name != rule.name);
                    for (node, reason) in skipped {
                        debug!(rule = rule.name, node = %node, "left alone: {reason}");
                        summary.skipped.push((rule.name, node, reason));
                    }
                    next += 1;
                    scans = 0;
                }
                found
            };
            let Some((rule, rewrites)) = found else { break };

            debug!(rule = rule.name, round, count = rewrites.len(), "rewrote");
            *summary.applied.entry(rule.name).or_default() += rewrites.len();
            pattern::apply(graph, rewrites)?;
            changed = true;
            scans += 1;
            if scans == MAX_SCANS {
                next += 1;
                scans = 0;
            }
        }
        if !changed {
            break;
        }
    }

    if !summary.applied.is_empty() {
        prune(graph);
    }
    Ok(summary)
}

/// Drops the initializers that no node reads any more (unless they are graph inputs or
/// outputs) and the value infos of values that no longer exist.
fn prune(graph: &mut GraphProto) {
    let index = GraphIndex::new(graph);
    let outputs: HashSet<String> = graph.output.iter().map(|v| v.name().to_string()).collect();
    let inputs: HashSet<String> = graph.input.iter().map(|v| v.name().to_string()).collect();
    graph.initializer.retain(|tensor| {
        let name = tensor.name();
        !index.consumers(name).is_empty() || outputs.contains(name) || inputs.contains(name)
    });

    let mut existing: HashSet<String> = inputs;
    existing.extend(graph.initializer.iter().map(|t| t.name().to_string()));
    existing.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
    graph.value_info.retain(|value| existing.contains(value.name()));
}

/// Whether a node of `graph` (not of its subgraphs) is of `domain`.
pub(crate) fn uses_domain(graph: &GraphProto, domain: &str) -> bool {
    graph.node.iter().any(|node| node.domain() == domain)
}

/// Adds `domain` at `version` to the model's opset imports unless it is there.
pub(crate) fn import_domain(model: &mut ModelProto, domain: &str, version: i64) {
    // An older import stays: the rules write only operators of version 1.
    let _ = ir::import_opset(model, domain, version);
}
