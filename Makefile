# Two commands: `make demo` runs the pipeline end to end, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration e2e bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev-servers,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fulfillment demo $(DEMO_ARGS)

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

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/admin_queries.py

clean:
	rm -rf $(VENV) .fulfillment-dev *.egg-info
