# The two commands: `make up` runs chipclear, `make test` proves it works.
# Both create .venv from nothing; no target downloads anything beyond the package registry.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test test-fast lint format bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Other ports: make up PORT=7300 UI_PORT=8300 (then export TEMPORAL_ADDRESS=127.0.0.1:7300 for the CLI).
PORT    ?= 7233
UI_PORT ?= 8233

up: $(STAMP)
	$(BIN)/chipclear up --port $(PORT) --ui-port $(UI_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest processes, each test file whole on one of them (its module fixtures built once): most
# tests wait on the dev server or a subprocess, so two halve the wall time without crowding 2 cores.
test: lint
	$(BIN)/pytest -q -ra -n 2 --dist loadfile

# The pure tests (domain rules and the layer rules: no server, no database), for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/pytest -q -ra tests/domain tests/test_layers.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/chipclear bench --write-docs docs/performance.md

# The fault drills of tests/faults at full size (400 requests each), printing the figures that
# docs/operations.md shows: minutes of work, for a quiet machine.
chaos: $(STAMP)
	$(BIN)/python -m tests.faults.chaos

# The store and keys live in the chipclear home (`chipclear doctor` names it), never removed here:
# they are the legal record. Delete that directory yourself to start over.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
