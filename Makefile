# Two commands for a new user: `make demo` and `make test`. Both create the environment first if needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; set TORCH_SPEC / PIP_TORCH_ARGS for a CUDA machine.
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
EXTRAS ?= dev,dac,vocals,demo,slurm,s3,app,clap
STAMP := $(VENV)/.ssmttm-installed
CORES ?= 2
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DVC_NO_ANALYTICS ?= 1
export PYTHONHASHSEED ?= 0

.PHONY: setup demo app test paper-test gcs-test slurm-test lint bench profile preflight experiments dvc-cluster-cache help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP)  ## create .venv with pinned dependencies (idempotent)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH_SPEC='$(TORCH_SPEC)' PIP_TORCH_ARGS='$(PIP_TORCH_ARGS)' EXTRAS='$(EXTRAS)' \
		bash scripts/setup_env.sh
	touch $@

demo: setup  ## run the whole pipeline on the embedded offline demo profile (params.yaml), then record it in DVC
	$(VENV)/bin/ssmttm validate params.yaml
	$(VENV)/bin/snakemake --cores $(CORES)
	@# Record what Snakemake built as DVC's versioned state (dvc.lock + cache): `dvc status` is then clean,
	@# `dvc repro` has nothing to do and `dvc push` sends the run to the default remote.
	$(VENV)/bin/dvc commit --force --quiet
	$(VENV)/bin/dvc status

# The local web app (ssmttm.app): http://127.0.0.1:7860 by default; APP_ARGS='--port 8000', '--host 0.0.0.0' to expose it.
APP_ARGS ?=
app: setup  ## local web app on 127.0.0.1:7860 (gradio): prompt, run, step -> audio and its mel spectrogram [APP_ARGS=...]
	@# An environment made with EXTRAS lacking `app` gets the extra here.
	@$(PY) -c 'import gradio' 2>/dev/null || $(PY) -m pip install -q -c requirements/constraints.txt -e '.[app]'
	$(VENV)/bin/ssmttm app $(APP_ARGS)

experiments:  ## `dvc exp show` at 120 columns: the params that differ, each backbone's best validation loss, codec and refiner quality
	$(VENV)/bin/dvc exp show --only-changed --md --drop 'data/.*|src/.*|results/.*|final_losses\..*|heldout\.(metric|seconds|.*_untrained|clips|tracks)|sample_rate|segment_samples|steps|train\.(clips|tracks)|.*\.(flops|params|steps|last_loss|last_val_loss)|sets\..*|listening\..*|ordering\..*|comparisons\..*|params\..*|best_val_step|checkpoint|clips_per_step|crop_frames|final|first_loss|initial_val_loss|total_params'

# Two pytest-xdist workers (one per core): each test module is one unit of work (tests/conftest.py), so module and
# session fixtures are built once. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= $(CORES)
test: setup  ## run the test suite (offline, CPU; TEST_WORKERS=0 for one process, PYTEST_ARGS for more options)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not slurm and not gcs" $(PYTEST_ARGS)

paper-test: setup  ## the paper profile in miniature (stand-in weights, local server), Snakemake then dvc repro, in build/paper-test/
	PATH=$(abspath $(VENV))/bin:$$PATH VENV=$(abspath $(VENV)) CORES=$(CORES) bash scripts/paper_test/run.sh

gcs-test: setup  ## the GCS remote recipe against a local emulator (builds .venv/gcs-remote/ on first use; minutes)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n 0 -m gcs tests/remote/test_gcs_remote.py $(PYTEST_ARGS)

slurm-test: setup  ## the paper test profile on the real one-node Slurm of scripts/slurm/up.sh (root; run up.sh first)
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n 0 -m slurm tests/slurm $(PYTEST_ARGS)

lint: setup  ## ruff, and the package's layers (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check src tests bench workflow scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/lint-imports --no-cache

bench: setup  ## run the CPU benchmarks, JSON under results/bench/
	PATH=$(abspath $(VENV))/bin:$$PATH bash bench/run_all.sh

profile: setup  ## switch profile: make profile NAME=paper  (copies configs/NAME.yaml to params.yaml after validation)
	$(VENV)/bin/ssmttm profile $(NAME)

dvc-cluster-cache: setup  ## DVC cache on a big file system, linked not copied: make dvc-cluster-cache CACHE_DIR=/big/fs/dvc-cache
	@test -n "$(CACHE_DIR)" || { echo "usage: make dvc-cluster-cache CACHE_DIR=/path/on/the/big/file/system" >&2; exit 2; }
	@# .dvc/config.local: this clone only, never committed; the repository's .dvc/config (the demo's) is unchanged.
	$(VENV)/bin/dvc cache dir --local $(CACHE_DIR)
	$(VENV)/bin/dvc config --local cache.type reflink,hardlink,symlink
	$(VENV)/bin/dvc config --local cache.shared group
	$(VENV)/bin/dvc config --list --local --show-origin
	@echo "artifacts already in the workspace: dvc checkout --relink (README: DVC cache for a large corpus)"

PROFILE ?= params.yaml
preflight: setup  ## check weights, inputs, disk, GPUs, network for a profile and print the plan: make preflight [PROFILE=configs/paper.yaml] [PREFLIGHT_ARGS=--skip-network]
	$(VENV)/bin/ssmttm preflight $(PROFILE) $(PREFLIGHT_ARGS)
