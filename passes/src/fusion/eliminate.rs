//! Rules that remove nodes which compute nothing at inference: Identity, Dropout outside
//! training, and nodes whose results reach no graph output.

use std::collections::HashSet;

use super::pattern::{is_op, Rewrite, Scan};
use super::Rule;
use crate::ir;

pub(crate) const IDENTITY: Rule = Rule {
    name: "eliminate_identity",
    summary: "removes Identity nodes; readers read the input",
    scan: identity,
};

pub(crate) const DROPOUT: Rule = Rule {
    name: "eliminate_dropout",
    summary: "removes Dropout, which passes its input on at inference, unless its mask is read",
    scan: dropout,
};

pub(crate) const DEAD_NODES: Rule = Rule {
    name: "dead_nodes",
    summary: "removes nodes whose outputs reach no graph output",
    scan: dead_nodes,
};

fn identity(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "Identity") || !scan.is_free(index) {
            continue;
        }
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        if let Some(reason) = pass_through_blocked(scan, input, output) {
            scan.skip(index, reason);
            continue;
        }
        scan.offer(bypass(index, input, output));
    }
}

fn dropout(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "Dropout") || !scan.is_free(index) {
            continue;
        }
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };

        // Opset 12 and later take `training_mode` as a third input; only a constant false
        // (or its absence) means inference.
        if let Some(training) = node.input.get(2).filter(|name| !name.is_empty()) {
            match view.constant_i64(training).map(|v| v.iter().all(|&t| t == 0)) {
                Some(true) => {}
                Some(false) => {
                    scan.skip(index, "its training_mode is true: it drops values");
                    continue;
                }
                None => {
                    scan.skip(index, "its training_mode is not a constant");
                    continue;
                }
            }
        }
        if let Some(mask) = node.output.get(1).filter(|name| !name.is_empty()) {
            if !view.consumers(mask).is_empty() || view.is_graph_output(mask) {
                scan.skip(index, "its mask output is read");
                continue;
            }
        }
        if let Some(reason) = pass_through_blocked(scan, input, output) {
            scan.skip(index, reason);
            continue;
        }
        scan.offer(bypass(index, input, output));
    }
}

/// Why a node that passes `input` on as `output` must stay, if it must.
pub(super) fn pass_through_blocked(
    scan: &Scan<'_, '_>,
    input: &str,
    output: &str,
) -> Option<&'static str> {
    let view = scan.view;
    let input_is_io = view.is_graph_input(input) || view.is_graph_output(input);
    if view.is_graph_output(output) && input_is_io {
        return Some("it gives a graph input or output a second name as a graph output");
    }
    if input.is_empty() {
        return Some("its input is omitted");
    }
    None
}

/// Removes node `index`; readers of `output` read `input`.
pub(super) fn bypass(index: usize, input: &str, output: &str) -> Rewrite {
    Rewrite {
        remove: vec![index],
        renames: vec![(output.to_string(), input.to_string())],
        ..Rewrite::default()
    }
}

fn dead_nodes(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    let graph = view.graph;

    let mut live = vec![false; graph.node.len()];
    let mut pending: Vec<String> = graph.output.iter().map(|v| v.name().to_string()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(value) = pending.pop() {
        if !seen.insert(value.clone()) {
            continue;
        }
        let Some((producer, node)) = view.producer(&value) else { continue };
        if !live[producer] {
            live[producer] = true;
            let mut reads = HashSet::new();
            ir::collect_reads(node, &mut reads);
            pending.extend(reads);
        }
    }

    let dead: Vec<usize> = (0..graph.node.len()).filter(|&i| !live[i]).collect();
    if !dead.is_empty() {
        tracing::debug!(nodes = dead.len(), "dead nodes");
        scan.offer(Rewrite { remove: dead, ..Rewrite::default() });
    }
}
