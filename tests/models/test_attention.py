import pytest
import torch

from ssmttm.models.attention import MLP, AttentionConfig, CrossAttention, RMSNorm, SelfAttention

CFG = AttentionConfig(d_model=16, n_heads=4, mlp_hidden=32)


def test_rmsnorm_normalises_last_dim():
    x = torch.randn(3, 5, 16) * 7
    y = RMSNorm(16)(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4)


def test_self_attention_prefill_then_steps_equals_full_forward():
    torch.manual_seed(0)
    attn = SelfAttention(CFG)
    x = torch.randn(2, 9, 16)
    full = attn(x)
    cache = attn.allocate(2, 9)
    out = [attn.prefill(x[:, :4], cache)]
    out += [attn.step(x[:, t], cache)[:, None] for t in range(4, 9)]
    assert torch.allclose(torch.cat(out, dim=1), full, atol=1e-5)
    assert cache.length == 9
    with pytest.raises(ValueError, match="cannot grow"):
        attn.step(x[:, 0], cache)


def test_self_attention_is_causal():
    torch.manual_seed(0)
    attn = SelfAttention(CFG)
    x = torch.randn(1, 8, 16, requires_grad=True)
    attn(x)[0, 3].sum().backward()
    assert torch.all(x.grad[0, 4:] == 0)
    assert torch.all(x.grad[0, :4].abs().sum(-1) > 0)


def test_cross_attention_ignores_masked_text_and_survives_empty_rows():
    torch.manual_seed(0)
    cross = CrossAttention(CFG)
    x = torch.randn(2, 3, 16)
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = cross(x, text, mask)
    changed = text.clone()
    changed[0, 3:] = 100.0  # masked positions
    assert torch.allclose(cross(x, changed, mask), out, atol=1e-6)
    assert torch.all(out[1] == 0)  # nothing to attend to: zero, not NaN
    assert torch.isfinite(out).all()
    unmasked = cross(x, changed, torch.ones(2, 5, dtype=torch.bool))
    assert not torch.allclose(unmasked[0], out[0])


def test_cross_attention_step_uses_text_kv_from_prefill():
    torch.manual_seed(0)
    cross = CrossAttention(CFG)
    x, text = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    full = cross(x, text, mask)
    state = cross.allocate(2, 4)
    first = cross.prefill(x[:, :1], state, text=text, text_mask=mask)
    steps = [cross.step(x[:, t], state) for t in range(1, 4)]
    assert torch.allclose(torch.cat([first, torch.stack(steps, 1)], 1), full, atol=1e-5)


def test_mlp_step_equals_forward():
    # The step computes its projections as weight @ x^T (models.few_rows): equal up to the summation order.
    mlp = MLP(CFG).eval()
    x = torch.randn(3, 16)
    torch.testing.assert_close(mlp.step(x, None), mlp(x), rtol=1e-6, atol=1e-6)
    mlp64, x64 = MLP(CFG).double().eval(), x.double()
    torch.testing.assert_close(mlp64.step(x64, None), mlp64(x64), rtol=1e-14, atol=1e-14)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(AttentionConfig(d_model=10, n_heads=4))
    MLP(AttentionConfig(d_model=10, n_heads=4))  # heads do not matter outside attention
