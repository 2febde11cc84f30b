# sci-agent: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/local.toml

.PHONY: run test lint bench gpu-validate deps clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dashboard]'
	touch $@

## run: set up a virtual environment, run the agent on the embedded store and the dashboard
run: $(BIN)/.installed
	@echo "sci-agent: sampling every few seconds into var/sci-agent.db (Ctrl-C stops both)."
	@echo "           dashboard: http://127.0.0.1:8501"
	@echo "           one interval in full: $(BIN)/sci-agent --config $(CONFIG) once"
	$(BIN)/sci-agent --config $(CONFIG) doctor || true
	$(BIN)/sci-agent --config $(CONFIG) dashboard & dash=$$!; \
	trap 'kill $$dash 2>/dev/null' EXIT INT TERM; \
	$(BIN)/sci-agent --config $(CONFIG) run --print

## deps: Debian packages the tests need (installed when root, listed otherwise)
deps:
	@scripts/install-debian-deps.sh

## test: install everything the tests need, then lint, type-check and run them
test: deps $(BIN)/.installed lint
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: run every benchmark and write docs/benchmarks.md (CodeCarbon is installed for it only)
bench: deps $(BIN)/.installed
	$(BIN)/pip install --quiet codecarbon
	$(BIN)/python bench/run_all.py

## gpu-validate: check NVML energy and attribution on this machine's NVIDIA GPU (needs torch)
gpu-validate: $(BIN)/.installed
	$(BIN)/python bench/gpu_validation.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
