//! Shared helpers for the runtime and evaluate tests: the project's Python venv (the reference
//! ONNX Runtime and numpy), and small models and datasets generated with it at run time.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../common/paths.rs"]
mod paths;
#[allow(unused_imports)]
pub use paths::{ort_library, root, venv_python};

/// Runs `script` with the venv's Python and the given arguments; returns its standard output.
pub fn python(script: &str, args: &[&Path]) -> String {
    let output = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("could not start the venv's python");
    assert!(
        output.status.success(),
        "python failed (run scripts/setup-test-env.sh if a module is missing):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes `classifier.onnx` into `dir`: logits = x @ W + b (a Gemm), probs = Softmax(logits),
/// with input `x` of shape [batch, 4] float32 and 3 classes. `batch` is a number, or a name for
/// a symbolic dimension.
///
/// Also writes `data.npz` (50 samples of `x` and int64 labels `y`, 13 of them deliberately
/// wrong) and `reference.npz` (ONNX Runtime Python's `logits` and `probs` on those samples),
/// and returns the number of correct top-1 predictions that Python counted.
pub fn classifier(dir: &Path, batch: &str) -> usize {
    let script = r#"
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

out, batch = sys.argv[1], sys.argv[2]
dim = int(batch) if batch.isdigit() else batch
rng = np.random.default_rng(7)
w = rng.standard_normal((4, 3)).astype(np.float32)
b = rng.standard_normal(3).astype(np.float32)
graph = helper.make_graph(
    [
        helper.make_node("Gemm", ["x", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ],
    "classifier",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 4])],
    [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim, 3]),
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, [dim, 3]),
    ],
    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, f"{out}/classifier.onnx")

x = rng.standard_normal((50, 4)).astype(np.float32)
session = ort.InferenceSession(f"{out}/classifier.onnx", providers=["CPUExecutionProvider"])
if isinstance(dim, int):
    rows = np.concatenate([x, np.repeat(x[-1:], (-len(x)) % dim, axis=0)])
    parts = [session.run(None, {"x": rows[i:i + dim]}) for i in range(0, len(rows), dim)]
    logits = np.concatenate([p[0] for p in parts])[:len(x)]
    probs = np.concatenate([p[1] for p in parts])[:len(x)]
else:
    logits, probs = session.run(None, {"x": x})
predicted = logits.argmax(axis=1)
y = predicted.astype(np.int64)
y[:13] = (y[:13] + 1) % 3
np.savez(f"{out}/data.npz", x=x, y=y)
np.savez(f"{out}/reference.npz", logits=logits, probs=probs)
print(int((predicted == y).sum()))
"#;
    let batch_arg = PathBuf::from(batch);
    let count = python(script, &[dir, &batch_arg]);
    count.trim().parse().expect("python printed no count")
}
