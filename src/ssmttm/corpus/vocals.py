"""Vocal removal with Demucs: keep the no-vocals stem of a track (the sum of every non-vocals source).

The paper removes vocals from each clip with Demucs `htdemucs` and keeps only the accompaniment. Here it runs per
track, before cutting, so clip boundaries never cut the separator's context. The separator works at the model's own
rate and channel count (44.1 kHz stereo for htdemucs); the result is downmixed to mono at that rate, and the segment
stage resamples it to the codec rate.

Weights load from `weights_path` when set (a demucs model folder, a bag-of-models folder or one `.th`/`.safetensors`
file), otherwise through `demucs.pretrained.get_model`, which reads the Hugging Face and torch.hub caches. When they
are absent and the machine is offline the error names the places searched and the command that fetches them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm import stand_ins
from ssmttm.audio import resample
from ssmttm.errors import MissingWeightsError, UserFacingError

log = logging.getLogger(__name__)

VOCALS = "vocals"
# Overlap between consecutive separator windows (demucs' default); fixed so outputs only depend on params.
OVERLAP = 0.25


@dataclass(frozen=True)
class VocalRemovalConfig:
    enabled: bool = False
    model: str = "htdemucs"
    weights_path: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    segment_seconds: float = 7.8


def fetch_command(model: str) -> str:
    return f"python -c \"from demucs.pretrained import get_model; get_model('{model}')\""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("segment.vocal_removal.device = 'cuda' but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(device)


class VocalRemover:
    """Wraps a Demucs model (or bag of models): `(C, N) audio at any rate -> (N',) no-vocals mono at model rate`."""

    def __init__(
        self,
        model: torch.nn.Module,
        segment_seconds: float,
        device: str | torch.device = "cpu",
        name: str = "custom",
        seed: int = 0,
        stand_in: str | None = None,
    ):
        sources = list(model.sources)
        if VOCALS not in sources:
            raise UserFacingError(f"demucs model '{name}' has no '{VOCALS}' source (sources: {sources})")
        max_segment = _max_segment(model)
        if segment_seconds > max_segment:
            raise UserFacingError(
                f"segment.vocal_removal.segment_seconds = {segment_seconds} exceeds the longest window model "
                f"'{name}' accepts ({max_segment:.2f} s); lower it"
            )
        self.model = model.eval()
        self.name = name
        self.sources = sources
        self.keep = [i for i, s in enumerate(sources) if s != VOCALS]
        self.sample_rate = int(model.samplerate)
        self.channels = int(model.audio_channels)
        self.segment_seconds = float(segment_seconds)
        self.device = torch.device(device)
        self.seed = seed
        self.stand_in = stand_in  # the STANDIN.txt text beside the loaded weights (ssmttm.stand_ins), or None

    def describe(self) -> dict[str, Any]:
        """Identity recorded in provenance (no device: outputs must not depend on where they ran)."""
        return {
            "model": self.name,
            "sources": self.sources,
            "kept_sources": [self.sources[i] for i in self.keep],
            "sample_rate": self.sample_rate,
            "segment_seconds": self.segment_seconds,
            "overlap": OVERLAP,
            "shifts": 0,
        }

    def _to_model_layout(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """(C, N) at `rate` -> (model channels, N') at the model rate."""
        samples = resample(samples, rate, self.sample_rate)
        if samples.shape[0] == self.channels:
            return samples
        mono = samples.mean(axis=0, keepdims=True)  # (1, N')
        return np.repeat(mono, self.channels, axis=0).astype(np.float32)

    def separate(self, samples: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
        """All stems: (C, N) at `rate` -> (S, model channels, N') float32 at the model rate, plus the mixture's
        mean (demucs separates the zero-mean mixture; the stems carry no DC offset)."""
        from demucs.apply import apply_model

        mix = torch.from_numpy(np.ascontiguousarray(self._to_model_layout(samples, rate)))  # (C', N')
        # Normalise like demucs' own separator: the models were trained on standardised mixtures.
        ref = mix.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        random.seed(self.seed)  # shifts=0 draws nothing, but keep any random choice inside demucs reproducible
        torch.manual_seed(self.seed)
        with torch.no_grad():
            stems = apply_model(
                self.model,
                ((mix - mean) / std)[None],
                shifts=0,
                split=True,
                overlap=OVERLAP,
                segment=self.segment_seconds,
                device=self.device,
                progress=False,
            )[0]  # (S, C', N')
        return (stems * std).numpy().astype(np.float32), float(mean)

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """(C, N) at `rate` -> (N',) mono no-vocals stem at `self.sample_rate`."""
        stems, mean = self.separate(samples, rate)  # (S, C', N')
        accompaniment = stems[self.keep].sum(axis=0) + mean  # (C', N'); the mixture's DC offset added back once
        return accompaniment.mean(axis=0).astype(np.float32)


def _max_segment(model: torch.nn.Module) -> float:
    """Longest window (s) the model accepts: HTDemucs is tied to its training segment, other models are not."""
    from demucs.htdemucs import HTDemucs

    if isinstance(model, HTDemucs):
        return float(model.segment)
    return float(getattr(model, "max_allowed_segment", float("inf")))


def _load_from_path(path: Path, name: str) -> torch.nn.Module:
    """A demucs model from a local file or folder (the formats demucs itself writes)."""
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model
    from demucs.pretrained import get_model

    if path.is_file():
        if path.suffix == ".safetensors":
            return load_safetensors_model(path)
        if path.suffix == ".th":
            from demucs.states import load_model

            # demucs' own package format (a pickle): only ever from a path the user configured.
            return load_model(path)
        raise UserFacingError(
            f"segment.vocal_removal.weights_path = {path}: expected a .th or .safetensors file, "
            "or a folder with a demucs bag <name>.yaml"
        )
    bag_file = path / f"{name}.yaml"
    if bag_file.is_file() and any(path.glob("*.safetensors")):
        import yaml

        bag = yaml.safe_load(bag_file.read_text())
        models = [load_safetensors_model(path / f"{sig}.safetensors") for sig in bag["models"]]
        return BagOfModels(models, bag.get("weights"), bag.get("segment"))
    return get_model(name, repo=path)


def load_vocal_remover(cfg: VocalRemovalConfig, seed: int = 0) -> VocalRemover:
    """Load the configured pretrained Demucs model; MissingWeightsError when it is not available offline."""
    from demucs.pretrained import get_model

    device = resolve_device(cfg.device)
    if cfg.weights_path:
        path = Path(cfg.weights_path)
        if not path.exists():
            raise MissingWeightsError(
                f"segment.vocal_removal.weights_path = {path}: not found; point it at a demucs '{cfg.model}' "
                f"checkpoint, or set it to null to use demucs' cache (fill it with: {fetch_command(cfg.model)})"
            )
        try:
            model = _load_from_path(path, cfg.model)
        except UserFacingError:
            raise
        except Exception as exc:  # demucs raises bare exceptions (ModelLoadingError, KeyError, ...)
            raise MissingWeightsError(f"{path}: cannot load demucs model '{cfg.model}' ({exc})") from exc
    else:
        try:
            model = get_model(cfg.model)
        except Exception as exc:  # offline: HF hub error, then URLError from torch.hub
            raise MissingWeightsError(
                f"demucs model '{cfg.model}' is not in the local caches (looked in {_cache_places(cfg.model)}) and "
                f"could not be downloaded ({type(exc).__name__}: {str(exc)[:120]}); on a machine with internet run: "
                f"{fetch_command(cfg.model)} and copy the caches, or set segment.vocal_removal.weights_path"
            ) from exc
    log.info("vocal removal with demucs '%s' on %s", cfg.model, device)
    label = stand_ins.label_beside(cfg.weights_path) if cfg.weights_path else _cached_label(cfg.model)
    return VocalRemover(model, cfg.segment_seconds, device=device, name=cfg.model, seed=seed, stand_in=label)


def _cached_label(model: str) -> str | None:
    """The stand-in label of the Hugging Face snapshot `get_model(model)` reads (demucs' namespace), if any."""
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    return stand_ins.hf_label(f"{DEFAULT_NAMESPACE}/{hf_repo_name(model)}")


def _cache_places(model: str) -> str:
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name

    try:
        from huggingface_hub import constants

        hf_cache = Path(constants.HF_HUB_CACHE) / f"models--{DEFAULT_NAMESPACE}--{hf_repo_name(model)}"
    except ImportError:  # pragma: no cover
        hf_cache = Path("~/.cache/huggingface/hub")
    return f"{hf_cache} and {Path(torch.hub.get_dir()) / 'checkpoints'}"
