#!/usr/bin/env python3
"""Reference for the `quantize_dynamic` pass: what ONNX Runtime's own tool makes of a model.

Given a float model and the model our pass made from it, this script
  1. checks our model with onnx.checker (full check, with shape inference) and loads it in
     ONNX Runtime;
  2. quantizes the float model with onnxruntime.quantization.quantize_dynamic, with the same
     options, and dumps every weight ORT quantized (for MatMulInteger, ConvInteger, Gather,
     DynamicQuantizeLSTM, QAttention and QEmbedLayerNormalization): its 8-bit values, the
     bits of its f32 scales and its zero points, keyed by the float weight's name; the same
     for our model;
  3. runs the float model, ours and ORT's on the same random inputs (integer inputs get
     valid indices into the tables the Gathers read) and reports, for every output, the
     largest absolute difference of each quantized model to the float one.

It writes one JSON report; the Rust test compares and judges. Usage:

    quantize_dynamic.py --float F.onnx --ours O.onnx --workdir DIR --report R.json \
        [--per-channel] [--reduce-range] [--op-types MatMul,Gemm,...] [--exclude a,b] [--seed N]
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

QUANT_SUFFIX = "_quantized"

# Where each quantized operator reads a quantized weight: (values, scale, zero point) input
# positions; a scale or zero point of None is found by name, <weight>_scale or _zero_point.
WEIGHT_INPUTS = {
    "MatMulInteger": [(1, None, 3)],
    "ConvInteger": [(1, None, 3)],
    "Gather": [(0, None, None)],
    "DynamicQuantizeLSTM": [(1, 8, 9), (2, 10, 11)],
    "QAttention": [(1, 4, 7)],
    "QEmbedLayerNormalization": [(2, 8, 13), (3, 9, 14), (4, 10, 15), (5, 11, 16), (6, 12, 17)],
}

# Our op types that ORT's tool takes under the same name.
SAME_NAME_OPS = ("Conv", "Gather", "Transpose", "LSTM", "Attention", "EmbedLayerNormalization")

# The integer input types fed as random indices into the tables that read them.
INDEX_TYPES = {onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--float", dest="float_model", required=True, type=Path)
    p.add_argument("--ours", required=True, type=Path)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--report", required=True, type=Path)
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--reduce-range", action="store_true")
    p.add_argument("--op-types", default=",".join(["MatMul", "Gemm", *SAME_NAME_OPS]))
    p.add_argument("--exclude", default="")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def ort_op_types(ours):
    """ORT's list for our op types: ORT turns Gemm into MatMul before quantizing it."""
    ours = set(ours)
    if "Gemm" in ours and "MatMul" not in ours:
        sys.exit("ORT quantizes Gemm only as a MatMul: cannot mirror Gemm without MatMul")
    if "MatMul" in ours and "Gemm" not in ours:
        sys.exit("ORT quantizes Gemm along with MatMul: cannot mirror MatMul without Gemm")
    return [op for op in ("MatMul", *SAME_NAME_OPS) if op in ours]


def check_ours(path):
    report = {}
    try:
        onnx.checker.check_model(str(path), full_check=True)
        report["checker"] = "ok"
    except Exception as e:  # the report carries the reason; the test fails on it
        report["checker"] = f"{type(e).__name__}: {e}"
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        report["ort_load"] = "ok"
    except Exception as e:
        report["ort_load"] = f"{type(e).__name__}: {e}"
    return report


def dump_quantized_weights(model):
    """Every weight a quantized operator reads, by its float name."""
    inits = {t.name: t for t in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        for values_at, scale_at, zero_point_at in WEIGHT_INPUTS.get(node.op_type, []):
            q_name = node.input[values_at] if values_at < len(node.input) else ""
            if node.op_type == "QEmbedLayerNormalization" and not q_name:
                continue  # no segment embedding
            if node.op_type == "Gather" and q_name not in inits:
                continue  # a Gather on a computed tensor, or on a quantized Gather's output
            if not q_name.endswith(QUANT_SUFFIX) or q_name not in inits:
                sys.exit(f"unexpected quantized weight name {q_name!r} in {node.op_type}")
            base = q_name[: -len(QUANT_SUFFIX)]
            scale_name = node.input[scale_at] if scale_at else base + "_scale"
            zero_point_name = node.input[zero_point_at] if zero_point_at else base + "_zero_point"
            values = numpy_helper.to_array(inits[q_name])
            scale = numpy_helper.to_array(inits[scale_name])
            zero_point = numpy_helper.to_array(inits[zero_point_name])
            if scale.dtype != np.float32:
                sys.exit(f"the scale of {base!r} is {scale.dtype}, expected float32")
            dump = {
                "op": node.op_type,
                "dtype": str(values.dtype),
                "shape": list(values.shape),
                "values": values.ravel().astype(np.int64).tolist(),
                "scale_shape": list(scale.shape),
                "scale_bits": scale.ravel().view(np.uint32).astype(np.int64).tolist(),
                "zero_point_dtype": str(zero_point.dtype),
                "zero_point_shape": list(zero_point.shape),
                "zero_point": zero_point.ravel().astype(np.int64).tolist(),
            }
            if weights.setdefault(base, dump) != dump:
                sys.exit(f"weight {base!r} is read in two different quantized forms")
    return weights


def index_bounds(model):
    """For each integer graph input, the smallest table length that the Gathers and
    EmbedLayerNormalizations reading it as indices allow."""
    inits = {t.name: t for t in model.graph.initializer}
    bounds = {}

    def bound(indices, table, axis=0):
        if indices and table in inits:
            length = inits[table].dims[axis]
            bounds[indices] = min(length, bounds.get(indices, length))

    for node in model.graph.node:
        if node.op_type == "Gather":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            bound(node.input[1], node.input[0], axis)
        elif node.op_type == "EmbedLayerNormalization":
            bound(node.input[0], node.input[2])
            if len(node.input) > 4:
                bound(node.input[1], node.input[4])
    return bounds


def random_inputs(model, seed):
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    bounds = index_bounds(model)
    feeds = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        if tensor_type.elem_type == onnx.TensorProto.FLOAT:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
        elif tensor_type.elem_type in INDEX_TYPES and value.name in bounds:
            dtype = INDEX_TYPES[tensor_type.elem_type]
            feeds[value.name] = rng.integers(0, bounds[value.name], shape, dtype=dtype)
        else:
            sys.exit(f"input {value.name!r} is neither float32 nor indices into a table")
    return feeds


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def compare_outputs(float_path, ours_path, ort_path, seed):
    feeds = random_inputs(onnx.load(str(float_path)), seed)
    reference = run(float_path, feeds)
    ours = run(ours_path, feeds)
    theirs = run(ort_path, feeds)
    report = {}
    for name, expected in reference.items():
        if name not in ours:
            sys.exit(f"our model lacks output {name!r}")
        report[name] = {
            "shape": list(expected.shape),
            "float_range": float(expected.max() - expected.min()),
            "float_max_abs": float(np.abs(expected).max()),
            "ours_max_abs_error": float(np.abs(ours[name] - expected).max()),
            "ort_max_abs_error": float(np.abs(theirs[name] - expected).max()),
            "ours_vs_ort_max_abs": float(np.abs(ours[name] - theirs[name]).max()),
        }
    return report


def main():
    args = parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ort_path = args.workdir / "ort_quantized.onnx"

    report = {"versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__}}
    report.update(check_ours(args.ours))

    quantize_dynamic(
        str(args.float_model),
        str(ort_path),
        op_types_to_quantize=ort_op_types(args.op_types.split(",")),
        per_channel=args.per_channel,
        reduce_range=args.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[n for n in args.exclude.split(",") if n],
    )
    report["ort_weights"] = dump_quantized_weights(onnx.load(str(ort_path)))
    report["ours_weights"] = dump_quantized_weights(onnx.load(str(args.ours)))
    if report["ort_load"] == "ok":
        report["outputs"] = compare_outputs(args.float_model, args.ours, ort_path, args.seed)

    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
