# Shell functions the bench scripts share; sourced from the repository root.

# Builds the `pipeline` binary with cargo's PROFILE (`release` or `debug`) and prints its path.
bench_build_pipeline() {
  local profile="$1"
  echo "building pipeline ($profile) ..." >&2
  if [ "$profile" = release ]; then
    CARGO_INCREMENTAL=0 cargo build --quiet --release --bin pipeline
  elif [ "$profile" = debug ]; then
    CARGO_INCREMENTAL=0 cargo build --quiet --bin pipeline
  else
    echo "error: PROFILE=$profile; hint: use release or debug" >&2
    return 2
  fi
  echo "target/$profile/pipeline"
}

# Writes MiniLM token ids and a padded attention mask to an .npz (benchlib.minilm_tokens):
# bench_minilm_tokens PYTHON OUT BATCH SEQUENCE SEED.
bench_minilm_tokens() {
  "$1" - "$2" "$3" "$4" "$5" <<'PY'
import sys

import numpy as np

sys.path.insert(0, "bench")
from benchlib import minilm_tokens

path, batch, sequence, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
np.savez(path, **minilm_tokens(batch, sequence, seed))
PY
}
