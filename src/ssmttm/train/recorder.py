"""The Lightning callback that records a run: per-step log, validation, checkpoints, dvclive, metrics.json.

At the end of every optimizer step (all ranks run the same branches, so collectives line up):
- step 1, every `log_every` steps and the last step: the step's training loss (mean over micro-batches and ranks),
  learning rate, cumulative tokens and FLOPs (6 N D) go to `history.jsonl`, the step's tokens/s and the training
  wall time so far to `timing.jsonl`, and both to dvclive;
- every `val_every` steps and the last step: the validation loss on the held-out split;
- every `checkpoint_every` steps and the last step: a `step-NNNNNNN/` checkpoint, then keep-last-K pruning
  (steps of `keep_weights_at_steps` keep their weights).
Validation runs before the checkpoint of the same step, so a checkpoint's history is complete.

`history.jsonl` is the run's record and holds only what the computation determines, so rerunning a run gives it
byte for byte; measurements of the machine (wall time, tokens/s) go to `timing.jsonl` and, summed up, `timing.json`,
and dvclive's files carry timestamps: those three are the run folder's only files that differ between reruns. On
resume from step N the rows after N (written before the kill) are dropped from both logs and dvclive's files are
rebuilt from them, so the logs show each step once. `metrics.json` summarises the history at the end.
Only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ssmttm.artifacts import TMP_MARK, link_or_copy, write_json
from ssmttm.config import canonical_json
from ssmttm.models.lm import CONFIG_FILE, WEIGHTS_FILE
from ssmttm.train.checkpoint import checkpoint_name, prune_checkpoints
from ssmttm.train.config import TrainConfig
from ssmttm.train.flops import training_flops

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
TIMING_LOG_FILE = "timing.jsonl"  # per logged step: wall time so far and tokens/s (not reproducible)
TIMING_FILE = "timing.json"  # their summary at the end of the run
DVCLIVE_DIR = "dvclive"
FINAL_DIR = "final"
DVCLIVE_KEYS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "tokens_per_s": "train/tokens_per_s",
    "tokens": "train/tokens",
    "flops": "train/flops",
    "val_loss": "val/loss",
}


def read_history(path: str | Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """Rows of history.jsonl (a half-written last line of a killed run is skipped), optionally up to a step."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if up_to_step is None or row["step"] <= up_to_step:
            rows.append(row)
    return rows


def summarise(history: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: a pure function of the history (no measurement of the machine, see summarise_timing)."""
    train = [r for r in history if "loss" in r]
    val = [r for r in history if "val_loss" in r]
    last = history[-1] if history else {}
    return {
        **extra,
        "first_loss": train[0]["loss"] if train else None,
        "last_loss": train[-1]["loss"] if train else None,
        "first_loss_step": train[0]["step"] if train else None,
        "best_val_loss": min(r["val_loss"] for r in val) if val else None,
        "best_val_step": min(val, key=lambda r: r["val_loss"])["step"] if val else None,
        "last_val_loss": val[-1]["val_loss"] if val else None,
        "steps": last.get("step", 0),
        "tokens": last.get("tokens", 0),
        "flops": last.get("flops", 0.0),
    }


def summarise_timing(timing: list[dict[str, Any]]) -> dict[str, Any]:
    """timing.json: training wall time (all sessions of the run, validation included) and mean tokens/s."""
    last = timing[-1] if timing else {}
    wall, tokens = last.get("elapsed_s", 0.0), last.get("tokens", 0)
    return {
        "steps": last.get("step", 0),
        "tokens": tokens,
        "wall_time_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else None,
    }


class RunRecorder(L.Callback):
    def __init__(
        self,
        out_dir: str | Path,
        train_cfg: TrainConfig,
        flops_params: int,
        tokens_per_clip: int,
        summary_extra: dict[str, Any],
        resume_step: int = 0,
    ):
        self.out_dir = Path(out_dir)
        self.cfg = train_cfg
        self.flops_params = flops_params
        self.tokens_per_clip = tokens_per_clip
        self.summary_extra = summary_extra
        self.resume_step = resume_step
        self.live = None
        self._last_step = 0
        self._elapsed_before = 0.0  # training wall time of earlier sessions of this run (resume)
        self._session_start = 0.0
        self._last_log = (0, 0.0)  # (step, time) of the previous log row

    # ------------------------------------------------------------------------------------------------ set-up

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Not on_fit_start: Lightning restores the global step (resume) between the two hooks.
        self._last_step = trainer.global_step
        self._session_start = time.perf_counter()
        self._last_log = (trainer.global_step, self._session_start)
        if trainer.global_step != self.resume_step:
            raise RuntimeError(f"resumed at step {trainer.global_step}, expected {self.resume_step}")
        if not trainer.is_global_zero:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        kept = read_history(self.out_dir / HISTORY_FILE, up_to_step=trainer.global_step)
        timing = read_history(self.out_dir / TIMING_LOG_FILE, up_to_step=trainer.global_step)
        self._elapsed_before = timing[-1]["elapsed_s"] if timing else 0.0
        for name, rows in ((HISTORY_FILE, kept), (TIMING_LOG_FILE, timing)):
            with open(self.out_dir / name, "w") as handle:  # drop rows a killed session wrote after the resume
                handle.writelines(canonical_json(r) + "\n" for r in rows)
        self.live = self._open_live(kept, timing)

    def _open_live(self, rows: list[dict[str, Any]], timing: list[dict[str, Any]]):
        from dvclive import Live

        # dvcyaml=None: the repository's dvc.yaml declares these plots and metrics (results/ is a DVC output).
        live = Live(dir=str(self.out_dir / DVCLIVE_DIR), resume=False, save_dvc_exp=False, dvcyaml=None)
        rates = {r["step"]: r["tokens_per_s"] for r in timing if "tokens_per_s" in r}
        for row in rows:
            extra = {"tokens_per_s": rates[row["step"]]} if "loss" in row and row["step"] in rates else {}
            self._log_live(live, {**row, **extra})
        return live

    @staticmethod
    def _log_live(live, row: dict[str, Any]) -> None:
        live.step = row["step"]
        keys = ["val_loss"] if "val_loss" in row else [k for k in DVCLIVE_KEYS if k != "val_loss"]
        for key in keys:
            name = DVCLIVE_KEYS[key]
            if key in row and row[key] is not None and math.isfinite(row[key]):
                live.log_metric(name, row[key])
        live.next_step()

    # ------------------------------------------------------------------------------------------------ per step

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:  # still accumulating gradients
            return
        self._last_step = step
        cfg, last = self.cfg, step >= trainer.max_steps
        loss = module.pop_step_loss()
        if step == 1 or step % cfg.log_every == 0 or last:
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
            self._write_train_row(trainer, module, step, float(loss))
        if step % cfg.val_every == 0 or last:
            self._validate(trainer, module, step)
        if step % cfg.checkpoint_every == 0 or last:
            trainer.save_checkpoint(self.out_dir / checkpoint_name(step), weights_only=False)
            if trainer.is_global_zero:
                pruned = prune_checkpoints(self.out_dir, cfg.keep_last_checkpoints, cfg.keep_weights_at_steps)
                for folder in pruned:
                    log.info("removed old checkpoint %s", folder.name)

    def _tokens(self, trainer: L.Trainer, step: int) -> int:
        return step * self.cfg.clips_per_step * trainer.world_size * self.tokens_per_clip

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._session_start)

    def _write_train_row(self, trainer: L.Trainer, module: L.LightningModule, step: int, loss: float) -> None:
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        prev_step, prev_time = self._last_log
        self._last_log = (step, now)
        tokens = self._tokens(trainer, step)
        rate = (tokens - self._tokens(trainer, prev_step)) / max(now - prev_time, 1e-9)
        row = {
            "step": step,
            "loss": loss,
            "lr": module.step_lr,
            "tokens": tokens,
            "flops": training_flops(self.flops_params, tokens),
            "micro_batches": module.micro_step,
        }
        self._append(row, {"step": step, "tokens": tokens, "tokens_per_s": rate, "elapsed_s": self._elapsed()})
        log.info("step %d/%d loss %.4f lr %.2e %.0f tokens/s", step, trainer.max_steps, loss, module.step_lr, rate)

    def _validate(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> None:
        total, clips = module.validation_loss(self.cfg.val_batches)
        sums = trainer.strategy.reduce(
            torch.tensor([total, float(clips)], device=module.device, dtype=torch.float64), reduce_op="sum"
        )
        if not trainer.is_global_zero:
            return
        if sums[1] == 0:
            log.warning("no validation clips: the valid split is empty, no validation loss at step %d", step)
            return
        tokens = self._tokens(trainer, step)
        val_loss = float(sums[0] / sums[1])
        self._append(
            {"step": step, "val_loss": val_loss, "tokens": tokens, "flops": training_flops(self.flops_params, tokens)},
            {"step": step, "tokens": tokens, "elapsed_s": self._elapsed(), "validation": True},
        )
        log.info("step %d validation loss %.4f (%d clips)", step, val_loss, int(sums[1]))

    def _append(self, row: dict[str, Any], timing: dict[str, Any]) -> None:
        """`row` to history.jsonl, `timing` (the measurements of the same moment) to timing.jsonl, both to dvclive."""
        for name, record in ((TIMING_LOG_FILE, timing), (HISTORY_FILE, row)):
            with open(self.out_dir / name, "a") as handle:
                handle.write(canonical_json(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        if self.live is not None:
            self._log_live(self.live, {**row, **({"tokens_per_s": timing["tokens_per_s"]} if "loss" in row else {})})

    # ------------------------------------------------------------------------------------------------ the end

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if module.record_clip_ids:  # per-rank record for the data-parallel tests
            write_json(
                self.out_dir / f"rank{trainer.global_rank}.json",
                {
                    "clip_ids": module.clip_ids,
                    "weights_sha256": module.weights_sha256(),
                    "micro_step": module.micro_step,
                    "world_size": trainer.world_size,
                },
            )
        if not trainer.is_global_zero:
            return
        if self.live is not None:
            self.live.end()
        finish_run(self.out_dir, trainer.global_step, {**self.summary_extra, "world_size": trainer.world_size})


def finish_run(out_dir: Path, step: int, summary_extra: dict[str, Any]) -> dict[str, Any]:
    """Export `final/` from the checkpoint of `step`, write metrics.json from the history (and timing.json from the
    timing log, when there is one); returns the metrics."""
    checkpoint = out_dir / checkpoint_name(step)
    export_final(checkpoint, out_dir / FINAL_DIR)
    history = read_history(out_dir / HISTORY_FILE)
    metrics = summarise(history, {**summary_extra, "checkpoint": checkpoint.name, "final": FINAL_DIR})
    timing = read_history(out_dir / TIMING_LOG_FILE)
    if timing:
        write_json(out_dir / TIMING_FILE, summarise_timing(timing))
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def export_final(checkpoint: Path, target: Path) -> None:
    """`final/`: weights and config of the last step (hard links), a stable path for `ssmttm generate`."""
    tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        link_or_copy(checkpoint / name, tmp / name, keep_metadata=True)  # a copy keeps the times, as a link would
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
