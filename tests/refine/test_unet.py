"""1-D U-Net: shapes, length check, text padding mask, null condition, presets."""

from __future__ import annotations

import pytest
import torch

from ssmttm.refine.unet import UNet1D, UNetConfig, param_count, unet_preset
from tests.refine._fixtures import E, text_batch, tiny_unet


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "mults", "length"),
    [(6, 4, (1, 2), 16), (2, 2, (1, 2), 6), (72, 64, (1, 2, 2), 8), (6, 4, (1,), 5)],
)
def test_output_shapes(in_ch, out_ch, mults, length):
    torch.manual_seed(0)
    model = UNet1D(unet_preset("tiny", in_ch, out_ch, context_dim=E, dim_mults=mults)).eval()
    text, mask = text_batch(3)
    x = torch.randn(3, in_ch, length)
    with torch.no_grad():
        y = model(x, torch.tensor([0, 7, 99]), text, mask)
        y_scalar_t = model(x, torch.tensor(5), text, mask)  # a 0-d timestep is broadcast over the batch
    assert y.shape == y_scalar_t.shape == (3, out_ch, length)
    assert torch.isfinite(y).all()


def test_length_must_be_a_multiple():
    model = tiny_unet(dim_mults=(1, 2, 2))  # 3 levels: multiple of 4
    assert model.cfg.length_multiple == 4
    text, mask = text_batch(1)
    with pytest.raises(ValueError, match=r"length 10 is not a multiple of 4 = 2\*\*\(levels-1\)"):
        model(torch.randn(1, 6, 10), torch.tensor([1]), text, mask)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 5, 8), torch.tensor([1]), text, mask)


def test_padding_tokens_do_not_change_the_output():
    model = tiny_unet()
    text, mask = text_batch(4, s=5)
    x, t = torch.randn(4, 6, 8), torch.tensor([3, 50, 10, 99])
    noisy_pads = torch.where(mask[..., None], text, 1e3 * torch.randn_like(text))
    with torch.no_grad():
        ref = model(x, t, text, mask)
        assert torch.allclose(model(x, t, noisy_pads, mask), ref, atol=1e-6)
        shorter = model(x, t, text[:, :4], mask[:, :4])  # the last position is padding in every row
        changed = text.clone()
        changed[:, 0] += 1.0  # a real token changes the output
        assert not torch.allclose(model(x, t, changed, mask), ref, atol=1e-4)
    assert torch.allclose(shorter, ref, atol=1e-5)


def test_null_condition_replaces_the_text():
    model = tiny_unet()
    text, mask = text_batch(2)
    other, other_mask = text_batch(2, s=7, seed=5)
    x, t = torch.randn(2, 6, 8), torch.tensor([20, 80])
    drop = torch.tensor([True, False])
    y = model(x, t, text, mask, drop)
    y_other = model(x, t, other[:, :4], other_mask[:, :4], drop)
    assert torch.allclose(y[0], y_other[0], atol=1e-6)  # the dropped row ignores its caption
    assert not torch.allclose(y[1], y_other[1], atol=1e-4)
    null_only = model.null_text.detach().expand(2, 1, E)
    assert torch.allclose(y[0], model(x, t, null_only, torch.ones(2, 1, dtype=torch.bool))[0], atol=1e-6)
    y[0].sum().backward()
    assert model.null_text.grad is not None and model.null_text.grad.abs().sum() > 0


def test_empty_text_mask_is_an_error():
    model = tiny_unet()
    text, mask = text_batch(2)
    mask[1] = False
    with pytest.raises(ValueError, match="no token"):
        model(torch.randn(2, 6, 8), torch.tensor([1, 2]), text, mask)
    model(torch.randn(2, 6, 8), torch.tensor([1, 2]), text, mask, drop=torch.tensor([False, True]))  # null: fine


def test_paper_presets():
    large, small = unet_preset("large", 72, 64), unet_preset("small", 8, 8)
    assert (large.dim, large.dim_mults, large.resnet_blocks, large.linear_attn_blocks) == (576, (1, 1, 2, 2, 4), 5, 2)
    assert (small.dim, small.dim_mults) == (144, (1, 2, 4, 8))
    assert large.context_dim == 1024 and large.length_multiple == 16 and small.length_multiple == 8
    assert param_count(small) > param_count(unet_preset("tiny", 8, 8)) > 0  # builds on the meta device
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        unet_preset("huge", 8, 8)


def test_paper_sizes_follow_discodiffs_layout():
    """Counted from the shapes of DiscoDiff's Unet1DCondBase (ETH-DISCO/discodiff module/unet_cond_large.py,
    unet_blocks.py): ResNet blocks project [time ; pooled text] (8 x dim wide), 9 heads of 128 in the cross and
    middle attention, 32-wide heads in the linear attention. DiscoDiff adds a chroma cross-attention per level
    (1,235,636,748 in all for the large secondary), which PAPER.md's text-only refiner leaves out."""
    assert param_count(unet_preset("large", 72, 64, context_dim=1024)) == 1_212_778_880
    assert param_count(unet_preset("large", 8, 8, context_dim=1024)) == 1_212_635_976
    assert param_count(unet_preset("small", 72, 64, context_dim=1024)) == 199_753_856
    with torch.device("meta"):
        model = UNet1D(unet_preset("large", 72, 64))
    assert model.mid_block1.emb[1].in_features == 8 * 576  # the concatenation, not a sum of 4 x dim vectors


def test_config_validation():
    with pytest.raises(ValueError, match="linear_attn_blocks"):
        UNetConfig(resnet_blocks=2, linear_attn_blocks=2)
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(dim=20, dim_mults=(1,), norm_groups=8)
    with pytest.raises(ValueError, match="dim_mults"):
        UNetConfig(dim_mults=())
