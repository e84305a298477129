"""Backbone-agnostic text-to-music LM: embeddings, text conditioning, positions, heads, loss, save/load.

    tokens (B, K, L) in delayed order (models.delay), text (B, S, d_text) from the frozen encoder
      -> per-codebook embeddings, summed over K            (B, L, D)
      -> text: prefix models put proj(text) before the audio, cross models attend to it
      -> sinusoidal positions over the whole sequence (text prefix included), [cos | sin] halves as the official code
      -> backbone (models.registry) -> per-codebook heads   (B, K, L, V), V = codebook_size + 1

logits[:, :, t] predicts tokens[:, :, t] from tokens[:, :, :t] and the text. Prefix models read them from position
cond_len - 1 on (the last text position predicts the first token); cross models start from a BOS made of the special
id. Generation uses `start` (encode the prefix once) then `step` (one position, recurrent state / KV cache).
Parameter counts (trainable, frozen text encoder excluded) cover embeddings + text projection (Linear with bias and
LayerNorm) + backbone + heads: prefix_simba 24 x 1024 (d_state 512) = 281,042,176; 6 blocks = 72,427,072. Each
backbone's depth comes from `lm.per_backbone` (pipeline.resolve_backbone); models.registry lists the paper's sizes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmttm.artifacts import atomic_path, write_json
from ssmttm.config import dataclass_to_dict, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.models.blocks import BackboneCache
from ssmttm.models.decoding import make_decoder
from ssmttm.models.registry import BackboneConfig, build_backbone, get_spec
from ssmttm.text.encoder import TextProjection, caption_dropout

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FORMAT = "ssmttm.lm/1"
POSITION_ORDERS = ("cos_sin", "sin_cos")
LEGACY_POSITION_ORDER = "sin_cos"  # of checkpoints whose config.json predates LMConfig.position_order


@dataclass
class LMConfig:
    backbone: str = "prefix_simba"  # a name from models.registry.BACKBONES
    d_model: int = 1024
    n_layers: int = 24
    d_state: int = 512
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    n_heads: int = 16
    mlp_hidden: int = 2048
    dropout: float = 0.3
    n_codebooks: int = 1  # K: 1 for the two-stage system, up to 9 with the delay pattern
    codebook_size: int = 1024
    special_id: int = 1024  # BOS / pad / ignore index; must be codebook_size (the extra row of the vocabulary)
    seq_len: int = 2588  # audio positions per training sequence (delay included)
    d_text: int | None = None  # text encoder width; None = take it from the encoder (resolve_d_text)
    p_drop_caption: float = 0.1  # classifier-free guidance: whole captions replaced by ""
    p_drop_token: float = 0.1  # then this fraction of the remaining text tokens masked
    label_smoothing: float = 0.1
    position_order: str = "cos_sin"  # halves of the sinusoidal embedding; the official code puts cos first

    def __post_init__(self) -> None:
        get_spec(self.backbone)  # unknown name -> ValueError listing the valid ones
        if self.position_order not in POSITION_ORDERS:
            raise ValueError(f"lm.position_order = {self.position_order!r}; must be one of {POSITION_ORDERS}")
        if self.special_id != self.codebook_size:
            raise ValueError(
                f"lm.special_id must equal lm.codebook_size ({self.codebook_size}): the special id is "
                f"the extra vocabulary row; got {self.special_id}"
            )
        for name in ("p_drop_caption", "p_drop_token"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"lm.{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 1

    def backbone_config(self) -> BackboneConfig:
        names = {f.name for f in dataclasses.fields(BackboneConfig)}
        return BackboneConfig(**{n: getattr(self, n) for n in names})


def resolve_d_text(cfg: LMConfig, d_text: int) -> LMConfig:
    """Fill `cfg.d_text` from the text encoder's width; a different explicit value is an error."""
    if cfg.d_text is not None and cfg.d_text != d_text:
        raise UserFacingError(
            f"lm.d_text = {cfg.d_text} but the text encoder outputs {d_text} features; "
            "set lm.d_text to null (taken from the encoder) or to the encoder's width"
        )
    return dataclasses.replace(cfg, d_text=d_text)


def sinusoidal_positions(
    start: int, length: int, dim: int, device=None, order: str = "cos_sin", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(length, dim) embeddings of positions p = start..start+length-1, computed in `dtype` (float32 as the model).

    Column i < half = dim // 2 has the angle p / 10000^(i / (half - 1)) (periods 2 pi .. 2 pi 10^4); the halves are
    [cos | sin] (`order` "cos_sin", the official code's `create_sin_embedding`, from MusicGen) or [sin | cos].
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=dtype) / max(half - 1, 1))
    angles = torch.arange(start, start + length, device=device, dtype=dtype)[:, None] * freqs  # (L, half)
    halves = [angles.cos(), angles.sin()] if order == "cos_sin" else [angles.sin(), angles.cos()]
    pe = torch.cat(halves, dim=-1)  # (L, 2 * half)
    return F.pad(pe, (0, dim - 2 * half))  # odd dim: one zero column


class MusicLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        if cfg.d_text is None:
            raise ValueError("LMConfig.d_text is None: resolve it from the text encoder first (resolve_d_text)")
        self.cfg = cfg
        V, D = cfg.vocab_size, cfg.d_model
        self.emb = nn.ModuleList([nn.Embedding(V, D) for _ in range(cfg.n_codebooks)])
        self.text_proj = TextProjection(cfg.d_text, D)
        self.backbone = build_backbone(cfg.backbone, cfg.backbone_config())
        self.heads = nn.ModuleList([nn.Linear(D, V, bias=False) for _ in range(cfg.n_codebooks)])
        self.prefix = self.backbone.text_mode == "prefix"
        # Encoding of "" (1, S, d_text) and its mask (1, S), set by set_uncond: caption dropout replaces with it.
        self.register_buffer("uncond_hidden", None, persistent=False)
        self.register_buffer("uncond_mask", None, persistent=False)

    # ------------------------------------------------------------------------------------------------ pieces

    def set_uncond(self, hidden: torch.Tensor, mask: torch.Tensor) -> None:
        """Give the model the encoding of "" (1, S, d_text) / (1, S): training replaces dropped captions with it."""
        self.register_buffer("uncond_hidden", hidden.detach().reshape(1, *hidden.shape[-2:]).float(), persistent=False)
        self.register_buffer("uncond_mask", mask.detach().reshape(1, -1).bool(), persistent=False)

    def condition(
        self, text_hidden: torch.Tensor, text_mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, S, d_text), (B, S) -> projected text (B, S, D), mask (B, S), dropped (B,) bool.

        In training mode caption dropout is applied (never in eval mode), so guidance has something to contrast.
        """
        mask = text_mask.bool()
        dropped = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
        if self.training and (self.cfg.p_drop_caption > 0 or self.cfg.p_drop_token > 0):
            if self.uncond_hidden is None:
                raise RuntimeError(
                    "caption dropout needs the encoding of the unconditional prompt: call "
                    "model.set_uncond(*text_encoder.uncond()) before training"
                )
            text_hidden, mask, dropped = caption_dropout(
                text_hidden,
                mask,
                self.uncond_hidden,
                self.uncond_mask,
                self.cfg.p_drop_caption,
                self.cfg.p_drop_token,
                generator,
            )
        return self.text_proj(text_hidden, mask), mask, dropped

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, K, L) -> (B, L, D)
        return sum(emb(tokens[:, k]) for k, emb in enumerate(self.emb))

    def bos(self, batch_size: int, device) -> torch.Tensor:  # (B, 1, D): start of cross models
        special = torch.full((batch_size, self.cfg.n_codebooks, 1), self.cfg.special_id, device=device)
        return self.embed(special)

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, K, L, V)
        return torch.stack([head(h) for head in self.heads], dim=1)

    def position_embedding(self, start: int, length: int, device=None) -> torch.Tensor:
        """(length, D) sinusoidal embeddings of positions start.. in this model's order; training, prefill and
        recurrent steps (models.decoding) all take them from here."""
        return sinusoidal_positions(start, length, self.cfg.d_model, device, self.cfg.position_order)

    def _prefix(self, text: torch.Tensor, batch_size: int) -> torch.Tensor:
        """What precedes the first predicted token: the projected text (prefix models) or a BOS (cross models)."""
        return text if self.prefix else self.bos(batch_size, text.device)

    # ------------------------------------------------------------------------------------------------ training

    def forward(
        self,
        tokens: torch.Tensor,
        text_hidden: torch.Tensor,
        text_mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """tokens (B, K, L), text_hidden (B, S, d_text), text_mask (B, S) -> logits (B, K, L, V)."""
        b, k, length = tokens.shape
        if k != self.cfg.n_codebooks:
            raise ValueError(f"tokens have {k} codebooks, the model {self.cfg.n_codebooks}")
        text, mask, _ = self.condition(text_hidden, text_mask, generator)  # (B, S, D)
        prefix = self._prefix(text, b)  # (B, P, D): P = S or 1
        x = torch.cat([prefix, self.embed(tokens[:, :, : length - 1])], dim=1)  # (B, P + L - 1, D)
        x = x + self.position_embedding(0, x.shape[1], x.device).to(x.dtype)
        h = self.backbone(x, None if self.prefix else text, None if self.prefix else mask)
        return self.logits(h[:, prefix.shape[1] - 1 :])  # (B, K, L, V): from position cond_len - 1 on

    def loss(
        self,
        tokens: torch.Tensor,
        text_hidden: torch.Tensor,
        text_mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced loss on tokens (B, K, L); returns (loss, logits)."""
        logits = self(tokens, text_hidden, text_mask, generator)
        return lm_loss(logits, tokens, self.cfg.special_id, self.cfg.label_smoothing), logits

    # ------------------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def start(
        self,
        text_hidden: torch.Tensor,
        text_mask: torch.Tensor,
        max_new: int,
        *,
        decode: str = "auto",
        finish: Callable[..., torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, BackboneCache]:
        """Encode the prefix once; returns logits for token 0 (B, K, V) and a cache with room for `max_new` steps.

        `decode` chooses how `step` runs (models.decoding): "auto" (CUDA graphs on CUDA with mamba_ssm; on CPU
        compiled once the process's generation work pays for the compile, else eager), "eager", "compile"
        (torch.compile, Mamba2/MLP backbones) or "cuda_graph". Every mode computes the same logits up to float
        rounding.

        `finish`: a function of tensors, (logits (B, K, V), *inputs) -> tensor, that every `step` applies to its
        logits (the sampler of generate.tokens); compiled together with the step in "compile" mode. It must be
        hashable (a frozen dataclass): it is part of what the compiled code depends on. The logits `start`
        returns are not finished.
        """
        b = text_hidden.shape[0]
        text, mask, _ = self.condition(text_hidden, text_mask)
        prefix = self._prefix(text, b)  # (B, P, D)
        x = prefix + self.position_embedding(0, prefix.shape[1], prefix.device).to(prefix.dtype)
        cache = self.backbone.allocate_cache(b, prefix.shape[1] + max_new, device=x.device, dtype=x.dtype)
        h = self.backbone.prefill(x, cache, None if self.prefix else text, None if self.prefix else mask)
        cache.extra["decoder"] = make_decoder(self, cache, decode, b, self.cfg.n_codebooks, finish)
        return self.logits(h[:, -1:])[:, :, 0], cache

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, cache: BackboneCache, *finish_inputs: torch.Tensor | None) -> torch.Tensor:
        """tokens (B, K) just chosen -> logits of the next position (B, K, V); advances `cache`.

        With a `finish` given to `start`: finish(logits, *finish_inputs) instead."""
        return cache.extra["decoder"](self, tokens, cache, finish_inputs)


def lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, special_id: int = 1024, label_smoothing: float = 0.1
) -> torch.Tensor:
    """Cross-entropy per codebook (mean over its non-special targets), summed over codebooks.

    logits (B, K, L, V), targets (B, K, L). Positions holding the special id (BOS, delay fill, padding) carry no loss;
    text positions never reach here (the LM returns audio logits only). A codebook with no target adds 0.
    """
    total = logits.new_zeros((), dtype=torch.float32)
    for k in range(logits.shape[1]):
        tk = targets[:, k].reshape(-1)  # (B*L,)
        summed = F.cross_entropy(
            logits[:, k].reshape(-1, logits.shape[-1]).float(),
            tk,
            ignore_index=special_id,
            label_smoothing=label_smoothing,
            reduction="sum",
        )
        total = total + summed / (tk != special_id).sum().clamp(min=1)
    return total


def param_count(cfg: LMConfig) -> int:
    """Trainable parameters of MusicLM(cfg), counted on the meta device (no memory allocated).

    d_text None counts the text projection of flan-t5-base (768 features), the paper's encoder.
    """
    with torch.device("meta"):
        model = MusicLM(cfg if cfg.d_text is not None else dataclasses.replace(cfg, d_text=768))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------- save / load


def save_lm(
    model: MusicLM,
    cfg: LMConfig,
    directory: str | Path,
    text_cfg: Any | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors` and `config.json` (the resolved LMConfig, and the text section it was trained
    with so generation pads and encodes captions the same way) into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
    config = {"format": CHECKPOINT_FORMAT, "lm": dataclass_to_dict(cfg)}
    if text_cfg is not None:
        config["text"] = dataclass_to_dict(text_cfg) if dataclasses.is_dataclass(text_cfg) else dict(text_cfg)
    config.update(extra or {})
    write_json(directory / CONFIG_FILE, config)
    return directory


def load_lm(directory: str | Path, device: str | torch.device = "cpu") -> tuple[MusicLM, LMConfig, dict | None]:
    """Inverse of save_lm: (model in eval mode, its LMConfig, the text section or None). Never unpickles."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise UserFacingError(
                f"LM checkpoint {directory}: {path.name} not found; pass a folder written by "
                "`ssmttm train-lm` (results/train_lm/<backbone>/step-NNNNNNN)"
            )
    fix = "pass a folder written by `ssmttm train-lm`, or retrain it"
    try:
        config = json.loads(config_path.read_bytes().decode("utf-8"))
        cfg = section_to_dataclass(LMConfig, {"position_order": LEGACY_POSITION_ORDER, **config["lm"]})
        model = MusicLM(cfg)  # a config of missing or mistyped fields fails here, before any weights are read
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UserFacingError(f"LM checkpoint {config_path}: not a readable LM config ({reason}); {fix}") from None
    try:
        weights = load_file(str(weights_path), device=str(device))
    except Exception as exc:  # safetensors raises its own error type for a damaged file; nothing else runs here
        reason = " ".join(str(exc).split())[:160]
        raise UserFacingError(f"LM checkpoint {weights_path}: unreadable weights ({reason}); {fix}") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shapes: weights of another config
        reason = " ".join(str(exc).split())[:160]
        raise UserFacingError(f"LM checkpoint {directory}: weights do not match its config ({reason}); {fix}") from None
    return model.to(device).eval(), cfg, config.get("text")
