#!/usr/bin/env bash
# Makes (once) the Python virtual environment the pretrained examples' prepare scripts use,
# .cache/examples-venv/, with numpy, onnx, onnxruntime, tokenizers and Pillow pinned below, and
# prints its python's path on stdout (messages go to stderr). Safe to run again: a venv that
# already imports them is reused as it is. Needs Python 3.9+ with venv and pip, and PyPI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv=.cache/examples-venv
python="$venv/bin/python"
imports="import numpy, onnx, onnxruntime, tokenizers, PIL"

if [ -x "$python" ] && "$python" -c "$imports" 2>/dev/null; then
  echo "$root/$python"
  exit 0
fi

echo "making $venv (numpy, onnx, onnxruntime, tokenizers, Pillow from PyPI) ..." >&2
mkdir -p .cache
python3 -m venv "$venv" >&2
"$python" -m pip install --quiet --disable-pip-version-check \
  "numpy<3" onnx==1.22.0 onnxruntime==1.31.1 tokenizers==0.23.3 pillow==13.0.0 >&2
if ! "$python" -c "$imports"; then
  echo "error: $venv cannot import numpy, onnx, onnxruntime, tokenizers and PIL" \
    "after pip install;" \
    "hint: remove $venv and run again, or check the pip messages above" >&2
  exit 1
fi
echo "$root/$python"
