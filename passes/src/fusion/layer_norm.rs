//! Layer normalization: the chain exporters write for it (mean, centring, variance, division
//! by the standard deviation, then scale and shift) made into ONNX's `LayerNormalization`,
//! and a residual Add before a LayerNormalization made into ONNX Runtime's
//! `SkipLayerNormalization`.
//!
//! ONNX has LayerNormalization from opset 17. ONNX Runtime also runs it in the default
//! domain at every lower opset, where it registered the operator as a contrib kernel (since
//! version 1) before ONNX defined it; so for ONNX Runtime targets the rule writes it
//! whatever the opset, and for other runtimes it leaves models below opset 17 alone. Such a
//! model is ONNX Runtime's only: the ONNX checker rejects the operator at those opsets.

use std::collections::BTreeSet;

use ndarray::{ArrayD, IxDyn};
use tracing::debug;

use super::operands::{first_output, only_inside, other_input, sole_reader, two_inputs, Matched};
use super::pattern::{is_op, node_in, Rewrite, Scan, View};
use super::{Rule, MS_DOMAIN};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::{NodeProto, TensorProto};
use crate::ir::shapes::Dim;
use crate::ir::{self, attr_float, attr_int, node_attr_float, node_attr_int, node_attr_ints};

pub(crate) const LAYER_NORM: Rule = Rule {
    name: "layer_norm",
    summary: "ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div (then Mul by gamma, Add beta) \
              over trailing axes -> LayerNormalization",
    scan: layer_norm,
};

pub(crate) const SKIP_LAYER_NORM: Rule = Rule {
    name: "skip_layer_norm",
    summary: "Add of two 3-D tensors (and of a bias) before a LayerNormalization of the last \
              axis -> ONNX Runtime's SkipLayerNormalization, whose sum output serves other \
              readers of the Add",
    scan: skip_layer_norm,
};

/// The opset in which ONNX defines LayerNormalization.
const ONNX_LAYER_NORM_OPSET: i64 = 17;

/// LayerNormalization's epsilon when the attribute is absent.
const DEFAULT_EPSILON: f32 = 1e-5;

/// A layer normalization chain.
struct Norm {
    x: String,
    /// Every node of the chain, by index.
    nodes: Vec<usize>,
    /// The sizes of the normalized (trailing) dimensions of `x`.
    normalized: Vec<usize>,
    epsilon: f32,
    /// The constant the normalized value is multiplied by, if any.
    gamma: Option<String>,
    /// The constant added after that, if any.
    beta: Option<String>,
    /// The value the chain computes.
    output: String,
}

fn layer_norm(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "ReduceMean") || !scan.is_free(index) {
            continue;
        }

        let found = match normalization(view, index) {
            Ok(found) => found,
            Err(Some(reason)) => {
                scan.skip(index, reason);
                continue;
            }
            Err(None) => continue,
        };
        match layer_norm_rewrite(scan, &found) {
            Ok(rewrite) => {
                scan.offer(rewrite);
            }
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// The layer normalization whose mean is the ReduceMean node `mean_index`.
fn normalization(view: &View<'_>, mean_index: usize) -> Matched<Norm> {
    let mean_node = view.node(mean_index);
    let x = mean_node.input.first().filter(|x| !x.is_empty()).ok_or(None)?;
    let mean = first_output(mean_node)?;
    let center_index = view
        .consumers(mean)
        .iter()
        .copied()
        .find(|&r| {
            let node = view.node(r);
            is_op(node, "Sub")
                && node.input.len() == 2
                && node.input[0] == *x
                && node.input[1] == mean
        })
        .ok_or(None)?;
    only_inside(view, mean, center_index)?;
    let (first_axis, normalized) = normalized_dims(view, mean_node, x)?;

    let centered = first_output(view.node(center_index))?;
    let mut nodes = vec![mean_index, center_index];
    let (divide_index, epsilon) =
        divide_by_deviation(view, centered, (first_axis, &normalized), &mut nodes)?;

    let rank = view.shapes.rank(x).ok_or(None)?;
    let divided = first_output(view.node(divide_index))?;
    let (gamma, beta, output) = scale_and_shift(view, divided, rank, &normalized, &mut nodes)?;
    Ok(Norm { x: x.to_string(), nodes, normalized, epsilon, gamma, beta, output })
}

/// `centered / sqrt(mean(centered^2) + epsilon)`, the mean over the same axes as the first
/// (`reduced`: the first axis and the sizes). Adds its nodes to `nodes`; returns the Div's
/// index and epsilon.
fn divide_by_deviation(
    view: &View<'_>,
    centered: &str,
    reduced: (usize, &[usize]),
    nodes: &mut Vec<usize>,
) -> Matched<(usize, f32)> {
    let readers = view.consumers(centered);
    let square_index = readers
        .iter()
        .copied()
        .find(|&r| is_square_of(view, view.node(r), centered))
        .ok_or(None)?;
    let divide_index = readers
        .iter()
        .copied()
        .find(|&r| {
            let node = view.node(r);
            is_op(node, "Div") && node.input.len() == 2 && node.input[0] == centered
        })
        .ok_or(None)?;
    if readers.len() != 2 || view.is_graph_output(centered) {
        return Err(Some(format!("intermediate `{centered}` is also read outside the pattern")));
    }

    let squared = first_output(view.node(square_index))?;
    let (variance_index, variance_node) = sole_reader(view, squared, "ReduceMean")?;
    let (first_axis, sizes) = normalized_dims(view, variance_node, squared)?;
    let variance = first_output(variance_node)?;
    if (first_axis, sizes.as_slice()) != reduced {
        return Err(Some(format!(
            "the variance `{variance}` is reduced over other axes than the mean"
        )));
    }

    let (shift_index, shift) = sole_reader(view, variance, "Add")?;
    let epsilon_name = other_input(shift, variance)?;
    let epsilon =
        view.scalar_f32(epsilon_name).filter(|e| e.is_finite() && *e >= 0.0).ok_or_else(|| {
            Some(format!("epsilon `{epsilon_name}` is not a float32 constant of one value >= 0"))
        })?;
    let shifted = first_output(shift)?;
    let (root_index, root) = sole_reader(view, shifted, "Sqrt")?;
    let deviation = first_output(root)?;
    if view.node(divide_index).input[1] != deviation {
        return Err(None);
    }
    only_inside(view, deviation, divide_index)?;

    nodes.extend([square_index, variance_index, shift_index, root_index, divide_index]);
    Ok((divide_index, epsilon))
}

/// The Mul by gamma and the Add of beta after the normalized value `divided`, where present,
/// for an input of rank `rank`. Adds their nodes to `nodes`; returns gamma, beta and the
/// output of the chain.
fn scale_and_shift(
    view: &View<'_>,
    divided: &str,
    rank: usize,
    normalized: &[usize],
    nodes: &mut Vec<usize>,
) -> Matched<(Option<String>, Option<String>, String)> {
    let mut output = divided;
    let mut affine = [None, None];
    for (slot, (op_type, role)) in [("Mul", "gamma"), ("Add", "beta")].into_iter().enumerate() {
        let Some((index, node)) = single_reader(view, output, op_type) else { continue };
        let Ok(operand) = other_input(node, output) else { break };
        check_affine(view, operand, role, rank, normalized)?;
        affine[slot] = Some(operand.to_string());
        nodes.push(index);
        output = first_output(node)?;
    }
    let [gamma, beta] = affine;
    Ok((gamma, beta, output.to_string()))
}

/// The first of the dimensions of `x` that the ReduceMean `node` reduces, and their sizes,
/// when they are the trailing ones, each known, and the reduction keeps them.
fn normalized_dims(view: &View<'_>, node: &NodeProto, x: &str) -> Matched<(usize, Vec<usize>)> {
    let name = node.name();
    let axes = reduced_axes(view, node)
        .ok_or_else(|| Some(format!("ReduceMean `{name}` has no constant axes")))?;
    if node_attr_int(node, "keepdims").unwrap_or(1) == 0 {
        return Err(Some(format!("ReduceMean `{name}` does not keep the reduced dimensions")));
    }
    let dims = view
        .shapes
        .dims(x)
        .ok_or_else(|| Some(format!("the rank of `{x}` is unknown, so its axes cannot be told")))?;

    let rank = dims.len() as i64;
    let positive: BTreeSet<i64> = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
    let trailing: BTreeSet<i64> = (rank - positive.len() as i64..rank).collect();
    if positive.len() != axes.len() || positive != trailing || positive.is_empty() {
        return Err(Some(format!(
            "ReduceMean `{name}` reduces axes {axes:?} of `{x}` (rank {rank}), not its trailing \
             axes: that is no layer normalization"
        )));
    }

    let first = dims.len() - positive.len();
    dims[first..]
        .iter()
        .map(|d| d.known().and_then(|n| usize::try_from(n).ok()))
        .collect::<Option<Vec<usize>>>()
        .map(|sizes| (first, sizes))
        .ok_or_else(|| {
            Some(format!(
                "the normalized dimensions {:?} of `{x}` are not all known",
                &dims[first..]
            ))
        })
}

/// The axes a ReduceMean reduces: its `axes` attribute (opset < 18) or constant second input.
fn reduced_axes(view: &View<'_>, node: &NodeProto) -> Option<Vec<i64>> {
    if let Some(axes) = node_attr_ints(node, "axes") {
        return Some(axes.to_vec());
    }
    let input = node.input.get(1).filter(|i| !i.is_empty())?;
    Some(view.constant_i64(input)?.iter().copied().collect())
}

/// Whether `node` squares `value`: `Pow(value, 2)` or `Mul(value, value)`.
fn is_square_of(view: &View<'_>, node: &NodeProto, value: &str) -> bool {
    match &node.input[..] {
        [a, b] if is_op(node, "Mul") => a == value && b == value,
        [a, exponent] if is_op(node, "Pow") => {
            let two = view.scalar_f32(exponent).map(f64::from).or_else(|| {
                let values = view.constant_i64(exponent)?;
                (values.len() == 1).then(|| values.iter().next().map(|&v| v as f64)).flatten()
            });
            a == value && two == Some(2.0)
        }
        _ => false,
    }
}

/// The one node reading `value`, when it is of `op_type` and `value` is no graph output.
fn single_reader<'g>(
    view: &View<'g>,
    value: &str,
    op_type: &str,
) -> Option<(usize, &'g NodeProto)> {
    let &[reader] = view.consumers(value) else { return None };
    let node = view.node(reader);
    (view.only_read_by(value, reader) && is_op(node, op_type)).then_some((reader, node))
}

/// Checks that the scale or shift `value` is a float32 constant that broadcasts over the
/// normalized dimensions alone (of an input of rank `rank`).
fn check_affine(
    view: &View<'_>,
    value: &str,
    role: &str,
    rank: usize,
    normalized: &[usize],
) -> Matched<()> {
    let tensor = view.constant(value).ok_or_else(|| {
        Some(format!("{role} `{value}` is not a constant: LayerNormalization takes it as one"))
    })?;
    if tensor.data_type() != DataType::Float as i32 {
        return Err(Some(format!("{role} `{value}` is not float32")));
    }
    if !fits_normalized(&tensor.dims, rank, normalized) {
        return Err(Some(format!(
            "{role} `{value}` of shape {:?} does not broadcast over the normalized dimensions \
             {normalized:?} alone",
            tensor.dims
        )));
    }
    Ok(())
}

/// Whether a tensor of shape `dims`, multiplied into an input of rank `rank`, varies along
/// the trailing `normalized` dimensions only and leaves the result's shape as it is.
fn fits_normalized(dims: &[i64], rank: usize, normalized: &[usize]) -> bool {
    if dims.len() > rank {
        return false;
    }
    let first_normalized = rank - normalized.len();
    dims.iter().enumerate().all(|(i, &d)| {
        let position = rank - dims.len() + i;
        match position.checked_sub(first_normalized) {
            None => d == 1,
            Some(j) => d == 1 || usize::try_from(d).ok() == Some(normalized[j]),
        }
    })
}

/// The replacement of a layer normalization chain for the target.
fn layer_norm_rewrite(scan: &mut Scan<'_, '_>, found: &Norm) -> Result<Rewrite, String> {
    let view = scan.view;
    let target = view.target;
    if target.opset < ONNX_LAYER_NORM_OPSET && !target.contrib_ops {
        return Err(format!(
            "ONNX has LayerNormalization from opset {ONNX_LAYER_NORM_OPSET} and the model's \
             opset is {}; the target runtime is not ONNX Runtime, which also runs it at lower \
             opsets",
            target.opset
        ));
    }
    if view.shapes.elem_type(&found.x) != Some(DataType::Float as i32) {
        return Err(format!("its input `{}` is not known to be float32", found.x));
    }
    if target.opset < ONNX_LAYER_NORM_OPSET {
        debug!(
            output = found.output,
            opset = target.opset,
            "LayerNormalization below opset 17: ONNX Runtime's own registration runs it"
        );
    }

    let mut initializers = Vec::new();
    let gamma = affine_input(scan, found, found.gamma.as_deref(), "scale", 1.0, &mut initializers)?;
    let mut inputs = vec![found.x.clone(), gamma];
    if let Some(beta) = found.beta.as_deref() {
        inputs.push(affine_input(scan, found, Some(beta), "bias", 0.0, &mut initializers)?);
    }

    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let name = scan.fresh(&format!("LayerNormalization_{}", found.output));
    let mut node = node_in(None, "LayerNormalization", &inputs, &[&found.output], &name);
    node.attribute.push(attr_int("axis", -(found.normalized.len() as i64)));
    node.attribute.push(attr_float("epsilon", found.epsilon));
    Ok(Rewrite { remove: found.nodes.clone(), add: vec![node], initializers, renames: vec![] })
}

/// The name of the LayerNormalization input for the constant `value` (or, when there is
/// none, for a tensor of `fill`): `value` itself when it has the normalized shape, else a
/// new initializer of that shape, added to `initializers`.
fn affine_input(
    scan: &mut Scan<'_, '_>,
    found: &Norm,
    value: Option<&str>,
    role: &str,
    fill: f32,
    initializers: &mut Vec<TensorProto>,
) -> Result<String, String> {
    let shape: Vec<i64> = found.normalized.iter().map(|&n| n as i64).collect();
    let values = match value {
        Some(name) => {
            let not_constant = || format!("`{name}` is not a constant");
            let tensor = scan.view.constant(name).ok_or_else(not_constant)?;
            if tensor.dims == shape {
                return Ok(name.to_string());
            }
            let values = ir::tensor_to_f32(&tensor).map_err(|e| e.to_string())?;
            to_normalized(values, &found.normalized)
                .ok_or_else(|| format!("`{name}` does not broadcast to {:?}", found.normalized))?
        }
        None => ArrayD::from_elem(IxDyn(&found.normalized), fill),
    };

    let name = scan.fresh(&format!("{}_{role}", found.output));
    initializers.push(ir::tensor_from_f32(&name, &values));
    Ok(name)
}

/// `values` broadcast to the `normalized` shape, after dropping its leading dimensions of 1.
fn to_normalized(values: ArrayD<f32>, normalized: &[usize]) -> Option<ArrayD<f32>> {
    let shape = values.shape().to_vec();
    let kept = shape.len().min(normalized.len());
    let (leading, trailing) = shape.split_at(shape.len() - kept);
    if leading.iter().any(|&d| d != 1) {
        return None;
    }
    let values = values.into_shape_with_order(IxDyn(trailing)).ok()?;
    let broadcast = values.broadcast(IxDyn(normalized))?;
    ArrayD::from_shape_vec(IxDyn(normalized), broadcast.iter().copied().collect()).ok()
}

/// An Add before a LayerNormalization, as SkipLayerNormalization takes it.
struct SkipNorm {
    /// The LayerNormalization and the Add, by index, and the Add of a bias if it is taken in.
    nodes: Vec<usize>,
    input: String,
    skip: String,
    bias: Option<String>,
    gamma: String,
    beta: Option<String>,
    epsilon: f32,
    /// The LayerNormalization's output.
    output: String,
    /// The Add's output, which other nodes may read too.
    sum: String,
}

fn skip_layer_norm(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "LayerNormalization") || !scan.is_free(index) {
            continue;
        }

        let found = match skip_normalization(view, index) {
            Ok(found) => found,
            Err(Some(reason)) => {
                scan.skip(index, reason);
                continue;
            }
            Err(None) => continue,
        };
        if !view.target.contrib_ops {
            scan.skip(index, "SkipLayerNormalization is ONNX Runtime's, not the target runtime's");
            continue;
        }
        let rewrite = skip_layer_norm_rewrite(scan, &found);
        scan.offer(rewrite);
    }
}

/// The Add before the LayerNormalization node `norm_index`, when SkipLayerNormalization can
/// take both over.
fn skip_normalization(view: &View<'_>, norm_index: usize) -> Matched<SkipNorm> {
    let norm = view.node(norm_index);
    let sum = norm.input.first().filter(|s| !s.is_empty()).ok_or(None)?;
    let (add_index, add) = view.producer_of_type(sum, "Add").ok_or(None)?;
    let (a, b) = two_inputs(add)?;
    let output = first_output(norm)?;

    let dims = view.shapes.dims(sum).ok_or_else(|| {
        Some(format!("the rank of `{sum}` is unknown; SkipLayerNormalization takes 3-D inputs"))
    })?;
    if dims.len() != 3 {
        return Err(Some(format!(
            "`{sum}` has rank {}; SkipLayerNormalization takes 3-D inputs",
            dims.len()
        )));
    }
    let hidden = dims[2].known().ok_or_else(|| {
        Some(format!("the last dimension of `{sum}` is not known; SkipLayerNormalization needs it"))
    })?;
    if view.shapes.elem_type(sum) != Some(DataType::Float as i32) {
        return Err(Some(format!("`{sum}` is not known to be float32")));
    }
    check_norm_node(view, norm, hidden)?;

    let (bias_nodes, input, skip, bias) = skip_operands(view, add_index, a, b, dims, hidden)
        .ok_or_else(|| {
            let shape =
                |v: &str| view.shapes.dims(v).map_or("unknown".into(), |d| format!("{d:?}"));
            Some(format!(
                "the Add's inputs `{a}` ({}) and `{b}` ({}) are not two tensors of the same 3-D \
                 shape, nor one of that shape and one of shape (1, S, H) or (S, H)",
                shape(a),
                shape(b)
            ))
        })?;

    let mut nodes = vec![norm_index, add_index];
    nodes.extend(bias_nodes);
    Ok(SkipNorm {
        nodes,
        input: input.to_string(),
        skip: skip.to_string(),
        bias: bias.map(str::to_string),
        gamma: norm.input.get(1).cloned().unwrap_or_default(),
        beta: norm.input.get(2).filter(|b| !b.is_empty()).cloned(),
        epsilon: node_attr_float(norm, "epsilon").unwrap_or(DEFAULT_EPSILON),
        output: output.to_string(),
        sum: sum.to_string(),
    })
}

/// Checks what SkipLayerNormalization needs of the LayerNormalization `norm`: the last axis,
/// float32 statistics, no Mean or InvStdDev read, and a scale and bias of shape (hidden).
fn check_norm_node(view: &View<'_>, norm: &NodeProto, hidden: i64) -> Matched<()> {
    if norm.input.get(1).is_none_or(String::is_empty) {
        return Err(None);
    }
    let axis = node_attr_int(norm, "axis").unwrap_or(-1);
    if axis != -1 && axis != 2 {
        return Err(Some(format!(
            "it normalizes from axis {axis}; SkipLayerNormalization normalizes the last axis only"
        )));
    }
    if node_attr_int(norm, "stash_type").unwrap_or(1) != DataType::Float as i64 {
        return Err(Some("its stash_type is not float32".into()));
    }
    for statistic in norm.output.iter().skip(1).filter(|o| !o.is_empty()) {
        if !view.consumers(statistic).is_empty() || view.is_graph_output(statistic) {
            return Err(Some(format!("its statistic output `{statistic}` is read")));
        }
    }

    let parameters = norm.input.iter().skip(1).filter(|p| !p.is_empty());
    for parameter in parameters {
        if view.shapes.dims(parameter) != Some(&[Dim::Known(hidden)][..]) {
            return Err(Some(format!(
                "its scale or bias `{parameter}` is not known to have shape ({hidden})"
            )));
        }
    }
    Ok(())
}

/// The inputs SkipLayerNormalization takes for the Add node `add_index` of `a` and `b`, whose
/// sum has the 3-D shape `dims`: the nodes of a bias Add taken in, the input, the skip, and
/// the bias. A bias is taken in when `a` or `b` is `y + bias` with `bias` a constant float32
/// vector of the `hidden` size, read by the Add alone.
fn skip_operands<'g>(
    view: &View<'g>,
    add_index: usize,
    a: &'g str,
    b: &'g str,
    dims: &[Dim],
    hidden: i64,
) -> Option<(Vec<usize>, &'g str, &'g str, Option<&'g str>)> {
    for (inner, other) in [(a, b), (b, a)] {
        let Some((bias_index, y, bias)) = bias_add(view, inner, add_index, hidden) else {
            continue;
        };
        if let Some((input, skip)) = input_and_skip(view, y, other, dims) {
            return Some((vec![bias_index], input, skip, Some(bias)));
        }
    }
    let (input, skip) = input_and_skip(view, a, b, dims)?;
    Some((vec![], input, skip, None))
}

/// `value = y + bias`, read by node `reader` alone, with `bias` a float32 constant of shape
/// (hidden): the Add's index, `y` and `bias`.
fn bias_add<'g>(
    view: &View<'g>,
    value: &str,
    reader: usize,
    hidden: i64,
) -> Option<(usize, &'g str, &'g str)> {
    let (index, add) = view.producer_of_type(value, "Add")?;
    if !view.only_read_by(value, reader) {
        return None;
    }
    let (p, q) = two_inputs(add).ok()?;
    [(p, q), (q, p)].into_iter().find_map(|(y, bias)| {
        let tensor = view.constant(bias)?;
        let is_vector = tensor.data_type() == DataType::Float as i32 && tensor.dims == [hidden];
        (is_vector && view.constant(y).is_none()).then_some((index, y, bias))
    })
}

/// Which of `p` and `q` is SkipLayerNormalization's input (of the sum's shape `dims`) and
/// which its skip (the same shape, or (1, S, H), or (S, H)), when they fit.
fn input_and_skip<'g>(
    view: &View<'_>,
    p: &'g str,
    q: &'g str,
    dims: &[Dim],
) -> Option<(&'g str, &'g str)> {
    let same = |x: &[Dim], y: &[Dim]| {
        x.len() == y.len() && x.iter().zip(y).all(|(a, b)| a == b && *a != Dim::Unknown)
    };
    let float = |v: &str| view.shapes.elem_type(v) == Some(DataType::Float as i32);
    let full = |v: &str| float(v) && view.shapes.dims(v).is_some_and(|d| same(d, dims));
    let skip = |v: &str| {
        float(v)
            && view.shapes.dims(v).is_some_and(|d| match d.len() {
                3 => d[0] == Dim::Known(1) && same(&d[1..], &dims[1..]),
                2 => same(d, &dims[1..]),
                _ => false,
            })
    };

    if full(p) && (full(q) || skip(q)) {
        Some((p, q))
    } else if full(q) && skip(p) {
        Some((q, p))
    } else {
        None
    }
}

/// SkipLayerNormalization in place of the Add and the LayerNormalization; readers of the
/// Add's sum other than the LayerNormalization read its fourth output under the same name.
fn skip_layer_norm_rewrite(scan: &mut Scan<'_, '_>, found: &SkipNorm) -> Rewrite {
    let view = scan.view;
    let norm_index = found.nodes[0];
    let sum_read_elsewhere = view.is_graph_output(&found.sum)
        || view.consumers(&found.sum).iter().any(|&r| r != norm_index);

    let mut inputs = vec![found.input.as_str(), &found.skip, &found.gamma];
    inputs.push(found.beta.as_deref().unwrap_or(""));
    inputs.extend(found.bias.as_deref());
    while inputs.last() == Some(&"") {
        inputs.pop();
    }
    let mut outputs = vec![found.output.as_str()];
    if sum_read_elsewhere {
        outputs.extend(["", "", &found.sum]);
    }

    let name = scan.fresh(&format!("SkipLayerNormalization_{}", found.output));
    let mut node = node_in(Some(MS_DOMAIN), "SkipLayerNormalization", &inputs, &outputs, &name);
    node.attribute.push(attr_float("epsilon", found.epsilon));
    Rewrite { remove: found.nodes.clone(), add: vec![node], ..Rewrite::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_shapes_fit_when_they_vary_along_normalized_dimensions_only() {
        assert!(fits_normalized(&[8], 3, &[8]));
        assert!(fits_normalized(&[], 3, &[8]));
        assert!(fits_normalized(&[1, 1, 8], 3, &[8]));
        assert!(fits_normalized(&[8], 3, &[3, 8]));
        assert!(fits_normalized(&[3, 1], 3, &[3, 8]));
        assert!(!fits_normalized(&[2, 1, 8], 3, &[8]));
        assert!(!fits_normalized(&[4], 3, &[8]));
        assert!(!fits_normalized(&[1, 1, 1, 8], 3, &[8]));
    }

    #[test]
    fn scales_broadcast_to_the_normalized_shape_in_order() {
        let column = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1]), vec![1.0, 2.0]).unwrap();
        let full = to_normalized(column, &[2, 3]).unwrap();
        assert_eq!(full.shape(), [2, 3]);
        assert_eq!(full.iter().copied().collect::<Vec<_>>(), [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);

        let wrong = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![1.0, 2.0]).unwrap();
        assert!(to_normalized(wrong, &[1]).is_none());
    }
}
