//! Helpers that read a node's operands while a rule matches its pattern, each answering
//! with a [`Matched`]: the operands, or whether the nodes are not the pattern at all or
//! almost are, and why.

use super::pattern::{is_op, View};
use crate::ir::proto::NodeProto;

/// A match, or why not: `Err(None)` when the nodes are not the pattern at all, `Err(Some)`
/// with the reason when they almost are.
pub(crate) type Matched<T> = Result<T, Option<String>>;

/// Checks that `value` is read by node `reader` alone and is no graph output.
pub(crate) fn only_inside(view: &View<'_>, value: &str, reader: usize) -> Matched<()> {
    if view.only_read_by(value, reader) {
        Ok(())
    } else {
        Err(Some(format!("intermediate `{value}` is also read outside the pattern")))
    }
}

/// The one node that reads `value`, when it is of `op_type`; a near-match when such a node
/// reads it among others.
pub(crate) fn sole_reader<'g>(
    view: &View<'g>,
    value: &str,
    op_type: &str,
) -> Matched<(usize, &'g NodeProto)> {
    let readers = view.consumers(value);
    let Some(&reader) = readers.iter().find(|&&r| is_op(view.node(r), op_type)) else {
        return Err(None);
    };
    only_inside(view, value, reader)?;
    Ok((reader, view.node(reader)))
}

/// The operand of a Mul that is not the constant one, and the constant one.
pub(crate) fn either_constant<'g>(
    view: &View<'_>,
    node: &'g NodeProto,
) -> Matched<(&'g str, &'g str)> {
    let (a, b) = two_inputs(node)?;
    match (view.constant(a).is_some(), view.constant(b).is_some()) {
        (false, true) => Ok((a, b)),
        (true, false) => Ok((b, a)),
        _ => Err(None),
    }
}

/// The two inputs of a binary node.
pub(crate) fn two_inputs(node: &NodeProto) -> Matched<(&str, &str)> {
    match &node.input[..] {
        [a, b] if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => Err(None),
    }
}

/// The input of a binary node that is not `known` (which must be one of its inputs).
pub(crate) fn other_input<'n>(node: &'n NodeProto, known: &str) -> Matched<&'n str> {
    match two_inputs(node)? {
        (a, b) if a == known && b != known => Ok(b),
        (a, b) if b == known && a != known => Ok(a),
        _ => Err(None),
    }
}

/// The first output of `node`, when it has one.
pub(crate) fn first_output(node: &NodeProto) -> Matched<&str> {
    node.output.first().map(String::as_str).filter(|o| !o.is_empty()).ok_or(None)
}
