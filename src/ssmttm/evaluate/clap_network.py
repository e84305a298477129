"""laion_clap's CLAP_Module with an HTSAT audio encoder of the size a checkpoint's tensors give.

laion_clap (1.1.7) builds HTSAT at sizes fixed per model name (clap_module/htsat.py `create_htsat_model`: tiny, base,
large) and sizes CLAP's audio projection from its per-name config (model_configs/HTSAT-*.json `embed_dim`). A release
checkpoint's tensors (names as `load_state_dict(skip_params=True)` gives them, without DDP's `module.`) fix them all:

    audio_branch.patch_embed.proj.weight                       (E, 1, 4, 4)   E: patch embedding width
    audio_branch.layers.<i>.blocks.<j>.*                       stage i (0..3) of depths[i] Swin blocks, E * 2**i wide
    audio_branch.layers.<i>.blocks.0.attn.relative_position_bias_table   ((2W - 1)**2, heads[i])   W: window size
    audio_branch.tscam_conv.weight                             (classes, E * 8, SF, 3)
    audio_projection.0.weight                                  (512, E * 8)   CLAP's embed_dim is HTSAT's E * 8
    audio_branch.patch_embed.fusion_model.*                    present only in fusion checkpoints

Everything else is laion_clap's own construction: `CLAP_Module(enable_fusion, amodel=audio_model)` runs as is while
`create_htsat_model` builds HTSAT_Swin_Transformer with these sizes (and the other arguments laion_clap passes it:
256 x 256 spectrogram image, 4 x 4 patches at stride 4) and the model config's `embed_dim` is E * 8. For a release
file the module is exactly laion_clap's (tests/evaluate/test_clap_standin.py compares printouts and state-dict
shapes); the stand-ins of scripts/standins/clap.py give the same network, only narrower and shallower.
"""

from __future__ import annotations

import importlib
import math
import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any
from unittest import mock

from ssmttm.errors import UserFacingError
from ssmttm.evaluate.state_shapes import tensor_shape

SPEC_SIZE = 256  # create_htsat_model's spectrogram image (64 mel bins x 4, 1024 frames / 4)
PATCH_SIZE = 4
MLP_RATIO = 4  # HTSAT_Swin_Transformer's default, which create_htsat_model keeps
# laion_clap 1.1.7's create_htsat_model, per model_name: (embed_dim, depths, num_heads, window_size)
RELEASE_SIZES = {
    "HTSAT-tiny": (96, (2, 2, 6, 2), (4, 8, 16, 32), 8),
    "HTSAT-base": (128, (2, 2, 12, 2), (4, 8, 16, 32), 8),
    "HTSAT-large": (256, (2, 2, 12, 2), (4, 8, 16, 32), 8),
}
_BLOCK = re.compile(r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class HtsatArchitecture:
    embed_dim: int  # patch embedding width; stage i is embed_dim * 2**i wide
    depths: tuple[int, ...]  # Swin blocks per stage
    num_heads: tuple[int, ...]  # attention heads per stage
    window_size: int
    num_classes: int  # HTSAT's AudioSet head (unused by the embeddings, but in the state dict)
    fusion: bool  # the aff_2d feature-fusion weights are present

    @property
    def num_features(self) -> int:
        """Width of HTSAT's pooled embedding, CLAP's audio projection input: (E * 2**(stages - 1))."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def describe(self) -> str:
        return (
            f"HTSAT {self.embed_dim} wide, depths {list(self.depths)}, heads {list(self.num_heads)}, "
            f"window {self.window_size}, fusion {self.fusion}"
        )

    def release_name(self) -> str | None:
        """The laion_clap model name whose fixed sizes these are, if any."""
        sizes = (self.embed_dim, self.depths, self.num_heads, self.window_size)
        return next((name for name, release in RELEASE_SIZES.items() if release == sizes), None)


class NotAClap(ValueError):
    """The state dict's tensors do not form a CLAP with an HTSAT audio encoder; the message says which and why."""


def _stage_heads_and_window(state: dict[str, Any], stage: int, depth: int, width: int) -> tuple[int, int]:
    """(heads, window size) of every block of `stage`, which must agree; the blocks' widths must be `width`."""
    found = set()
    for block in range(depth):
        prefix = f"audio_branch.layers.{stage}.blocks.{block}."
        rows, heads = tensor_shape(state, prefix + "attn.relative_position_bias_table", 2, NotAClap)
        side = math.isqrt(rows)
        if side * side != rows or side % 2 == 0:
            raise NotAClap(f"{prefix}attn.relative_position_bias_table has {rows} rows, not (2W - 1)**2")
        qkv = tensor_shape(state, prefix + "attn.qkv.weight", 2, NotAClap)
        fc1 = tensor_shape(state, prefix + "mlp.fc1.weight", 2, NotAClap)
        if qkv != (3 * width, width) or fc1 != (MLP_RATIO * width, width) or width % heads:
            raise NotAClap(
                f"{prefix[len('audio_branch.') :]}: qkv {qkv}, fc1 {fc1}, {heads} heads do not form a {width} wide "
                "Swin block"
            )
        found.add((heads, (side + 1) // 2))
    if len(found) != 1:
        raise NotAClap(f"the blocks of HTSAT stage {stage} differ in heads or window size: {sorted(found)}")
    return found.pop()


def infer_architecture(state: dict[str, Any]) -> HtsatArchitecture:
    """The HTSAT sizes of a CLAP state dict (keys without `module.`); NotAClap when its tensors do not form one."""
    embed_dim, in_chans, patch_f, patch_t = tensor_shape(state, "audio_branch.patch_embed.proj.weight", 4, NotAClap)
    if (in_chans, patch_f, patch_t) != (1, PATCH_SIZE, PATCH_SIZE):
        raise NotAClap(f"audio_branch.patch_embed.proj.weight has shape {(embed_dim, in_chans, patch_f, patch_t)}")
    blocks: dict[int, set[int]] = {}
    for key in state:
        if match := _BLOCK.match(str(key)):
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages = sorted(blocks)
    if not stages or stages != list(range(len(stages))):
        raise NotAClap(f"HTSAT stages {stages[:6]} are not audio_branch.layers.0 .. layers.N")
    depths = []
    for stage in stages:
        if sorted(blocks[stage]) != list(range(len(blocks[stage]))):
            raise NotAClap(f"the blocks of HTSAT stage {stage} are not blocks.0 .. blocks.N")
        depths.append(len(blocks[stage]))
    heads_windows = [_stage_heads_and_window(state, i, depth, embed_dim * 2**i) for i, depth in enumerate(depths)]
    windows = {window for _, window in heads_windows}
    if len(windows) != 1:
        raise NotAClap(f"HTSAT stages differ in window size: {sorted(windows)}")
    num_features = embed_dim * 2 ** (len(depths) - 1)
    n_classes, tscam_width, _, _ = tensor_shape(state, "audio_branch.tscam_conv.weight", 4, NotAClap)
    if tscam_width != num_features:
        raise NotAClap(f"audio_branch.tscam_conv.weight reads {tscam_width} channels, HTSAT gives {num_features}")
    joint, projection_width = tensor_shape(state, "audio_projection.0.weight", 2, NotAClap)
    if projection_width != num_features:
        raise NotAClap(f"audio_projection.0.weight has shape {(joint, projection_width)}, HTSAT gives {num_features}")
    return HtsatArchitecture(
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(heads for heads, _ in heads_windows),
        window_size=windows.pop(),
        num_classes=n_classes,
        fusion=any(str(key).startswith("audio_branch.patch_embed.fusion_model.") for key in state),
    )


def build_clap_module(architecture: HtsatArchitecture, audio_model: str, enable_fusion: bool, device: str) -> Any:
    """laion_clap's CLAP_Module(enable_fusion, amodel=audio_model) with the HTSAT of `architecture` (randomly
    initialised; the caller loads the state dict). Reads roberta-base from the Hugging Face cache as laion_clap does."""
    if audio_model not in RELEASE_SIZES:
        raise UserFacingError(f"CLAP audio_model {audio_model!r} is not one the project loads: {sorted(RELEASE_SIZES)}")
    from ssmttm.evaluate.clap_import import import_laion_clap

    laion_clap = import_laion_clap()
    # The modules CLAP_Module's create_model comes from: laion_clap puts its folder on sys.path and imports them as
    # the top-level `clap_module` (objects other than laion_clap.clap_module's).
    factory = importlib.import_module(laion_clap.hook.create_model.__module__)
    clap_model = importlib.import_module(factory.CLAP.__module__)
    htsat = importlib.import_module(clap_model.create_htsat_model.__module__)

    def sized_htsat(audio_cfg: Any, enable_fusion: bool = False, fusion_type: str = "None") -> Any:
        # create_htsat_model's call with the checkpoint's sizes in place of the fixed ones of audio_cfg.model_name
        return htsat.HTSAT_Swin_Transformer(
            spec_size=SPEC_SIZE,
            patch_size=PATCH_SIZE,
            patch_stride=(PATCH_SIZE, PATCH_SIZE),
            num_classes=architecture.num_classes,
            embed_dim=architecture.embed_dim,
            depths=list(architecture.depths),
            num_heads=list(architecture.num_heads),
            window_size=architecture.window_size,
            config=audio_cfg,
            enable_fusion=enable_fusion,
            fusion_type=fusion_type,
        )

    sized_config = deepcopy(factory._MODEL_CONFIGS[audio_model])
    sized_config["embed_dim"] = architecture.num_features  # CLAP's audio projection input
    # Only while CLAP_Module is built: laion_clap offers no other way to size HTSAT.
    with (
        mock.patch.dict(factory._MODEL_CONFIGS, {audio_model: sized_config}),
        mock.patch.object(clap_model, "create_htsat_model", sized_htsat),
    ):
        return laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=audio_model, device=device)


def read_checkpoint(path: str, audio_model: str, enable_fusion: bool) -> tuple[dict[str, Any], HtsatArchitecture]:
    """(state dict as CLAP_Module.load_ckpt reads it, its HTSAT sizes). NotAClap when its tensors are no CLAP of
    that fusion setting, or are another laion_clap model's release sizes; torch.load's own errors pass through."""
    from ssmttm.evaluate.clap_import import import_laion_clap

    state = import_laion_clap().hook.load_state_dict(path, skip_params=True)  # keys without DDP's `module.`
    if not isinstance(state, dict):
        raise NotAClap(f"it holds a {type(state).__name__}, not a state dict")
    architecture = infer_architecture(state)
    if architecture.fusion != enable_fusion:
        raise NotAClap(f"its tensors are a CLAP with fusion {architecture.fusion}")
    release = architecture.release_name()
    if release not in (None, audio_model):
        raise NotAClap(f"its tensors are {release}'s")
    return state, architecture
