# lowrouter: `make run` starts the gateway on the embedded SQLite default; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: setup browser pgbouncer run test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# The dashboard's browser test drives Debian's Chromium (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "make: chromium not installed; the browser test will be skipped (fails under CI=true)"; }

# The PgBouncer tests start their own instances of Debian's pgbouncer (transaction and session mode).
pgbouncer:
	@sh deploy/install-pgbouncer.sh

run: setup
	$(BIN)/lowrouter serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup browser pgbouncer
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n 2 --dist loadgroup

# The pyramid's base: no servers, no subprocesses, no PostgreSQL, nothing slow (README, Tests).
# Under LOWROUTER_TEST_FAST=1 a test that starts a server or a subprocess fails, naming its marker.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: compiling and assert-rewriting
# every module again was half of the collection's CPU.
test-fast: setup
	PYTHONDONTWRITEBYTECODE= LOWROUTER_TEST_FAST=1 $(BIN)/pytest -q -p no:cacheprovider \
		-m "not slow and not e2e and not postgres"

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
