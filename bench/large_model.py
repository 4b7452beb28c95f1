"""Peak memory of `pipeline run` against the size of a model over 2 GB.

Two commands, run by bench/large-model.sh:

  generate FOLDER --size-gb 3 --hidden 8192
      writes FOLDER/model.onnx (a stack of MatMul + Relu layers, float32 weights of
      hidden x hidden in FOLDER/model.onnx.data) and FOLDER/inputs.npz. Each weight is drawn,
      appended to the data file and dropped, so no more than one layer is ever in memory.

  measure --model FOLDER/model.onnx -- PIPELINE ARGS...
      runs the command, samples its resident memory (VmRSS) every 20 ms, timestamps each line
      it logs, and prints its peak RSS (from getrusage) against the model's stored size, plus
      the peak within each phase of the run (loading and measuring the source, building the
      candidate, saving and measuring it).
"""

import argparse
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

ALIGNMENT = 4096


def generate(folder, size_gb, hidden):
    """Writes the model, its data file and the evaluation inputs."""
    layer_bytes = hidden * hidden * 4
    layers = max(1, round(size_gb * 1e9 / layer_bytes))
    os.makedirs(folder, exist_ok=True)
    data_name = "model.onnx.data"
    rng = np.random.default_rng(0)

    initializers = []
    nodes = []
    offset = 0
    with open(os.path.join(folder, data_name), "wb") as data:
        for layer in range(layers):
            weight = rng.standard_normal((hidden, hidden), dtype=np.float32)
            weight *= np.float32(1.0 / np.sqrt(hidden))
            data.write(b"\0" * ((-offset) % ALIGNMENT))
            offset += (-offset) % ALIGNMENT
            data.write(weight.tobytes())
            tensor = TensorProto(name=f"w{layer}", data_type=TensorProto.FLOAT,
                                 dims=[hidden, hidden])
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", offset),
                               ("length", layer_bytes)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            initializers.append(tensor)
            offset += layer_bytes
            del weight

            source = "x" if layer == 0 else f"h{layer - 1}"
            product = f"m{layer}"
            output = "y" if layer == layers - 1 else f"h{layer}"
            nodes.append(helper.make_node("MatMul", [source, f"w{layer}"], [product],
                                          name=f"matmul{layer}"))
            nodes.append(helper.make_node("Relu", [product], [output], name=f"relu{layer}"))

    graph = helper.make_graph(
        nodes, "large_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", hidden])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(os.path.join(folder, "model.onnx"), "wb") as file:
        file.write(model.SerializeToString())

    inputs = rng.standard_normal((4, hidden), dtype=np.float32)
    np.savez(os.path.join(folder, "inputs.npz"), x=inputs)
    print(f"{layers} layers of {hidden}x{hidden}: {offset / 1e9:.2f} GB of weights")


def stored_size(path):
    """The model file and every external data file it names, in bytes."""
    model = onnx.load(path, load_external_data=False)
    folder = os.path.dirname(path)
    locations = {entry.value for tensor in model.graph.initializer
                 for entry in tensor.external_data if entry.key == "location"}
    return os.path.getsize(path) + sum(os.path.getsize(os.path.join(folder, location))
                                       for location in locations)


def rss_bytes(pid):
    """The process's resident memory, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure(model, command):
    """Runs `command`, prints its peak RSS against the model's size; returns its exit code."""
    size = stored_size(model)
    started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    samples = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = rss_bytes(process.pid)
            if rss is not None:
                samples.append((time.monotonic() - started, rss))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    lines = []
    for line in process.stderr:
        lines.append((time.monotonic() - started, line.rstrip()))
    code = process.wait()
    done.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    print(f"exit {code}, {time.monotonic() - started:.1f} s")
    print(f"model size (stored)   {size / 2**30:8.2f} GiB")
    print(f"peak RSS (getrusage)  {peak / 2**30:8.2f} GiB")
    print(f"ratio                 {peak / size:8.2f}")
    print("peak RSS (sampled) between log lines:")
    marks = [(0.0, "start")] + lines
    for index, (at, line) in enumerate(marks):
        until = marks[index + 1][0] if index + 1 < len(marks) else float("inf")
        window = [rss for t, rss in samples if at <= t < until]
        if window:
            print(f"  {max(window) / 2**30:6.2f} GiB  {at:7.1f} s  after: {line[:100]}")
    return code


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate")
    make.add_argument("folder")
    make.add_argument("--size-gb", type=float, default=3.0)
    make.add_argument("--hidden", type=int, default=8192)
    run = commands.add_parser("measure")
    run.add_argument("--model", required=True)
    run.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    if args.command == "generate":
        generate(args.folder, args.size_gb, args.hidden)
        return 0
    command = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    return measure(args.model, command)


if __name__ == "__main__":
    sys.exit(main())
