"""Decode modes (models.decoding): the same logits and sampled tokens as the recurrent path before issue 12.

The oracle is that path written out here: positions computed per step, every Mamba2 sublayer through
`Mamba2.step_reference` (ssd.ssd_step, out of place), the MLP through its forward, the heads as `model.logits`.
"""

import logging

import pytest
import torch

from ssmttm.models import decoding
from ssmttm.models.decoding import CompileBook, decode_step, flat_states, resolve_mode
from ssmttm.models.lm import sinusoidal_positions
from ssmttm.models.mamba2 import HAS_MAMBA_SSM_KERNELS
from tests.models._lm_utils import ALL_BACKBONES, SPECIAL, random_text, tiny_model

STEPS = 24


@pytest.fixture(autouse=True)
def fresh_compile_book(monkeypatch):
    """Each test starts with what a fresh process knows about compiling (no work counted, no failure seen)."""
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    book = CompileBook()
    monkeypatch.setattr(decoding, "BOOK", book)
    return book


def reference_step(model, tokens, cache):
    """MusicLM.step as it was: tokens (B, K) -> logits (B, K, V), advancing `cache`."""
    x = model.embed(tokens[:, :, None])[:, 0]
    order = model.cfg.position_order
    x = x + sinusoidal_positions(cache.position, 1, x.shape[-1], x.device, order)[0].to(x.dtype)
    for sub, state in zip(model.backbone.sublayers(), flat_states(cache), strict=True):
        if sub.kind == "mamba":
            y = sub.mixer.step_reference(sub.norm(x), state)
        elif sub.kind == "mlp":
            y = sub.mixer(sub.norm(x))
        else:
            y = sub.mixer.step(sub.norm(x), state)
        x = x + sub.drop(y)
    cache.position += 1
    return model.logits(x[:, None])[:, :, 0]


def sample(logits, generator):
    """Guided top-k sampling as generation does it: (2, K, V) cond + uncond rows -> tokens (2, K)."""
    guided = logits[1:] + 3.0 * (logits[:1] - logits[1:])
    guided[..., SPECIAL] = float("-inf")
    guided = guided / 1.2
    kth = torch.topk(guided, 8, dim=-1).values[..., -1:]
    probs = torch.softmax(guided.masked_fill(guided < kth, float("-inf")), dim=-1).flatten(0, -2)
    return torch.multinomial(probs, 1, generator=generator).view(1, -1).repeat(2, 1)


@torch.no_grad()
def decode(model, step, steps=STEPS, seed=7, decode_mode="eager", dtype=torch.float32):
    """Sampled tokens (steps, 2, K) and the logits of every step (steps, 2, K, V) on the CPU, `step` advancing the
    cache (sampling on the CPU, so that one seed draws the same on every device)."""
    device = next(model.parameters()).device
    hidden, mask = random_text(2)
    logits, cache = model.start(hidden.to(device, dtype), mask.to(device), max_new=steps, decode=decode_mode)
    generator = torch.Generator().manual_seed(seed)
    tokens, all_logits = [], [logits.cpu()]
    for _ in range(steps - 1):
        tokens.append(sample(all_logits[-1].float(), generator))
        all_logits.append(step(tokens[-1].to(device), cache).cpu())
    return torch.stack(tokens), torch.stack(all_logits)


@pytest.mark.parametrize("backbone", ALL_BACKBONES)
def test_step_matches_the_reference_path_and_samples_the_same_tokens(backbone):
    model = tiny_model(backbone, n_codebooks=2)
    tokens, logits = decode(model, model.step)
    ref_tokens, ref_logits = decode(model, lambda t, cache: reference_step(model, t, cache))
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokens, ref_tokens)
    assert len(set(tokens.flatten().tolist())) > 3  # sampling really varied


@pytest.mark.parametrize("backbone", ["prefix_mamba", "prefix_simba"])
def test_step_in_float64_agrees_with_the_reference_to_rounding(backbone):
    model = tiny_model(backbone, n_codebooks=2).double()
    _, logits = decode(model, model.step, dtype=torch.float64)
    _, ref_logits = decode(model, lambda t, cache: reference_step(model, t, cache), dtype=torch.float64)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["cos_sin", "sin_cos"])
def test_position_table_rows_equal_the_per_step_embeddings(order):
    model = tiny_model("prefix_mamba", position_order=order)
    hidden, mask = random_text(2)
    _, cache = model.start(hidden, mask, max_new=40)
    table = cache.extra["decoder"].positions
    assert table.shape == (cache.max_len, model.cfg.d_model)
    for t in (0, 5, cache.max_len - 1):
        assert torch.equal(table[t], sinusoidal_positions(t, 1, model.cfg.d_model, order=order)[0])
    # Mamba2 states allow stepping past max_len: the row is then computed, not looked up.
    past = cache.max_len + 3
    assert torch.equal(cache.extra["decoder"].position(model, past), sinusoidal_positions(past, 1, 32, order=order)[0])


def test_modes_resolve_per_backbone_and_device():
    cpu = torch.device("cpu")
    assert resolve_mode(tiny_model("prefix_mamba"), "auto", cpu) == "eager"
    assert resolve_mode(tiny_model("prefix_simba"), "compile", cpu) == "compile"
    with pytest.raises(ValueError, match="KV cache"):
        resolve_mode(tiny_model("cross_simba"), "compile", cpu)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_mode(tiny_model("prefix_mamba"), "cuda_graph", cpu)
    with pytest.raises(ValueError, match="valid"):
        resolve_mode(tiny_model("prefix_mamba"), "fast", cpu)


def auto_mode(model, rows, max_new):
    """The mode "auto" resolves to for a generation of `rows` x `max_new` positions (nothing is compiled by start)."""
    hidden, mask = random_text(rows)
    _, cache = model.start(hidden, mask, max_new=max_new)
    return cache.extra["decoder"].mode


def test_auto_on_cpu_compiles_once_the_work_of_the_process_pays_for_it(monkeypatch, fresh_compile_book):
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 100)
    model = tiny_model("prefix_simba")
    assert auto_mode(model, 2, 30) == "eager"  # 60 row-positions started
    assert auto_mode(model, 2, 30) == "compile"  # 120: the process has done enough with this key
    assert auto_mode(model, 1, 30) == "eager"  # another batch size is another compiled graph: counted apart
    # The key is the config's, not the model's: the next checkpoint of a run shares the count and the graph.
    assert auto_mode(tiny_model("prefix_simba", seed=3), 2, 10) == "compile"
    assert auto_mode(tiny_model("prefix_mamba"), 2, 200) == "compile"  # one generation long enough by itself
    assert auto_mode(tiny_model("prefix_transformer"), 2, 200) == "eager"  # a KV cache grows: never compiled
    # Compiled code that exists is used whatever the work (its cost is paid).
    fresh_compile_book.compiled.add(decoding.compile_key(model, model.start(*random_text(1), max_new=1)[1], 1))
    assert auto_mode(model, 1, 1) == "compile"
    assert fresh_compile_book.function is None  # deciding compiled nothing


def test_auto_stays_eager_in_portable_mode_and_without_a_compiler(monkeypatch, caplog, fresh_compile_book):
    from torch._inductor import cpp_builder

    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 0)
    model = tiny_model("prefix_simba")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # portable CPU mode: bytes must not depend on the host
    assert auto_mode(model, 2, 4) == "eager"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")

    def no_compiler():
        raise cpp_builder.exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with caplog.at_level(logging.INFO, logger="ssmttm.models.decoding"):
        assert auto_mode(model, 2, 4) == "eager"
        assert auto_mode(model, 2, 4) == "eager"
    assert [r.message for r in caplog.records].count(
        "decode 'auto': no C++ compiler for torch.compile (InvalidCxxCompiler); decoding eagerly"
    ) == 1
    assert resolve_mode(model, "compile", torch.device("cpu")) == "compile"  # asked for explicitly: it is tried


def test_recompile_limit_decodes_eagerly_with_a_warning(monkeypatch, caplog, fresh_compile_book):
    # Past Dynamo's recompile limit a fullgraph compile raises (it does not run something else silently): the model
    # then decodes eagerly, and "auto" stops compiling in this process. A limit of 0 fails before tracing anything.
    monkeypatch.setattr(decoding, "RECOMPILE_LIMIT", 0)
    model = tiny_model("prefix_simba", d_model=24)
    with caplog.at_level(logging.WARNING, logger="ssmttm.models.decoding"):
        tokens, logits = decode(model, model.step, steps=4, decode_mode="compile")
    assert "FailOnRecompileLimitHit" in model.__dict__["_compiled_step"].failed and "decoding eagerly" in caplog.text
    ref_tokens, ref_logits = decode(model, model.step, steps=4, decode_mode="eager")
    assert torch.equal(tokens, ref_tokens) and torch.equal(logits, ref_logits)
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 0)
    assert fresh_compile_book.unavailable and auto_mode(model, 2, 4) == "eager"


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("C++ compiler not found")

        return run

    monkeypatch.setattr(decoding.torch, "compile", broken_compile)
    model = tiny_model("prefix_simba")
    with caplog.at_level(logging.WARNING, logger="ssmttm.models.decoding"):
        tokens, logits = decode(model, model.step, steps=6, decode_mode="compile")
    assert "decoding eagerly" in caplog.text and "C++ compiler not found" in caplog.text
    assert model.__dict__["_compiled_step"].failed.startswith("RuntimeError")
    ref_tokens, ref_logits = decode(model, model.step, steps=6)
    assert torch.equal(tokens, ref_tokens) and torch.equal(logits, ref_logits)
    # Compiled code and graphs are built for one (B, K): another shape is refused, not silently broadcast.
    hidden, mask = random_text(2)
    _, cache = model.start(hidden, mask, max_new=3, decode="compile")
    with pytest.raises(ValueError, match="started with"):
        model.step(torch.zeros(1, 1, dtype=torch.long), cache)


def test_decode_step_is_the_eager_mode():
    model = tiny_model("prefix_simba", n_codebooks=2)
    hidden, mask = random_text(2)
    with torch.no_grad():
        _, cache_a = model.start(hidden, mask, max_new=4)
        _, cache_b = model.start(hidden, mask, max_new=4)
        tokens = torch.tensor([[3, 4], [3, 4]])
        position = cache_a.extra["decoder"].positions[cache_a.position]
        direct = decode_step(model, tokens, position, flat_states(cache_a))
        assert torch.equal(model.step(tokens, cache_b), direct)
    assert cache_b.position == cache_a.position + 1  # the Decoder advances the position, decode_step does not


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["prefix_mamba", "prefix_simba"])
def test_compiled_step_matches_eager(backbone):
    # Inductor builds C++ here: tens of seconds on a small machine, hence slow.
    model = tiny_model(backbone, n_codebooks=2)
    tokens, logits = decode(model, model.step, decode_mode="compile")
    assert model.__dict__["_compiled_step"].failed is None
    eager_tokens, eager_logits = decode(model, model.step)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokens, eager_tokens)
    again, _ = decode(model, model.step, decode_mode="compile")  # warm key: guards skipped
    assert torch.equal(again, tokens)


@pytest.mark.slow
def test_sampling_compiled_into_the_step_draws_the_eager_tokens_and_flags_nan(monkeypatch, fresh_compile_book):
    # generate_tokens hands its Sampler to `start` as `finish`: compiled, the step returns the sampled tokens.
    from ssmttm.errors import UserFacingError
    from ssmttm.generate import GenerateConfig, generate_tokens
    from ssmttm.generate.tokens import Sampler
    from tests.models._lm_utils import FakeTextEncoder

    model, enc = tiny_model("prefix_mamba", n_codebooks=2), FakeTextEncoder()
    cfg = GenerateConfig(temperature=1.2, top_k=8, guidance_scale=3.0, batch_size=2)
    captions = ["calm piano", "loud drums"]
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 10**15)
    eager = generate_tokens(model, enc, captions, 30, cfg, seed=3, progress=False)
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 0)
    compiled = generate_tokens(model, enc, captions, 30, cfg, seed=3, progress=False)
    assert len(fresh_compile_book.compiled) == 1 and fresh_compile_book.unavailable is None
    assert torch.equal(compiled, eager)
    # The compiled code is recorded under the generation's compile key: "auto" uses it whatever the work from now on.
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 10**15)
    assert torch.equal(generate_tokens(model, enc, captions, 30, cfg, seed=3, progress=False), eager)
    assert {key[0] for key in fresh_compile_book.compiled} == {Sampler(2, 3.0, 1.2, 8, SPECIAL)}  # key[0]: finish
    assert all(key in fresh_compile_book.compiled for key in fresh_compile_book.row_steps)
    with torch.no_grad():
        model.emb[0].weight[eager[0, 0, 5]] = float("nan")  # a token sampled mid-way poisons the later steps
    with pytest.raises(UserFacingError, match="NaN or infinite"):
        generate_tokens(model, enc, captions, 30, cfg, seed=3, progress=False)
    assert len(fresh_compile_book.compiled) == 1  # the same compiled code ran (warm key: guards skipped)


@pytest.mark.slow
def test_a_warm_compiled_step_is_not_run_for_finish_inputs_of_another_layout():
    # Guards are skipped on warm calls; a finish input with other strides than the compiled step was built for must
    # take the guarded path (here: a recompile). Before, the second generation stopped with Dynamo's "Recompilation
    # triggered with skip_guard_eval_unsafe stance" (a generation of another length, with several codebooks).
    from ssmttm.generate.tokens import Sampler

    model = tiny_model("prefix_mamba", n_codebooks=3)
    sampler = Sampler(2, 1.0, 0.0, 0, SPECIAL)  # greedy, no guidance: the valid column decides alone
    hidden, mask = random_text(2)
    narrow = torch.ones(3, 4, dtype=torch.bool)[:, 0]  # stride 4
    table = torch.zeros(3, 50, dtype=torch.bool)
    table[:, 7] = True
    wide = table[:, 7]  # stride 50, and at stride 4 from the same start the values would be (True, False, False)

    @torch.no_grad()
    def run(mode, valid):
        logits, cache = model.start(hidden, mask, max_new=6, decode=mode, finish=sampler)
        nonfinite = torch.zeros((), dtype=torch.bool)
        tokens, out = sampler(logits, None, valid, nonfinite), []
        for _ in range(5):
            tokens = model.step(tokens, cache, None, valid, nonfinite)
            out.append(tokens)
        return torch.stack(out)

    for valid in (narrow, wide):
        compiled = run("compile", valid)
        assert model.__dict__["_compiled_step"].failed is None
        assert torch.equal(compiled, run("eager", valid)) and not (compiled == SPECIAL).any()


@pytest.mark.slow
def test_auto_through_the_generate_stage_samples_as_eager_with_one_graph_for_every_checkpoint(
    tmp_path, monkeypatch, fresh_compile_book
):
    # The generate stage's own path (one model loaded per kept checkpoint, generate_tokens, WAVs), "auto" made to
    # compile from the first generation: the clips are those of eager decoding, and the checkpoints after the first
    # reuse the first one's compiled graph (parameters are graph inputs) instead of recompiling.
    import ssmttm.models.lm as lm_module
    from ssmttm.artifacts import sha256_file
    from ssmttm.generate.stage import generate_run
    from tests.generate._fixtures import fake_encoder_factory, gen_cfg, make_inputs, text_section

    inputs = make_inputs(tmp_path / "in")
    cfg = gen_cfg(variants=["codebook1_only"], seconds=0.04)  # 80 frames, 2 batches of 2 captions (4 rows)

    def run(out):
        generate_run(
            cfg,
            inputs.lm_run,
            inputs.codec,
            out,
            1234,
            shards_dir=inputs.shards,
            text_section=text_section(False),
            encoder_factory=fake_encoder_factory,
            progress=False,
        )
        return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*.wav"))}

    started = []  # (model number, mode) of every generation; no reference kept: each model is freed as in a run

    def spy(model, *args):
        decoder = make_decoder(model, *args)
        started.append((model.__dict__.setdefault("_test_number", len({n for n, _ in started})), decoder.mode))
        return decoder

    make_decoder = lm_module.make_decoder
    monkeypatch.setattr(lm_module, "make_decoder", spy)
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 10**15)
    eager = run(tmp_path / "eager")
    assert {mode for _, mode in started} == {"eager"}
    started.clear()
    monkeypatch.setattr(decoding, "COMPILE_PAYS_AFTER_ROW_STEPS", 0)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert run(tmp_path / "auto") == eager and len(eager) >= 6
    assert {mode for _, mode in started} == {"compile"}
    assert len({number for number, _ in started}) >= 2  # one model per kept checkpoint
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs <= 1  # 0 if an earlier test built it
    assert fresh_compile_book.unavailable is None and len(fresh_compile_book.compiled) == 1


# ----------------------------------------------------------------------------------------------- CUDA


needs_kernels = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_MAMBA_SSM_KERNELS), reason="needs CUDA and mamba_ssm"
)


def _cuda_model(backbone):
    # Sizes the Triton/causal_conv1d kernels accept: conv_dim 160 (a multiple of 8), headdim 16, d_state 16.
    return tiny_model(backbone, d_model=64, headdim=16, d_state=16, n_codebooks=2).cuda()


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("backbone", ["prefix_mamba", "prefix_simba"])
def test_cuda_graph_decoding_matches_eager_kernels_and_the_cpu_reference(backbone):
    model = _cuda_model(backbone)
    graph_tokens, graph_logits = decode(model, model.step, decode_mode="cuda_graph")
    eager_tokens, eager_logits = decode(model, model.step, decode_mode="eager")
    torch.testing.assert_close(graph_logits, eager_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(graph_tokens, eager_tokens)
    assert resolve_mode(model, "auto", torch.device("cuda")) == "cuda_graph"
    cpu = model.cpu()
    _, ref_logits = decode(cpu, lambda t, cache: reference_step(cpu, t, cache))
    # The kernels compute in another order (and Triton's dot in TF32): close, not equal.
    torch.testing.assert_close(graph_logits, ref_logits, rtol=2e-3, atol=2e-3)


@pytest.mark.gpu
@needs_kernels
def test_one_cuda_graph_per_batch_size_and_one_generation_at_a_time():
    model = _cuda_model("prefix_mamba")
    hidden, mask = random_text(2)
    hidden, mask = hidden.cuda(), mask.cuda()
    _, cache_a = model.start(hidden, mask, max_new=4, decode="cuda_graph")
    _, cache_one = model.start(hidden[:1], mask[:1], max_new=4, decode="cuda_graph")
    graphs = model.__dict__["_cuda_graph_steps"].graphs
    assert len(graphs) == 2  # batch sizes 2 and 1
    tokens = torch.zeros(2, 2, dtype=torch.long, device="cuda")
    model.step(tokens, cache_a)
    model.step(tokens[:1], cache_one)
    _, cache_b = model.start(hidden, mask, max_new=4, decode="cuda_graph")  # takes batch size 2's buffers over
    assert len(graphs) == 2
    model.step(tokens, cache_b)
    with pytest.raises(RuntimeError, match="taken over"):
        model.step(tokens, cache_a)


@pytest.mark.gpu
@needs_kernels
def test_generation_on_cuda_samples_with_graphs_what_it_samples_eagerly(monkeypatch):
    # generate_tokens on CUDA: "auto" replays CUDA graphs and applies the Sampler (generate.tokens) after each replay;
    # forced eager, the same draws from the same CUDA generators must pick the same tokens.
    import ssmttm.models.lm as lm_module
    from ssmttm.generate import GenerateConfig, generate_tokens
    from tests.models._lm_utils import FakeTextEncoder

    model, enc = _cuda_model("prefix_mamba"), FakeTextEncoder()
    cfg = GenerateConfig(temperature=1.2, top_k=8, guidance_scale=3.0, batch_size=2)
    captions = ["calm piano", "loud drums", "ambient pad"]
    modes = []
    make_decoder = lm_module.make_decoder

    def spy(model, cache, mode, *args):
        decoder = make_decoder(model, cache, forced or mode, *args)
        modes.append(decoder.mode)
        return decoder

    monkeypatch.setattr(lm_module, "make_decoder", spy)
    forced = None
    graphs = generate_tokens(model, enc, captions, 30, cfg, seed=3, progress=False)
    forced = "eager"
    eager = generate_tokens(model, enc, captions, 30, cfg, seed=3, progress=False)
    assert modes == ["cuda_graph"] * 2 + ["eager"] * 2  # two batches each
    assert torch.equal(graphs, eager) and graphs.shape == (3, 2, 30)
