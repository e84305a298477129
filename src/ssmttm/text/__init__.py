"""Text conditioning: a frozen Hugging Face encoder, its projection into the LM, and caption dropout."""

from ssmttm.text.encoder import (
    UNCOND_PROMPT,
    TextConfig,
    TextEncoder,
    TextEncoding,
    TextProjection,
    caption_dropout,
    resolve_encoder,
)

__all__ = [
    "UNCOND_PROMPT",
    "TextConfig",
    "TextEncoder",
    "TextEncoding",
    "TextProjection",
    "caption_dropout",
    "resolve_encoder",
]
