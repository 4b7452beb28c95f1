//! `com.microsoft.EmbedLayerNormalization` under dynamic quantization:
//! `com.microsoft.QEmbedLayerNormalization`, which reads its embedding tables, gamma and beta
//! as 8-bit tensors.
//!
//! As in ORT's tool, the word, position and segment tables, gamma and beta are each stored as
//! UINT8 with one asymmetric scale, as a Gather table is. A node that QEmbedLayerNormalization
//! cannot express stays in float: one with the `embedding_sum` output (ORT's tool skips it
//! too), the `position_ids` input or the `mask_index_type` attribute (which ORT's tool would
//! drop or copy into a node that does not load), or a single output (the quantized node must
//! also give the mask index).

use super::gather::quantize_table;
use super::{base_name, check_weight, QuantizedNames, Rewriter, Skip, WeightForm, MS_DOMAIN};
use crate::ir::proto::NodeProto;

/// The float inputs that become 8-bit, by position: word, position and segment embeddings,
/// gamma and beta. The segment embedding is optional.
const TABLES: [(usize, &str); 5] = [
    (2, "word_embedding"),
    (3, "position_embedding"),
    (4, "segment_embedding"),
    (5, "gamma"),
    (6, "beta"),
];

/// The QEmbedLayerNormalization that replaces an EmbedLayerNormalization, or why it stays in
/// float.
pub(super) fn rewrite(
    node: &NodeProto,
    rewriter: &mut Rewriter<'_>,
) -> Result<Vec<NodeProto>, Skip> {
    check_expressible(node)?;

    let graph = rewriter.graph;
    for &(index, role) in &TABLES {
        match node.input.get(index).filter(|name| !name.is_empty()) {
            Some(table) => {
                check_weight(graph, table)?;
            }
            None if role == "segment_embedding" => {}
            None => return Err(format!("the node has no `{role}` input")),
        }
    }

    let mut quantized = Vec::with_capacity(TABLES.len());
    for &(index, _) in &TABLES {
        let table = node.input.get(index).filter(|name| !name.is_empty());
        let names = match table {
            Some(table) => {
                let names =
                    rewriter.weight(table, WeightForm::Table, |t| quantize_table(t, table))?;
                rewriter.replaced_weights.insert(table.clone());
                names
            }
            None => QuantizedNames {
                values: String::new(),
                scale: String::new(),
                zero_point: String::new(),
            },
        };
        quantized.push(names);
    }
    rewriter.uses_ms_domain = true;

    let optional = |index: usize| node.input.get(index).cloned().unwrap_or_default();
    let mut inputs = vec![node.input[0].clone(), optional(1)];
    inputs.extend(quantized.iter().map(|q| q.values.clone()));
    inputs.push(optional(7));
    inputs.extend(quantized.iter().map(|q| q.scale.clone()));
    inputs.extend(quantized.iter().map(|q| q.zero_point.clone()));

    let name = rewriter.names.fresh(&format!("{}_quant", base_name(node)));
    Ok(vec![NodeProto {
        input: inputs,
        output: node.output.clone(),
        name: Some(name),
        op_type: Some("QEmbedLayerNormalization".into()),
        domain: Some(MS_DOMAIN.into()),
        attribute: node.attribute.clone(),
        doc_string: Some(format!("quantized from EmbedLayerNormalization `{}`", node.name())),
        ..NodeProto::default()
    }])
}

/// Refuses what QEmbedLayerNormalization cannot express.
fn check_expressible(node: &NodeProto) -> Result<(), Skip> {
    let outputs = node.output.iter().filter(|name| !name.is_empty()).count();
    if node.output.len() > 2 {
        return Err("EmbedLayerNormalization with the `embedding_sum` output is not quantized: \
                    QEmbedLayerNormalization lacks it"
            .into());
    }
    if outputs != 2 {
        return Err("EmbedLayerNormalization without the `mask_index` output is not quantized: \
                    QEmbedLayerNormalization must give it"
            .into());
    }
    if node.input.get(8).is_some_and(|name| !name.is_empty()) {
        return Err("QEmbedLayerNormalization has no `position_ids` input".into());
    }
    if let Some(attribute) = node.attribute.iter().find(|a| a.name() != "epsilon") {
        return Err(format!("QEmbedLayerNormalization has no attribute `{}`", attribute.name()));
    }
    if node.input.first().is_none_or(|name| name.is_empty()) {
        return Err("the node has no `input_ids`".into());
    }
    Ok(())
}
