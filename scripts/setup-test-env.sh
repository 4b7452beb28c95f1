#!/usr/bin/env bash
# Prepares what the tests need besides Rust: ONNX Runtime's library (.ort/), a Python
# virtual environment with the reference tools (.venv/), and the onnx wheel whose backend
# test models the IR round-trip test reads (.cache/onnx-wheel/). Safe to run again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup-onnxruntime.sh"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, onnx, numpy, gguf, onnx_ir" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -r "$root/scripts/test-requirements.txt"
fi

wheel_dir=.cache/onnx-wheel
if [ ! -d "$wheel_dir/onnx/backend/test/data" ]; then
  mkdir -p "$wheel_dir"
  python3 -m pip download --quiet --no-deps --only-binary=:all: onnx==1.22.0 -d .cache/wheels
  python3 - <<'PY'
import glob, zipfile
wheel = sorted(glob.glob(".cache/wheels/onnx-1.22.0-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    members = [n for n in z.namelist() if n.startswith("onnx/backend/test/data/")]
    z.extractall(".cache/onnx-wheel", members)
print(f"extracted {len(members)} files of onnx's backend test data")
PY
fi
