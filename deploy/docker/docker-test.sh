#!/usr/bin/env bash
# `make docker-test`: build the CPU images offline and run tests/deploy/test_docker_compose.py against
# them under the real Docker engine (docker compose up, README curls, non-root, read-only models,
# train fail-fast, SIGTERM drain), then tear down. Exit 0 only if every check held.
#
# Offline by construction, as CI and air-gapped hosts need it: the base image is a debootstrapped
# Debian bookworm (deploy/docker/base-image.sh) and pip installs from a wheelhouse made on this host
# (deploy/docker/wheelhouse.sh). Both are cached in $AEC_CACHE_DIR (default /var/cache/aecodec),
# the wheelhouse keyed by pyproject.toml's hash, so a second run on the same machine downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
CACHE=${AEC_CACHE_DIR:-/var/cache/aecodec}
BASE_IMAGE=${AEC_BASE_IMAGE:-aecodec-base:bookworm}
EXTRAS=service,train,cpu  # one wheelhouse serves both images
export DOCKER_BUILDKIT=0  # the legacy builder: no frontend image to pull, works without a registry
FIGURES=build/docker-test/figures.json

docker info >/dev/null 2>&1 || { echo "no Docker engine answers (start dockerd; .ci/run does)" >&2; exit 1; }
mkdir -p build/docker-test "$CACHE"
rm -f "$FIGURES"
now() { date +%s%N; }
since() { local d=$((($(now) - $1) / 100000000)); printf '%d.%d' $((d / 10)) $((d % 10)); }  # seconds, 0.1

t=$(now)
deploy/docker/base-image.sh "$BASE_IMAGE"
base_s=$(since "$t")

t=$(now)
key=$(sha1sum pyproject.toml | cut -c1-12)
wheels="$CACHE/wheelhouse-$key"
PIP="$PYTHON -m pip" deploy/docker/wheelhouse.sh "$EXTRAS" "$wheels"
find "$CACHE" -maxdepth 1 -name 'wheelhouse-*' ! -name "wheelhouse-$key" -exec rm -rf {} +  # older keys
# Into the build context (hard links when on the same filesystem: no copy of ~400 MB).
find wheelhouse -mindepth 1 ! -name README.md -delete
cp -al "$wheels/." wheelhouse/ 2>/dev/null || cp -a "$wheels/." wheelhouse/
wheels_s=$(since "$t")

# pip's real resolver on [gpu] (metadata only, needs PyPI): exactly one TensorFlow, with its CUDA wheels.
t=$(now)
"$PYTHON" deploy/docker/resolve_extras.py service,gpu
resolve_s=$(since "$t")

build() {  # target extras tag
  nice -n 10 docker build --quiet --target "$1" --build-arg EXTRAS="$2" --build-arg PIP_OFFLINE=1 \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$3" . >/dev/null
}
t=$(now); build api service,cpu aecodec:cpu; api_s=$(since "$t")
t=$(now); build train train,cpu aecodec:cpu-train; train_s=$(since "$t")
cat >"$FIGURES" <<JSON
{"base_image_s": $base_s, "wheelhouse_s": $wheels_s, "resolve_gpu_s": $resolve_s, "build_api_s": $api_s, "build_train_s": $train_s}
JSON
echo "docker-test: base image ${base_s}s, wheelhouse ${wheels_s}s, api image ${api_s}s, train image ${train_s}s"

# Bound the engine's disk: every rebuild leaves the previous images untagged. Those older than a day go
# (a build cache that old is rebuilt once, on the next run).
docker image prune -f --filter until=24h >/dev/null || true

AEC_DOCKER_TEST=1 "$PYTHON" -m pytest tests/deploy/test_docker_compose.py -v -s -p no:cacheprovider
