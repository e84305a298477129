"""The backbones compared in the paper, by name (PAPER.md section 4).

| name               | sublayers per block                    | text   |
|--------------------|----------------------------------------|--------|
| prefix_mamba       | Mamba2 -> Mamba2                       | prefix |
| prefix_simba       | Mamba2 -> MLP (the proposed model)     | prefix |
| cross_simba        | Mamba2 -> cross-attention -> MLP       | cross  |
| cross_transformer  | self-attention -> cross-attention -> MLP | cross |
| prefix_transformer | self-attention -> MLP                  | prefix |

Each sublayer is pre-norm residual (blocks.Sublayer). Sizes at d_model 1024 (embeddings, heads and text projection
of lm.MusicLM included): prefix_simba 24 blocks 281.04 M, prefix_mamba 19 blocks 283.76 M, prefix_transformer
33 blocks 279.88 M, cross_transformer 24 blocks 305.03 M (bias-free attention; PAPER.md infers 305.1 M), cross_simba
19 blocks 302.80 M (no paper number). configs/paper.yaml sets these depths in `lm.per_backbone`
(tests/models/test_paper_sizes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ssmttm.models.attention import MLP, AttentionConfig, CrossAttention, SelfAttention
from ssmttm.models.blocks import Backbone, Block, Sublayer


@dataclass
class BackboneConfig:
    d_model: int = 1024
    n_layers: int = 24  # blocks (a prefix_mamba block holds two Mamba2 sublayers)
    # Mamba2 sublayers (mamba_ssm defaults except d_state; the released model uses d_state 512)
    d_state: int = 512
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    # attention sublayers
    n_heads: int = 16
    # MLP sublayers
    mlp_hidden: int = 2048
    dropout: float = 0.3  # residual dropout of every sublayer, and inside the MLP as in the released code


@dataclass(frozen=True)
class BackboneSpec:
    sublayers: tuple[str, ...]
    text_mode: str  # "prefix" or "cross"
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "prefix_simba": BackboneSpec(("mamba", "mlp"), "prefix", "Mamba2 -> MLP, text as prefix (proposed)"),
    "prefix_mamba": BackboneSpec(("mamba", "mamba"), "prefix", "Mamba2 -> Mamba2, text as prefix"),
    "cross_simba": BackboneSpec(("mamba", "cross_attn", "mlp"), "cross", "Mamba2 -> cross-attention -> MLP"),
    "cross_transformer": BackboneSpec(
        ("self_attn", "cross_attn", "mlp"), "cross", "self-attention -> cross-attention -> MLP (MusicGen-like)"
    ),
    "prefix_transformer": BackboneSpec(("self_attn", "mlp"), "prefix", "self-attention -> MLP, text as prefix"),
}


def backbone_names() -> list[str]:
    return list(BACKBONES)


def get_spec(name: str) -> BackboneSpec:
    """The spec of backbone `name`; an unknown name is a ValueError that lists the valid ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}") from None


def _mixer(kind: str, cfg: BackboneConfig, layer_idx: int) -> nn.Module:
    if kind == "mamba":
        # Imported here so the attention backbones work without the Mamba2 module loaded.
        from ssmttm.models.mamba2 import Mamba2, Mamba2Config

        mcfg = Mamba2Config(
            d_model=cfg.d_model,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            headdim=cfg.headdim,
            ngroups=cfg.ngroups,
            chunk_size=cfg.chunk_size,
        )
        return Mamba2(mcfg, layer_idx=layer_idx)
    acfg = AttentionConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, mlp_hidden=cfg.mlp_hidden, dropout=cfg.dropout)
    if kind == "mlp":
        return MLP(acfg)
    if kind == "self_attn":
        return SelfAttention(acfg)
    if kind == "cross_attn":
        return CrossAttention(acfg)
    raise ValueError(f"unknown mixer kind {kind!r}")


def build_backbone(name: str, cfg: BackboneConfig) -> Backbone:
    """Backbone `name` with `cfg.n_layers` blocks of the sublayers listed in BACKBONES."""
    spec = get_spec(name)
    blocks = []
    for i in range(cfg.n_layers):
        subs = [
            Sublayer(kind, cfg.d_model, _mixer(kind, cfg, i * len(spec.sublayers) + j), cfg.dropout)
            for j, kind in enumerate(spec.sublayers)
        ]
        blocks.append(Block(subs))
    return Backbone(name, spec.text_mode, blocks)
