# aecodec images: one Dockerfile, two targets (docs/deployment.md has the whole story).
#
#   api   (the default: last stage)  the service, `python -m service`, models baked in at /models
#   train                             `python -m training ...` for compose's `train` profile
#
# EXTRAS names pyproject's extras: `service` (api) or `train` (train), and the TensorFlow build, exactly one:
#   cpu        tensorflow-cpu                              docker build --build-arg EXTRAS=service,cpu -t aecodec:cpu .
#   gpu        tensorflow[and-cuda]: CUDA + cuDNN arrive as pip wheels, so the base is plain Debian (a
#              CUDA base image would carry every CUDA library a second time); the host needs only the
#              NVIDIA driver and the NVIDIA Container Toolkit.
#   the train target:  --build-arg EXTRAS=train,cpu --target train
#
# Offline / air-gapped builds: make a wheelhouse on a machine that reaches PyPI
# (`make wheelhouse EXTRAS=service,train,cpu`, or deploy/docker/wheelhouse.sh) and build with
# --build-arg PIP_OFFLINE=1: pip then installs from ./wheelhouse only (`--no-index`). Without a registry,
# pass a local Debian bookworm as BASE_IMAGE (deploy/docker/base-image.sh makes one with debootstrap).
# Works with BuildKit and with the legacy builder (DOCKER_BUILDKIT=0); no `# syntax=` line, so nothing
# is pulled besides BASE_IMAGE.
ARG BASE_IMAGE=debian:bookworm-slim

# --- base: Python and the unprivileged user, shared by every stage -----------------------------------
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Debian's python3 (3.11 on bookworm): the venv below links to it, so every stage installs the same one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 aec \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/aec --shell /usr/sbin/nologin aec

# --- venv: the dependencies and extras in /opt/venv (wheels and build tools stay in this stage) -----
# Only pyproject.toml reaches this stage, so editing the code does not reinstall TensorFlow: the code
# is copied into the final stages, at /app (PYTHONPATH).
FROM base AS venv
ARG EXTRAS=service,cpu
ARG PIP_OFFLINE=
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
# ./wheelhouse holds only a README unless a wheelhouse was made; online builds fall through to PyPI.
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml /src/
COPY deploy/docker/requirements.py deploy/docker/one_tensorflow.py /usr/local/bin/
# Exactly one TensorFlow, or no image (tensorflow and tensorflow-cpu share one package folder).
RUN python3 /usr/local/bin/requirements.py "${EXTRAS}" --no-build --pyproject /src/pyproject.toml > /tmp/requirements.txt \
    && PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
       pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse -r /tmp/requirements.txt \
    && python /usr/local/bin/one_tensorflow.py

# --- train: the training CLI; refuses to start when it could not write its results ---------------------
FROM base AS train
COPY --from=venv /opt/venv /opt/venv
COPY deploy/docker/train_entrypoint.py /usr/local/bin/aec-train
COPY contract /app/contract
COPY training /app/training
ENV PYTHONPATH=/app
WORKDIR /app
RUN mkdir -p /app/models_store /app/runs && chown 10001:10001 /app/models_store /app/runs
# uid 10001 writes models_store/ and runs/: bind-mounted host folders must be writable by it (or run
# the container as their owner: compose's AEC_UID/AEC_GID). aec-train checks before any training.
USER 10001:10001
ENTRYPOINT ["python", "/usr/local/bin/aec-train"]
CMD ["--help"]

# --- api: the service (the default target) ------------------------------------------------------------
FROM base AS api
COPY --from=venv /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/aec-healthcheck
COPY models_store /models
# The service only: it never imports training/ (DESIGN.md), and the image carries no training extras.
COPY contract /app/contract
COPY service /app/service
ENV PYTHONPATH=/app \
    AEC_MODELS_DIR=/models \
    AEC_HOST=0.0.0.0 \
    AEC_PORT=8000
WORKDIR /home/aec
USER 10001:10001
EXPOSE 8000
VOLUME ["/models"]
# Healthy means ready (/readyz: models loaded and warm), not merely alive: a starting replica gets no traffic.
HEALTHCHECK --interval=10s --timeout=4s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/bin/aec-healthcheck"]
# One worker per GPU: throughput comes from the micro-batcher, not from more copies of the models.
# SIGTERM drains in-flight requests for up to AEC_SHUTDOWN_TIMEOUT_S (30 s): give the orchestrator a
# longer grace period (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
CMD ["python", "-m", "service"]
