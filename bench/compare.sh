#!/usr/bin/env bash
# `pipeline` against ONNX Runtime's quantization tool and Microsoft Olive, on the same work:
# dynamic INT8, static INT8 (QDQ, MinMax, per tensor) and weight-only INT4 (MatMulNBits,
# block 32, symmetric), on the digits CNN (examples/digits; no INT4: it has no MatMul) and
# paraphrase-MiniLM-L3-v2 (scripts/fetch-minilm.sh, random token ids as in
# bench/weights-minilm.sh). Each quantization runs three ways: `pipeline run --no-measure` on a
# one-pass recipe, a Python process calling `onnxruntime.quantization` (bench/compare_ort.py,
# the reference) and `olive run` on an equivalent Olive config. bench/compare.py prints, per
# model and method, each command's wall time, the quantization step's time (pipeline: the
# step's `build_s` in report.json; ORT: the call; Olive: its "Pass ... finished in" log line),
# peak memory (max RSS, by GNU time), the model's size, its p50 latency, its accuracy (digits:
# top-1) or fidelity (MiniLM: mean cosine of the sentence embedding to the float model's), with
# ratios to ORT's figures, and how far each model's output is from that of ORT's model. No
# test runs this.
#
# Tools: a virtual environment of its own, .cache/bench/venv, made on first use from PyPI with
# onnxruntime==1.31.1, olive-ai==0.13.0 and requests (which Olive imports without requiring
# it). Olive requires torch, transformers and torchmetrics (its data loaders are torch's), and
# PyPI's Linux torch brings CUDA libraries: the environment takes about 6 GB of disk and a few
# minutes to install; nothing is downloaded after that. Olive's telemetry is turned off
# (OLIVE_DISABLE_TELEMETRY=1) and no model hub is used.
#
# Work files go to .cache/bench/compare/ (results.json and results.md at the end). Settings,
# by variable: MODELS (digits,minilm,ocr; ocr is PaddleOCR's text-direction classifier, made
# by examples/ocr-direction/prepare.sh), METHODS (dynamic,static,int4), REPEATS (3: each
# command runs that many times, medians), RUNS (latency runs: 300 for digits, 100 for ocr, 20
# for MiniLM), THREADS (1, intra-op threads of every session), PROFILE (release, or debug:
# quicker to build, slower to quantize).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. bench/lib.sh

models="${MODELS:-digits,minilm,ocr}"
methods="${METHODS:-dynamic,static,int4}"
repeats="${REPEATS:-3}"
runs="${RUNS:-0}"
threads="${THREADS:-1}"
profile="${PROFILE:-release}"
work=.cache/bench/compare
venv=.cache/bench/venv
# olive-ai 0.13.0 imports requests (its telemetry) without requiring it.
packages=(onnxruntime==1.31.1 olive-ai==0.13.0 requests==2.34.2)

# The environment is (re)made when its list of packages is not the one above.
stamp="$venv/bench-packages.txt"
if [ ! -x "$venv/bin/olive" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
  echo "installing ${packages[*]} into $venv (about 6 GB, a few minutes) ..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "${packages[@]}" >&2
  echo "${packages[*]}" >"$stamp"
fi
python="$venv/bin/python"
if [ ! -x /usr/bin/time ]; then
  echo "error: no /usr/bin/time (GNU time measures peak memory); hint: apt-get install time" >&2
  exit 2
fi

pipeline="$(bench_build_pipeline "$profile")"
mkdir -p "$work"
case ",$models," in
  *,ocr,*)
    if [ ! -x examples/ocr-direction/prepare.sh ]; then
      echo "error: MODELS has ocr but examples/ocr-direction/prepare.sh is missing" >&2
      echo "  hint: leave ocr out of MODELS on a checkout without that example" >&2
      exit 2
    fi
    examples/ocr-direction/prepare.sh >&2
    ;;
esac
case ",$models," in
  *,minilm,*)
    scripts/fetch-minilm.sh >/dev/null
    bench_minilm_tokens "$python" "$work/minilm-inputs.npz" 4 128 0
    bench_minilm_tokens "$python" "$work/minilm-calibration.npz" 4 128 1
    ;;
esac

echo "pipeline: $pipeline ($profile build); $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p')"
"$python" bench/compare.py --pipeline "$pipeline" --olive "$venv/bin/olive" --work "$work" \
  --models "$models" --methods "$methods" --repeats "$repeats" --runs "$runs" --threads "$threads"
