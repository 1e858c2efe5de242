# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: run test venv lint bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv

# torch first (the CPU wheel on this machine), then the project under the locked constraint set,
# so the resolver never backtracks on boto3 x aiobotocore.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/uv pip install -q --python $(BIN)/python -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project

run: $(STAMP)  ## demo corpus -> six steps (dvc repro) -> registered model; idempotent
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/lpdvae status

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src components pipelines tests benchmarks

bench: $(STAMP)  ## benchmarks, JSON into benchmarks/results/
	$(BIN)/python -m benchmarks

clean:  ## remove the venv and pipeline outputs (not the DVC cache)
	rm -rf $(VENV) data/raw data/validated data/tensors models reports
