# The README's words. `make demo` runs the main job; `make test` runs the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ADMIN_DSN ?= postgresql://postgres@127.0.0.1:5432/postgres
DEMO_TENANTS ?= acme globex initech

.PHONY: install services demo demo-down test test-openbao bench bench-api bench-commits bench-move bench-matching bench-matching-cost bench-reevaluation unit lint format faults clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

services:
	deploy/local/ensure-services.sh

demo: install services
	$(BIN)/siloflow demo --admin-dsn $(ADMIN_DSN) --tenants $(shell echo $(DEMO_TENANTS) | tr ' ' ',')

demo-down: install
	$(BIN)/siloflow demo --down --admin-dsn $(ADMIN_DSN)

test: install lint
	$(BIN)/pytest

# The same suite with OpenBao issuing every test deployment's tenant logins (a dev server each run).
test-openbao: install lint
	SILOFLOW_TEST_CREDENTIALS=openbao $(BIN)/pytest

# Siloflow against a hand-written baseline; figures printed and written to bench.json.
bench: install services
	$(BIN)/siloflow bench --out bench.json $(BENCH_ARGS)

bench-commits: install services
	$(BIN)/python -m services.bench.commits

# The API's reads under load (docs/performance.md, "The API under load"); needs npm (loadtest).
bench-api: install services
	$(BIN)/python -m services.bench.reads $(BENCH_ARGS)

# A tenant of 100,000 reports moved between two PostgreSQL servers of its own under load, then
# backed up and restored (docs/scaling.md).
bench-move: install services
	$(BIN)/python -m services.bench.moving $(BENCH_ARGS)

# Matching a ~2,000-package snapshot against the shipped bookworm catalog, in-process.
bench-matching: install
	$(BIN)/python -m services.bench.matching

# siloflow's throughput with the catalog matched against the same pipeline with matching off.
bench-matching-cost: install services
	$(BIN)/siloflow bench --matching-cost --out bench-matching-cost.json $(BENCH_ARGS)

# The sweeper's re-evaluation after a new catalog revision, on scratch tenant databases.
bench-reevaluation: install services
	$(BIN)/python -m services.bench.reevaluation

unit: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check services schemas migrations tests
	$(BIN)/ruff format --check services schemas migrations tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format services schemas migrations tests
	$(BIN)/ruff check --fix services schemas migrations tests

# Slow fault scenarios against servers of their own (a 3-node RabbitMQ cluster, a PostgreSQL
# server): the table goes to faults.json and the terminal. See docs/reliability.md.
faults: install services
	PYTEST=$(BIN)/pytest tests/faults/run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
