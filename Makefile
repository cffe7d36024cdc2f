# t2i_lightning: every target that runs Python depends on `install`, which builds .venv once.
# Override any variable on the command line, e.g. `make data TRAIN_N=2000 WORKERS=8`.

SHELL        := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS   ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
T2I          := $(VENV)/bin/t2i
STAMP        := $(VENV)/.installed-stamp

DATA         ?= data/shapes
RUNS         ?= runs
ACCELERATOR  ?= auto
DEVICES      ?= auto
WORKERS      ?= $(shell nproc 2>/dev/null || echo 2)
SEED         ?= 0
SIZE         ?= 256
TRAIN_N      ?= 20000
VAL_N        ?= 1000
TEST_N       ?= 1000
PYTEST_ARGS  ?=

.PHONY: help install data inspect demo test test-all lint tensorboard clean

help: ## list the targets (this message)
	@echo "t2i_lightning: staged text-to-image diffusion with PyTorch Lightning"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables (override as VAR=value): DATA=$(DATA) RUNS=$(RUNS) ACCELERATOR=$(ACCELERATOR) DEVICES=$(DEVICES)"
	@echo "  WORKERS=$(WORKERS) SEED=$(SEED) SIZE=$(SIZE) TRAIN_N=$(TRAIN_N) VAL_N=$(VAL_N) TEST_N=$(TEST_N)"

install: $(STAMP) ## create .venv (if missing) and install the package with dev extras

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

data: install ## generate the embedded "shapes" dataset as WebDataset shards under $(DATA)
	$(T2I) data shapes --out $(DATA) --train $(TRAIN_N) --val $(VAL_N) --test $(TEST_N) \
	    --size $(SIZE) --seed $(SEED) --workers $(WORKERS)

inspect: install ## print counts and captions of $(DATA) and write a grid to $(RUNS)/demo/shapes_grid.png
	$(T2I) data inspect $(DATA) --out $(RUNS)/demo/shapes_grid.png

demo: data inspect ## the whole pipeline that exists so far, on the embedded data

test: install ## run the fast test suite (what CI runs)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: install ## run every test, the slow ones included
	$(PY) -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

lint: install ## ruff check
	$(VENV)/bin/ruff check .

tensorboard: install ## serve TensorBoard over $(RUNS)
	$(VENV)/bin/tensorboard --logdir $(RUNS)

clean: ## remove runs, caches and build metadata (keeps .venv and data)
	rm -rf $(RUNS) lightning_logs .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
