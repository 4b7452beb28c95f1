//! The `eliminate_noop` rule: nodes that return their input unchanged, as exporters leave
//! them (a Reshape to the shape the value has, a Transpose by the identity, a Cast to the
//! type it is, a Pad by zeros, a Slice of everything, a Concat of one input ...). Whether a
//! node is a no-op is decided from static shapes and types only; when they are not known
//! the node stays, with the reason.

use super::eliminate::{bypass, pass_through_blocked};
use super::pattern::{Scan, View};
use super::squeeze::axes_of;
use super::Rule;
use crate::ir::proto::NodeProto;
use crate::ir::shapes::Dim;
use crate::ir::{node_attr_int, node_attr_ints};

pub(crate) const NOOP: Rule = Rule {
    name: "eliminate_noop",
    summary: "removes nodes that return their input unchanged: Reshape, Expand, Transpose, \
              Cast, Squeeze, Unsqueeze, Pad, Slice, Tile, Flatten, Concat and Split that do \
              nothing",
    scan: eliminate_noop,
};

/// A Slice end at least this large keeps everything to the end, whatever the dimension
/// (exporters write `INT64_MAX` or `INT32_MAX`).
const END_OF_AXIS: i64 = i32::MAX as i64;

/// Whether a node changes nothing (`Ok(true)`), changes something (`Ok(false)`), or cannot
/// be told (`Err` with the reason).
type Verdict = Result<bool, String>;

fn eliminate_noop(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !scan.is_free(index) || !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        if input.is_empty() || output.is_empty() {
            continue;
        }

        let verdict = match node.op_type() {
            "Reshape" => reshape(view, node),
            "Expand" => expand(view, node),
            "Transpose" => transpose(view, node),
            "Cast" => cast(view, node),
            "Squeeze" => squeeze(view, node),
            "Unsqueeze" => Ok(axes_of(view, node).is_ok_and(|a| a.is_some_and(|a| a.is_empty()))),
            "Pad" => pad(view, node),
            "Slice" => slice(view, node),
            "Tile" => Ok(node
                .input
                .get(1)
                .and_then(|r| view.constant_i64(r))
                .is_some_and(|r| r.iter().all(|&repeat| repeat == 1))),
            "Flatten" => Ok(flatten(view, node)),
            "Concat" => Ok(node.input.len() == 1),
            "Split" => Ok(node.output.len() == 1),
            _ => continue,
        };

        match verdict {
            Ok(true) => {
                if let Some(reason) = pass_through_blocked(scan, input, output) {
                    scan.skip(index, reason);
                    continue;
                }
                scan.offer(bypass(index, input, output));
            }
            Ok(false) => {}
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// The dimensions of `value`, or the reason they are not known.
fn dims_of<'v>(view: &'v View<'_>, value: &str) -> Result<&'v [Dim], String> {
    view.shapes.dims(value).ok_or_else(|| format!("the shape of `{value}` is not known"))
}

/// Says dimension `i` of `value` is `dim`, which a static size cannot be compared with.
fn unknown_dim(value: &str, i: usize, dim: &Dim) -> String {
    match dim {
        Dim::Symbol(name) => format!("dimension {i} of `{value}` is `{name}`, not a number"),
        _ => format!("dimension {i} of `{value}` is not known"),
    }
}

fn reshape(view: &View<'_>, node: &NodeProto) -> Verdict {
    let x = node.input[0].as_str();
    let Some(target_name) = node.input.get(1) else { return Ok(false) };
    let target = view
        .shapes
        .integers(target_name)
        .ok_or_else(|| format!("the target shape `{target_name}` is not known"))?;
    let dims = dims_of(view, x)?;
    if dims.len() != target.len() {
        return Ok(false);
    }

    let allow_zero = node_attr_int(node, "allowzero").unwrap_or(0) != 0;
    let mut inferred = false;
    for (i, (dim, wanted)) in dims.iter().zip(target).enumerate() {
        match wanted {
            Dim::Known(0) if !allow_zero => {}
            Dim::Known(-1) if !inferred => inferred = true,
            Dim::Known(size) => match dim {
                Dim::Known(have) if have == size => {}
                Dim::Known(_) => return Ok(false),
                other => return Err(unknown_dim(x, i, other)),
            },
            Dim::Symbol(_) if wanted == dim => {}
            _ => return Err(format!("position {i} of the target shape is not known")),
        }
    }
    Ok(true)
}

fn expand(view: &View<'_>, node: &NodeProto) -> Verdict {
    let x = node.input[0].as_str();
    let Some(shape_name) = node.input.get(1) else { return Ok(false) };
    let target = view
        .shapes
        .integers(shape_name)
        .ok_or_else(|| format!("the target shape `{shape_name}` is not known"))?;
    let dims = dims_of(view, x)?;
    if target.len() > dims.len() {
        return Ok(false);
    }

    let offset = dims.len() - target.len();
    for (i, wanted) in target.iter().enumerate() {
        let dim = &dims[offset + i];
        match (wanted, dim) {
            (Dim::Known(1), _) => {}
            (Dim::Known(a), Dim::Known(b)) if a == b => {}
            (Dim::Known(_), Dim::Known(_)) => return Ok(false),
            (Dim::Symbol(_), _) if wanted == dim => {}
            (Dim::Known(_), other) => return Err(unknown_dim(x, offset + i, other)),
            _ => return Err(format!("position {i} of the target shape is not known")),
        }
    }
    Ok(true)
}

fn transpose(view: &View<'_>, node: &NodeProto) -> Verdict {
    match node_attr_ints(node, "perm") {
        Some(perm) => Ok(perm.iter().enumerate().all(|(i, &p)| p == i as i64)),
        // Without `perm` the axes reverse, which changes nothing only up to rank 1.
        None => {
            let x = node.input[0].as_str();
            let rank =
                view.shapes.rank(x).ok_or_else(|| format!("the rank of `{x}` is not known"))?;
            Ok(rank <= 1)
        }
    }
}

fn cast(view: &View<'_>, node: &NodeProto) -> Verdict {
    let x = node.input[0].as_str();
    let Some(to) = node_attr_int(node, "to") else { return Ok(false) };
    let from = view
        .shapes
        .elem_type(x)
        .ok_or_else(|| format!("the element type of `{x}` is not known"))?;
    Ok(i64::from(from) == to)
}

fn squeeze(view: &View<'_>, node: &NodeProto) -> Verdict {
    let x = node.input[0].as_str();
    let Ok(axes) = axes_of(view, node) else { return Ok(false) };
    if axes.is_some_and(|axes| !axes.is_empty()) {
        return Ok(false);
    }

    // Without axes every dimension of 1 goes: a no-op only when none is 1.
    let dims = dims_of(view, x)?;
    for (i, dim) in dims.iter().enumerate() {
        match dim {
            Dim::Known(1) => return Ok(false),
            Dim::Known(_) => {}
            other => return Err(format!("{}, which may be 1", unknown_dim(x, i, other))),
        }
    }
    Ok(true)
}

fn pad(view: &View<'_>, node: &NodeProto) -> Verdict {
    if let Some(pads) = node_attr_ints(node, "pads") {
        return Ok(pads.iter().all(|&p| p == 0));
    }
    let Some(name) = node.input.get(1).filter(|n| !n.is_empty()) else { return Ok(false) };
    let pads =
        view.constant_i64(name).ok_or_else(|| format!("its pads `{name}` are not a constant"))?;
    Ok(pads.iter().all(|&p| p == 0))
}

/// The integers of a Slice parameter: the attribute (opsets before 10) or the constant
/// input at `position`; `None` when absent.
fn slice_parameter(
    view: &View<'_>,
    node: &NodeProto,
    attribute: &str,
    position: usize,
) -> Result<Option<Vec<i64>>, String> {
    if let Some(values) = node_attr_ints(node, attribute) {
        return Ok(Some(values.to_vec()));
    }
    match node.input.get(position).filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(name) => view
            .constant_i64(name)
            .map(|v| Some(v.iter().copied().collect()))
            .ok_or_else(|| format!("its {attribute} `{name}` are not a constant")),
    }
}

fn slice(view: &View<'_>, node: &NodeProto) -> Verdict {
    let x = node.input[0].as_str();
    let starts = slice_parameter(view, node, "starts", 1)?.unwrap_or_default();
    let ends = slice_parameter(view, node, "ends", 2)?.unwrap_or_default();
    let axes = slice_parameter(view, node, "axes", 3)?;
    let steps = slice_parameter(view, node, "steps", 4)?;
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Ok(false);
    }

    for k in 0..starts.len() {
        if steps[k] != 1 {
            return Ok(false);
        }
        let dims = view.shapes.dims(x);
        let axis = match (axes[k] < 0, dims) {
            (false, _) => axes[k] as usize,
            (true, Some(d)) => match usize::try_from(axes[k] + d.len() as i64) {
                Ok(axis) => axis,
                Err(_) => return Ok(false),
            },
            (true, None) => return Err(format!("the rank of `{x}` is not known")),
        };
        let dim = dims.and_then(|d| d.get(axis));
        let size = dim.and_then(Dim::known);

        // The start must clamp to 0, the end to the size.
        let starts_at_zero = starts[k] == 0 || size.is_some_and(|s| starts[k] <= -s);
        if !starts_at_zero {
            return match (starts[k] > 0, dim) {
                (true, _) | (false, Some(Dim::Known(_))) => Ok(false),
                (false, other) => Err(unknown_dim(x, axis, other.unwrap_or(&Dim::Unknown))),
            };
        }
        if ends[k] >= END_OF_AXIS {
            continue;
        }
        match size {
            Some(size) if ends[k] >= size => {}
            Some(_) => return Ok(false),
            None if ends[k] < 0 => return Ok(false),
            None => return Err(unknown_dim(x, axis, dim.unwrap_or(&Dim::Unknown))),
        }
    }
    Ok(true)
}

fn flatten(view: &View<'_>, node: &NodeProto) -> bool {
    let axis = node_attr_int(node, "axis").unwrap_or(1);
    view.shapes.rank(&node.input[0]) == Some(2) && (axis == 1 || axis == -1)
}
