"""`ssmttm train-lm`: train one named LM run on the token shards with PyTorch Lightning.

    ssmttm text-cache --params params.yaml --shards data/tokenize --out data/text_cache   # once, shared
    ssmttm train-lm --params params.yaml --shards data/tokenize --text-cache data/text_cache \\
        --run prefix_simba_small --out results/train_lm/prefix_simba_small

Reads the sections `lm`, `text`, `train_lm`, `runs` and `seed`; `lm` and `train_lm` as resolved for --run (its
`runs` entry applied: the backbone and its own overrides, pipeline.run_sections), so each run trains its backbone at
its own depth, codebooks and step budget. Hardware comes from params only: `train_lm.accelerator/devices/num_nodes/
strategy/precision` are Lightning's own arguments.

The run folder (RUN_DIR, default results/train_lm/<run>):

    run.json          run key, data fingerprint, model summary (params, FLOPs per token, world size, ...)
    step-NNNNNNN/     checkpoints (model.safetensors, config.json, trainer_state.pt)
    final/            the last weights, for `ssmttm generate`
    history.jsonl     one row per logged step: loss, lr, tokens, FLOPs; validation rows
    metrics.json      the summary of history.jsonl
    provenance.json   params, code and library versions, run key and data fingerprint
    timing.jsonl, timing.json, dvclive/   wall time, tokens/s, dvclive logs: the only files that differ between reruns
    previous/<key>/   earlier runs made with other params or data, moved here whole (never deleted)
    text_cache/       only when --text-cache is not given

A run's *key* is the sha256 (16 hex digits) of its resolved config (`lm` with d_text filled in, `text`, `train_lm`,
`seed`; the keys of RESUME_FREE_KEYS and TEXT_FREE_KEYS, which do not change what is computed, left out) and of
its data fingerprint (the sha256 of the shards' `_manifest.json` and of the text cache's `cache.json`). Given
RUN_DIR:
- a run of the same key there resumes from its newest complete checkpoint; when that is at train_lm.max_steps it is
  not retrained: only `final/` and `metrics.json` are rewritten from its files (fast; after Snakemake deleted them);
- a run of another key there is moved to `RUN_DIR/previous/<its key>/` first; then `RUN_DIR/previous/<this key>/`,
  if it exists, is moved back and continued as above, else training starts fresh;
- `--no-resume` moves whatever run is there (even of the same key) to `previous/` and starts fresh.
Rerunning a run on the same machine gives byte-identical files, except timing.* and dvclive/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ssmttm import stand_ins
from ssmttm.artifacts import PROVENANCE_FILE, hash_params, is_temporary, sha256_file, write_json, write_provenance
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.locks import is_primary_process
from ssmttm.models.lm import CONFIG_FILE, LMConfig, resolve_d_text
from ssmttm.pipeline import run_names, run_sections
from ssmttm.text.encoder import TextConfig
from ssmttm.tokens.shards import MANIFEST_FILE
from ssmttm.train.checkpoint import StepFolderIO, latest_checkpoint
from ssmttm.train.config import TrainConfig
from ssmttm.train.data import TrainData
from ssmttm.train.flops import flops_params, trainable_params
from ssmttm.train.module import LMTrainModule
from ssmttm.train.recorder import (
    DVCLIVE_DIR,
    FINAL_DIR,
    HISTORY_FILE,
    METRICS_FILE,
    TIMING_FILE,
    TIMING_LOG_FILE,
    RunRecorder,
    finish_run,
)
from ssmttm.train.run_lock import LOCK_FILE, run_lock
from ssmttm.train.text_cache import CACHE_FILE, TextCache, build_text_cache, cache_folder, shard_captions

log = logging.getLogger(__name__)

TEXT_CACHE_DIR = "text_cache"  # inside the run folder unless --text-cache names a shared one
RUN_FILE = "run.json"
RUN_FORMAT = "ssmttm.train_run/1"
PREVIOUS_DIR = "previous"  # earlier runs of the run folder, one folder per run key
UNKEYED = "unkeyed"  # the name under previous/ of a run without run.json (made before run keys existed)
TEXT_CACHE_WAIT_S = 4 * 3600  # how long the other processes of a launch wait for the first to build the cache
RUN_WAIT_S = 600  # how long they wait for the first to prepare the run folder
# train_lm keys that may change between a run and its resume without changing what is computed.
RESUME_FREE_KEYS = {
    "log_every",
    "checkpoint_every",
    "keep_last_checkpoints",
    "keep_weights_at_steps",
    "val_every",
    "val_batches",
    "max_hours",
    "also_train",  # in the config.json of checkpoints written before named runs (`runs`) replaced it
    "num_workers",
    "num_threads",
}
# text keys that do not change the cached encoder outputs (the data fingerprint covers the cache itself).
TEXT_FREE_KEYS = {"batch_size", "device"}


def resolve_precision(cfg: TrainConfig) -> str:
    """`auto`: bf16 mixed precision on a GPU (the paper), full fp32 on CPU (exact reruns)."""
    if cfg.precision != "auto":
        return cfg.precision
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def run_configs(params: dict[str, Any], run: str) -> tuple[LMConfig, TrainConfig]:
    """The LM and training configs of the named run `run`: `lm` and `train_lm` with its `runs` entry applied."""
    sections = run_sections(params, run)
    return section_to_dataclass(LMConfig, sections["lm"]), section_to_dataclass(TrainConfig, sections["train_lm"])


def run_config(lm_cfg: LMConfig, text_cfg: TextConfig, train_cfg: TrainConfig, seed: int) -> dict[str, Any]:
    """What goes into each checkpoint's config.json (besides format and step)."""
    return {
        "lm": dataclass_to_dict(lm_cfg),
        "text": dataclass_to_dict(text_cfg),
        "train_lm": dataclass_to_dict(train_cfg),
        "seed": seed,
    }


def keyed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that determines what is computed (the free keys left out)."""
    return {
        "lm": config.get("lm"),
        "text": {k: v for k, v in (config.get("text") or {}).items() if k not in TEXT_FREE_KEYS},
        "train_lm": {k: v for k, v in (config.get("train_lm") or {}).items() if k not in RESUME_FREE_KEYS},
        "seed": config.get("seed"),
    }


def data_fingerprint(shards_dir: str | Path, cache_dir: str | Path) -> dict[str, str]:
    """sha256 of the shards' _manifest.json (codec, params, per-shard sha256) and of the text cache's cache.json."""
    manifest = Path(shards_dir) / MANIFEST_FILE
    if not manifest.is_file():
        raise UserFacingError(
            f"{manifest} not found; it is written by `ssmttm tokenize` when all shards are done "
            "(`ssmttm.tokens.shards.finalize_manifest`)"
        )
    return {
        "shards_manifest_sha256": sha256_file(manifest),
        "text_cache_sha256": sha256_file(Path(cache_dir) / CACHE_FILE),
    }


def run_key(config: dict[str, Any], fingerprint: dict[str, str]) -> str:
    """16 hex digits naming what a run computes: its keyed config and its data fingerprint."""
    return hash_params({"config": keyed_config(config), "data": fingerprint})[:16]


def check_resumable(checkpoint: Path, config: dict[str, Any]) -> None:
    """A checkpoint may only be resumed with the params it was trained with (logging/checkpoint cadence aside)."""
    saved, wanted = keyed_config(json.loads((checkpoint / CONFIG_FILE).read_text())), keyed_config(config)
    differences = [f"{part}.{key}" for part in ("lm", "text", "train_lm") for key in _diff(saved, wanted, part)]
    differences += ["seed"] if saved["seed"] != wanted["seed"] else []
    if differences:
        raise UserFacingError(
            f"{checkpoint} was trained with other params ({', '.join(differences)} differ) than its run.json "
            f"says; move the run folder away, or train from scratch with `--no-resume` (the run goes to "
            f"{PREVIOUS_DIR}/)"
        )


def _diff(a: dict[str, Any], b: dict[str, Any], section: str) -> list[str]:
    first, second = a.get(section) or {}, b.get(section) or {}
    return sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))


def wait_for(path: Path, timeout_s: float, ready: Any = None, hint: str = "") -> None:
    """Wait until `path` exists (and `ready(path)` holds): the first process of a launch makes it."""
    deadline = time.monotonic() + timeout_s
    while not (path.is_file() and (ready is None or ready(path))):
        if time.monotonic() > deadline:
            raise UserFacingError(
                f"{path} was not ready within {timeout_s:.0f} s (made by the first process of the launch){hint}"
            )
        time.sleep(5)


# ----------------------------------------------------------------------------------------------- run folder


def read_run_info(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_run_info(
    out_dir: Path, key: str, fingerprint: dict[str, str], summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    info: dict[str, Any] = {"format": RUN_FORMAT, "run_key": key, "data": fingerprint}
    if summary is not None:
        info["summary"] = summary
    write_json(out_dir / RUN_FILE, info)
    return info


def remove_temporaries(out_dir: Path) -> None:
    """Folders and files a killed save left under a temporary name (artifacts.atomic_dir / atomic_path)."""
    if out_dir.is_dir():
        for child in out_dir.iterdir():
            if is_temporary(child):
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def run_files(out_dir: Path) -> list[Path]:
    """What belongs to the run in `out_dir`: everything but previous/, the text cache and temporaries."""
    if not out_dir.is_dir():
        return []
    kept = (PREVIOUS_DIR, TEXT_CACHE_DIR, LOCK_FILE)  # the lock belongs to the folder, not to a run in it
    return [c for c in out_dir.iterdir() if c.name not in kept and not is_temporary(c)]


def _move_children(children: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    # run.json moves last: a folder holds a run's key only once the run is all there
    for child in sorted(children, key=lambda c: (c.name == RUN_FILE, c.name)):
        os.replace(child, target / child.name)


def archive_run(out_dir: Path) -> Path | None:
    """Move the run in `out_dir` to `out_dir/previous/<its key>/` (an older archive of that key is renamed
    `<key>-N`, so `previous/<key>` is always the newest); returns the archive folder, None if there was no run."""
    children = run_files(out_dir)
    if not children:
        return None
    info = read_run_info(out_dir)
    name = str(info["run_key"]) if info and info.get("run_key") else UNKEYED
    target = out_dir / PREVIOUS_DIR / name
    if target.exists():
        n = 2
        while (older := target.with_name(f"{name}-{n}")).exists():
            n += 1
        os.replace(target, older)
    _move_children(children, target)
    log.info("moved the run in %s (key %s) to %s", out_dir, name, target)
    return target


def restore_run(out_dir: Path, key: str) -> bool:
    """Move `out_dir/previous/<key>/` back into `out_dir` (which holds no run); False if there is none."""
    source = out_dir / PREVIOUS_DIR / key
    if not source.is_dir():
        return False
    _move_children(list(source.iterdir()), out_dir)
    source.rmdir()
    log.info("restored the run of key %s from %s", key, source)
    return True


def clear_logs(out_dir: Path) -> None:
    """Logs a run of this key left before its first checkpoint (killed early): it starts over from step 0."""
    for name in (FINAL_DIR, DVCLIVE_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (HISTORY_FILE, METRICS_FILE, TIMING_LOG_FILE, TIMING_FILE):
        (out_dir / name).unlink(missing_ok=True)


def prepare_run_dir(out_dir: Path, key: str, fingerprint: dict[str, str], resume: bool) -> None:
    """Leave in `out_dir` the run of `key` (kept, or restored from previous/) or nothing; write run.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out_dir)
    info = read_run_info(out_dir)
    if run_files(out_dir) and (not resume or info is None or info.get("run_key") != key):
        archive_run(out_dir)
    if resume and not run_files(out_dir):
        restore_run(out_dir, key)
    if resume and latest_checkpoint(out_dir) is None:
        clear_logs(out_dir)
    info = read_run_info(out_dir)
    if info is None or info.get("run_key") != key or info.get("data") != fingerprint:
        write_run_info(out_dir, key, fingerprint)


def train_lm(
    shards_dir: str | Path,
    lm_cfg: LMConfig,
    text_cfg: TextConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    seed: int,
    backbone: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train `backbone` in `out_dir` (train_lm_unlocked), holding the run folder's lock (train.run_lock): a trainer
    that outlived its killed job keeps the folder until it dies, and a second trainer waits, then stops with a clear
    message. Only the first process of a launch locks (data-parallel ranks share the folder)."""
    lock = run_lock(out_dir) if is_primary_process() else contextlib.nullcontext()
    with lock:
        return train_lm_unlocked(shards_dir, lm_cfg, text_cfg, train_cfg, out_dir, seed, backbone, **options)


def train_lm_unlocked(
    shards_dir: str | Path,
    lm_cfg: LMConfig,
    text_cfg: TextConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    seed: int,
    backbone: str | None = None,
    *,
    run: str | None = None,
    resume: bool = True,
    text_cache_dir: str | Path | None = None,
    text_encoder: Any | None = None,
    callbacks: list[Any] | None = None,
    record_clip_ids: bool = False,
) -> dict[str, Any]:
    """Train `backbone` (default lm_cfg.backbone) on the shards in `shards_dir`; returns the summary metrics. `run`
    names the experiment in run.json and metrics.json (it is not part of the run key: the config is).

    See the module docstring for what happens to a run already in `out_dir`. `text_encoder` (anything with
    `encode`) replaces the configured encoder when the text cache is built (tests); `callbacks` are extra Lightning
    callbacks; `record_clip_ids` makes each rank write the clip ids it trained on and a hash of its final weights
    to `rank<R>.json` (data-parallel tests).
    """
    import lightning as L

    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    if backbone is not None:
        lm_cfg = dataclasses.replace(lm_cfg, backbone=backbone)
    primary = is_primary_process()

    # Frozen text encoder outputs, computed once per distinct caption (usually beforehand, by `ssmttm text-cache`).
    cache_root = Path(text_cache_dir) if text_cache_dir is not None else out_dir / TEXT_CACHE_DIR
    cache_dir = cache_folder(cache_root, text_cfg)
    if primary:
        build_text_cache(shard_captions(shards_dir), text_cfg, cache_root, encoder=text_encoder)
    else:
        wait_for(cache_dir / CACHE_FILE, TEXT_CACHE_WAIT_S, hint="; build it beforehand with `ssmttm text-cache`")
    text = TextCache(cache_dir)
    lm_cfg = resolve_d_text(lm_cfg, text.hidden_size)
    config = run_config(lm_cfg, text_cfg, train_cfg, seed)
    fingerprint = data_fingerprint(shards_dir, cache_dir)
    key = run_key(config, fingerprint)
    if primary:
        prepare_run_dir(out_dir, key, fingerprint, resume)
    else:
        wait_for(out_dir / RUN_FILE, RUN_WAIT_S, lambda path: (read_run_info(path.parent) or {}).get("run_key") == key)

    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        check_resumable(checkpoint, config)
    resume_step = json.loads((checkpoint / CONFIG_FILE).read_text())["step"] if checkpoint else 0
    provenance_extra = {
        "shards": str(shards_dir),
        "run_key": key,
        "data": fingerprint,
        **stand_ins.provenance_fields(stand_ins.inherited([shards_dir, cache_dir])),
    }
    info = read_run_info(out_dir) or {}
    if resume_step >= train_cfg.max_steps and "summary" in info:  # finished: only the summary may be missing
        log.info("%s (run %s) is already trained to step %d; not retraining", out_dir, key, resume_step)
        if not primary:
            return {}
        if not (out_dir / PROVENANCE_FILE).is_file():  # else kept: it names the code and params that trained the run
            write_provenance(out_dir, "train_lm", config, seed, cpu_numerics=True, **provenance_extra)
        return finish_run(out_dir, resume_step, info["summary"])
    if checkpoint is not None:
        log.info("resuming run %s from %s", key, checkpoint)
    else:
        log.info("training run %s from scratch in %s", key, out_dir)

    data = TrainData(shards_dir, lm_cfg, train_cfg, seed)
    module = LMTrainModule(lm_cfg, train_cfg, text, data, seed)
    module.record_clip_ids = record_clip_ids
    n_flops, n_params = flops_params(module.model), trainable_params(module.model)
    summary_extra = {
        **({"run": run} if run is not None else {}),
        "backbone": lm_cfg.backbone,
        "params": n_params,
        "flops_params": n_flops,
        "max_steps": train_cfg.max_steps,
        "clips_per_step_per_device": train_cfg.clips_per_step,
        "seq_len": lm_cfg.seq_len,
        "precision": resolve_precision(train_cfg),
        "seed": seed,
    }
    recorder = RunRecorder(out_dir, train_cfg, n_flops, lm_cfg.seq_len, summary_extra, resume_step=resume_step)
    trainer = L.Trainer(
        accelerator=train_cfg.accelerator,
        devices=train_cfg.devices,
        num_nodes=train_cfg.num_nodes,
        strategy=train_cfg.strategy,
        precision=resolve_precision(train_cfg),
        max_steps=train_cfg.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=train_cfg.accumulate_grad_batches,
        gradient_clip_val=train_cfg.gradient_clip_val,
        deterministic=train_cfg.deterministic,
        callbacks=[recorder, *(callbacks or [])],
        plugins=[StepFolderIO(config)],
        # Validation, checkpoints and logging are the recorder's: Lightning's own are switched off.
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(out_dir),
    )
    summary = {**summary_extra, "world_size": trainer.world_size}
    if primary:
        write_run_info(out_dir, key, fingerprint, summary)
    if resume_step >= train_cfg.max_steps:  # finished by a session that did not write run.json's summary
        if not primary:
            return {}
        write_provenance(out_dir, "train_lm", config, seed, cpu_numerics=True, **provenance_extra)
        return finish_run(out_dir, resume_step, summary)
    deterministic_before, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if train_cfg.num_threads is not None:
        torch.set_num_threads(train_cfg.num_threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning vs torch 2.13
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
            trainer.fit(module, ckpt_path=str(checkpoint) if checkpoint else None, weights_only=True)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)

    if not trainer.is_global_zero:
        return {}
    write_provenance(out_dir, "train_lm", config, seed, cpu_numerics=True, **provenance_extra)
    return json.loads((out_dir / METRICS_FILE).read_text())


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train one named LM run (params `runs`: a backbone plus its own overrides). A run already in --out with the "
        "same run key (config + data) is resumed, or, when "
        "finished, only has final/ and metrics.json rewritten; a run of another key is moved to "
        "<out>/previous/<key>/ and, if <out>/previous/<this key>/ exists, that run is moved back and continued."
    )
    parser.add_argument("--shards", default="data/tokenize", help="token shards folder (default: data/tokenize)")
    parser.add_argument("--run", help="the run of params `runs` to train (default: the only one, when there is one)")
    parser.add_argument("--out", help="run folder (default: results/train_lm/<run>)")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue the run of the same key in --out, or restore it from <out>/previous/ (default); --no-resume "
        "moves any run in --out to <out>/previous/<key>/ and trains from scratch",
    )
    parser.add_argument(
        "--text-cache",
        help="text-encoder cache root written by `ssmttm text-cache` (default: <out>/text_cache, built on demand)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    names = run_names(params)
    run = args.run or (names[0] if len(names) == 1 else None)
    if run not in names:
        what = f"--run {args.run!r} is not a run of {args.params}" if args.run else f"{args.params} has several runs"
        raise UserFacingError(f"{what}; pass --run with one of: {', '.join(names)}")
    lm_cfg, train_cfg = run_configs(params, run)
    text_cfg = section_to_dataclass(TextConfig, params.get("text"))
    seed = int(params["seed"])
    out = Path(args.out or f"results/train_lm/{run}")
    metrics = train_lm(
        args.shards,
        lm_cfg,
        text_cfg,
        train_cfg,
        out,
        seed,
        run=run,
        resume=args.resume,
        text_cache_dir=args.text_cache,
    )
    if metrics:
        summary = {k: metrics.get(k) for k in ("run", "backbone", "steps", "first_loss", "last_loss", "best_val_loss")}
        timing_path = out / TIMING_FILE
        if timing_path.is_file():
            summary["tokens_per_s"] = json.loads(timing_path.read_text()).get("tokens_per_s")
        print(json.dumps(summary, indent=2))
    return 0
