# Swiftchain Health — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv bootstrap protos up down demo test test-unit test-integration lint format bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "swiftchain: Python 3.11+ is required (found $$($(PYTHON) --version 2>&1)); set PYTHON=python3.11"; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python dependencies into $(VENV) (pinned by constraints.txt)"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create the virtualenv with the pinned dependencies

bootstrap: $(STAMP) ## Fetch and build Kafka and FerretDB into .stack/cache (first run only)
	@$(PY) -m devstack bootstrap

protos: $(STAMP) ## Regenerate Python code from protos/ (checked in; a test fails when stale)
	@$(PY) -m devstack.protogen

up: bootstrap ## Start Kafka, FerretDB, three chain nodes and the services; Ctrl-C stops all
	@$(PY) -m devstack.stack up

down: $(STAMP) ## Stop a stack started by `make up` from another terminal
	@$(PY) -m devstack.stack down

demo: bootstrap ## The whole platform in one narrated scenario (uses the running stack, or starts one)
	@$(PY) -m devstack.demo

test: bootstrap ## Unit and integration tests against real Kafka and FerretDB
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## Unit tests only (no servers)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint and format check) and strict mypy
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy .

format: $(STAMP) ## Apply ruff's fixes and formatting
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

bench: bootstrap ## Every benchmark under bench/, peers included, in one table (QUICK=1: small)
	@$(PY) bench/run_all.py $(if $(QUICK),--quick,)

clean: ## Remove caches of Python tools (keeps .stack downloads and the venv)
	@rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis
