//! `pipeline run` with `metrics.accuracy.kind: fidelity` on the digits example: candidates are
//! judged by how closely their logits follow the float model's, with no labels, and the
//! figures in report.json equal NumPy's on ONNX Runtime Python's outputs of the written model.

mod common;

use common::{outcome, venv_python, Project};
use serde_json::Value;

const FIDELITY_RECIPE: &str = "\
name: digits-fidelity
model: model.onnx
target: cpu
data:
  calibration: {path: calib.npz}
  evaluation: {path: test.npz, labels: y}
metrics:
  accuracy: {kind: fidelity, output: logits, SCORE min: 0.99}
  latency: {warmup: 2, runs: 5, stat: p50}
objective: [accuracy]
passes:
  - one_of:
      - quantize_dynamic: {per_channel: false}
      - quantize_static: {calibration: minmax, per_channel: false}
output: out/
";

fn read_report(project: &Project) -> Value {
    let text = std::fs::read_to_string(project.path("out/report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// NumPy's mean cosine similarity and top-1 agreement of `candidate`'s logits to `source`'s
/// on the evaluation data, printed one per line. The models run in batches of 64 as the
/// engine's do: dynamic quantization's activation scales depend on the batch.
const NUMPY_FIDELITY: &str = r#"
import sys
import numpy as np
import onnxruntime as ort
source, candidate, data = sys.argv[1:4]
x = np.load(data)["input"]
def run(path):
    session = ort.InferenceSession(path)
    parts = [session.run(["logits"], {"input": x[i:i + 64]})[0] for i in range(0, len(x), 64)]
    return np.concatenate(parts).astype(np.float64)
a, b = run(candidate), run(source)
cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
print(repr(float(cos.mean())))
print(repr(float((a.argmax(1) == b.argmax(1)).mean())))
"#;

#[test]
fn fidelity_ranks_candidates_without_labels_and_matches_numpy() {
    let project = Project::digits();
    project.write_recipe(&FIDELITY_RECIPE.replace("SCORE ", ""));

    let result = outcome(&mut project.run());
    result.expect_code(0).no_panic();
    assert!(result.stdout.contains("cosine"), "the table names the figure:\n{}", result.stdout);

    let report = read_report(&project);
    assert_eq!(report["accuracy_figure"], "cosine", "{report:#}");
    let source = &report["source"];
    assert!((source["accuracy"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{source:#}");
    let best = report["best"].as_str().expect("a winner");
    let candidates = report["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2);
    for candidate in candidates {
        let m = &candidate["measurement"];
        let figures = &m["fidelity"];
        let cosine = figures["cosine_mean"].as_f64().expect("a mean cosine");
        assert_eq!(m["accuracy"].as_f64(), Some(cosine), "the score is the mean cosine");
        assert!(cosine > 0.99 && cosine < 1.0, "INT8 moves the logits a little: {figures:#}");
        assert!(figures["max_abs_error"].as_f64().unwrap() > 0.0, "{figures:#}");
        assert!(figures["cosine_min"].as_f64().unwrap() <= cosine, "{figures:#}");
    }

    // The written model is the winner: its figures, computed by NumPy, are the report's.
    let printed = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(NUMPY_FIDELITY)
        .arg(project.path("model.onnx"))
        .arg(project.path("out/model.onnx"))
        .arg(project.path("test.npz"))
        .output()
        .expect("python runs");
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let numbers: Vec<f64> = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .map(|line| line.parse().expect("a number"))
        .collect();
    let winner = candidates.iter().find(|c| c["id"] == best).expect("the winner is listed");
    let figures = &winner["measurement"]["fidelity"];
    let cosine = figures["cosine_mean"].as_f64().unwrap();
    assert!((cosine - numbers[0]).abs() < 1e-6, "ours {cosine}, NumPy's {}", numbers[0]);
    assert_eq!(figures["top1_agreement"].as_f64(), Some(numbers[1]));

    let markdown = std::fs::read_to_string(project.path("out/report.md")).expect("report.md");
    assert!(markdown.contains("| id | candidate | cosine |"), "{markdown}");

    // A second run reads every model's figures from the cache, all of them as measured.
    outcome(&mut project.run()).expect_code(0).no_panic();
    let again = read_report(&project);
    let figures = |report: &Value, id: &str| -> Value {
        let candidates = report["candidates"].as_array().expect("candidates");
        let candidate = candidates.iter().find(|c| c["id"] == id).expect("the candidate");
        assert_eq!(candidate["accuracy_cached"], true, "{candidate:#}");
        candidate["measurement"]["fidelity"].clone()
    };
    for candidate in candidates {
        let id = candidate["id"].as_str().expect("an id");
        assert_eq!(figures(&again, id), candidate["measurement"]["fidelity"], "{id}");
    }

    // Another score is another key: measured again, not read back.
    project.write_recipe(&FIDELITY_RECIPE.replace("SCORE ", "score: top1_agreement, "));
    outcome(&mut project.run()).expect_code(0).no_panic();
    let other = read_report(&project);
    for candidate in other["candidates"].as_array().expect("candidates") {
        assert_eq!(candidate["accuracy_cached"], false, "{candidate:#}");
    }
}

#[test]
fn top1_agreement_can_be_the_score() {
    let project = Project::digits();
    project.write_recipe(&FIDELITY_RECIPE.replace("SCORE ", "score: top1_agreement, "));

    outcome(&mut project.run()).expect_code(0).no_panic();

    let report = read_report(&project);
    assert_eq!(report["accuracy_figure"], "top1_agreement", "{report:#}");
    for candidate in report["candidates"].as_array().expect("candidates") {
        let m = &candidate["measurement"];
        assert_eq!(m["accuracy"], m["fidelity"]["top1_agreement"], "{m:#}");
    }
}

#[test]
fn a_score_with_top1_and_top1_without_labels_are_refused_before_running() {
    let project = Project::digits();
    project.write_recipe(
        &FIDELITY_RECIPE
            .replace("kind: fidelity", "kind: top1")
            .replace("SCORE ", "score: cosine, "),
    );
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .stderr_has(&["metrics.accuracy.score", "set `kind: fidelity`"]);

    project.write_recipe(
        &FIDELITY_RECIPE
            .replace("kind: fidelity", "kind: top1")
            .replace("SCORE ", "")
            .replace(", labels: y", ""),
    );
    outcome(project.pipeline().arg("validate").arg(project.recipe()))
        .expect_code(2)
        .stderr_has(&["top-1 accuracy needs labeled evaluation data", "kind: fidelity"]);
    assert!(!project.path("out").exists());
}
