"""Train a small CNN on scikit-learn's digits and export it to ONNX.

This script makes every artifact of the `digits` example: `model.onnx`, `test.npz` and
`calib.npz`. It needs only numpy and scikit-learn; the network's forward and backward passes
are written by hand in numpy, and the ONNX file is written by a small protobuf encoder below,
so the onnx package is not needed. Run it from anywhere: `python3 train.py`.
"""

import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 40
BATCH = 32
LEARNING_RATE = 5e-3
TEST_FRACTION = 0.2
CALIB_SAMPLES = 128

# Shapes of the trainable tensors, in the order the ONNX graph names them.
PARAM_SHAPES = {
    "conv1.weight": (8, 1, 3, 3),
    "conv1.bias": (8,),
    "conv2.weight": (16, 8, 3, 3),
    "conv2.bias": (16,),
    "fc1.weight": (64, 64),
    "fc1.bias": (64,),
    "fc2.weight": (10, 64),
    "fc2.bias": (10,),
}


def load_data():
    """Return (x_train, y_train, x_test, y_test) with pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y
    )
    return x_train, y_train, x_test, y_test


def init_params(rng):
    """He-normal weights and zero biases, as float32."""
    params = {}
    for name, shape in PARAM_SHAPES.items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            params[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return params


def im2col(x):
    """Patches of a 3x3 convolution with padding 1: [N, C, H, W] -> [N*H*W, C*9]."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)


def conv_forward(x, weight, bias):
    """3x3 convolution, stride 1, padding 1; returns the output and the patches."""
    n, _, h, w = x.shape
    cols = im2col(x)
    out = cols @ weight.reshape(weight.shape[0], -1).T + bias
    return out.reshape(n, h, w, -1).transpose(0, 3, 1, 2), cols


def conv_backward(dout, x_shape, cols, weight):
    """Gradients of conv_forward with respect to its input, weight and bias."""
    n, c, h, w = x_shape
    o = weight.shape[0]
    dflat = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dweight = (dflat.T @ cols).reshape(weight.shape)
    dbias = dflat.sum(axis=0)

    # Each patch element came from one shifted copy of the padded input: add it back there.
    dcols = (dflat @ weight.reshape(o, -1)).reshape(n, h, w, c, 3, 3)
    dpadded = np.zeros((n, c, h + 2, w + 2), np.float32)
    for i in range(3):
        for j in range(3):
            dpadded[:, :, i : i + h, j : j + w] += dcols[..., i, j].transpose(0, 3, 1, 2)
    return dpadded[:, :, 1:-1, 1:-1], dweight, dbias


def pool_forward(x):
    """2x2 max pooling with stride 2; returns the output and the winning positions."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(n, c, h // 2, w // 2, 4)
    winner = blocks.argmax(axis=-1)
    return np.take_along_axis(blocks, winner[..., None], axis=-1)[..., 0], winner


def pool_backward(dout, winner):
    """Route each pooled gradient to the input position that won the max."""
    n, c, hp, wp = dout.shape
    dblocks = np.zeros((n, c, hp, wp, 4), np.float32)
    np.put_along_axis(dblocks, winner[..., None], dout[..., None], axis=-1)
    dblocks = dblocks.reshape(n, c, hp, wp, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return dblocks.reshape(n, c, hp * 2, wp * 2)


def forward(params, x, keep=False):
    """Logits [N, 10] for images [N, 1, 8, 8]; with keep=True also the values backward needs."""
    p = params
    c1, cols1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    r1 = np.maximum(c1, 0)
    m1, win1 = pool_forward(r1)
    c2, cols2 = conv_forward(m1, p["conv2.weight"], p["conv2.bias"])
    r2 = np.maximum(c2, 0)
    m2, win2 = pool_forward(r2)
    flat = m2.reshape(len(x), -1)
    h = flat @ p["fc1.weight"].T + p["fc1.bias"]
    rh = np.maximum(h, 0)
    logits = rh @ p["fc2.weight"].T + p["fc2.bias"]
    if not keep:
        return logits
    saved = dict(
        x=x, c1=c1, cols1=cols1, win1=win1, m1=m1, c2=c2, cols2=cols2, win2=win2,
        m2=m2, flat=flat, h=h, rh=rh,
    )
    return logits, saved


def backward(params, s, dlogits):
    """Gradients of the loss for every parameter, given d(loss)/d(logits)."""
    p = params
    g = {}
    g["fc2.weight"] = dlogits.T @ s["rh"]
    g["fc2.bias"] = dlogits.sum(axis=0)
    dh = (dlogits @ p["fc2.weight"]) * (s["h"] > 0)
    g["fc1.weight"] = dh.T @ s["flat"]
    g["fc1.bias"] = dh.sum(axis=0)
    dm2 = (dh @ p["fc1.weight"]).reshape(s["m2"].shape)

    dc2 = pool_backward(dm2, s["win2"]) * (s["c2"] > 0)
    dm1, g["conv2.weight"], g["conv2.bias"] = conv_backward(
        dc2, s["m1"].shape, s["cols2"], p["conv2.weight"]
    )
    dc1 = pool_backward(dm1, s["win1"]) * (s["c1"] > 0)
    _, g["conv1.weight"], g["conv1.bias"] = conv_backward(
        dc1, s["x"].shape, s["cols1"], p["conv1.weight"]
    )
    return g


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy loss and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
    dlogits = probs
    dlogits[np.arange(len(y)), y] -= 1
    return float(loss), (dlogits / len(y)).astype(np.float32)


def train(x, y, rng):
    """Adam on mini-batches; returns the trained parameters."""
    params = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0

    for epoch in range(EPOCHS):
        # Cosine decay: large steps early, small ones to settle at the end.
        lr = LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * epoch / EPOCHS))
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            logits, saved = forward(params, x[batch], keep=True)
            loss, dlogits = softmax_cross_entropy(logits, y[batch])
            grads = backward(params, saved, dlogits)
            total += loss * len(batch)

            step += 1
            for k in params:
                m[k] = beta1 * m[k] + (1 - beta1) * grads[k]
                v[k] = beta2 * v[k] + (1 - beta2) * grads[k] ** 2
                m_hat = m[k] / (1 - beta1**step)
                v_hat = v[k] / (1 - beta2**step)
                params[k] = (params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)).astype(
                    np.float32
                )
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:2d}: train loss {total / len(x):.4f}")
    return params


def accuracy(params, x, y):
    """Top-1 accuracy of the numpy model."""
    return float((forward(params, x).argmax(axis=1) == y).mean())


# Protobuf encoding. Only what an ONNX model of this shape needs: varints, length-delimited
# fields (strings, bytes, sub-messages) and 64-bit integers. Field numbers are those of onnx.proto;
# fields are written in ascending number order, as protobuf's own serializers do.

VARINT, LENGTH_DELIMITED = 0, 2


def varint(value):
    """Base-128 varint; negative numbers take ten bytes as two's-complement 64-bit."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def int_field(field, value):
    return key(field, VARINT) + varint(value)


def bytes_field(field, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return key(field, LENGTH_DELIMITED) + varint(len(data)) + data


def onnx_tensor(name, array):
    """TensorProto of a float32 array, stored little-endian in raw_data."""
    array = np.ascontiguousarray(array, dtype="<f4")
    out = b"".join(int_field(1, d) for d in array.shape)  # dims
    out += int_field(2, 1)  # data_type FLOAT
    out += bytes_field(8, name)
    out += bytes_field(9, array.tobytes())  # raw_data
    return out


def onnx_value_info(name, dims):
    """ValueInfoProto of a float tensor; a str in dims is a symbolic dimension."""
    shape = b""
    for d in dims:
        dim = bytes_field(2, d) if isinstance(d, str) else int_field(1, d)
        shape += bytes_field(1, dim)
    tensor_type = int_field(1, 1) + bytes_field(2, shape)  # elem_type FLOAT, shape
    type_proto = bytes_field(1, tensor_type)
    return bytes_field(1, name) + bytes_field(2, type_proto)


def onnx_attribute_ints(name, values):
    """AttributeProto of type INTS; proto2 repeated scalars are written unpacked."""
    out = bytes_field(1, name) + b"".join(int_field(8, v) for v in values)
    return out + int_field(20, 7)


def onnx_attribute_int(name, value):
    return bytes_field(1, name) + int_field(3, value) + int_field(20, 2)


def onnx_node(op_type, inputs, outputs, name, attributes=()):
    out = b"".join(bytes_field(1, i) for i in inputs)
    out += b"".join(bytes_field(2, o) for o in outputs)
    out += bytes_field(3, name) + bytes_field(4, op_type)
    return out + b"".join(bytes_field(5, a) for a in attributes)


def export_onnx(params, path):
    """Write the network as an ONNX model: IR version 8, opset 17, batch dimension `N`."""
    conv = [onnx_attribute_ints("kernel_shape", [3, 3]), onnx_attribute_ints("pads", [1, 1, 1, 1])]
    pool = [onnx_attribute_ints("kernel_shape", [2, 2]), onnx_attribute_ints("strides", [2, 2])]
    gemm = [onnx_attribute_int("transB", 1)]
    nodes = [
        onnx_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], "conv1", conv),
        onnx_node("Relu", ["conv1"], ["relu1"], "relu1"),
        onnx_node("MaxPool", ["relu1"], ["pool1"], "pool1", pool),
        onnx_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"], "conv2", conv),
        onnx_node("Relu", ["conv2"], ["relu2"], "relu2"),
        onnx_node("MaxPool", ["relu2"], ["pool2"], "pool2", pool),
        onnx_node("Flatten", ["pool2"], ["flat"], "flatten", [onnx_attribute_int("axis", 1)]),
        onnx_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], "fc1", gemm),
        onnx_node("Relu", ["fc1"], ["relu3"], "relu3"),
        onnx_node("Gemm", ["relu3", "fc2.weight", "fc2.bias"], ["logits"], "fc2", gemm),
    ]

    graph = b"".join(bytes_field(1, n) for n in nodes)
    graph += bytes_field(2, "digits_cnn")
    graph += b"".join(bytes_field(5, onnx_tensor(k, params[k])) for k in PARAM_SHAPES)
    graph += bytes_field(11, onnx_value_info("input", ["N", 1, 8, 8]))
    graph += bytes_field(12, onnx_value_info("logits", ["N", 10]))

    opset = bytes_field(1, "") + int_field(2, 17)
    model = int_field(1, 8)  # ir_version
    model += bytes_field(2, "pipeline-digits-example") + bytes_field(3, "1")
    model += bytes_field(7, graph)
    model += bytes_field(8, opset)
    path.write_bytes(model)


def main():
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    x_train, y_train, x_test, y_test = load_data()
    print(f"train {len(x_train)} images, test {len(x_test)} images")

    params = train(x_train, y_train, rng)
    train_acc = accuracy(params, x_train, y_train)
    test_acc = accuracy(params, x_test, y_test)
    print(f"train accuracy {train_acc:.4f}")
    print(f"test accuracy {test_acc:.4f} ({round(test_acc * len(y_test))}/{len(y_test)})")
    if test_acc < 0.95:
        sys.exit(f"test accuracy {test_acc:.4f} is below 0.95; the model was not written")

    calib = x_train[rng.choice(len(x_train), CALIB_SAMPLES, replace=False)]
    export_onnx(params, HERE / "model.onnx")
    np.savez(HERE / "test.npz", input=x_test, y=y_test)
    np.savez(HERE / "calib.npz", input=calib)
    elapsed = time.perf_counter() - started
    print(f"wrote model.onnx, test.npz, calib.npz in {HERE} ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
