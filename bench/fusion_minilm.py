"""Compares three forms of one model side by side: the source, `pipeline`'s fused model and
the model of ONNX Runtime's transformer optimizer. Prints the operator histograms, the
counts of fused operators, the latency of each in ONNX Runtime (one process, the same
session options, models alternated run by run, medians) and how far each output of the
fused models is from the source's.

Run by bench/fusion-minilm.sh, which makes the models and the inputs; it takes
`--source`, `--ours`, `--ort`, `--inputs` (an .npz named after the model inputs).
"""

import argparse
import collections

import numpy as np
import onnx

from benchlib import LEVELS, alternated_medians, print_table, session

# The operators a fusion writes: ONNX Runtime's contrib operators, and the standard ones
# that replace chains (LayerNormalization since opset 17, Gelu since opset 20).
FUSED = [
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "Gelu",
    "BiasGelu",
    "FastGelu",
    "FusedMatMul",
    "Gemm",
]

def histogram(path):
    model = onnx.load(path, load_external_data=False)
    counts = collections.Counter()
    for node in model.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain + ":"
        counts[domain + node.op_type] += 1
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--ours", required=True)
    parser.add_argument("--ort", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    models = {"source": args.source, "ours": args.ours, "ort": args.ort}
    names = list(models)

    print("== operators (main graph)")
    counts = {name: histogram(path) for name, path in models.items()}
    ops = sorted(set().union(*counts.values()))
    rows = [[op] + [counts[n].get(op, 0) for n in names] for op in ops]
    rows.append(["total"] + [sum(counts[n].values()) for n in names])
    print_table(["op"] + names, rows)

    print("\n== fused operators")
    rows = []
    for op in FUSED:
        keys = [op, "com.microsoft:" + op]
        found = [sum(counts[n].get(k, 0) for k in keys) for n in names]
        if any(found):
            rows.append([op] + found)
    print_table(["op"] + names, rows or [["(none)"] + [0] * len(names)])

    data = np.load(args.inputs)
    feeds = {key: data[key] for key in data.files}
    shape = "x".join(str(d) for d in next(iter(feeds.values())).shape)
    print(f"\n== outputs on {shape} inputs, against the source (optimization level basic)")
    sessions = {name: session(path, args.threads, "basic") for name, path in models.items()}
    expected = dict(zip([o.name for o in sessions["source"].get_outputs()],
                        sessions["source"].run(None, feeds)))
    rows = []
    for name in names[1:]:
        got = dict(zip([o.name for o in sessions[name].get_outputs()],
                       sessions[name].run(None, feeds)))
        for output, reference in expected.items():
            if output not in got:
                rows.append([name, output, "missing", "", ""])
                continue
            value = got[output]
            if value.shape != reference.shape:
                rows.append([name, output, f"shape {value.shape}", "", ""])
                continue
            diff = np.abs(value.astype(np.float64) - reference.astype(np.float64))
            scale = max(float(np.abs(reference).max()), 1e-6)
            rows.append([name, output, reference.dtype, f"{diff.max():.3e}",
                         f"{diff.max() / scale:.3e}"])
    print_table(["model", "output", "type", "max |diff|", "of max |source|"], rows)

    print(f"\n== latency, ms per run ({args.runs} runs after {args.warmup} warm-up, "
          f"models alternated, intra_op_num_threads={args.threads})")
    rows = []
    for level in LEVELS:
        sessions = {name: session(path, args.threads, level) for name, path in models.items()}
        medians = alternated_medians(sessions, feeds, args.runs, args.warmup)
        row = [f"median, ORT level {level}"]
        for name in names:
            ratio = medians["source"] / medians[name]
            row.append(f"{medians[name]:.2f} ({ratio:.2f}x)")
        rows.append(row)
    print_table(["", *names], rows)
    print("(x: speed-up over the source at the same level)")


if __name__ == "__main__":
    main()
