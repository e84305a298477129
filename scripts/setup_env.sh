#!/usr/bin/env bash
# Create the project virtual environment with pinned versions. Called by `make setup`; safe to rerun.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev,dac,vocals,demo,slurm}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# torch first, alone and pinned, so nothing later resolves to a multi-GB CUDA build.
# shellcheck disable=SC2086
"${PIP[@]}" install -q "$TORCH_SPEC" ${PIP_TORCH_ARGS:-}
"${PIP[@]}" install -q -c requirements/constraints.txt -e ".[${EXTRAS}]"
"$VENV/bin/python" scripts/fix_torchaudio.py
"$VENV/bin/python" -c "import ssmttm, torch; print('ssmttm environment ready: torch', torch.__version__)"
