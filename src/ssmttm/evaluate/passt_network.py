"""hear21passt's PaSST network at the size a checkpoint's tensors give, built the way `get_model(arch)` builds it.

A kkoutini/PaSST release file is a plain state dict of hear21passt's `PaSST` module. Its tensors fix the sizes:

    patch_embed.proj.weight   (embed_dim, 1, 16, 16)    the 16 x 16 patch convolution over one mel channel
    blocks.<i>.*              i = 0 .. depth - 1        transformer blocks
    freq_new_pos_embed        (1, embed_dim, F, 1)      F frequency patches (128 mel bins, stride 10: 12)
    time_new_pos_embed        (1, embed_dim, 1, T)      T time patches (the model's window, stride 10: 99 for 10 s)
    head.1.weight             (n_classes, embed_dim)    the classifier (head_dist.weight: the distillation head)

Every PaSST release uses 64-wide attention heads (768 = 12 x 64), so num_heads = embed_dim / 64. The other settings
are those `get_model(arch, pretrained=False, n_classes, input_tdim)` passes for the arches the project loads:
16 x 16 patches at stride (10, 10), input 128 x input_tdim mel frames, one input channel, a distillation token,
no patchout, hear21passt's default_cfg of the arch. For a release file the network is exactly get_model's
(tests/evaluate/test_passt_standin.py checks it on the meta device); a smaller file in the same format (the
stand-ins of scripts/standins/passt.py) gives the same network, only narrower and shallower.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from typing import Any

from ssmttm.errors import UserFacingError
from ssmttm.evaluate.state_shapes import tensor_shape

PATCH_SIZE = 16
STRIDE = 10  # patch stride over frequency and time (get_model's fstride, tstride)
INPUT_FDIM = 128  # mel bins of the frontend
HEAD_WIDTH = 64  # attention head width of every PaSST release
# get_model's arch -> the hear21passt default_cfg (variant) its model function builds
ARCH_VARIANTS = {
    "passt_s_swa_p16_128_ap476": "passt_s_swa_p16_128_ap476",
    "passt_20sec": "passt-s-f128-20sec-p16-s10-ap474-swa",
    "passt_30sec": "passt-s-f128-30sec-p16-s10-ap473-swa",
}
_BLOCK = re.compile(r"blocks\.(\d+)\.")


@dataclass(frozen=True)
class PasstArchitecture:
    embed_dim: int
    depth: int
    num_heads: int
    freq_patches: int  # F of freq_new_pos_embed (1, embed_dim, F, 1)
    time_patches: int  # T of time_new_pos_embed (1, embed_dim, 1, T)
    n_classes: int


class NotAPasst(ValueError):
    """The state dict's tensors do not form a PaSST; the message says which tensor and why."""


def infer_architecture(state: dict[str, Any]) -> PasstArchitecture:
    """The PaSST sizes of a state dict in the release format; NotAPasst when its tensors do not form one."""
    embed_dim, in_chans, patch_f, patch_t = tensor_shape(state, "patch_embed.proj.weight", 4, NotAPasst)
    if (in_chans, patch_f, patch_t) != (1, PATCH_SIZE, PATCH_SIZE):
        raise NotAPasst(
            f"patch_embed.proj.weight has shape {(embed_dim, in_chans, patch_f, patch_t)}, not (E, 1, 16, 16)"
        )
    if embed_dim % HEAD_WIDTH:
        raise NotAPasst(f"embedding width {embed_dim} is not a multiple of the 64-wide attention heads")
    blocks = sorted({int(m.group(1)) for key in state if (m := _BLOCK.match(str(key)))})
    if not blocks or blocks != list(range(len(blocks))):
        raise NotAPasst(f"transformer blocks {blocks[:6]} are not blocks.0 .. blocks.N")
    one, width, freq_patches, last = tensor_shape(state, "freq_new_pos_embed", 4, NotAPasst)
    if (one, width, last) != (1, embed_dim, 1):
        raise NotAPasst(f"freq_new_pos_embed has shape {(one, width, freq_patches, last)}, not (1, {embed_dim}, F, 1)")
    one, width, single, time_patches = tensor_shape(state, "time_new_pos_embed", 4, NotAPasst)
    if (one, width, single) != (1, embed_dim, 1):
        raise NotAPasst(
            f"time_new_pos_embed has shape {(one, width, single, time_patches)}, not (1, {embed_dim}, 1, T)"
        )
    n_classes, head_width = tensor_shape(state, "head.1.weight", 2, NotAPasst)
    if head_width != embed_dim:
        raise NotAPasst(f"head.1.weight has shape {(n_classes, head_width)}, not (classes, {embed_dim})")
    return PasstArchitecture(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=embed_dim // HEAD_WIDTH,
        freq_patches=freq_patches,
        time_patches=time_patches,
        n_classes=n_classes,
    )


def expected_patches(input_tdim: int) -> tuple[int, int]:
    """(F, T) patch grid of a 128 x input_tdim input at stride 10 (PatchEmbed.grid_size): (12, 99) for 998 frames."""
    return INPUT_FDIM // STRIDE, input_tdim // STRIDE


def build_network(architecture: PasstArchitecture, arch: str, input_tdim: int) -> Any:
    """hear21passt's PaSST of `arch` (ARCH_VARIANTS) at the sizes of `architecture`, as get_model builds it
    (randomly initialised; the caller loads the state dict). Its time grid must be the arch's: input_tdim // 10."""
    if arch not in ARCH_VARIANTS:
        raise UserFacingError(f"PaSST arch {arch!r} is not one the project loads: {sorted(ARCH_VARIANTS)}")
    if (architecture.freq_patches, architecture.time_patches) != expected_patches(input_tdim):
        raise ValueError(f"{architecture} does not fit a 128 x {input_tdim} input at stride 10")
    from ssmttm.evaluate.passt_import import import_hear21passt_models

    passt_models = import_hear21passt_models()
    with contextlib.redirect_stdout(io.StringIO()):  # hear21passt prints while building
        # the arch's model function with the sizes of the checkpoint instead of its fixed 768 / 12 / 12, and the
        # keyword arguments get_model passes it
        network = passt_models._create_vision_transformer(
            ARCH_VARIANTS[arch],
            pretrained=False,
            distilled=True,
            patch_size=PATCH_SIZE,
            embed_dim=architecture.embed_dim,
            depth=architecture.depth,
            num_heads=architecture.num_heads,
            num_classes=architecture.n_classes,
            in_chans=1,
            img_size=(INPUT_FDIM, input_tdim),
            stride=(STRIDE, STRIDE),
            u_patchout=0,
            s_patchout_t=0,
            s_patchout_f=0,
        )
        return passt_models.fix_embedding_layer(network)
