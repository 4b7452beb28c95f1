"""Check the digits example's artifacts against onnx and ONNX Runtime (optional to run).

Loads `model.onnx` with the onnx checker, runs it in ONNX Runtime on `test.npz`, and compares
its logits and accuracy with train.py's numpy forward pass on the same weights, read back from
the ONNX file. The example itself does not need this script; it needs onnx, onnxruntime and
numpy, e.g. the project's `.venv/bin/python examples/digits/check.py`.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import train  # noqa: E402  (only its numpy forward pass; scikit-learn is not imported)

TOLERANCE = 1e-4


def dims(value):
    """Shape of a ValueInfoProto, with symbolic dimensions as their names."""
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def check_format(model):
    """The header fields, names and shapes the recipe and README promise."""
    assert model.ir_version == 8, model.ir_version
    assert model.producer_name == "pipeline-digits-example", model.producer_name
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets == {"": 17}, opsets

    graph = model.graph
    assert [(v.name, dims(v)) for v in graph.input] == [("input", ["N", 1, 8, 8])]
    assert [(v.name, dims(v)) for v in graph.output] == [("logits", ["N", 10])]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in graph.input)
    for t in graph.initializer:
        assert t.data_type == onnx.TensorProto.FLOAT and t.raw_data, t.name
    print("ops:", [n.op_type for n in graph.node])


def check_data(test, calib):
    assert test["input"].dtype == np.float32 and test["input"].shape[1:] == (1, 8, 8)
    assert test["y"].dtype == np.int64 and test["y"].shape == (len(test["input"]),)
    assert calib["input"].dtype == np.float32 and calib["input"].shape == (128, 1, 8, 8)
    assert set(calib.files) == {"input"}, calib.files
    for x in (test["input"], calib["input"]):
        assert 0.0 <= x.min() and x.max() <= 1.0


def main():
    data = (HERE / "model.onnx").read_bytes()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    check_format(model)

    # train.py writes fields in the order protobuf does, so a re-serialization is identical.
    assert model.SerializeToString() == data, "onnx re-serializes the model differently"

    test = np.load(HERE / "test.npz")
    calib = np.load(HERE / "calib.npz")
    check_data(test, calib)
    x, y = test["input"], test["y"]

    params = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(params) == set(train.PARAM_SHAPES), sorted(params)
    expected = train.forward(params, x)

    session = ort.InferenceSession(HERE / "model.onnx", providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x})
    (one,) = session.run(["logits"], {"input": x[:1]})

    diff = float(np.abs(logits - expected).max())
    acc_numpy = float((expected.argmax(axis=1) == y).mean())
    acc_ort = float((logits.argmax(axis=1) == y).mean())
    print(f"samples {len(y)}")
    print(f"numpy accuracy {acc_numpy:.4f}, onnxruntime accuracy {acc_ort:.4f}")
    print(f"max |logits difference| {diff:.3g} (tolerance {TOLERANCE})")

    assert logits.shape == (len(y), 10) and logits.dtype == np.float32
    assert np.abs(one - expected[:1]).max() <= TOLERANCE, "batch of one differs"
    assert diff <= TOLERANCE, f"logits differ by {diff}"
    assert acc_numpy == acc_ort, "accuracies differ"
    print("ok")


if __name__ == "__main__":
    main()
