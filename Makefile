# Ordo: `make run` serves the API, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Extra pytest arguments, e.g. `make test PYTEST_ARGS='-x -k schedules'` (CI adds a junit report).
PYTEST_ARGS ?=
# pytest-xdist processes (each migrates its own databases): 2 keeps the suite near 10 minutes on
# two cores; `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2

.PHONY: run test lint lint-ruff lint-format lint-mypy bench openapi clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml client/pyproject.toml
	$(BIN)/python -m pip install --quiet -e "./client[cli,demo]" -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e "./client[cli,demo]" -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/ordo db upgrade
	$(BIN)/ordo serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	# One BLAS thread: the solver does many tiny products that OpenBLAS threads only slow down.
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Three independent checks: `make -k lint` (as CI runs it) reports all of them.
lint: lint-ruff lint-format lint-mypy

lint-ruff: $(VENV)/.installed-dev
	$(BIN)/ruff check .

lint-format: $(VENV)/.installed-dev
	$(BIN)/ruff format --check .

lint-mypy: $(VENV)/.installed-dev
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.lop
	$(BIN)/python -m bench.closed_loop

openapi: $(VENV)/.installed
	$(BIN)/python -m ordo_server.app.openapi_export openapi.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
