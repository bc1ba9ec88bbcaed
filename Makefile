# clarep-book: `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PROFILE ?= full
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help env test unit notebooks book lint clean bench train classifiers

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

env: $(STAMP) ## Create .venv and install the pinned environment (once; again when pyproject.toml changes)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

lint: env ## ruff on the library and the tests
	$(PY) -m ruff check paperlib tests bench

unit: env ## Unit tests only (fast)
	$(PY) -m pytest -m "not slow and not notebook"

test: env lint ## Unit tests, every notebook in the smoke profile (papermill), strict book build, HTML check
	$(PY) -m pytest -m "not slow" --durations=12
	$(PY) -m paperlib.book build --profile smoke --strict
	$(PY) -m paperlib.book check --profile smoke

notebooks: env ## Execute the notebooks with papermill (PROFILE=full|smoke)
	$(PY) -m paperlib.book execute --profile $(PROFILE)

book: env ## Execute the notebooks (full profile), build the HTML book into _build/html and check it
	$(PY) -m paperlib.book execute --profile $(PROFILE)
	$(PY) -m paperlib.book build --profile $(PROFILE) --strict
	$(PY) -m paperlib.book check --profile $(PROFILE)

bench: env ## Subspace/Krylov vs exact Jacobian SVD on the 32x32 CDM, interleaved and repeated (BENCH_ARGS="--repeats 5")
	$(PY) bench/clarid_bench.py $(BENCH_ARGS)

train: env ## Train a 100-minute piece of a book CDM, resuming where it stopped (DATASET=shapes|cifar10 [STEPS=n])
	$(PY) -m paperlib.train --dataset $(DATASET) --profile full --max-minutes 100 $(if $(STEPS),--steps $(STEPS))

classifiers: env ## Train chapter 2's three classifiers of a dataset, in resumable pieces (DATASET=shapes|cifar10 [RECIPE=v3] [MINUTES=150])
	$(PY) -m paperlib.classifiers --dataset $(DATASET) --profile full --threads 1 $(if $(RECIPE),--recipe $(RECIPE)) $(if $(MINUTES),--max-minutes $(MINUTES))

clean: ## Remove built books and scratch caches (keeps .venv and committed artifacts)
	rm -rf _build _cache
