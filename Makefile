# One-word commands. `make test` is the test command; .ci/run calls it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo system-packages lint typecheck test bench clean

# The stamp re-runs the install only when the dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job on embedded defaults (no server): demo requests, `vividly-worker job`, results.
demo: install
	$(BIN)/vividly demo

system-packages:
	scripts/install-system-packages.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy vividly_tasks worker_entry

test: lint typecheck
	$(BIN)/pytest

# Every benchmark, then docs/benchmarks.md (~40 min; bench/README.md). The `bench` extra is
# Kombu's gcpubsub's dependency, the transport benchmark's peer.
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python bench/all.py

clean:
	rm -rf $(VENV) .vividly .mypy_cache .ruff_cache .pytest_cache
