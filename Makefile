# One-word commands. `make test` is the test command; .ci/run calls it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install system-packages lint typecheck test clean

# The stamp re-runs the install only when the dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

system-packages:
	scripts/install-system-packages.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy vividly_tasks worker_entry

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .vividly .mypy_cache .ruff_cache .pytest_cache
