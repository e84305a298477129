"""Model sizes (built on the meta device: no memory, no weights) and GPU hours for the plan.

GPU hours come from this project's own benchmarks when one measured the stage on a GPU (`results/bench/*.json`,
written by `make bench`). Otherwise the plan says "not measured" and gives, separately and labelled as such, a FLOP
estimate: 6 N D for training (ssmttm.train.flops), 2 N per generated position for sampling, at an assumed
fraction (MFU) of an assumed peak. Those two numbers are assumptions and are printed with every estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ssmttm.preflight.context import DEFAULT_TEXT_WIDTH, TEXT_WIDTHS, Context, tolerant_dataclass

BENCH_DIR = "results/bench"
NOT_MEASURED = "not measured: run `make bench` on a GPU node"
ADAM_BYTES_PER_PARAM = 12  # fp32 weights + AdamW's two fp32 moments (train/checkpoint.py: trainer_state.pt)
WEIGHT_BYTES_PER_PARAM = 4  # fp32 weights alone (model.safetensors)
KNOWN_RETENTION_KEYS = ("keep_last_checkpoints", "keep_weights_at_steps")


@dataclass(frozen=True)
class Assumptions:
    peak_flops: float  # accelerator peak FLOP/s (default: H100 SXM dense bf16)
    mfu: float  # fraction of that peak a job is assumed to reach

    def hours(self, flops: float) -> float:
        return flops / (self.peak_flops * self.mfu) / 3600

    def describe(self) -> str:
        return f"{self.peak_flops / 1e12:,.0f} TFLOP/s peak at {100 * self.mfu:.0f}% MFU"


# ----------------------------------------------------------------------------------------------- text widths


def text_width(ctx: Context, encoder: str | None) -> int:
    """Output width of a text encoder: known names, else its local config.json, else flan-t5-base's 768."""
    from ssmttm.text.encoder import ALIASES

    name = ALIASES.get(encoder or "", encoder or "")
    if name in TEXT_WIDTHS:
        return TEXT_WIDTHS[name]
    config = _local_config(ctx, name)
    width = (config or {}).get("d_model") or (config or {}).get("hidden_size")
    return int(width) if width else DEFAULT_TEXT_WIDTH


def _local_config(ctx: Context, name: str) -> dict[str, Any] | None:
    folder = ctx.path(name)
    if not folder.is_dir():
        from ssmttm.hf_cache import hf_cached_model

        folder = hf_cached_model(name)
    config = folder / "config.json" if folder else None
    return json.loads(config.read_text()) if config and config.is_file() else None


# ----------------------------------------------------------------------------------------------- language models


def run_section(ctx: Context, section: str, run: str) -> dict[str, Any]:
    """`lm` or `train_lm` as the named run `run` sees it (its `runs` entry resolved by the pipeline's own rule)."""
    from ssmttm.pipeline import run_sections

    return dict(run_sections(ctx.params, run)[section] or {})


def lm_config(ctx: Context, run: str):
    from ssmttm.models.lm import LMConfig

    values = run_section(ctx, "lm", run)
    values["d_text"] = values.get("d_text") or text_width(ctx, ctx.get("text.encoder"))
    return tolerant_dataclass(LMConfig, values)


def lm_sizes(ctx: Context, run: str) -> tuple[int, int]:
    """(trainable parameters, parameters in matrix multiplies: N of 6ND) of the profile's LM for the run `run`."""
    from ssmttm.config import dataclass_to_dict

    return _lm_sizes(json.dumps(dataclass_to_dict(lm_config(ctx, run)), sort_keys=True))


@cache
def _lm_sizes(config_json: str) -> tuple[int, int]:
    """Memoised on the config's JSON: the plan asks for each run's sizes several times."""
    import torch

    from ssmttm.models.lm import LMConfig, MusicLM
    from ssmttm.train.flops import flops_params, trainable_params

    with torch.device("meta"):
        model = MusicLM(LMConfig(**json.loads(config_json)))
    return trainable_params(model), flops_params(model)


# ----------------------------------------------------------------------------------------------- refiner


def refiner_sizes(ctx: Context, n_codebooks: int, codebook_dim: int) -> dict[str, int]:
    """Parameters of each U-Net the refiner trains: secondary always, primary when `refiner.primary`."""
    from ssmttm.refine.model import RefinerConfig
    from ssmttm.refine.unet import param_count

    cfg = tolerant_dataclass(RefinerConfig, ctx.section("refiner"))
    context = text_width(ctx, ctx.get("refiner_text.encoder") or ctx.get("text.encoder"))
    diffusion = cfg.diffusion(n_codebooks, codebook_dim)
    roles = ("secondary", "primary") if cfg.primary else ("secondary",)
    return {role: param_count(cfg.unet_config(diffusion, role, context)) for role in roles}


# ----------------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Retention:
    """What a training run leaves on disk: full checkpoints (weights + optimizer state, to resume from) and
    weights-only ones (train_lm.keep_weights_at_steps); generate makes audio from every one of them."""

    full: int
    weights_only: int
    basis: str

    @property
    def checkpoints(self) -> int:
        return self.full + self.weights_only

    def bytes(self, params: int) -> float:
        return float(params) * (self.full * ADAM_BYTES_PER_PARAM + self.weights_only * WEIGHT_BYTES_PER_PARAM)


def kept_checkpoints(values: dict[str, Any], section: str, steps: int) -> Retention:
    """The checkpoints a run of `steps` leaves, from its resolved `section` values: the newest keep_last_checkpoints
    (null: all) of those saved every checkpoint_every steps and at the end, plus the weights of keep_weights_at_steps.
    Another `keep*` key (a retention rule newer than this module) counts as that many more full checkpoints: an
    upper bound rather than a refusal."""
    every = int(values.get("checkpoint_every", 500))
    saved = sorted({*range(every, steps + 1, every), steps})
    keep = values.get("keep_last_checkpoints")
    newest = saved if keep is None else saved[-int(keep) :]
    pinned = {int(s) for s in values.get("keep_weights_at_steps") or ()}
    weights_only = sorted((pinned & set(saved)) - set(newest))
    basis = f"{len(newest)} full of {len(saved)} saved (every {every} of {steps:,} steps)"
    if weights_only:
        basis += f" + weights at {len(weights_only)} steps ({section}.keep_weights_at_steps)"
    extra = 0
    for key, value in sorted(values.items()):
        if key.startswith("keep") and key not in KNOWN_RETENTION_KEYS and value:
            more = len(value) if isinstance(value, list | tuple) else len(saved)
            extra += more
            basis += f"; {section}.{key} (unknown here) counted as up to {more} more"
    full = min(len(saved), len(newest) + extra)
    return Retention(full, len(weights_only), basis)


# ----------------------------------------------------------------------------------------------- benchmarks


def bench_file(root: Path, name: str) -> dict[str, Any] | None:
    path = root / BENCH_DIR / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def measured_train_rate(root: Path, backbone: str) -> tuple[float, str] | None:
    """GPU training tokens/s of `backbone` from bench/bench_train.py's `gpu` rows, with where it came from."""
    result = bench_file(root, "train.json")
    rows = (result or {}).get("gpu")
    if not isinstance(rows, list):
        return None
    for row in rows:
        if row.get("backbone") == backbone and row.get("tokens_per_s"):
            where = f"{BENCH_DIR}/train.json on {row.get('device', 'a GPU')}, {row.get('params', 0) / 1e6:.1f} M params"
            return float(row["tokens_per_s"]), f"{row['tokens_per_s']:,.0f} tokens/s ({where})"
    return None
