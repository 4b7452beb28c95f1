#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets/: the ONNX loader, the recipe parser, the npy/npz
# reader) for a bounded time on its committed corpus (fuzz/corpus/<target>/), and fails if
# any input makes it panic, abort or run out of memory. libFuzzer saves such an input in
# fuzz/artifacts/<target>/; `cargo fuzz run -s none <target> <file>` replays it.
#
# Needs only stable Rust: cargo-fuzz 0.13.2 is installed with `cargo install` when missing,
# and the targets are built without a sanitizer (`-s none`, which stable supports), so they
# catch panics, aborts and memory blow-ups rather than undefined behaviour.
#
# Settings, by variable: FUZZ_SECONDS (60, per target), FUZZ_TARGETS (all three),
# FUZZ_RSS_MB (2048, libFuzzer's memory limit per input run).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-onnx_loader recipe_parser npz_reader}"
rss="${FUZZ_RSS_MB:-2048}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz 0.13.2 (cargo install) ..." >&2
  cargo install --locked cargo-fuzz --version 0.13.2 >&2
fi

cargo fuzz build -s none --release >&2
for target in $targets; do
  echo "fuzzing $target for ${seconds}s ..." >&2
  # The run adds what it finds to a scratch folder, so the committed corpus stays as it is.
  scratch="$(mktemp -d)"
  log="$scratch/fuzz.log"
  mkdir "$scratch/corpus"
  status=0
  cargo fuzz run -s none --release "$target" "$scratch/corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss" -print_final_stats=1 >"$log" 2>&1 \
    || status=$?
  grep -E "^(Done|stat::number_of_executed_units|SUMMARY)|panicked|Test unit|ERROR" "$log" >&2 \
    || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    rm -rf "$scratch"
    echo "error: fuzz target $target failed (exit $status); the input is in" \
      "fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -rf "$scratch"
done
echo "fuzzing passed: $targets, ${seconds}s each" >&2
