"""Compares quantized forms of one model with its float source side by side: file size (with
external data), latency in ONNX Runtime (one process, the same session options, models
alternated run by run, medians) and fidelity to the source's outputs (cosine similarity per
row, max absolute error over max |source|), plus the wall time of the command that made each.

Run by bench/weights-minilm.sh, which makes the models and the inputs; it takes `--source`,
`--model NAME=PATH=MILLISECONDS` (repeated), `--inputs` (an .npz named after the model inputs).
"""

import argparse
import collections
import os
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort


def stored_size(path):
    """The model file and every external data file it names, in bytes."""
    model = onnx.load(path, load_external_data=False)
    total = os.path.getsize(path)
    folder = os.path.dirname(path)
    seen = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                total += os.path.getsize(os.path.join(folder, entry.value))
    return total


def ops(path):
    model = onnx.load(path, load_external_data=False)
    counts = collections.Counter(node.op_type for node in model.graph.node)
    keys = ["MatMulNBits", "MatMulInteger", "DequantizeLinear", "MatMul"]
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts[k])


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(row):
        cells = enumerate(zip(row, widths))
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in cells)

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def cosine_rows(a, b):
    """Cosine similarity of each row of the last axis, flattened over the others."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-30)


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

    for _ in range(args.warmup):
        for s in sessions.values():
            s.run(None, feeds)
    times = {name: [] for name in names}
    for _ in range(args.runs):
        for name in names:
            start = time.perf_counter()
            sessions[name].run(None, feeds)
            times[name].append((time.perf_counter() - start) * 1000)
    medians = {name: statistics.median(t) for name, t in times.items()}

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
