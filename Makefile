# Every target creates its own virtualenv on first use, so `make demo` and `make test` work on a
# fresh clone with only Python 3.11+ installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast check lint format types imports bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## Run the main job end to end on this machine: a local agent, the sample tickets, a local table.
demo: $(STAMP)
	$(BIN)/python -m agentbatch.demo

## Run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q

## The fast tier only.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not spark"

lint: $(STAMP)
	$(BIN)/ruff check agentbatch tests bench
	$(BIN)/ruff format --check agentbatch tests bench

format: $(STAMP)
	$(BIN)/ruff format agentbatch tests bench
	$(BIN)/ruff check --fix agentbatch tests bench

types: $(STAMP)
	$(BIN)/mypy

## The import contract of pyproject.toml: each stage imports only the stages below it.
imports: $(STAMP)
	$(BIN)/lint-imports

check: lint types imports test

## Benchmarks: writes bench/results.md.
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .agentbatch build dist *.egg-info
