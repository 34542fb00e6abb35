# The two commands that matter on a fresh machine:
#   make quickstart   set up .venv, train the quickstart policy, evaluate it against the baselines, write a report
#   make test         set up .venv and run the default test suite (slow tests: make test-slow)
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test test-slow lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,tracking,data,ray,offline,dev]'
	@touch $(STAMP)

setup: $(STAMP)

quickstart: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/rlroute quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow" -q

lint: $(STAMP)
	$(BIN)/ruff check rlroute tests baselines
	$(BIN)/mypy

clean:
	rm -rf $(VENV) outputs multirun
