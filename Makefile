# railguard: `make test` runs every gate CI runs; `make demo` runs the local example.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := test
.PHONY: install test lint typecheck pytest pytest-postgres pytest-postgres-all demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -n 3
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

# The suite again with every store on PostgreSQL (RAILGUARD_TEST_POSTGRES, default
# postgres@127.0.0.1:5432; .ci/run starts it): both backends pass the same tests.
pytest-postgres: $(STAMP)
	$(BIN)/pytest -q -n 4 --store=postgres

# Every test on PostgreSQL, those that open no store too (not in CI: a minute longer).
pytest-postgres-all: $(STAMP)
	$(BIN)/pytest -q -n 4 --store=postgres --store-all

test: lint typecheck pytest pytest-postgres

demo: $(STAMP)
	$(BIN)/railguard demo

bench: $(STAMP)
	$(BIN)/python bench/probe_load.py
	$(BIN)/python bench/railway_budget.py
	$(BIN)/python bench/rollback_time.py
	$(BIN)/python bench/decision_latency.py
	$(BIN)/python bench/takeover.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .ruff_cache .pytest_cache
