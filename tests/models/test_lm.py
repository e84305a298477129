import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from ssmttm.models.delay import apply_delay
from ssmttm.models.lm import MusicLM, lm_loss, load_lm, save_lm, sinusoidal_positions
from tests.models._lm_utils import ALL_BACKBONES, SPECIAL, random_text, tiny_cfg, tiny_model


def _step_logits(model, tokens, hidden, mask):
    """Logits of every position from start + step, (B, K, L, V)."""
    logits, cache = model.start(hidden, mask, max_new=tokens.shape[-1])
    out = [logits]
    for t in range(tokens.shape[-1] - 1):
        out.append(model.step(tokens[:, :, t], cache))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_recurrent_decoding_equals_full_forward(backbone):
    model = tiny_model(backbone, n_codebooks=2)
    hidden, mask = random_text(2)
    tokens = torch.randint(0, SPECIAL + 1, (2, 2, 11), generator=torch.Generator().manual_seed(3))
    full = model(tokens, hidden, mask)  # (B, K, L, V)
    assert full.shape == (2, 2, 11, SPECIAL + 1)
    assert torch.allclose(_step_logits(model, tokens, hidden, mask), full, atol=1e-4)


@pytest.mark.parametrize("backbone", ["prefix_simba", "cross_transformer"])
def test_recurrent_decoding_equals_full_forward_with_the_legacy_position_order(backbone):
    model = tiny_model(backbone, position_order="sin_cos")
    hidden, mask = random_text(2)
    tokens = torch.randint(0, SPECIAL + 1, (2, 1, 9), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(_step_logits(model, tokens, hidden, mask), model(tokens, hidden, mask), atol=1e-4)


# ---------------------------------------------------------------------------------------------- positions


def official_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """The official code's create_sin_embedding (Lonian6/SSM-TTM simba.py, from MusicGen), restated in float64:
    half = dim / 2 angles p / 10000^(i / (half - 1)), i = 0..half-1, as [cos | sin]."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float64) / (half - 1)
    angles = positions.double()[:, None] / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponents)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)  # (L, dim)


@pytest.mark.parametrize("dim", [32, 1024])
def test_positions_follow_the_official_formula(dim):
    """Every position of a paper-length sequence (60 text + 2588 audio): the same frequencies, cos before sin."""
    expected = official_positions(torch.arange(2648), dim)
    ours = sinusoidal_positions(0, 2648, dim, dtype=torch.float64)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    shifted = sinusoidal_positions(100, 7, dim, dtype=torch.float64)  # a recurrent step's rows: start > 0
    torch.testing.assert_close(shifted, expected[100:107], rtol=0, atol=1e-6)
    # The model computes in float32 like the official code: angles up to 2647 rad carry float32 rounding (ulp 2.4e-4).
    torch.testing.assert_close(sinusoidal_positions(0, 2648, dim), expected.float(), rtol=0, atol=1e-3)


def test_position_orders_swap_the_halves():
    cos_sin = sinusoidal_positions(3, 5, 16)
    sin_cos = sinusoidal_positions(3, 5, 16, order="sin_cos")
    assert torch.equal(cos_sin[:, :8], sin_cos[:, 8:]) and torch.equal(cos_sin[:, 8:], sin_cos[:, :8])
    assert torch.equal(cos_sin[0, :8], torch.cos(3 * torch.exp(-torch.log(torch.tensor(1e4)) * torch.arange(8) / 7)))
    assert tiny_cfg().position_order == "cos_sin"
    with pytest.raises(ValueError, match="position_order"):
        tiny_cfg(position_order="sincos")


def test_odd_width_pads_one_zero_column():
    pe = sinusoidal_positions(0, 4, 9, dtype=torch.float64)
    assert pe.shape == (4, 9) and torch.equal(pe[:, 8], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(pe[:, :8], official_positions(torch.arange(4), 8), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_logit_at_t_does_not_depend_on_later_tokens(backbone):
    model = tiny_model(backbone, n_codebooks=2)
    hidden, mask = random_text(1)
    tokens = torch.randint(0, SPECIAL, (1, 2, 10), generator=torch.Generator().manual_seed(4))
    captured = []

    def keep(_module, _inputs, output):  # embeddings of the audio inputs, (B, L - 1, D) per codebook
        if output.shape[1] > 1:
            output.retain_grad()
            captured.append(output)

    hooks = [emb.register_forward_hook(keep) for emb in model.emb]
    t = 6
    model(tokens, hidden, mask)[:, :, t].sum().backward()
    for h in hooks:
        h.remove()
    for emb_out in captured:
        per_pos = emb_out.grad[0].abs().sum(-1)  # input position j holds token j
        assert torch.all(per_pos[t:] == 0), "logit t sees tokens >= t"
        assert torch.all(per_pos[:t] > 0), "logit t ignores earlier tokens"


@pytest.mark.parametrize("backbone", ["prefix_simba", "cross_transformer"])
def test_nine_codebooks_with_delay(backbone):
    model = tiny_model(backbone, n_codebooks=9)
    codes = torch.randint(0, SPECIAL, (2, 9, 6), generator=torch.Generator().manual_seed(5))
    tokens = apply_delay(codes, SPECIAL)  # (2, 9, 15)
    hidden, mask = random_text(2)
    loss, logits = model.loss(tokens, hidden, mask)
    assert logits.shape == (2, 9, 15, SPECIAL + 1)
    assert torch.isfinite(loss) and loss > 0
    assert torch.allclose(_step_logits(model, tokens, hidden, mask), logits, atol=1e-4)


def test_loss_ignores_special_targets_and_sums_codebooks():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 7, SPECIAL + 1, generator=g)
    targets = torch.randint(0, SPECIAL, (2, 3, 7), generator=g)
    targets[:, :, :2] = SPECIAL
    expected = sum(
        F.cross_entropy(logits[:, k, 2:].reshape(-1, SPECIAL + 1), targets[:, k, 2:].reshape(-1), label_smoothing=0.1)
        for k in range(3)
    )
    assert torch.allclose(lm_loss(logits, targets, SPECIAL, 0.1), expected, atol=1e-5)
    changed = logits.clone()
    changed[:, :, :2] = 50.0  # positions with special targets carry no loss
    assert torch.allclose(lm_loss(changed, targets, SPECIAL, 0.1), expected, atol=1e-5)
    assert lm_loss(logits, torch.full_like(targets, SPECIAL), SPECIAL) == 0


def test_prefix_logits_start_at_the_last_text_position():
    model = tiny_model("prefix_transformer")
    hidden, mask = random_text(1, length=5)
    tokens = torch.randint(0, SPECIAL, (1, 1, 4))
    logits = model(tokens, hidden, mask)
    assert logits.shape[2] == 4  # audio positions only: no loss can land on text positions
    # The first logit comes from the text alone: it ignores every audio token.
    other = tokens.clone()
    other[:] = (tokens + 1) % SPECIAL
    assert torch.allclose(model(other, hidden, mask)[:, :, 0], logits[:, :, 0])


# ---------------------------------------------------------------------------------------------- caption dropout


def _uncond(length=5):
    hidden = torch.zeros(1, length, 12)
    hidden[0, 0] = torch.linspace(-1, 1, 12)
    mask = torch.zeros(1, length, dtype=torch.bool)
    mask[0, 0] = True
    return hidden, mask


@pytest.mark.parametrize("backbone", ["prefix_simba", "cross_transformer"])
def test_dropped_caption_gives_exactly_the_unconditional_output(backbone):
    model = tiny_model(backbone, p_drop_caption=0.5, p_drop_token=0.0)
    uh, um = _uncond()
    model.set_uncond(uh, um)
    hidden, mask = random_text(8)
    tokens = torch.randint(0, SPECIAL, (8, 1, 6), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cond_out = model(tokens, hidden, mask)  # eval: never drops
        uncond_out = model(tokens, uh.expand(8, -1, -1), um.expand(8, -1))
        model.train()
        _, _, dropped = model.condition(hidden, mask, torch.Generator().manual_seed(11))
        train_out = model(tokens, hidden, mask, torch.Generator().manual_seed(11))
    assert 0 < dropped.sum() < 8  # both kinds present with this seed
    assert torch.equal(train_out[dropped], uncond_out[dropped])
    assert torch.allclose(train_out[~dropped], cond_out[~dropped], atol=1e-6)
    assert not torch.allclose(train_out[dropped], cond_out[dropped])  # the text input really changed


def test_eval_mode_never_drops_and_training_requires_the_uncond_encoding():
    model = tiny_model("prefix_simba", p_drop_caption=1.0, p_drop_token=1.0)
    hidden, mask = random_text(2)
    text, new_mask, dropped = model.condition(hidden, mask)
    assert not dropped.any() and torch.equal(new_mask, mask)
    model.train()
    with pytest.raises(RuntimeError, match="set_uncond"):
        model.condition(hidden, mask)


def test_token_dropout_masks_only_real_tokens_of_kept_captions():
    model = tiny_model("prefix_simba", p_drop_caption=0.0, p_drop_token=0.5).train()
    model.set_uncond(*_uncond(length=8))
    hidden, mask = random_text(16, length=8)
    text, new_mask, dropped = model.condition(hidden, mask, torch.Generator().manual_seed(2))
    assert not dropped.any()
    assert not torch.any(new_mask & ~mask)  # padding never becomes a token
    assert 0 < (mask & ~new_mask).sum() < mask.sum()  # some real tokens masked, not all
    assert torch.all(text[~new_mask] == 0)  # masked positions reach the backbone as zeros


# ---------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model("cross_simba", n_codebooks=2)
    save_lm(model, model.cfg, tmp_path / "ckpt", text_cfg={"encoder": "minilm", "max_length": 6})
    loaded, cfg, text = load_lm(tmp_path / "ckpt")
    assert cfg == model.cfg and text == {"encoder": "minilm", "max_length": 6}
    hidden, mask = random_text(2)
    tokens = torch.randint(0, SPECIAL, (2, 2, 5))
    assert torch.equal(loaded(tokens, hidden, mask), model(tokens, hidden, mask))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_checkpoint_without_position_order_loads_with_the_order_it_was_trained_with(tmp_path):
    """config.json files written before lm.position_order existed were trained with [sin | cos] positions."""
    model = tiny_model("prefix_simba", position_order="sin_cos")
    folder = save_lm(model, model.cfg, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    del config["lm"]["position_order"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded, cfg, _ = load_lm(folder)
    assert cfg.position_order == "sin_cos"
    hidden, mask = random_text(1)
    tokens = torch.randint(0, SPECIAL, (1, 1, 6))
    assert torch.equal(loaded(tokens, hidden, mask), model(tokens, hidden, mask))


def test_model_needs_resolved_text_width():
    with pytest.raises(ValueError, match="d_text"):
        MusicLM(dataclasses.replace(tiny_cfg(), d_text=None))
