# Every target sets itself up: a .venv with the project and its dev tools, created when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo demo-kafka test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(PY) -m demo

demo-kafka: $(STAMP)
	@$(PY) -m demo --kafka

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy streams outbox relay consumers demo examples

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Randomized fault campaign (tests/chaos): CHAOS_SECONDS (default 600), CHAOS_SEED (default random,
# printed; the same seed replays the same fault schedule). Ends with the checker's table; exits 1 on
# any violation. CHAOS_ARGS passes more flags (e.g. --fault 'kill -9 store' -v). CHAOS_ARGS=--kafka-cluster
# runs the same campaign against a 3-node Apache Kafka cluster (RF 3, min ISR 2), killing partition leaders.
chaos: $(STAMP)
	$(PY) -m tests.chaos $(if $(CHAOS_SECONDS),--seconds $(CHAOS_SECONDS)) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS)

bench: $(STAMP)
	$(PY) bench/streams.py

# The compose stack for real under a local Docker engine (images built from Debian packages).
.PHONY: compose-test
compose-test:
	compose/compose-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
