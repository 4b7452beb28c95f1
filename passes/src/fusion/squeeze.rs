//! The `squeeze_unsqueeze` rule: an Unsqueeze undone by a Squeeze of the same axes (or a
//! Squeeze of dimensions known to be 1 undone by an Unsqueeze) goes away; two Unsqueezes,
//! or two Squeezes, in a row become one. Axes are read in both forms, the attribute of
//! opsets before 13 and the input of 13 and later, and written in the model's form.

use super::eliminate::pass_through_blocked;
use super::pattern::{is_op, Rewrite, Scan, View};
use super::Rule;
use crate::ir::proto::NodeProto;
use crate::ir::shapes::Dim;
use crate::ir::{self, attr_ints, node_attr_ints};

pub(crate) const SQUEEZE_UNSQUEEZE: Rule = Rule {
    name: "squeeze_unsqueeze",
    summary: "cancels an Unsqueeze undone by a Squeeze (and the reverse); merges consecutive \
              Unsqueezes or Squeezes into one",
    scan: squeeze_unsqueeze,
};

/// The first opset in which Squeeze and Unsqueeze take `axes` as an input.
const AXES_INPUT_OPSET: i64 = 13;

/// What a pair of nodes becomes.
enum Plan {
    /// The second node's output is the first node's input.
    Cancel,
    /// One node of the second node's type, with these axes, on the first node's input.
    Merge(Vec<i64>),
}

fn squeeze_unsqueeze(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_squeeze_or_unsqueeze(node) || !scan.is_free(index) {
            continue;
        }
        let (Some(middle), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        let Some((first_index, first)) = view.producer(middle) else { continue };
        if !is_squeeze_or_unsqueeze(first) || !scan.is_free(first_index) {
            continue;
        }
        let Some(x) = first.input.first().filter(|x| !x.is_empty()) else { continue };
        if !view.only_read_by(middle, index) {
            scan.skip(index, format!("the intermediate `{middle}` is read by other nodes too"));
            continue;
        }

        let rewrite = match plan(view, first, node) {
            Ok(Plan::Cancel) => {
                if let Some(reason) = pass_through_blocked(scan, x, output) {
                    scan.skip(index, reason);
                    continue;
                }
                Rewrite {
                    remove: vec![first_index, index],
                    renames: vec![(output.clone(), x.clone())],
                    ..Rewrite::default()
                }
            }
            Ok(Plan::Merge(axes)) => merged(scan, node, x, &axes, first_index, index),
            Err(reason) => {
                scan.skip(index, reason);
                continue;
            }
        };
        scan.offer(rewrite);
    }
}

fn is_squeeze_or_unsqueeze(node: &NodeProto) -> bool {
    is_op(node, "Squeeze") || is_op(node, "Unsqueeze")
}

/// The `axes` of a Squeeze or Unsqueeze: the attribute, or the constant second input;
/// `None` when there are none; an error when the input is not a constant.
pub(super) fn axes_of(view: &View<'_>, node: &NodeProto) -> Result<Option<Vec<i64>>, String> {
    if let Some(axes) = node_attr_ints(node, "axes") {
        return Ok(Some(axes.to_vec()));
    }
    match node.input.get(1).filter(|name| !name.is_empty()) {
        None => Ok(None),
        Some(name) => match view.constant_i64(name) {
            Some(axes) if axes.ndim() <= 1 => Ok(Some(axes.iter().copied().collect())),
            _ => Err(format!("its axes `{name}` are not a constant")),
        },
    }
}

/// Sorted, distinct axes counted from 0 in a value of `rank` (needed for negative axes).
fn normalize(axes: &[i64], rank: Option<usize>, value: &str) -> Result<Vec<usize>, String> {
    let mut normalized = Vec::with_capacity(axes.len());
    for &axis in axes {
        let position = match (axis < 0, rank) {
            (false, Some(rank)) if axis as usize >= rank => {
                return Err(format!("axis {axis} is out of range for `{value}`"))
            }
            (false, _) => axis as usize,
            (true, Some(rank)) if axis + rank as i64 >= 0 => (axis + rank as i64) as usize,
            (true, Some(_)) => return Err(format!("axis {axis} is out of range for `{value}`")),
            (true, None) => {
                return Err(format!(
                    "axis {axis} counts from the end of `{value}`, whose rank is not known"
                ))
            }
        };
        if normalized.contains(&position) {
            return Err(format!("axes {axes:?} repeat an axis"));
        }
        normalized.push(position);
    }
    normalized.sort_unstable();
    Ok(normalized)
}

/// The axes of a Squeeze of `value`: its own, or every dimension of 1 when it has none
/// (which needs the whole shape).
fn squeezed_axes(view: &View<'_>, node: &NodeProto, value: &str) -> Result<Vec<i64>, String> {
    if let Some(axes) = axes_of(view, node)?.filter(|axes| !axes.is_empty()) {
        return Ok(axes);
    }
    let dims = view
        .shapes
        .known_dims(value)
        .ok_or_else(|| format!("a Squeeze without axes of `{value}`, whose shape is not known"))?;
    Ok((0..dims.len() as i64).filter(|&i| dims[i as usize] == 1).collect())
}

fn unsqueezed_axes(view: &View<'_>, node: &NodeProto) -> Result<Vec<i64>, String> {
    axes_of(view, node)?.ok_or_else(|| "an Unsqueeze without axes".to_string())
}

/// What `first` then `second` (each a Squeeze or an Unsqueeze) become, or why they stay.
fn plan(view: &View<'_>, first: &NodeProto, second: &NodeProto) -> Result<Plan, String> {
    let x = first.input[0].as_str();
    let middle = second.input[0].as_str();
    let rank = view.shapes.rank(x);
    let plus = |k: usize| rank.map(|r| r + k);
    let minus = |k: usize| rank.and_then(|r| r.checked_sub(k));

    match (first.op_type(), second.op_type()) {
        ("Unsqueeze", "Squeeze") => {
            let added = unsqueezed_axes(view, first)?;
            let removed = squeezed_axes(view, second, middle)?;
            let added = normalize(&added, plus(added.len()), middle)?;
            let removed = normalize(&removed, plus(added.len()), middle)?;
            if added != removed {
                return Err(format!(
                    "the Squeeze removes axes {removed:?}, not the axes {added:?} the Unsqueeze \
                     adds"
                ));
            }
            Ok(Plan::Cancel)
        }
        ("Squeeze", "Unsqueeze") => {
            let removed = squeezed_axes(view, first, x)?;
            let added = unsqueezed_axes(view, second)?;
            let removed = normalize(&removed, rank, x)?;
            let added = normalize(&added, minus(removed.len()).map(|r| r + added.len()), middle)?;
            if added != removed {
                return Err(format!(
                    "the Unsqueeze adds axes {added:?}, not the axes {removed:?} the Squeeze \
                     removes"
                ));
            }
            let dims = view.shapes.dims(x);
            for &axis in &removed {
                if dims.and_then(|d| d.get(axis)) != Some(&Dim::Known(1)) {
                    return Err(format!("dimension {axis} of `{x}` is not known to be 1"));
                }
            }
            Ok(Plan::Cancel)
        }
        ("Unsqueeze", "Unsqueeze") => {
            let inner = unsqueezed_axes(view, first)?;
            let outer = unsqueezed_axes(view, second)?;
            let inner = normalize(&inner, plus(inner.len()), middle)?;
            let outer = normalize(&outer, plus(inner.len() + outer.len()), &second.output[0])?;

            // The middle value's dimension j is the j-th position of the output that the
            // second Unsqueeze does not add.
            let needed = inner.last().map_or(0, |&last| last + 1);
            let kept: Vec<usize> = (0..).filter(|p| !outer.contains(p)).take(needed).collect();
            let mut merged: Vec<i64> = outer.iter().map(|&a| a as i64).collect();
            merged.extend(inner.iter().map(|&j| kept[j] as i64));
            merged.sort_unstable();
            Ok(Plan::Merge(merged))
        }
        ("Squeeze", "Squeeze") => {
            let inner = squeezed_axes(view, first, x)?;
            let outer = squeezed_axes(view, second, middle)?;
            let inner = normalize(&inner, rank, x)?;
            let outer = normalize(&outer, minus(inner.len()), middle)?;

            // The middle value's dimension j is the j-th dimension of x the first Squeeze
            // keeps.
            let needed = outer.last().map_or(0, |&last| last + 1);
            let kept: Vec<usize> = (0..).filter(|p| !inner.contains(p)).take(needed).collect();
            let mut merged: Vec<i64> = inner.iter().map(|&a| a as i64).collect();
            merged.extend(outer.iter().map(|&j| kept[j] as i64));
            merged.sort_unstable();
            Ok(Plan::Merge(merged))
        }
        _ => Err("not a Squeeze or Unsqueeze pair".into()),
    }
}

/// Replaces `first_index` and `index` by one node of `node`'s type on `x` with `axes`,
/// written as the model's opset writes them.
fn merged(
    scan: &mut Scan<'_, '_>,
    node: &NodeProto,
    x: &str,
    axes: &[i64],
    first_index: usize,
    index: usize,
) -> Rewrite {
    let mut rewrite = Rewrite { remove: vec![first_index, index], ..Rewrite::default() };
    let output = node.output[0].as_str();
    let mut merged = if scan.view.target.opset >= AXES_INPUT_OPSET {
        let name = scan.fresh(&format!("{output}_axes"));
        let values = ndarray::Array1::from(axes.to_vec()).into_dyn();
        rewrite.initializers.push(ir::tensor_from_i64(&name, &values));
        ir::make_node(node.op_type(), &[x, &name], &[output], node.name())
    } else {
        let mut merged = ir::make_node(node.op_type(), &[x], &[output], node.name());
        merged.attribute.push(attr_ints("axes", axes));
        merged
    };
    merged.domain = node.domain.clone();
    rewrite.add.push(merged);
    rewrite
}
