"""Training data of train_lm: an endless, exactly resumable stream of micro-batches per rank.

`ssmttm.tokens.loader.TokenShardDataset` gives one epoch of one rank: a seeded order over the split, cropped / padded /
delayed items, worker splitting by batch (the order does not depend on `num_workers`) and a resume position
(`load_state_dict({"epoch", "consumed"})`). Lightning, though, resumes a mid-epoch iterable dataset poorly, so the
whole run is one Lightning epoch and `EndlessStream` chains the loader's epochs itself:

- every epoch contributes `n = len(rank's items) // batch_size` whole micro-batches (a partial last batch is left
  out, so batch boundaries never straddle epochs) and ranks have equal counts (`drop_uneven`);
- micro-batch b of a rank is batch b % n of epoch b // n: a pure function of (seed, rank, world size, b), so resuming
  at micro-batch b is `load_state_dict({"epoch": b // n, "consumed": (b % n) * batch_size})`, with no replay;
- with W worker processes, the DataLoader takes batch i of its iterator from worker i % W; each epoch is started in
  every worker with a rotated worker id so the loader's own batch-to-worker rule lines up with that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ssmttm.errors import UserFacingError
from ssmttm.models.lm import LMConfig
from ssmttm.tokens.loader import TokenShardDataset, collate
from ssmttm.tokens.shards import list_shards
from ssmttm.train.config import TrainConfig


class EndlessStream(IterableDataset):
    """Epoch after epoch of one rank's items, starting at micro-batch `start_batch` (see the module docstring)."""

    def __init__(self, dataset: TokenShardDataset, batch_size: int, start_batch: int):
        super().__init__()
        self.dataset, self.batch_size, self.start_batch = dataset, batch_size, start_batch
        self.batches_per_epoch = len(dataset) // batch_size
        if self.batches_per_epoch == 0:
            raise UserFacingError(
                f"only {len(dataset)} train clips per data-parallel process for a batch of "
                f"{batch_size}: lower train_lm.batch_size or tokenize more clips"
            )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        n, size = self.batches_per_epoch, self.batch_size
        epoch, first = divmod(self.start_batch, n)
        yielded_batches = 0  # batches of this iterator before the current epoch (all workers together)
        while True:
            self.dataset.set_epoch(epoch)
            self.dataset.load_state_dict({"epoch": epoch, "consumed": first * size})
            stop = n * size  # positions past the last whole batch are left out
            for item in self.dataset.iter_worker((worker - yielded_batches) % workers, workers):
                if item["position"] >= stop:
                    break
                yield item
            yielded_batches += n - first
            epoch, first = epoch + 1, 0


class TrainData:
    """The `data` of LMTrainModule: the train stream of (rank, start micro-batch) and a rank's validation loader."""

    def __init__(self, shards_dir: str | Path, lm_cfg: LMConfig, train_cfg: TrainConfig, seed: int):
        self.shards_dir, self.lm_cfg, self.train_cfg, self.seed = Path(shards_dir), lm_cfg, train_cfg, seed
        self._valid: dict[tuple[int, int], TokenShardDataset] = {}
        if not list_shards(self.shards_dir):
            raise UserFacingError(
                f"{shards_dir}: no token shards (shard-NNNNN.parquet); run `ssmttm tokenize` "
                "first or pass --shards with the tokenize output folder"
            )

    def dataset(self, split: str, rank: int, world_size: int) -> TokenShardDataset:
        cfg = self.lm_cfg
        return TokenShardDataset(
            self.shards_dir,
            seq_len=cfg.seq_len,
            n_codebooks=cfg.n_codebooks,
            special_id=cfg.special_id,
            split=split,
            shuffle=split == "train",
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            batch_size=self.train_cfg.batch_size,
            delay=True,
            drop_uneven=split == "train",
        )

    def train_loader(self, rank: int, world_size: int, start_batch: int) -> DataLoader:
        stream = EndlessStream(self.dataset("train", rank, world_size), self.train_cfg.batch_size, start_batch)
        workers = self.train_cfg.num_workers
        return DataLoader(
            stream,
            batch_size=self.train_cfg.batch_size,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def val_loader(self, rank: int, world_size: int) -> DataLoader:
        key = (rank, world_size)
        if key not in self._valid:  # the row-group index is read once per run, not per validation
            self._valid[key] = self.dataset("valid", rank, world_size)
        return DataLoader(self._valid[key], batch_size=self.train_cfg.batch_size, collate_fn=collate, num_workers=0)
