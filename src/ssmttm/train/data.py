"""Training data of train_lm: an exactly resumable, per-rank stream of micro-batches over the token shards.

Every rank sees an endless sequence of clips, epoch after epoch: epoch e is a permutation of the train split seeded
by (seed, e), dealt round-robin to the ranks (the remainder that does not divide evenly is left out of that epoch,
so all ranks have the same number of batches). Micro-batch b of a rank is clips [b * B, (b + 1) * B) of its
sequence, a pure function of (seed, rank, world size, b). So:
- resuming at micro-batch b needs no replay (the sampler simply starts counting at b * B);
- the order does not depend on `num_workers` (a map-style dataset: workers fetch given positions);
- ranks see disjoint clips within an epoch.
Crops of clips longer than a training sequence start at a seeded offset (a different window each epoch).

Codes of the modelled codebooks are held in memory (int16): 54k clips x 2588 frames x 1 codebook is 280 MB.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ssmttm.artifacts import stable_int
from ssmttm.data.shards import array_to_matrices, list_shards
from ssmttm.errors import UserFacingError
from ssmttm.models.delay import apply_delay
from ssmttm.models.lm import LMConfig
from ssmttm.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class ClipTable:
    clip_ids: list[str]
    captions: list[str]
    codes: list[np.ndarray]  # each (K, T_i) int16, the first K codebooks

    def __len__(self) -> int:
        return len(self.clip_ids)


def read_split(shards_dir: str | Path, split: str, n_codebooks: int) -> ClipTable:
    """All rows of `split` across the shards, in shard then clip_id order."""
    shards = list_shards(shards_dir)
    if not shards:
        raise UserFacingError(f"{shards_dir}: no shard-NNNNN.parquet token shards; run `ssmttm tokenize` first (or "
                              "pass --shards with the tokenize output folder)")
    ids, captions, codes = [], [], []
    for shard in shards:
        table = pq.read_table(str(shard), columns=["clip_id", "split", "caption", "codes"],
                              filters=[("split", "=", split)])
        for matrix in array_to_matrices(table.column("codes"), np.int16):
            if matrix.shape[0] < n_codebooks:
                raise UserFacingError(f"{shard}: clips have {matrix.shape[0]} codebooks but lm.n_codebooks is "
                                      f"{n_codebooks}; lower lm.n_codebooks or re-tokenize with more codebooks")
            codes.append(np.ascontiguousarray(matrix[:n_codebooks]))
        ids += table.column("clip_id").to_pylist()
        captions += table.column("caption").to_pylist()
    return ClipTable(ids, captions, codes)


def training_sequence(codes: np.ndarray, offset: int, seq_len: int, special_id: int) -> torch.Tensor:
    """(K, T) codes -> (K, seq_len) delayed codes: frames [offset, offset + seq_len - K), delay, pad with special."""
    k = codes.shape[0]
    frames = torch.from_numpy(codes[:, offset : offset + seq_len - k].astype(np.int64))  # (K, F)
    delayed = apply_delay(frames, special_id)  # (K, F + K)
    out = torch.full((k, seq_len), special_id, dtype=torch.long)
    out[:, : delayed.shape[1]] = delayed
    return out


class _RankStream(Dataset):
    """Position i of one rank's endless clip sequence -> a sample dict (map-style: positions come from the sampler)."""

    def __init__(self, table: ClipTable, lm_cfg: LMConfig, seed: int, rank: int, world_size: int, train: bool):
        self.table, self.seed, self.rank, self.world_size, self.train = table, seed, rank, world_size, train
        self.seq_len, self.special_id, self.k = lm_cfg.seq_len, lm_cfg.special_id, lm_cfg.n_codebooks
        self.per_rank = len(table) // world_size if train else len(range(rank, len(table), world_size))
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, row order) cache

    def row(self, position: int) -> tuple[int, int]:
        """(epoch, table row) at a position of this rank's sequence."""
        if not self.train:
            return 0, self.rank + position * self.world_size
        epoch, index = divmod(position, self.per_rank)
        if self._order is None or self._order[0] != epoch:
            rng = np.random.Generator(np.random.PCG64(stable_int(self.seed, "train_order", epoch)))
            self._order = (epoch, rng.permutation(len(self.table)))
        return epoch, int(self._order[1][index * self.world_size + self.rank])

    def __getitem__(self, position: int) -> dict[str, Any]:
        epoch, row = self.row(position)
        codes = self.table.codes[row]
        spare = codes.shape[1] - (self.seq_len - self.k)
        offset = stable_int(self.seed, "crop", epoch, row) % (spare + 1) if self.train and spare > 0 else 0
        return {"codes": training_sequence(codes, offset, self.seq_len, self.special_id),
                "caption": self.table.captions[row], "clip_id": self.table.clip_ids[row], "epoch": epoch}

    def __len__(self) -> int:
        return self.per_rank


class _CountFrom(Sampler[int]):
    """start, start + 1, ... (endless when stop is None)."""

    def __init__(self, start: int, stop: int | None = None):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(itertools.count(self.start) if self.stop is None else range(self.start, self.stop))


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """-> codes (B, K, L) long, caption/clip_id lists, epoch (B,) long."""
    return {"codes": torch.stack([s["codes"] for s in samples]), "caption": [s["caption"] for s in samples],
            "clip_id": [s["clip_id"] for s in samples], "epoch": torch.tensor([s["epoch"] for s in samples])}


class TrainData:
    """The `data` of LMTrainModule: train stream per (rank, start micro-batch), validation loader per rank."""

    def __init__(self, shards_dir: str | Path, lm_cfg: LMConfig, train_cfg: TrainConfig, seed: int):
        self.shards_dir, self.lm_cfg, self.train_cfg, self.seed = Path(shards_dir), lm_cfg, train_cfg, seed
        self._tables: dict[str, ClipTable] = {}
        if lm_cfg.seq_len <= lm_cfg.n_codebooks:
            raise UserFacingError(f"lm.seq_len = {lm_cfg.seq_len} leaves no audio frame after the delay of "
                                  f"{lm_cfg.n_codebooks} codebooks; raise lm.seq_len")

    def __getstate__(self) -> dict[str, Any]:  # workers and spawned ranks reload the shards themselves
        return {**self.__dict__, "_tables": {}}

    def table(self, split: str) -> ClipTable:
        if split not in self._tables:
            self._tables[split] = read_split(self.shards_dir, split, self.lm_cfg.n_codebooks)
        return self._tables[split]

    def captions(self) -> list[str]:
        return sorted({*self.table("train").captions, *self.table("valid").captions})

    def train_loader(self, rank: int, world_size: int, start_batch: int) -> DataLoader:
        table = self.table("train")
        if len(table) < world_size:
            raise UserFacingError(f"{self.shards_dir}: {len(table)} train clips for {world_size} data-parallel "
                                  "processes; tokenize more clips or use fewer devices")
        stream = _RankStream(table, self.lm_cfg, self.seed, rank, world_size, train=True)
        b = self.train_cfg.batch_size
        return DataLoader(stream, batch_size=b, sampler=_CountFrom(start_batch * b), collate_fn=collate,
                          num_workers=self.train_cfg.num_workers, persistent_workers=self.train_cfg.num_workers > 0)

    def val_loader(self, rank: int, world_size: int) -> DataLoader:
        stream = _RankStream(self.table("valid"), self.lm_cfg, self.seed, rank, world_size, train=False)
        return DataLoader(stream, batch_size=self.train_cfg.batch_size, sampler=_CountFrom(0, len(stream)),
                          collate_fn=collate, num_workers=0)
