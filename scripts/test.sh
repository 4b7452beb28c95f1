#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (idempotent), then cargo test.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

./scripts/setup-test-env.sh
# The text-direction example's model and data, for tests/example_ocr_direction.rs: about 25 MB
# of wheels and a venv the first time, seconds after. (The MiniLM example is too heavy.)
./examples/ocr-direction/prepare.sh
cargo test --workspace "$@"
