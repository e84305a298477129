"""Training data loader: token shards streamed by Parquet row group, split over ranks and workers, resumable.

    ds = TokenShardDataset("data/tokenize", seq_len=256, n_codebooks=1, seed=1234, rank=r, world_size=w,
                           batch_size=32)
    loader = DataLoader(ds, batch_size=32, num_workers=2, collate_fn=collate)
    ds.set_epoch(epoch)                      # before creating the iterator (workers copy the dataset)
    for batch in loader: ...; ds.observe(batch)
    state = ds.state_dict()                  # {"epoch", "consumed", ...}: samples this rank has consumed

The epoch's order. Row groups (the read unit) are permuted with a generator seeded by (seed, epoch); consecutive
windows of `shuffle_row_groups` row groups are read together and their rows permuted, which gives a global stream of
the split's N clips. Rank r takes one contiguous block of that stream (sizes differ by at most one; `drop_uneven`
drops the at most world_size - 1 leftover items so every rank has the same count), so a rank reads only its own part
of the data. Within a rank, batch b (items b*batch_size ... of the block) goes to worker b % num_workers: that is the
order in which `torch.utils.data.DataLoader` (same batch_size) hands batches back, so the rank's order is the same for
any number of workers, and "consumed n samples" means exactly the first n items of the block. Resuming
(`load_state_dict`) skips them. Without `shuffle` (evaluation) the order is the files' (clip_id within a shard).

Items: dict(codes LongTensor (K, seq_len), caption str, clip_id str, n_valid int, position int). A clip longer than
the window is cropped (seeded random offset when shuffling, else from its start); a shorter one is right-padded with
the special id. With `delay` (the LM's layout, `ssmttm.models.delay`: codebook k shifted right by k + 1, so the first
column is an all-special BOS), the window is seq_len - K frames and the delayed item exactly seq_len long; n_valid
counts the real frames before the delay. Shards are read with `ParquetFile.read_row_group` (codes, caption and
clip_id only; latents are never read). No global state: everything comes from the constructor.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ssmttm.artifacts import stable_int
from ssmttm.errors import UserFacingError
from ssmttm.models.delay import apply_delay
from ssmttm.tokens.shards import array_to_matrices, list_shards, read_shard_metadata

READ_COLUMNS = ["clip_id", "caption", "codes"]


@dataclass(frozen=True)
class RowGroup:
    shard: int  # index into the dataset's shard paths
    group: int  # row group index in that shard
    rows: np.ndarray  # row indices (within the row group) that belong to the split


def _shard_paths(shards: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(shards, str | Path) and Path(shards).is_dir():
        paths = list_shards(shards)
    elif isinstance(shards, str | Path):
        paths = [Path(shards)]
    else:
        paths = [Path(p) for p in shards]
    if not paths:
        raise UserFacingError(f"{shards}: no token shards (shard-NNNNN.parquet); run `ssmttm tokenize` first")
    for path in paths:
        if not path.is_file():
            raise UserFacingError(f"{path}: token shard not found; run `ssmttm tokenize` for it")
    return paths


class TokenShardDataset(IterableDataset):
    """Stream token items of one split from Parquet shards (see the module docstring for order and resume)."""

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        seq_len: int,
        n_codebooks: int = 1,
        special_id: int = 1024,
        split: str = "train",
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        delay: bool = True,
        shuffle_row_groups: int = 4,
        drop_uneven: bool = False,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        frames = seq_len - n_codebooks if delay else seq_len
        if frames < 1:
            raise ValueError(f"seq_len {seq_len} leaves no frame for {n_codebooks} codebooks with the delay pattern")
        self.paths = _shard_paths(shards)
        self.seq_len, self.n_codebooks, self.special_id = seq_len, n_codebooks, special_id
        self.split, self.shuffle, self.seed = split, shuffle, seed
        self.rank, self.world_size, self.batch_size = rank, world_size, max(1, batch_size)
        self.delay, self.frames = delay, frames
        self.shuffle_row_groups, self.drop_uneven = max(1, shuffle_row_groups), drop_uneven
        self.codec_identity = self._check_shards()
        self.row_groups = self._index()
        self.epoch = 0
        self._start = 0  # items of this rank's epoch already consumed before this pass (resume)
        self._yielded = 0  # items handed out by the current in-process pass

    # ------------------------------------------------------------------------------------------------ index

    def _check_shards(self) -> dict[str, Any]:
        identity = None
        for path in self.paths:
            codec = read_shard_metadata(path)["codec"]
            if identity is None:
                identity = codec
            elif codec != identity:
                raise UserFacingError(
                    f"{path}: tokens of another codec than {self.paths[0]}; all shards of a "
                    "training run must come from one codec (re-run `ssmttm tokenize`)"
                )
        if self.n_codebooks > int(identity["n_codebooks"]):
            raise UserFacingError(
                f"the LM wants {self.n_codebooks} codebooks but the shards hold "
                f"{identity['n_codebooks']}; lower lm.n_codebooks or tokenize with a larger codec"
            )
        if int(identity["codebook_size"]) > self.special_id:
            raise UserFacingError(
                f"codebook_size {identity['codebook_size']} overlaps the special id {self.special_id}"
            )
        return identity

    def _index(self) -> list[RowGroup]:
        """Row groups with the rows of the split (reads only the small `split` column)."""
        groups = []
        for s, path in enumerate(self.paths):
            pf = pq.ParquetFile(str(path))
            for g in range(pf.num_row_groups):
                splits = np.asarray(pf.read_row_group(g, columns=["split"]).column("split").to_pylist())
                rows = np.flatnonzero(splits == self.split)
                if rows.size:
                    groups.append(RowGroup(s, g, rows))
        return groups

    def __len__(self) -> int:
        """Items of this rank in one epoch."""
        start, stop = self._rank_bounds(sum(g.rows.size for g in self.row_groups))
        return stop - start

    # ------------------------------------------------------------------------------------------------ order

    def _epoch_stream(self) -> np.ndarray:
        """(N, 2) int64: (index into self.row_groups, row within it) for the whole split, in this epoch's order."""
        per_group = [np.stack([np.full(g.rows.size, i), g.rows], axis=1) for i, g in enumerate(self.row_groups)]
        if not per_group:
            return np.zeros((0, 2), dtype=np.int64)
        if not self.shuffle:
            return np.concatenate(per_group).astype(np.int64)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(per_group))
        windows = []
        for w in range(0, len(order), self.shuffle_row_groups):
            items = np.concatenate([per_group[i] for i in order[w : w + self.shuffle_row_groups]])
            windows.append(items[rng.permutation(len(items))])
        return np.concatenate(windows).astype(np.int64)

    def _rank_bounds(self, n: int) -> tuple[int, int]:
        base, extra = divmod(n, self.world_size)
        if self.drop_uneven:
            return self.rank * base, (self.rank + 1) * base
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def rank_order(self) -> np.ndarray:
        """(n, 2) this rank's items for the current epoch, in consumption order."""
        stream = self._epoch_stream()
        start, stop = self._rank_bounds(len(stream))
        return stream[start:stop]

    # ------------------------------------------------------------------------------------------------ epoch / resume

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; a different epoch than the current one starts it from its beginning."""
        if epoch != self.epoch:
            self.epoch, self._start, self._yielded = epoch, 0, 0

    def observe(self, batch: dict[str, Any]) -> None:
        """Record a batch the trainer consumed (needed with worker processes, harmless without)."""
        self._yielded = int(torch.as_tensor(batch["position"]).max()) + 1 - self._start

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "consumed": self._start + self._yielded,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "split": self.split,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass yields exactly the items of `state['epoch']` not yet consumed."""
        for key in ("seed", "rank", "world_size", "split"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"loader state was saved with {key}={state[key]!r}, this dataset has "
                    f"{getattr(self, key)!r}: the order would differ"
                )
        self.epoch, self._start, self._yielded = int(state["epoch"]), int(state["consumed"]), 0

    # ------------------------------------------------------------------------------------------------ iteration

    def _worker_items(self, worker_id: int, num_workers: int) -> Iterator[tuple[int, int, int]]:
        """(position in rank order, row group index, row) for this worker: batches round-robin over workers."""
        order = self.rank_order()
        for pos in range(self._start, len(order)):
            if ((pos - self._start) // self.batch_size) % num_workers == worker_id:
                yield pos, int(order[pos, 0]), int(order[pos, 1])

    def _read_group(self, files: dict[int, pq.ParquetFile], index: int) -> dict[str, Any]:
        group = self.row_groups[index]
        if group.shard not in files:
            files[group.shard] = pq.ParquetFile(str(self.paths[group.shard]))
        table = files[group.shard].read_row_group(group.group, columns=READ_COLUMNS)
        return {
            "clip_id": table.column("clip_id").to_pylist(),
            "caption": table.column("caption").to_pylist(),
            "codes": array_to_matrices(table.column("codes"), np.int16),
        }

    def _item(self, codes: np.ndarray, clip_id: str) -> tuple[torch.Tensor, int]:
        """codes (K_stored, T) int16 -> (K, seq_len) int64 window and its real frame count."""
        codes = codes[: self.n_codebooks]  # (K, T)
        t = codes.shape[1]
        start = 0
        if t > self.frames and self.shuffle:
            start = stable_int(self.seed, self.epoch, "crop", clip_id) % (t - self.frames + 1)
        window = codes[:, start : start + self.frames]
        n_valid = window.shape[1]
        padded = np.full((self.n_codebooks, self.frames), self.special_id, dtype=np.int64)  # (K, frames)
        padded[:, :n_valid] = window
        out = torch.from_numpy(padded)
        if self.delay:
            out = apply_delay(out, self.special_id)  # (K, frames + K) = (K, seq_len)
        return out, n_valid

    def iter_worker(self, worker_id: int = 0, num_workers: int = 1) -> Iterator[dict[str, Any]]:
        """The items of one worker of this rank (what __iter__ runs inside a DataLoader worker)."""
        files: dict[int, pq.ParquetFile] = {}
        cache: OrderedDict[int, dict[str, Any]] = OrderedDict()  # decoded row groups, LRU
        in_process = get_worker_info() is None and num_workers == 1
        if in_process:
            self._yielded = 0
        for pos, index, row in self._worker_items(worker_id, num_workers):
            if index not in cache:
                cache[index] = self._read_group(files, index)
                if len(cache) > self.shuffle_row_groups + 1:
                    cache.popitem(last=False)
            cache.move_to_end(index)
            group = cache[index]
            codes, n_valid = self._item(group["codes"][row], group["clip_id"][row])
            if in_process:
                self._yielded += 1
            yield {
                "codes": codes,
                "caption": group["caption"][row],
                "clip_id": group["clip_id"][row],
                "n_valid": n_valid,
                "position": pos,
            }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        if info is None:
            return self.iter_worker(0, 1)
        return self.iter_worker(info.id, info.num_workers)

    def describe(self) -> str:
        return json.dumps(
            {
                "shards": len(self.paths),
                "row_groups": len(self.row_groups),
                "items": len(self),
                "split": self.split,
                "codec": self.codec_identity.get("variant"),
            }
        )


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Items -> codes (B, K, seq_len) int64, n_valid (B,), position (B,), caption and clip_id lists."""
    return {
        "codes": torch.stack([it["codes"] for it in items]),  # (B, K, L)
        "caption": [it["caption"] for it in items],
        "clip_id": [it["clip_id"] for it in items],
        "n_valid": torch.tensor([it["n_valid"] for it in items], dtype=torch.long),
        "position": torch.tensor([it["position"] for it in items], dtype=torch.long),
    }
