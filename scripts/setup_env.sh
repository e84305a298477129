#!/usr/bin/env bash
# Create the project virtual environment with pinned versions. Called by `make setup`; safe to rerun.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev,dac,vocals,demo,slurm,s3,app,clap}
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
# frechet-audio-distance (the cluster's cross-check of the Fréchet core, extra `eval`) pins numpy<2 on Python 3.11 and
# imports laion_clap, encodec and torchvision at import time, so it cannot be installed into this environment. Its
# files alone go beside it, for the test that runs the package's own Fréchet formula on the same embeddings as ours
# (tests/evaluate/test_frechet.py).
FAD_DIR="$VENV/cross-check/frechet-audio-distance"
if [ ! -f "$FAD_DIR/frechet_audio_distance/fad.py" ]; then
  "${PIP[@]}" install -q --no-deps --target "$FAD_DIR" "frechet-audio-distance==0.3.4"
fi
# hear21passt (PaSST: kl_passt, kl_passt_sam) without its dependency timm: timm imports torchvision, whose only PyPI
# wheel for torch 2.13.0 is a CUDA build that cannot load beside the CPU torch. PaSST's network needs only torch and
# torchaudio (`dac` extra); ssmttm.evaluate.passt_import answers hear21passt's one timm import (a download helper).
# A package installed by hand below (exit 0 when `import $1` would find it).
has_module() { "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)"; }
if ! has_module hear21passt; then
  "${PIP[@]}" install -q --no-deps "hear21passt==0.0.26"
fi
# laion-clap (LAION-CLAP: clap_score, fad_clap, clap_score_sam; extra `clap` has its runtime imports) pins numpy<2,
# which its inference code does not need: installed without dependencies. It imports torchvision, whose only PyPI
# wheel for torch 2.13.0 is a CUDA build that breaks `import torchvision` (and so transformers) beside the CPU torch:
# that torchvision goes to $VENV/clap-deps, seen only while ssmttm.evaluate.clap_import loads laion_clap.
if [[ ",$EXTRAS," == *",clap,"* ]]; then
  if ! has_module laion_clap; then
    "${PIP[@]}" install -q --no-deps "laion-clap==1.1.7"
  fi
  if [ ! -f "$VENV/clap-deps/torchvision/__init__.py" ]; then
    "${PIP[@]}" install -q --no-deps --target "$VENV/clap-deps" "torchvision==0.28.0"
  fi
fi
# Debian's Chromium drives the report's browser test (tests/report/test_report_browser.py), skipped without it.
if [ ! -x /usr/bin/chromium ]; then
  HOW="apt-get install -y --no-install-recommends chromium"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
      || echo "note: could not install chromium; the report's browser test will be skipped (try: $HOW)"
  else
    echo "note: /usr/bin/chromium is missing; the report's browser test will be skipped (install it: sudo $HOW)"
  fi
fi
"$VENV/bin/python" -c "import ssmttm, torch; print('ssmttm environment ready: torch', torch.__version__)"
