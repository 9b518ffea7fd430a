# skyfill: `make demo` runs a backfill of a simulated network; `make test` runs the test suite.
# Both install what they need (a venv with the package, the reference PDS from ../shared/refpds,
# and for the tests Apache Airflow in a venv of its own, .venv-airflow).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
REFPDS_HOME ?= /tmp/refpds
export REFPDS_HOME

AIRFLOW_VENV := .venv-airflow

.PHONY: install build-deps system-deps demo test test-fast lint bench refpds airflow clean

$(VENV)/.installed: pyproject.toml setup.py src/skyfill/atproto/_fastrepo.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: build-deps $(VENV)/.installed

# The C decoder (setup.py) needs a compiler and OpenSSL's headers; without them skyfill still
# installs and runs, on the pure-Python decoder (tests/atproto/test_fastrepo.py says so).
build-deps:
	@MISSING=""; \
	command -v gcc >/dev/null 2>&1 || MISSING="$$MISSING gcc"; \
	[ -e /usr/include/openssl/sha.h ] || MISSING="$$MISSING libssl-dev"; \
	if [ -n "$$MISSING" ]; then \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing$$MISSING"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$MISSING; \
	fi

# Apache Airflow for the DAG's tests (tests/deploy/test_airflow.py): a venv of its own, since
# Airflow pins many packages, every one pinned in deploy/airflow/constraints.txt; made once,
# then kept (about a minute on a fresh machine).
$(AIRFLOW_VENV)/.installed: deploy/airflow/constraints.txt
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet 'apache-airflow==3.3.2' -c deploy/airflow/constraints.txt
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

demo: install
	$(BIN)/skyfill demo

# redis-server backs the Redis state-store tests (tests/engine/test_state_contract.py);
# PostgreSQL (initdb + postgres, started by the tests on a free port) for the PostgreSQL sink;
# chromium (headless) loads the dashboard and the HTML report (tests/monitor/test_browser.py).
POSTGRES_FOUND = command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
system-deps:
	@MISSING=""; \
	command -v redis-server >/dev/null 2>&1 || MISSING="$$MISSING redis-server"; \
	command -v chromium >/dev/null 2>&1 || MISSING="$$MISSING chromium"; \
	$(POSTGRES_FOUND) || MISSING="$$MISSING postgresql"; \
	if [ -n "$$MISSING" ]; then \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing$$MISSING"; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$MISSING; \
	fi

refpds:
	@bash $(SHARED)/refpds/setup.sh > $(VENV)/refpds-node

lint: install
	$(BIN)/ruff check src tests benchmarks deploy
	$(BIN)/ruff format --check src tests benchmarks deploy
	$(BIN)/basedpyright -p .  # this project's config, not one in a parent directory

test: install system-deps refpds airflow lint
	REFPDS_NODE=$$(cat $(VENV)/refpds-node) SKYFILL_SHARED=$(SHARED) $(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m 'not refpds and not slow'

bench: install system-deps refpds
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/e2e.py
	$(BIN)/python benchmarks/postgres_load.py

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) skyfill-work test-output
