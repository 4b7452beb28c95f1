#!/usr/bin/env python3
"""Reference for calibration: the ranges ONNX Runtime's own calibrators find.

For each case of a JSON list, this script builds ORT's calibrator for the model
(onnxruntime.quantization.calibrate.create_calibrator, every float tensor of every node, as
quantize_static does with no op-type filter), feeds it the samples of an .npz file one at a
time through a data reader, calls collect_data once, or once per stride of samples as
quantize_static does with CalibStridedMinMax, and writes the range of every tensor: its
lowest and highest value and their float32 bits.

A case is {"name": str, "method": "minmax" | "entropy" | "percentile",
"extra_options": {...} (create_calibrator's: symmetric, moving_average, averaging_constant,
num_bins, num_quantized_bins, percentile), "stride": int or null}.

With --optimization all, the calibrator's session is rebuilt with ORT's default graph
optimizations instead of none, to measure what they change. Usage:

    calibrate.py --model M.onnx --data D.npz --cases C.json --workdir DIR --report R.json \
        [--optimization none|all]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class OneSampleReader(CalibrationDataReader):
    """Hands out the samples of an .npz file one by one, each with a batch axis of 1."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.samples = len(next(iter(arrays.values())))
        self.set_range(0, self.samples)

    def set_range(self, start_index, end_index):
        self.next_index = start_index
        self.end_index = end_index

    def __len__(self):
        return self.samples

    def get_next(self):
        if self.next_index >= self.end_index:
            return None
        i = self.next_index
        self.next_index += 1
        return {name: array[i : i + 1] for name, array in self.arrays.items()}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--cases", required=True, type=Path)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--report", required=True, type=Path)
    p.add_argument("--optimization", choices=["none", "all"], default="none")
    return p.parse_args()


def scalar(value):
    """A range end as float32, whatever shape ORT left it in."""
    return np.asarray(value, dtype=np.float32).reshape(-1)[0]


def run_case(args, arrays, case, index):
    augmented = args.workdir / f"augmented_{index}.onnx"
    calibrator = create_calibrator(
        args.model,
        None,
        augmented_model_path=augmented.as_posix(),
        calibrate_method=METHODS[case["method"]],
        extra_options=case.get("extra_options", {}),
    )
    if args.optimization == "all":
        calibrator.infer_session = ort.InferenceSession(
            augmented.as_posix(), providers=["CPUExecutionProvider"]
        )

    reader = OneSampleReader(arrays)
    stride = case.get("stride")
    if stride:
        for start in range(0, reader.samples, stride):
            reader.set_range(start, start + stride)
            calibrator.collect_data(reader)
    else:
        calibrator.collect_data(reader)
    ranges = calibrator.compute_data()

    tensors = {}
    for name in ranges:
        low, high = (scalar(v) for v in ranges[name].range_value)
        tensors[name] = {
            "min": float(low),
            "max": float(high),
            "min_bits": int(low.view(np.uint32)),
            "max_bits": int(high.view(np.uint32)),
        }
    return {"tensors": tensors}


def main():
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with np.load(args.data) as npz:
        arrays = {name: npz[name] for name in npz.files}
    cases = json.loads(args.cases.read_text())

    report = {"cases": {}}
    for index, case in enumerate(cases):
        report["cases"][case["name"]] = run_case(args, arrays, case, index)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
