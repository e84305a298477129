import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ssmttm import cli
from ssmttm.generate import GenerateConfig, generate_tokens, sample_next
from ssmttm.models.lm import save_lm
from tests.models._lm_utils import SPECIAL, FakeTextEncoder, tiny_model

CAPTIONS = ["calm piano", "energetic rock with drums", "ambient pad"]


def _cfg(**kw):
    return GenerateConfig(**{"temperature": 1.2, "top_k": 8, "guidance_scale": 3.0, "batch_size": 2, **kw})


@pytest.mark.parametrize("backbone", ["prefix_simba", "cross_transformer"])
def test_seeded_generation_is_reproducible(backbone):
    model, enc = tiny_model(backbone, n_codebooks=2), FakeTextEncoder()
    a = generate_tokens(model, enc, CAPTIONS, 7, _cfg(), seed=5, progress=False)
    b = generate_tokens(model, enc, CAPTIONS, 7, _cfg(), seed=5, progress=False)
    c = generate_tokens(model, enc, CAPTIONS, 7, _cfg(), seed=6, progress=False)
    assert a.shape == (3, 2, 7) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < SPECIAL


@pytest.mark.parametrize(
    "backbone", ["prefix_simba", "prefix_mamba", "cross_simba", "cross_transformer", "prefix_transformer"]
)
def test_recurrent_generation_equals_rerunning_the_whole_sequence(backbone):
    model, enc = tiny_model(backbone, n_codebooks=2), FakeTextEncoder()
    fast = generate_tokens(model, enc, CAPTIONS[:2], 6, _cfg(), seed=9, progress=False)
    naive = generate_tokens(model, enc, CAPTIONS[:2], 6, _cfg(), seed=9, recurrent=False, progress=False)
    assert torch.equal(fast, naive)


def test_special_id_is_never_sampled_even_when_most_likely():
    model, enc = tiny_model("prefix_simba", n_codebooks=3), FakeTextEncoder()
    original = model.logits

    def special_first(h):  # the special id gets by far the highest logit everywhere
        out = original(h)
        out[..., SPECIAL] = out.max() + 100.0
        return out

    model.logits = special_first
    hidden, mask = enc.encode(["x"]).hidden, enc.encode(["x"]).mask
    assert model.start(hidden, mask, 1)[0].argmax(-1).eq(SPECIAL).all()  # the trap is armed
    for temperature in (0.0, 1.2):
        codes = generate_tokens(model, enc, CAPTIONS, 5, _cfg(temperature=temperature, top_k=0), 1, progress=False)
        assert not (codes == SPECIAL).any()


def test_guidance_runs_cond_and_uncond_in_one_batch():
    model, enc = tiny_model("prefix_simba"), FakeTextEncoder()
    sizes = []
    original = model.start

    def spy(hidden, mask, max_new, **options):
        sizes.append(hidden.shape[0])
        return original(hidden, mask, max_new, **options)

    model.start = spy
    generate_tokens(model, enc, CAPTIONS, 3, _cfg(batch_size=2), 0, progress=False)
    assert sizes == [4, 4]  # 2B rows per batch of B captions; the last batch (1 caption) is padded to B
    sizes.clear()
    generate_tokens(model, enc, CAPTIONS, 3, _cfg(batch_size=3, guidance_scale=1.0), 0, progress=False)
    assert sizes == [3]  # no guidance: no unconditional half


def test_guided_greedy_decoding_matches_separate_cond_and_uncond_passes():
    model, enc = tiny_model("cross_simba"), FakeTextEncoder()
    g, n = 2.5, 5
    codes = generate_tokens(model, enc, CAPTIONS[:2], n, _cfg(temperature=0.0, guidance_scale=g), 0, progress=False)
    cond, uncond = enc.encode(CAPTIONS[:2]), enc.uncond(2)
    seq = torch.full((2, 1, n + 1), SPECIAL)  # delayed layout, K=1: BOS then the frames
    for t in range(1, n + 1):
        lc = model(seq[:, :, : t + 1], cond.hidden, cond.mask)[:, :, t]
        lu = model(seq[:, :, : t + 1], uncond.hidden, uncond.mask)[:, :, t]
        guided = lu + g * (lc - lu)
        guided[..., SPECIAL] = float("-inf")
        seq[:, :, t] = guided.argmax(-1)
    assert torch.equal(codes, seq[:, :, 1:])


def test_top_k_is_respected():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 2, SPECIAL + 1, generator=g)
    logits[..., 3] = 10.0  # a strong favourite that is not in every top-k...
    allowed = torch.topk(logits[..., :SPECIAL], 4, dim=-1).indices
    draws = sample_next(logits, GenerateConfig(temperature=5.0, top_k=4), SPECIAL, g)
    assert (draws[..., None] == allowed).any(-1).all()
    assert len(draws.unique()) > 4  # ...and different rows keep different top sets
    greedy = sample_next(logits, GenerateConfig(temperature=1.0, top_k=1), SPECIAL, g)
    assert torch.equal(greedy, logits[..., :SPECIAL].argmax(-1))


def test_cli_writes_codes_with_the_real_minilm(tmp_path, repo_root, monkeypatch):
    from ssmttm.models.lm import MusicLM
    from tests.models._lm_utils import tiny_cfg

    torch.manual_seed(0)
    cfg = tiny_cfg("prefix_simba", d_text=384, n_codebooks=2, codebook_size=1024, special_id=1024)
    save_lm(
        MusicLM(cfg),
        cfg,
        tmp_path / "ckpt",
        text_cfg={"encoder": "minilm", "max_length": 8, "batch_size": 4, "device": "cpu"},
    )
    monkeypatch.chdir(tmp_path)
    params = str(repo_root / "params.yaml")
    base = [
        "generate",
        "--params",
        params,
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--frames",
        "4",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert cli.main([*base, "--captions", "soft piano", "loud drums", "--out", "codes.npz"]) == 0
    data = np.load(tmp_path / "codes.npz")
    assert data["codes"].shape == (2, 2, 4) and list(data["captions"]) == ["soft piano", "loud drums"]
    (tmp_path / "caps.txt").write_text("soft piano\nloud drums\n")
    assert cli.main([*base, "--captions-file", "caps.txt", "--out", "codes.parquet"]) == 0
    table = pq.read_table(tmp_path / "codes.parquet").to_pylist()
    assert [row["caption"] for row in table] == ["soft piano", "loud drums"]
    assert np.array_equal(np.array([row["codes"] for row in table]), data["codes"])  # same seed, same codes
    assert cli.main([*base, "--captions", "x", "--out", "codes.wav"]) == 1  # clear error, no traceback


def test_nine_codebooks_generate_through_the_delay_pattern():
    model, enc = tiny_model("prefix_simba", n_codebooks=9), FakeTextEncoder()
    codes = generate_tokens(model, enc, CAPTIONS[:2], 4, _cfg(), seed=2, progress=False)
    assert codes.shape == (2, 9, 4)
    assert not (codes == SPECIAL).any()
    naive = generate_tokens(model, enc, CAPTIONS[:2], 4, _cfg(), seed=2, recurrent=False, progress=False)
    assert torch.equal(codes, naive)


@pytest.mark.parametrize("backbone", ["prefix_simba", "cross_transformer"])
def test_a_captions_codes_depend_on_its_seed_not_on_its_batch(backbone):
    model, enc = tiny_model(backbone), FakeTextEncoder()
    cfg = _cfg(batch_size=3)
    together = generate_tokens(model, enc, CAPTIONS, 6, cfg, [11, 22, 33], progress=False)
    for i, (caption, seed) in enumerate(zip(CAPTIONS, [11, 22, 33], strict=True)):
        alone = generate_tokens(model, enc, [caption], 6, cfg, [seed], progress=False)
        assert torch.equal(alone[0], together[i])
    shuffled = generate_tokens(model, enc, CAPTIONS[::-1], 6, cfg, [33, 22, 11], progress=False)
    assert torch.equal(shuffled.flip(0), together)
    other_seed = generate_tokens(model, enc, CAPTIONS[:1], 6, cfg, [12], progress=False)
    assert not torch.equal(other_seed[0], together[0])


# ---------------------------------------------------------------------------------------------------- the sampler


@torch.no_grad()
def multinomial_generation(model, enc, captions, n_frames, cfg, seeds):
    """generate_tokens as it was before the Sampler (one batch): the full forward for every position, guidance, the
    special id masked, temperature, top-k, and torch.multinomial with each caption's generator."""
    from ssmttm.generate.tokens import caption_seed, encode_one_by_one
    from ssmttm.models.delay import delay_valid_mask, delayed_length, undo_delay

    K, n, guide = model.cfg.n_codebooks, len(captions), cfg.guidance_scale != 1.0
    text = encode_one_by_one(enc, captions)
    hidden, mask = text.hidden, text.mask
    if guide:
        uncond = enc.uncond(n)
        hidden, mask = torch.cat([hidden, uncond.hidden]), torch.cat([mask, uncond.mask])
    generators = [torch.Generator().manual_seed(caption_seed(seeds, str(i))) for i in range(n)]
    length = delayed_length(n_frames, K)
    valid = delay_valid_mask(n_frames, K)
    seq = torch.full((len(hidden), K, length), SPECIAL)
    for t in range(length):
        logits = model(seq[:, :, : t + 1], hidden, mask)[:, :, t].float()
        if guide:
            logits = logits[n:] + cfg.guidance_scale * (logits[:n] - logits[n:])
        logits = logits.clone()
        logits[..., SPECIAL] = float("-inf")
        if cfg.temperature <= 0:
            tokens = logits.argmax(-1)
        else:
            logits = logits / cfg.temperature
            if cfg.top_k:
                kth = torch.topk(logits, min(cfg.top_k, SPECIAL), dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, -1)
            tokens = torch.stack(
                [torch.multinomial(p, 1, generator=g)[:, 0] for p, g in zip(probs, generators, strict=True)]
            )
        tokens = torch.where(valid[:, t], tokens, SPECIAL)
        seq[:, :, t] = tokens.repeat(2, 1) if guide else tokens
    return undo_delay(seq[:n], SPECIAL)


@pytest.mark.parametrize(
    "settings",
    [{}, {"guidance_scale": 1.0}, {"top_k": 0}, {"temperature": 0.0}, {"temperature": 0.7, "guidance_scale": 1.5}],
)
@pytest.mark.parametrize("recurrent", [True, False])
def test_the_sampler_draws_what_torch_multinomial_draws(settings, recurrent):
    """The written-out exponential race takes the tokens torch.multinomial took for the same seeds, in the recurrent
    path (sampling inside the step) and the full-forward one."""
    model, enc = tiny_model("prefix_mamba", n_codebooks=3), FakeTextEncoder()
    cfg = _cfg(**settings)
    codes = generate_tokens(model, enc, CAPTIONS[:2], 9, cfg, seed=4, recurrent=recurrent, progress=False)
    assert torch.equal(codes, multinomial_generation(model, enc, CAPTIONS[:2], 9, cfg, 4))


@pytest.mark.parametrize("generator", ["one", "default", "per_row"])
def test_sample_next_draws_what_torch_multinomial_draws(generator):
    logits = torch.randn(3, 2, SPECIAL + 1, generator=torch.Generator().manual_seed(0)) * 2
    probs = torch.softmax(logits.index_fill(-1, torch.tensor(SPECIAL), float("-inf")) / 1.3, -1)
    if generator == "per_row":
        ours = sample_next(
            logits, _cfg(temperature=1.3, top_k=0), SPECIAL, [torch.Generator().manual_seed(i) for i in range(3)]
        )
        theirs = torch.stack(
            [torch.multinomial(p, 1, generator=torch.Generator().manual_seed(i))[:, 0] for i, p in enumerate(probs)]
        )
    else:
        mine, reference = (
            (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)) if generator == "one" else (None, None)
        )
        torch.manual_seed(8)
        ours = sample_next(logits, _cfg(temperature=1.3, top_k=0), SPECIAL, mine)
        torch.manual_seed(8)
        theirs = torch.multinomial(probs.flatten(0, 1), 1, generator=reference).view(3, 2)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("recurrent", [True, False])
def test_non_finite_logits_stop_generation_with_a_clear_error(recurrent):
    from ssmttm.errors import UserFacingError

    model, enc = tiny_model("prefix_simba", n_codebooks=2), FakeTextEncoder()
    with torch.no_grad():
        model.emb[0].weight[3] = float("nan")  # the logits turn NaN once token 3 has been sampled and fed back
    with pytest.raises(UserFacingError, match="NaN or infinite"):
        generate_tokens(model, enc, CAPTIONS, 12, _cfg(top_k=0), seed=1, recurrent=recurrent, progress=False)
    with pytest.raises(ValueError, match="not finite"):
        sample_next(torch.full((1, 1, SPECIAL + 1), float("nan")), _cfg(), SPECIAL, None)
