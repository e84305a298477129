"""`ssmttm train-lm`: train one LM backbone on the token shards with PyTorch Lightning.

    ssmttm train-lm --params params.yaml --shards data/tokenize --backbone prefix_simba --out RUN_DIR
    ssmttm train-lm --params params.yaml --shards data/tokenize --build-text-cache --text-cache data/text_cache
    ssmttm train-lm --plot results/train_lm/*/metrics.json --plot-out results/train_lm/loss_curves.png

Reads the sections `lm`, `text`, `train_lm` and `seed`. The run folder (RUN_DIR, default results/train_lm/<backbone>)
holds `step-NNNNNNN/` checkpoints, `final/` (the last weights, for `ssmttm generate`), `history.jsonl`, `dvclive/`,
`metrics.json`, `provenance.json` and, unless --text-cache names a shared folder, `text_cache/`. A run resumes from
its newest complete checkpoint unless `--no-resume`; a finished run is not retrained. Hardware comes from params
only: `train_lm.accelerator/devices/num_nodes/strategy/precision` are Lightning's own arguments.
"""

from __future__ import annotations

import argparse
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

from ssmttm.artifacts import is_temporary, write_provenance
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.models.lm import CONFIG_FILE, LMConfig, resolve_d_text
from ssmttm.models.registry import backbone_names
from ssmttm.text.encoder import TextConfig
from ssmttm.train.checkpoint import StepFolderIO, latest_checkpoint, list_checkpoints
from ssmttm.train.config import TrainConfig
from ssmttm.train.data import TrainData
from ssmttm.train.flops import flops_params, trainable_params
from ssmttm.train.module import LMTrainModule
from ssmttm.train.recorder import DVCLIVE_DIR, FINAL_DIR, HISTORY_FILE, METRICS_FILE, RunRecorder, finish_run
from ssmttm.train.text_cache import CACHE_FILE, TextCache, build_text_cache, cache_folder

log = logging.getLogger(__name__)

TEXT_CACHE_DIR = "text_cache"  # inside the run folder unless --text-cache names a shared one
TEXT_CACHE_WAIT_S = 4 * 3600  # how long the other processes of a launch wait for the first to build the cache
# train_lm keys that may change between a run and its resume without changing what is computed.
RESUME_FREE_KEYS = {
    "log_every",
    "checkpoint_every",
    "keep_last_checkpoints",
    "val_every",
    "val_batches",
    "max_hours",
    "also_train",
    "num_workers",
    "num_threads",
}


def resolve_precision(cfg: TrainConfig) -> str:
    """`auto`: bf16 mixed precision on a GPU (the paper), full fp32 on CPU (exact reruns)."""
    if cfg.precision != "auto":
        return cfg.precision
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def run_config(lm_cfg: LMConfig, text_cfg: TextConfig, train_cfg: TrainConfig, seed: int) -> dict[str, Any]:
    """What goes into each checkpoint's config.json (besides format and step)."""
    return {
        "lm": dataclass_to_dict(lm_cfg),
        "text": dataclass_to_dict(text_cfg),
        "train_lm": dataclass_to_dict(train_cfg),
        "seed": seed,
    }


def check_resumable(checkpoint: Path, config: dict[str, Any]) -> None:
    """A checkpoint may only be resumed with the params it was trained with (logging/checkpoint cadence aside)."""
    saved = json.loads((checkpoint / CONFIG_FILE).read_text())
    differences = []
    for section in ("lm", "text", "seed"):
        if saved.get(section) != config[section]:
            differences.append(section)
    saved_train = saved.get("train_lm", {})
    differences += [
        f"train_lm.{k}" for k, v in config["train_lm"].items() if k not in RESUME_FREE_KEYS and saved_train.get(k) != v
    ]
    if differences:
        raise UserFacingError(
            f"{checkpoint} was trained with other params ({', '.join(differences)} differ); "
            "restore those params, or train from scratch with `--no-resume` (it deletes the old "
            "checkpoints of this run)"
        )


def is_primary_process() -> bool:
    """False in the extra processes of a multi-process launch (Lightning's ddp children, torchrun, srun tasks).

    Before the Trainer exists, only the environment tells which process this is; the side effects on the run folder
    (clearing it, building the text cache) belong to the first one.
    """
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise UserFacingError(
                f"{path} did not appear within {timeout_s:.0f} s (built by the first process); "
                "build the text cache beforehand with `ssmttm train-lm --build-text-cache`"
            )
        time.sleep(5)


def remove_temporaries(out_dir: Path) -> None:
    """Folders and files a killed save left under a temporary name (artifacts.atomic_dir / atomic_path)."""
    if out_dir.is_dir():
        for child in out_dir.iterdir():
            if is_temporary(child):
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def clear_run(out_dir: Path) -> None:
    """Remove what a previous run left in `out_dir` (fresh start); the text cache is kept."""
    for _, folder in list_checkpoints(out_dir):
        shutil.rmtree(folder)
    for name in (FINAL_DIR, DVCLIVE_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (HISTORY_FILE, METRICS_FILE):
        (out_dir / name).unlink(missing_ok=True)


def finished_metrics(out_dir: Path, config: dict[str, Any], max_steps: int) -> dict[str, Any] | None:
    """The metrics of a run that already reached max_steps with these params, else None."""
    metrics_path, latest = out_dir / METRICS_FILE, latest_checkpoint(out_dir)
    if not metrics_path.is_file() or latest is None:
        return None
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("steps") != max_steps:
        return None
    check_resumable(latest, config)
    return metrics


def train_lm(
    shards_dir: str | Path,
    lm_cfg: LMConfig,
    text_cfg: TextConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    seed: int,
    backbone: str | None = None,
    *,
    resume: bool = True,
    restart_if_params_changed: bool = False,
    text_cache_dir: str | Path | None = None,
    text_encoder: Any | None = None,
    callbacks: list[Any] | None = None,
    record_clip_ids: bool = False,
) -> dict[str, Any]:
    """Train `backbone` (default lm_cfg.backbone) on the shards in `shards_dir`; returns the summary metrics.

    `text_encoder` (anything with `encode`) replaces the configured encoder when the text cache is built (tests);
    `restart_if_params_changed` starts over, instead of stopping, when the newest checkpoint was made with other
    params (the workflow's behaviour: it reruns a run only when its params changed, or to resume a killed one);
    `callbacks` are extra Lightning callbacks; `record_clip_ids` makes each rank write the clip ids it trained on and
    a hash of its final weights to `rank<R>.json` (data-parallel tests).
    """
    import lightning as L

    out_dir = Path(out_dir)
    if backbone is not None:
        lm_cfg = dataclasses.replace(lm_cfg, backbone=backbone)
    data = TrainData(shards_dir, lm_cfg, train_cfg, seed)

    # Frozen text encoder outputs, computed once per distinct caption.
    cache_root = Path(text_cache_dir) if text_cache_dir is not None else out_dir / TEXT_CACHE_DIR
    cache_dir = cache_folder(cache_root, text_cfg, train_cfg.text_cache_dtype)
    if is_primary_process():
        build_text_cache(data.captions(), text_cfg, cache_root, train_cfg.text_cache_dtype, encoder=text_encoder)
    else:
        wait_for(cache_dir / CACHE_FILE, TEXT_CACHE_WAIT_S)
    text = TextCache(cache_dir)
    lm_cfg = resolve_d_text(lm_cfg, text.hidden_size)
    config = run_config(lm_cfg, text_cfg, train_cfg, seed)

    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        try:
            check_resumable(checkpoint, config)
        except UserFacingError as exc:
            if not restart_if_params_changed:
                raise
            log.warning("%s; starting over", str(exc).split(";")[0])
            checkpoint = None
    if checkpoint is not None and (done := finished_metrics(out_dir, config, train_cfg.max_steps)) is not None:
        log.info("%s already trained to step %d; nothing to do", out_dir, train_cfg.max_steps)
        return done
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
    if is_primary_process():
        remove_temporaries(out_dir)
        if checkpoint is None and out_dir.exists():
            clear_run(out_dir)
    resume_step = json.loads((checkpoint / CONFIG_FILE).read_text())["step"] if checkpoint else 0

    module = LMTrainModule(lm_cfg, train_cfg, text, data, seed)
    module.record_clip_ids = record_clip_ids
    n_flops, n_params = flops_params(module.model), trainable_params(module.model)
    summary_extra = {
        "backbone": lm_cfg.backbone,
        "params": n_params,
        "flops_params": n_flops,
        "max_steps": train_cfg.max_steps,
        "clips_per_step_per_device": train_cfg.clips_per_step,
        "seq_len": lm_cfg.seq_len,
        "precision": resolve_precision(train_cfg),
        "seed": seed,
    }
    if resume_step >= train_cfg.max_steps:  # killed after its last checkpoint: only the summary is missing
        if is_primary_process():
            write_provenance(out_dir, "train_lm", config, seed, shards=str(shards_dir))
            return finish_run(out_dir, resume_step, summary_extra)
        return {}
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
    write_provenance(out_dir, "train_lm", config, seed, shards=str(shards_dir))
    return json.loads((out_dir / METRICS_FILE).read_text())


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", default="data/tokenize", help="token shards folder (default: data/tokenize)")
    parser.add_argument("--backbone", help="backbone to train (overrides lm.backbone)")
    parser.add_argument("--out", help="run folder (default: results/train_lm/<backbone>)")
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="resume from the newest checkpoint in --out (default); --no-resume starts over",
    )
    parser.add_argument(
        "--restart-if-params-changed",
        action="store_true",
        help="with --resume: start over (deleting the old checkpoints) instead of stopping when they were trained "
        "with other params; the Snakemake rule uses it",
    )
    parser.add_argument("--text-cache", help="folder of shared text-encoder caches (default: <out>/text_cache)")
    parser.add_argument(
        "--build-text-cache",
        action="store_true",
        help="only encode the captions of --shards into --text-cache, then exit",
    )
    parser.add_argument(
        "--plot",
        nargs="+",
        metavar="METRICS_JSON",
        help="instead of training: plot the loss curves of these runs' metrics.json",
    )
    parser.add_argument("--plot-out", default="results/train_lm/loss_curves.png", help="PNG written by --plot")


def run_from_args(args: argparse.Namespace) -> int:
    if args.plot:
        from ssmttm.train.plots import plot_loss_curves

        print(plot_loss_curves(args.plot, args.plot_out))
        return 0
    params = load_params(args.params)
    lm_cfg = section_to_dataclass(LMConfig, params.get("lm"))
    text_cfg = section_to_dataclass(TextConfig, params.get("text"))
    train_cfg = section_to_dataclass(TrainConfig, params.get("train_lm"))
    seed = int(params["seed"])
    backbone = args.backbone or lm_cfg.backbone
    if backbone not in backbone_names():
        raise UserFacingError(f"--backbone {backbone!r} is not a backbone; valid: {', '.join(backbone_names())}")
    if args.build_text_cache:
        if not args.text_cache:
            raise UserFacingError("--build-text-cache needs --text-cache DIR (e.g. data/text_cache)")
        data = TrainData(args.shards, dataclasses.replace(lm_cfg, backbone=backbone), train_cfg, seed)
        print(build_text_cache(data.captions(), text_cfg, args.text_cache, train_cfg.text_cache_dtype))
        return 0
    out = args.out or f"results/train_lm/{backbone}"
    metrics = train_lm(
        args.shards,
        lm_cfg,
        text_cfg,
        train_cfg,
        out,
        seed,
        backbone=backbone,
        resume=args.resume,
        restart_if_params_changed=args.restart_if_params_changed,
        text_cache_dir=args.text_cache,
    )
    if metrics:
        print(
            json.dumps(
                {
                    k: metrics[k]
                    for k in ("backbone", "steps", "first_loss", "last_loss", "best_val_loss", "tokens_per_s")
                },
                indent=2,
            )
        )
    return 0
