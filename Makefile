# The two commands: `make up` runs chipclear, `make test` proves it works.
# Both create .venv from nothing; no target downloads anything beyond the package registry.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/chipclear up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -ra

# The pure tests (domain rules and the layer rules: no server, no database), for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/pytest -q -ra tests/domain tests/test_layers.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/chipclear bench

clean:
	rm -rf $(VENV) .chipclear .pytest_cache .mypy_cache .ruff_cache
