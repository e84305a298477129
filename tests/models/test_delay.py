import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmttm.models.delay import apply_delay, delay_valid_mask, delayed_length, undo_delay

SPECIAL = 1024


def test_layout_matches_the_musicgen_pattern():
    codes = torch.arange(12).view(1, 3, 4)  # (B=1, K=3, T=4)
    delayed = apply_delay(codes, SPECIAL)
    S = SPECIAL
    expected = torch.tensor([[[S, 0, 1, 2, 3, S, S], [S, S, 4, 5, 6, 7, S], [S, S, S, 8, 9, 10, 11]]])
    assert torch.equal(delayed, expected)
    assert delayed.shape[-1] == delayed_length(4, 3)


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 3), k=st.integers(1, 9), t=st.integers(0, 20), seed=st.integers(0, 2**31 - 1))
def test_round_trip_is_exact(b, k, t, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, SPECIAL + 1, (b, k, t), generator=g)  # special ids inside (padding) survive too
    delayed = apply_delay(codes, SPECIAL)
    assert delayed.shape == (b, k, t + k)
    assert torch.equal(undo_delay(delayed, SPECIAL), codes)
    # Gaps hold the special id, exactly where the valid mask says there is no code.
    valid = delay_valid_mask(t, k)
    assert torch.all(delayed[:, ~valid] == SPECIAL)
    # Read column by column, the delayed codes of frame f sit at position f + k + 1 of codebook k.
    for f in range(t):
        assert torch.equal(delayed[:, torch.arange(k), torch.arange(k) + 1 + f], codes[:, :, f])


def test_valid_mask_positions():
    valid = delay_valid_mask(4, 3)
    real = apply_delay(torch.zeros(1, 3, 4, dtype=torch.long), SPECIAL)[0] != SPECIAL
    assert torch.equal(valid, real)


def test_unbatched_and_bad_shapes():
    codes = torch.randint(0, 1024, (2, 5))
    assert torch.equal(undo_delay(apply_delay(codes, SPECIAL), SPECIAL), codes)
    with pytest.raises(ValueError, match="shape"):
        apply_delay(torch.zeros(5, dtype=torch.long), SPECIAL)
    with pytest.raises(ValueError, match="shorter"):
        undo_delay(torch.zeros(1, 4, 2, dtype=torch.long), SPECIAL)
