# sci-agent: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/local.toml
DEMO   ?= 1

.PHONY: run demo test lint bench bench-docs gpu-validate deps clean

# `make run` installs only what running needs; the test tools have their own stamp.
$(BIN)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dashboard]'
	touch $@

$(BIN)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dashboard]'
	touch $@ $(BIN)/.run-installed

## run: set up a virtual environment, run the agent, its dashboard and (DEMO=0: not) a demo
##      workload; the banner shows the config's URLs; if either part cannot start, both stop
run: $(BIN)/.run-installed
	@$(BIN)/python scripts/run_local.py --config $(CONFIG) $(if $(filter 1 yes true,$(DEMO)),--demo)

## demo: the demo workload alone (app "web", SCI per request) against a running agent
demo: $(BIN)/.run-installed
	@$(BIN)/python scripts/run_local.py --config $(CONFIG) --demo-only

## deps: Debian packages the tests need (installed when root, listed otherwise)
deps:
	@scripts/install-debian-deps.sh

## test: install everything the tests need, then lint, type-check and run them
test: deps $(BIN)/.test-installed lint
	$(BIN)/python -m pytest

lint: $(BIN)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: run every benchmark (each writes bench/results/NAME.json), then render
##        docs/benchmarks.md from the results (CodeCarbon is installed for it only)
bench: deps $(BIN)/.test-installed
	$(BIN)/pip install --quiet codecarbon
	$(BIN)/python bench/run_all.py

## bench-docs: render docs/benchmarks.md from bench/results/*.json, running nothing
bench-docs:
	$(PYTHON) bench/render_docs.py

## gpu-validate: check NVML energy and attribution on this machine's NVIDIA GPU (needs torch);
##               writes bench/results/gpu_validation.json
gpu-validate: $(BIN)/.test-installed
	$(BIN)/python bench/gpu_validation.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
