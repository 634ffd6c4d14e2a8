# One virtual environment in .venv; every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup serve test lint bench examples wheelhouse base-image docker-test k8s-validate

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[service,cpu,train,dev]'
	rm -f $(VENV)/.installed-* && touch $@

serve: setup  ## run the service on models_store at http://127.0.0.1:8000 (default model: mnist)
	AEC_DEFAULT_MODEL=$${AEC_DEFAULT_MODEL:-mnist} $(BIN)/python -m service

examples: setup  ## examples/digit-<d>.png from MNIST (../shared/datasets or $$AEC_DATASETS, else downloaded by Keras)
	$(BIN)/python examples/make_digits.py

test: setup  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check aecodec contract service training tests bench

# ---- containers and Kubernetes (docs/deployment.md) ------------------------------------------------
EXTRAS ?= service,train,cpu

wheelhouse: setup  ## wheels for an offline image build into ./wheelhouse (EXTRAS=service,train,cpu; service,train,gpu for GPU)
	PIP="$(BIN)/python -m pip" deploy/docker/wheelhouse.sh $(EXTRAS) wheelhouse

base-image:  ## aecodec-base:bookworm, a debootstrapped Debian for building without a registry
	deploy/docker/base-image.sh aecodec-base:bookworm

docker-test: setup examples  ## build the CPU images offline, run them with docker compose, check them (needs dockerd)
	deploy/docker/docker-test.sh

k8s-validate: setup  ## the manifests under deploy/kubernetes against the Kubernetes schemas
	$(BIN)/python -m pytest -q tests/deploy/test_kubernetes.py
