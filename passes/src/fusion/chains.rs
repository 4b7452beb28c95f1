//! Rules that shorten chains of layout operators: `transpose_chain` makes two Transposes in
//! a row one (or none, when they undo each other), and `reshape_chain` makes a Reshape of a
//! Reshape (or of a Flatten, Squeeze or Unsqueeze) one Reshape of the first input.

use super::eliminate::pass_through_blocked;
use super::pattern::{compose_perms, is_op, Rewrite, Scan, View};
use super::Rule;
use crate::ir::proto::NodeProto;
use crate::ir::shapes::Dim;
use crate::ir::{self, attr_ints, node_attr_int, node_attr_ints};

pub(crate) const TRANSPOSE_CHAIN: Rule = Rule {
    name: "transpose_chain",
    summary: "makes Transpose(Transpose(x)) one Transpose of the composed perm, or none when \
              the two undo each other",
    scan: transpose_chain,
};

pub(crate) const RESHAPE_CHAIN: Rule = Rule {
    name: "reshape_chain",
    summary: "makes a Reshape of a Reshape, Flatten, Squeeze or Unsqueeze one Reshape of the \
              first input, where the second target is a constant",
    scan: reshape_chain,
};

fn transpose_chain(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "Transpose") || !scan.is_free(index) {
            continue;
        }
        let (Some(middle), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        let Some((first_index, first)) = view.producer_of_type(middle, "Transpose") else {
            continue;
        };
        let Some(x) = first.input.first().filter(|x| !x.is_empty()) else { continue };
        if !scan.is_free(first_index) {
            continue;
        }

        let perm = match composed_perm(view, first, node) {
            Ok(perm) => perm,
            Err(reason) => {
                scan.skip(index, reason);
                continue;
            }
        };
        // The first Transpose stays for its other readers, if it has any.
        let mut remove = vec![index];
        if view.only_read_by(middle, index) {
            remove.push(first_index);
        }

        let rewrite = match perm {
            None => {
                if let Some(reason) = pass_through_blocked(scan, x, output) {
                    scan.skip(index, reason);
                    continue;
                }
                Rewrite { remove, renames: vec![(output.clone(), x.clone())], ..Rewrite::default() }
            }
            Some(perm) => {
                let mut merged = ir::make_node("Transpose", &[x], &[output], node.name());
                merged.attribute.push(attr_ints("perm", &perm));
                Rewrite { remove, add: vec![merged], ..Rewrite::default() }
            }
        };
        scan.offer(rewrite);
    }
}

/// The perm of `first` then `second`: `None` when it is the identity, the composed perm
/// otherwise; an error when a perm is malformed or a left-out perm's rank is not known.
fn composed_perm(
    view: &View<'_>,
    first: &NodeProto,
    second: &NodeProto,
) -> Result<Option<Vec<i64>>, String> {
    let (p1, p2) = (node_attr_ints(first, "perm"), node_attr_ints(second, "perm"));
    if p1.is_none() && p2.is_none() {
        // Reversing the axes twice changes nothing, whatever the rank.
        return Ok(None);
    }
    let x = first.input[0].as_str();
    let rank = p1
        .or(p2)
        .map(<[i64]>::len)
        .or_else(|| view.shapes.rank(x))
        .ok_or_else(|| format!("the rank of `{x}` is not known"))?;
    let reversed: Vec<i64> = (0..rank as i64).rev().collect();
    let p1 = checked_perm(p1.unwrap_or(&reversed), rank)?;
    let p2 = checked_perm(p2.unwrap_or(&reversed), rank)?;

    let as_i64 = |p: Vec<usize>| p.into_iter().map(|a| a as i64).collect::<Vec<_>>();
    let composed = compose_perms(&as_i64(p1), &as_i64(p2))
        .ok_or_else(|| format!("the perms of `{x}`'s Transposes do not compose"))?;
    let identity = composed.iter().enumerate().all(|(i, &p)| p == i as i64);
    Ok((!identity).then_some(composed))
}

fn checked_perm(perm: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; rank];
    let mut checked = Vec::with_capacity(rank);
    for &p in perm {
        let axis = usize::try_from(p).ok().filter(|&a| a < rank && !seen[a]);
        let axis =
            axis.ok_or_else(|| format!("perm {perm:?} is not a permutation of {rank} axes"))?;
        seen[axis] = true;
        checked.push(axis);
    }
    if checked.len() != rank {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    Ok(checked)
}

fn reshape_chain(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "Reshape") || !scan.is_free(index) || node.input.len() < 2 {
            continue;
        }
        let (middle, shape) = (&node.input[0], &node.input[1]);
        let Some((first_index, first)) = view.producer(middle) else { continue };
        let reshapes = ["Reshape", "Flatten", "Squeeze", "Unsqueeze"];
        if !reshapes.iter().any(|op| is_op(first, op)) || !scan.is_free(first_index) {
            continue;
        }
        let Some(x) = first.input.first().filter(|x| !x.is_empty()) else { continue };
        if !view.only_read_by(middle, index) {
            scan.skip(index, format!("the intermediate `{middle}` is read by other nodes too"));
            continue;
        }

        let target = match target_from(view, node, x, middle) {
            Ok(target) => target,
            Err(reason) => {
                scan.skip(index, reason);
                continue;
            }
        };
        let mut rewrite = Rewrite { remove: vec![first_index, index], ..Rewrite::default() };
        let shape_name = match target {
            None => shape.clone(),
            Some(values) => {
                let name = scan.fresh(&format!("{shape}_of_{x}"));
                let values = ndarray::Array1::from(values).into_dyn();
                rewrite.initializers.push(ir::tensor_from_i64(&name, &values));
                name
            }
        };
        let mut merged = node.clone();
        merged.input = vec![x.clone(), shape_name];
        rewrite.add.push(merged);
        scan.offer(rewrite);
    }
}

/// The target that makes `reshape` apply to `x` directly instead of `middle`: `None` when
/// its own target does (no 0 copies a dimension), the target with each copying 0 replaced
/// by the size it copies otherwise; an error when the target is not a constant or a 0
/// copies a dimension of `middle` that `x` does not have and whose size is not known.
fn target_from(
    view: &View<'_>,
    reshape: &NodeProto,
    x: &str,
    middle: &str,
) -> Result<Option<Vec<i64>>, String> {
    let shape = reshape.input[1].as_str();
    let target = view
        .constant_i64(shape)
        .filter(|t| t.ndim() == 1)
        .ok_or_else(|| format!("its target shape `{shape}` is not a constant"))?;
    let allow_zero = node_attr_int(reshape, "allowzero").unwrap_or(0) != 0;
    if allow_zero || !target.iter().any(|&t| t == 0) {
        return Ok(None);
    }

    let middle_dims = view.shapes.dims(middle);
    let x_dims = view.shapes.dims(x);
    let mut replaced: Vec<i64> = target.iter().copied().collect();
    let mut changed = false;
    for (i, value) in replaced.iter_mut().enumerate().filter(|(_, t)| **t == 0) {
        let copied = middle_dims.and_then(|d| d.get(i));
        match copied {
            Some(Dim::Known(size)) if *size > 0 => {
                *value = *size;
                changed = true;
            }
            Some(dim) if *dim != Dim::Unknown && x_dims.and_then(|d| d.get(i)) == Some(dim) => {}
            _ => {
                return Err(format!(
                    "its 0 at position {i} copies dimension {i} of `{middle}`, which is not \
                     known to be `{x}`'s"
                ))
            }
        }
    }
    Ok(changed.then_some(replaced))
}
