#!/usr/bin/env python3
"""Reference for the `quantize_weights` pass: what ONNX Runtime's own weight-only quantizer
(`MatMulNBitsQuantizer` with `DefaultWeightOnlyQuantConfig`, round to nearest) makes of a
float model. It writes ORT's quantized model; the Rust test reads it and compares every
quantized weight, scale and zero point with ours.

Usage:

    quantize_weights.py --float F.onnx --out O.onnx --bits 4 --block-size 32 \
        [--symmetric] [--accuracy-level N] [--format qoperator|qdq]
"""

import argparse
import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--float", dest="float_model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--accuracy-level", type=int, default=None)
    p.add_argument("--format", choices=["qoperator", "qdq"], default="qoperator")
    args = p.parse_args()
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)

    quant_format = QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator
    config = DefaultWeightOnlyQuantConfig(
        block_size=args.block_size,
        is_symmetric=args.symmetric,
        accuracy_level=args.accuracy_level,
        quant_format=quant_format,
        bits=args.bits,
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(args.float_model)), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(args.out), False)


if __name__ == "__main__":
    main()
