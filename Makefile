# The two commands of the quick start: `make demo` and `make test`. Everything they need is here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
ARGS ?=
PYTEST_ARGS ?=
BENCH ?= registry

.PHONY: demo tour test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[image]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

demo: $(RUNTIME_STAMP)  # the image search; make demo ARGS=--once exits after the queries
	$(BIN)/python -m modelyard.apps.image_search.demo $(ARGS)

tour: $(RUNTIME_STAMP)  # the model repository's tour
	$(BIN)/python examples/registry_tour.py $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(DEV_STAMP)  # make bench BENCH=registry|pipelines|serving
	$(BIN)/python bench/$(BENCH).py $(ARGS)

clean:
	rm -rf $(VENV) .venv-kfp bench/.venvs .modelyard-demo .pytest_cache .mypy_cache .ruff_cache
