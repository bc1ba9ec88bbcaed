# clarep-book: `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PROFILE ?= full
JOBS   ?= $(shell nproc 2>/dev/null || echo 1)
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help env test unit notebooks book lint clean bench bench-robustness train classifiers edits students robustness bench-distill

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

env: $(STAMP) ## Create .venv and install the pinned environment (once; again when pyproject.toml changes)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['clarep-book']['no-deps']))")
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

book: env ## Execute the notebooks from the committed results (full profile), build the HTML book into _build/html and check it
	$(PY) -m paperlib.book execute --profile $(PROFILE) --read-only --jobs $(JOBS)
	$(PY) -m paperlib.book build --profile $(PROFILE) --strict
	$(PY) -m paperlib.book check --profile $(PROFILE)

bench: env ## Subspace/Krylov vs exact Jacobian SVD on the 32x32 CDM, interleaved and repeated (BENCH_ARGS="--repeats 5")
	$(PY) bench/clarid_bench.py $(BENCH_ARGS)

bench-robustness: env ## Images per second per attack and corruption on a CIFAR ResNet-18, interleaved (BENCH_ARGS="--repeats 5")
	$(PY) bench/robustness_bench.py $(BENCH_ARGS)

train: env ## Train a 100-minute piece of a book CDM, resuming where it stopped (DATASET=shapes|cifar10 [STEPS=n])
	$(PY) -m paperlib.train --dataset $(DATASET) --profile full --max-minutes 100 $(if $(STEPS),--steps $(STEPS))

edits: env ## Chapter 5b's edit runs in resumable chunks (DATASET=shapes|cifar10 N=100 [MAP=1: every t*] [STEPS=s [CHECKPOINT=path]])
	$(PY) -m paperlib.edits --dataset $(DATASET) --profile full --n $(N) --threads 1 $(if $(MAP),--map) $(if $(STEPS),--steps $(STEPS)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

classifiers: env ## Train chapter 2's three classifiers of a dataset, in resumable pieces (DATASET=shapes|cifar10 [RECIPE=v5] [ARCH=convnext] [MINUTES=150])
	$(PY) -m paperlib.classifiers --dataset $(DATASET) --profile full --threads 1 $(if $(RECIPE),--recipe $(RECIPE)) $(if $(ARCH),--arch $(ARCH)) $(if $(MINUTES),--max-minutes $(MINUTES))

students: env ## Train chapter 6's students in resumable pieces (DATASET=shapes|cifar10 METHOD=vanilla|dmdistill|cfgdistill|cadistill [SEEDS="0 1 2"] [MINUTES=150] [ARGS="--pairing matched"])
	$(PY) -m paperlib.cadistill --dataset $(DATASET) --method $(METHOD) --seed $(or $(SEEDS),0 1 2) --profile full --threads 1 $(if $(MINUTES),--max-minutes $(MINUTES)) $(ARGS)

robustness: env ## Chapter 7's evaluations of the trained students, published, in resumable pieces (DATASET=shapes|cifar10 [METHOD="vanilla cadistill"] [SEEDS="0 1 2"] [EVALS="attacks corruptions"] [MINUTES=150])
	$(PY) -m paperlib.robustness --dataset $(DATASET) --profile full --threads 1 $(if $(METHOD),--method $(METHOD)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(EVALS),--eval $(EVALS)) $(if $(MINUTES),--max-minutes $(MINUTES))

bench-distill: env ## Training images/s of each distillation method vs Vanilla, interleaved and repeated (BENCH_ARGS="--repeats 5")
	$(PY) bench/cadistill_bench.py $(BENCH_ARGS)

clean: ## Remove built books and scratch caches (keeps .venv and committed artifacts)
	rm -rf _build _cache
