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

# The Node.js producer of the interop tests (tests/integration/interop), from its lock file.
NODE_INTEROP := harness/interop_node
$(NODE_INTEROP)/node_modules/.installed: $(NODE_INTEROP)/package-lock.json
	cd $(NODE_INTEROP) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(NODE_INTEROP)/node_modules/.installed

# The main job on embedded defaults (no server): demo requests, `vividly-worker job`, results.
# Without a system ffmpeg, the `demo` extra brings a packaged one for the video.
demo: $(VENV)/.installed  # Python only: the Node.js producer is for the tests
	@command -v ffmpeg >/dev/null || $(BIN)/python -c 'import imageio_ffmpeg' 2>/dev/null \
		|| $(BIN)/pip install --quiet -e '.[test,demo]'
	$(BIN)/vividly demo

system-packages:
	scripts/install-system-packages.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy vividly_tasks worker_entry

test: lint typecheck
	$(BIN)/pytest

# Every benchmark, then docs/benchmarks.md (~25 min; bench/README.md). The `bench` extra is
# Kombu's gcpubsub's dependency, the transport benchmark's peer.
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.all

clean:
	rm -rf $(VENV) .vividly .mypy_cache .ruff_cache .pytest_cache $(NODE_INTEROP)/node_modules
