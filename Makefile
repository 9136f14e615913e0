# Two commands: `make demo` runs the pipeline end to end, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo stop test lint unit integration e2e bench chaos install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev-servers,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fulfillment demo $(DEMO_ARGS)

# The demo leaves its embedded PostgreSQL and Redis running (.fulfillment-dev/); this stops them.
stop:
	@if [ -x $(BIN)/fulfillment ]; then $(BIN)/fulfillment dev stop; \
	 else echo "no $(BIN)/fulfillment: no embedded server was started from this checkout"; fi

test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	@if command -v promtool >/dev/null; then promtool check rules ops/prometheus/alerts.yml; \
	 else echo "promtool not installed (Debian: prometheus): alert rules not checked"; fi

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# Every benchmark, each a ratio to a baseline of the same run (docs/BENCHMARKS.md): 12 min
# on the 2-core CI machine when quiet, nearer 20 under load. Smaller:
# make bench BACKLOG_ORDERS=20000 ADMIN_ORDERS=200000
BACKLOG_ORDERS ?= 100000
ADMIN_ORDERS   ?= 1000000
bench: $(STAMP)
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.concurrency
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.isolation
	$(BIN)/python -m bench.backlog --orders $(BACKLOG_ORDERS)
	$(BIN)/python -m bench.admin_queries --orders $(ADMIN_ORDERS)

# The fleet under faults, then its invariants (docs/RELIABILITY.md); CI runs ORDERS=300.
# Then the long run of the decision's model test (make test runs 100 examples of 30 steps).
MODEL_EXAMPLES ?= 1000
chaos: $(STAMP)
	$(BIN)/python -m chaos.run --orders $(or $(ORDERS),3000)
	MODEL_EXAMPLES=$(MODEL_EXAMPLES) MODEL_STEPS=50 $(BIN)/pytest -q -p no:cacheprovider \
	    tests/integration/test_decision_model.py

clean: stop
	rm -rf $(VENV) .fulfillment-dev *.egg-info
