//! What a user sees when a recipe is wrong: each message names the file, line, column and
//! field, and says what is allowed. Also the forms a valid recipe may take.

use std::path::{Path, PathBuf};

use pipeline::recipe::{self, Improvement, MaxDrop, ParamSpace, PassItem, RecipeError};
use serde_json::json;

/// A valid recipe; tests replace one line of it to make it wrong.
const VALID: &str = "\
name: digits-int8
model: model.onnx
target: cpu
data:
  calibration: {path: calib.npz, samples: 128}
  evaluation: {path: test.npz, labels: y, samples: 500}
metrics:
  accuracy: {kind: top1, output: logits, max_drop: 0.01}
  latency: {warmup: 10, runs: 100, stat: p50}
  size: {}
objective: [latency]
passes:
  - quantize_dynamic: {per_channel: [false, true]}
search: {strategy: exhaustive, max_candidates: 64}
output: out/
";

/// Writes `text` as `recipe.yaml` in a fresh folder and loads it.
fn load(text: &str) -> (tempfile::TempDir, Result<recipe::Recipe, RecipeError>) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("recipe.yaml");
    std::fs::write(&path, text).expect("the recipe is written");
    let result = recipe::load(&path);
    (dir, result)
}

/// The message for `text`, with the temporary folder replaced by `<dir>`.
fn refusal(text: &str) -> String {
    let (dir, result) = load(text);
    let error = result.expect_err("the recipe should be refused");
    error.to_string().replace(&dir.path().display().to_string(), "<dir>")
}

fn replace(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "`{from}` is not in the valid recipe");
    VALID.replace(from, to)
}

#[test]
fn valid_recipe_loads_with_its_values() {
    let (_dir, result) = load(VALID);
    let recipe = result.expect("the valid recipe loads");
    assert_eq!(recipe.name, "digits-int8");
    assert_eq!(
        recipe.metrics.accuracy.as_ref().and_then(|a| a.max_drop),
        Some(MaxDrop::Absolute(0.01))
    );
    assert_eq!(recipe.search.max_candidates, 64);
    let [PassItem::Pass(spec)] = recipe.passes.as_slice() else { panic!("one pass expected") };
    assert_eq!(spec.name, "quantize_dynamic");
    assert_eq!(
        spec.params,
        [("per_channel".to_owned(), ParamSpace::Choices(vec![json!(false), json!(true)]))]
    );
    assert_eq!(spec.origin.field, "passes[0].quantize_dynamic");
    assert_eq!((spec.origin.line, spec.origin.column), (13, 5));
}

#[test]
fn syntax_error_names_line_and_column() {
    let text =
        replace("  latency: {warmup: 10, runs: 100, stat: p50}\n", "  latency: {warmup: 10\n");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:10:7: invalid YAML: while parsing a flow mapping, did not find \
         expected ',' or '}'"
    );

    assert_eq!(
        refusal("name: x\nmodel: m.onnx\n  target: cpu\n"),
        "<dir>/recipe.yaml:3:9: invalid YAML: mapping values are not allowed in this context"
    );
}

#[test]
fn unknown_key_suggests_the_closest_one() {
    let text = replace("{warmup: 10, runs: 100", "{wamup: 10, runs: 100");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:9:13: metrics.latency.wamup: unknown field `wamup`\n  \
         hint: did you mean `warmup`? allowed: `warmup`, `runs`, `stat`, `max`, \
         `min_improvement`"
    );

    let text = replace("output: out/\n", "outptu: out/\n");
    let message = refusal(&text);
    assert!(
        message.starts_with("<dir>/recipe.yaml:15:1: outptu: unknown field `outptu`"),
        "{message}"
    );
    assert!(message.contains("did you mean `output`?"), "{message}");
}

#[test]
fn unknown_value_lists_the_allowed_ones() {
    let text = replace("stat: p50", "stat: p95");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:9:42: metrics.latency.stat: unknown value `p95`\n  \
         hint: did you mean `p99`? allowed: `p50`, `p90`, `p99`, `mean`"
    );
}

#[test]
fn unknown_pass_suggests_the_closest_registered_pass() {
    let text = replace("- quantize_dynamic:", "- quantize_dynamc:");
    let message = refusal(&text);
    assert!(
        message.starts_with(
            "<dir>/recipe.yaml:13:5: passes[0].quantize_dynamc: unknown pass `quantize_dynamc`\n  \
             hint: did you mean `quantize_dynamic`?"
        ),
        "{message}"
    );
}

#[test]
fn unknown_parameter_suggests_the_closest_one() {
    let text = replace("{per_channel: [false, true]}", "{per_chanel: true}");
    let message = refusal(&text);
    assert!(
        message.starts_with(
            "<dir>/recipe.yaml:13:24: passes[0].quantize_dynamic.per_chanel: unknown parameter \
             `per_chanel` of pass `quantize_dynamic`\n  hint: did you mean `per_channel`?"
        ),
        "{message}"
    );
}

#[test]
fn wrong_parameter_type_names_the_field_and_the_expected_type() {
    let text = replace("{per_channel: [false, true]}", "{per_channel: 3}");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:13:37: passes[0].quantize_dynamic.per_channel: expected a boolean \
         (`true` or `false`), found integer `3`"
    );

    let text = replace("{per_channel: [false, true]}", "{per_channel: [true, \"x\"]}");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:13:44: passes[0].quantize_dynamic.per_channel[1]: expected a boolean \
         (`true` or `false`), found string `x`"
    );
}

#[test]
fn wrong_type_in_a_typed_field() {
    let text = replace("runs: 100", "runs: many");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:9:31: metrics.latency.runs: expected an integer, found string `many`"
    );
}

#[test]
fn missing_required_field() {
    let text = replace("model: model.onnx\n", "");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:1:1: missing field `model`\n  hint: name the ONNX file to optimize, \
         relative to the recipe: `model: m.onnx`"
    );
    let text = replace("objective: [latency]\n", "");
    let message = refusal(&text);
    assert!(message.contains("missing field `objective`\n  hint: rank candidates"), "{message}");

    let text = replace("{path: test.npz, labels: y, samples: 500}", "{labels: y}");
    assert_eq!(refusal(&text), "<dir>/recipe.yaml:6:15: data.evaluation: missing field `path`");
}

#[test]
fn max_drop_takes_a_number_or_a_percentage() {
    let (_dir, result) = load(&replace("max_drop: 0.01", "max_drop: \"1%\""));
    let recipe = result.expect("a percentage is a valid max_drop");
    let max_drop = recipe.metrics.accuracy.and_then(|a| a.max_drop);
    assert_eq!(max_drop, Some(MaxDrop::Relative(0.01)));
    assert!((max_drop.map(|m| m.allowed(0.9)).unwrap_or_default() - 0.009).abs() < 1e-12);

    let (_dir, result) = load(&replace("max_drop: 0.01", "max_drop: 1.5%"));
    assert_eq!(
        result.expect("unquoted").metrics.accuracy.and_then(|a| a.max_drop),
        Some(MaxDrop::Relative(0.015))
    );

    let message = refusal(&replace("max_drop: 0.01", "max_drop: -0.01"));
    assert!(
        message.starts_with(
            "<dir>/recipe.yaml:8:52: metrics.accuracy.max_drop: expected a drop of 0 or more, \
             found -0.01"
        ),
        "{message}"
    );

    let message = refusal(&replace("max_drop: 0.01", "max_drop: lots"));
    assert!(
        message.contains("metrics.accuracy.max_drop: expected a number or a percentage"),
        "{message}"
    );

    let message = refusal(&replace("max_drop: 0.01", "max_drop: 5"));
    assert!(message.contains("larger than the whole accuracy range"), "{message}");
    assert!(message.contains("hint: write an absolute drop like `0.01`"), "{message}");
}

#[test]
fn goals_on_every_metric_load_with_their_values() {
    let text = replace("max_drop: 0.01}", "max_drop: 0.01, min: 0.9}")
        .replace("stat: p50}", "stat: p90, max: 2.5, min_improvement: \"20%\"}")
        .replace("  size: {}", "  size: {max_bytes: \"20MB\", min_improvement: 1000}");
    let (_dir, result) = load(&text);
    let recipe = result.expect("goals on every metric load");
    assert_eq!(recipe.metrics.accuracy.as_ref().and_then(|a| a.min), Some(0.9));
    let latency = recipe.metrics.latency.as_ref().expect("latency");
    assert_eq!(latency.max, Some(2.5));
    assert_eq!(latency.min_improvement, Some(Improvement::Relative(0.2)));
    let size = recipe.metrics.size.as_ref().expect("size");
    assert_eq!(size.max_bytes, Some(20_000_000));
    assert_eq!(size.min_improvement, Some(Improvement::Absolute(1000.0)));
    assert_eq!(
        recipe.goal_descriptions(),
        [
            "accuracy drop <= 0.01",
            "accuracy >= 0.9",
            "latency p90 <= 2.5 ms",
            "latency p90 at least 20% below the source's",
            "size <= 20000000 bytes",
            "size at least 1000 bytes below the source's",
        ]
    );

    let text = replace("stat: p50}", "stat: p50, min_improvement: 1.5}")
        .replace("  size: {}", "  size: {max_bytes: 4096, min_improvement: \"1.5 MiB\"}");
    let recipe = load(&text).1.expect("absolute improvements load");
    let latency = recipe.metrics.latency.as_ref().expect("latency");
    assert_eq!(latency.min_improvement, Some(Improvement::Absolute(1.5)));
    let size = recipe.metrics.size.as_ref().expect("size");
    assert_eq!(size.max_bytes, Some(4096));
    assert_eq!(size.min_improvement, Some(Improvement::Absolute(1_572_864.0)));

    let text = replace("  size: {}", "  size: {min_improvement: \"50%\"}");
    let recipe = load(&text).1.expect("a relative size improvement loads");
    let size = recipe.metrics.size.as_ref().expect("size");
    assert_eq!(size.min_improvement, Some(Improvement::Relative(0.5)));
}

#[test]
fn goals_that_make_no_sense_are_refused_where_they_are_written() {
    let latency = |goal: &str| refusal(&replace("stat: p50}", &format!("stat: p50, {goal}}}")));
    let size = |goal: &str| refusal(&replace("  size: {}", &format!("  size: {{{goal}}}")));

    assert_eq!(
        latency("min_improvement: \"1000%\""),
        "<dir>/recipe.yaml:9:64: metrics.latency.min_improvement: an improvement of 1000% makes \
         no sense: it must be at least 0% and below 100% (100% would be a latency of zero)\n  \
         hint: write milliseconds like `2`, or a share of the source's latency like `\"20%\"`"
    );
    let message = size("min_improvement: 100%");
    assert!(
        message.starts_with(
            "<dir>/recipe.yaml:10:27: metrics.size.min_improvement: an improvement of 100% \
             makes no sense"
        ),
        "{message}"
    );
    assert!(message.contains("would be a size of zero"), "{message}");
    assert!(latency("min_improvement: -2").contains(
        "metrics.latency.min_improvement: expected an improvement of 0 or more, found -2"
    ));
    assert!(latency("min_improvement: -5%").contains("an improvement of -5% makes no sense"));
    // A size with a unit is bytes, and no latency.
    assert!(latency("min_improvement: 2MB").contains(
        "metrics.latency.min_improvement: expected a number or a percentage, found \
                   string `2MB`"
    ));

    assert_eq!(
        latency("max: 0"),
        "<dir>/recipe.yaml:9:52: metrics.latency.max: a latency of at most 0 ms is not a goal \
         any model can meet\n  hint: write the highest latency allowed in milliseconds, more \
         than 0, like `5`"
    );
    assert!(latency("max: -1").contains("metrics.latency.max: a latency of at most -1 ms"));

    let message = size("max_bytes: 20 megabytes");
    assert!(
        message.starts_with(
            "<dir>/recipe.yaml:10:21: metrics.size.max_bytes: `20 megabytes` is not a size"
        ),
        "{message}"
    );
    assert!(message.contains("hint: write bytes like `20000000`, or a size like `\"20MB\"`"));
    assert!(size("max_bytes: -5").contains("expected a size above 0 bytes, found -5"));
    assert!(size("max_bytes: 0").contains("expected a size above 0 bytes, found 0"));
    assert!(size("max_bytes: \"1.5\"").contains("`1.5` is not a size: expected whole bytes"));
    assert!(size("max_bytes: 1.5").contains("expected a whole number of bytes, found 1.5"));

    let message = refusal(&replace("max_drop: 0.01}", "max_drop: 0.01, min: 95}"));
    assert_eq!(
        message,
        "<dir>/recipe.yaml:8:63: metrics.accuracy.min: an accuracy of 95 is outside the \
         accuracy range 0..1\n  hint: write the lowest accuracy as a fraction: `0.95` for 95%"
    );
}

#[test]
fn goals_and_objectives_on_metrics_that_are_not_measured_are_refused() {
    // A goal written under another metric is an unknown field that names the allowed goals.
    let message = refusal(&replace("stat: p50}", "stat: p50, max_drop: 0.1}"));
    assert!(message.starts_with("<dir>/recipe.yaml:9:47: metrics.latency.max_drop: unknown field"));
    assert!(message.contains("`max`, `min_improvement`"), "{message}");

    // A goal on a metric the recipe does not measure: `memory` is not a metric.
    let message = refusal(&replace("  size: {}", "  memory: {max_bytes: 100}"));
    assert!(message.contains("metrics.memory: unknown field `memory`"), "{message}");
    assert!(message.contains("allowed: `accuracy`, `latency`, `size`"), "{message}");

    // An accuracy goal cannot be measured without labels.
    let text = replace("labels: y, ", "");
    assert!(
        refusal(&text).contains("metrics.accuracy: top-1 accuracy needs labeled evaluation data")
    );

    // An objective with no metric behind it.
    let text = replace("  latency: {warmup: 10, runs: 100, stat: p50}\n", "")
        .replace("objective: [latency]", "objective: [size, latency]");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:10:19: objective[1]: `latency` ranks candidates but is not \
         measured\n  hint: add `latency` under `metrics` (e.g. `latency: {}`)"
    );
}

#[test]
fn paths_are_relative_to_the_recipe_file() {
    let (dir, result) = load(VALID);
    let recipe = result.expect("the valid recipe loads");
    assert_eq!(recipe.model_path(), dir.path().join("model.onnx"));
    assert_eq!(recipe.output_dir(), dir.path().join("out/"));
    assert_eq!(recipe.evaluation_path(), Some(dir.path().join("test.npz")));
    assert_eq!(recipe.calibration_path(), Some(dir.path().join("calib.npz")));
    assert_eq!(recipe.resolve(Path::new("/abs/x.npz")), PathBuf::from("/abs/x.npz"));

    let bare = recipe::parse(VALID, Path::new("recipe.yaml")).expect("parses");
    assert_eq!(bare.model_path(), PathBuf::from("./model.onnx"));
}

#[test]
fn defaults_fill_what_the_recipe_leaves_out() {
    let text = "name: x\nmodel: m.onnx\nmetrics: {latency: {}}\nobjective: [latency]\n\
                passes: [quantize_dynamic: {}]\n";
    let recipe = recipe::parse(text, Path::new("r.yaml")).expect("a minimal recipe loads");
    let latency = recipe.metrics.latency.expect("latency");
    assert_eq!((latency.warmup, latency.runs, latency.stat.to_string()), (10, 100, "p50".into()));
    assert_eq!(recipe.search.max_candidates, 64);
    assert_eq!(recipe.search.strategy.to_string(), "exhaustive");
    assert_eq!(recipe.output, PathBuf::from("out/"));
    assert_eq!(recipe.target.to_string(), "cpu");
}

#[test]
fn checks_after_parsing_name_their_field() {
    let text = replace("runs: 100", "runs: 0");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:9:31: metrics.latency.runs: expected 1 or more, found 0\n  \
         hint: set `metrics.latency.runs` to 1 or more"
    );

    let text =
        replace("passes:\n  - quantize_dynamic: {per_channel: [false, true]}\n", "passes: []\n");
    let message = refusal(&text);
    assert!(message.starts_with("<dir>/recipe.yaml:12:9: passes: no passes"), "{message}");

    let text = replace("labels: y, ", "");
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:8:13: metrics.accuracy: top-1 accuracy needs labeled evaluation data\n  \
         hint: set `data.evaluation.labels` to the name of the labels array in the .npz file, \
         or use `kind: fidelity` to compare with the source model's output"
    );

    let text = replace("objective: [latency]", "objective: [latency, latency]");
    assert!(refusal(&text).contains("objective[1]: `latency` is listed twice"));

    let text = replace("  size: {}\n", "").replace("objective: [latency]", "objective: [size]");
    let message = refusal(&text);
    assert!(
        message.contains("objective[0]: `size` ranks candidates but is not measured"),
        "{message}"
    );

    let text = replace("target: cpu", "target: gpu");
    assert!(refusal(&text).contains("target: unknown value `gpu`"));
}

#[test]
fn a_calibrated_pass_without_calibration_data_is_refused_where_it_is_named() {
    let passes = "  - one_of:\n      - quantize_dynamic: {}\n      - quantize_static: {}\n";
    let text = replace("  calibration: {path: calib.npz, samples: 128}\n", "")
        .replace("  - quantize_dynamic: {per_channel: [false, true]}\n", passes);
    assert_eq!(
        refusal(&text),
        "<dir>/recipe.yaml:14:9: passes[0].one_of[1].quantize_static: `quantize_static` \
         calibrates the model on data, and `data.calibration` is missing\n  hint: add \
         `data: {calibration: {path: calib.npz}}`: an .npz with one array per model input, a \
         few hundred samples like those the model will see"
    );

    // Passes that do not calibrate need no calibration data.
    let text = replace("  calibration: {path: calib.npz, samples: 128}\n", "");
    load(&text).1.expect("dynamic quantization alone needs no calibration data");
}

#[test]
fn pass_step_shape_errors() {
    let text = replace(
        "  - quantize_dynamic: {per_channel: [false, true]}\n",
        "  - quantize_dynamic: {}\n    per_channel: true\n",
    );
    let message = refusal(&text);
    assert!(
        message.starts_with(
            "<dir>/recipe.yaml:14:5: passes[0].per_channel: a pass step has exactly one key"
        ),
        "{message}"
    );

    let text = replace("{per_channel: [false, true]}", "{per_channel: []}");
    assert!(refusal(&text).contains("per_channel: an empty list gives this parameter no value"));

    let text = replace("  - quantize_dynamic: {per_channel: [false, true]}\n", "  - one_of: []\n");
    assert!(refusal(&text).contains("passes[0].one_of: `one_of` has no branches"));
}

#[test]
fn empty_file_and_missing_file() {
    // No position to give: the message starts with the file alone, not `recipe.yaml:0:0:`.
    let empty = refusal("# nothing\n");
    assert!(empty.starts_with("<dir>/recipe.yaml: the recipe is empty"), "{empty}");
    let error = recipe::load(Path::new("/nonexistent/recipe.yaml")).expect_err("no such file");
    assert!(
        error.to_string().starts_with("cannot read recipe /nonexistent/recipe.yaml: "),
        "{error}"
    );
}

#[test]
fn unknown_fusion_rule_lists_the_rules_and_suggests_the_closest() {
    let text =
        replace("- quantize_dynamic: {per_channel: [false, true]}", "- fuse: {rules: [conv_bnn]}");
    let message = refusal(&text);
    assert!(
        message
            .starts_with("<dir>/recipe.yaml:13:19: passes[0].fuse.rules: item 0: expected one of"),
        "{message}"
    );
    assert!(message.contains("`attention`") && message.contains("`dead_nodes`"), "{message}");
    assert!(message.ends_with("found string `conv_bnn` (did you mean `conv_bn`?)"), "{message}");

    // In a search over rule lists, the message names the list that is wrong.
    let text = replace(
        "- quantize_dynamic: {per_channel: [false, true]}",
        "- fuse: {rules: [[gelu], [gelu, atention]]}",
    );
    let message = refusal(&text);
    assert!(message.contains("passes[0].fuse.rules: value 1 to try: item 1:"), "{message}");
    assert!(message.contains("(did you mean `attention`?)"), "{message}");
}

#[test]
fn search_takes_a_strategy_a_seed_and_a_time_budget() {
    use std::time::Duration;
    let line = "search: {strategy: exhaustive, max_candidates: 64}";
    for (written, strategy, seed, seconds) in [
        ("search: {strategy: random, seed: 42, max_time: 10m}", "random", 42, Some(600.0)),
        ("search: {strategy: greedy, max_time: \"1h 30m\"}", "greedy", 0, Some(5400.0)),
        ("search: {strategy: tpe, max_time: 90}", "tpe", 0, Some(90.0)),
        ("search: {max_time: 2.5}", "exhaustive", 0, Some(2.5)),
        ("search: {}", "exhaustive", 0, None),
    ] {
        let (_dir, result) = load(&replace(line, written));
        let recipe = result.unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(recipe.search.strategy.to_string(), strategy, "{written}");
        assert_eq!(recipe.search.seed, seed, "{written}");
        let max_time = recipe.search.max_time.map(|t| t.0);
        assert_eq!(max_time, seconds.map(Duration::from_secs_f64), "{written}");
    }

    for (written, expected) in [
        ("search: {max_time: soon}", "search.max_time: `soon` is not a duration"),
        ("search: {max_time: 0}", "search.max_time: expected a time from 1ms to 30 days, found 0"),
        (
            "search: {max_time: -5}",
            "search.max_time: expected a time from 1ms to 30 days, found -5",
        ),
        (
            "search: {max_time: 0s}",
            "search.max_time: expected a time from 1ms to 30 days, found 0s",
        ),
        ("search: {strategy: bayes}", "search.strategy: unknown"),
    ] {
        let message = refusal(&replace(line, written));
        assert!(message.starts_with("<dir>/recipe.yaml:14:"), "{written}: {message}");
        assert!(message.contains(expected), "{written}: {message}");
    }
    let message = refusal(&replace(line, "search: {max_time: soon}"));
    assert!(message.contains("hint: write a duration like `\"90s\"`"), "{message}");
}

/// `- fuse` reads as a string where a pass step is a mapping: the message says how to give
/// the pass its defaults, at the step's line. `- one_of` and `-` get their own hints.
#[test]
fn pass_step_without_parameters_says_how_to_write_it() {
    let step = "  - quantize_dynamic: {per_channel: [false, true]}\n";
    let message = refusal(&replace(step, "  - fuse\n"));
    assert!(message.starts_with("<dir>/recipe.yaml:13:5: passes[0]:"), "{message}");
    assert!(message.contains("`fuse` is a pass step without its parameters"), "{message}");
    assert!(message.contains("write `- fuse: {}` for its defaults"), "{message}");

    let message = refusal(&replace(step, "  - one_of\n"));
    assert!(message.contains("`one_of` without its branches"), "{message}");
    assert!(message.contains("write `- one_of: [...]`"), "{message}");

    let message = refusal(&replace(step, "  -\n"));
    assert!(message.contains("empty pass step"), "{message}");

    let message = refusal(&replace(step, "  - fusee\n"));
    assert!(message.contains("unknown pass `fusee`") && message.contains("`fuse`"), "{message}");
}

/// A negative count reads as a whole number, not Rust's `expected usize`.
#[test]
fn a_negative_count_says_a_whole_number() {
    let text = replace("max_candidates: 64", "max_candidates: -1");
    let message = refusal(&text);
    assert!(message.contains("search.max_candidates: expected a whole number, found integer `-1`"));
    assert!(message.contains("found integer `-1`") && !message.contains("usize"), "{message}");
}
