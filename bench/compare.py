"""Runs one quantization three ways and compares them: `pipeline run` on a one-pass recipe,
ONNX Runtime's `onnxruntime.quantization` calls (bench/compare_ort.py, the reference), and
`olive run` on an Olive config with the same settings. For each model and method it prints the
wall time of the whole command and of the quantization step alone, the command's peak memory
(max RSS), the resulting model's size, its latency (p50: one process, the same session
options for every model, models alternated run by run) and its accuracy (top-1 on labels) or
fidelity (mean cosine similarity of an output to the float model's), each with its ratio to
the reference's figure.

Run by bench/compare.sh, which installs the tools, builds `pipeline` and makes the data; it
takes `--pipeline`, `--olive` (the `olive` command), `--work`, `--models` (comma-separated
names from MODELS), `--repeats`, `--threads` and `--runs`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchlib import alternated_medians, cosine_rows, print_table, session, stored_size

# Each model: its file, calibration rows (every array an input), the evaluation data and how
# it is judged, the rows of the evaluation inputs one latency run takes (None: all), latency
# runs (RUNS overrides), and the methods it is quantized with. The digits CNN has no MatMul
# (its layers are Conv and Gemm), so weight-only INT4 leaves it unchanged in all three tools.
MODELS = {
    "digits": {
        "source": "examples/digits/model.onnx",
        "calibration": "examples/digits/calib.npz",
        "evaluation": "examples/digits/test.npz",
        "metric": {"kind": "top1", "output": "logits", "labels": "y"},
        "latency_rows": 64,
        "runs": 300,
        "methods": ["dynamic", "static"],
    },
    # Made by examples/ocr-direction/prepare.sh. PaddlePaddle's export keeps its weights in
    # Constant nodes; no INT4: its one MatMul is the classifier's last layer.
    "ocr": {
        "source": "examples/ocr-direction/model.onnx",
        "calibration": "examples/ocr-direction/calib.npz",
        "evaluation": "examples/ocr-direction/test.npz",
        "metric": {"kind": "top1", "output": "save_infer_model/scale_0.tmp_1", "labels": "y"},
        "latency_rows": 1,
        "runs": 100,
        "methods": ["dynamic", "static"],
    },
    "minilm": {
        "source": ".cache/models/minilm/paraphrase-MiniLM-L3-v2.onnx",
        "calibration": "{work}/minilm-calibration.npz",
        "evaluation": "{work}/minilm-inputs.npz",
        "metric": {"kind": "cosine", "output": "461"},
        "latency_rows": None,
        "runs": 20,
        "methods": ["dynamic", "static", "int4"],
    },
}

# The same settings, spelled for each tool (see also bench/compare_ort.py).
PIPELINE_PASSES = {
    "dynamic": "quantize_dynamic: {per_channel: false}",
    "static": "quantize_static: {calibration: minmax, per_channel: false, format: qdq}",
    "int4": "quantize_weights: {bits: 4, block_size: 32, symmetric: true}",
}

TOOLS = ["ORT", "pipeline", "Olive"]


def run_measured(command, log, env=None):
    """Runs a command with its output in `log`; returns its exit code, wall seconds and peak
    resident memory in MiB, as GNU time reports it. (A child's own max RSS from `wait4` is no
    good here: Linux counts in it the memory of the process it was forked from, this one.)"""
    peak = Path(f"{log}.rss")
    with open(log, "w") as out:
        start = time.perf_counter()
        code = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", str(peak), *command],
                               stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.perf_counter() - start
    # GNU time writes "Command exited with non-zero status N" before the figure on failure.
    kib = int(peak.read_text().split()[-1])
    return code, wall, kib / 1024


def fresh(folder):
    """An empty folder (whatever an earlier run left there is removed)."""
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    return folder


def run_pipeline(pipeline, spec, method, folder):
    source = Path(spec["source"]).resolve()
    labels = spec["metric"].get("labels")
    labels = f", labels: {labels}" if labels else ""
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        f"name: compare-{method}\n"
        f"model: {source}\n"
        "data:\n"
        f"  evaluation: {{path: {Path(spec['evaluation']).resolve()}{labels}}}\n"
        f"  calibration: {{path: {Path(spec['calibration']).resolve()}}}\n"
        "metrics:\n"
        "  size: {}\n"
        "objective: [size]\n"
        "passes:\n"
        f"  - {PIPELINE_PASSES[method]}\n"
        "output: out/\n"
    )

    # --no-measure: build and save the candidate, measure nothing, as the other two tools do.
    command = [pipeline, "run", "--no-measure", "--no-cache", str(recipe)]
    code, wall, rss = run_measured(command, folder / "log.txt")

    model = folder / "out" / "candidates" / "c1" / source.name
    report = folder / "out" / "report.json"
    candidate = json.loads(report.read_text())["candidates"][0] if report.is_file() else {}
    if candidate.get("status") == "unchanged":
        # The reason goes on to name each node it could not quantize: its start is enough.
        reason = ": ".join(candidate["reasons"][0].split(": ")[:2])
        return {"error": f"unchanged ({reason}; see {folder / 'log.txt'})"}
    if code != 0 or not model.is_file():
        return {"error": f"exit {code}, see {folder / 'log.txt'}"}
    quantize_s = candidate["build_s"]
    return {"model": str(model), "wall_s": wall, "quantize_s": quantize_s, "rss_mib": rss}


def run_ort(spec, method, folder):
    model = folder / "model.onnx"
    timing = folder / "timing.json"
    command = [
        sys.executable,
        str(Path(__file__).with_name("compare_ort.py")),
        "--method", method,
        "--source", spec["source"],
        "--output", str(model),
        "--calibration", spec["calibration"],
        "--timing", str(timing),
    ]
    code, wall, rss = run_measured(command, folder / "log.txt")

    if code != 0 or not model.is_file() or not timing.is_file():
        return {"error": f"exit {code}, see {folder / 'log.txt'}"}
    quantize_s = json.loads(timing.read_text())["quantize_s"]
    return {"model": str(model), "wall_s": wall, "quantize_s": quantize_s, "rss_mib": rss}


def olive_pass(spec, method):
    """The Olive pass with the settings of PIPELINE_PASSES. Olive's ONNX quantization passes
    run ORT's pre-processing (shape inference and graph optimization) first by default, and
    its static pass asks ORT for a "full integer" QDQ configuration (more operators quantized,
    Clip folded); both are turned off, so every tool does the same work on the same graph."""
    if method == "dynamic":
        return {"type": "OnnxDynamicQuantization", "precision": "int8", "per_channel": False,
                "quant_preprocess": False}
    if method == "static":
        return {"type": "OnnxStaticQuantization", "data_config": "calibration",
                "quant_format": "QDQ", "precision": "int8", "activation_type": "int8",
                "calibrate_method": "MinMax", "per_channel": False, "quant_preprocess": False,
                "prepare_qdq_config": False}

    # Olive's RTN pass also quantizes Gathers on constant tables (embeddings), which the
    # other two leave in float by default: those nodes are excluded by name.
    import onnx

    graph = onnx.load(spec["source"], load_external_data=False).graph
    tables = {t.name for t in graph.initializer}
    gathers = [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in tables]
    return {"type": "OnnxBlockWiseRtnQuantization", "bits": 4, "block_size": 32,
            "is_symmetric": True, "nodes_to_exclude": gathers}


def run_olive(olive, spec, method, folder):
    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(Path(spec["source"]).resolve())},
        "systems": {
            "local": {
                "type": "LocalSystem",
                "accelerators": [
                    {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
                ],
            }
        },
        "passes": {"quantize": olive_pass(spec, method)},
        "host": "local",
        "target": "local",
        "evaluate_input_model": False,
        "cache_dir": str(folder / "cache"),
        "output_dir": str(folder / "out"),
        "log_severity_level": 1,
    }
    if method == "static":
        config["data_configs"] = [{
            "name": "calibration",
            "user_script": str(Path(__file__).with_name("olive_npz.py").resolve()),
            "load_dataset_config": {
                "type": "npz_rows",
                "params": {"path": str(Path(spec["calibration"]).resolve())},
            },
            "dataloader_config": {"params": {"batch_size": 1}},
        }]
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    # Offline and quiet: no telemetry, no model hub.
    env = dict(os.environ, OLIVE_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    log = folder / "log.txt"
    code, wall, rss = run_measured([olive, "run", "--config", str(folder / "config.json")],
                                   log, env)

    models = sorted((folder / "out").rglob("*.onnx"))
    if code != 0 or len(models) != 1:
        return {"error": f"exit {code}, {len(models)} models written, see {log}"}
    quantize_s = None
    for line in log.read_text(errors="replace").splitlines():
        # The engine logs "Pass quantize:<type> finished in <seconds> seconds".
        if "Pass quantize:" in line and " finished in " in line:
            quantize_s = float(line.split(" finished in ")[1].split()[0])
    if quantize_s is None:
        return {"error": f"no pass time in {log}"}
    return {"model": str(models[0]), "wall_s": wall, "quantize_s": quantize_s, "rss_mib": rss}


def build_all(args, name, spec, method):
    """Each tool `repeats` times, in turn; medians of the times and of the peak memory."""
    runs = {tool: [] for tool in TOOLS}
    for repeat in range(args.repeats):
        for tool in TOOLS:
            folder = fresh(args.work / name / method / tool / str(repeat))
            print(f"{name} {method}: {tool} (run {repeat + 1} of {args.repeats}) ...",
                  file=sys.stderr, flush=True)
            if tool == "ORT":
                result = run_ort(spec, method, folder)
            elif tool == "pipeline":
                result = run_pipeline(args.pipeline, spec, method, folder)
            else:
                result = run_olive(args.olive, spec, method, folder)
            if "error" in result:
                print(f"  {tool} failed: {result['error']}", file=sys.stderr)
            runs[tool].append(result)

    built = {}
    for tool, results in runs.items():
        ok = [r for r in results if "error" not in r]
        if len(ok) < len(results):
            built[tool] = {"error": next(r["error"] for r in results if "error" in r)}
            continue
        built[tool] = {"model": ok[-1]["model"]}
        for key in ("wall_s", "quantize_s", "rss_mib"):
            built[tool][key] = statistics.median(r[key] for r in ok)
    return built


def score(spec, got, data, expected):
    """Top-1 accuracy of the metric's output `got` on the labels, or its mean cosine
    similarity to the source's (`expected`)."""
    metric = spec["metric"]
    if metric["kind"] == "top1":
        return float((got.argmax(axis=-1) == data[metric["labels"]]).mean())
    return float(cosine_rows(got, expected).mean())


def measure(args, spec, built):
    """Size, p50 latency and score of the source and each tool's model, all in this process."""
    paths = {"source": spec["source"]}
    paths.update({tool: b["model"] for tool, b in built.items() if "model" in b})
    sessions = {name: session(path, args.threads) for name, path in paths.items()}

    data = np.load(spec["evaluation"])
    names = [i.name for i in sessions["source"].get_inputs()]
    rows = spec["latency_rows"]
    feeds = {n: data[n] if rows is None else data[n][:rows] for n in names}
    medians = alternated_medians(sessions, feeds, args.runs or spec["runs"], warmup=5)

    output = spec["metric"]["output"]
    got = {name: s.run([output], {n: data[n] for n in names})[0] for name, s in sessions.items()}
    figures = {}
    for name, path in paths.items():
        figures[name] = {
            "size_bytes": stored_size(path),
            "p50_ms": medians[name],
            "score": score(spec, got[name], data, got["source"]),
        }
        # How far this model's output is from that of ORT's model: 0 when both compute the
        # same thing, as they should with the same settings.
        if "ORT" in got and name != "source":
            scale = max(float(np.abs(got["ORT"]).max()), 1e-30)
            figures[name]["diff_vs_ort"] = float(np.abs(got[name] - got["ORT"]).max()) / scale
    return figures


def cell(value, reference, digits):
    """`value` with `digits` decimals (significant digits when `digits` is a format such as
    "3g"), and its ratio to `reference` when there is one."""
    if value is None:
        return "-"
    text = f"{value:.{digits}}" if isinstance(digits, str) else f"{value:.{digits}f}"
    if reference:
        text += f" ({value / reference:.2f}x)"
    return text


def table_rows(results):
    """One row per method and tool, figures with their ratio to ORT's, then the source."""
    rows = []
    for method, entry in results["methods"].items():
        figures = entry["figures"]
        ref = {**entry["built"].get("ORT", {}), **figures.get("ORT", {})}
        for tool in TOOLS:
            b = entry["built"].get(tool, {})
            if "error" in b:
                rows.append([method, tool, f"failed: {b['error']}", "", "", "", "", "", ""])
                continue
            f = figures[tool]
            rows.append([
                method,
                tool,
                cell(b["wall_s"], ref.get("wall_s"), 2),
                cell(b["quantize_s"], ref.get("quantize_s"), "3g"),
                cell(b["rss_mib"], ref.get("rss_mib"), 0),
                cell(f["size_bytes"] / 1024, ref.get("size_bytes", 0) / 1024, 1),
                cell(f["p50_ms"], ref.get("p50_ms"), 3),
                cell(f["score"], ref.get("score"), 4),
                "-" if "diff_vs_ort" not in f else f"{f['diff_vs_ort']:.1e}",
            ])
    source = results["source"]
    rows.append(["float", "source", "", "", "", f"{source['size_bytes'] / 1024:.1f}",
                 f"{source['p50_ms']:.3f}", f"{source['score']:.4f}", ""])
    return rows


def header(spec):
    metric = spec["metric"]
    score = f"top-1 ({metric['output']})" if metric["kind"] == "top1" else \
        f"cosine ({metric['output']})"
    return ["method", "tool", "command s", "quantize s", "peak MiB", "size KiB", "p50 ms", score,
            "diff vs ORT"]


def markdown(name, spec, rows):
    lines = [f"**{name}** (`{spec['source']}`)", ""]
    head = header(spec)
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--olive", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--models", default="digits,minilm")
    parser.add_argument("--methods", default="dynamic,static,int4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=0)
    args = parser.parse_args()

    everything = {}
    pages = []
    for name in args.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"error: unknown model {name!r}; hint: one of {', '.join(MODELS)}")
        spec = {k: v.format(work=args.work) if isinstance(v, str) else v
                for k, v in MODELS[name].items()}

        results = {"methods": {}}
        methods = [m for m in spec["methods"] if m in args.methods.split(",")]
        for method in methods:
            built = build_all(args, name, spec, method)
            figures = measure(args, spec, built)
            results["source"] = figures.pop("source")
            results["methods"][method] = {"built": built, "figures": figures}
        everything[name] = results

        rows = table_rows(results)
        print(f"\n== {name} ({spec['source']}): medians of {args.repeats} commands; "
              f"p50 over {args.runs or spec['runs']} alternated runs, "
              f"intra_op_num_threads={args.threads}; (x): against ORT's tool")
        print_table(header(spec), rows)
        pages.append(markdown(name, spec, rows))

    (args.work / "results.json").write_text(json.dumps(everything, indent=2))
    (args.work / "results.md").write_text("\n".join(pages))
    print(f"\n(written: {args.work / 'results.json'}, {args.work / 'results.md'})")


if __name__ == "__main__":
    main()
