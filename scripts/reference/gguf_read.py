#!/usr/bin/env python3
"""Reference for the `export` pass's GGUF files: what llama.cpp's own reader (gguf-py) sees.

Reads a GGUF file with gguf.GGUFReader, dequantizes every tensor with
gguf.quants.dequantize, and writes
  - an .npz with the float32 values of tensor i under the key `t<i>` (in file order; GGUF
    names may hold characters an npz key should not), shaped as gguf-py shapes them (ggml's
    dimensions reversed: a Q4_0 weight of ne = [K, N] comes out as (N, K));
  - a JSON report: the file's version, alignment and data offset, every metadata field
    (strings, numbers and arrays as gguf-py decodes them), and for every tensor its name,
    type name, ne, number of bytes and data offset relative to the data section.

It judges nothing; the Rust test compares. Usage:

    gguf_read.py --gguf FILE.gguf --npz OUT.npz --report OUT.json
"""

import argparse
import json

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field_value(field):
    """A metadata field's value as plain JSON: gguf-py's own decoding of it."""
    value = field.contents()
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--npz", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    reader = GGUFReader(args.gguf)
    fields = {name: field_value(field) for name, field in reader.fields.items()}

    arrays = {}
    tensors = []
    for index, tensor in enumerate(reader.tensors):
        values = dequantize(tensor.data, tensor.tensor_type)
        arrays[f"t{index}"] = np.ascontiguousarray(values, dtype=np.float32)
        tensors.append(
            {
                "name": tensor.name,
                "type": tensor.tensor_type.name,
                "ne": [int(d) for d in tensor.shape],
                "n_bytes": int(tensor.n_bytes),
                "offset": int(tensor.data_offset - reader.data_offset),
                "dequantized_shape": list(values.shape),
            }
        )

    np.savez(args.npz, **arrays)
    report = {
        "version": fields.get("GGUF.version"),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "fields": {k: v for k, v in fields.items() if not k.startswith("GGUF.")},
        "tensors": tensors,
    }
    with open(args.report, "w") as out:
        json.dump(report, out, indent=1)


if __name__ == "__main__":
    main()
