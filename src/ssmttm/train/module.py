"""The LightningModule of LM training: loss, AdamW + warm-up/cosine (train.schedule), seeded micro-batches.

- Loss: `models.lm.lm_loss` (cross-entropy per codebook, ignore index = the special id, label smoothing, summed over
  codebooks; the LM returns audio positions only, so text positions carry no loss). Lightning divides it by
  `accumulate_grad_batches` before backward, so an optimizer step sees the mean over its micro-batches.
- Caption dropout: `MusicLM.condition` applies it in training mode only (validation and generation never drop).
- Text: captions are turned into encoder outputs by `text` (a `TextCache`, or a `TextEncoder`), on the fly per batch.
- Determinism: before each micro-batch the global torch RNG (dropout, caption dropout) is re-seeded from
  (seed, rank, micro-batch index). The random stream of a step therefore depends only on where training is, not on
  what ran before (validation, a resume), which makes a resumed run repeat an uninterrupted one exactly on CPU.
  numpy's and Python's global RNGs, saved in every checkpoint, are seeded from (seed, rank) when a fresh run starts,
  so the checkpoint files of a rerun are byte-identical too.
- Data comes from `data` (see `train.data.TrainData`): `train_dataloader()` asks it for this rank's stream starting
  at the micro-batch the run has reached, so a resumed run continues mid-epoch where it stopped.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch

from ssmttm.artifacts import stable_int
from ssmttm.models.lm import LMConfig, MusicLM
from ssmttm.text.encoder import TextEncoding
from ssmttm.train.checkpoint import capture_rng_state, restore_rng_state
from ssmttm.train.config import TrainConfig
from ssmttm.train.schedule import build_scheduler, lightning_scheduler_config, lr_multiplier

STATE_KEY = "ssmttm"  # our entry in Lightning's checkpoint dict


class TextSource(Protocol):
    hidden_size: int

    def encode(self, captions: list[str]) -> TextEncoding: ...

    def uncond(self, batch_size: int = 1) -> TextEncoding: ...


class DataSource(Protocol):
    def train_loader(self, rank: int, world_size: int, start_batch: int) -> Any: ...

    def val_loader(self, rank: int, world_size: int) -> Any: ...


def micro_batch_seed(seed: int, rank: int, micro_step: int) -> int:
    return stable_int(seed, "train_lm", rank, micro_step) % (2**63 - 1)


class LMTrainModule(L.LightningModule):
    def __init__(self, lm_cfg: LMConfig, train_cfg: TrainConfig, text: TextSource, data: DataSource | None, seed: int):
        super().__init__()
        self.lm_cfg, self.train_cfg, self.text, self.data, self.seed = lm_cfg, train_cfg, text, data, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_int(seed, "train_lm", "init") % (2**63 - 1))
            self.model = MusicLM(lm_cfg)
        uncond = text.uncond()
        self.model.set_uncond(uncond.hidden, uncond.mask)  # what a dropped caption becomes
        self.micro_step = 0  # micro-batches this rank has trained on: its position in the data stream
        self.step_lr = float("nan")  # learning rate of the optimizer step in progress
        self.record_clip_ids = False  # tests: keep the clip ids this rank trained on (written to rank<R>.json)
        self.clip_ids: list[str] = []
        self._loss_sum = torch.zeros(())
        self._loss_batches = 0

    # ------------------------------------------------------------------------------------------------ data

    def setup(self, stage: str) -> None:
        # Before a resume's on_load_checkpoint, which restores these states: a function of the run either way.
        global_seed = stable_int(self.seed, "train_lm", "global_rngs", self.global_rank) % 2**32
        random.seed(global_seed)
        np.random.seed(global_seed)

    def train_dataloader(self):
        if self.data is None:
            raise RuntimeError("LMTrainModule has no data source")
        return self.data.train_loader(self.global_rank, self.trainer.world_size, self.micro_step)

    # ------------------------------------------------------------------------------------------------ steps

    def batch_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        codes = batch["codes"].long()  # (B, K, L) delayed codes
        text = self.text.encode(list(batch["caption"])).to(self.device)  # (B, S, E), (B, S)
        loss, _ = self.model.loss(codes, text.hidden, text.mask)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        torch.manual_seed(micro_batch_seed(self.seed, self.global_rank, self.micro_step))
        self.micro_step += 1
        if self.record_clip_ids:
            self.clip_ids.extend(batch["clip_id"])
        loss = self.batch_loss(batch)
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach().float()
        self._loss_batches += 1
        return loss

    def pop_step_loss(self) -> torch.Tensor:
        """Mean training loss over the micro-batches since the last call (one optimizer step), on this rank."""
        loss = self._loss_sum / max(self._loss_batches, 1)
        self._loss_sum = torch.zeros((), device=loss.device)
        self._loss_batches = 0
        return loss

    @torch.no_grad()
    def validation_loss(self, max_batches: int | None) -> tuple[float, int]:
        """(sum of per-clip batch losses, clips) over this rank's part of the valid split; eval mode, no dropout."""
        if self.data is None:
            return 0.0, 0
        was_training = self.training
        self.eval()
        total, clips = 0.0, 0
        try:
            with self.trainer.precision_plugin.forward_context():
                for i, batch in enumerate(self.data.val_loader(self.global_rank, self.trainer.world_size)):
                    if max_batches is not None and i >= max_batches:
                        break
                    batch = self.transfer_batch_to_device(batch, self.device, 0)
                    n = len(batch["clip_id"])
                    total += float(self.batch_loss(batch)) * n
                    clips += n
        finally:
            self.train(was_training)
        return total, clips

    def weights_sha256(self) -> str:
        """Hash of every parameter's bytes (data-parallel ranks must agree on it)."""
        digest = hashlib.sha256()
        for name, param in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------------------------------------ optimizer

    def configure_optimizers(self):
        # Weight decay on every parameter, as in the official code (no norm/bias exclusion).
        cfg = self.train_cfg
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
        scheduler = build_scheduler(optimizer, lr_multiplier(cfg))  # stepped per optimizer step in both modes
        return {"optimizer": optimizer, "lr_scheduler": lightning_scheduler_config(scheduler)}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.step_lr = float(optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {"micro_step": self.micro_step, "seed": self.seed, "rng": capture_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint[STATE_KEY]
        self.micro_step = int(state["micro_step"])
        restore_rng_state(state["rng"])
