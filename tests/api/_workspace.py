"""A tiny trained workspace as `make demo` lays it out (CPU, seconds to build), from the generate tests' builders.

params.yaml                       the repository's, with runs prefix_simba (trained here) and cross_transformer
                                  (left untrained), the real MiniLM, and tiny, fast generate settings
data/codec/                       tests.codec's tiny DAC (16 kHz, hop 8: 2000 frames/s, 2 codebooks)
results/train_lm/prefix_simba/    step-0000002/, step-0000004/, final/ (= step 4); trained on 64 positions
results/train_refiner/final/      the tiny refiner
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.codec import tiny_codec
from tests.generate._fixtures import make_lm_run, make_refiner

TRAINED_RUN = "prefix_simba"
UNTRAINED_RUN = "cross_transformer"
SECONDS = 0.02  # 320 samples, 40 frames of the tiny codec


def make_workspace(
    root: Path, repo_root: Path, codec: Callable[[Path], Path] = tiny_codec, generate: dict | None = None
) -> Path:
    """The workspace; `codec` writes its data/codec folder (default: the tiny DAC, as trained by the pipeline);
    `generate` overrides keys of the tiny generate settings."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = False
    params["runs"] = {TRAINED_RUN: {"backbone": "prefix_simba"}, UNTRAINED_RUN: {"backbone": "cross_transformer"}}
    params["text"].update(encoder="minilm", max_length=8, device="cpu")
    params["generate"].update(
        batch_size=1, seconds=SECONDS, device="cpu", top_k=8, refine_sampler="ddim", refine_steps=4
    )
    params["generate"].update(generate or {})
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    codec_dir = codec(root / "data" / "codec")
    make_lm_run(root / "results" / "train_lm" / TRAINED_RUN, real_text=True)
    make_refiner(root / "results" / "train_refiner" / "final", codec_dir, real_text=True)
    return root


def subprocess_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
