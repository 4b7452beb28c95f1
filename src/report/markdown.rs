//! `report.md`: the report as a page a person reads.

use std::fmt::Write;

use super::{human_bytes, millis, CandidateReport, Report, Status};

/// Renders the report as Markdown: the verdict, the goals, one row per candidate, and the
/// notes on candidates' models (a provider-specific model, for one) under the table.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();

    // Writing to a String cannot fail, so the results of writeln! are ignored.
    let _ = writeln!(out, "# {}\n", report.recipe);
    let _ = writeln!(out, "{}\n", report.verdict);
    let _ = writeln!(out, "- model: `{}`", report.model.display());
    let _ = writeln!(out, "- target: {}", report.target);
    let _ = writeln!(
        out,
        "- runtime: {} {} (`{}`), intra-op threads: {}, inter-op threads: {}",
        report.runtime.name,
        report.runtime.version,
        report.runtime.library.display(),
        threads(report.runtime.intra_op_threads),
        threads(report.runtime.inter_op_threads)
    );
    let _ = writeln!(out, "- execution providers: {}", report.runtime.providers.join(", "));
    if let Some(why) = &report.not_measured {
        let _ = writeln!(out, "- not measured: {why}");
    }
    let _ = writeln!(out, "- objective: {}", report.objective.join(", "));
    for goal in &report.goals {
        let _ = writeln!(out, "- goal: {goal}");
    }
    if let Some(latency) = &report.source.latency_ms {
        let _ = writeln!(
            out,
            "- latency: {} warm-up runs, then {} timed runs of batch {}, one after another, in \
             {}",
            latency.warmup, latency.runs, latency.batch, report.runtime.name
        );
    }
    if report.candidates_not_run > 0 {
        let _ = writeln!(
            out,
            "- {} candidate(s) of the plan were not run: {}",
            report.candidates_not_run,
            report.search.not_run_reason.as_deref().unwrap_or("the search left them out")
        );
    }
    if let Some(path) = &report.output_model {
        let _ = writeln!(out, "- best model written to `{}`", path.display());
    }
    if let Some(tune) = &report.session_tune {
        let _ = match (&tune.best, &tune.path) {
            (Some(best), Some(path)) => writeln!(
                out,
                "- session_tune: best of {} settings: {} intra-op, {} inter-op thread(s), {} \
                 execution, {} ({}), written to `{}`",
                tune.tried,
                best.intra_op_threads,
                best.inter_op_threads,
                best.execution_mode,
                best.graph_optimization_level,
                millis(best.latency_ms),
                path.display()
            ),
            _ => writeln!(
                out,
                "- session_tune failed: {}",
                tune.error.as_deref().unwrap_or("no reason given")
            ),
        };
    }
    let _ = writeln!(out, "- wall time: {:.1} s\n", report.wall_time_s);
    if super::has_chart(report) {
        let _ = writeln!(
            out,
            "![Every measured model: the source, the Pareto front joined, the best \
             highlighted]({})\n",
            super::CHART_FILE
        );
    }

    let figure = report.accuracy_figure;
    let _ = writeln!(
        out,
        "| id | candidate | {} | {} | {} | size | result |",
        figure.header(),
        report.runtime.latency_header("p50"),
        report.runtime.latency_header("p90")
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let source = &report.source;
    let _ = writeln!(
        out,
        "| source | original model | {} | {} | {} | {} | baseline |",
        figure.format(source.accuracy),
        millis(source.latency_ms.as_ref().map(|l| l.p50)),
        millis(source.latency_ms.as_ref().map(|l| l.p90)),
        human_bytes(source.size_bytes)
    );
    for candidate in &report.candidates {
        let m = candidate.measurement.as_ref();
        let latency = m.and_then(|m| m.latency_ms.as_ref());
        let best = report.best.as_deref() == Some(candidate.id.as_str());
        let mut result = candidate.status.as_str().to_string();
        if best {
            result = format!("**best**, {result}");
        }
        if candidate.status != Status::Passed && !candidate.reasons.is_empty() {
            result = format!("{result}: {}", candidate.reasons.join("; "));
        }
        for note in &candidate.notes {
            result = format!("{result} ({}, see notes)", note.kind.as_str());
        }
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} |",
            candidate.id,
            candidate.label,
            figure.format(m.and_then(|m| m.accuracy)),
            millis(latency.map(|l| l.p50)) + &other_batch(latency, source),
            millis(latency.map(|l| l.p90)),
            m.map_or_else(|| "-".to_string(), |m| human_bytes(m.size_bytes)),
            result.replace('|', "\\|")
        );
    }

    write_front(&mut out, report);
    write_rejected(&mut out, report);
    write_search(&mut out, report);
    write_accuracy_aware(&mut out, report);

    let noted: Vec<_> = report.candidates.iter().filter(|c| !c.notes.is_empty()).collect();
    if !noted.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for candidate in noted {
            for note in &candidate.notes {
                let _ = writeln!(
                    out,
                    "- {} `{}`: **{}**: {}",
                    candidate.id,
                    candidate.label,
                    note.kind.as_str(),
                    note.message
                );
            }
        }
    }
    out
}

/// The Pareto front: the candidates that met every goal and that no other beats on every
/// objective, with their numbers, and which front candidate beats each of the others.
fn write_front(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\n## Pareto front\n");
    if report.pareto_front.is_empty() {
        let _ = writeln!(out, "No candidate met every goal, so the front is empty.");
        return;
    }
    let _ = writeln!(
        out,
        "The candidates that met every goal and that no other such candidate beats on every \
         objective ({}: as good on all, better on one), best first:\n",
        report.objective.join(", ")
    );
    let _ = writeln!(
        out,
        "| id | candidate | {} | {} | {} | size |",
        report.accuracy_figure.header(),
        report.runtime.latency_header("p50"),
        report.runtime.latency_header("p90")
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for candidate in report.pareto_front.iter().filter_map(|id| report.candidate(id)) {
        let m = candidate.measurement.as_ref();
        let latency = m.and_then(|m| m.latency_ms.as_ref());
        let mut id = candidate.id.clone();
        if report.best.as_deref() == Some(candidate.id.as_str()) {
            id = format!("{id} (best)");
        }
        let _ = writeln!(
            out,
            "| {id} | `{}` | {} | {} | {} | {} |",
            candidate.label,
            report.accuracy_figure.format(m.and_then(|m| m.accuracy)),
            millis(latency.map(|l| l.p50)),
            millis(latency.map(|l| l.p90)),
            m.map_or_else(|| "-".to_string(), |m| human_bytes(m.size_bytes)),
        );
    }
    if !report.dominated.is_empty() {
        let _ = writeln!(out, "\nMet every goal, but off the front:\n");
        for dominated in &report.dominated {
            let _ = writeln!(
                out,
                "- {}: {} is as good on every objective and better on one",
                dominated.id, dominated.by
            );
        }
    }
}

/// The search: its strategy and budgets, what it skipped and why, and the order in which it
/// ran the candidates.
fn write_search(out: &mut String, report: &Report) {
    let search = &report.search;
    let _ = writeln!(out, "\n## Search\n");
    let budget = match search.max_time_s {
        Some(seconds) => format!(", max_time {seconds} s"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "- strategy `{}` (seed {}), max_candidates {}{budget}",
        search.strategy, search.seed, search.max_candidates
    );
    let _ = writeln!(
        out,
        "- space: {} path(s), {} distinct candidate(s), {} duplicate(s), {} refused \
         combination(s); {} run, {} not run",
        search.space_size,
        search.candidates,
        search.duplicates,
        search.skipped_invalid,
        search.run,
        search.not_run
    );
    if let Some(why) = &search.not_run_reason {
        let _ = writeln!(out, "- stopped: {why}");
    }
    for reason in &search.invalid_reasons {
        let _ = writeln!(
            out,
            "- refused {} time(s), e.g. `{}`: {}",
            reason.count,
            reason.example,
            reason.reason.replace('|', "\\|")
        );
    }
    if !search.history.is_empty() {
        let order: Vec<String> = search
            .history
            .iter()
            .map(|entry| format!("{} ({:.1} s)", entry.id, entry.elapsed_s))
            .collect();
        let _ = writeln!(out, "- order run (seconds since the start): {}", order.join(", "));
    }
}

/// Every candidate that did not meet the goals, with each reason.
fn write_rejected(out: &mut String, report: &Report) {
    let rejected: Vec<&CandidateReport> =
        report.candidates.iter().filter(|c| c.status != Status::Passed).collect();
    if rejected.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Rejected candidates\n");
    for candidate in rejected {
        let _ = writeln!(
            out,
            "- {} `{}`: {}",
            candidate.id,
            candidate.label,
            candidate.status.as_str()
        );
        for reason in &candidate.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
}

/// Zero threads means the runtime chose the number itself.
fn threads(count: usize) -> String {
    if count == 0 {
        "the runtime's default".to_string()
    } else {
        count.to_string()
    }
}

/// ` (batch N)` when a candidate's timed runs fed another batch size than the source's (a
/// model whose shapes were fixed), so the two latencies do not measure the same work.
pub(super) fn other_batch(latency: Option<&super::Latency>, source: &super::Measurement) -> String {
    let source_batch = source.latency_ms.as_ref().map(|l| l.batch);
    match latency {
        Some(l) if source_batch.is_some_and(|b| b != l.batch) => format!(" (batch {})", l.batch),
        _ => String::new(),
    }
}

/// One block per candidate that accuracy-aware quantization worked on: the ranking, the nodes
/// kept in float with the accuracy after each, and whether the goal was met.
fn write_accuracy_aware(out: &mut String, report: &Report) {
    let worked: Vec<_> = report
        .candidates
        .iter()
        .filter_map(|c| c.accuracy_aware.as_ref().map(|aware| (c, aware)))
        .collect();
    if worked.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Accuracy-aware quantization\n");
    for (candidate, aware) in worked {
        let before = report.accuracy_figure.format(aware.accuracy_before);
        let _ = writeln!(
            out,
            "- {} `{}`: `{}` step, accuracy {before} as first built; goal {}",
            candidate.id,
            candidate.label,
            aware.step,
            if aware.goal_met { "met" } else { "still missed" }
        );
        let ranking: Vec<String> =
            aware.ranking.iter().map(|h| format!("{} ({:.3e})", h.node, h.mse_reduction)).collect();
        let _ = writeln!(
            out,
            "  - nodes by harm (output MSE saved by keeping each alone in float): {}",
            ranking.join(", ")
        );
        for (index, (node, accuracy)) in aware.reverted.iter().zip(&aware.accuracies).enumerate() {
            let _ = writeln!(
                out,
                "  - revert {}: `{node}` kept in float: accuracy {}",
                index + 1,
                report.accuracy_figure.format(Some(*accuracy))
            );
        }
    }
}
