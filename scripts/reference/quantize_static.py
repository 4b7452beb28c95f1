#!/usr/bin/env python3
"""Reference for the `quantize_static` pass: what ONNX Runtime's own tool makes of a model.

Two steps, each over a list of jobs (a JSON file: a list of objects, one per model and option
set), so that one Python start serves a whole test:

  quantize  for each job, quantizes the job's float model with
            onnxruntime.quantization.quantize_static (QDQ or QOperator, MinMax), feeding the
            job's calibration samples one at a time through a CalibrationDataReader, and writes
            ORT's model (`ort.onnx`) and the ranges ORT's calibrator found (`ranges.json`: for
            each tensor the bits of its float32 min and max) into the job's folder. Where ORT's
            tool fails, its error goes to `ort_error.txt`, and the ranges are still written.
  compare   for each job, checks our model (`ours.onnx`) with onnx.checker (full check) and
            loads it in ONNX Runtime, then runs the float model, ORT's and ours on the job's
            samples and reports, per output, the largest difference of ours to ORT's and of
            each to the float model (`compare.json`).

A job: {"dir": folder, "float": model path, "samples": samples.json path, "options": {...}}.
samples.json: {"count": N, "inputs": [{"name", "shape", "file"}]}; each file holds N samples
of float32 values, little-endian, one after the other. Or {"npz": path}: each array of the
.npz, named for a model input, holds one sample per row (fed as a batch of one). Options: format
(qdq or qoperator), per_channel, reduce_range,
activation_type and weight_type (int8, uint8, int16, uint16), activation_symmetric,
weight_symmetric (true, false or null), op_types, nodes_to_exclude, nodes_to_include
(names).

Usage: quantize_static.py quantize|compare JOBS.json
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import load_tensors_data

FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}

FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}

QUANT_TYPES = {
    "int8": QuantType.QInt8,
    "uint8": QuantType.QUInt8,
    "int16": QuantType.QInt16,
    "uint16": QuantType.QUInt16,
}


def load_samples(path):
    """The samples as a list of feeds, one dict of arrays per sample."""
    spec = json.loads(Path(path).read_text())
    if "npz" in spec:
        arrays = dict(np.load(spec["npz"]))
        count = min(len(values) for values in arrays.values())
        return [{name: values[i : i + 1] for name, values in arrays.items()} for i in range(count)]
    count = spec["count"]
    arrays = {}
    for entry in spec["inputs"]:
        data = np.fromfile(Path(path).parent / entry["file"], dtype="<f4")
        arrays[entry["name"]] = data.reshape([count] + entry["shape"])
    return [{name: values[i] for name, values in arrays.items()} for i in range(count)]


class Samples(CalibrationDataReader):
    """Hands out the samples one at a time, as a user's reader would."""

    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def quantize(job):
    folder = Path(job["dir"])
    options = job["options"]
    cache = folder / "calibration_cache.json"
    cache.unlink(missing_ok=True)

    extra = {"ActivationSymmetric": options.get("activation_symmetric", False)}
    if options.get("weight_symmetric") is not None:
        extra["WeightSymmetric"] = options["weight_symmetric"]

    error = folder / "ort_error.txt"
    error.unlink(missing_ok=True)
    try:
        quantize_static(
            job["float"],
            str(folder / "ort.onnx"),
            Samples(load_samples(job["samples"])),
            quant_format=FORMATS[options.get("format", "qdq")],
            op_types_to_quantize=options.get("op_types") or None,
            per_channel=options.get("per_channel", False),
            reduce_range=options.get("reduce_range", False),
            activation_type=QUANT_TYPES[options.get("activation_type", "int8")],
            weight_type=QUANT_TYPES[options.get("weight_type", "int8")],
            nodes_to_exclude=options.get("nodes_to_exclude") or None,
            nodes_to_quantize=options.get("nodes_to_include") or None,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=extra,
            calibration_cache_path=str(cache),
        )
    except Exception as e:  # ORT's tool fails on some models; the test says which it expects
        error.write_text(f"{type(e).__name__}: {e}")
        (folder / "ort.onnx").unlink(missing_ok=True)
        if not cache.exists():
            return

    ranges = {}
    for name, data in load_tensors_data(cache).data.items():
        low, high = (np.asarray(v) for v in data.range_value)
        if low.dtype != np.float32 or high.dtype != np.float32:
            sys.exit(f"ORT's range of {name!r} is {low.dtype}, expected float32")
        ranges[name] = [int(low.reshape(-1)[0].view(np.uint32)), int(high.reshape(-1)[0].view(np.uint32))]
    (folder / "ranges.json").write_text(json.dumps(ranges, indent=1, sort_keys=True))


def check(path):
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


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = {name: [] for name in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            results[name].append(value)
    return {name: np.stack(values) for name, values in results.items()}


def compare(job):
    folder = Path(job["dir"])
    report = check(folder / "ours.onnx")
    theirs_path = folder / "ort.onnx"
    if not theirs_path.exists():
        report["ort_model_load"] = "ORT made no model"
    else:
        try:
            ort.InferenceSession(str(theirs_path), providers=["CPUExecutionProvider"])
            report["ort_model_load"] = "ok"
        except Exception as e:  # ORT's own model may not load; the test says which
            report["ort_model_load"] = f"{type(e).__name__}: {e}"
    if report["ort_load"] == "ok":
        feeds = load_samples(job["samples"])
        reference = run(job["float"], feeds)
        ours = run(folder / "ours.onnx", feeds)
        theirs = run(theirs_path, feeds) if report["ort_model_load"] == "ok" else None
        outputs = {}
        for name, expected in reference.items():
            numbers = {
                "float_range": float(expected.max() - expected.min()),
                "ours_max_abs_error": float(np.abs(ours[name] - expected).max()),
            }
            if theirs is not None:
                numbers["ort_max_abs_error"] = float(np.abs(theirs[name] - expected).max())
                numbers["ours_vs_ort_max_abs"] = float(np.abs(ours[name] - theirs[name]).max())
            outputs[name] = numbers
        report["outputs"] = outputs
    (folder / "compare.json").write_text(json.dumps(report, indent=1))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("quantize", "compare"):
        sys.exit(__doc__)
    logging.getLogger().setLevel(logging.ERROR)
    step = quantize if sys.argv[1] == "quantize" else compare
    for job in json.loads(Path(sys.argv[2]).read_text()):
        step(job)


if __name__ == "__main__":
    main()
