//! Shared helpers for the end-to-end tests of the `pipeline` binary: a fresh copy of the digits
//! example per test, data files written from Rust, and a listing of every file a project
//! folder holds, to prove that refused input left nothing behind.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ndarray::{Array, Dimension};
use ndarray_npy::{NpzWriter, WritableElement};

/// The digits recipe with a short latency measurement, so a run takes seconds.
pub const DIGITS_RECIPE: &str = "\
name: digits-int8
model: model.onnx
target: cpu
data:
  calibration: {path: calib.npz}
  evaluation: {path: test.npz, labels: y}
metrics:
  accuracy: {kind: top1, output: logits, max_drop: 0.01}
  latency: {warmup: 2, runs: 5, stat: p50}
  size: {}
objective: [latency]
passes:
  - quantize_dynamic: {per_channel: [false, true]}
search: {strategy: exhaustive, max_candidates: 8}
output: out/
";

mod paths;
#[allow(unused_imports)]
pub use paths::{ort_library, root, venv_python};

/// The `pipeline` binary with a clean environment: no `ORT_DYLIB_PATH` or `PIPELINE_LOG`
/// inherited from the shell that runs the tests, and no cache (a [`Project`] has its own).
pub fn pipeline() -> Command {
    let mut command = Command::cargo_bin("pipeline").expect("the pipeline binary is built");
    command.env_remove("ORT_DYLIB_PATH").env_remove("PIPELINE_LOG");
    command.env_remove("PIPELINE_CACHE_DIR").env("PIPELINE_NO_CACHE", "1");
    command
}

/// A copy of the digits example in a fresh temporary folder, with [`DIGITS_RECIPE`], and a
/// cache folder of its own outside it.
pub struct Project {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Project {
    /// Copies the digits model and data into a new folder and writes the recipe.
    pub fn digits() -> Project {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let example = root().join("examples/digits");
        for name in ["model.onnx", "test.npz", "calib.npz"] {
            std::fs::copy(example.join(name), dir.path().join(name))
                .unwrap_or_else(|e| panic!("copying {name} from {}: {e}", example.display()));
        }
        let cache = tempfile::tempdir().expect("a temporary cache folder");
        let project = Project { dir, cache };
        project.write_recipe(DIGITS_RECIPE);
        project
    }

    /// The project's folder.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the project's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The recipe file.
    pub fn recipe(&self) -> PathBuf {
        self.path("recipe.yaml")
    }

    /// Replaces the recipe with `text`.
    pub fn write_recipe(&self, text: &str) {
        std::fs::write(self.recipe(), text).expect("the recipe is written");
    }

    /// Replaces `from` with `to` in [`DIGITS_RECIPE`] and writes the result as the recipe.
    pub fn edit_recipe(&self, from: &str, to: &str) {
        assert!(DIGITS_RECIPE.contains(from), "`{from}` is not in the digits recipe");
        self.write_recipe(&DIGITS_RECIPE.replace(from, to));
    }

    /// Every file and folder under the project's folder, relative to it, sorted.
    pub fn files(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        collect(self.root(), self.root(), &mut found);
        found
    }

    /// The project's cache folder (`PIPELINE_CACHE_DIR` of [`Project::pipeline`]).
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// `pipeline` started in the project's folder, with the project's cache.
    pub fn pipeline(&self) -> Command {
        let mut command = pipeline();
        command.current_dir(self.root());
        command.env_remove("PIPELINE_NO_CACHE").env("PIPELINE_CACHE_DIR", self.cache_dir());
        command
    }

    /// `pipeline run recipe.yaml --ort-lib <the project's library>`, started in the folder.
    pub fn run(&self) -> Command {
        let mut command = self.pipeline();
        command.arg("run").arg(self.recipe()).arg("--ort-lib").arg(ort_library());
        command
    }
}

fn collect(base: &Path, dir: &Path, found: &mut BTreeSet<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a folder entry").path();
        found.insert(path.strip_prefix(base).expect("inside the folder").to_path_buf());
        if path.is_dir() {
            collect(base, &path, found);
        }
    }
}

/// What a finished command printed, and its exit code.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to the end and captures what it printed.
pub fn outcome(command: &mut Command) -> Outcome {
    let output = command.output().expect("the pipeline binary starts");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Outcome {
    /// Asserts the exit code, showing everything the command printed when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that stderr holds each of `parts`.
    pub fn stderr_has(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(
                self.stderr.contains(part),
                "stderr lacks `{part}`\n--- stderr ---\n{}",
                self.stderr
            );
        }
        self
    }

    /// Asserts that the command did not crash: no Rust panic and no backtrace on stderr.
    pub fn no_panic(&self) -> &Self {
        assert!(!self.stderr.contains("panicked"), "the binary panicked:\n{}", self.stderr);
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "the binary panicked:\n{}", self.stderr);
        self
    }
}

/// An `.npz` file written from Rust, one array at a time.
pub struct Npz {
    writer: NpzWriter<File>,
    path: PathBuf,
}

impl Npz {
    /// Starts an uncompressed `.npz` at `path`, as `numpy.savez` writes it.
    pub fn create(path: &Path) -> Npz {
        let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Npz { writer: NpzWriter::new(file), path: path.to_path_buf() }
    }

    /// Adds `array` under `name`.
    pub fn array<A: WritableElement, D: Dimension>(
        mut self,
        name: &str,
        array: Array<A, D>,
    ) -> Npz {
        self.writer
            .add_array(name, &array)
            .unwrap_or_else(|e| panic!("writing {name} into {}: {e}", self.path.display()));
        self
    }

    /// Finishes the archive.
    pub fn finish(self) {
        self.writer.finish().unwrap_or_else(|e| panic!("{}: {e}", self.path.display()));
    }
}

/// `n` labels 0..9, as int64.
pub fn labels(n: usize) -> Array<i64, ndarray::Ix1> {
    Array::from_iter((0..n).map(|i| (i % 10) as i64))
}

/// Replaces the project's digits CNN with an MLP of the same input and output names (Flatten
/// -> MatMul `fc1` -> Relu -> MatMul `fc2`), `fc1` random with `seed` and `fc2` fitted to the
/// test images by ridge regression in numpy (a bare least-squares fit interpolates and is
/// fragile at 4 bits). With `outlier`, `fc1` gets a weight of 1000 on pixel 0, which is blank
/// in every digits image: the float model does not notice it, per-tensor INT8 ruins the layer.
pub fn write_digits_mlp(project: &Project, seed: u64, outlier: bool) {
    let script = r#"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

folder, seed, outlier = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rng = np.random.default_rng(seed)
w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float32)
# The calibration images carry no labels: fit on the test set.
test = np.load(f"{folder}/test.npz")
if outlier:
    calib = np.load(f"{folder}/calib.npz")
    for data in (test["input"], calib["input"]):
        assert data.reshape(len(data), -1)[:, 0].max() == 0, "pixel 0 must be blank"
xt = test["input"].reshape(len(test["input"]), -1)
ht = np.maximum(xt @ w1, 0)
onehot = np.eye(10)[test["y"]]
w2 = np.linalg.solve(ht.T @ ht + 10.0 * np.eye(128), ht.T @ onehot).astype(np.float32)
if outlier:
    w1[0, 5] = 1000.0
graph = helper.make_graph(
    [
        helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2"),
    ],
    "mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
    [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, f"{folder}/model.onnx")
"#;
    let output = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .arg(project.root())
        .arg(seed.to_string())
        .arg(if outlier { "1" } else { "0" })
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
}
