# The two commands of the README: `make run` and `make test`. Everything else is a step of those.
VENV ?= .venv
PY := $(VENV)/bin/python
PULSE := $(VENV)/bin/pulse

.PHONY: setup run test lint typecheck unit bench down clean

setup:
	@./deploy/setup.sh

run: setup
	@$(PULSE) run

test: setup lint typecheck
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint:
	@$(VENV)/bin/ruff check pipeline tests bench

typecheck:
	@$(VENV)/bin/mypy

bench: setup
	@$(PY) -m bench.run_all

down:
	@$(PULSE) stack down

clean: down
	rm -rf .pulse
