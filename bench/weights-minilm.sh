#!/usr/bin/env bash
# Weight-only quantization of paraphrase-MiniLM-L3-v2 (3 BERT layers, hidden 384), side by
# side: `pipeline`'s `quantize_weights` at 4 and 8 bits (and 4 bits with importance-weighted
# scales from calibration data), its `quantize_dynamic` (INT8), and the same work done by ONNX
# Runtime's own tools (`MatMulNBitsQuantizer`, `quantize_dynamic`). Prints each model's size,
# its latency in ONNX Runtime (one process, same session options, models alternated run by
# run, medians) and how close its outputs are to the float model's (cosine similarity of the
# sentence embeddings and of the token embeddings, max relative error), plus the wall time of
# each `pipeline run` and of each ORT tool call (bench/weights_minilm.py).
#
# Not part of the test suite. Work files go to .cache/bench/weights/. Settings, by variable:
# BATCH (4), SEQUENCE (128), RUNS (20), THREADS (1, intra-op threads of every session),
# PROFILE (release: how `pipeline` is built; `debug` is quicker to build, and only the
# quantization step's wall time depends on it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. bench/lib.sh

batch="${BATCH:-4}"
sequence="${SEQUENCE:-128}"
runs="${RUNS:-20}"
threads="${THREADS:-1}"
profile="${PROFILE:-release}"
work=.cache/bench/weights
python=.venv/bin/python
if [ ! -x "$python" ]; then
  echo "error: no $python; hint: run ./scripts/setup-test-env.sh first" >&2
  exit 2
fi

model="$(scripts/fetch-minilm.sh)"
mkdir -p "$work"

# Evaluation and calibration token ids within the vocabulary, with padding on some rows; two
# different draws so calibration never sees the evaluation inputs.
bench_minilm_tokens "$python" "$work/inputs.npz" "$batch" "$sequence" 0
bench_minilm_tokens "$python" "$work/calibration.npz" "$batch" "$sequence" 1
pipeline="$(bench_build_pipeline "$profile")"

# One recipe per variant, each with one candidate: `run` measures it once (the comparison
# below measures every model the same way) and writes it to its own folder.
variants=(
  "int4:quantize_weights: {bits: 4, block_size: 32, symmetric: true}"
  "int4-b128:quantize_weights: {bits: 4, block_size: 128, symmetric: false}"
  "int4-data:quantize_weights: {bits: 4, block_size: 32, symmetric: true, data_aware: true}"
  "int4-acc4:quantize_weights: {bits: 4, block_size: 32, symmetric: true, accuracy_level: 4}"
  "int4-emb:quantize_weights: {bits: 4, block_size: 32, symmetric: true, embeddings: true}"
  "int8:quantize_weights: {bits: 8, block_size: 32, symmetric: true}"
  "dynamic:quantize_dynamic: {per_channel: false}"
)
args=()
for variant in "${variants[@]}"; do
  name="${variant%%:*}"
  pass="${variant#*:}"
  cat >"$work/$name.yaml" <<YAML
name: minilm-$name
model: $model
data:
  evaluation: {path: inputs.npz, samples: 1}
  calibration: {path: calibration.npz}
metrics:
  latency: {warmup: 1, runs: 1}
objective: [latency]
passes:
  - $pass
output: out-$name/
YAML
  rm -rf "$work/out-$name"
  started=$(date +%s%N)
  status=0
  "$pipeline" -q run "$work/$name.yaml" >"$work/$name.log" 2>&1 || status=$?
  ms=$(( ($(date +%s%N) - started) / 1000000 ))
  out="$work/out-$name/$(basename "$model")"
  if [ ! -s "$out" ]; then
    echo "pipeline wrote no model for $name (exit $status); its log:" >&2
    cat "$work/$name.log" >&2
    exit 1
  fi
  args+=(--model "ours-$name=$out=$ms")
done

# ONNX Runtime's tools on the same model, timed the same way (a Python process each).
ort_variant() {
  local name="$1" code="$2"
  local out="$work/ort-$name.onnx"
  local started ms
  started=$(date +%s%N)
  "$python" - "$model" "$out" 2>"$work/ort-$name.log" <<PY
import sys
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer)

source, target = sys.argv[1], sys.argv[2]
$code
PY
  ms=$(( ($(date +%s%N) - started) / 1000000 ))
  args+=(--model "ort-$name=$out=$ms")
}
nbits='
def nbits(bits, block, symmetric, accuracy_level=None):
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=bits,
                                          accuracy_level=accuracy_level,
                                          quant_format=QuantFormat.QOperator)
    quantizer = MatMulNBitsQuantizer(onnx.load(source), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(target)
'
ort_variant int4 "$nbits
nbits(4, 32, True)"
ort_variant int4-acc4 "$nbits
nbits(4, 32, True, accuracy_level=4)"
ort_variant int4-b128 "$nbits
nbits(4, 128, False)"
ort_variant int8 "$nbits
nbits(8, 32, True)"
ort_variant dynamic "quantize_dynamic(source, target, weight_type=QuantType.QInt8)"

echo "source: $model"
echo "pipeline: $pipeline ($profile build); times are whole commands: \`pipeline run\` loads and"
echo "measures the source and the candidate once; each ORT call is a Python process"
echo
"$python" bench/weights_minilm.py --source "$model" "${args[@]}" \
  --inputs "$work/inputs.npz" --runs "$runs" --threads "$threads"
