#!/usr/bin/env bash
# Prepares the text-direction example: copies PaddleOCR's ch_ppocr_mobile_v2.0_cls_infer.onnx
# out of PyPI's rapidocr-onnxruntime 1.4.4 wheel (via .cache/models/ocr-direction/) to
# model.onnx here, takes DejaVuSans.ttf out of matplotlib 3.11.2's wheel into .cache/fonts/,
# makes the examples' venv (examples/python-env.sh), then renders labelled text lines into
# calib.npz and test.npz and checks the float model's accuracy (make_data.py). Safe to run
# again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
here=examples/ocr-direction

cached=.cache/models/ocr-direction/ch_ppocr_mobile_v2.0_cls_infer.onnx
examples/wheel-member.sh rapidocr-onnxruntime 1.4.4 \
  rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx "$cached"
if ! cmp -s "$cached" "$here/model.onnx"; then
  cp "$cached" "$here/model.onnx.partial"
  mv "$here/model.onnx.partial" "$here/model.onnx"
fi

font=.cache/fonts/DejaVuSans.ttf
examples/wheel-member.sh matplotlib 3.11.2 matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf "$font"

python="$(examples/python-env.sh)"
"$python" "$here/make_data.py" "$here/model.onnx" "$font"
