#!/usr/bin/env bash
# Installs ONNX Runtime's shared library into .ort/lib of this checkout, where `pipeline`
# looks for it. The library comes from the onnxruntime wheel on PyPI, fetched with pip.
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.31.1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.ort/lib"

if [ -f "$dest/libonnxruntime.so.$ORT_VERSION" ]; then
  echo "onnxruntime $ORT_VERSION already installed in $dest"
  exit 0
fi

wheels="$root/.ort/wheels"
mkdir -p "$wheels" "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  "onnxruntime==$ORT_VERSION" -d "$wheels"

python3 - "$wheels" "$dest" "$ORT_VERSION" <<'PY'
import glob, os, sys, zipfile
wheels, dest, version = sys.argv[1:]
found = sorted(glob.glob(os.path.join(wheels, f"onnxruntime-{version}-*.whl")))
if not found:
    sys.exit(f"no onnxruntime {version} wheel in {wheels}")
with zipfile.ZipFile(found[-1]) as wheel:
    for name in wheel.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with wheel.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
lib = os.path.join(dest, f"libonnxruntime.so.{version}")
if not os.path.exists(lib):
    sys.exit(f"the wheel {found[-1]} holds no libonnxruntime.so.{version}")
link = os.path.join(dest, "libonnxruntime.so")
if os.path.lexists(link):
    os.remove(link)
os.symlink(os.path.basename(lib), link)
print(f"installed {lib}")
PY
