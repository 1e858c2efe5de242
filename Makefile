# Two commands for a newcomer: `make run` and `make test` (`make test-fast` while editing).
# All of them bootstrap .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0
# Each step is its own Python process importing torch, MLflow and pypianoroll: with bytecode
# writes off (PYTHONDONTWRITEBYTECODE, set on some machines) every one of them compiles those
# packages from source again. Written once into .venv, later processes reuse them
# (the timings of this and the two choices below: docs/decisions.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test test-fast venv lint bench clean help image compile k8s-validate

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv

# torch pinned and the project, in one uv resolve under the locked constraint set, so the
# resolver never backtracks on boto3 x aiobotocore, and uv unpacks torch far faster than pip.
# uv does not read pip's configuration: the local wheel folder pip is pointed at ($PIP_FIND_LINKS,
# else pip.conf's find-links: where this machine keeps its CPU torch wheel) is handed to uv, which
# then prefers that wheel to PyPI's CUDA build of the same version. Without one, torch comes from
# the index, as pip's would.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	links="$${PIP_FIND_LINKS:-$$($(BIN)/pip config get global.find-links 2>/dev/null)}"; \
	$(BIN)/uv pip install -q --python $(BIN)/python -c requirements.lock \
	  $$(for d in $$links; do echo "--find-links $$d"; done) "$(TORCH_PIN)" -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project

# uv installs without bytecode, so the first imports of torch, MLflow and the steps compile it
# (seconds of one core). `run` has that done in the background while ingest and validate, which
# leave a core idle, run, instead of at the start of train; the stamp makes it once per venv.
WARM := $(VENV)/.bytecode-warm
WARM_IMPORTS := torch, mlflow.pytorch, mlflow.pyfunc, lpdvae.training.loop, lpdvae.steps.evaluate, \
  lpdvae.steps.register

run: $(STAMP)  ## demo corpus -> six steps (dvc repro) -> registered model; idempotent
	@[ -f $(WARM) ] || { $(BIN)/python -c "import $(WARM_IMPORTS)" >/dev/null 2>&1 && touch $(WARM); } &
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/lpdvae status

test: $(STAMP)  ## the whole test suite (MLflow server, S3 API, torchrun, browser, dvc repro)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the suite without the slow tests (training, servers, browser)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src components pipelines tests benchmarks

bench: $(STAMP)  ## benchmarks, JSON into benchmarks/results/
	$(BIN)/python -m benchmarks

# Kubeflow: an immutable image, the pipeline compiled against it, the manifests checked.
REGISTRY ?= localhost/lpdvae
VARIANT ?= cpu
GPU ?= 1
PIPELINE ?= build/pipeline.yaml

image:  ## build the image (VARIANT=cpu|cuda) tagged git-<rev>-<content>; PUSH=1 pins its digest
	REGISTRY=$(REGISTRY) infra/docker/build.sh $(VARIANT)

compile: $(STAMP)  ## compile the pipeline against build/image-*.ref (GPU=0: no GPU on train)
	@test -s build/image-cpu.ref || { echo "no build/image-cpu.ref: run make image first" >&2; exit 1; }
	$(BIN)/python -m pipelines compile --out $(PIPELINE) --image "$$(cat build/image-cpu.ref)" \
	  $$(if [ "$(GPU)" = 0 ]; then echo --no-gpu; \
	     elif [ -s build/image-cuda.ref ]; then echo --train-image "$$(cat build/image-cuda.ref)"; fi)

k8s-validate: $(STAMP)  ## render every overlay and check it (schemas, restricted PSS, RBAC, images)
	$(BIN)/python -m pytest -q tests/test_manifests.py

clean:  ## remove the venv and pipeline outputs (not the DVC cache)
	rm -rf $(VENV) data/raw data/validated data/tensors models reports
