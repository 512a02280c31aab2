# entity-sync: `make demo` runs the whole thing; `make test` proves it.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install demo test test-fast lint bench chaos flower worker workers beat sandbox up down clean

install: $(VENV)/.installed

# The worker, and beside it the test and demo harness (harness/: the sandbox,
# test helpers, the demo), a distribution of its own that the wheel never holds.
$(VENV)/.installed: pyproject.toml harness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,flower]' -e ./harness
	touch $@

demo: install
	$(PY) scripts/ensure_redis.py
	$(PY) -m harness demo

test: install
	$(PY) scripts/ensure_test_services.py
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q tests/unit

LINTED := $(wildcard worker tasks harness tests bench chaos scripts)

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/lint-imports

chaos: install
	$(PY) -m chaos $(ARGS)

bench: install
	$(PY) -m pip install --quiet -e '.[dev,flower,bench]' -e ./harness
	$(PY) scripts/ensure_redis.py
	$(PY) -m bench

worker: install
	$(BIN)/celery -A worker worker --loglevel=INFO -Q sync_manual,sync,backfill,notify,housekeeping

# One worker process per core (a threads worker runs Python on one core at a
# time): `make workers`, or `make workers PROCS=4`. Ctrl-C or SIGTERM stops
# them all with a warm shutdown; a process that dies is started again.
PROCS ?= $(shell nproc 2>/dev/null || echo 1)
workers: install
	$(BIN)/entity-sync workers --processes $(PROCS)

# One beat per deployment: the housekeeping tick, schedules, long deferrals.
# Its schedule file goes under var/ (the working directory may be read-only).
beat: install
	mkdir -p var
	$(BIN)/celery -A worker beat --loglevel=INFO --schedule=var/celerybeat-schedule

sandbox: install
	$(PY) -m harness sandbox --port 8900

flower: install
	$(BIN)/celery -A worker flower --port=5555

up:
	docker compose up -d

down:
	docker compose down

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis
