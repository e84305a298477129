"""1-D U-Net of the DiscoDiff refiner (PAPER.md section 6; layout of DiscoDiff's `Unet1DCondBase`).

    x (B, C_in, T), timestep (B,), text (B, S, context_dim) with its padding mask (B, S)
      -> init conv 3                                                        (B, dim, T)
      -> down levels l = 0..L-1 at width widths[l] and T / 2**l frames: `resnet_blocks` ResNet blocks, linear
         attention after blocks 1..linear_attn_blocks, text cross-attention after the last block; every block's
         output is kept as a skip; then a stride-2 conv to widths[l + 1] (a plain conv at the last level)
      -> middle: ResNet block, full self-attention, ResNet block            (B, widths[L], T / 2**(L-1))
      -> up levels L-1..0, the mirror image: each block reads cat(x, skip), then nearest x2 upsampling + conv
      -> cat(x, init conv output) -> ResNet block -> 1x1 conv               (B, C_out, T)

widths = [dim, dim * dim_mults[0], ..., dim * dim_mults[L-1]] (DiscoDiff's convention: level 0 runs at `dim`).
T must be a multiple of 2**(L-1): 16 for the paper's large U-Net (5 levels), 8 for the small one.

Conditioning. Every ResNet block gets one embedding vector (B, 8*dim), turned into a scale and shift after its first
GroupNorm: [MLP(sinusoidal(timestep)) ; MLP(masked mean of the text token states)], the time and the pooled text
vectors (4*dim each) concatenated, as DiscoDiff's ResNet blocks take them (its `ResnetBlock` projects the
concatenation; adding the two instead would leave out a quarter of the large U-Net's parameters). Cross-attention
reads the text token states; padding tokens (mask False) get no attention weight and are left out of the mean, so
they cannot change the output. DiscoDiff's optional chroma cross-attention is left out: PAPER.md's refiner reads
text only.
Classifier-free guidance: rows flagged in `drop` see a learned null text instead of their caption (one token holding
`null_text`, the other positions masked), in training (condition drop) and in the unconditional pass of sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    in_channels: int = 72  # secondary: clean codebook 1 + noisy codebooks 2..K = K*D; primary: D
    out_channels: int = 64  # secondary: (K-1)*D; primary: D
    dim: int = 576
    dim_mults: tuple[int, ...] = (1, 1, 2, 2, 4)  # one level per entry; L levels halve the length L-1 times
    resnet_blocks: int = 5  # ResNet blocks per level, on each side of the U
    linear_attn_blocks: int = 2  # linear attention after ResNet blocks 1..n of each level (block 0 has none)
    context_dim: int = 1024  # width of the text token states (flan-t5-large)
    heads: int = 9  # attention heads (linear, cross and middle attention): DiscoDiff uses one per codebook
    dim_head: int = 128  # cross and middle attention (DiscoDiff's head_dim)
    linear_dim_head: int = 32  # linear attention (DiscoDiff leaves its LinearAttention at dim_head 32)
    norm_groups: int = 9  # GroupNorm groups in the ResNet blocks (DiscoDiff: one per codebook)
    time_theta: float = 10000.0  # longest period of the sinusoidal time embedding

    def __post_init__(self) -> None:
        self.dim_mults = tuple(int(m) for m in self.dim_mults)
        if not self.dim_mults or min(self.dim_mults) < 1:
            raise ValueError(f"unet.dim_mults must be a non-empty list of positive integers, got {self.dim_mults}")
        if self.resnet_blocks < 1:
            raise ValueError(f"unet.resnet_blocks must be >= 1, got {self.resnet_blocks}")
        if not 0 <= self.linear_attn_blocks < self.resnet_blocks:
            raise ValueError(
                f"unet.linear_attn_blocks must be in [0, resnet_blocks - 1] = [0, {self.resnet_blocks - 1}] (they "
                f"follow ResNet blocks 1..n), got {self.linear_attn_blocks}"
            )
        for width in self.widths:
            if width % self.norm_groups:
                raise ValueError(
                    f"unet: width {width} (dim x dim_mults) is not divisible by norm_groups {self.norm_groups}"
                )

    @property
    def levels(self) -> int:
        return len(self.dim_mults)

    @property
    def widths(self) -> list[int]:
        return [self.dim] + [self.dim * m for m in self.dim_mults]

    @property
    def length_multiple(self) -> int:
        """Input lengths must be multiples of this: 2**(levels-1)."""
        return 2 ** (self.levels - 1)


# The paper's two sizes (PAPER.md section 6) and a tiny one for tests. in/out channels and context_dim are set by
# the caller (unet_preset): they depend on the role (primary/secondary), the codec and the text encoder.
PRESETS: dict[str, dict] = {
    "large": dict(dim=576, dim_mults=(1, 1, 2, 2, 4), resnet_blocks=5, linear_attn_blocks=2, norm_groups=9),
    "small": dict(dim=144, dim_mults=(1, 2, 4, 8), resnet_blocks=5, linear_attn_blocks=2, norm_groups=9),
    "tiny": dict(
        dim=16,
        dim_mults=(1, 2),
        resnet_blocks=2,
        linear_attn_blocks=1,
        heads=2,
        dim_head=8,
        linear_dim_head=8,
        norm_groups=4,
    ),
}


def unet_preset(name: str, in_channels: int, out_channels: int, context_dim: int = 1024, **overrides) -> UNetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; choose one of {', '.join(PRESETS)}")
    return UNetConfig(
        in_channels=in_channels, out_channels=out_channels, context_dim=context_dim, **{**PRESETS[name], **overrides}
    )


def timestep_embedding(t: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps (int or float) -> (B, dim) [sin | cos] features, periods from 2*pi up to 2*pi*theta."""
    half = dim // 2
    freqs = torch.exp(-math.log(theta) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = t.float()[:, None] * freqs  # (B, half)
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=-1), (0, dim - 2 * half))


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels of (B, C, T), with a learned gain per channel."""

    def __init__(self, dim: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.gain * x.shape[1] ** 0.5


class ResnetBlock(nn.Module):
    """conv3 -> GroupNorm -> (1 + scale) * h + shift from the embedding -> SiLU -> conv3 -> GroupNorm -> SiLU, + 1x1
    residual. (B, C_in, T), emb (B, E) -> (B, C_out, T)."""

    def __init__(self, dim_in: int, dim_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * dim_out))
        self.conv1, self.norm1 = nn.Conv1d(dim_in, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out)
        self.conv2, self.norm2 = nn.Conv1d(dim_out, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out)
        self.skip = nn.Conv1d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(emb)[:, :, None].chunk(2, dim=1)  # (B, C_out, 1) each
        h = F.silu(self.norm1(self.conv1(x)) * (1 + scale) + shift)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


class LinearAttention(nn.Module):
    """Pre-norm residual linear attention over time (softmax kernels, O(T)): (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm = ChannelRMSNorm(dim)
        self.qkv = nn.Conv1d(dim, 3 * heads * dim_head, 1, bias=False)
        self.out = nn.Sequential(nn.Conv1d(heads * dim_head, dim, 1), ChannelRMSNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, -1, t).unbind(1)  # (B, H, d, T) each
        q = q.softmax(dim=-2) * self.scale  # over features
        k = k.softmax(dim=-1)  # over time
        context = torch.einsum("bhdn,bhen->bhde", k, v)  # (B, H, d, d)
        out = torch.einsum("bhde,bhdn->bhen", context, q)  # (B, H, d, T)
        return x + self.out(out.reshape(b, -1, t))


class SelfAttention(nn.Module):
    """Pre-norm residual full softmax attention over time (the middle of the U): (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.norm = ChannelRMSNorm(dim)
        self.qkv = nn.Conv1d(dim, 3 * heads * dim_head, 1, bias=False)
        self.out = nn.Conv1d(heads * dim_head, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, -1, t).transpose(-1, -2).unbind(1)  # (B, H, T, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, d)
        return x + self.out(out.transpose(-1, -2).reshape(b, -1, t))


class CrossAttention(nn.Module):
    """Pre-norm residual attention from frames to text tokens; masked tokens get no weight.

    x (B, C, T), context (B, S, E), mask (B, S) bool (every row needs one True) -> (B, C, T)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.norm = ChannelRMSNorm(dim)
        self.q = nn.Linear(dim, heads * dim_head, bias=False)
        self.kv = nn.Linear(context_dim, 2 * heads * dim_head, bias=False)
        self.out = nn.Conv1d(heads * dim_head, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        s = context.shape[1]
        q = self.q(self.norm(x).transpose(1, 2)).reshape(b, t, self.heads, -1).transpose(1, 2)  # (B, H, T, d)
        k, v = self.kv(context).reshape(b, s, 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, S, d) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, H, T, d)
        return x + self.out(out.transpose(-1, -2).reshape(b, -1, t))


class Level(nn.Module):
    """One resolution of one side of the U (see the module docstring for the order of its blocks).

    Down side (skip_width 0): blocks map width -> width and every block's output is returned as a skip.
    Up side: block j reads cat(x, the next skip popped from `skips`) of width + skip_width channels."""

    def __init__(self, cfg: UNetConfig, width: int, skip_width: int, emb_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            [ResnetBlock(width + skip_width, width, emb_dim, cfg.norm_groups) for _ in range(cfg.resnet_blocks)]
        )
        self.linear_attn = nn.ModuleList(
            [LinearAttention(width, cfg.heads, cfg.linear_dim_head) for _ in range(cfg.linear_attn_blocks)]
        )
        self.cross_attn = CrossAttention(width, cfg.context_dim, cfg.heads, cfg.dim_head)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, skips: list | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = []
        for j, block in enumerate(self.blocks):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
            if 1 <= j <= len(self.linear_attn):
                x = self.linear_attn[j - 1](x)
            if j == len(self.blocks) - 1:
                x = self.cross_attn(x, text, mask)
            outputs.append(x)
        return x, outputs


class UNet1D(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        widths, vector_dim = cfg.widths, 4 * cfg.dim
        emb_dim = 2 * vector_dim  # the ResNet blocks read [time ; pooled text]
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, vector_dim), nn.GELU(), nn.Linear(vector_dim, vector_dim))
        self.text_mlp = nn.Sequential(
            nn.Linear(cfg.context_dim, vector_dim), nn.GELU(), nn.Linear(vector_dim, vector_dim)
        )
        self.null_text = nn.Parameter(torch.randn(cfg.context_dim) * 0.02)  # the learned null condition
        self.init_conv = nn.Conv1d(cfg.in_channels, cfg.dim, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in range(cfg.levels):
            w_in, w_out, last = widths[level], widths[level + 1], level == cfg.levels - 1
            self.down.append(Level(cfg, w_in, 0, emb_dim))
            self.downsample.append(nn.Conv1d(w_in, w_out, 3, padding=1) if last else nn.Conv1d(w_in, w_out, 4, 2, 1))
        mid = widths[-1]
        self.mid_block1 = ResnetBlock(mid, mid, emb_dim, cfg.norm_groups)
        self.mid_attn = SelfAttention(mid, cfg.heads, cfg.dim_head)
        self.mid_block2 = ResnetBlock(mid, mid, emb_dim, cfg.norm_groups)
        for level in reversed(range(cfg.levels)):
            w_in, w_out = widths[level], widths[level + 1]
            self.up.append(Level(cfg, w_out, w_in, emb_dim))
            conv = nn.Conv1d(w_out, w_in, 3, padding=1)
            self.upsample.append(conv if level == 0 else nn.Sequential(nn.Upsample(scale_factor=2), conv))
        self.final_block = ResnetBlock(2 * cfg.dim, cfg.dim, emb_dim, cfg.norm_groups)
        self.final_conv = nn.Conv1d(cfg.dim, cfg.out_channels, 1)

    def condition(
        self, text: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace the rows flagged in `drop` (B,) by the null text: token 0 = null_text, the others masked."""
        mask = mask.bool()
        if drop is not None:
            b, s, _ = text.shape
            null = F.pad(self.null_text.to(text.dtype).expand(b, 1, -1), (0, 0, 0, s - 1))  # (B, S, E)
            first = torch.zeros_like(mask)
            first[:, 0] = True
            drop = drop.bool().to(mask.device)
            text = torch.where(drop[:, None, None], null, text)
            mask = torch.where(drop[:, None], first, mask)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("a text mask row has no token; encode '' (or drop the condition) for unconditional rows")
        return text, mask

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C_in, T), timestep (B,), text (B, S, context_dim), text_mask (B, S), drop (B,) -> (B, C_out, T)."""
        b, c, t = x.shape
        m = self.cfg.length_multiple
        if c != self.cfg.in_channels:
            raise ValueError(f"U-Net input has {c} channels, the model expects {self.cfg.in_channels}")
        if t % m:
            raise ValueError(
                f"U-Net input length {t} is not a multiple of {m} = 2**(levels-1) for {self.cfg.levels} levels; "
                f"crop or pad the latents to a multiple of {m} frames"
            )
        text, mask = self.condition(text, text_mask, drop)
        pooled = torch.where(mask[..., None], text, 0).sum(1) / mask.sum(1, keepdim=True)  # (B, E)
        time = self.time_mlp(timestep_embedding(timestep.expand(b), self.cfg.dim, self.cfg.time_theta).to(x.dtype))
        emb = torch.cat([time, self.text_mlp(pooled)], dim=-1)  # (B, 8*dim)

        h = self.init_conv(x)  # (B, dim, T)
        first = h
        skips: list[torch.Tensor] = []
        for level, down in zip(self.down, self.downsample, strict=True):
            h, outputs = level(h, emb, text, mask)
            skips.extend(outputs)
            h = down(h)  # (B, widths[l+1], T / 2**(l+1)), the last level keeps its length
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)
        for level, up in zip(self.up, self.upsample, strict=True):
            h, _ = level(h, emb, text, mask, skips)
            h = up(h)
        h = self.final_block(torch.cat([h, first], dim=1), emb)  # (B, dim, T)
        return self.final_conv(h)  # (B, C_out, T)


def param_count(cfg: UNetConfig) -> int:
    """Parameters of UNet1D(cfg), counted on the meta device (no memory allocated)."""
    with torch.device("meta"):
        model = UNet1D(cfg)
    return sum(p.numel() for p in model.parameters())
