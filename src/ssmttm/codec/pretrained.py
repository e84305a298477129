"""Pretrained DAC weights -> data/codec (weights.safetensors + codec.json).

The weights come from a local file (`path`, checked against `sha256` when given), from descript-audio-codec's own
cache (`~/.cache/descript/dac/weights_<type>_<bitrate>_<tag>.pth`), or, when `download` is true, from the package's
own downloader (`dac.utils.download`, a machine with internet). DAC releases are pickled `.pth` files: they are read
with `torch.load(weights_only=True)`; only when that refuses the file *and* its sha256 matched the configured one is
it unpickled in full (as DAC's own loader does). Nothing is fully unpickled from an unverified file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm.artifacts import sha256_file
from ssmttm.codec import build_dac, dac_kwargs, model_identity, save_codec
from ssmttm.errors import MissingWeightsError, UserFacingError

log = logging.getLogger(__name__)

# dac.utils' "latest" tags (descript-audio-codec 1.0.0); resolved here so the cache file name is known offline.
LATEST_TAGS = {
    ("44khz", "8kbps"): "0.0.1",
    ("24khz", "8kbps"): "0.0.4",
    ("16khz", "8kbps"): "0.0.5",
    ("44khz", "16kbps"): "1.0.0",
}


@dataclass
class PretrainedConfig:
    model_type: str = "44khz"  # 44khz | 24khz | 16khz
    model_bitrate: str = "8kbps"
    tag: str = "latest"
    path: str | None = None  # local weights .pth; null = descript's cache (or download)
    sha256: str | None = None  # expected sha256 of the .pth; null = not checked (weights_only loading only)
    download: bool = False  # fetch with dac.utils.download when not found (needs internet)


def resolved_tag(cfg: PretrainedConfig) -> str:
    if cfg.tag != "latest":
        return cfg.tag
    key = (cfg.model_type, cfg.model_bitrate)
    if key not in LATEST_TAGS:
        raise UserFacingError(
            f"codec.pretrained: no DAC release for model_type {cfg.model_type!r} at "
            f"{cfg.model_bitrate!r}; valid pairs: {sorted(LATEST_TAGS)}"
        )
    return LATEST_TAGS[key]


def cache_path(cfg: PretrainedConfig) -> Path:
    """Where `python -m dac download` puts these weights."""
    return (
        Path.home()
        / ".cache"
        / "descript"
        / "dac"
        / f"weights_{cfg.model_type}_{cfg.model_bitrate}_{resolved_tag(cfg)}.pth"
    )


def fetch_command(cfg: PretrainedConfig) -> str:
    return f"python -m dac download --model_type {cfg.model_type} --model_bitrate {cfg.model_bitrate}" + (
        "" if cfg.tag == "latest" else f" --tag {cfg.tag}"
    )


def locate_weights(cfg: PretrainedConfig) -> Path:
    """The .pth to use: configured path, else descript's cache, else a download when allowed."""
    if cfg.path is not None:
        path = Path(cfg.path)
        if path.is_file():
            return path
        looked = [str(path)]
    else:
        path = cache_path(cfg)
        if path.is_file():
            return path
        if cfg.download:
            import dac.utils

            log.info("downloading DAC %s %s weights with dac.utils.download", cfg.model_type, cfg.model_bitrate)
            return Path(dac.utils.download(model_type=cfg.model_type, model_bitrate=cfg.model_bitrate, tag=cfg.tag))
        looked = [str(path)]
    raise MissingWeightsError(
        f"DAC {cfg.model_type} {cfg.model_bitrate} weights not found (looked in: {', '.join(looked)}); on a machine "
        f"with internet run `{fetch_command(cfg)}` and copy the file there, or set codec.pretrained.path to it "
        "(or codec.pretrained.download: true)"
    )


def verify_sha256(path: Path, expected: str | None) -> str:
    actual = sha256_file(path)
    if expected is not None and actual.lower() != expected.lower():
        raise UserFacingError(
            f"{path}: sha256 {actual} does not match codec.pretrained.sha256 {expected}; the file "
            "is corrupt or not the expected release: fetch it again or fix the checksum"
        )
    return actual


def load_dac_checkpoint(path: Path, sha256_verified: bool) -> torch.nn.Module:
    """A DAC from a descript `.pth` ({"state_dict", "metadata": {"kwargs"}}) without trusting unverified pickles."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError (or RuntimeError) for disallowed globals
        if not sha256_verified:
            raise UserFacingError(
                f"{path}: this weights file needs a full unpickle, which is only done for a checksum-verified file; "
                "set codec.pretrained.sha256 to the sha256 of the official release"
            ) from exc
        log.info("%s: weights_only load refused (%s); sha256 verified, loading it in full", path, exc)
        # DAC's own BaseModel.load does the same torch.load, but relies on torch's changing default.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserFacingError(f"{path}: not a descript-audio-codec weights file (no 'state_dict' entry)")
    kwargs = (checkpoint.get("metadata") or {}).get("kwargs") or {}
    model = build_dac(dac_kwargs(kwargs))
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model


def prepare_pretrained(cfg: PretrainedConfig, out_dir: Path) -> dict[str, Any]:
    """Verify, convert and write the pretrained codec into `out_dir`; return codec.json."""
    path = locate_weights(cfg)
    source_sha256 = verify_sha256(path, cfg.sha256)
    model = load_dac_checkpoint(path, sha256_verified=cfg.sha256 is not None)
    identity = model_identity(
        model,
        variant=cfg.model_type if cfg.model_bitrate == "8kbps" else f"{cfg.model_type}_{cfg.model_bitrate}",
        source={
            "file": path.name,
            "sha256": source_sha256,
            "model_type": cfg.model_type,
            "model_bitrate": cfg.model_bitrate,
            "tag": resolved_tag(cfg),
        },
    )
    return save_codec(out_dir, model.eval(), identity)
