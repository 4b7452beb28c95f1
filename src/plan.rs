//! Turns a recipe's passes into a DAG of steps and enumerates the candidates.
//!
//! Every list of parameter values expands as a cartesian product, a list of items is a chain,
//! and `one_of` makes branches. Candidates are numbered in a stable order: the first item of
//! the pass list varies slowest, and within a pass the first parameter varies slowest. The
//! DAG is a trie of steps rooted at the source model, so candidates with an equal prefix share
//! its nodes and a search can run that prefix once. Every concrete configuration is built with
//! the pass's own constructor before anything runs, so a bad one is reported up front.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};

use crate::recipe::{Origin, PassItem, PassSpec, Recipe};

/// The most configurations of one pass that are each built to check them; beyond that only
/// those the kept candidates use are checked.
const CHECK_LIMIT_PER_PASS: usize = 10_000;

/// One concrete step: a pass and a configuration for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRef {
    /// The registry name of the pass.
    pub pass: String,
    /// The configuration object, holding the parameters the recipe sets.
    pub config: Value,
    /// Where the recipe names this pass.
    pub origin: Origin,
}

impl StepRef {
    /// `quantize_dynamic(per_channel=true)`: the pass and its parameters, by name.
    pub fn label(&self) -> String {
        let params: Vec<String> = match &self.config {
            Value::Object(params) => {
                params.iter().map(|(name, value)| format!("{name}={}", show(value))).collect()
            }
            _ => Vec::new(),
        };
        format!("{}({})", self.pass, params.join(", "))
    }

    fn key(&self) -> (String, String) {
        (self.pass.clone(), self.config.to_string())
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A node of the plan: the source model, or a step applied to its parent's output.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanNode {
    /// The recipe's model, before any pass.
    Source,
    /// A step applied to the model its parent node produces.
    Step(StepRef),
}

/// One path through the plan: the steps that make one candidate model.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// `c1`, `c2`, ... in the plan's order.
    pub id: String,
    /// The steps in the order they run.
    pub steps: Vec<StepRef>,
    /// The plan node whose output is this candidate.
    pub node: NodeIndex,
}

impl Candidate {
    /// The steps' labels joined by arrows.
    pub fn label(&self) -> String {
        self.steps.iter().map(StepRef::label).collect::<Vec<_>>().join(" -> ")
    }
}

/// The DAG of steps and the candidates a recipe makes.
#[derive(Debug, Clone)]
pub struct Plan {
    graph: DiGraph<PlanNode, ()>,
    root: NodeIndex,
    candidates: Vec<Candidate>,
    source: PathBuf,
    space: usize,
    dropped: usize,
    duplicates: usize,
    max_candidates: usize,
}

/// Why a plan could not be made from a recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A concrete configuration was refused by its pass.
    #[error(
        "{}:{}:{}: {}: {message} (configuration {config})\n  hint: `pipeline passes` describes \
         each pass's parameters",
        file.display(), origin.line, origin.column, origin.field
    )]
    InvalidConfig { file: PathBuf, origin: Origin, config: Value, message: String },

    /// The recipe names a pass the registry does not have.
    #[error(
        "{}:{}:{}: {}: unknown pass `{name}`\n  hint: `pipeline passes` lists every pass",
        file.display(), origin.line, origin.column, origin.field
    )]
    UnknownPass { file: PathBuf, origin: Origin, name: String },

    /// The recipe's passes make no candidate at all.
    #[error("{}: the passes make no candidate\n  hint: list at least one pass", file.display())]
    Empty { file: PathBuf },
}

/// Expands the recipe's passes into candidates and their DAG, keeping at most
/// `search.max_candidates` of them.
pub fn build(recipe: &Recipe) -> Result<Plan, PlanError> {
    let space = chain_count(&recipe.passes);
    if space == 0 {
        return Err(PlanError::Empty { file: recipe.path.clone() });
    }

    let max_candidates = recipe.search.max_candidates.max(1);
    let mut graph = DiGraph::new();
    let root = graph.add_node(PlanNode::Source);
    let mut children: HashMap<(NodeIndex, (String, String)), NodeIndex> = HashMap::new();
    let mut seen_leaves = HashSet::new();
    let mut candidates = Vec::new();
    let mut duplicates = 0;
    let mut index = 0;

    while index < space && candidates.len() < max_candidates {
        let mut steps = Vec::new();
        decode_chain(&recipe.passes, index, &mut steps);
        index += 1;

        let mut node = root;
        for step in &steps {
            node = *children.entry((node, step.key())).or_insert_with(|| {
                let child = graph.add_node(PlanNode::Step(step.clone()));
                graph.add_edge(node, child, ());
                child
            });
        }
        if !seen_leaves.insert(node) {
            duplicates += 1;
            continue;
        }
        let id = format!("c{}", candidates.len() + 1);
        candidates.push(Candidate { id, steps, node });
    }

    let plan = Plan {
        graph,
        root,
        candidates,
        source: recipe.model.clone(),
        space,
        dropped: space - index,
        duplicates,
        max_candidates,
    };
    check_configs(recipe, &plan)?;

    if plan.dropped > 0 {
        tracing::warn!(
            kept = plan.candidates.len(),
            dropped = plan.dropped,
            "search.max_candidates keeps only the first candidates of the search space"
        );
    }
    Ok(plan)
}

impl Plan {
    /// The candidates, in order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The DAG: edges go from a model to the step applied to it.
    pub fn graph(&self) -> &DiGraph<PlanNode, ()> {
        &self.graph
    }

    /// The node of the source model.
    pub fn root(&self) -> NodeIndex {
        self.root
    }

    /// How many candidates the recipe's search space holds, before `search.max_candidates`
    /// (saturating at `usize::MAX`).
    pub fn space_size(&self) -> usize {
        self.space
    }

    /// How many candidates of the space were left out because of `search.max_candidates`.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// How many paths of the space repeated an earlier candidate's steps and were merged.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// The children of `node`, in the order candidates first reach them.
    pub fn children(&self, node: NodeIndex) -> Vec<NodeIndex> {
        let mut children: Vec<NodeIndex> = self.graph.neighbors(node).collect();
        children.sort();
        children
    }

    /// The DAG as an indented tree, each candidate marked at its last step, and a summary of
    /// the candidate count.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.source.display());
        let ids: HashMap<NodeIndex, &str> =
            self.candidates.iter().map(|c| (c.node, c.id.as_str())).collect();
        self.render_children(self.root, "", &ids, &mut out);

        let count = self.candidates.len();
        let noun = if count == 1 { "candidate" } else { "candidates" };
        let _ = write!(out, "{count} {noun}");
        if self.dropped > 0 {
            let _ = write!(
                out,
                " of {} in the search space; {} dropped by search.max_candidates = {}",
                self.space, self.dropped, self.max_candidates
            );
        }
        out.push('\n');
        if self.duplicates > 0 {
            let paths = if self.duplicates == 1 { "path" } else { "paths" };
            let _ = writeln!(
                out,
                "{} repeated {paths} (the same steps as an earlier candidate) merged",
                self.duplicates
            );
        }
        out
    }

    fn render_children(
        &self,
        node: NodeIndex,
        indent: &str,
        ids: &HashMap<NodeIndex, &str>,
        out: &mut String,
    ) {
        let children = self.children(node);
        for (position, child) in children.iter().enumerate() {
            let last = position + 1 == children.len();
            let (branch, next_indent) =
                if last { ("└── ", "    ") } else { ("├── ", "│   ") };
            let label = match &self.graph[*child] {
                PlanNode::Step(step) => step.label(),
                PlanNode::Source => "source".to_owned(),
            };
            let _ = write!(out, "{indent}{branch}{label}");
            if let Some(id) = ids.get(child) {
                let _ = write!(out, "  [{id}]");
            }
            out.push('\n');
            self.render_children(*child, &format!("{indent}{next_indent}"), ids, out);
        }
    }
}

fn chain_count(items: &[PassItem]) -> usize {
    items.iter().map(item_count).fold(1, usize::saturating_mul)
}

fn item_count(item: &PassItem) -> usize {
    match item {
        PassItem::Pass(spec) => pass_count(spec),
        PassItem::OneOf(branches) => {
            branches.iter().map(|chain| chain_count(chain)).fold(0, usize::saturating_add)
        }
    }
}

fn pass_count(spec: &PassSpec) -> usize {
    spec.params.iter().map(|(_, space)| space.values().len()).fold(1, usize::saturating_mul)
}

/// Appends the steps of the `index`-th path through `items` (first item most significant).
fn decode_chain(items: &[PassItem], mut index: usize, steps: &mut Vec<StepRef>) {
    let mut digits = vec![0; items.len()];
    for (digit, item) in digits.iter_mut().zip(items).rev() {
        let count = item_count(item).max(1);
        *digit = index % count;
        index /= count;
    }
    for (item, digit) in items.iter().zip(digits) {
        decode_item(item, digit, steps);
    }
}

fn decode_item(item: &PassItem, mut index: usize, steps: &mut Vec<StepRef>) {
    match item {
        PassItem::Pass(spec) => steps.push(decode_pass(spec, index)),
        PassItem::OneOf(branches) => {
            for chain in branches {
                let count = chain_count(chain);
                if index < count {
                    decode_chain(chain, index, steps);
                    return;
                }
                index -= count;
            }
        }
    }
}

/// The `index`-th configuration of a pass (first parameter most significant).
fn decode_pass(spec: &PassSpec, mut index: usize) -> StepRef {
    let mut config = Map::new();
    for (name, space) in spec.params.iter().rev() {
        let values = space.values();
        let count = values.len().max(1);
        if let Some(value) = values.get(index % count) {
            config.insert(name.clone(), value.clone());
        }
        index /= count;
    }
    StepRef { pass: spec.name.clone(), config: Value::Object(config), origin: spec.origin.clone() }
}

/// Builds every distinct configuration once with its pass's constructor: each configuration
/// of each pass in the recipe (up to [`CHECK_LIMIT_PER_PASS`]) and each one a candidate uses.
fn check_configs(recipe: &Recipe, plan: &Plan) -> Result<(), PlanError> {
    let mut steps = Vec::new();
    collect_pass_configs(&recipe.passes, &mut steps);
    steps.extend(plan.candidates.iter().flat_map(|c| c.steps.iter().cloned()));

    let mut checked = HashSet::new();
    for step in steps {
        if !checked.insert(step.key()) {
            continue;
        }
        let Some(info) = pipeline_passes::pass::find(&step.pass) else {
            return Err(PlanError::UnknownPass {
                file: recipe.path.clone(),
                origin: step.origin,
                name: step.pass,
            });
        };
        if let Err(error) = (info.build)(&step.config) {
            return Err(PlanError::InvalidConfig {
                file: recipe.path.clone(),
                origin: step.origin,
                config: step.config,
                message: error.to_string(),
            });
        }
    }
    Ok(())
}

fn collect_pass_configs(items: &[PassItem], steps: &mut Vec<StepRef>) {
    for item in items {
        match item {
            PassItem::Pass(spec) => {
                let count = pass_count(spec);
                if count > CHECK_LIMIT_PER_PASS {
                    // TODO: configurations of a pass beyond the limit are checked only when a
                    // kept candidate uses them, so a bad one may surface only with a larger cap.
                    tracing::warn!(
                        pass = %spec.origin.field,
                        configurations = count,
                        "too many configurations to check each one up front"
                    );
                }
                steps.extend((0..count.min(CHECK_LIMIT_PER_PASS)).map(|i| decode_pass(spec, i)));
            }
            PassItem::OneOf(branches) => {
                branches.iter().for_each(|chain| collect_pass_configs(chain, steps))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::ParamSpace;
    use serde_json::json;

    fn pass(name: &str, params: &[(&str, ParamSpace)]) -> PassItem {
        PassItem::Pass(PassSpec {
            name: name.to_owned(),
            params: params.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
            origin: Origin::default(),
        })
    }

    fn labels(items: &[PassItem]) -> Vec<String> {
        (0..chain_count(items))
            .map(|index| {
                let mut steps = Vec::new();
                decode_chain(items, index, &mut steps);
                steps.iter().map(StepRef::label).collect::<Vec<_>>().join(" -> ")
            })
            .collect()
    }

    #[test]
    fn first_parameter_varies_slowest() {
        let items = [pass(
            "p",
            &[
                ("a", ParamSpace::Choices(vec![json!(1), json!(2)])),
                ("b", ParamSpace::Choices(vec![json!("x"), json!("y"), json!("z")])),
            ],
        )];
        assert_eq!(
            labels(&items),
            [
                "p(a=1, b=x)",
                "p(a=1, b=y)",
                "p(a=1, b=z)",
                "p(a=2, b=x)",
                "p(a=2, b=y)",
                "p(a=2, b=z)"
            ]
        );
    }

    #[test]
    fn branches_and_chains_expand_in_order() {
        let fixed = |v: Value| ParamSpace::Fixed(v);
        let items = [
            pass("a", &[("k", ParamSpace::Choices(vec![json!(1), json!(2)]))]),
            PassItem::OneOf(vec![
                vec![pass("b", &[])],
                vec![pass("c", &[("k", fixed(json!(true)))]), pass("d", &[])],
            ]),
        ];
        assert_eq!(chain_count(&items), 4);
        assert_eq!(
            labels(&items),
            [
                "a(k=1) -> b()",
                "a(k=1) -> c(k=true) -> d()",
                "a(k=2) -> b()",
                "a(k=2) -> c(k=true) -> d()"
            ]
        );
    }

    #[test]
    fn counts_saturate_instead_of_overflowing() {
        let wide = ParamSpace::Choices((0..1000).map(|i| json!(i)).collect());
        let params: Vec<(&str, ParamSpace)> =
            ["a", "b", "c", "d", "e", "f", "g"].iter().map(|name| (*name, wide.clone())).collect();
        let items = [pass("p", &params)];
        assert_eq!(chain_count(&items), usize::MAX);
        let mut steps = Vec::new();
        decode_chain(&items, 1, &mut steps);
        assert_eq!(steps[0].config["g"], json!(1));
        assert_eq!(steps[0].config["a"], json!(0));
    }
}
