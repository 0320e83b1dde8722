# changefold developer commands. `make demo` runs the demo, `make test` the tests.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: prereqs prereqs-demo install jars demo test unit integration lint format stack-up stack-down clean

## the system packages (Java 17, Maven, PostgreSQL, Chromium, ...): checked, and on
## Debian/Ubuntu installed when run as root (else it prints the apt-get line); scripts/prereqs.sh
prereqs:
	PYTHON=$(PYTHON) bash scripts/prereqs.sh

## only what the demo needs (no browser, no docker-compose)
prereqs-demo:
	PYTHON=$(PYTHON) bash scripts/prereqs.sh --demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

## resolve the Kafka / Connect / Debezium jars with Maven (once)
jars: install
	$(BIN)/changefold stack jars

## the demo: stack, generators, engine and dashboards (prints the address; Ctrl-C stops it)
demo: prereqs-demo install jars
	$(BIN)/changefold demo

## every test: unit tests, then integration tests against a real stack started for the run
test: prereqs install jars
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m "not integration and not e2e"

integration: prereqs-demo install jars
	$(BIN)/pytest -m integration

lint: install
	$(BIN)/ruff check engine tests dashboards benchmarks
	$(BIN)/ruff format --check engine tests dashboards benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix engine tests dashboards benchmarks
	$(BIN)/ruff format engine tests dashboards benchmarks

stack-up: install
	$(BIN)/changefold stack up

stack-down: install
	$(BIN)/changefold stack down

clean:
	-$(BIN)/changefold stack down
	rm -rf .stack $(VENV) *.egg-info
