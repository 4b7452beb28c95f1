//! The walk over the main graph: finds the MatMuls (and Gathers) with constant weights,
//! decides each one's options, quantizes every weight once per layout and options, and
//! rewrites the nodes; float weights nobody reads any more are removed.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{debug, info, warn};

use super::block::{BlockSpec, QuantizedBlock, Rounding};
use super::layers::{self, LayerSource};
use super::layout::{self, Blocked, WeightTensors};
use super::source::{self, ConstWeight};
use super::{Importance, NodeOptions, QuantizeWeights, WeightFormat, MS_DOMAIN};
use crate::ir::proto::{GraphProto, NodeProto, TensorProto};
use crate::ir::{self, GraphIndex, NameGenerator};
use crate::pass::{Configured, PassError};
use crate::quantize::importance::{BlockSearch, ImportanceError};

/// A node left in float: its label and why.
type Skipped = (String, String);

/// How many skipped nodes the "nothing quantized" error lists.
const MAX_LISTED_SKIPS: usize = 8;

/// The operator a weight is quantized for, which fixes its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    MatMulNBits,
    QdqMatMul,
    GatherBlockQuantized,
    QdqGather,
}

impl Target {
    fn is_gather(self) -> bool {
        matches!(self, Target::GatherBlockQuantized | Target::QdqGather)
    }
}

/// A node to quantize.
struct Candidate {
    index: usize,
    target: Target,
    weight: ConstWeight,
    options: NodeOptions,
}

/// The names of one quantized weight's initializers, and of its DequantizeLinear's output in
/// the QDQ layouts.
#[derive(Clone)]
struct Quantized {
    values: String,
    scales: String,
    zero_points: Option<String>,
    dequantized: Option<String>,
}

/// What one run did, for the log.
pub(super) struct Summary {
    /// Quantized MatMuls by bits.
    matmuls: BTreeMap<u32, usize>,
    /// Quantized Gathers by bits.
    gathers: BTreeMap<u32, usize>,
    skipped: usize,
    bytes_before: usize,
    bytes_after: usize,
    format: WeightFormat,
    pub(super) uses_ms_domain: bool,
}

impl Summary {
    pub(super) fn describe(&self) -> String {
        let by_bits = |counts: &BTreeMap<u32, usize>| -> String {
            let parts: Vec<String> =
                counts.iter().map(|(bits, n)| format!("{n} at {bits} bits")).collect();
            parts.join(", ")
        };
        let matmuls: usize = self.matmuls.values().sum();
        let gathers: usize = self.gathers.values().sum();
        let mut text = format!("quantized {matmuls} MatMul(s) ({})", by_bits(&self.matmuls));
        if gathers > 0 {
            text.push_str(&format!(" and {gathers} Gather(s) ({})", by_bits(&self.gathers)));
        }
        let format = match self.format {
            WeightFormat::Qdq => "QDQ",
            _ => "MatMulNBits",
        };
        text.push_str(&format!(
            " as {format}; weights {} -> {} bytes; {} MatMul/Gather node(s) left in float",
            self.bytes_before, self.bytes_after, self.skipped
        ));
        text
    }
}

/// The first inputs of the MatMuls [`quantize_graph`] would quantize, each once, in graph
/// order: the activations whose column importances a data-aware run measures.
pub(super) fn matmul_activations(
    graph: &GraphProto,
    pass: &QuantizeWeights,
    format: WeightFormat,
) -> Result<Vec<String>, PassError> {
    let (candidates, _) = find_candidates(graph, pass, format)?;
    let mut seen = HashSet::new();
    let activations = candidates
        .iter()
        .filter(|found| !found.target.is_gather())
        .filter_map(|found| graph.node[found.index].input.first())
        .filter(|name| seen.insert(name.as_str()))
        .cloned()
        .collect();
    Ok(activations)
}

/// Every node to quantize, in graph order, with its options; and why each other node of a
/// type this pass rewrites stays in float.
fn find_candidates(
    graph: &GraphProto,
    pass: &QuantizeWeights,
    format: WeightFormat,
) -> Result<(Vec<Candidate>, Vec<Skipped>), PassError> {
    let index = GraphIndex::new(graph);
    let order = ir::topological_order(graph)?;

    let mut candidates = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    for &position in &order {
        let node = &graph.node[position];
        let label = node_label(node, position);
        if node.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty()) {
            debug!(node = %label, "subgraphs are left alone: their MatMuls stay in float");
        }
        match candidate(graph, &index, pass, format, position) {
            Ok(Some(found)) => candidates.push(found),
            Ok(None) => {}
            Err(reason) => {
                debug!(node = %label, "left in float: {reason}");
                skipped.push((label, reason));
            }
        }
    }
    if pass.config.more_bits {
        apply_more_bits(graph, pass, &mut candidates);
    }
    Ok((candidates, skipped))
}

/// Quantizes every candidate's weight and rewrites the nodes. With `importance`, each MatMul
/// block's scale comes from the importance-weighted search; a weight that several MatMuls
/// read is weighted by the sum of their importances.
pub(super) fn quantize_graph(
    graph: &mut GraphProto,
    pass: &QuantizeWeights,
    format: WeightFormat,
    importance: Option<&Importance>,
) -> Result<Summary, PassError> {
    warn_unmatched(graph, pass);
    let (candidates, skipped) = find_candidates(graph, pass, format)?;
    if candidates.is_empty() {
        return Err(nothing_quantized(graph, &skipped));
    }

    let weighted = match importance {
        Some(importance) => summed_importance(graph, &candidates, importance)?,
        None => HashMap::new(),
    };

    let index = GraphIndex::new(graph);
    let mut names = NameGenerator::new(graph);
    let mut quantized: HashMap<(String, Target, NodeOptions), Quantized> = HashMap::new();
    let mut new_initializers: Vec<TensorProto> = Vec::new();
    let mut dequantize_nodes: Vec<NodeProto> = Vec::new();
    let mut replacements: HashMap<usize, NodeProto> = HashMap::new();
    let mut weights_seen: HashSet<String> = HashSet::new();
    let mut summary = Summary {
        matmuls: BTreeMap::new(),
        gathers: BTreeMap::new(),
        skipped: skipped.len(),
        bytes_before: 0,
        bytes_after: 0,
        format,
        uses_ms_domain: false,
    };

    for found in &candidates {
        let node = &graph.node[found.index];
        let key = (found.weight.value.clone(), found.target, found.options);
        let names_of = match quantized.get(&key) {
            Some(existing) => existing.clone(),
            None => {
                let importance = weighted.get(&found.weight.value).map(Vec::as_slice);
                let weight = source::find(graph, &index, &found.weight.value)
                    .map_err(|reason| PassError::Model { pass: QuantizeWeights::NAME, reason })?;
                let tensors = quantize_weight(&weight, found.target, found.options, importance)?;
                let made = add_weight(
                    tensors,
                    found,
                    &mut names,
                    &mut new_initializers,
                    &mut dequantize_nodes,
                    &mut summary,
                );
                quantized.insert(key, made.clone());
                made
            }
        };
        if weights_seen.insert(found.weight.value.clone()) {
            summary.bytes_before += found.weight.bytes;
        }
        let rewritten = rewrite_node(node, found, &names_of, &mut names, pass);
        debug!(node = %node_label(node, found.index), bits = found.options.bits, "quantized");
        let counts =
            if found.target.is_gather() { &mut summary.gathers } else { &mut summary.matmuls };
        *counts.entry(found.options.bits).or_default() += 1;
        summary.uses_ms_domain |=
            matches!(found.target, Target::MatMulNBits | Target::GatherBlockQuantized);
        replacements.insert(found.index, rewritten);
    }

    let old_nodes = std::mem::take(&mut graph.node);
    graph.node = dequantize_nodes;
    for (position, node) in old_nodes.into_iter().enumerate() {
        graph.node.push(replacements.remove(&position).unwrap_or(node));
    }
    graph.initializer.extend(new_initializers);
    let sources: HashSet<String> =
        candidates.iter().flat_map(|c| [c.weight.value.clone(), c.weight.stored.clone()]).collect();
    remove_unread(graph, &sources);
    Ok(summary)
}

/// The candidate `graph.node[position]` makes, `None` when it is of no type this pass
/// quantizes, or why it stays in float.
fn candidate(
    graph: &GraphProto,
    index: &GraphIndex,
    pass: &QuantizeWeights,
    format: WeightFormat,
    position: usize,
) -> Result<Option<Candidate>, String> {
    let node = &graph.node[position];
    if !matches!(node.domain(), "" | "ai.onnx") {
        return Ok(None);
    }
    let qdq = format == WeightFormat::Qdq;
    let (target, weight_input) = match node.op_type() {
        "MatMul" => (if qdq { Target::QdqMatMul } else { Target::MatMulNBits }, 1),
        "Gather" if pass.config.embeddings => {
            (if qdq { Target::QdqGather } else { Target::GatherBlockQuantized }, 0)
        }
        _ => return Ok(None),
    };
    if pass.exclude.matches(node.name()) {
        return Err("excluded by `nodes_to_exclude`".into());
    }
    if target.is_gather() && !matches!(ir::node_attr_int(node, "axis").unwrap_or(0), 0 | -2) {
        return Err("a Gather along an axis other than 0 is no embedding lookup".into());
    }
    let Some(value) = node.input.get(weight_input).filter(|v| !v.is_empty()) else {
        return Err("the node lacks its weight input".into());
    };
    let mut weight = source::find(graph, index, value)?;
    // The values are read again when the weight is quantized, so that the pass holds one
    // weight's floats at a time, not every weight's.
    weight.values = Vec::new();
    let (options, _) = pass.options_for(node.name());
    if target == Target::GatherBlockQuantized && options.bits != 4 {
        return Err("GatherBlockQuantized takes 4-bit tables only (as ORT's tool writes it); \
                    `format: qdq` quantizes tables to 8 bits"
            .into());
    }
    Ok(Some(Candidate { index: position, target, weight, options }))
}

/// Keeps the layers llama.cpp's Q4_K_M rule picks at 8 bits, unless an override set bits.
fn apply_more_bits(graph: &GraphProto, pass: &QuantizeWeights, candidates: &mut [Candidate]) {
    let matmuls: Vec<usize> =
        (0..candidates.len()).filter(|&i| !candidates[i].target.is_gather()).collect();
    let names: Vec<(&str, &str)> = matmuls
        .iter()
        .map(|&i| (graph.node[candidates[i].index].name(), candidates[i].weight.stored.as_str()))
        .collect();
    let (chosen, source) = layers::select(&names);
    let mut raised = 0;
    for (&i, more) in matmuls.iter().zip(chosen) {
        let name = graph.node[candidates[i].index].name();
        if more && !pass.options_for(name).1 {
            candidates[i].options.bits = 8;
            raised += 1;
        }
    }
    let how = match source {
        LayerSource::Names { layers } => {
            format!("{layers} layers read from node or weight names")
        }
        LayerSource::Order { layers } => format!(
            "{layers} layers, one per MatMul in graph order (not every MatMul's name holds a \
             layer number)"
        ),
    };
    info!("more_bits: {raised} of {} MatMul(s) kept at 8 bits, with {how}", matmuls.len());
}

/// The importance of each row of every MatMul weight: the sum, over the MatMuls that read the
/// weight, of the importances of their input columns.
fn summed_importance(
    graph: &GraphProto,
    candidates: &[Candidate],
    importance: &Importance,
) -> Result<HashMap<String, Vec<f32>>, PassError> {
    let mut summed: HashMap<String, Vec<f32>> = HashMap::new();
    for found in candidates.iter().filter(|found| !found.target.is_gather()) {
        let node = &graph.node[found.index];
        let activation = node.input.first().map(String::as_str).unwrap_or_default();
        let Some(columns) = importance.get(activation) else {
            continue;
        };
        if columns.len() != found.weight.rows {
            return Err(PassError::Unsupported {
                pass: QuantizeWeights::NAME,
                node: node_label(node, found.index),
                reason: format!(
                    "its input `{activation}` has {} columns on the calibration data and its \
                     weight `{}` has {} rows",
                    columns.len(),
                    found.weight.value,
                    found.weight.rows
                ),
            });
        }
        let entry = summed
            .entry(found.weight.value.clone())
            .or_insert_with(|| vec![0.0; found.weight.rows]);
        for (sum, &value) in entry.iter_mut().zip(columns) {
            *sum += value;
        }
    }
    Ok(summed)
}

/// Quantizes one weight for `target`: with `importance` (one value per row of a MatMul
/// weight), each block's scale comes from the importance-weighted search, else from min/max.
fn quantize_weight(
    weight: &ConstWeight,
    target: Target,
    options: NodeOptions,
    importance: Option<&[f32]>,
) -> Result<WeightTensors, PassError> {
    let rounding = match target {
        Target::MatMulNBits => Rounding::WithZeroPoint,
        _ => Rounding::BeforeZeroPoint,
    };
    let spec = BlockSpec {
        bits: options.bits,
        symmetric: options.symmetric,
        rounding,
        precision: weight.precision,
    };
    let (rows, cols, values) = (weight.rows, weight.cols, &weight.values);
    match target {
        Target::MatMulNBits | Target::QdqMatMul => {
            let column = |n: usize| (0..rows).map(|k| values[k * cols + n]).collect();
            let blocked = match importance {
                Some(importance) => {
                    let search = BlockSearch::new(options.bits, options.symmetric)
                        .map_err(|e| e.into_pass_error(QuantizeWeights::NAME))?;
                    Blocked::quantize_with(cols, rows, options.block_size, spec, column, |b| {
                        let mut codes = vec![0; b.values.len()];
                        let weights = &importance[b.offset..b.offset + b.values.len()];
                        let params = search.quantize(b.values, weights, &mut codes)?;
                        let scale = spec.precision.stored(params.scale);
                        Ok(QuantizedBlock { scale, zero_point: params.zero_point, codes })
                    })
                    .map_err(|e: ImportanceError| PassError::Model {
                        pass: QuantizeWeights::NAME,
                        reason: format!("weight `{}`: {e}", weight.value),
                    })?
                }
                None => Blocked::quantize(cols, rows, options.block_size, spec, column),
            };
            Ok(match target {
                Target::MatMulNBits => layout::nbits_tensors(&blocked),
                _ => layout::qdq_tensors(&blocked, true),
            })
        }
        Target::GatherBlockQuantized | Target::QdqGather => {
            let blocked = Blocked::quantize(rows, cols, options.block_size, spec, |v| {
                values[v * cols..(v + 1) * cols].to_vec()
            });
            Ok(layout::qdq_tensors(&blocked, false))
        }
    }
}

/// Names and stores a quantized weight's tensors; in the QDQ layouts, also makes the
/// DequantizeLinear that turns them back to float.
fn add_weight(
    tensors: WeightTensors,
    found: &Candidate,
    names: &mut NameGenerator,
    initializers: &mut Vec<TensorProto>,
    dequantize_nodes: &mut Vec<NodeProto>,
    summary: &mut Summary,
) -> Quantized {
    let base = &found.weight.value;
    let bits = found.options.bits;
    let WeightTensors { mut values, mut scales, zero_points } = tensors;
    let mut made = Quantized {
        values: names.fresh(&format!("{base}_Q{bits}")),
        scales: names.fresh(&format!("{base}_scales")),
        zero_points: None,
        dequantized: None,
    };
    values.name = Some(made.values.clone());
    scales.name = Some(made.scales.clone());
    summary.bytes_after += layout::data_bytes(&values) + layout::data_bytes(&scales);
    initializers.extend([values, scales]);
    if let Some(mut zero_points) = zero_points {
        let name = names.fresh(&format!("{base}_zero_points"));
        zero_points.name = Some(name.clone());
        summary.bytes_after += layout::data_bytes(&zero_points);
        initializers.push(zero_points);
        made.zero_points = Some(name);
    }

    if matches!(found.target, Target::QdqMatMul | Target::QdqGather) {
        let output = names.fresh(&format!("{base}_dequantized"));
        let mut inputs = vec![made.values.as_str(), made.scales.as_str()];
        inputs.extend(made.zero_points.as_deref());
        let mut node = ir::make_node(
            "DequantizeLinear",
            &inputs,
            &[&output],
            &names.fresh(&format!("{base}_DequantizeLinear")),
        );
        let axis = if found.target == Target::QdqMatMul { 0 } else { 1 };
        node.attribute.push(ir::attr_int("axis", axis));
        node.attribute.push(ir::attr_int("block_size", found.options.block_size as i64));
        dequantize_nodes.push(node);
        made.dequantized = Some(output);
    }
    made
}

/// The node that replaces `node`.
fn rewrite_node(
    node: &NodeProto,
    found: &Candidate,
    made: &Quantized,
    names: &mut NameGenerator,
    pass: &QuantizeWeights,
) -> NodeProto {
    let base = if node.name().is_empty() { node.op_type() } else { node.name() };
    let bits = found.options.bits;
    let output = node.output.first().map(String::as_str).unwrap_or_default();
    let dequantized = made.dequantized.clone().unwrap_or_default();
    match found.target {
        Target::QdqMatMul => {
            let mut node = node.clone();
            node.input[1] = dequantized;
            node
        }
        Target::QdqGather => {
            let mut node = node.clone();
            node.input[0] = dequantized;
            node
        }
        Target::MatMulNBits => {
            let mut inputs = vec![node.input[0].as_str(), made.values.as_str(), &made.scales];
            inputs.extend(made.zero_points.as_deref());
            let mut new = ir::make_node(
                "MatMulNBits",
                &inputs,
                &[output],
                &names.fresh(&format!("{base}_Q{bits}")),
            );
            new.domain = Some(MS_DOMAIN.to_string());
            new.attribute.push(ir::attr_int("K", found.weight.rows as i64));
            new.attribute.push(ir::attr_int("N", found.weight.cols as i64));
            new.attribute.push(ir::attr_int("bits", i64::from(bits)));
            new.attribute.push(ir::attr_int("block_size", found.options.block_size as i64));
            if let Some(level) = pass.config.accuracy_level.filter(|&l| l > 0) {
                new.attribute.push(ir::attr_int("accuracy_level", i64::from(level)));
            }
            new
        }
        Target::GatherBlockQuantized => {
            let indices = node.input.get(1).map(String::as_str).unwrap_or_default();
            let mut inputs = vec![made.values.as_str(), indices, &made.scales];
            inputs.extend(made.zero_points.as_deref());
            let mut new = ir::make_node(
                "GatherBlockQuantized",
                &inputs,
                &[output],
                &names.fresh(&format!("{base}_Q{bits}")),
            );
            new.domain = Some(MS_DOMAIN.to_string());
            new.attribute.push(ir::attr_int("gather_axis", 0));
            new.attribute.push(ir::attr_int("quantize_axis", 1));
            new.attribute.push(ir::attr_int("block_size", found.options.block_size as i64));
            new
        }
    }
}

/// Removes the Transposes, Constants and initializers among `sources` that nothing reads any
/// more, and their value infos.
fn remove_unread(graph: &mut GraphProto, sources: &HashSet<String>) {
    let mut removed: HashSet<String> = HashSet::new();
    loop {
        let mut read: HashSet<String> = graph.output.iter().map(|v| v.name().to_string()).collect();
        for node in &graph.node {
            ir::collect_reads(node, &mut read);
        }
        let dead = |node: &NodeProto| {
            matches!(node.op_type(), "Transpose" | "Constant")
                && node.output.iter().all(|o| sources.contains(o) && !read.contains(o))
        };
        let before = graph.node.len();
        graph.node.retain(|node| {
            let gone = dead(node);
            if gone {
                removed.extend(node.output.iter().cloned());
            }
            !gone
        });
        if graph.node.len() == before {
            graph.initializer.retain(|t| {
                let gone = sources.contains(t.name()) && !read.contains(t.name());
                if gone {
                    removed.insert(t.name().to_string());
                }
                !gone
            });
            break;
        }
    }
    graph.value_info.retain(|v| !removed.contains(v.name()));
}

fn warn_unmatched(graph: &GraphProto, pass: &QuantizeWeights) {
    let names: Vec<&str> = graph.node.iter().map(|n| n.name()).collect();
    for entry in pass.exclude.unmatched(&names) {
        warn!("`nodes_to_exclude` names `{entry}`, which matches no node of the main graph");
    }
    for (regex, entry) in &pass.overrides {
        if !names.iter().any(|name| regex.is_match(name)) {
            warn!("the override for `{}` matches no node of the main graph", entry.nodes);
        }
    }
}

fn node_label(node: &NodeProto, index: usize) -> String {
    match node.name() {
        "" => format!("#{index} ({})", node.op_type()),
        name => name.to_string(),
    }
}

fn nothing_quantized(graph: &GraphProto, skipped: &[(String, String)]) -> PassError {
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type() == op).count();
    let mut reason = format!(
        "no weight was quantized: the graph has {} nodes, {} of them MatMuls (or Gathers with \
         `embeddings`) whose weight could not be quantized",
        graph.node.len(),
        skipped.len()
    );
    for (node, why) in skipped.iter().take(MAX_LISTED_SKIPS) {
        reason.push_str(&format!("; `{node}`: {why}"));
    }
    if skipped.len() > MAX_LISTED_SKIPS {
        reason.push_str(&format!("; and {} more", skipped.len() - MAX_LISTED_SKIPS));
    }
    if let Some(left) = ir::subgraphs_left_alone(graph, &["MatMul", "Gather"]) {
        reason.push_str(&format!("; {left}"));
    }
    let quantized = count("MatMulNBits") + count("GatherBlockQuantized");
    if quantized > 0 {
        reason.push_str(&format!(
            "; the model already holds {quantized} weight-quantized node(s) (MatMulNBits, \
             GatherBlockQuantized)"
        ));
    }
    let gemms = count("Gemm");
    if gemms > 0 {
        reason.push_str(&format!(
            "; its {gemms} Gemm node(s) are not quantized by this pass (`quantize_dynamic` and \
             `quantize_static` quantize Gemm)"
        ));
    }
    PassError::Unchanged { pass: QuantizeWeights::NAME, reason }
}
