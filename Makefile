# One virtual environment in .venv; every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup serve test lint bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,train,dev]'
	rm -f $(VENV)/.installed-* && touch $@

serve: setup  ## run the service on models_store at http://127.0.0.1:8000 (default model: mnist)
	AEC_DEFAULT_MODEL=$${AEC_DEFAULT_MODEL:-mnist} $(BIN)/python -m service

examples: setup  ## examples/digit-<d>.png from MNIST (../shared/datasets or $$AEC_DATASETS, else downloaded by Keras)
	$(BIN)/python examples/make_digits.py

test: setup  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check service training tests bench
