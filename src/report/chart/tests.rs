//! The chart is well-formed SVG that names the source and the winner, labels its axes with
//! units, and places points where their values say.

use std::path::PathBuf;

use super::*;
use crate::report::{Latency, RuntimeSummary};

fn latency(ms: f64) -> Latency {
    Latency { p50: ms, p90: ms * 2.0, p99: ms, mean: ms, min: ms, warmup: 1, runs: 5, batch: 1 }
}

fn candidate(id: &str, status: Status, accuracy: Option<f64>, ms: f64) -> CandidateReport {
    CandidateReport {
        id: id.into(),
        label: format!("pass {id}"),
        steps: Vec::new(),
        status,
        reasons: Vec::new(),
        measurement: Some(Measurement {
            accuracy,
            fidelity: None,
            latency_ms: Some(latency(ms)),
            size_bytes: 20_000,
        }),
        build_s: 0.0,
        notes: Vec::new(),
        accuracy_cached: false,
        accuracy_aware: None,
    }
}

fn report(accuracy: bool) -> Report {
    let accuracy = |value: f64| accuracy.then_some(value);
    Report {
        recipe: "chart".into(),
        recipe_path: PathBuf::from("recipe.yaml"),
        model: PathBuf::from("model.onnx"),
        target: "cpu".into(),
        runtime: RuntimeSummary {
            name: "onnxruntime".into(),
            version: "1".into(),
            library: PathBuf::new(),
            intra_op_threads: 0,
            inter_op_threads: 0,
            providers: vec!["CPUExecutionProvider".into()],
        },
        objective: vec!["latency".into()],
        latency_stat: "p90".into(),
        goals: Vec::new(),
        accuracy_figure: AccuracyFigure::Top1,
        source: Measurement {
            accuracy: accuracy(0.95),
            fidelity: None,
            latency_ms: Some(latency(4.0)),
            size_bytes: 80_000,
        },
        candidates: vec![
            candidate("c1", Status::Passed, accuracy(0.94), 3.0),
            candidate("c2", Status::Passed, accuracy(0.90), 1.0),
            candidate("c3", Status::MissedGoals, accuracy(0.50), 0.5),
            CandidateReport { measurement: None, ..candidate("c4", Status::Failed, None, 0.0) },
        ],
        best: Some("c2".into()),
        pareto_front: vec!["c2".into(), "c1".into()],
        dominated: Vec::new(),
        verdict: String::new(),
        candidates_not_run: 0,
        search: crate::search::SearchReport {
            strategy: "exhaustive".into(),
            seed: 0,
            max_candidates: 64,
            max_time_s: None,
            space_size: 4,
            candidates: 4,
            duplicates: 0,
            skipped_invalid: 0,
            invalid_reasons: Vec::new(),
            run: 4,
            not_run: 0,
            stopped_by: crate::search::StopReason::AllRun,
            not_run_reason: None,
            history: Vec::new(),
        },
        not_measured: None,
        session_tune: None,
        output_model: None,
        wall_time_s: 0.0,
    }
}

/// The position of the text element whose content is `text`.
fn text_at(document: &roxmltree::Document, text: &str) -> (f64, f64) {
    let node = document
        .descendants()
        .find(|n| n.has_tag_name("text") && n.text().map(str::trim) == Some(text))
        .unwrap_or_else(|| panic!("no text `{text}` in the chart"));
    let number = |name: &str| node.attribute(name).and_then(|v| v.parse().ok()).expect("a number");
    (number("x"), number("y"))
}

#[test]
fn accuracy_against_latency_names_the_source_and_the_winner() {
    let svg = render_chart(&report(true)).expect("renders").expect("a chart");
    let document = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    assert!(document.root_element().has_tag_name("svg"));

    for label in [
        "chart: accuracy against latency",
        "latency p90 (ms, lower is better)",
        "top-1 accuracy (%, higher is better)",
        "Pareto front (latency)",
        "met every goal",
        "missed a goal",
        "source model",
    ] {
        text_at(&document, label);
    }

    // p90 is twice the p50 given above: source 8 ms, c1 6 ms, c2 (best) 2 ms, c3 1 ms. Points
    // to the right are slower; points higher up (smaller y) are more accurate.
    let source = text_at(&document, "source");
    let c1 = text_at(&document, "c1");
    let best = text_at(&document, "c2 (best)");
    let c3 = text_at(&document, "c3");
    assert!(c3.0 < best.0 && best.0 < c1.0 && c1.0 < source.0, "{c3:?} {best:?} {c1:?} {source:?}");
    // Labels sit at different offsets from their points; a point's own offset is fixed, so
    // the order of accuracies shows among the plain labels.
    assert!(c1.1 < c3.1, "c1 (94%) should be above c3 (50%): {c1:?} {c3:?}");
    // A candidate that failed was never measured and has no point.
    assert!(!svg.contains(">\nc4\n<") && !svg.contains(">c4<"), "{svg}");
    // The winner is labelled once, in its own style.
    assert_eq!(svg.matches("c2").count(), 1, "{svg}");
}

#[test]
fn size_against_latency_without_accuracy_and_no_chart_for_size_alone() {
    let svg = render_chart(&report(false)).expect("renders").expect("a chart");
    let document = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    text_at(&document, "size (KiB, lower is better)");
    text_at(&document, "latency p90 (ms, lower is better)");

    let mut only_size = report(false);
    only_size.source.latency_ms = None;
    for candidate in &mut only_size.candidates {
        if let Some(m) = &mut candidate.measurement {
            m.latency_ms = None;
        }
    }
    assert!(render_chart(&only_size).expect("renders").is_none());
    assert!(!has_chart(&only_size));
}
