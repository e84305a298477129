"""Will LM sampling fit in memory? An estimate from an LM config, checked before any token is sampled (generate, the
Python API), and the LM config of a checkpoint read without loading its weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssmttm.config import section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.inputs import check_fits_in_memory, read_json_file, require_file
from ssmttm.models.lm import CONFIG_FILE, LEGACY_POSITION_ORDER, LMConfig
from ssmttm.models.registry import get_spec


def sampling_bytes(lm_cfg: Any, rows: int, n_frames: int) -> float:
    """Memory of sampling `n_frames` frames for `rows` sequences (captions x 2 with guidance) with an LM config:
    the token buffer (rows, K, L) int64, the position table (L, d_model) and, per self-attention sublayer, keys and
    values (rows, L, d_model) float32. L = n_frames + K - 1 (delay pattern) plus a text prefix, ignored here."""
    positions = n_frames + lm_cfg.n_codebooks
    attention = get_spec(lm_cfg.backbone).sublayers.count("self_attn") * lm_cfg.n_layers
    per_position = rows * lm_cfg.n_codebooks * 8 + lm_cfg.d_model * 4 + attention * rows * 2 * lm_cfg.d_model * 4
    return float(positions) * per_position


def check_sampling_fits(lm_cfg: Any, batch_size: int, guidance_scale: float, n_frames: int, what: str, device: Any):
    """Refuse a clip length whose LM sampling would not fit in memory (every batch runs at `batch_size` captions,
    twice that with guidance)."""
    rows = batch_size * (2 if guidance_scale != 1.0 else 1)
    check_fits_in_memory(
        sampling_bytes(lm_cfg, rows, n_frames),
        f"{what}: sampling {n_frames} frames ({rows} rows)",
        "ask for a shorter length or a smaller generate.batch_size",
        device,
    )


def checkpoint_lm_config(folder: str | Path) -> Any:
    """The LMConfig in an LM checkpoint's config.json (no weights loaded), for the estimates above."""
    path = require_file(Path(folder) / CONFIG_FILE, "LM checkpoint config")
    try:
        section = read_json_file(path, "LM checkpoint config")["lm"]
        return section_to_dataclass(LMConfig, {"position_order": LEGACY_POSITION_ORDER, **section})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserFacingError(f"LM checkpoint config {path}: unreadable ({exc}); pass a train-lm checkpoint") from None
