"""Pieces shared by the generate stage's modes: clip length, text encoders, the refiner, output folders, summary.

`summary.json` (format ssmttm.generate/1) describes an output folder: mode, checkpoints, variants and why any were
skipped, the caption set, the audio format, the settings and the ok/failed counts of each clip folder.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm.artifacts import hash_params, sha256_file, write_json, write_provenance
from ssmttm.codec import CodecHandle
from ssmttm.config import dataclass_to_dict, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder
from ssmttm.generate.captions import Caption
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.synth import check_refiner_fits
from ssmttm.text.encoder import TextConfig, TextEncoder

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = "ssmttm.generate/1"
EncoderFactory = Callable[[TextConfig, torch.device], Any]


@dataclass(frozen=True)
class AudioFormat:
    """Length of every clip: `seconds` at the codec's rate, and the codec frames that cover it."""

    seconds: float
    sample_rate: int
    hop_length: int

    @property
    def n_samples(self) -> int:
        return round(self.seconds * self.sample_rate)

    @property
    def n_frames(self) -> int:
        return math.ceil(self.n_samples / self.hop_length)

    @classmethod
    def of(cls, codec: CodecHandle, seconds: float) -> AudioFormat:
        return cls(float(seconds), codec.sample_rate, codec.hop_length)

    def describe(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "sample_rate": self.sample_rate,
            "num_samples": self.n_samples,
            "frame_rate": self.sample_rate / self.hop_length,
            "n_frames": self.n_frames,
        }


def text_config_for(text_section: dict[str, Any] | None, trained: dict[str, Any] | None, what: str) -> TextConfig:
    """params' `text`, with the encoder and max_length a model was trained with (they must match training)."""
    section = dict(text_section or {})
    for key in ("encoder", "max_length"):
        if trained and key in trained:
            if key in section and section[key] != trained[key]:
                log.warning("text.%s: using %s's %r, not params' %r", key, what, trained[key], section[key])
            section[key] = trained[key]
    return section_to_dataclass(TextConfig, section)


class Encoders:
    """Text encoders by (encoder, max_length), each built once (the LM and the refiner may share one)."""

    def __init__(self, text_section: dict[str, Any] | None, device: torch.device, factory: EncoderFactory | None):
        self.text_section, self.device = text_section, device
        self.factory = factory or (lambda cfg, device: TextEncoder(cfg, device=device))
        self._built: dict[tuple[str, int], Any] = {}

    def get(self, trained: dict[str, Any] | None, what: str, width: int) -> Any:
        cfg = text_config_for(self.text_section, trained, what)
        key = (cfg.encoder, cfg.max_length)
        if key not in self._built:
            self._built[key] = self.factory(cfg, self.device)
        encoder = self._built[key]
        if encoder.hidden_size != width:
            raise UserFacingError(
                f"text encoder {cfg.encoder} gives {encoder.hidden_size} features but {what} expects {width}"
            )
        return encoder


def refiner_fingerprint(folder: Path) -> str:
    """sha256 over the refiner's weights, config and latent statistics (all three change its output)."""
    from ssmttm.refine.model import CONFIG_FILE, WEIGHTS_FILE
    from ssmttm.refine.normalise import STATS_FILE

    return hash_params({name: sha256_file(folder / name) for name in (WEIGHTS_FILE, CONFIG_FILE, STATS_FILE)})


def load_checked_refiner(folder: str | Path | None, codec: CodecHandle, device: torch.device) -> tuple[Any, str]:
    """(the refiner of `folder`, checked against the codec; its fingerprint)."""
    from ssmttm.refine.model import load_refiner

    if folder is None:
        raise UserFacingError("the two-stage variants need the refiner: pass --refiner results/train_refiner/final")
    refiner = load_refiner(folder, device=device)
    check_refiner_fits(refiner, codec)
    return refiner, refiner_fingerprint(Path(folder))


def prune_subfolders(folder: Path, keep: set[str], names: Callable[[str], bool]) -> None:
    """Remove subfolders of `folder` selected by `names` that are not in `keep` (outputs of other settings)."""
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if child.is_dir() and names(child.name) and child.name not in keep:
                log.info("removing %s: not part of this run's outputs", child)
                shutil.rmtree(child)


def clip_row(
    caption: Caption, variant: str, key: str, fields: dict[str, Any], audio: AudioFormat, **extra: Any
) -> dict[str, Any]:
    """One manifest row: the same fields for every clip, ok or failed."""
    row = {
        "caption_id": caption.caption_id,
        "caption": caption.text,
        "clip_id": caption.clip_id,
        "variant": variant,
        "key": key,
        "seconds": audio.seconds,
        "sample_rate": audio.sample_rate,
        "num_samples": audio.n_samples,
        "path": None,
        "sha256": None,
        "reason": None,
        "gain": None,
        "peak": None,
        "rms_db": None,
        **extra,
        **fields,
    }
    if row["status"] == "failed":
        log.warning("%s %s: failed (%s)", variant, caption.caption_id, row["reason"])
    return row


def batches(items: Sequence, size: int) -> list[list]:
    """Consecutive groups of `size` items (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def finish(
    out: Path,
    summary: dict[str, Any],
    folders: dict[str, ClipFolder],
    cfg: GenerateConfig,
    seed: int,
    section: dict[str, Any] | None,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Write summary.json (with the ok/failed counts of every clip folder) and provenance.json into `out`."""
    summary["folders"] = {name: folder.counts() for name, folder in sorted(folders.items())}
    write_json(out / SUMMARY_FILE, summary)
    write_provenance(
        out, "generate", section if section is not None else dataclass_to_dict(cfg), seed, cpu_numerics=True, **inputs
    )
    return summary
