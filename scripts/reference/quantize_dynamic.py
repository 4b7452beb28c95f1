#!/usr/bin/env python3
"""Reference for the `quantize_dynamic` pass: what ONNX Runtime's own tool makes of a model.

Given a float model and the model our pass made from it, this script
  1. checks our model with onnx.checker (full check, with shape inference) and loads it in
     ONNX Runtime;
  2. quantizes the float model with onnxruntime.quantization.quantize_dynamic, with the same
     options, and dumps every weight ORT quantized: its INT8 values, the bits of its f32
     scales and its zero points, keyed by the float weight's name;
  3. runs the float model, ours and ORT's on the same random inputs and reports, for every
     output, the largest absolute difference of each quantized model to the float one.

It writes one JSON report; the Rust test compares and judges. Usage:

    quantize_dynamic.py --float F.onnx --ours O.onnx --workdir DIR --report R.json \
        [--per-channel] [--reduce-range] [--op-types MatMul,Gemm,Conv] [--exclude a,b] [--seed N]
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
INTEGER_OPS = ("MatMulInteger", "ConvInteger")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--float", dest="float_model", required=True, type=Path)
    p.add_argument("--ours", required=True, type=Path)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--report", required=True, type=Path)
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--reduce-range", action="store_true")
    p.add_argument("--op-types", default="MatMul,Gemm,Conv")
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
    return [op for op in ("MatMul", "Conv") if op in ours]


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
    """Every weight quantized for a MatMulInteger or ConvInteger, by its float name."""
    inits = {t.name: t for t in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type not in INTEGER_OPS:
            continue
        q_name = node.input[1]
        if not q_name.endswith(QUANT_SUFFIX) or q_name not in inits:
            sys.exit(f"unexpected quantized weight name {q_name!r} in ORT's model")
        base = q_name[: -len(QUANT_SUFFIX)]
        values = numpy_helper.to_array(inits[q_name])
        scale = numpy_helper.to_array(inits[base + "_scale"])
        zero_point = numpy_helper.to_array(inits[node.input[3]])
        if scale.dtype != np.float32:
            sys.exit(f"ORT's scale of {base!r} is {scale.dtype}, expected float32")
        weights[base] = {
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
    return weights


def random_inputs(model, seed):
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.FLOAT:
            sys.exit(f"input {value.name!r} is not float32; this script feeds float32 only")
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
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
