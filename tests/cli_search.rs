//! Search strategies and budgets through the command line on the digits example: the same
//! seed runs the same candidates, `max_candidates` and `max_time` stop the run and the report
//! says so, greedy visits one dimension at a time, and `pipeline plan` / `validate` count or
//! refuse combinations the passes reject.

mod common;

use std::path::Path;

use common::{outcome, Project};
use serde_json::Value;

fn read_report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json was written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// Four candidates: per_channel x reduce_range.
const FOUR: &str =
    "  - quantize_dynamic: {per_channel: [false, true], reduce_range: [false, true]}";

fn project(search: &str) -> Project {
    let project = Project::digits();
    let text = common::DIGITS_RECIPE
        .replace("  - quantize_dynamic: {per_channel: [false, true]}", FOUR)
        .replace("search: {strategy: exhaustive, max_candidates: 8}", search);
    project.write_recipe(&text);
    project
}

fn history(report: &Value) -> Vec<String> {
    let entries = report["search"]["history"].as_array().expect("`search.history` is a list");
    entries.iter().map(|e| e["id"].as_str().expect("an id").to_owned()).collect()
}

#[test]
fn random_with_a_seed_runs_the_same_candidates_and_reports_the_budget() {
    let project = project("search: {strategy: random, seed: 5, max_candidates: 2}");
    let mut runs = Vec::new();
    for _ in 0..2 {
        outcome(&mut project.run()).no_panic().expect_code(0);
        runs.push(read_report(&project.path("out")));
    }
    let report = &runs[0];
    // The seed's shuffle of the four candidates, first two.
    let order = pipeline::search::SplitMix64::new(5).permutation(4);
    let expected: Vec<String> = order[..2].iter().map(|i| format!("c{}", i + 1)).collect();
    assert_eq!(history(report), expected, "{report:#}");
    assert_eq!(history(&runs[1]), expected, "the second run ran other candidates");

    let search = &report["search"];
    assert_eq!(search["strategy"], "random");
    assert_eq!(search["seed"], 5);
    assert_eq!((search["run"].as_u64(), search["not_run"].as_u64()), (Some(2), Some(2)));
    assert_eq!(search["stopped_by"], "max_candidates");
    let reason = search["not_run_reason"].as_str().expect("a reason");
    assert!(reason.contains("max_candidates (2)"), "{reason}");
    assert_eq!(report["candidates_not_run"], 2);
    assert_eq!(report["candidates"].as_array().map(Vec::len), Some(2));
    let times: Vec<f64> = search["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["elapsed_s"].as_f64().expect("seconds"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]) && times[0] > 0.0, "{times:?}");
    assert!(*times.last().unwrap() <= report["wall_time_s"].as_f64().unwrap());

    // report.md says the same: strategy, budget, why the rest did not run, the order run.
    let page = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    let section = page.split("## Search").nth(1).expect("a Search section");
    assert!(section.contains("strategy `random` (seed 5), max_candidates 2"), "{section}");
    assert!(section.contains("2 run, 2 not run"), "{section}");
    assert!(section.contains("stopped: search.max_candidates (2)"), "{section}");
    let order = section.split("order run (seconds since the start): ").nth(1).expect("order");
    let ids: Vec<&str> = order.split(", ").map(|e| e.split(' ').next().unwrap_or("")).collect();
    assert_eq!(ids, expected, "{section}");
}

#[test]
fn max_time_stops_starting_candidates_and_says_so() {
    // The source alone takes longer than a millisecond to load and measure.
    let project = project("search: {max_time: 0.001}");
    let result = outcome(&mut project.run());
    result.no_panic().expect_code(1).stderr_has(&["4 candidate(s) not run", "max_time"]);
    // The verdict says the budget ran out, not that candidates missed goals.
    let verdict = "No candidate ran: the time budget ran out before the first candidate started";
    assert!(result.stdout.contains(verdict), "{}", result.stdout);
    assert!(result.stdout.contains("loading and measuring the source model"), "{}", result.stdout);
    assert!(!result.stdout.contains("0 missed a goal"), "{}", result.stdout);
    let report = read_report(&project.path("out"));
    let search = &report["search"];
    assert_eq!(search["run"], 0, "{search:#}");
    assert_eq!(search["not_run"], 4);
    assert_eq!(search["stopped_by"], "max_time");
    assert_eq!(search["max_time_s"], 0.001);
    assert!(report["best"].is_null());
}

#[test]
fn greedy_tries_each_dimension_once_with_the_best_of_the_earlier_ones() {
    let project = project("search: {strategy: greedy}");
    outcome(&mut project.run()).no_panic().expect_code(0);
    let report = read_report(&project.path("out"));
    let run = history(&report);
    // per_channel false/true with reduce_range false, then reduce_range true with the best
    // per_channel: 2 + 2 - 1 candidates.
    assert_eq!(run[..2], ["c1", "c3"], "{report:#}");
    assert_eq!(run.len(), 3, "{report:#}");
    // Passed before the rest, then the lower p50 (the first objective).
    let rank = |id: &str| {
        let candidate = report["candidates"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == id))
            .unwrap_or_else(|| panic!("{id} is in the report"));
        let p50 = candidate["measurement"]["latency_ms"]["p50"].as_f64();
        (candidate["status"] != "passed", p50.unwrap_or(f64::INFINITY))
    };
    let kept_c1 = rank("c1") <= rank("c3");
    assert_eq!(run[2], if kept_c1 { "c2" } else { "c4" }, "{report:#}");
    assert_eq!(report["search"]["stopped_by"], "strategy_done");
    assert_eq!(report["search"]["not_run"], 1);
}

#[test]
fn plan_counts_combinations_a_pass_refuses_and_prints_the_search() {
    let project = Project::digits();
    let text = common::DIGITS_RECIPE
        .replace(
            "  - quantize_dynamic: {per_channel: [false, true]}",
            "  - quantize_weights: {bits: [4, 8], block_size: [32, 64], more_bits: [false, true]}",
        )
        .replace(
            "search: {strategy: exhaustive, max_candidates: 8}",
            "search: {strategy: tpe, seed: 3, max_candidates: 1, max_time: 10m}",
        );
    project.write_recipe(&text);
    let result = outcome(project.pipeline().arg("plan").arg(project.recipe()));
    result.no_panic().expect_code(0);
    let stdout = &result.stdout;
    assert!(stdout.contains("6 candidates in a search space of 8\n"), "{stdout}");
    assert!(stdout.contains("2 skipped as invalid:\n  2 x invalid configuration"), "{stdout}");
    assert!(stdout.contains("(e.g. quantize_weights(bits=8, block_size=32, more_bits=true))"));
    assert!(
        stdout.contains(
            "search: tpe (seed 3), max_candidates 1 (5 candidates will not run), max_time 10m\n"
        ),
        "{stdout}"
    );
}

#[test]
fn a_space_with_no_valid_candidate_is_refused_by_plan_validate_and_run() {
    let project = Project::digits();
    project.edit_recipe(
        "  - quantize_dynamic: {per_channel: [false, true]}",
        "  - quantize_dynamic: {op_types: [[Relu], [Sigmoid]]}",
    );
    for command in ["plan", "validate"] {
        let result = outcome(project.pipeline().arg(command).arg(project.recipe()));
        result.no_panic().expect_code(2).stderr_has(&[
            "no valid candidate: the passes refuse all 2 combinations",
            "Relu",
            "Sigmoid",
            "hint:",
        ]);
    }
    outcome(&mut project.run()).no_panic().expect_code(2).stderr_has(&["no valid candidate"]);
    assert!(!project.path("out").exists(), "a refused run wrote its output folder");
}
