//! Turns a recipe's passes into a DAG of steps and enumerates the candidates.
//!
//! Every list of parameter values expands as a cartesian product, a list of items is a chain,
//! and `one_of` makes branches. Paths through the space are numbered in a stable order: the
//! first item of the pass list varies slowest, and within a pass the first parameter varies
//! slowest. Each list of values and each `one_of` is a search dimension, and every candidate
//! records which value of each dimension it took, for the search strategies.
//!
//! Every concrete configuration is built with the pass's own constructor before anything
//! runs. A configuration the pass refuses is an error when the recipe wrote it as is; when it
//! only exists because a parameter of that step is searched, the path is skipped and counted
//! with its reason. In a searched step, parameters the pass declares inapplicable for the
//! values of another one (`percentile` without `calibration: percentile`) are left out, so
//! that equal configurations collapse into one candidate. The DAG is a trie of steps rooted at
//! the source model, so candidates with an equal prefix share its nodes and a search can run
//! that prefix once.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use petgraph::graph::{DiGraph, NodeIndex};
use pipeline_passes::pass::PassInfo;
use serde_json::{Map, Value};

use crate::recipe::{Origin, ParamSpace, PassItem, PassSpec, Recipe, Search, Strategy};

/// The most paths of the search space that are enumerated; beyond that the plan says how
/// many it left out.
pub const ENUMERATE_LIMIT: usize = 100_000;

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
    /// For each search dimension of the plan, the index of the value this candidate takes;
    /// `None` for a dimension inside a `one_of` branch it does not take.
    pub coords: Vec<Option<usize>>,
}

impl Candidate {
    /// The steps' labels joined by arrows.
    pub fn label(&self) -> String {
        self.steps.iter().map(StepRef::label).collect::<Vec<_>>().join(" -> ")
    }
}

/// A search dimension: a parameter given a list of values, or a `one_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimension {
    /// Where it is written: `passes[0].quantize_static.calibration`, `passes[1].one_of`.
    pub label: String,
    /// How many values (or branches) it has.
    pub size: usize,
    /// The `one_of` dimension and branch this dimension lies in, if any: it only counts for
    /// candidates that take that branch.
    pub parent: Option<(usize, usize)>,
}

/// Paths of the search space that the pass refused for the same reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidGroup {
    /// The pass's message.
    pub reason: String,
    /// How many paths it refused.
    pub count: usize,
    /// The step of the first refused path, as a label.
    pub example: String,
}

/// The DAG of steps and the candidates a recipe makes.
#[derive(Debug, Clone)]
pub struct Plan {
    graph: DiGraph<PlanNode, ()>,
    root: NodeIndex,
    candidates: Vec<Candidate>,
    source: PathBuf,
    space: usize,
    enumerated: usize,
    duplicates: usize,
    invalid: Vec<InvalidGroup>,
    dimensions: Vec<Dimension>,
    /// Each enumerated path's coordinates: the candidate it makes (the earlier one for a
    /// repeated path), or `None` when a pass refused it.
    paths: HashMap<Vec<Option<usize>>, Option<usize>>,
    search: Search,
}

/// Why a plan could not be made from a recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A configuration the recipe wrote as is was refused by its pass.
    #[error(
        "{}:{}:{}: {}: {message} (configuration {config})\n  hint: `pipeline passes` describes \
         each pass's parameters",
        file.display(), origin.line, origin.column, origin.field
    )]
    InvalidConfig { file: PathBuf, origin: Origin, config: Value, message: String },

    /// A searched value that its pass refuses in every combination it appears in.
    #[error(
        "{}:{}:{}: {}: {message} (value {value}, refused in every combination of the searched \
         values)\n  hint: remove the value from the list; `pipeline passes` describes each \
         pass's parameters",
        file.display(), origin.line, origin.column, origin.field
    )]
    InvalidValue { file: PathBuf, origin: Origin, value: String, message: String },

    /// The recipe names a pass the registry does not have.
    #[error(
        "{}:{}:{}: {}: unknown pass `{name}`\n  hint: `pipeline passes` lists every pass",
        file.display(), origin.line, origin.column, origin.field
    )]
    UnknownPass { file: PathBuf, origin: Origin, name: String },

    /// The recipe's passes make no candidate at all.
    #[error("{}: the passes make no candidate\n  hint: list at least one pass", file.display())]
    Empty { file: PathBuf },

    /// Every combination of the searched values was refused by a pass.
    #[error(
        "{}: no valid candidate: the passes refuse all {skipped} combinations of the searched \
         values:{}\n  hint: change the lists of values so that at least one combination is \
         valid; `pipeline passes` describes each pass's parameters",
        file.display(), render_reasons(reasons)
    )]
    NoValidCandidate { file: PathBuf, skipped: usize, reasons: Vec<InvalidGroup> },
}

fn render_reasons(groups: &[InvalidGroup]) -> String {
    let mut out = String::new();
    for group in groups {
        let _ = write!(out, "\n  {} x {} (e.g. {})", group.count, group.reason, group.example);
    }
    out
}

/// The structure of the pass list with each search dimension numbered, in recipe order.
enum Shape<'r> {
    Pass { spec: &'r PassSpec, dims: Vec<Option<usize>>, searched: bool },
    OneOf { dim: usize, branches: Vec<Vec<Shape<'r>>> },
}

fn shape_chain<'r>(
    items: &'r [PassItem],
    parent: Option<(usize, usize)>,
    dims: &mut Vec<Dimension>,
) -> Vec<Shape<'r>> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| shape_item(item, parent.is_none().then_some(index), 0, parent, dims))
        .collect()
}

/// `top` is the item's index in the recipe's `passes` when it is a top-level item; `depth`
/// counts the `one_of`s around it.
fn shape_item<'r>(
    item: &'r PassItem,
    top: Option<usize>,
    depth: usize,
    parent: Option<(usize, usize)>,
    dims: &mut Vec<Dimension>,
) -> Shape<'r> {
    match item {
        PassItem::Pass(spec) => {
            let mut ids = Vec::with_capacity(spec.params.len());
            for (name, space) in &spec.params {
                ids.push(match space {
                    ParamSpace::Choices(values) => {
                        let at = if spec.origin.field.is_empty() {
                            spec.name.as_str()
                        } else {
                            spec.origin.field.as_str()
                        };
                        dims.push(Dimension {
                            label: format!("{at}.{name}"),
                            size: values.len(),
                            parent,
                        });
                        Some(dims.len() - 1)
                    }
                    ParamSpace::Fixed(_) => None,
                });
            }
            let searched = spec.params.iter().any(|(_, space)| space.values().len() > 1);
            Shape::Pass { spec, dims: ids, searched }
        }
        PassItem::OneOf(branches) => {
            let dim = dims.len();
            let label = one_of_label(branches, depth)
                .or_else(|| top.map(|index| format!("passes[{index}].one_of")))
                .unwrap_or_else(|| "one_of".to_owned());
            dims.push(Dimension { label, size: branches.len(), parent });
            let branches = branches
                .iter()
                .enumerate()
                .map(|(branch, chain)| {
                    chain
                        .iter()
                        .map(|item| shape_item(item, None, depth + 1, Some((dim, branch)), dims))
                        .collect()
                })
                .collect();
            Shape::OneOf { dim, branches }
        }
    }
}

/// `passes[1].one_of`, read from the recorded place of the first pass in the first branch of
/// a `one_of` inside `depth` others.
fn one_of_label(branches: &[Vec<PassItem>], depth: usize) -> Option<String> {
    let first = first_spec(branches.first()?)?;
    let field = &first.origin.field;
    let (end, _) = field.match_indices(".one_of[").nth(depth)?;
    Some(format!("{}.one_of", &field[..end]))
}

fn first_spec(chain: &[PassItem]) -> Option<&PassSpec> {
    match chain.first()? {
        PassItem::Pass(spec) => Some(spec),
        PassItem::OneOf(branches) => first_spec(branches.first()?),
    }
}

/// One decoded path: its steps, whether each step's pass has a searched parameter, and the
/// path's coordinates.
struct Path {
    steps: Vec<StepRef>,
    searched: Vec<bool>,
    coords: Vec<Option<usize>>,
}

/// Expands the recipe's passes into candidates and their DAG.
pub fn build(recipe: &Recipe) -> Result<Plan, PlanError> {
    let space = chain_count(&recipe.passes);
    if space == 0 {
        return Err(PlanError::Empty { file: recipe.path.clone() });
    }

    let mut dimensions = Vec::new();
    let top_level = shape_chain(&recipe.passes, None, &mut dimensions);

    let mut graph = DiGraph::new();
    let root = graph.add_node(PlanNode::Source);
    let mut children: HashMap<(NodeIndex, (String, String)), NodeIndex> = HashMap::new();
    let mut leaves: HashMap<NodeIndex, usize> = HashMap::new();
    let mut checked: HashMap<(String, String), Result<(), String>> = HashMap::new();
    let mut paths = HashMap::new();
    let mut candidates = Vec::new();
    let mut invalid: Vec<InvalidGroup> = Vec::new();
    let mut duplicates = 0;
    let enumerated = space.min(ENUMERATE_LIMIT);

    for index in 0..enumerated {
        let mut path =
            Path { steps: Vec::new(), searched: Vec::new(), coords: vec![None; dimensions.len()] };
        decode_shape_chain(&top_level, &recipe.passes, index, &mut path);

        if let Some((reason, example)) = refusal(recipe, &path, &mut checked)? {
            match invalid.iter_mut().find(|group| group.reason == reason) {
                Some(group) => group.count += 1,
                None => invalid.push(InvalidGroup { reason, count: 1, example }),
            }
            paths.insert(path.coords, None);
            continue;
        }

        let mut node = root;
        for step in &path.steps {
            node = *children.entry((node, step.key())).or_insert_with(|| {
                let child = graph.add_node(PlanNode::Step(step.clone()));
                graph.add_edge(node, child, ());
                child
            });
        }
        if let Some(&earlier) = leaves.get(&node) {
            duplicates += 1;
            paths.insert(path.coords, Some(earlier));
            continue;
        }
        leaves.insert(node, candidates.len());
        paths.insert(path.coords.clone(), Some(candidates.len()));
        let id = format!("c{}", candidates.len() + 1);
        candidates.push(Candidate { id, steps: path.steps, node, coords: path.coords });
    }

    let skipped: usize = invalid.iter().map(|group| group.count).sum();
    if candidates.is_empty() {
        return Err(PlanError::NoValidCandidate {
            file: recipe.path.clone(),
            skipped,
            reasons: invalid,
        });
    }
    refuse_dead_values(recipe, &top_level, &mut checked)?;
    if skipped > 0 {
        tracing::info!(skipped, "combinations the passes refuse are skipped");
    }
    if enumerated < space {
        // TODO: a space larger than the enumeration limit is searched only in its first paths;
        // sampling coordinates directly would reach the rest.
        tracing::warn!(
            space,
            enumerated,
            "the search space is larger than the engine enumerates; only its first paths are \
             searched"
        );
    }

    Ok(Plan {
        graph,
        root,
        candidates,
        source: recipe.model.clone(),
        space,
        enumerated,
        duplicates,
        invalid,
        dimensions,
        paths,
        search: recipe.search.clone(),
    })
}

/// Whether the step's pass accepts its configuration (the pass's message when not),
/// remembered in `checked` by pass and configuration.
fn check_step(
    recipe: &Recipe,
    step: &StepRef,
    checked: &mut HashMap<(String, String), Result<(), String>>,
) -> Result<Result<(), String>, PlanError> {
    if let Some(result) = checked.get(&step.key()) {
        return Ok(result.clone());
    }
    let Some(info) = pipeline_passes::pass::find(&step.pass) else {
        return Err(PlanError::UnknownPass {
            file: recipe.path.clone(),
            origin: step.origin.clone(),
            name: step.pass.clone(),
        });
    };
    let result = (info.build)(&step.config).map(|_| ()).map_err(|e| e.to_string());
    checked.insert(step.key(), result.clone());
    Ok(result)
}

/// Refuses a searched value that its pass refuses in every configuration of its step that
/// takes it, as a fixed value the pass refuses is refused: such a value would silently never
/// run. A value refused only with some values of the other parameters is left to the
/// enumeration, which skips and counts those combinations. Steps with more configurations
/// than [`ENUMERATE_LIMIT`] are not checked.
fn refuse_dead_values(
    recipe: &Recipe,
    shapes: &[Shape],
    checked: &mut HashMap<(String, String), Result<(), String>>,
) -> Result<(), PlanError> {
    for shape in shapes {
        match shape {
            Shape::Pass { spec, searched: true, .. } => {
                refuse_dead_values_of(recipe, spec, checked)?
            }
            Shape::Pass { .. } => {}
            Shape::OneOf { branches, .. } => {
                for chain in branches {
                    refuse_dead_values(recipe, chain, checked)?;
                }
            }
        }
    }
    Ok(())
}

fn refuse_dead_values_of(
    recipe: &Recipe,
    spec: &PassSpec,
    checked: &mut HashMap<(String, String), Result<(), String>>,
) -> Result<(), PlanError> {
    let count = pass_count(spec);
    if count > ENUMERATE_LIMIT {
        return Ok(());
    }
    // For each parameter and value: accepted in some configuration, or the first refusal.
    let mut seen: Vec<Vec<Result<(), Option<String>>>> =
        spec.params.iter().map(|(_, space)| vec![Err(None); space.values().len()]).collect();
    let mut first_refused = None;
    let mut any_accepted = false;
    for index in 0..count {
        let (step, digits) = decode_pass(spec, index);
        let step = drop_inapplicable(step);
        let result = check_step(recipe, &step, checked)?;
        any_accepted |= result.is_ok();
        if let (Err(message), None) = (&result, &first_refused) {
            first_refused = Some((step, message.clone()));
        }
        for (values, digit) in seen.iter_mut().zip(digits) {
            let Some(entry) = values.get_mut(digit) else { continue };
            match (&result, &entry) {
                (Ok(()), _) => *entry = Ok(()),
                (Err(message), Err(None)) => *entry = Err(Some(message.clone())),
                (Err(_), _) => {}
            }
        }
    }
    // A step none of whose configurations is valid is refused as a whole, at the step.
    if let (false, Some((step, message))) = (any_accepted, first_refused) {
        return Err(PlanError::InvalidConfig {
            file: recipe.path.clone(),
            origin: step.origin,
            config: step.config,
            message,
        });
    }
    let at = if spec.origin.field.is_empty() { &spec.name } else { &spec.origin.field };
    for ((name, space), values) in spec.params.iter().zip(seen) {
        let ParamSpace::Choices(choices) = space else { continue };
        for (position, (value, entry)) in choices.iter().zip(values).enumerate() {
            if let Err(Some(message)) = entry {
                return Err(PlanError::InvalidValue {
                    file: recipe.path.clone(),
                    origin: Origin {
                        field: format!("{at}.{name}[{position}]"),
                        ..spec.origin.clone()
                    },
                    value: value.to_string(),
                    message,
                });
            }
        }
    }
    Ok(())
}

/// Why a pass refuses one of the path's steps: `Some((reason, step label))` for a step whose
/// configuration comes from a search, an error for a step the recipe wrote as is.
fn refusal(
    recipe: &Recipe,
    path: &Path,
    checked: &mut HashMap<(String, String), Result<(), String>>,
) -> Result<Option<(String, String)>, PlanError> {
    for (step, &searched) in path.steps.iter().zip(&path.searched) {
        let result = check_step(recipe, step, checked)?;
        let Err(message) = result else { continue };
        if !searched {
            return Err(PlanError::InvalidConfig {
                file: recipe.path.clone(),
                origin: step.origin.clone(),
                config: step.config.clone(),
                message,
            });
        }
        return Ok(Some((message, step.label())));
    }
    Ok(None)
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

    /// How many paths the recipe's search space holds (saturating at `usize::MAX`).
    pub fn space_size(&self) -> usize {
        self.space
    }

    /// How many paths of the space lie beyond [`ENUMERATE_LIMIT`] and were not considered.
    pub fn not_enumerated(&self) -> usize {
        self.space - self.enumerated
    }

    /// How many paths repeated an earlier candidate's steps and were merged.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// How many paths were skipped because a pass refuses their combination of values.
    pub fn skipped_invalid(&self) -> usize {
        self.invalid.iter().map(|group| group.count).sum()
    }

    /// The reasons paths were skipped, grouped, in the order first met.
    pub fn invalid_reasons(&self) -> &[InvalidGroup] {
        &self.invalid
    }

    /// The search dimensions, in recipe order.
    pub fn dimensions(&self) -> &[Dimension] {
        &self.dimensions
    }

    /// The recipe's search settings.
    pub fn search(&self) -> &Search {
        &self.search
    }

    /// The candidate a full assignment of values (one index per dimension) makes: the index
    /// of the candidate, or `None` when a pass refuses that combination or it lies beyond the
    /// enumerated paths. Values of dimensions in branches the assignment does not take do not
    /// matter.
    pub fn lookup(&self, assignment: &[usize]) -> Option<usize> {
        let coords = project(&self.dimensions, assignment);
        self.paths.get(&coords).copied().flatten()
    }

    /// Each enumerated path's coordinates with the candidate it makes (the earlier candidate
    /// for a repeated path), or `None` when a pass refused it.
    pub fn paths(&self) -> impl Iterator<Item = (&[Option<usize>], Option<usize>)> {
        self.paths.iter().map(|(coords, candidate)| (coords.as_slice(), *candidate))
    }

    /// The children of `node`, in the order candidates first reach them.
    pub fn children(&self, node: NodeIndex) -> Vec<NodeIndex> {
        let mut children: Vec<NodeIndex> = self.graph.neighbors(node).collect();
        children.sort();
        children
    }

    /// The DAG as an indented tree, each candidate marked at its last step, and a summary:
    /// the candidate count, the paths skipped or merged, and the search settings.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", self.source.display());
        let ids: HashMap<NodeIndex, &str> =
            self.candidates.iter().map(|c| (c.node, c.id.as_str())).collect();
        self.render_children(self.root, "", &ids, &mut out);

        let count = self.candidates.len();
        let noun = if count == 1 { "candidate" } else { "candidates" };
        let _ = write!(out, "{count} {noun}");
        if self.space != count {
            let _ = write!(out, " in a search space of {}", self.space);
        }
        out.push('\n');
        let skipped = self.skipped_invalid();
        if skipped > 0 {
            let reasons = render_reasons(&self.invalid);
            let _ = writeln!(out, "{skipped} skipped as invalid:{reasons}");
        }
        if self.duplicates > 0 {
            let paths = if self.duplicates == 1 { "path" } else { "paths" };
            let _ = writeln!(
                out,
                "{} repeated {paths} (the same steps as an earlier candidate) merged",
                self.duplicates
            );
        }
        if self.enumerated < self.space {
            let _ = writeln!(
                out,
                "{} paths beyond the first {} not considered",
                self.space - self.enumerated,
                self.enumerated
            );
        }
        let _ = writeln!(out, "{}", self.search_line());
        out
    }

    /// `search: random (seed 3), max_candidates 5 (7 candidates will not run), max_time 10m`.
    pub fn search_line(&self) -> String {
        let search = &self.search;
        let mut line = format!("search: {}", search.strategy);
        if matches!(search.strategy, Strategy::Random | Strategy::Tpe) {
            let _ = write!(line, " (seed {})", search.seed);
        }
        let _ = write!(line, ", max_candidates {}", search.max_candidates);
        let count = self.candidates.len();
        if count > search.max_candidates {
            let left = count - search.max_candidates;
            let noun = if left == 1 { "candidate" } else { "candidates" };
            let _ = write!(line, " ({left} {noun} will not run)");
        }
        match search.max_time {
            Some(max_time) => {
                let _ = write!(line, ", max_time {max_time}");
            }
            None => line.push_str(", no time limit"),
        }
        line
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

/// The coordinates `assignment` has in the space of `dimensions`: a dimension inside a branch
/// the assignment does not take gets `None`.
pub fn project(dimensions: &[Dimension], assignment: &[usize]) -> Vec<Option<usize>> {
    let mut coords: Vec<Option<usize>> = Vec::with_capacity(dimensions.len());
    for (dim, dimension) in dimensions.iter().enumerate() {
        // A parent always comes before its children, so its coordinate is known.
        let active = match dimension.parent {
            None => true,
            Some((parent, branch)) => coords[parent] == Some(branch),
        };
        coords.push(active.then(|| assignment.get(dim).copied().unwrap_or(0)));
    }
    coords
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

/// Decodes the `index`-th path through `items` (first item most significant) into `path`.
fn decode_shape_chain(shapes: &[Shape], items: &[PassItem], mut index: usize, path: &mut Path) {
    let mut digits = vec![0; items.len()];
    for (digit, item) in digits.iter_mut().zip(items).rev() {
        let count = item_count(item).max(1);
        *digit = index % count;
        index /= count;
    }
    for ((shape, item), digit) in shapes.iter().zip(items).zip(digits) {
        decode_shape_item(shape, item, digit, path);
    }
}

fn decode_shape_item(shape: &Shape, item: &PassItem, mut index: usize, path: &mut Path) {
    match (shape, item) {
        (Shape::Pass { spec, dims, searched }, _) => {
            let (step, digits) = decode_pass(spec, index);
            for (dim, digit) in dims.iter().zip(digits) {
                if let Some(dim) = dim {
                    path.coords[*dim] = Some(digit);
                }
            }
            let step = if *searched { drop_inapplicable(step) } else { step };
            path.steps.push(step);
            path.searched.push(*searched);
        }
        (Shape::OneOf { dim, branches: shapes }, PassItem::OneOf(branches)) => {
            for (branch, (chain, chain_shape)) in branches.iter().zip(shapes).enumerate() {
                let count = chain_count(chain);
                if index < count {
                    path.coords[*dim] = Some(branch);
                    decode_shape_chain(chain_shape, chain, index, path);
                    return;
                }
                index -= count;
            }
        }
        // The shape is built from the same items, so the kinds always agree.
        (Shape::OneOf { .. }, PassItem::Pass(_)) => {}
    }
}

/// Appends the steps of the `index`-th path through `items` (first item most significant).
#[cfg(test)]
fn decode_chain(items: &[PassItem], index: usize, steps: &mut Vec<StepRef>) {
    let mut dims = Vec::new();
    let shapes = shape_chain(items, None, &mut dims);
    let mut path = Path { steps: Vec::new(), searched: Vec::new(), coords: vec![None; dims.len()] };
    decode_shape_chain(&shapes, items, index, &mut path);
    steps.extend(path.steps);
}

/// The `index`-th configuration of a pass (first parameter most significant), and the index
/// of the value each parameter took, in parameter order.
fn decode_pass(spec: &PassSpec, mut index: usize) -> (StepRef, Vec<usize>) {
    let mut config = Map::new();
    let mut digits = vec![0; spec.params.len()];
    for ((name, space), digit) in spec.params.iter().zip(digits.iter_mut()).rev() {
        let values = space.values();
        let count = values.len().max(1);
        *digit = index % count;
        if let Some(value) = values.get(*digit) {
            config.insert(name.clone(), value.clone());
        }
        index /= count;
    }
    let step = StepRef {
        pass: spec.name.clone(),
        config: Value::Object(config),
        origin: spec.origin.clone(),
    };
    (step, digits)
}

/// Leaves out the parameters the pass declares inapplicable for the values of the others
/// (or their defaults), repeating until none is left to drop, since dropping one parameter
/// can make another inapplicable.
fn drop_inapplicable(mut step: StepRef) -> StepRef {
    let Some(info) = pipeline_passes::pass::find(&step.pass) else { return step };
    if info.applies_when.is_empty() {
        return step;
    }
    let Value::Object(config) = &mut step.config else { return step };
    loop {
        let inapplicable = info.applies_when.iter().find(|rule| {
            config.contains_key(rule.parameter) && {
                let controlling = config
                    .get(rule.depends_on)
                    .cloned()
                    .or_else(|| default_of(info, rule.depends_on));
                // Without a value or a default to decide, the parameter is kept.
                controlling.is_some_and(|value| !rule.values.contains(&show(&value).as_str()))
            }
        });
        match inapplicable {
            Some(rule) => {
                tracing::debug!(
                    pass = info.name,
                    parameter = rule.parameter,
                    "left out: it applies only when `{}` is one of {:?}",
                    rule.depends_on,
                    rule.values
                );
                config.remove(rule.parameter);
            }
            None => return step,
        }
    }
}

/// The default of a pass parameter, from its config schema.
fn default_of(info: &PassInfo, parameter: &str) -> Option<Value> {
    let mut generator = schemars::SchemaGenerator::default();
    let schema = (info.config_schema)(&mut generator);
    schema.get("properties")?.get(parameter)?.get("default").cloned()
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
