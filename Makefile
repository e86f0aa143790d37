# reviewgru — `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit lint format bench team-up team-down clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv from the committed uv.lock (installs uv with pip if missing)

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

run: install ## Retrain on the demo data (or DATA=path/url) with embedded Prefect + MLflow
	$(BIN)/reviewgru run $(if $(DATA),--data $(DATA))

test: install ## Run the whole test suite (unit + integration), a worker per core
	$(BIN)/pytest -n auto --dist loadfile --durations=15

test-unit: install ## Run the fast unit tests only
	$(BIN)/pytest -m "not slow and not integration"

lint: install ## ruff lint + format check, mypy
	$(BIN)/ruff check flows tasks tests benchmarks
	$(BIN)/ruff format --check flows tasks tests benchmarks
	$(BIN)/mypy flows tasks

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix flows tasks tests benchmarks
	$(BIN)/ruff format flows tasks tests benchmarks

bench: install ## Run every benchmark in benchmarks/ (ratios against a reference, same run)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

team-up: install ## Start MLflow + Prefect servers on the local PostgreSQL (see README, team mode)
	docker/local-team.sh up

team-down: ## Stop the servers team-up started
	docker/local-team.sh down

clean: ## Remove the work directory and the embedded MLflow store (keeps .venv)
	rm -rf work mlruns/mlflow.db mlruns/artifacts
