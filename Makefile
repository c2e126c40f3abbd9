# leakscope: `make demo` and `make test` do all set-up on a fresh machine (Python 3.10+
# and pip; `make test` also installs Chromium and Redis with apt-get when it can).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install leakscope with its test tools

demo: $(STAMP) ## trace a leaking scenario and write its HTML report under reports/
	$(VENV)/bin/leakscope trace scenarios/provider_bootstrappers.py --iterations 30 --quiet \
		--json reports/demo-run.json --html reports/demo.html
	@echo "open reports/demo.html"

test: $(STAMP) ## run the test suite (installs Chromium and Redis if missing, else skips their tests)
	@.ci/system-deps || true
	$(PY) -m pytest -n auto -q

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check leakscope tests scenarios bench
	$(VENV)/bin/mypy leakscope bench

bench: $(STAMP) ## measure speed and memory targets; figures go in BENCHMARKS.md
	$(PY) bench/run.py
	$(PY) bench/holders_bench.py
	$(PY) bench/fast_bench.py
	$(PY) bench/html_bench.py
	$(PY) bench/workers_bench.py
	$(PY) bench/attach_bench.py
	$(PY) bench/engine_bench.py
	$(PY) bench/memray_bench.py
	$(PY) bench/watch_bench.py

clean: ## remove the virtualenv, caches and reports
	rm -rf $(VENV) .pytest_cache .ruff_cache .leakscope reports/*.html reports/*.json reports/*.png
	find . -name __pycache__ -prune -exec rm -rf {} +

.PHONY: help install demo test lint bench clean
