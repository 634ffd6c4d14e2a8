#!/usr/bin/env bash
# Make a wheelhouse for an offline (air-gapped) image build: every wheel that `pip install '.[EXTRAS]'`
# needs inside the image, for the image's Python (Debian bookworm: CPython 3.11, manylinux x86_64),
# downloaded on a machine that reaches PyPI. The build then installs with `pip --no-index` from it.
#
#   deploy/docker/wheelhouse.sh EXTRAS DEST     # e.g. service,cpu wheelhouse/  or  service,train,cpu wheelhouse/
#
# DEST gets the wheels and a stamp naming what they were made for; a DEST whose stamp matches is kept
# as it is (CI points DEST into a cache outside the checkout, keyed by pyproject.toml's hash).
set -euo pipefail
EXTRAS=${1:?extras, e.g. service,cpu or service,train,cpu}
DEST=${2:?destination folder}
PY_VERSION=${AEC_WHEEL_PYTHON:-3.11}
GLIBC=${AEC_WHEEL_GLIBC:-36}  # bookworm: glibc 2.36
PIP=${PIP:-python3 -m pip}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

stamp="extras=$EXTRAS python=$PY_VERSION glibc=2.$GLIBC pyproject=$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
if [[ -f "$DEST/.stamp" && "$(cat "$DEST/.stamp")" == "$stamp" ]]; then
  echo "wheelhouse $DEST: up to date ($stamp)"
  exit 0
fi
mkdir -p "$DEST"
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT
python3 "$HERE/requirements.py" "$EXTRAS" >"$reqs"
echo "wheelhouse $DEST: pip download for $stamp"
# --platform/--python-version resolve for the image, not for this machine (they need --only-binary).
# pip matches --platform tags exactly, so name every manylinux level the image's glibc runs, and the
# legacy aliases of 2_5/2_12/2_17 (a wheel tagged only manylinux2010, like libclang's, matches no other).
platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for minor in 5 12 17 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39; do
  ((minor <= GLIBC)) && platforms+=(--platform "manylinux_2_${minor}_x86_64")
done
$PIP download --quiet --dest "$DEST" --only-binary=:all: \
  --python-version "$PY_VERSION" --implementation cp "${platforms[@]}" -r "$reqs"
echo "$stamp" >"$DEST/.stamp"
du -sh "$DEST"
