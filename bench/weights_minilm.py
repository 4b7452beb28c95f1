"""Compares quantized forms of one model with its float source side by side: file size (with
external data), latency in ONNX Runtime (one process, the same session options, models
alternated run by run, medians) and fidelity to the source's outputs (cosine similarity per
row, max absolute error over max |source|), plus the wall time of the command that made each.

Run by bench/weights-minilm.sh, which makes the models and the inputs; it takes `--source`,
`--model NAME=PATH=MILLISECONDS` (repeated), `--inputs` (an .npz named after the model inputs).
"""

import argparse
import collections

import numpy as np
import onnx

from benchlib import alternated_medians, cosine_rows, print_table, session, stored_size


def ops(path):
    model = onnx.load(path, load_external_data=False)
    counts = collections.Counter(node.op_type for node in model.graph.node)
    keys = ["MatMulNBits", "MatMulInteger", "DequantizeLinear", "MatMul"]
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts[k])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    models = {"source": (args.source, None)}
    for entry in args.model:
        name, path, ms = entry.split("=")
        models[name] = (path, int(ms))
    names = list(models)

    data = np.load(args.inputs)
    feeds = {key: data[key] for key in data.files}
    sessions = {name: session(path, args.threads) for name, (path, _) in models.items()}
    # Only float outputs are compared: MiniLM also passes its integer inputs through.
    outputs = [o.name for o in sessions["source"].get_outputs() if o.type == "tensor(float)"]
    expected = dict(zip(outputs, sessions["source"].run(outputs, feeds)))

    medians = alternated_medians(sessions, feeds, args.runs, args.warmup)

    source_size = stored_size(args.source)
    rows = []
    for name in names:
        path, ms = models[name]
        size = stored_size(path)
        got = dict(zip(outputs, sessions[name].run(outputs, feeds)))
        fidelity = []
        for output in outputs:
            reference = expected[output]
            cosine = cosine_rows(got[output], reference)
            scale = max(float(np.abs(reference).max()), 1e-30)
            error = float(np.abs(got[output] - reference).max()) / scale
            fidelity.append(f"{cosine.mean():.5f} / {cosine.min():.5f} / {error:.1e}")
        rows.append([
            name,
            f"{size / 1e6:.2f} MB ({source_size / size:.2f}x)",
            f"{medians[name]:.2f} ({medians['source'] / medians[name]:.2f}x)",
            *fidelity,
            "" if ms is None else f"{ms / 1000:.2f}",
            ops(path),
        ])
    shape = "x".join(str(d) for d in next(iter(feeds.values())).shape)
    print(f"== on {shape} inputs, {args.runs} runs after {args.warmup} warm-up, models "
          f"alternated, intra_op_num_threads={args.threads}")
    header = ["model", "size (smaller)", "p50 ms (faster)"]
    header += [f"{o}: cos mean / min / max err" for o in outputs]
    header += ["made in s", "operators"]
    print_table(header, rows)
    print("(size and speed ratios are against the source; cosine similarity per row of the "
          "output's last axis; max err: max |diff| over max |source|)")


if __name__ == "__main__":
    main()
