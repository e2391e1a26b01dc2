# The README's words. `make demo` runs the main job; `make test` runs the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ADMIN_DSN ?= postgresql://postgres@127.0.0.1:5432/postgres
DEMO_TENANTS ?= acme globex initech

.PHONY: install services demo demo-down test test-openbao bench unit lint format faults clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

services:
	deploy/local/ensure-services.sh

demo: install services
	$(BIN)/siloflow bootstrap --admin-dsn $(ADMIN_DSN)
	$(BIN)/siloflow migrate
	@for t in $(DEMO_TENANTS); do \
		$(BIN)/siloflow tenant show $$t >/dev/null 2>&1 || $(BIN)/siloflow tenant create $$t || exit 1; \
	done
	$(BIN)/siloflow tenant list
	$(BIN)/siloflow simulate --tenants $(shell echo $(DEMO_TENANTS) | tr ' ' ',') --hosts 100 --reports 3000
	$(BIN)/siloflow run all --burst
	SILOFLOW_BIN=$(BIN)/siloflow deploy/local/demo-summary.sh

demo-down: install
	$(BIN)/siloflow teardown --admin-dsn $(ADMIN_DSN) --yes

test: install lint
	$(BIN)/pytest

# The same suite with OpenBao issuing every test deployment's tenant logins (a dev server each run).
test-openbao: install lint
	SILOFLOW_TEST_CREDENTIALS=openbao $(BIN)/pytest

# Siloflow against a hand-written baseline; figures printed and written to bench.json.
bench: install services
	$(BIN)/siloflow bench --out bench.json $(BENCH_ARGS)

unit: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check services schemas migrations tests
	$(BIN)/ruff format --check services schemas migrations tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format services schemas migrations tests
	$(BIN)/ruff check --fix services schemas migrations tests

faults: install services
	$(BIN)/pytest -m faults tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
