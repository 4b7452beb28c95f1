"""One quantization with ONNX Runtime's own tools (`onnxruntime.quantization`), the reference
that bench/compare.py holds `pipeline` and Olive against. Writes the model and, as JSON, the
seconds the quantization call took (calibration included), the imports and the process start
left out.

    compare_ort.py --method dynamic|static|int4 --source M.onnx --output OUT.onnx
                   [--calibration C.npz] --timing T.json

The settings are those bench/compare.py gives the other two tools: INT8 weights per tensor
(dynamic); QDQ, int8 activations and weights, MinMax ranges per tensor, one calibration row at
a time (static); 4-bit symmetric MatMulNBits in blocks of 32 on MatMul weights (int4).
"""

import argparse
import json
import time

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)


class RowReader(CalibrationDataReader):
    """Every array of an .npz, one row (with its batch axis of 1) per `get_next`."""

    def __init__(self, path):
        data = np.load(path)
        self.arrays = {name: data[name] for name in data.files}
        self.rows = len(next(iter(self.arrays.values())))
        self.next_row = 0

    def get_next(self):
        if self.next_row >= self.rows:
            return None
        row = self.next_row
        self.next_row += 1
        return {name: array[row:row + 1] for name, array in self.arrays.items()}


def quantize(method, source, output, calibration):
    if method == "dynamic":
        quantize_dynamic(source, output, weight_type=QuantType.QInt8, per_channel=False)
    elif method == "static":
        quantize_static(
            source,
            output,
            RowReader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            per_channel=False,
        )
    elif method == "int4":
        config = DefaultWeightOnlyQuantConfig(
            block_size=32, is_symmetric=True, bits=4, quant_format=QuantFormat.QOperator
        )
        quantizer = MatMulNBitsQuantizer(onnx.load(source), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(output)
    else:
        raise SystemExit(f"error: unknown --method {method}; hint: dynamic, static or int4")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--calibration")
    parser.add_argument("--timing", required=True)
    args = parser.parse_args()
    if args.method == "static" and not args.calibration:
        raise SystemExit("error: --method static needs --calibration C.npz")

    start = time.perf_counter()
    quantize(args.method, args.source, args.output, args.calibration)
    seconds = time.perf_counter() - start

    with open(args.timing, "w") as f:
        json.dump({"quantize_s": seconds}, f)


if __name__ == "__main__":
    main()
