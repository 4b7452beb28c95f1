"""Pieces the bench scripts share: a model's stored size, CPU sessions with one thread setting,
latency of several models measured alternately in one process (medians), cosine similarity of
outputs, the MiniLM token inputs, and plain-text tables.

Imported by the Python scripts beside it (a script's own folder is on its import path).
"""

import os
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


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


def print_table(header, rows):
    """Prints rows under a header, the first column left-aligned and the others right."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(row):
        cells = enumerate(zip(row, widths))
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in cells)

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def session(path, threads, level="all"):
    """A CPU session with `threads` intra-op threads, one inter-op thread."""
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def alternated_medians(sessions, feeds, runs, warmup):
    """Median milliseconds of one run of each session on `feeds`: after `warmup` runs of each,
    the sessions take turns run by run, so a slow spell of the machine hits them all alike."""
    for _ in range(warmup):
        for s in sessions.values():
            s.run(None, feeds)

    times = {name: [] for name in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds)
            times[name].append((time.perf_counter() - start) * 1000)

    return {name: statistics.median(t) for name, t in times.items()}


def cosine_rows(a, b):
    """Cosine similarity of each row of the last axis, flattened over the others."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-30)


def minilm_tokens(batch, sequence, seed):
    """Token ids within MiniLM's vocabulary ([CLS] first, [SEP] last) and an attention mask
    with padding on every row but the first, as `{input_ids, attention_mask}` int64 arrays."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30522, size=(batch, sequence), dtype=np.int64)
    ids[:, 0] = 101
    mask = np.ones((batch, sequence), dtype=np.int64)
    for row in range(1, batch):
        end = sequence - row * sequence // (2 * batch)
        mask[row, end:] = 0
        ids[row, end:] = 0
        ids[row, end - 1] = 102
    ids[0, -1] = 102
    return {"input_ids": ids, "attention_mask": mask}
