# Two commands on a fresh machine with Python 3.11: `make run`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint migrate clean bench bench-smoke chaos

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

migrate: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

# The whole stack on embedded defaults; Ctrl-C stops every process.
run: migrate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --procfile Procfile --port $(PORT)

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

# The benchmark (README "Benchmark"): starts its own stack on free ports, prints a table,
# writes bench/results/bench-<time>.json. BENCH_ARGS="--soak-minutes 10" for the memory soak.
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# A few seconds of each phase: checks the benchmark runs (the e2e suite runs it too).
bench-smoke: $(BIN)/.installed
	$(BIN)/python -m bench --smoke --out var/bench-smoke

# The chaos run (README "Chaos run"): its own stack, transfers under load while web, relay, worker,
# bridge and UBSCore are SIGKILLed and restarted; then every invariant. Size: CHAOS_TRANSFERS,
# CHAOS_SECONDS, CHAOS_USERS, ... (tests/chaos/run_chaos.py). Exits non-zero on a violation.
chaos: $(BIN)/.installed
	$(BIN)/python tests/chaos/run_chaos.py

clean:
	rm -rf var .pytest_cache .ruff_cache
