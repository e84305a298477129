"""`ssmttm train-refiner`: train the DiscoDiff-style refiner (PAPER.md section 6) on the latents of the token shards.

    ssmttm text-cache --params params.yaml --shards data/tokenize --out data/text_cache   # builds the refiner's too
    ssmttm train-refiner --params params.yaml --shards data/tokenize --text-cache data/text_cache \\
        --out results/train_refiner

Reads the sections `refiner`, `train_refiner`, `text` + `refiner_text` (the refiner's text setting) and `seed`. The
shards must hold latents (tokenize.store_latents: true); the latent statistics (refiner.latent_stats) are computed
from their train split (`computed`, refine.normalise.compute_stats) or DiscoDiff's published DAC 44 kHz values
(`discodiff`, 9 codebooks x 8 dims only), travel with every checkpoint and are named in metrics.json.

The run folder (`--out`):

    run.json          run key and data fingerprint
    step-NNNNNNN/     checkpoints: a refiner folder (model.safetensors, config.json, latent_stats.json) and
                      trainer_state.pt (optimizer, generator, data position; refine.train)
    final/            the refiner of the last step, for `ssmttm generate` (refine.model.load_refiner)
    history.jsonl     step 0's validation, then per logged step the mean training loss (overall and per role), lr,
                      and the validation rows
    metrics.json      the summary: losses, validation losses (step 0 and last), steps, parameter counts
    provenance.json   params, code and library versions, run key and data fingerprint
    timing.json       wall time and steps/s: the only file that differs between reruns
    previous/<key>/   earlier runs made with other params or data (never deleted)

The run key hashes the resolved config (the keys of FREE_KEYS, which do not change the weights, left out) and the
data fingerprint (the shards' `_manifest.json`, the text cache's `cache.json`), as for `ssmttm train-lm`: a run of
the same key resumes from its newest checkpoint, exactly (a SIGKILLed run ends with the same bytes as an
uninterrupted one), and a finished one is not retrained (only final/ and metrics.json are rewritten); a run of
another key moves to previous/ and training starts afresh.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ssmttm import stand_ins
from ssmttm.artifacts import (
    PROVENANCE_FILE,
    atomic_dir,
    canonical_json,
    hash_params,
    link_or_copy,
    stable_int,
    write_json,
    write_provenance,
)
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress
from ssmttm.refine.data import LatentCrops, latent_shards, validation_batches
from ssmttm.refine.model import CONFIG_FILE, WEIGHTS_FILE, RefinerConfig, init_refiner, load_refiner
from ssmttm.refine.normalise import STATS_FILE, select_stats
from ssmttm.refine.train import (
    RefinerTrainer,
    TrainRefinerConfig,
    learning_rate,
    read_trainer_state,
    resolve_device,
)
from ssmttm.refine.unet import UNetConfig, param_count
from ssmttm.text.encoder import TextConfig
from ssmttm.tokens.shards import require_token_shards
from ssmttm.train.checkpoint import checkpoint_name, latest_checkpoint, prune_checkpoints
from ssmttm.train.recorder import FINAL_DIR, HISTORY_FILE, METRICS_FILE, TIMING_FILE, read_history
from ssmttm.train.run_lock import run_lock
from ssmttm.train.stage import data_fingerprint, prepare_run_dir
from ssmttm.train.text_cache import CACHE_FILE, TextCache, cache_folder, params_text_configs

log = logging.getLogger(__name__)

STAGE = "train_refiner"
DEFAULT_OUT = "results/train_refiner"
# train_refiner keys that change what is logged or how fast, not the weights: a run may resume with other values.
FREE_KEYS = {
    "checkpoint_every",
    "keep_last_checkpoints",
    "log_every",
    "val_every",
    "val_clips",
    "val_timesteps",
    "num_threads",
}
TEXT_FREE_KEYS = {"batch_size", "device"}  # text keys that do not change the cached encodings


def run_config(
    refiner_cfg: RefinerConfig, text_cfg: TextConfig, train_cfg: TrainRefinerConfig, seed: int
) -> dict[str, Any]:
    """The resolved settings of a run; they go into provenance and each checkpoint's config.json."""
    return {
        "refiner": dataclass_to_dict(refiner_cfg),
        "text": dataclass_to_dict(text_cfg),
        "train_refiner": dataclass_to_dict(train_cfg),
        "seed": seed,
    }


def run_key(config: dict[str, Any], fingerprint: dict[str, str]) -> str:
    """16 hex digits naming what a run computes: its config without the free keys, and its data."""
    refiner = dict(config["refiner"])
    if refiner.get("latent_stats") == "computed":  # what every run did before the setting existed: keep their keys
        del refiner["latent_stats"]
    keyed = {
        "refiner": refiner,
        "text": {k: v for k, v in config["text"].items() if k not in TEXT_FREE_KEYS},
        "train_refiner": {k: v for k, v in config["train_refiner"].items() if k not in FREE_KEYS},
        "seed": config["seed"],
    }
    return hash_params({"config": keyed, "data": fingerprint})[:16]


def open_text_cache(root: str | Path, text_cfg: TextConfig) -> TextCache:
    folder = cache_folder(root, text_cfg)
    if not (folder / CACHE_FILE).is_file():
        raise UserFacingError(
            f"text cache {folder} (encoder {text_cfg.encoder!r}, max_length {text_cfg.max_length}) not found; build "
            f"it with `ssmttm text-cache --params <the same params> --out {root}`, which encodes the captions for "
            "the refiner's text setting (text + refiner_text) too"
        )
    return TextCache(folder)


# ----------------------------------------------------------------------------------------------- logs


def append_row(out_dir: Path, row: dict[str, Any]) -> None:
    with open(out_dir / HISTORY_FILE, "a") as handle:
        handle.write(canonical_json(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def truncate_history(out_dir: Path, step: int) -> None:
    """Keep the rows up to `step` (a killed session may have logged past its last checkpoint)."""
    rows = read_history(out_dir / HISTORY_FILE, up_to_step=step)
    with open(out_dir / HISTORY_FILE, "w") as handle:
        handle.writelines(canonical_json(r) + "\n" for r in rows)


def write_timing(out_dir: Path, step: int, wall_time_s: float, steps_this_session: int, session_s: float) -> None:
    write_json(
        out_dir / TIMING_FILE,
        {
            "steps": step,
            "wall_time_s": wall_time_s,
            "steps_per_s": steps_this_session / session_s if session_s > 0 else None,
        },
    )


def previous_wall_time(out_dir: Path, step: int) -> float:
    """Training wall time of the earlier sessions of a run resumed at `step` (0 when unknown)."""
    try:
        timing = json.loads((out_dir / TIMING_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0.0
    return float(timing.get("wall_time_s", 0.0)) if timing.get("steps", 0) <= step else 0.0


def summarise(history: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: a pure function of the history and the run's settings."""
    train = [r for r in history if "loss" in r]
    val = [r for r in history if "val_loss" in r]
    metrics = {
        **extra,
        "steps": max((r["step"] for r in history), default=0),
        "first_loss": train[0]["loss"] if train else None,
        "last_loss": train[-1]["loss"] if train else None,
        "initial_val_loss": val[0]["val_loss"] if val and val[0]["step"] == 0 else None,
        "last_val_loss": val[-1]["val_loss"] if val else None,
        "best_val_loss": min(r["val_loss"] for r in val) if val else None,
        "best_val_step": min(val, key=lambda r: r["val_loss"])["step"] if val else None,
    }
    primary = [r for r in history if "val_loss_primary" in r]
    if primary:
        metrics["initial_val_loss_primary"] = primary[0]["val_loss_primary"] if primary[0]["step"] == 0 else None
        metrics["last_val_loss_primary"] = primary[-1]["val_loss_primary"]
    return metrics


def export_final(checkpoint: Path, target: Path) -> None:
    """`final/`: the refiner files of the last checkpoint (hard links where possible), replaced whole."""
    with atomic_dir(target) as tmp:
        for name in (WEIGHTS_FILE, CONFIG_FILE, STATS_FILE):
            link_or_copy(checkpoint / name, tmp / name)


def finish(out_dir: Path, step: int, summary: dict[str, Any]) -> dict[str, Any]:
    checkpoint = out_dir / checkpoint_name(step)
    export_final(checkpoint, out_dir / FINAL_DIR)
    metrics = summarise(read_history(out_dir / HISTORY_FILE), {**summary, "checkpoint": checkpoint.name})
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def model_summary(checkpoint_config: dict[str, Any], train_cfg: TrainRefinerConfig) -> dict[str, Any]:
    """Parameter counts (from the U-Net configs of a checkpoint) and the data per step."""
    params = {
        role: param_count(section_to_dataclass(UNetConfig, cfg)) for role, cfg in checkpoint_config["unets"].items()
    }
    return {
        "params": params,
        "total_params": sum(params.values()),
        "crop_frames": train_cfg.crop_frames,
        "clips_per_step": train_cfg.clips_per_step,
        "final": FINAL_DIR,
    }


# ----------------------------------------------------------------------------------------------- the stage


def train_refiner(
    shards_dir: str | Path,
    refiner_cfg: RefinerConfig,
    text_cfg: TextConfig,
    train_cfg: TrainRefinerConfig,
    out_dir: str | Path,
    seed: int,
    **options: Any,
) -> dict[str, Any]:
    """train_refiner_unlocked holding the run folder's lock (train.run_lock): one trainer per run folder."""
    with run_lock(out_dir):
        return train_refiner_unlocked(shards_dir, refiner_cfg, text_cfg, train_cfg, out_dir, seed, **options)


def train_refiner_unlocked(
    shards_dir: str | Path,
    refiner_cfg: RefinerConfig,
    text_cfg: TextConfig,
    train_cfg: TrainRefinerConfig,
    out_dir: str | Path,
    seed: int,
    *,
    text_cache_dir: str | Path,
    resume: bool = True,
) -> dict[str, Any]:
    """Train (or resume, or reuse) the refiner in `out_dir`; returns metrics.json's content.

    `text_cfg` is the refiner's resolved text setting (`RefinerTextConfig.resolve` of the `text` section); its
    cache must exist under `text_cache_dir` (`ssmttm text-cache`)."""
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    _, codec = latent_shards(shards_dir)  # a clear error before anything else when the shards have no latents
    text = open_text_cache(text_cache_dir, text_cfg)
    config = run_config(refiner_cfg, text_cfg, train_cfg, seed)
    fingerprint = data_fingerprint(shards_dir, text.folder)
    key = run_key(config, fingerprint)
    prepare_run_dir(out_dir, key, fingerprint, resume)
    provenance_extra = {
        "shards": str(shards_dir),
        "run_key": key,
        "data": fingerprint,
        **stand_ins.provenance_fields(stand_ins.inherited([shards_dir, text.folder])),
    }

    checkpoint = latest_checkpoint(out_dir) if resume else None
    step = json.loads((checkpoint / CONFIG_FILE).read_text())["step"] if checkpoint else 0
    if checkpoint is not None and step >= train_cfg.steps:
        log.info("%s (run %s) is already trained to step %d; not retraining", out_dir, key, step)
        summary = model_summary(json.loads((checkpoint / CONFIG_FILE).read_text()), train_cfg)
        summary["latent_stats"] = refiner_cfg.latent_stats
        if not (out_dir / PROVENANCE_FILE).is_file():
            write_provenance(out_dir, STAGE, config, seed, cpu_numerics=True, **provenance_extra)
        return finish(out_dir, step, summary)

    device = resolve_device(train_cfg.device)
    threads_before = torch.get_num_threads()
    if train_cfg.num_threads is not None:
        torch.set_num_threads(train_cfg.num_threads)
    try:
        if checkpoint is not None:
            log.info("resuming run %s from %s", key, checkpoint)
            refiner = load_refiner(checkpoint)
        else:
            log.info("training run %s from scratch in %s", key, out_dir)
            stats = select_stats(refiner_cfg.latent_stats, shards_dir, codec)
            refiner = init_refiner(refiner_cfg, stats, text.hidden_size, text_cfg, codec, sub_seed(seed, "init"))
        data = LatentCrops(shards_dir, refiner.stats, train_cfg.crop_frames, sub_seed(seed, "data"))
        trainer = RefinerTrainer(refiner, train_cfg, data, text, sub_seed(seed, "train"), device)
        if checkpoint is not None:
            trainer.load_state_dict(read_trainer_state(checkpoint))
        fit(trainer, shards_dir, out_dir, config, sub_seed(seed, "valid"))
    finally:
        torch.set_num_threads(threads_before)
    write_provenance(out_dir, STAGE, config, seed, cpu_numerics=True, **provenance_extra)
    final_config = json.loads((out_dir / checkpoint_name(train_cfg.steps) / CONFIG_FILE).read_text())
    summary = {**model_summary(final_config, train_cfg), "latent_stats": refiner_cfg.latent_stats}
    return finish(out_dir, train_cfg.steps, summary)


def sub_seed(seed: int, purpose: str) -> int:
    """An independent seed per use of the run seed (weights, data order, training draws, validation noise)."""
    return stable_int("train_refiner", seed, purpose) % 2**63


def fit(trainer: RefinerTrainer, shards_dir: Path, out_dir: Path, config: dict[str, Any], valid_seed: int) -> None:
    """Train from the trainer's step to train_refiner.steps: log, validate and checkpoint on the way."""
    cfg = trainer.cfg
    start = trainer.global_step
    truncate_history(out_dir, start if start else -1)

    def valid():
        return validation_batches(
            shards_dir, trainer.refiner.stats, cfg.crop_frames, cfg.batch_size, max_clips=cfg.val_clips
        )

    def validate(step: int) -> None:
        row = trainer.validate(valid, valid_seed)
        if row:
            append_row(out_dir, {"step": step, **row})
            log.info("step %d validation %s", step, ", ".join(f"{k} {v:.4f}" for k, v in sorted(row.items())))
        else:
            log.warning("no validation clips: the valid split is empty, no validation loss at step %d", step)

    if start == 0:
        validate(0)
    wall_before, session_start = previous_wall_time(out_dir, start), time.perf_counter()
    for _ in progress(range(start, cfg.steps), "train-refiner", unit="step", total=cfg.steps - start):
        trainer.step()
        step = trainer.global_step
        last = step == cfg.steps
        if step == 1 or step % cfg.log_every == 0 or last:
            row = {"step": step, "lr": learning_rate(step - 1, cfg), **trainer.pop_window()}
            append_row(out_dir, row)
            log.info("step %d/%d loss %.4f lr %.2e", step, cfg.steps, row["loss"], row["lr"])
        if step % cfg.val_every == 0 or last:
            validate(step)
        if step % cfg.checkpoint_every == 0 or last:
            trainer.save(out_dir / checkpoint_name(step), extra={"run": config})
            for folder in prune_checkpoints(out_dir, cfg.keep_last_checkpoints):
                log.info("removed old checkpoint %s", folder.name)
            session_s = time.perf_counter() - session_start
            write_timing(out_dir, step, wall_before + session_s, step - start, session_s)


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train the refiner (DiscoDiff-style latent diffusion) on the latents of the token shards. A run already in "
        "--out with the same run key (config + data) is resumed, or, when finished, only has final/ and metrics.json "
        "rewritten; a run of another key is moved to <out>/previous/<key>/ first."
    )
    parser.add_argument("--shards", default="data/tokenize", help="token shards folder (default: data/tokenize)")
    parser.add_argument(
        "--text-cache",
        default="data/text_cache",
        help="text-encoder cache root written by `ssmttm text-cache` (default: data/text_cache)",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"run folder (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue the run of the same key in --out, or restore it from <out>/previous/ (default); --no-resume "
        "moves any run in --out to <out>/previous/<key>/ and trains from scratch",
    )


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    require_token_shards(args.shards, "run `ssmttm tokenize` first or pass --shards with its output folder")
    refiner_cfg = section_to_dataclass(RefinerConfig, params.get("refiner"))
    train_cfg = section_to_dataclass(TrainRefinerConfig, params.get("train_refiner"))
    _, text_cfg = params_text_configs(params)
    metrics = train_refiner(
        args.shards,
        refiner_cfg,
        text_cfg,
        train_cfg,
        args.out,
        int(params["seed"]),
        text_cache_dir=args.text_cache,
        resume=args.resume,
    )
    keys = ("steps", "total_params", "first_loss", "last_loss", "initial_val_loss", "last_val_loss")
    print(json.dumps({k: metrics.get(k) for k in keys}, indent=2))
    return 0
