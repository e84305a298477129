"""bench/bench_vs_transformers.py times the generate stage's own token loop (issue "The house"): what it samples for
one caption equals what `generate_tokens`, the stage's entry, samples for the same text, seed and settings."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from ssmttm.generate.tokens import generate_tokens
from ssmttm.models.lm import MusicLM
from ssmttm.text.encoder import TextEncoding


@pytest.fixture(scope="module")
def bench(repo_root):
    sys.path.insert(0, str(repo_root / "bench"))  # the bench imports its sibling bench_generation
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_vs_transformers", repo_root / "bench" / "bench_vs_transformers.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(repo_root / "bench"))
        sys.modules.pop("bench_vs_transformers", None)


class _FixedText:
    """A text encoder that returns given features: the bench's random text, as the stage's loop receives it."""

    def __init__(self, cond: TextEncoding, uncond: TextEncoding):
        self.cond, self.uncond_rows = cond, uncond

    def encode(self, captions):
        return self.cond

    def uncond(self, batch_size):
        return self.uncond_rows


def test_the_bench_samples_what_the_stage_samples(bench):
    shape = bench.Shape("tiny", d_model=32, layers=2, d_state=8, headdim=8, chunk_size=8)
    torch.manual_seed(0)
    model = MusicLM(shape.ours()).eval()
    hidden = torch.randn(2, bench.PREFIX, bench.D_TEXT)
    mask = torch.ones(2, bench.PREFIX, dtype=torch.bool)
    timed = bench.generate_ours(model, (hidden, mask), 12, "eager")  # (K, n)

    encoder = _FixedText(TextEncoding(hidden[:1], mask[:1]), TextEncoding(hidden[1:], mask[1:]))
    # the bench seeds its one generator with 0; generate_tokens takes the caption's seed as given
    staged = generate_tokens(model, encoder, ["a caption"], 12, bench.SAMPLING, [0], progress=False)[0]
    assert timed.shape == (1, 12)
    assert torch.equal(timed, staged)
