# Two commands on a fresh machine with Python 3.11: `make run`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Flower's port; a second stack on this machine needs another (and another PORT).
FLOWER_PORT ?= 5555
export FLOWER_PORT

.PHONY: run test lint setup clean bench bench-smoke chaos services services-stop

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# What a deployment runs before starting the processes: tables, the cache table, the
# ScyllaDB schema (with TRANSFER_STORE=scylla) and the static files gunicorn serves.
setup: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(if $(filter scylla,$(TRANSFER_STORE)),$(BIN)/python manage.py sync_scylla_schema)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0

# With KAFKA_BOOTSTRAP_SERVERS set (e.g. from var/services.env) the stack uses that broker
# and does not start the development one; else the development broker listens on DEV_BROKER_PORT
# (the settings default to it too, so manage.py commands given the same variable find it).
PROCESSES := $(if $(KAFKA_BOOTSTRAP_SERVERS),$(shell grep -v '^broker:' Procfile | cut -d: -f1),)

# The whole stack on embedded defaults; Ctrl-C stops every process. Once it is ready,
# transfer_site.announce prints where each page is.
run: setup
	$(BIN)/python -m transfer_site.announce --port $(PORT) --flower-port $(FLOWER_PORT) &
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --procfile Procfile --port $(PORT) $(PROCESSES)

# The production-like servers on loopback (Kafka, Cassandra, PostgreSQL, Redis), see docs/services.md;
# writes var/services.env. Then: set -a; . var/services.env; set +a; make run (or make test).
services: $(BIN)/.installed
	$(BIN)/python -m devservices start

services-stop: $(BIN)/.installed
	$(BIN)/python -m devservices stop

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

# The benchmark (docs/benchmarks.md): starts its own stack on free ports, prints a table,
# writes bench/results/bench-<time>.json. BENCH_ARGS="--soak-minutes 10" for the memory soak.
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# A few seconds of each phase: checks the benchmark runs (the e2e suite runs it too).
bench-smoke: $(BIN)/.installed
	$(BIN)/python -m bench --smoke --out var/bench-smoke

# The chaos run (docs/testing.md "Chaos run"): its own stack, transfers under load while web, relay, worker,
# the webhooks worker, bridge and UBSCore are SIGKILLed and restarted; then every invariant, and every
# finished transfer's webhook event delivered. Size: CHAOS_TRANSFERS,
# CHAOS_SECONDS, CHAOS_USERS, ... (tests/chaos/run_chaos.py). Exits non-zero on a violation.
chaos: $(BIN)/.installed
	$(BIN)/python tests/chaos/run_chaos.py

clean:
	rm -rf var .pytest_cache .ruff_cache
