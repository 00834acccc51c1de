# The two commands of the quick start: `make demo` and `make test`. Everything they need is here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
ARGS ?=
PYTEST_ARGS ?=
BENCH ?= registry
# promtool checks the exported SLO rules: the one on PATH, else Debian's, unpacked into .tools/
PROMTOOL := $(or $(shell command -v promtool 2>/dev/null),.tools/bin/promtool)

.PHONY: demo tour test lint typecheck unit tools bench clean

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

unit: $(DEV_STAMP) $(PROMTOOL)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

tools: $(PROMTOOL)

# No root needed: apt-get download fetches the .deb (about 19 MB) into the working folder and
# dpkg-deb unpacks it there. Without it the SLO rules' test fails, saying how to get promtool.
.tools/bin/promtool:
	rm -rf .tools/deb && mkdir -p .tools/deb .tools/bin
	cd .tools/deb && apt-get download prometheus && dpkg-deb -x prometheus_*.deb root \
		&& cp root/usr/bin/promtool ../bin/promtool \
		|| echo "warning: could not get promtool from Debian's prometheus package" >&2
	rm -rf .tools/deb

bench: $(DEV_STAMP)  # make bench BENCH=registry|pipelines|serving|image_search|rollout
	$(BIN)/python bench/$(BENCH).py $(ARGS)

clean:
	rm -rf $(VENV) .venv-kfp .tools bench/.venvs .modelyard-demo .pytest_cache .mypy_cache .ruff_cache
