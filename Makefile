# The commands of the README:
#   make run        set up (first time) and run the bridge plus a local demo edge
#   make prod-demo  the production layout: two bridge processes on PostgreSQL and Redis behind
#                   nginx with TLS from a self-made CA, and a demo edge connecting through it
#   make test       set up (first time), lint, type-check edge_agent and bridge_app (mypy) and run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3
# pytest runs on PYTEST_WORKERS pytest-xdist workers; each test module is one unit of work
# (tests/conftest.py: parallel runs).
# PYTEST_WORKERS=0 runs everything in this process, one test after the other.
PYTEST_WORKERS ?= 3
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: run prod-demo test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml edge_agent/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) manage.py rundemo

prod-demo: $(STAMP)
	$(PY) -m radical_edge_site.proddemo $(PROD_DEMO_ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m bench.proxy

clean:
	rm -rf $(VENV) var
