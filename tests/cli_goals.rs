//! `pipeline run` on the digits example with goals: a goal nobody meets exits 1 with the
//! reasons and their numbers in report.json and report.md, a goal that makes no sense is
//! refused before anything runs, and the Pareto front in the report is the one the test
//! computes from the report's own measurements.

mod common;

use std::path::Path;

use common::{outcome, Project};
use serde_json::Value;

/// Reads and parses `report.json` from `dir`.
fn read_report(dir: &Path) -> Value {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn p50(measurement: &Value) -> f64 {
    measurement["latency_ms"]["p50"].as_f64().expect("a measured p50")
}

fn size(measurement: &Value) -> u64 {
    measurement["size_bytes"].as_u64().expect("a measured size")
}

#[test]
fn a_latency_improvement_nobody_meets_exits_1_with_the_numbers() {
    let project = Project::digits();
    project.edit_recipe("stat: p50}", "stat: p50, min_improvement: \"99%\"}");

    let result = outcome(&mut project.run());
    result.expect_code(1).no_panic();

    let out = project.path("out");
    let report = read_report(&out);
    assert!(report["best"].is_null(), "{report:#}");
    assert_eq!(report["pareto_front"], Value::Array(Vec::new()), "{report:#}");
    assert_eq!(report["goals"][1], "latency p50 at least 99% below the source's", "{report:#}");

    // Each reason quotes the candidate's and the source's p50 as report.json has them, and the
    // 1% of the source's latency the goal allows, computed here.
    let source = p50(&report["source"]);
    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(markdown.contains("\n## Rejected candidates\n"), "{markdown}");
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 2, "{report:#}");
    for candidate in candidates {
        assert_eq!(candidate["status"], "missed_goals", "{candidate:#}");
        let got = p50(&candidate["measurement"]);
        let gained = source - got;
        let expected = format!(
            "latency p50 {got:.3} ms is {:.3} ms ({:.1}%) {} the source's {source:.3} ms, short \
             of the 99% ({:.3} ms) required",
            gained.abs(),
            gained.abs() / source * 100.0,
            if gained >= 0.0 { "below" } else { "above" },
            0.99 * source
        );
        assert_eq!(candidate["reasons"], Value::from(vec![expected.clone()]), "{candidate:#}");
        let id = candidate["id"].as_str().expect("an id");
        assert!(markdown.contains(&format!("\n- {id} `")), "{id} not listed in:\n{markdown}");
        assert!(markdown.contains(&format!("\n  - {expected}\n")), "{markdown}");
    }
    assert!(markdown.contains("No candidate met every goal, so the front is empty."));
}

#[test]
fn size_goals_in_percent_and_with_units() {
    // INT8 weights make the digits CNN about four times smaller: 50% smaller is met, 90% is
    // not, and a maximum of 1kB is not.
    let project = Project::digits();
    project.edit_recipe("size: {}", "size: {min_improvement: \"50%\", max_bytes: \"1MB\"}");
    outcome(&mut project.run()).expect_code(0).no_panic();
    let report = read_report(&project.path("out"));
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    let source = size(&report["source"]);
    for candidate in candidates {
        assert_eq!(candidate["status"], "passed", "{candidate:#}");
        assert!(size(&candidate["measurement"]) * 2 <= source, "{report:#}");
    }

    project.edit_recipe("size: {}", "size: {min_improvement: \"90%\", max_bytes: \"1kB\"}");
    outcome(&mut project.run()).expect_code(1).no_panic();
    let report = read_report(&project.path("out"));
    for candidate in report["candidates"].as_array().expect("`candidates` is a list") {
        let got = size(&candidate["measurement"]);
        let reasons = candidate["reasons"].as_array().expect("reasons");
        assert_eq!(reasons.len(), 2, "{candidate:#}");
        let first = reasons[0].as_str().expect("a reason");
        assert!(first.contains(&format!("({got} bytes) is above the maximum")), "{first}");
        assert!(first.ends_with("(1000 bytes)"), "{first}");
        let second = reasons[1].as_str().expect("a reason");
        let required = (source as f64 * 0.9).round() as u64;
        assert!(
            second.contains(&format!("{} bytes (", source - got))
                && second.ends_with(&format!("the 90% ({required} bytes) required")),
            "{second}"
        );
    }
}

#[test]
fn a_goal_that_makes_no_sense_is_refused_before_anything_runs() {
    let project = Project::digits();
    project.edit_recipe("stat: p50}", "stat: p50, min_improvement: \"1000%\"}");
    let before = project.files();

    let result = outcome(&mut project.run());
    result.expect_code(2).no_panic().stderr_has(&[
        "recipe.yaml:9:61: metrics.latency.min_improvement: an improvement of 1000% makes no \
         sense",
        "hint: write milliseconds like `2`",
    ]);
    assert_eq!(project.files(), before, "a refused recipe wrote files");
}

/// Whether `a` is as good as `b` on latency and size and better on one.
fn dominates(a: &Value, b: &Value) -> bool {
    let (a_ms, b_ms, a_size, b_size) = (p50(a), p50(b), size(a), size(b));
    a_ms <= b_ms && a_size <= b_size && (a_ms < b_ms || a_size < b_size)
}

#[test]
fn the_pareto_front_is_the_undominated_candidates() {
    let project = Project::digits();
    let branches = "  - one_of:\n      - quantize_dynamic: {per_channel: [false, true]}\n      \
                    - convert_fp16: {}\n";
    project.write_recipe(
        &common::DIGITS_RECIPE
            .replace("  - quantize_dynamic: {per_channel: [false, true]}\n", branches)
            .replace("objective: [latency]", "objective: [latency, size]"),
    );

    outcome(&mut project.run()).expect_code(0).no_panic();
    let out = project.path("out");
    let report = read_report(&out);
    let candidates = report["candidates"].as_array().expect("`candidates` is a list");
    assert_eq!(candidates.len(), 3, "{report:#}");

    let passed: Vec<&Value> = candidates.iter().filter(|c| c["status"] == "passed").collect();
    assert!(!passed.is_empty(), "{report:#}");
    let mut expected: Vec<&str> = passed
        .iter()
        .filter(|c| !passed.iter().any(|o| dominates(&o["measurement"], &c["measurement"])))
        .map(|c| c["id"].as_str().expect("an id"))
        .collect();
    let mut front: Vec<&str> = report["pareto_front"]
        .as_array()
        .expect("`pareto_front` is a list")
        .iter()
        .map(|id| id.as_str().expect("an id"))
        .collect();
    let best = report["best"].as_str().expect("a winner");
    assert_eq!(front[0], best, "the winner leads the front: {report:#}");
    front.sort();
    expected.sort();
    assert_eq!(front, expected, "{report:#}");

    // Every passing candidate off the front names a front candidate that dominates it.
    let dominated = report["dominated"].as_array().expect("`dominated` is a list");
    assert_eq!(dominated.len(), passed.len() - front.len(), "{report:#}");
    let by_id = |id: &Value| candidates.iter().find(|c| &c["id"] == id).expect("a candidate");
    for entry in dominated {
        assert!(front.contains(&entry["by"].as_str().expect("an id")), "{report:#}");
        let (winner, loser) = (by_id(&entry["by"]), by_id(&entry["id"]));
        assert!(dominates(&winner["measurement"], &loser["measurement"]), "{report:#}");
    }

    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let section = markdown.split("\n## Pareto front\n").nth(1).expect("a front section");
    for id in &front {
        assert!(section.contains(&format!("\n| {id} ")), "{id} not in:\n{section}");
    }

    // The chart: well-formed SVG, linked from report.md, naming the source, the winner and
    // every other measured candidate, with its axes and their units.
    assert!(markdown.contains("](report.svg)"), "{markdown}");
    let svg = std::fs::read_to_string(out.join("report.svg")).expect("report.svg was written");
    let document = roxmltree::Document::parse(&svg).expect("report.svg is well-formed XML");
    assert!(document.root_element().has_tag_name("svg"));
    let texts: Vec<&str> = document
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::trim))
        .collect();
    let winner = format!("{best} (best)");
    let mut wanted = vec![
        "source",
        winner.as_str(),
        "latency p50 (ms, lower is better)",
        "top-1 accuracy (%, higher is better)",
        "Pareto front (latency, size)",
    ];
    wanted.extend(candidates.iter().filter_map(|c| c["id"].as_str()).filter(|id| *id != best));
    for text in wanted {
        assert!(texts.contains(&text), "no `{text}` in the chart's texts {texts:?}");
    }
}

#[test]
fn a_report_with_only_size_has_no_chart_and_removes_an_earlier_one() {
    let project = Project::digits();
    outcome(&mut project.run()).expect_code(0).no_panic();
    let chart = project.path("out/report.svg");
    assert!(chart.is_file(), "the first run drew no chart");

    // Size alone gives no plane to draw on: the old chart must not stand beside the new report.
    project.write_recipe(
        &common::DIGITS_RECIPE
            .replace("  accuracy: {kind: top1, output: logits, max_drop: 0.01}\n", "")
            .replace("  latency: {warmup: 2, runs: 5, stat: p50}\n", "")
            .replace("objective: [latency]", "objective: [size]"),
    );
    outcome(&mut project.run()).expect_code(0).no_panic();
    assert!(!chart.exists(), "a chart from the earlier run was left");
    let markdown = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    assert!(!markdown.contains("report.svg"), "{markdown}");
}

#[test]
fn percentages_print_as_written_without_float_noise() {
    // 55 / 100 * 100 is 55.00000000000001 in floating point. Quantization makes the digits
    // model slower, so the latency goal is missed and its reason quotes the percentage.
    let project = Project::digits();
    let text = common::DIGITS_RECIPE
        .replace("stat: p50}", "stat: p50, min_improvement: \"55%\"}")
        .replace("size: {}", "size: {min_improvement: \"55%\"}");
    project.write_recipe(&text);
    let result = outcome(&mut project.run());
    result.no_panic();
    let report = read_report(&project.path("out"));
    let markdown = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    let everything = format!("{}{}{report}{markdown}", result.stdout, result.stderr);
    assert!(!everything.contains("55.0000"), "float noise in:\n{everything}");
    assert!(markdown.contains("- goal: size at least 55% below the source's"), "{markdown}");
    let reasons: Vec<&str> = report["candidates"]
        .as_array()
        .expect("`candidates` is a list")
        .iter()
        .flat_map(|c| c["reasons"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(reasons.iter().any(|r| r.contains("the 55% (")), "{reasons:?}");
}
