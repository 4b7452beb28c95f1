#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (idempotent), then cargo test.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

./scripts/setup-test-env.sh
cargo test --workspace "$@"
