//! Accuracy-aware quantization: a quantized candidate that misses the accuracy goal gets its
//! most harmful quantized nodes reverted to float, one at a time, until the goal is met or
//! `accuracy_aware.max_reverts` nodes were reverted.
//!
//! The candidate's last quantizing step (a pass with `nodes_to_exclude`) is the one changed;
//! its input model is the model before it. The nodes it quantized are found and ranked so:
//! - the named nodes of the input model whose op type is one these passes rewrite with
//!   weights ([`WEIGHTED_OPS`]) and that `nodes_to_exclude` does not already name are tried;
//! - each is built alone excluded (one build of the step per node, through the [`Builder`],
//!   so the cache holds them); a node whose exclusion leaves the model's bytes as they were
//!   was not quantized and drops out;
//! - each model is run on the first `subset` evaluation samples, and the node's harm is how
//!   much lower the accuracy output's mean squared error against the input model's is with
//!   that node float. The cost is one build of the step and one run on the subset per node.
//!
//! Nodes are then reverted in that order: each revert rebuilds the candidate's steps from
//! the quantizing step on and measures accuracy on the whole evaluation set, as every
//! candidate is measured. The last model is measured in full (accuracy, latency, size) and
//! replaces the candidate's.

use std::sync::Arc;

use pipeline_passes::ir::proto::ModelProto;
use pipeline_passes::pass::ModelRunner;
use serde_json::Value;
use tracing::{info, warn};

use crate::build::Builder;
use crate::calibrate::OrtRunner;
use crate::evaluate::Dataset;
use crate::plan::{Candidate, StepRef};
use crate::recipe::{AccuracyAware, Metrics, Recipe};
use crate::report::{
    AccuracyAwareReport, CandidateReport, Measurement, NodeHarm, Note, NoteKind, Status,
};
use crate::run::{evaluate_candidate, Bench};
use crate::runtime::Threads;

/// The passes whose quantized nodes can be reverted through `nodes_to_exclude`.
pub const PASSES: [&str; 3] = ["quantize_static", "quantize_dynamic", "quantize_weights"];

/// The op types those passes quantize by their weights; only such nodes are ranked.
// TODO: static quantization also quantizes activation-only ops (Relu, Add, pooling); they are
// not ranked, as their float versions rarely buy back accuracy.
pub const WEIGHTED_OPS: [&str; 9] =
    ["MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "Attention", "LSTM", "GRU", "RNN"];

/// What reverting needs beyond a candidate: the recipe's settings and the subset data.
pub struct Reverter {
    spec: AccuracyAware,
    subset: OrtRunner,
    output: String,
}

impl Reverter {
    /// A reverter for `recipe`, when it asks for accuracy-aware quantization.
    pub fn new(recipe: &Recipe, evaluation: &Dataset, output: &str) -> Option<Reverter> {
        let spec = recipe.accuracy_aware.clone()?;
        let mut subset = evaluation.clone();
        subset.truncate(spec.subset);
        let subset = OrtRunner::new(subset, Threads::default()).with_batch_size(64);
        Some(Reverter { spec, subset, output: output.to_string() })
    }

    /// The candidate's report after reverting, or `report` as it was when the candidate did
    /// not miss the accuracy goal or has no quantizing step.
    pub(crate) fn revert(
        &self,
        bench: &Bench<'_>,
        candidate: &Candidate,
        builder: &mut Builder,
        report: CandidateReport,
    ) -> CandidateReport {
        let Some(measured) = &report.measurement else { return report };
        if report.status != Status::MissedGoals
            || accuracy_met(bench.recipe, bench.source, measured)
        {
            return report;
        }
        let Some(index) = candidate.steps.iter().rposition(|s| PASSES.contains(&s.pass.as_str()))
        else {
            return report;
        };
        info!(
            "{}: missed the accuracy goal; ranking the nodes `{}` quantized",
            candidate.id, candidate.steps[index].pass
        );
        let ranking = match self.rank(candidate, index, builder) {
            Ok(ranking) => ranking,
            Err(reason) => {
                warn!("{}: accuracy-aware quantization skipped: {reason}", candidate.id);
                let mut report = report;
                report.notes.push(Note {
                    kind: NoteKind::AccuracyAware,
                    message: format!("no node could be reverted to float: {reason}"),
                });
                return report;
            }
        };

        // Reverts measure accuracy only; the last model is measured in full below.
        let mut quick = bench.recipe.clone();
        quick.metrics.latency = None;
        let quick_bench = Bench { recipe: &quick, ..*bench };
        let mut aware = AccuracyAwareReport {
            step: candidate.steps[index].pass.clone(),
            accuracy_before: measured.accuracy,
            ranking: ranking.clone(),
            reverted: Vec::new(),
            accuracies: Vec::new(),
            goal_met: false,
        };
        let mut last = None;
        for harm in ranking.iter().take(self.spec.max_reverts) {
            aware.reverted.push(harm.node.clone());
            let changed = with_excluded(candidate, index, &aware.reverted);
            let step = evaluate_candidate(&quick_bench, &changed, builder);
            if step.status == Status::Unchanged {
                // Every node the step quantized is float now: the candidate would be its
                // input model, which is no quantized candidate.
                info!(
                    "{}: reverting `{}` too would leave nothing quantized",
                    candidate.id, harm.node
                );
                aware.reverted.pop();
                break;
            }
            let Some(accuracy) = step.measurement.as_ref().and_then(|m| m.accuracy) else {
                warn!(
                    "{}: reverting `{}` failed: {}",
                    candidate.id,
                    harm.node,
                    step.reasons.join("; ")
                );
                aware.reverted.pop();
                break;
            };
            info!("{}: `{}` kept in float: accuracy {accuracy:.4}", candidate.id, harm.node);
            aware.accuracies.push(accuracy);
            last = Some(changed);
            if let Some(measured) = &step.measurement {
                if accuracy_met(bench.recipe, bench.source, measured) {
                    aware.goal_met = true;
                    break;
                }
            }
        }
        let Some(changed) = last else { return report };

        let mut full = evaluate_candidate(bench, &changed, builder);
        full.label = report.label.clone();
        let accuracies: Vec<String> = aware.accuracies.iter().map(|a| format!("{a:.4}")).collect();
        full.notes.push(Note {
            kind: NoteKind::AccuracyAware,
            message: format!(
                "{} node(s) of `{}` kept in float: {} (accuracy {} -> {}); the accuracy goal \
                 was {}",
                aware.reverted.len(),
                aware.step,
                aware.reverted.join(", "),
                measured.accuracy.map_or("?".into(), |a| format!("{a:.4}")),
                accuracies.join(" -> "),
                if aware.goal_met { "met" } else { "still missed" }
            ),
        });
        full.accuracy_aware = Some(aware);
        full
    }

    /// The nodes the step at `index` quantized, most harmful first.
    fn rank(
        &self,
        candidate: &Candidate,
        index: usize,
        builder: &mut Builder,
    ) -> Result<Vec<NodeHarm>, String> {
        let input = builder.build_steps(&candidate.steps[..index]).map_err(|f| f.reason)?.model;
        let steps = &candidate.steps[..=index];
        let quantized = builder.build_steps(steps).map_err(|f| f.reason)?.model;
        let reference = self.outputs(&input)?;
        let base = mse(&self.outputs(&quantized)?, &reference);

        // TODO: the builder keeps every one-node-excluded model in memory until the run ends;
        // for large models the ranking builds should be dropped once measured.
        let excluded = excluded_names(&candidate.steps[index].config);
        let graph = input.graph.as_ref().ok_or("the step's input model has no graph")?;
        let mut ranking = Vec::new();
        for node in &graph.node {
            let name = node.name();
            let weighted = WEIGHTED_OPS.contains(&node.op_type());
            if name.is_empty() || !weighted || excluded.iter().any(|e| e == name) {
                continue;
            }
            let changed = with_excluded(candidate, index, &[name.to_string()]);
            let built = builder.build_steps(&changed.steps[..=index]).map_err(|f| f.reason)?;
            if built.model == quantized {
                // Excluding it changes nothing: the pass did not quantize it.
                continue;
            }
            let error = mse(&self.outputs(&built.model)?, &reference);
            ranking.push(NodeHarm { node: name.to_string(), mse_reduction: base - error });
        }
        if ranking.is_empty() {
            return Err(format!("`{}` quantized no node that can be excluded", steps[index].pass));
        }
        ranking.sort_by(|a, b| b.mse_reduction.total_cmp(&a.mse_reduction));
        Ok(ranking)
    }

    /// The accuracy output's values on the subset, all batches in order.
    fn outputs(&self, model: &Arc<ModelProto>) -> Result<Vec<f32>, String> {
        let mut values = Vec::new();
        let names = [self.output.clone()];
        self.subset
            .for_each_batch(model, &names, &mut |_, batch| {
                values.extend(batch.iter().copied());
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        Ok(values)
    }
}

/// Whether `measured` meets the recipe's accuracy goal (its other goals aside).
fn accuracy_met(recipe: &Recipe, source: &Measurement, measured: &Measurement) -> bool {
    let metrics = Metrics { accuracy: recipe.metrics.accuracy.clone(), ..Metrics::default() };
    crate::goals::missed_goals(&metrics, source, measured).is_empty()
}

/// The mean squared difference of two equally long lists (infinite when they differ in
/// length, which a model that changed its output shape would give).
fn mse(values: &[f32], reference: &[f32]) -> f64 {
    if values.len() != reference.len() || values.is_empty() {
        return f64::INFINITY;
    }
    let sum: f64 = values.iter().zip(reference).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    sum / values.len() as f64
}

/// The names a step's configuration already excludes.
fn excluded_names(config: &Value) -> Vec<String> {
    let list = config.get("nodes_to_exclude").and_then(Value::as_array);
    list.into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

/// `candidate` with `nodes` added to the `nodes_to_exclude` of its step at `index`.
fn with_excluded(candidate: &Candidate, index: usize, nodes: &[String]) -> Candidate {
    let mut changed = candidate.clone();
    let step: &mut StepRef = &mut changed.steps[index];
    let mut excluded = excluded_names(&step.config);
    excluded.extend(nodes.iter().cloned());
    if let Value::Object(config) = &mut step.config {
        config.insert("nodes_to_exclude".into(), excluded.into());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mse_is_the_mean_of_squared_differences() {
        assert_eq!(mse(&[1.0, 3.0], &[0.0, 1.0]), 2.5);
        assert!(mse(&[1.0], &[1.0, 2.0]).is_infinite());
    }

    #[test]
    fn excluding_adds_to_the_names_already_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/model.onnx");
        let text = format!(
            "name: t\nmodel: {model}\nmetrics: {{size: {{}}}}\nobjective: [size]\npasses:\n  \
             - fuse: {{}}\n  - quantize_dynamic: {{nodes_to_exclude: [a]}}\n"
        );
        let recipe = crate::recipe::parse(&text, &dir.path().join("r.yaml")).unwrap();
        let plan = crate::plan::build(&recipe).unwrap();
        let candidate = &plan.candidates()[0];
        assert_eq!(excluded_names(&candidate.steps[1].config), ["a"]);

        let changed = with_excluded(candidate, 1, &["b".to_string(), "c".to_string()]);
        assert_eq!(excluded_names(&changed.steps[1].config), ["a", "b", "c"]);
        assert_eq!(changed.steps[0], candidate.steps[0]);
        assert_eq!(changed.id, candidate.id);
        // A step without the key gets it.
        let fused = with_excluded(candidate, 0, &["d".to_string()]);
        assert_eq!(excluded_names(&fused.steps[0].config), ["d"]);
    }
}
