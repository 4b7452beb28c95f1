//! The `attention` rule: the scaled dot-product attention of BERT-style encoders, as PyTorch
//! exports it, becomes one `com.microsoft.Attention` of ONNX Runtime (or `MultiHeadAttention`
//! for cross-attention, below).
//!
//! The pattern, from one input `x` of shape [B, S, in]:
//!
//! ```text
//! Q = Transpose[0,2,1,3](Reshape(MatMul(x, Wq) + bq, [B, S, heads, head_size]))
//! K = Transpose[0,2,3,1](Reshape(MatMul(x, Wk) + bk, ...))   (or [0,2,1,3] then [0,1,3,2])
//! V = Transpose[0,2,1,3](Reshape(MatMul(x, Wv) + bv, ...))
//! P = Softmax(MatMul(Q, K) * scale + (1 - mask[:, None, None, :]) * filler, axis -1)
//! y = Reshape(Transpose[0,2,1,3](MatMul(P, V)), [B, S, hidden])
//! ```
//!
//! The scale may be a Div or a Mul by one number, on the scores or on Q and K apart; the
//! mask term is optional. `Attention` takes `x`, the weights packed as [in, 3 * hidden], the
//! biases packed as [3 * hidden], and the 2-D mask as int32 `mask_index`, which ONNX Runtime
//! reads as "keep where > 0, add `mask_filter_value` elsewhere": the same as the exported
//! `(1 - mask) * filler` for masks of zeros and ones, which is what attention masks hold.
//!
//! `Attention` when Q, K and V are projected from the same input (self-attention, what
//! encoders have): it takes the projections inside, so the three MatMuls become one GEMM over
//! packed weights, and ONNX Runtime's CPU kernel makes no extra transposes. When they come
//! from different inputs (cross-attention, K and V from a memory), `Attention` cannot take
//! them, so `com.microsoft.MultiHeadAttention` gets the three projections (the MatMuls stay)
//! with the biases packed, the 2-D mask as its int32 `key_padding_mask`, and the same
//! `scale` and `mask_filter_value`.

use std::collections::HashSet;

use super::pattern::{compose_perms, is_op, node_in, Rewrite, Scan, View};
use super::{Rule, MS_DOMAIN};
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::proto::NodeProto;
use crate::ir::shapes::Dim;
use crate::ir::{self, attr_float, attr_int, node_attr_int, node_attr_ints};

pub(crate) const ATTENTION: Rule = Rule {
    name: "attention",
    summary: "scaled dot-product attention (Q/K/V projections, scaled scores, mask, Softmax, \
              context) -> com.microsoft.Attention, or MultiHeadAttention for cross-attention \
              (ONNX Runtime only)",
    scan: attention,
};

/// ONNX Runtime's `mask_filter_value` when the attribute is absent.
const DEFAULT_FILLER: f32 = -10000.0;

/// The scale differs from 1/sqrt(head_size) when it is off by more than this share.
const SCALE_TOLERANCE: f64 = 1e-6;

/// How far the rule looks above a Softmax for the scores' MatMul (Add, Mul, Div between).
const MAX_SCORE_STEPS: usize = 4;

/// How many nodes of a Reshape's shape computation (Shape, Gather, Concat ...) it follows.
const MAX_SHAPE_NODES: usize = 32;

/// The operators a Reshape's target shape is computed with in exported graphs.
const SHAPE_OPS: &[&str] =
    &["Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Constant", "Cast", "Slice"];

fn attention(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "Softmax") || !scan.is_free(index) {
            continue;
        }
        let Some(skeleton) = Skeleton::find(view, index) else { continue };
        let found = match Found::parse(view, &skeleton) {
            Ok(found) => found,
            Err(reason) => {
                scan.skip(index, reason);
                continue;
            }
        };
        if !view.target.contrib_ops {
            scan.skip(
                index,
                "the target runtime is not ONNX Runtime, and com.microsoft.Attention and \
                 MultiHeadAttention exist only there",
            );
            continue;
        }
        let rewrite = found.rewrite(scan);
        scan.offer(rewrite);
    }
}

/// What makes a Softmax look like attention: it feeds a MatMul as its left operand, and a
/// MatMul computes its input a few Add, Mul or Div nodes above. Other readers of what it
/// computes are found later, as reads from outside the pattern.
struct Skeleton {
    softmax: usize,
    /// MatMul(probabilities, V).
    context: usize,
    /// MatMul(Q, K).
    scores: usize,
    /// The Add, Mul and Div nodes from the Softmax up to the scores, nearest first.
    between: Vec<usize>,
}

impl Skeleton {
    fn find(view: &View<'_>, softmax: usize) -> Option<Skeleton> {
        let node = view.node(softmax);
        let probabilities = node.output.first()?;
        let context = view.consumers(probabilities).iter().copied().find(|&reader| {
            let reader = view.node(reader);
            is_op(reader, "MatMul") && reader.input.first() == Some(probabilities)
        })?;

        let mut value = node.input.first()?.clone();
        let mut between = Vec::new();
        for _ in 0..MAX_SCORE_STEPS {
            let (index, producer) = view.producer(&value)?;
            if is_op(producer, "MatMul") {
                return Some(Skeleton { softmax, context, scores: index, between });
            }
            if !["Add", "Mul", "Div"].iter().any(|op| is_op(producer, op)) {
                return None;
            }
            between.push(index);
            value = scores_operand(view, producer)?.clone();
        }
        None
    }
}

/// The operand of an Add, Mul or Div above the Softmax that carries the scores: the data
/// operand of a Div, the one operand that reaches a MatMul through such nodes otherwise.
fn scores_operand<'n>(view: &View<'_>, node: &'n NodeProto) -> Option<&'n String> {
    if is_op(node, "Div") {
        return node.input.first();
    }
    let reaches = |value: &str| reaches_matmul(view, value, MAX_SCORE_STEPS);
    match node.input.as_slice() {
        [a, b] if reaches(a) && !reaches(b) => Some(a),
        [a, b] if reaches(b) && !reaches(a) => Some(b),
        _ => None,
    }
}

fn reaches_matmul(view: &View<'_>, value: &str, depth: usize) -> bool {
    let Some((_, node)) = view.producer(value) else { return false };
    if is_op(node, "MatMul") {
        return true;
    }
    let passes = ["Add", "Mul", "Div"].iter().any(|op| is_op(node, op));
    depth > 0 && passes && node.input.iter().any(|i| reaches_matmul(view, i, depth - 1))
}

/// One of the Q, K, V projections: `MatMul(x, weight) (+ bias)`, reshaped to heads.
struct Projection {
    input: String,
    weight: String,
    bias: Option<String>,
    /// The MatMul, and its output: the projection before the bias.
    matmul: usize,
    projected: String,
    /// The Reshape to [B, S, heads, head_size].
    reshape: usize,
    /// The nodes from the MatMul to the value the scores or context MatMul reads.
    nodes: Vec<usize>,
    /// Values whose first two dimensions are those of `input`, for the Reshape checks.
    batch_sequence: Vec<String>,
}

/// Which operator the match becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// Q, K and V from one input: `Attention` with packed weights.
    SelfAttention,
    /// From different inputs: `MultiHeadAttention` on the three projections.
    CrossAttention,
}

/// The 2-D attention mask the scores get added, as `(1 - mask) * filler`.
struct Mask {
    raw: String,
    filler: f32,
    /// The Mul, Sub, Cast and Unsqueeze nodes that make the additive mask from `raw`.
    nodes: Vec<usize>,
}

/// A full match, with everything the rewrite needs.
struct Found {
    form: Form,
    input: String,
    projections: [Projection; 3],
    heads: i64,
    scale: Option<f32>,
    mask: Option<Mask>,
    /// The nodes that go: the pattern and what only it reads.
    remove: Vec<usize>,
    output: String,
}

impl Found {
    fn parse(view: &View<'_>, skeleton: &Skeleton) -> Result<Found, String> {
        check_softmax_axis(view, view.node(skeleton.softmax))?;
        let (mut factor, mask) = score_terms(view, skeleton)?;

        let scores = view.node(skeleton.scores);
        let context = view.node(skeleton.context);
        let (Some(q_value), Some(k_value), Some(v_value)) =
            (scores.input.first(), scores.input.get(1), context.input.get(1))
        else {
            return Err("a MatMul has fewer than two inputs".into());
        };
        let q = projection(view, q_value, "Q", [0, 2, 1, 3], Some(&mut factor))?;
        let k = projection(view, k_value, "K", [0, 2, 3, 1], Some(&mut factor))?;
        let v = projection(view, v_value, "V", [0, 2, 1, 3], None)?;

        let form = if q.input == k.input && q.input == v.input {
            Form::SelfAttention
        } else {
            Form::CrossAttention
        };
        let input = q.input.clone();
        for p in [&q, &k, &v] {
            if let Some(rank) = view.shapes.rank(&p.input).filter(|&r| r != 3) {
                return Err(format!(
                    "the input `{}` has rank {rank}, not 3 [batch, sequence, hidden]",
                    p.input
                ));
            }
        }

        let (heads, head_size) = heads_of(view, &q, "Q")?;
        for (p, name) in [(&k, "K"), (&v, "V")] {
            let split = heads_of(view, p, name)?;
            if split != (heads, head_size) {
                return Err(format!(
                    "Q is split into {heads} heads of {head_size} but {name} into {} of {}",
                    split.0, split.1
                ));
            }
        }
        let hidden = heads * head_size;
        for (p, name) in [(&q, "Q"), (&k, "K"), (&v, "V")] {
            check_parameters(view, p, name, hidden)?;
        }

        // Below the context MatMul: Transpose back to [B, S, heads, head_size], then Reshape
        // to [B, S, hidden].
        let (transpose, reshape) = output_nodes(view, skeleton.context)?;
        // The values whose first two dimensions are those of each projection's input: one set
        // for the projections of Q's input, each its own for the others.
        let transposed = view.node(transpose).output.first().cloned().unwrap_or_default();
        let mut shared: Vec<String> = vec![transposed];
        for p in [&q, &k, &v].into_iter().filter(|p| p.input == input) {
            shared.push(p.input.clone());
            shared.extend(p.batch_sequence.iter().cloned());
        }
        for p in [&q, &k, &v] {
            let own: Vec<String> =
                std::iter::once(p.input.clone()).chain(p.batch_sequence.iter().cloned()).collect();
            let sources = if p.input == input { &shared } else { &own };
            check_leading(view, view.node(p.reshape), &p.input, sources)?;
        }
        let reshape_node = view.node(reshape);
        check_output_target(view, reshape_node, hidden, &input, &shared)?;

        let scale = scale_attribute(factor, head_size)?;

        let mut core: Vec<usize> =
            vec![skeleton.softmax, skeleton.context, skeleton.scores, transpose, reshape];
        core.extend(&skeleton.between);
        for p in [&q, &k, &v] {
            core.extend(&p.nodes);
        }
        if form == Form::CrossAttention {
            // MultiHeadAttention reads the projections: their MatMuls stay.
            core.retain(|i| ![q.matmul, k.matmul, v.matmul].contains(i));
        }
        core.sort_unstable();
        core.dedup();

        let mut optional: Vec<usize> = Vec::new();
        if let Some(mask) = &mask {
            optional.extend(&mask.nodes);
        }
        for p in [&q, &k, &v] {
            optional.extend(shape_computation(view, view.node(p.reshape)));
        }
        optional.extend(shape_computation(view, reshape_node));
        let remove = closure(view, &core, reshape, optional)?;

        let output = reshape_node.output.first().ok_or("the Reshape has no output")?.clone();
        Ok(Found { form, input, projections: [q, k, v], heads, scale, mask, remove, output })
    }

    fn rewrite(self, scan: &mut Scan<'_, '_>) -> Rewrite {
        let view = scan.view;
        let (weights, biases) = self.packed(view);
        let mut rewrite = Rewrite { remove: self.remove.clone(), ..Rewrite::default() };

        let base = match self.form {
            Form::SelfAttention => format!("{}_qkv", self.projections[0].weight),
            Form::CrossAttention => format!("{}_qkv", self.projections[0].projected),
        };
        let bias_name = scan.fresh(&format!("{base}_bias"));
        rewrite.initializers.push(ir::tensor_from_f32(&bias_name, &biases));
        let (op, mut inputs) = match self.form {
            Form::SelfAttention => {
                let weights_name = scan.fresh(&base);
                rewrite.initializers.push(ir::tensor_from_f32(&weights_name, &weights));
                ("Attention", vec![self.input.clone(), weights_name, bias_name])
            }
            Form::CrossAttention => {
                let mut inputs: Vec<String> =
                    self.projections.iter().map(|p| p.projected.clone()).collect();
                inputs.push(bias_name);
                ("MultiHeadAttention", inputs)
            }
        };
        if let Some(mask) = &self.mask {
            inputs.push(mask_index(scan, &mask.raw, &mut rewrite));
        }

        let name = scan.fresh(op);
        let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut node = node_in(Some(MS_DOMAIN), op, &input_refs, &[&self.output], &name);
        node.attribute.push(attr_int("num_heads", self.heads));
        if let Some(scale) = self.scale {
            node.attribute.push(attr_float("scale", scale));
        }
        if let Some(mask) = self.mask.as_ref().filter(|m| m.filler != DEFAULT_FILLER) {
            node.attribute.push(attr_float("mask_filter_value", mask.filler));
        }
        rewrite.add.push(node);
        rewrite
    }

    /// The Q, K and V weights side by side, [in, 3 * hidden] (only self-attention needs
    /// them), and their biases (zeros where a projection has none), [3 * hidden].
    fn packed(&self, view: &View<'_>) -> (ndarray::ArrayD<f32>, ndarray::ArrayD<f32>) {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for p in &self.projections {
            // `check_parameters` made sure these are float32 constants of these shapes.
            let weight = view.constant_f32(&p.weight).unwrap_or_default();
            let columns = weight.shape().get(1).copied().unwrap_or(0);
            let bias = match &p.bias {
                Some(bias) => view.constant_f32(bias).unwrap_or_default().iter().copied().collect(),
                None => vec![0.0; columns],
            };
            weights.push(weight);
            biases.extend(bias);
        }
        let views: Vec<_> = weights.iter().map(|w| w.view()).collect();
        let packed = ndarray::concatenate(ndarray::Axis(1), &views).unwrap_or_default();
        (packed, ndarray::ArrayD::from_shape_vec(vec![biases.len()], biases).unwrap_or_default())
    }
}

/// The factor the scores are scaled by between their MatMul and the Softmax, and the mask
/// term added to them (nearest the Softmax).
fn score_terms(view: &View<'_>, skeleton: &Skeleton) -> Result<(f64, Option<Mask>), String> {
    let mut factor = 1.0f64;
    let mut mask = None;
    for (position, &index) in skeleton.between.iter().enumerate() {
        let node = view.node(index);
        if !is_op(node, "Add") {
            factor *= scalar_factor(view, node)?;
            continue;
        }
        if position > 0 {
            return Err(
                "the scores get a second term added, or are scaled after the mask term".into()
            );
        }
        let scores = scores_operand(view, node).ok_or("the mask Add has no scores operand")?;
        let term = node.input.iter().find(|i| *i != scores).ok_or("the mask Add adds nothing")?;
        mask = Some(parse_mask(view, term)?);
    }
    Ok((factor, mask))
}

/// The int32 mask for `raw`: `raw` itself when it is int32, else the output of a Cast of it
/// to int32, one already in the graph when there is one.
fn mask_index(scan: &mut Scan<'_, '_>, raw: &str, rewrite: &mut Rewrite) -> String {
    let view = scan.view;
    if view.shapes.elem_type(raw) == Some(DataType::Int32 as i32) {
        return raw.to_string();
    }
    let existing = view.consumers(raw).iter().map(|&i| (i, view.node(i))).find(|(i, node)| {
        is_op(node, "Cast")
            && node_attr_int(node, "to") == Some(DataType::Int32 as i64)
            && !rewrite.remove.contains(i)
    });
    if let Some(output) = existing.and_then(|(_, node)| node.output.first()) {
        return output.clone();
    }

    let output = scan.fresh(&format!("{raw}_int32"));
    let name = scan.fresh(&format!("{raw}_to_int32"));
    let mut cast = node_in(None, "Cast", &[raw], &[&output], &name);
    cast.attribute.push(attr_int("to", DataType::Int32 as i64));
    rewrite.add.push(cast);
    output
}

fn check_softmax_axis(view: &View<'_>, softmax: &NodeProto) -> Result<(), String> {
    // Before opset 13 the default axis is 1 and the input is flattened from it on.
    let default = if view.target.opset >= 13 { -1 } else { 1 };
    let axis = node_attr_int(softmax, "axis").unwrap_or(default);
    if axis == -1 || axis == 3 {
        Ok(())
    } else {
        Err(format!("the Softmax normalizes axis {axis}, not the last of four"))
    }
}

/// The number a Mul or Div by a constant multiplies by.
fn scalar_factor(view: &View<'_>, node: &NodeProto) -> Result<f64, String> {
    let op = node.op_type();
    let constant_at = |i: usize| node.input.get(i).and_then(|v| view.constant_f32(v));
    let (values, divide) = if is_op(node, "Div") {
        let divisor = node.input.get(1).cloned().unwrap_or_default();
        let values = constant_at(1)
            .ok_or_else(|| format!("a Div scales the scores by `{divisor}`, not a constant"))?;
        (values, true)
    } else {
        let values = constant_at(1).or_else(|| constant_at(0)).ok_or_else(|| {
            format!("a Mul scales the scores by `{}`, not a constant", node.input.join("` x `"))
        })?;
        (values, false)
    };
    let &[value] = values.as_slice().unwrap_or(&[]) else {
        return Err(format!(
            "a {op} scales the scores by a tensor of {} values; Attention takes one number",
            values.len()
        ));
    };
    let value = f64::from(value);
    Ok(if divide { 1.0 / value } else { value })
}

/// Follows `value` (what the scores or context MatMul reads) up to its projection: scaling
/// (when `factor` is given), Transposes whose product is `perm`, the Reshape, the bias Add
/// and the MatMul.
fn projection(
    view: &View<'_>,
    value: &str,
    name: &str,
    perm: [i64; 4],
    mut factor: Option<&mut f64>,
) -> Result<Projection, String> {
    let mut nodes = Vec::new();
    let mut perms: Vec<Vec<i64>> = Vec::new();
    let mut current = value.to_string();
    let mut batch_sequence = Vec::new();

    // Up to the Reshape.
    let reshape = loop {
        let (index, node) = view
            .producer(&current)
            .ok_or_else(|| format!("{name} (`{current}`) is not computed by a Reshape"))?;
        let op = node.op_type();
        if is_op(node, "Transpose") {
            perms
                .push(node_attr_ints(node, "perm").map_or_else(|| vec![3, 2, 1, 0], <[_]>::to_vec));
        } else if is_op(node, "Reshape") {
            nodes.push(index);
            batch_sequence.extend(node.output.first().cloned());
            break index;
        } else if is_op(node, "Mul") || is_op(node, "Div") {
            let Some(factor) = factor.as_deref_mut() else {
                return Err(format!("{name} is scaled by a {op}, which Attention cannot do"));
            };
            *factor *= scalar_factor(view, node)?;
            let data = if is_op(node, "Div") { 0 } else { data_operand(view, node) };
            current = node.input.get(data).cloned().unwrap_or_default();
            nodes.push(index);
            continue;
        } else {
            return Err(format!("{name} (`{current}`) comes from a {op}, not a Reshape"));
        }
        nodes.push(index);
        current = node.input.first().cloned().unwrap_or_default();
    };

    perms.reverse();
    let total = compose(&perms);
    if total != perm {
        let given: Vec<String> = perms.iter().map(|p| format!("{p:?}")).collect();
        let given = if given.is_empty() { "none".into() } else { given.join(" then ") };
        return Err(format!(
            "{name} is transposed by {given}, which makes {total:?}; attention needs {perm:?}"
        ));
    }

    // Above the Reshape: scaling, the bias Add, the MatMul.
    current = view.node(reshape).input.first().cloned().unwrap_or_default();
    batch_sequence.push(current.clone());
    let mut bias = None;
    let (matmul_index, matmul) = loop {
        let (index, node) = view
            .producer(&current)
            .ok_or_else(|| format!("{name} is not projected by a MatMul (`{current}`)"))?;
        let op = node.op_type();
        if is_op(node, "MatMul") {
            nodes.push(index);
            break (index, node);
        } else if is_op(node, "Add") && bias.is_none() {
            let constant = node.input.iter().position(|i| view.constant(i).is_some());
            let Some(position) = constant else {
                return Err(format!("the {name} projection adds `{current}`, not a constant bias"));
            };
            bias = Some(node.input[position].clone());
            current = node.input.get(1 - position.min(1)).cloned().unwrap_or_default();
        } else if (is_op(node, "Mul") || is_op(node, "Div")) && bias.is_some() {
            return Err(format!("the {name} projection is scaled before its bias is added"));
        } else if (is_op(node, "Mul") || is_op(node, "Div")) && factor.is_some() {
            if let Some(factor) = factor.as_deref_mut() {
                *factor *= scalar_factor(view, node)?;
            }
            let data = if is_op(node, "Div") { 0 } else { data_operand(view, node) };
            current = node.input.get(data).cloned().unwrap_or_default();
        } else {
            return Err(format!("the {name} projection goes through a {op}, not MatMul + Add"));
        }
        nodes.push(index);
        batch_sequence.push(current.clone());
    };

    let (Some(input), Some(weight)) = (matmul.input.first(), matmul.input.get(1)) else {
        return Err(format!("the {name} MatMul has fewer than two inputs"));
    };
    let projected = matmul.output.first().cloned().unwrap_or_default();
    batch_sequence.push(projected.clone());
    Ok(Projection {
        input: input.clone(),
        weight: weight.clone(),
        bias,
        matmul: matmul_index,
        projected,
        reshape,
        nodes,
        batch_sequence,
    })
}

/// The operand of a Mul by a constant that is not the constant.
fn data_operand(view: &View<'_>, node: &NodeProto) -> usize {
    usize::from(node.input.first().is_some_and(|i| view.constant(i).is_some()))
}

/// The permutation that Transposes with `perms`, applied in order, make together.
fn compose(perms: &[Vec<i64>]) -> Vec<i64> {
    let mut total: Vec<i64> = (0..4).collect();
    for perm in perms {
        match compose_perms(&total, perm) {
            Some(next) if perm.len() == 4 => total = next,
            _ => return perm.clone(),
        }
    }
    total
}

/// The additive mask `(1 - Unsqueeze(Cast(mask))) * filler` of a 2-D mask.
fn parse_mask(view: &View<'_>, value: &str) -> Result<Mask, String> {
    let not_a_mask = || {
        format!(
            "the scores get `{value}` added, which is not (1 - mask) * a constant of a 2-D mask; \
             Attention only takes such masks"
        )
    };
    let (mul_index, mul) = view.producer_of_type(value, "Mul").ok_or_else(not_a_mask)?;
    let position = mul.input.iter().position(|i| view.scalar_f32(i).is_some());
    let position = position.ok_or_else(not_a_mask)?;
    let filler = view.scalar_f32(&mul.input[position]).ok_or_else(not_a_mask)?;
    let inverted = mul.input.get(1 - position.min(1)).ok_or_else(not_a_mask)?;

    let (sub_index, sub) = view.producer_of_type(inverted, "Sub").ok_or_else(not_a_mask)?;
    let one = sub.input.first().and_then(|i| view.scalar_f32(i));
    if one != Some(1.0) {
        return Err(not_a_mask());
    }
    let mut nodes = vec![mul_index, sub_index];

    // Back through Cast and Unsqueeze to the 2-D mask; the Unsqueezes must make it
    // [B, 1, 1, S].
    let mut current = sub.input.get(1).cloned().ok_or_else(not_a_mask)?;
    let mut unsqueezes = Vec::new();
    while let Some((index, node)) = view.producer(&current) {
        if is_op(node, "Unsqueeze") {
            unsqueezes.push(axes(view, node).ok_or_else(|| {
                format!("the mask's Unsqueeze `{}` has axes that are not constant", node.name())
            })?);
        } else if !is_op(node, "Cast") {
            break;
        }
        nodes.push(index);
        current = node.input.first().cloned().unwrap_or_default();
    }
    let raw = current;
    let rank = view.shapes.rank(&raw).ok_or_else(|| {
        format!("the rank of the attention mask `{raw}` is unknown; its shape is needed")
    })?;
    if rank != 2 {
        return Err(format!(
            "the attention mask `{raw}` has rank {rank}; the rule takes a 2-D [batch, sequence] \
             mask"
        ));
    }
    if view.shapes.dims(&raw).and_then(|d| d.get(1)) == Some(&Dim::Known(1)) {
        return Err(format!(
            "the attention mask `{raw}` has one column broadcast over the keys; Attention takes \
             one per key"
        ));
    }
    unsqueezes.reverse();
    let mut dims: Vec<i64> = vec![0, 1];
    for axes in &unsqueezes {
        let rank = (dims.len() + axes.len()) as i64;
        let mut axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
        axes.sort_unstable();
        for axis in axes {
            let Ok(at) = usize::try_from(axis) else { return Err(not_a_mask()) };
            if at > dims.len() {
                return Err(not_a_mask());
            }
            dims.insert(at, -1);
        }
    }
    if dims != [0, -1, -1, 1] {
        return Err(format!(
            "the attention mask `{raw}` is not broadcast as [batch, 1, 1, sequence]"
        ));
    }
    Ok(Mask { raw, filler, nodes })
}

/// The axes of an Unsqueeze: its attribute (before opset 13) or its constant second input.
fn axes(view: &View<'_>, node: &NodeProto) -> Option<Vec<i64>> {
    if let Some(axes) = node_attr_ints(node, "axes") {
        return Some(axes.to_vec());
    }
    let values = view.constant_i64(node.input.get(1)?)?;
    Some(values.iter().copied().collect())
}

/// One entry of a Reshape's target shape.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    /// A number known when the graph is built (0 copies, -1 infers).
    Known(i64),
    /// A named dimension.
    Symbol(String),
    /// Dimension `index` of `value`, read with Shape and Gather at run time.
    DimOf(String, i64),
    Unknown,
}

/// The entries of `reshape`'s target, as far as they can be told.
fn target_entries(view: &View<'_>, reshape: &NodeProto) -> Option<Vec<Entry>> {
    let target = reshape.input.get(1)?;
    let tracked: Option<Vec<Entry>> = view.shapes.integers(target).map(|dims| {
        dims.iter()
            .map(|d| match d {
                Dim::Known(n) => Entry::Known(*n),
                Dim::Symbol(s) => Entry::Symbol(s.clone()),
                Dim::Unknown => Entry::Unknown,
            })
            .collect()
    });
    if let Some(entries) = &tracked {
        if !entries.contains(&Entry::Unknown) {
            return tracked;
        }
    }

    // Exported graphs build the target with Concat from Unsqueeze(Gather(Shape(v), i)) and
    // constants.
    let Some((_, concat)) = view.producer_of_type(target, "Concat") else { return tracked };
    let mut entries = Vec::new();
    for part in &concat.input {
        if let Some(values) = view.constant_i64(part) {
            entries.extend(values.iter().map(|&v| Entry::Known(v)));
        } else if let Some(entry) = dimension_of(view, part) {
            entries.push(entry);
        } else {
            entries.push(Entry::Unknown);
        }
    }
    match tracked {
        Some(tracked) if tracked.len() == entries.len() => Some(
            tracked
                .into_iter()
                .zip(entries)
                .map(|(t, e)| if t == Entry::Unknown { e } else { t })
                .collect(),
        ),
        _ => Some(entries),
    }
}

/// `Unsqueeze(Gather(Shape(v), i), [0])` as dimension `i` of `v`.
fn dimension_of(view: &View<'_>, value: &str) -> Option<Entry> {
    let (_, unsqueeze) = view.producer_of_type(value, "Unsqueeze")?;
    if axes(view, unsqueeze)? != [0] {
        return None;
    }
    let (_, gather) = view.producer_of_type(unsqueeze.input.first()?, "Gather")?;
    if node_attr_int(gather, "axis").unwrap_or(0) != 0 {
        return None;
    }
    let index = view.constant_i64(gather.input.get(1)?)?;
    let &[index] = index.as_slice()? else { return None };
    let (_, shape) = view.producer_of_type(gather.input.first()?, "Shape")?;
    if !shape.attribute.is_empty() {
        return None;
    }
    Some(Entry::DimOf(shape.input.first()?.clone(), index))
}

/// The number of heads and the head size from a projection's Reshape to
/// [B, S, heads, head_size].
fn heads_of(view: &View<'_>, p: &Projection, name: &str) -> Result<(i64, i64), String> {
    let reshape = view.node(p.reshape);
    let entries = target_entries(view, reshape).ok_or_else(|| {
        format!(
            "the target shape of {name}'s Reshape `{}` is not known when the graph is built, so \
             the number of heads cannot be told",
            reshape.name()
        )
    })?;
    let hidden = view
        .constant(&p.weight)
        .and_then(|w| w.dims.get(1).copied())
        .ok_or_else(|| format!("the {name} weight `{}` is not a constant matrix", p.weight))?;
    match entries.as_slice() {
        [_, _, Entry::Known(heads), Entry::Known(size)] if *heads > 0 && *size > 0 => {
            Ok((*heads, *size))
        }
        [_, _, Entry::Known(heads), Entry::Known(-1)] if *heads > 0 && hidden % heads == 0 => {
            Ok((*heads, hidden / heads))
        }
        [_, _, Entry::Known(-1), Entry::Known(size)] if *size > 0 && hidden % size == 0 => {
            Ok((hidden / size, *size))
        }
        [_, _, _, _] => Err(format!(
            "the number of heads and the head size of {name}'s Reshape `{}` are not constants",
            reshape.name()
        )),
        other => Err(format!(
            "{name}'s Reshape `{}` makes rank {}, not [batch, sequence, heads, head_size]",
            reshape.name(),
            other.len()
        )),
    }
}

/// Checks that a projection's weight is a float32 [in, hidden] constant and its bias a
/// float32 constant of `hidden` values.
fn check_parameters(
    view: &View<'_>,
    p: &Projection,
    name: &str,
    hidden: i64,
) -> Result<(), String> {
    let float = DataType::Float as i32;
    let weight = view
        .constant(&p.weight)
        .ok_or_else(|| format!("the {name} weight `{}` is not a constant", p.weight))?;
    if weight.data_type() != float || weight.dims.len() != 2 || weight.dims[1] != hidden {
        return Err(format!(
            "the {name} weight `{}` is not a float32 matrix of {hidden} columns (heads x head \
             size)",
            p.weight
        ));
    }
    if let Some(bias) = &p.bias {
        let tensor =
            view.constant(bias).ok_or_else(|| format!("the {name} bias is not constant"))?;
        let count: i64 = tensor.dims.iter().product();
        let leading_ones = tensor.dims.iter().rev().skip(1).all(|&d| d == 1);
        if tensor.data_type() != float || count != hidden || !leading_ones {
            return Err(format!("the {name} bias `{bias}` is not a float32 vector of {hidden}"));
        }
    }
    Ok(())
}

/// The Transpose and Reshape after the context MatMul. Other readers of their inputs (the
/// Shape nodes of the Reshape's target) are checked with the rest of the pattern.
fn output_nodes(view: &View<'_>, context: usize) -> Result<(usize, usize), String> {
    let reader = |value: &str, op: &str| -> Option<usize> {
        let mut readers = view.consumers(value).iter().copied().filter(|&r| {
            let node = view.node(r);
            is_op(node, op) && node.input.first().map(String::as_str) == Some(value)
        });
        match (readers.next(), readers.next()) {
            (Some(reader), None) => Some(reader),
            _ => None,
        }
    };
    let context_output = view.node(context).output.first().cloned().unwrap_or_default();
    let transpose = reader(&context_output, "Transpose")
        .ok_or_else(|| format!("the context `{context_output}` is not read by one Transpose"))?;
    let perm = node_attr_ints(view.node(transpose), "perm").unwrap_or(&[]);
    if perm != [0, 2, 1, 3] {
        return Err(format!("the context is transposed by {perm:?}, not [0, 2, 1, 3]"));
    }
    let transposed = view.node(transpose).output.first().cloned().unwrap_or_default();
    let reshape = reader(&transposed, "Reshape").ok_or_else(|| {
        format!("the transposed context `{transposed}` is not read by one Reshape")
    })?;
    Ok((transpose, reshape))
}

/// Whether `entry` at `position` (0 or 1) of a Reshape's target keeps dimension `position`
/// of the attention's input: a copied 0, the input's own size or symbol, or the size read
/// from a value whose first two dimensions are those of the input.
fn keeps_dimension(
    view: &View<'_>,
    entry: &Entry,
    position: usize,
    input: &str,
    batch_sequence: &[String],
    allow_zero: bool,
) -> bool {
    let declared = view.shapes.dims(input).and_then(|d| d.get(position).cloned());
    match entry {
        Entry::Known(0) => !allow_zero,
        Entry::Known(n) => declared == Some(Dim::Known(*n)),
        Entry::Symbol(s) => declared == Some(Dim::Symbol(s.clone())),
        Entry::DimOf(value, index) => {
            *index == position as i64 && batch_sequence.iter().any(|v| v == value)
        }
        Entry::Unknown => false,
    }
}

/// Checks that the first two entries of `reshape`'s target keep the batch and sequence
/// dimensions (one of them may be -1, then the other must keep its own).
fn check_leading(
    view: &View<'_>,
    reshape: &NodeProto,
    input: &str,
    batch_sequence: &[String],
) -> Result<(), String> {
    let entries = target_entries(view, reshape).unwrap_or_default();
    let allow_zero = node_attr_int(reshape, "allowzero").unwrap_or(0) != 0;
    let keeps = |position: usize| {
        entries
            .get(position)
            .is_some_and(|e| keeps_dimension(view, e, position, input, batch_sequence, allow_zero))
    };
    let inferred = |position: usize| entries.get(position) == Some(&Entry::Known(-1));
    let ok = (keeps(0) && keeps(1)) || (keeps(0) && inferred(1)) || (inferred(0) && keeps(1));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the Reshape `{}` does not keep the batch and sequence dimensions as the first two \
             (target {:?}), or that cannot be told",
            reshape.name(),
            entries
        ))
    }
}

/// Checks that the last Reshape makes [B, S, hidden].
fn check_output_target(
    view: &View<'_>,
    reshape: &NodeProto,
    hidden: i64,
    input: &str,
    batch_sequence: &[String],
) -> Result<(), String> {
    let entries = target_entries(view, reshape).unwrap_or_default();
    let last_ok = match entries.get(2) {
        Some(Entry::Known(n)) => *n == hidden,
        _ => false,
    };
    if entries.len() != 3 || !last_ok {
        return Err(format!(
            "the last Reshape `{}` does not make [batch, sequence, {hidden}] (target {entries:?})",
            reshape.name()
        ));
    }
    check_leading(view, reshape, input, batch_sequence)
}

/// The `scale` attribute for the scores' total factor: none when it is 1/sqrt(head_size).
fn scale_attribute(factor: f64, head_size: i64) -> Result<Option<f32>, String> {
    if !factor.is_finite() || factor == 0.0 {
        return Err(format!(
            "the scores are scaled by {factor}, which Attention cannot take (0 means the default)"
        ));
    }
    let default = 1.0 / (head_size as f64).sqrt();
    if ((factor - default) / default).abs() <= SCALE_TOLERANCE {
        Ok(None)
    } else {
        Ok(Some(factor as f32))
    }
}

/// The nodes that compute `reshape`'s target shape (Shape, Gather, Concat ...), nearest
/// first, as candidates to remove with the pattern.
fn shape_computation(view: &View<'_>, reshape: &NodeProto) -> Vec<usize> {
    let mut found = Vec::new();
    let mut pending: Vec<String> = reshape.input.get(1).cloned().into_iter().collect();
    let mut seen = HashSet::new();
    while let Some(value) = pending.pop() {
        if found.len() >= MAX_SHAPE_NODES || !seen.insert(value.clone()) {
            continue;
        }
        let Some((index, node)) = view.producer(&value) else { continue };
        if !SHAPE_OPS.iter().any(|op| is_op(node, op)) {
            continue;
        }
        found.push(index);
        // A Shape's input is data, not part of the computation.
        if !is_op(node, "Shape") {
            pending.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
    found
}

/// The nodes to remove: `core`, whose every output but that of `last` must be read only
/// inside the set, and those of `optional` (and the Constants the set reads) that only the
/// set reads. An intermediate read from outside leaves the pattern alone.
fn closure(
    view: &View<'_>,
    core: &[usize],
    last: usize,
    optional: Vec<usize>,
) -> Result<Vec<usize>, String> {
    let mut candidates: HashSet<usize> = optional.into_iter().collect();
    for &index in core.iter().chain(candidates.clone().iter()) {
        for input in &view.node(index).input {
            if let Some((producer, _)) = view.producer_of_type(input, "Constant") {
                candidates.insert(producer);
            }
        }
    }
    let core_set: HashSet<usize> = core.iter().copied().collect();
    candidates.retain(|i| !core_set.contains(i));

    // Drop candidates read from outside until none is.
    loop {
        let inside = |reader: &usize| core_set.contains(reader) || candidates.contains(reader);
        let outside = candidates.iter().copied().find(|&index| {
            view.node(index).output.iter().any(|output| {
                view.is_graph_output(output) || !view.consumers(output).iter().all(inside)
            })
        });
        match outside {
            Some(index) => {
                candidates.remove(&index);
            }
            None => break,
        }
    }

    let inside = |reader: &usize| core_set.contains(reader) || candidates.contains(reader);
    for &index in core {
        let node = view.node(index);
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            if index == last {
                continue;
            }
            if view.is_graph_output(output) {
                return Err(format!("the intermediate `{output}` is a graph output"));
            }
            if let Some(&reader) = view.consumers(output).iter().find(|r| !inside(r)) {
                let reader = view.node(reader);
                return Err(format!(
                    "the intermediate `{output}` is also read by `{}` ({}), outside the pattern",
                    reader.name(),
                    reader.op_type()
                ));
            }
        }
    }

    let mut remove: Vec<usize> = core.iter().copied().chain(candidates).collect();
    remove.sort_unstable();
    Ok(remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_compose_in_order() {
        assert_eq!(compose(&[vec![0, 2, 1, 3], vec![0, 1, 3, 2]]), [0, 2, 3, 1]);
        assert_eq!(compose(&[vec![0, 2, 3, 1]]), [0, 2, 3, 1]);
        assert_eq!(compose(&[]), [0, 1, 2, 3]);
        assert_eq!(compose(&[vec![0, 2, 1, 3], vec![0, 2, 1, 3]]), [0, 1, 2, 3]);
    }

    #[test]
    fn the_default_scale_is_left_out_and_zero_is_refused() {
        assert_eq!(scale_attribute(1.0 / 8.0, 64), Ok(None));
        assert_eq!(scale_attribute(1.0 / 5.656_854_152_679_443, 32), Ok(None));
        assert_eq!(scale_attribute(0.3, 4), Ok(Some(0.3)));
        assert!(scale_attribute(0.0, 4).is_err());
        assert!(scale_attribute(f64::INFINITY, 4).is_err());
    }
}
