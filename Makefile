# Two commands do all the set-up on a new machine (Python 3.11+ is the only requirement):
#   make run    create .venv, install, and run the main job
#   make test   create .venv, install, and run every check: ruff, mypy --strict, pytest with coverage
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The service on the embedded SQLite default (./var), with the shipped tariffs, a demo hospital and roster.
run: $(STAMP)
	$(BIN)/settlement serve --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The domain must stay at 100% branch coverage by its own deterministic tests (unit and golden), not by luck
# from the service's. The other tests then run without the tracer, which made them half as slow again, and the
# property tests last.
DOMAIN_TESTS := tests/unit tests/golden
.PHONY: system-packages
system-packages:
	deploy/system-packages.sh

test: lint system-packages
	$(BIN)/pytest -m "not property" --cov --cov-branch --cov-report= $(DOMAIN_TESTS)
	$(BIN)/coverage report --include='src/settlement/domain/*' --fail-under=100
	$(BIN)/pytest -m "not property" $(addprefix --ignore=,$(DOMAIN_TESTS))
	$(BIN)/pytest -m property -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# The fault run (benchmarks/chaos.py): 56 clients on a PostgreSQL cluster of its own while workers, backends and the
# database are killed and frozen; then every uncertain call resolved and the money invariants checked. 50 s of load;
# CHAOS_ARGS="--seconds 30" for the short run CI makes, "--plant new-keys" for the planted fault.
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python -m benchmarks.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
