# medallion: `make demo` runs the whole pipeline on a fresh project, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo

.PHONY: help install demo test test-fast bench bench-scale clean

help:
	@echo "make demo   create .venv, scaffold ./$(DEMO) with 'medallion init', run every table, print both gold tables, write the docs site"
	@echo "make test   create .venv with the dev extras and run the test suite"
	@echo "make bench  benchmark the table graph and its events chain against a plain polars+deltalake script (1M, 5M and 20M events, 100k customers)"
	@echo "make bench-scale  20M and 100M events through all layers with work units: wall, peak RSS, units per table"
	@echo "make clean  remove .venv, ./$(DEMO), build and bench leftovers"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "medallion needs Python 3.11+; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/medallion init $(DEMO)
	cd $(DEMO) && ../$(BIN)/medallion run all
	@echo
	@echo "gold_daily_sales ($(DEMO)/lake/gold_daily_sales):"
	@$(BIN)/python -c 'import polars as pl; pl.Config.set_tbl_rows(12); print(pl.read_delta("$(DEMO)/lake/gold_daily_sales").sort("event_date", "region"))'
	@echo
	@echo "gold_sales_by_segment ($(DEMO)/lake/gold_sales_by_segment):"
	@$(BIN)/python -c 'import polars as pl; pl.Config.set_tbl_rows(12); print(pl.read_delta("$(DEMO)/lake/gold_sales_by_segment").sort("event_date", "segment"))'
	@cd $(DEMO) && ../$(BIN)/medallion docs generate --quiet
	@echo
	@echo "Report: open $(DEMO)/target/docs/index.html in a browser (no network needed),"
	@echo "        or run 'cd $(DEMO) && ../$(BIN)/medallion docs serve' and open http://127.0.0.1:8000/"

# -n auto: one pytest worker per core; worksteal keeps both busy around the long kill test.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/run.py --rows 1000000 5000000
	$(BIN)/python bench/run.py --rows 20000000 --files 40 --only full

# The scale goals: 20M and 100M events through all layers with the template's work units
# (generating 100M takes about 10 minutes and 2 GB; the run about 3 minutes and 8 GB of disk).
bench-scale: $(STAMP)
	$(BIN)/python bench/run.py --rows 20000000 --files 40 --only scale
	$(BIN)/python bench/run.py --rows 100000000 --files 200 --only scale

clean:
	rm -rf $(VENV) $(DEMO) dist build bench/.work .pytest_cache
