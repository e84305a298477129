import pytest
import torch

from ssmttm.errors import MissingWeightsError
from ssmttm.text.encoder import TextConfig, TextEncoder, TextProjection, caption_dropout, resolve_encoder

MAX_LEN = 16


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder(TextConfig(encoder="minilm", max_length=MAX_LEN, batch_size=8, device="cpu"))


def test_minilm_loads_offline_and_is_frozen(minilm):
    assert minilm.hidden_size == 384
    assert all(not p.requires_grad for p in minilm.model.parameters())
    assert not minilm.model.training
    enc = minilm.encode(["calm piano with soft strings", "fast drums"])
    assert enc.hidden.shape == (2, MAX_LEN, 384) and enc.mask.shape == (2, MAX_LEN)
    assert enc.mask.dtype == torch.bool
    lengths = enc.mask.sum(-1).tolist()
    assert lengths[0] > lengths[1] >= 3  # [CLS] fast drums [SEP]
    assert torch.all(enc.hidden[~enc.mask] == 0)  # padding zeroed
    assert not enc.hidden.requires_grad


def test_padding_does_not_depend_on_the_batch(minilm):
    caption = "an upbeat acoustic guitar tune"
    alone = minilm.encode([caption])
    mixed = minilm.encode(["a much longer caption about a slow ambient synthesizer pad with reverb", caption, ""])
    assert mixed.hidden.shape[1] == alone.hidden.shape[1] == MAX_LEN  # always max_length, never the longest
    assert torch.equal(mixed.mask[1], alone.mask[0])
    assert torch.allclose(mixed.hidden[1], alone.hidden[0], atol=1e-5)
    long = minilm.encode(["word " * 100])
    assert long.mask.sum() == MAX_LEN  # truncated, not grown


def test_uncond_is_the_empty_prompt(minilm):
    uncond = minilm.uncond(3)
    assert uncond.hidden.shape == (3, MAX_LEN, 384)
    assert uncond.mask[0].sum() == 2  # [CLS] [SEP]
    assert torch.equal(uncond.hidden[0], minilm.encode([""]).hidden[0])


def test_missing_local_folder_names_path_and_command(tmp_path):
    with pytest.raises(MissingWeightsError, match="`hf download google/flan-t5-base --local-dir ") as info:
        resolve_encoder(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(info.value)


def test_missing_hub_model_names_the_download_command():
    with pytest.raises(MissingWeightsError) as info:
        TextEncoder(TextConfig(encoder="ssmttm-test/not-a-real-model", device="cpu"))
    assert "`hf download ssmttm-test/not-a-real-model`" in str(info.value)


def test_caption_dropout_replaces_whole_captions_and_masks_tokens():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 6, 4, generator=g)
    mask = torch.ones(64, 6, dtype=torch.bool)
    mask[:, 4:] = False
    u_hidden, u_mask = torch.full((1, 6, 4), 0.5), torch.tensor([[True, False, False, False, False, False]])
    new_h, new_m, dropped = caption_dropout(hidden, mask, u_hidden, u_mask, 0.3, 0.25, g)
    assert 5 < dropped.sum() < 40
    assert torch.all(new_h[dropped] == 0.5) and torch.all(new_m[dropped] == u_mask)
    kept = ~dropped
    assert torch.equal(new_h[kept], hidden[kept])
    assert not torch.any(new_m[kept] & ~mask[kept])
    assert 0 < (mask[kept] & ~new_m[kept]).sum() < mask[kept].sum()
    same_h, same_m, none = caption_dropout(hidden, mask, u_hidden, u_mask, 0.0, 0.0, g)
    assert not none.any() and torch.equal(same_h, hidden) and torch.equal(same_m, mask)


def test_projection_zeroes_masked_positions():
    proj = TextProjection(4, 8)
    out = proj(torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool))
    assert out.shape == (2, 3, 8)
    assert torch.all(out[0, 2] == 0) and torch.all(out[1, 1:] == 0) and torch.all(out[0, :2] != 0)
