# One-command set-up: every target installs what it needs, and skips what is already done.
# Packages are installed with their bytecode compiled: the environment may set PYTHONDONTWRITEBYTECODE,
# and every Airflow task process would otherwise compile Airflow and GX from source (seconds per task).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
export TONGBAN_HOME ?= $(CURDIR)/var
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
AIRFLOW_DB := $(TONGBAN_HOME)/airflow/.migrated-3.3.2

include mk/ui.mk

.PHONY: help venv airflow-db run ui test lint e2e bench bench-national bench-nightly lock clean env
help:
	@echo "make run   - start the simulators, run cross_province_sync once with Airflow, print the result"
	@echo "             ARGS=\"--partners 440100 --full-resync --dry-run\" passes DAG params"
	@echo "make ui    - the same data in the Airflow UI (airflow standalone), login admin/admin"
	@echo "make test  - ruff + the whole test suite"
	@echo "make bench - validation, reconciliation and publishing benchmarks (bench/*.py --help for larger sizes)"
	@echo "make bench-national - the whole pipeline on ~1M items of simulated partners, time and memory per stage"
	@echo "make bench-nightly - the nightly run against an empty DAG of its shape (Airflow's floor), times and ratio"
	@echo "make lock  - recompile requirements.txt from requirements.in"
	@echo "make env   - write .env for docker compose: a new Fernet key, random secrets (never overwrites)"

venv: $(STAMP)
$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version}"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $@

airflow-db: $(AIRFLOW_DB)
$(AIRFLOW_DB): $(STAMP)
	$(PY) -m scripts.localenv db migrate > /dev/null
	touch $@

env: venv
	$(PY) -m scripts.make_env

run: venv airflow-db
	$(PY) -m scripts.run_local $(ARGS)

ui: venv airflow-db
	$(PY) -m scripts.run_local --ui $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .

# Two pytest workers (this machine's 2 cores; most of the suite waits on Airflow and simulator subprocesses);
# a test file stays on one worker, so its module fixtures (simulators, an Airflow home) are set up once.
# Files are handed out in collection order, which starts with the slowest (tests/conftest.py, SLOW_FIRST), not
# by their number of tests (xdist's default: a long file of few tests would start last and run on alone).
# PYTEST_ARGS="-n 0" runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder
test: lint airflow-db chromium
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench_validation.py
	$(PY) bench/bench_reconcile.py
	$(PY) bench/bench_publish.py

# The whole pipeline at national scale (about 1M items; 7.7 min run + 1 min of simulator start-up on 2 idle cores, docs/scaling.md). BENCH_ARGS="--partners 6 --items 2000" for a look.
bench-national: venv
	$(PY) bench/bench_national.py $(BENCH_ARGS)

# The real DAG and an empty DAG of its shape under `airflow dags test` and a scheduler, times and ratios.
# BENCH_ARGS="--partners 440100 --mode dags-test" for a look.
bench-nightly: venv airflow-db
	$(PY) bench/bench_nightly.py $(BENCH_ARGS)

lock: venv
	$(VENV)/bin/uv pip compile --quiet --python-version 3.11 --no-header requirements.in -o requirements.txt

clean:
	rm -rf $(TONGBAN_HOME)

# The scale-out topology without Docker: CeleryExecutor on the local PostgreSQL and Redis, scheduler,
# dag-processor, api-server and two Celery workers; triggers the DAG through the REST API.
.PHONY: celery-e2e
celery-e2e: venv
	$(PY) -m scripts.celery_local
