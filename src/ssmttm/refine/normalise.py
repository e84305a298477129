"""Per-codebook normalisation of continuous codec latents for the refiner (PAPER.md section 6).

Latents (..., K*D, T): codebook k holds channels k*D .. (k+1)*D - 1. Each codebook has one mean and one std, taken
over all its D dims and all frames of the training split:

    normalise(z)   = (z - mean_k) / std_k        for the channels of codebook k
    denormalise(x) = x * std_k + mean_k

`compute_stats` reads the `latents` column of the token shards (tokenize with store_latents: true), row group by
row group, train rows only, accumulating counts, means and squared deviations in float64 (Chan's parallel update,
in file order, so the result does not depend on the machine). The statistics travel with the model as
`latent_stats.json`. params `refiner.latent_stats` chooses them (`select_stats`): `computed` (the default) from
our train split as above, or `discodiff`: DiscoDiff's published values for DAC 44 kHz (PAPER_DAC44K_STATS, PAPER.md
section 6), valid only for latents of 9 codebooks x 8 dims.
A latent with fewer codebooks than the statistics (e.g. codebook 1 alone) uses the first ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ssmttm.artifacts import write_json
from ssmttm.errors import UserFacingError
from ssmttm.tokens.shards import array_to_matrices, list_shards, read_shard_metadata

STATS_FILE = "latent_stats.json"
STATS_FORMAT = "ssmttm.latent_stats/1"
MIN_STD = 1e-6  # a constant codebook (degenerate codec) is scaled by this instead of dividing by zero
LATENT_STATS_CHOICES = ("computed", "discodiff")  # params refiner.latent_stats


@dataclass(frozen=True)
class LatentStats:
    means: tuple[float, ...]  # (K,)
    stds: tuple[float, ...]  # (K,)
    codebook_dim: int  # D
    source: dict[str, Any] = field(default_factory=dict, compare=False)  # where the numbers come from

    def __post_init__(self) -> None:
        if len(self.means) != len(self.stds) or not self.means:
            raise ValueError(f"latent stats: {len(self.means)} means but {len(self.stds)} stds")
        if min(self.stds) <= 0:
            raise ValueError(f"latent stats: stds must be positive, got {self.stds}")

    @property
    def n_codebooks(self) -> int:
        return len(self.means)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATS_FORMAT,
            "n_codebooks": self.n_codebooks,
            "codebook_dim": self.codebook_dim,
            "means": list(self.means),
            "stds": list(self.stds),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentStats:
        if data.get("format") != STATS_FORMAT:
            raise UserFacingError(f"latent stats: format {data.get('format')!r}, expected {STATS_FORMAT!r}")
        return cls(
            tuple(map(float, data["means"])),
            tuple(map(float, data["stds"])),
            int(data["codebook_dim"]),
            dict(data.get("source", {})),
        )

    def save(self, path: str | Path) -> Path:
        """Write the JSON to `path`, or to `path`/latent_stats.json if `path` is a folder."""
        path = Path(path)
        path = path / STATS_FILE if path.is_dir() else path
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatentStats:
        path = Path(path)
        path = path / STATS_FILE if path.is_dir() else path
        if not path.is_file():
            raise UserFacingError(f"{path}: latent statistics not found; they are written with the refiner")
        return cls.from_dict(json.loads(path.read_text()))


# DiscoDiff's statistics of DAC 44 kHz latents (9 codebooks x 8 dims; PAPER.md section 6).
PAPER_DAC44K_MEANS = (0.58, -0.11, -0.18, -0.04, -0.23, -0.06, 0.08, 0.0, 0.03)
PAPER_DAC44K_STDS = (4.95, 4.00, 3.61, 3.41, 3.24, 3.16, 3.06, 2.93, 2.79)
PAPER_DAC44K_STATS = LatentStats(
    PAPER_DAC44K_MEANS, PAPER_DAC44K_STDS, 8, {"from": "DiscoDiff (ETH-DISCO/discodiff), DAC 44 kHz, PAPER.md 6"}
)


def _channel_params(stats: LatentStats, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 1) mean and std per channel for x (..., C, T), C = K'*D with K' <= the codebooks of the stats."""
    c, d = x.shape[-2], stats.codebook_dim
    if c % d or c // d > stats.n_codebooks:
        raise ValueError(
            f"latents have {c} channels; the statistics cover {stats.n_codebooks} codebooks x {d} dims, so the "
            f"channels must be a multiple of {d} up to {stats.n_codebooks * d}"
        )
    k = c // d
    mean = torch.tensor(stats.means[:k], dtype=torch.float64).repeat_interleave(d)[:, None]
    std = torch.tensor(stats.stds[:k], dtype=torch.float64).repeat_interleave(d)[:, None]
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return mean.to(x.device, dtype), std.to(x.device, dtype)


def normalise(latents: torch.Tensor, stats: LatentStats) -> torch.Tensor:
    """(..., K*D, T) codec latents -> per-codebook zero mean, unit std."""
    mean, std = _channel_params(stats, latents)
    return (latents - mean) / std


def denormalise(latents: torch.Tensor, stats: LatentStats) -> torch.Tensor:
    """Inverse of normalise: (..., K*D, T) -> codec latents."""
    mean, std = _channel_params(stats, latents)
    return latents * std + mean


def _codebook_dim(identity: dict[str, Any], channels: int | None) -> tuple[int, int]:
    """(K, D) from a shard's codec identity; D may be stored as a per-codebook list (then all equal)."""
    k = int(identity["n_codebooks"])
    dim = identity.get("codebook_dim")
    if isinstance(dim, list):
        if len(set(dim)) != 1:
            raise UserFacingError(f"codec codebook_dim {dim}: the refiner needs the same dims for every codebook")
        dim = dim[0]
    if dim is None:
        if channels is None or channels % k:
            raise UserFacingError("codec identity has no codebook_dim; cannot split the latents into codebooks")
        dim = channels // k
    return k, int(dim)


def compute_stats(shards: str | Path | Sequence[str | Path], split: str = "train") -> LatentStats:
    """Per-codebook mean and std of the `split` rows' latents over a tokenize folder (or a list of shards)."""
    if isinstance(shards, str | Path):
        paths = list_shards(shards) if Path(shards).is_dir() else [Path(shards)]
    else:
        paths = [Path(p) for p in shards]
    if not paths or not all(p.is_file() for p in paths):
        raise UserFacingError(f"{shards}: no token shards (shard-NNNNN.parquet); run `ssmttm tokenize` first")
    identity = read_shard_metadata(paths[0])["codec"]
    k, d = None, None
    count = mean = m2 = None  # (K,) float64 running statistics
    clips = 0
    for path in paths:
        if read_shard_metadata(path)["codec"] != identity:
            raise UserFacingError(f"{path}: latents of another codec than {paths[0]}; re-run `ssmttm tokenize`")
        pf = pq.ParquetFile(str(path))
        if "latents" not in pf.schema_arrow.names:
            raise UserFacingError(
                f"{path}: no latents column; the refiner needs them (set tokenize.store_latents: true and re-run "
                "`ssmttm tokenize`)"
            )
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=["split", "latents"])
            splits = table.column("split").to_pylist()
            for row_split, z in zip(splits, array_to_matrices(table.column("latents"), np.float64), strict=True):
                if row_split != split or z.size == 0:
                    continue
                if k is None:
                    k, d = _codebook_dim(identity, z.shape[0])
                    count, mean, m2 = np.zeros(k), np.zeros(k), np.zeros(k)
                if z.shape[0] != k * d:
                    raise UserFacingError(f"{path}: latents with {z.shape[0]} channels, the codec has {k} x {d}")
                per_cb = z.reshape(k, -1)  # (K, D*T)
                n_b = per_cb.shape[1]
                mean_b = per_cb.mean(axis=1)
                m2_b = ((per_cb - mean_b[:, None]) ** 2).sum(axis=1)
                delta, total = mean_b - mean, count + n_b
                mean = mean + delta * n_b / total
                m2 = m2 + m2_b + delta**2 * count * n_b / total
                count = total
                clips += 1
    if not clips:
        raise UserFacingError(f"{shards}: no '{split}' clip with latents in the token shards")
    stds = np.maximum(np.sqrt(m2 / count), MIN_STD)
    source = {
        "split": split,
        "clips": clips,
        "values_per_codebook": int(count[0]),
        "shards": [p.name for p in paths],
        "codec": identity,
    }
    return LatentStats(tuple(float(v) for v in mean), tuple(float(v) for v in stds), d, source)


def select_stats(choice: str, shards: str | Path, codec: dict[str, Any]) -> LatentStats:
    """The statistics params `refiner.latent_stats` names, for the latents of the shards (codec: their identity).

    computed: from the shards' train split (compute_stats); discodiff: DiscoDiff's DAC 44 kHz values, which only
    mean something for latents of their 9 codebooks x 8 dims."""
    if choice == "computed":
        return compute_stats(shards, "train")
    if choice != "discodiff":
        raise UserFacingError(f"refiner.latent_stats = {choice!r}; choose one of {', '.join(LATENT_STATS_CHOICES)}")
    paper = PAPER_DAC44K_STATS
    k, d = _codebook_dim(codec, None)
    if (k, d) != (paper.n_codebooks, paper.codebook_dim):
        raise UserFacingError(
            f"refiner.latent_stats: discodiff is DiscoDiff's statistics of DAC 44 kHz latents ({paper.n_codebooks} "
            f"codebooks x {paper.codebook_dim} dims), but the shards' codec has {k} x {d}; set refiner.latent_stats: "
            "computed, or tokenize with the pretrained DAC 44 kHz (codec.mode: pretrained)"
        )
    return LatentStats(paper.means, paper.stds, paper.codebook_dim, {**paper.source, "latent_stats": "discodiff"})
