"""Captions from an audio-language model (transformers Qwen2-Audio), batched, greedy, on GPU when available.

The paper's captions are inferred to come from Qwen2-Audio-7B-Instruct with the prompt in `caption.model.prompt`
(PAPER.md section 1). Each clip is resampled to the rate of the model's feature extractor (16 kHz for Qwen2-Audio),
placed in a one-turn chat with the prompt, and the reply is decoded greedily up to `max_new_tokens`.

Weights load only from a local folder or the Hugging Face cache (`local_files_only`): no stage downloads on its own.
When they are missing, MissingWeightsError names the model, where it looked and the command that fetches it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm import stand_ins
from ssmttm.errors import MissingWeightsError, UserFacingError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("qwen2_audio",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CaptionModelConfig:
    name_or_path: str = "Qwen/Qwen2-Audio-7B-Instruct"
    prompt: str = (
        "Generate a detailed caption for this music piece, primarily focusing on instrumentation, genre, "
        "mood, rhythm, and scenario."
    )
    batch_size: int = 4
    max_new_tokens: int = 160
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16
    sample_rate: int | None = 16000  # must match the processor's feature extractor; null takes the processor's


def fetch_command(name_or_path: str) -> str:
    return f"hf download {name_or_path}"  # huggingface_hub's CLI (`huggingface-cli` is its deprecated old name)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("caption.model.device = 'cuda' but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def _missing(name: str, exc: Exception) -> MissingWeightsError:
    from huggingface_hub import constants

    local = Path(name).expanduser()
    where = (
        f"the folder {local}"
        if local.is_absolute() or name.startswith(".") or local.exists()
        else f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    )
    return MissingWeightsError(
        f"caption model '{name}' could not be loaded from {where} ({type(exc).__name__}: {str(exc)[:160]}); "
        f"on a machine with internet run: {fetch_command(name)} (then copy the cache, or set "
        "caption.model.name_or_path to the downloaded folder)"
    )


class AudioCaptioner:
    """`captioner(list of (N,) float32 arrays at captioner.sample_rate) -> list of captions`, one per array."""

    def __init__(self, model: torch.nn.Module, processor: Any, cfg: CaptionModelConfig, device: torch.device):
        self.model = model.eval()
        self.processor = processor
        self.cfg = cfg
        self.stand_in: str | None = None  # set by load_captioner (ssmttm.stand_ins)
        self.device = device
        self.sample_rate = int(processor.feature_extractor.sampling_rate)
        if cfg.sample_rate is not None and cfg.sample_rate != self.sample_rate:
            raise UserFacingError(
                f"caption.model.sample_rate = {cfg.sample_rate} but the feature extractor of '{cfg.name_or_path}' "
                f"expects {self.sample_rate} Hz; set it to {self.sample_rate} (or null)"
            )
        # Decoder-only generation needs left padding so every prompt ends at the same position.
        processor.tokenizer.padding_side = "left"
        conversation = [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "audio_url": "clip.wav"},  # placeholder: the template only emits the audio tokens
                    {"type": "text", "text": cfg.prompt},
                ],
            }
        ]
        self.prompt_text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        self.max_seconds = float(getattr(processor.feature_extractor, "chunk_length", 30))
        self._warned_long = False

    def describe(self) -> dict[str, Any]:
        return {
            "name_or_path": self.cfg.name_or_path,
            "model_type": self.model.config.model_type,
            "commit": getattr(self.model.config, "_commit_hash", None),
            "sample_rate": self.sample_rate,
            "prompt": self.cfg.prompt,
            "max_new_tokens": self.cfg.max_new_tokens,
            "decoding": "greedy",
        }

    def __call__(self, audios: list[np.ndarray]) -> list[str]:
        if not audios:
            return []
        if not self._warned_long and max(a.shape[0] for a in audios) > self.max_seconds * self.sample_rate:
            log.warning(
                "clips longer than %.0f s: the model hears only their first %.0f s", self.max_seconds, self.max_seconds
            )
            self._warned_long = True
        tokenizer = self.processor.tokenizer
        inputs = self.processor(
            text=[self.prompt_text] * len(audios),
            audio=list(audios),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            padding=True,
        )
        inputs = inputs.to(self.device)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                **inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id
            )  # (B, prompt + new)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, new)
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        return [" ".join(t.split()) for t in texts]


def load_captioner(cfg: CaptionModelConfig) -> AudioCaptioner:
    """Load processor and model from a local folder or the HF cache (never the network)."""
    from transformers import AutoConfig, AutoProcessor, Qwen2AudioForConditionalGeneration

    name = cfg.name_or_path
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _missing(name, exc) from exc
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UserFacingError(
            f"caption.model.name_or_path = {name} is a '{config.model_type}' model; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (e.g. Qwen/Qwen2-Audio-7B-Instruct)"
        )
    device = _resolve_device(cfg.device)
    try:
        processor = AutoProcessor.from_pretrained(name, local_files_only=True)
        model = Qwen2AudioForConditionalGeneration.from_pretrained(name, local_files_only=True, dtype=DTYPES[cfg.dtype])
    except (OSError, ValueError) as exc:
        raise _missing(name, exc) from exc
    log.info("caption model %s on %s (%s)", name, device, cfg.dtype)
    captioner = AudioCaptioner(model.to(device), processor, cfg, device)
    captioner.stand_in = stand_ins.hf_label(name)  # the STANDIN.txt beside the loaded weights, or None
    return captioner
