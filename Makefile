# skyfill: `make demo` runs a backfill of a simulated network; `make test` runs the test suite.
# Both install what they need (a venv with the package, the reference PDS from ../shared/refpds).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
REFPDS_HOME ?= /tmp/refpds
export REFPDS_HOME

.PHONY: install system-deps demo test test-fast lint bench refpds clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/skyfill demo

# redis-server backs the Redis state-store tests (tests/engine/test_state_contract.py);
# chromium (headless) loads the dashboard and the HTML report (tests/monitor/test_browser.py).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

refpds:
	@bash $(SHARED)/refpds/setup.sh > $(VENV)/refpds-node

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: install system-deps refpds lint
	REFPDS_NODE=$$(cat $(VENV)/refpds-node) SKYFILL_SHARED=$(SHARED) $(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m 'not refpds and not slow'

bench: install refpds
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/e2e.py

clean:
	rm -rf $(VENV) skyfill-work test-output
