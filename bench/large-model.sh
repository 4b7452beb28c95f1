#!/usr/bin/env bash
# Peak memory of `pipeline run` on a model over 2 GB, against the model's size: generates a
# float32 MLP of about SIZE_GB (3) GB (MatMul + Relu layers of HIDDEN x HIDDEN (8192), weights
# in an external data file), then runs one recipe per pass (`quantize_dynamic`, and
# `quantize_weights` at 4 bits) with no latency measured, and prints each run's peak RSS, its
# ratio to the model's stored size, and the peak between its log lines
# (bench/large_model.py).
#
# Not part of the test suite. Work files go to WORK (.cache/bench/large) and are removed at the
# end unless KEEP=1; each run uses its own cache, WORK/cache, emptied first. PROFILE (debug)
# is how `pipeline` is built; PIPELINE, when set, is the binary to run instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

size_gb="${SIZE_GB:-3}"
hidden="${HIDDEN:-8192}"
work="${WORK:-.cache/bench/large}"
python=.venv/bin/python
if [ ! -x "$python" ]; then
  echo "error: no $python; hint: run ./scripts/setup-test-env.sh first" >&2
  exit 2
fi
if [ "${KEEP:-0}" != 1 ]; then
  trap 'rm -rf "$work"' EXIT
fi

if [ -n "${PIPELINE:-}" ]; then
  pipeline="$PIPELINE"
elif [ "${PROFILE:-debug}" = release ]; then
  CARGO_INCREMENTAL=0 cargo build --quiet --release --bin pipeline
  pipeline="$root/target/release/pipeline"
else
  CARGO_INCREMENTAL=0 cargo build --quiet --bin pipeline
  pipeline="$root/target/debug/pipeline"
fi

if [ ! -s "$work/model/model.onnx" ]; then
  "$python" bench/large_model.py generate "$work/model" --size-gb "$size_gb" --hidden "$hidden"
fi

variants=(
  "dynamic:quantize_dynamic: {per_channel: false}"
  "weights-int4:quantize_weights: {bits: 4, block_size: 32, symmetric: true}"
)
status=0
for variant in "${variants[@]}"; do
  name="${variant%%:*}"
  pass="${variant#*:}"
  cat >"$work/$name.yaml" <<YAML
name: large-$name
model: model/model.onnx
data:
  evaluation: {path: model/inputs.npz, samples: 4}
metrics:
  size: {}
objective: [size]
passes:
  - $pass
output: out-$name/
YAML
  rm -rf "$work/out-$name" "$work/cache"
  echo "== $name: $pass"
  "$python" bench/large_model.py measure --model "$work/model/model.onnx" -- \
    "$pipeline" --cache-dir "$work/cache" run "$work/$name.yaml" || status=$?
  rm -rf "$work/out-$name"
done
exit "$status"
