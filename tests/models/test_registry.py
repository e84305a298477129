import pytest
import torch

from ssmttm.models.lm import LMConfig, param_count
from ssmttm.models.registry import BACKBONES, BackboneConfig, build_backbone, get_spec

PAPER_NAMES = ["prefix_mamba", "prefix_simba", "cross_simba", "cross_transformer", "prefix_transformer"]
TINY = BackboneConfig(d_model=16, n_layers=2, d_state=4, headdim=8, chunk_size=4, n_heads=2, mlp_hidden=32, dropout=0.0)


def test_registry_holds_exactly_the_paper_backbones():
    assert sorted(BACKBONES) == sorted(PAPER_NAMES)


def test_unknown_backbone_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError) as info:
        build_backbone("prefix_lstm", TINY)
    for name in PAPER_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="prefix_simba"):
        LMConfig(backbone="simba")


@pytest.mark.parametrize(
    "name,kinds,mode",
    [
        ("prefix_mamba", ["mamba", "mamba"], "prefix"),
        ("prefix_simba", ["mamba", "mlp"], "prefix"),
        ("cross_simba", ["mamba", "cross_attn", "mlp"], "cross"),
        ("cross_transformer", ["self_attn", "cross_attn", "mlp"], "cross"),
        ("prefix_transformer", ["self_attn", "mlp"], "prefix"),
    ],
)
def test_blocks_have_the_sublayers_of_the_paper_table(name, kinds, mode):
    backbone = build_backbone(name, TINY)
    assert backbone.text_mode == mode == get_spec(name).text_mode
    assert len(backbone.blocks) == 2
    for block in backbone.blocks:
        assert [sub.kind for sub in block.layers] == kinds


def test_cross_backbones_require_text():
    backbone = build_backbone("cross_transformer", TINY)
    with pytest.raises(ValueError, match="cross-attends"):
        backbone(torch.randn(1, 3, 16))


def test_released_prefix_simba_parameter_count():
    # PAPER.md section 4: one block 11,589,728; 281.04 M with 24 blocks, 72.43 M with 6 (no weights allocated).
    cfg = LMConfig(
        backbone="prefix_simba",
        d_model=1024,
        n_layers=24,
        d_state=512,
        d_conv=4,
        expand=2,
        headdim=64,
        ngroups=1,
        mlp_hidden=2048,
        n_codebooks=1,
        d_text=768,
    )
    n24 = param_count(cfg)
    assert abs(n24 - 281.04e6) / 281.04e6 < 1e-3
    assert n24 == 281_042_176
    n6 = param_count(LMConfig(**{**cfg.__dict__, "n_layers": 6}))
    assert abs(n6 - 72.43e6) / 72.43e6 < 1e-3
    assert (n24 - n6) // 18 == 11_589_728  # one block


@pytest.mark.parametrize(
    "name,layers,millions",
    [
        ("prefix_mamba", 19, 283.8),
        ("prefix_transformer", 33, 279.9),
        ("cross_transformer", 24, 305.1),
    ],
)
def test_other_backbones_match_the_paper_sizes(name, layers, millions):
    n = param_count(LMConfig(backbone=name, n_layers=layers, d_text=768))
    assert abs(n / 1e6 - millions) / millions < 1e-3


def test_mamba_sublayer_keeps_mamba_ssm_parameter_names():
    names = {k for k, _ in build_backbone("prefix_simba", TINY).named_parameters()}
    for suffix in (
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "dt_bias",
        "A_log",
        "D",
        "norm.weight",
        "out_proj.weight",
    ):
        assert f"blocks.0.layers.0.mixer.{suffix}" in names
