# syntax=docker/dockerfile:1
# GPU image by default (CUDA base + TensorFlow's CUDA build). CPU image:
#   docker build --build-arg BASE_IMAGE=ubuntu:24.04 --build-arg TF_PACKAGE='tensorflow-cpu==2.21.*' .
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG TF_PACKAGE="tensorflow[and-cuda]==2.21.*"
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/opt/venv/bin:$PATH \
    AEC_MODELS_DIR=/models \
    AEC_HOST=0.0.0.0 \
    AEC_PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
# Our package pins the CPU wheel by default; swap in the build this image is for.
RUN pip install ".[train]" \
    && pip uninstall -y tensorflow-cpu \
    && pip install "${TF_PACKAGE}"

COPY models_store /models
RUN useradd --create-home --uid 10001 aec && chown -R aec /models
USER 10001

EXPOSE 8000
VOLUME ["/models"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/healthz"]
# One worker per GPU: throughput comes from the micro-batcher, not from more copies of the models.
CMD ["python", "-m", "service"]
