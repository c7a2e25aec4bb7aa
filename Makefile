# genclust — `make help` lists the targets.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
VENV ?= .venv
# torch pinned to the release this project is tested with (installs from local wheels on our machines)
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
export GENCLUST_DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),data)

.PHONY: help install train test test-fast lint bench clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: ## create .venv and install genclust with its test tools
	test -d $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH_PIN)
	$(VENV)/bin/pip install -q -e ".[dev]"

train: ## the main job: train the default method on the default dataset (ARGS="method=... dataset=...")
	$(PYTHON) train.py $(ARGS)

test: ## run the test suite (uses ../shared/datasets when present)
	$(PYTHON) -m pytest -q

test-fast: ## tests without the slow subprocess trainings
	$(PYTHON) -m pytest -q -m "not slow and not ddp"

lint: ## ruff
	$(PYTHON) -m ruff check src tests scripts

bench: ## throughput benchmarks (see benchmarks/RESULTS.md)
	$(PYTHON) scripts/benchmark.py $(ARGS)

clean: ## remove run folders and caches
	rm -rf outputs/train outputs/benchmark .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
