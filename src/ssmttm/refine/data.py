"""Training data of the refiner: fixed-length crops of normalised codec latents from the token shards.

Every clip of a token shard written with `tokenize.store_latents: true` holds `latents` (K*D, T) float16, the codec's
pre-quantisation latents (codebook k in channels k*D .. (k+1)*D - 1). The refiner trains on crops of `crop_frames`
frames of them, normalised per codebook (refine.normalise); nothing here depends on the frame rate.

`LatentCrops` streams the crops of one split in a seeded order that a run can resume exactly:
- epoch e: the row groups holding the split are permuted with a generator seeded by (seed, e); consecutive windows
  of `window_row_groups` row groups are read together (each row group once per epoch) and their rows permuted;
- item p of epoch e: a clip longer than the crop is cropped at an offset drawn uniformly from a generator seeded by
  (seed, e, p), so the crop is a function of the position alone; a shorter clip is right-padded with zeros (the
  codebook mean once normalised) and `frame_mask` is False on the padding;
- the state is the next item's (epoch, position); restoring it never reads the items before it.
`validation_batches` reads one split in file order, one centred crop per clip: the same batches every time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ssmttm.errors import UserFacingError
from ssmttm.refine.normalise import LatentStats, normalise
from ssmttm.tokens.shards import array_to_matrices, list_shards, read_shard_metadata

READ_COLUMNS = ["clip_id", "caption", "latents"]


@dataclass
class CropBatch:
    latents: torch.Tensor  # (B, K*D, crop_frames) float32, normalised
    frame_mask: torch.Tensor  # (B, crop_frames) bool, False on the padding of short clips
    captions: list[str]
    clip_ids: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def latent_shards(shards: str | Path) -> tuple[list[Path], dict[str, Any]]:
    """The token shards of a tokenize folder (or one shard) and their codec identity; every shard must hold latents."""
    shards = Path(shards)
    paths = list_shards(shards) if shards.is_dir() else [shards]
    if not paths or not all(p.is_file() for p in paths):
        raise UserFacingError(f"{shards}: no token shards (shard-NNNNN.parquet); run `ssmttm tokenize` first")
    identity = None
    for path in paths:
        if "latents" not in pq.ParquetFile(str(path)).schema_arrow.names:
            raise UserFacingError(
                f"{path}: no latents column; the refiner trains on the codec latents: set tokenize.store_latents: "
                "true and re-run `ssmttm tokenize`"
            )
        codec = read_shard_metadata(path)["codec"]
        if identity is not None and codec != identity:
            raise UserFacingError(f"{path}: latents of another codec than {paths[0]}; re-run `ssmttm tokenize`")
        identity = codec
    return paths, identity


def _split_row_groups(paths: Sequence[Path], split: str) -> list[tuple[int, int, np.ndarray]]:
    """(shard index, row group, rows of the split in it) for every row group holding the split (reads `split` only)."""
    groups = []
    for s, path in enumerate(paths):
        pf = pq.ParquetFile(str(path))
        for g in range(pf.num_row_groups):
            splits = np.asarray(pf.read_row_group(g, columns=["split"]).column("split").to_pylist())
            rows = np.flatnonzero(splits == split)
            if rows.size:
                groups.append((s, g, rows))
    return groups


def _read_rows(path: Path, group: int, rows: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(clip_id, caption, latents (K*D, T) float32) of the given rows of one row group."""
    table = pq.ParquetFile(str(path)).read_row_group(group, columns=READ_COLUMNS)
    ids, captions = table.column("clip_id").to_pylist(), table.column("caption").to_pylist()
    latents = array_to_matrices(table.column("latents"), np.float32)
    return [(ids[r], captions[r], latents[r]) for r in rows]


def _crop(latents: np.ndarray, offset: int, crop_frames: int, stats: LatentStats) -> tuple[torch.Tensor, torch.Tensor]:
    """(K*D, T) raw latents -> normalised (K*D, crop_frames) from `offset`, zero-padded, and its (crop_frames,) mask."""
    window = torch.from_numpy(np.ascontiguousarray(latents[:, offset : offset + crop_frames]))
    n = window.shape[1]
    out = torch.zeros(latents.shape[0], crop_frames)
    out[:, :n] = normalise(window, stats)
    mask = torch.zeros(crop_frames, dtype=torch.bool)
    mask[:n] = True
    return out, mask


def _stack(items: list[tuple[torch.Tensor, torch.Tensor, str, str]]) -> CropBatch:
    latents, masks, captions, ids = zip(*items, strict=True)
    return CropBatch(torch.stack(latents), torch.stack(masks), list(captions), list(ids))


class LatentCrops:
    """Random crops of one split's normalised latents, in a seeded, resumable order (see the module docstring)."""

    def __init__(
        self,
        shards: str | Path,
        stats: LatentStats,
        crop_frames: int,
        seed: int,
        split: str = "train",
        window_row_groups: int = 4,
    ):
        if crop_frames < 1:
            raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
        self.paths, self.codec = latent_shards(shards)
        self.stats, self.crop_frames, self.seed, self.split = stats, crop_frames, seed, split
        self.window_row_groups = max(1, window_row_groups)
        self.row_groups = _split_row_groups(self.paths, split)
        self.n_items = sum(rows.size for _, _, rows in self.row_groups)
        if not self.n_items:
            raise UserFacingError(
                f"{shards}: no '{split}' clip in the token shards; the refiner has nothing to train on"
            )
        self.epoch, self.position = 0, 0
        self._order: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, items (N, 2), window of each item)
        self._window: tuple[int, int, dict[tuple[int, int], Any]] | None = None  # (epoch, window, rows read)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _epoch_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) (row group index, row) of every item of the current epoch in order, and (N,) its window."""
        if self._order is None or self._order[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(len(self.row_groups))
            items, windows = [], []
            for w, start in enumerate(range(0, len(order), self.window_row_groups)):
                chosen = order[start : start + self.window_row_groups]
                sizes = [self.row_groups[i][2].size for i in chosen]
                window = np.stack([np.repeat(chosen, sizes), np.concatenate([np.arange(n) for n in sizes])], axis=1)
                items.append(window[rng.permutation(len(window))])
                windows.append(np.full(len(window), w))
            self._order = (self.epoch, np.concatenate(items), np.concatenate(windows))
        return self._order[1], self._order[2]

    def _rows_of_window(self, window: int, items: np.ndarray, windows: np.ndarray) -> dict[tuple[int, int], Any]:
        """The clips of one window, read once and kept until the stream moves on: {(group index, row): clip}."""
        if self._window is None or self._window[:2] != (self.epoch, window):
            rows: dict[tuple[int, int], Any] = {}
            for i in dict.fromkeys(items[windows == window, 0].tolist()):
                shard, group, split_rows = self.row_groups[i]
                for j, clip in enumerate(_read_rows(self.paths[shard], group, split_rows)):
                    rows[(i, j)] = clip
            self._window = (self.epoch, window, rows)
        return self._window[2]

    def _item(self) -> tuple[torch.Tensor, torch.Tensor, str, str]:
        items, windows = self._epoch_order()
        group, row = items[self.position]
        clip_id, caption, latents = self._rows_of_window(int(windows[self.position]), items, windows)[(group, row)]
        spare = max(0, latents.shape[1] - self.crop_frames)
        offset = int(np.random.default_rng([self.seed, self.epoch, self.position]).integers(0, spare + 1))
        crop, mask = _crop(latents, offset, self.crop_frames, self.stats)
        self.position += 1
        if self.position == self.n_items:
            self.epoch, self.position = self.epoch + 1, 0
        return crop, mask, caption, clip_id

    def batch(self, size: int) -> CropBatch:
        """The next `size` crops of the stream (an epoch boundary may fall inside a batch)."""
        return _stack([self._item() for _ in range(size)])


def validation_batches(
    shards: str | Path,
    stats: LatentStats,
    crop_frames: int,
    batch_size: int,
    split: str = "valid",
    max_clips: int | None = None,
) -> Iterator[CropBatch]:
    """The split's clips in file order (the first `max_clips`), one centred crop each, `batch_size` per batch."""
    paths, _ = latent_shards(shards)
    pending: list[tuple[torch.Tensor, torch.Tensor, str, str]] = []
    seen = 0
    for shard, group, rows in _split_row_groups(paths, split):
        if max_clips is not None:
            rows = rows[: max(0, max_clips - seen)]
        if not rows.size:
            break
        for clip_id, caption, latents in _read_rows(paths[shard], group, rows):
            offset = max(0, (latents.shape[1] - crop_frames) // 2)
            pending.append((*_crop(latents, offset, crop_frames, stats), caption, clip_id))
            seen += 1
            if len(pending) == batch_size:
                yield _stack(pending)
                pending = []
    if pending:
        yield _stack(pending)
