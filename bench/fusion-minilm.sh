#!/usr/bin/env bash
# Benchmarks `pipeline`'s `fuse` pass against ONNX Runtime's transformer optimizer on
# paraphrase-MiniLM-L3-v2 (3 BERT layers, hidden 384, 12 heads): fetches the model, makes
# random token ids within its vocabulary, fuses it with `pipeline run` on a recipe that only
# fuses, optimizes it with `onnxruntime.transformers.optimizer.optimize_model(model_type=
# "bert", opt_level=0)` (so no ONNX Runtime session rewrites it first), then prints the
# operator histograms, the fused operator counts, the outputs' differences from the source
# and the latency of the three models (bench/fusion_minilm.py).
#
# Not part of the test suite. Work files go to .cache/bench/minilm/. Settings, by variable:
# BATCH (4), SEQUENCE (128), RUNS (20), THREADS (1, intra-op threads of every session).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. bench/lib.sh

batch="${BATCH:-4}"
sequence="${SEQUENCE:-128}"
runs="${RUNS:-20}"
threads="${THREADS:-1}"
work=.cache/bench/minilm
python=.venv/bin/python
if [ ! -x "$python" ]; then
  echo "error: no $python; hint: run ./scripts/setup-test-env.sh first" >&2
  exit 2
fi

model="$(scripts/fetch-minilm.sh)"
mkdir -p "$work"

# ONNX Runtime's optimizer needs sympy (onnxruntime's `symbolic` extra); it goes to a folder
# of its own rather than into the shared virtual environment.
site="$root/.cache/bench/python"
if ! PYTHONPATH="$site" "$python" -c "import sympy" 2>/dev/null; then
  echo "installing sympy for ONNX Runtime's optimizer into $site ..." >&2
  "$python" -m pip install --quiet --disable-pip-version-check --target "$site" \
    "sympy==1.14.0" >&2
fi

# Token ids within the vocabulary ([CLS] first), and a mask with padding on some rows.
"$python" - "$work/inputs.npz" "$batch" "$sequence" <<'PY'
import sys
import numpy as np

path, batch, sequence = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
ids = rng.integers(1000, 30522, size=(batch, sequence), dtype=np.int64)
ids[:, 0] = 101
mask = np.ones((batch, sequence), dtype=np.int64)
for row in range(1, batch):
    mask[row, sequence - row * sequence // (2 * batch):] = 0
np.savez(path, input_ids=ids, attention_mask=mask)
PY

pipeline="$(bench_build_pipeline debug)"

# A recipe that only fuses; the latency it asks for is the least `run` accepts, since the
# comparison below measures all three models the same way.
cat >"$work/recipe.yaml" <<EOF
name: minilm-fuse
model: $model
data:
  evaluation: {path: inputs.npz, samples: 1}
metrics:
  latency: {warmup: 1, runs: 1}
objective: [latency]
passes:
  - fuse: {}
output: out/
EOF
rm -rf "$work/out"
started=$(date +%s%N)
status=0
"$pipeline" -q run "$work/recipe.yaml" >"$work/pipeline.log" 2>&1 || status=$?
ours_ms=$(( ($(date +%s%N) - started) / 1000000 ))
ours="$work/out/$(basename "$model")"
if [ ! -s "$ours" ]; then
  echo "pipeline wrote no fused model (exit $status); its log:" >&2
  cat "$work/pipeline.log" >&2
  echo "comparing the source with itself in its place" >&2
  ours="$model"
fi

started=$(date +%s%N)
PYTHONPATH="$site" "$python" - "$model" "$work/ort.onnx" <<'PY'
import sys
from onnxruntime.transformers.optimizer import optimize_model

source, target = sys.argv[1], sys.argv[2]
optimized = optimize_model(source, model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
optimized.save_model_to_file(target)
PY
ort_ms=$(( ($(date +%s%N) - started) / 1000000 ))

echo "source:  $model"
echo "ours:    $ours (pipeline run of a fuse-only recipe, debug build: ${ours_ms} ms, loading and"
echo "         measuring the source and the candidate included)"
echo "ort:     $work/ort.onnx (optimize_model, opt_level=0: ${ort_ms} ms)"
echo
"$python" bench/fusion_minilm.py --source "$model" --ours "$ours" --ort "$work/ort.onnx" \
  --inputs "$work/inputs.npz" --runs "$runs" --threads "$threads"
