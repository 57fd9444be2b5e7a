# Two commands matter: `make demo` (the agent, offline) and `make test` (everything, from nothing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# sam build needs the Lambda runtime's Python on PATH; pyenv provides it where it is installed.
export PYENV_VERSION ?= $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.11' | head -1):$(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.12' | head -1)

.PHONY: venv demo test unit integration e2e lint format validate build clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: venv
	$(BIN)/twelvefactor demo $(ARGS)

test: venv lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Deploy-side targets: `sam validate --lint` and `sam build` work offline (tests run both too).
ARCH ?= x86_64
validate: venv
	SAM_CLI_TELEMETRY=0 $(BIN)/sam validate --lint

build: venv
	SAM_CLI_TELEMETRY=0 ARCHITECTURE=$(ARCH) $(BIN)/sam build --parameter-overrides Architecture=$(ARCH)

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .aws-sam .mypy_cache .ruff_cache .pytest_cache
