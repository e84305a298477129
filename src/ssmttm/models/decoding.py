"""How MusicLM.step runs one recurrent position: eagerly, compiled, or replayed from a CUDA graph.

All three run the same function, `decode_step`: embed the previous tokens, add the position's embedding, advance
every sublayer's state in place (Mamba2.step, MLP, attention) and apply the heads. They differ only in how the
operations are dispatched, which is what a decode step of a small model spends its time on:

- "eager": one PyTorch call per operation (Mamba2.step is already the in-place form with about half the calls of
  the reference formulation). Every backbone, every device.
- "compile": torch.compile of decode_step (Inductor; on CPU it generates and builds C++ with the machine's compiler,
  offline), which fuses the pointwise chains between the matmuls. One compiled function serves every model: the
  parameters are inputs of the graph (Dynamo inlines nn.Modules), so it is compiled once per process for each
  compile key (model shapes, batch size, codebooks, dtype; `compile_key`), and another model of the same config (the
  next checkpoint of a run) reuses it without recompiling. The first call for a key pays the compilation (seconds to
  tens of seconds on a small CPU, less with Inductor's disk cache warm). If compiling fails, or Dynamo's recompile
  limit (RECOMPILE_LIMIT keys) is reached, the model falls back to eager with a warning.
- "cuda_graph": on CUDA, one graph per batch size is captured around decode_step (which then calls mamba_ssm's
  kernels) and replayed each step, as mamba_ssm's own decoding does. The graph reads and writes fixed buffers, so
  the cache handed out by `start` points at them: one generation per batch size at a time.

"auto" (the default of MusicLM.start): for a backbone whose states keep their shape (Mamba2 and MLP sublayers:
prefix_mamba, prefix_simba), cuda_graph on CUDA with mamba_ssm's kernels; on CPU, compile once it pays for itself
(`make_decoder`: this process has started COMPILE_PAYS_AFTER_ROW_STEPS rows x positions of generation with one
compile key, or already holds compiled code for it; and a C++ compiler is found), else eager. Attention backbones
(a KV cache grows every step) always decode eagerly, and so does everything in portable CPU mode (Inductor builds
for the host's instruction set). Every mode samples the same tokens for a seed as eager decoding (tested in
tests/models/test_decoding.py): the compiled logits differ from eager ones by float rounding only (up to about 1e-5:
Inductor sums the few-row products in another order).

A generation may hand `start` a `finish` function (generate.tokens.Sampler): every step then returns
finish(logits, *inputs), the next tokens, and "compile" compiles the sampling into the same graph as the step (its
random numbers are drawn beforehand and passed in), saving the dispatch of a dozen small operations per position.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ssmttm.determinism import portable_active
from ssmttm.models.blocks import BackboneCache
from ssmttm.models.few_rows import linear_few_rows

log = logging.getLogger(__name__)

# A models.lm.MusicLM: lm.py builds its decoder from this module, so this module names the type without importing
# lm (no import cycle, lazy or typing-only).
LanguageModel = torch.nn.Module

DECODE_MODES = ("auto", "eager", "compile", "cuda_graph")
Finish = Callable[..., torch.Tensor]  # (logits (B, K, V), *inputs) -> tensor; hashable (part of the compile key)
STATIC_STATE_KINDS = frozenset({"mamba", "mlp"})  # sublayers whose decode state never changes shape

# "auto" on CPU compiles once a process has started this many rows x positions of generation with one compile key.
# Measured on this project's 2-core AMD EPYC under load, 1 thread, torch 2.13 (scratch runs, eager vs compile in one
# process): compiling costs 27-47 s for the first key of a process (Inductor's start-up included) and 12-18 s for
# each further key with Inductor's disk cache cold, 4 s and 1 s with it warm. The compiled step saves, per position:
# demo prefix_simba (d_model 128, 4 blocks) 2.6 -> 0.9 ms at 2 rows, 5.7 -> 3.2 ms at 8, 7.7 -> 4.2 ms at 16,
# 15.0 -> 7.6 ms at 32, i.e. 0.23-0.30 ms per row-position from 8 rows up (0.8 ms at 2 rows); the issue-12 shape
# (prefix_mamba, d_model 256, 2 blocks, 2 rows) 2.1 -> 1.1 ms. A cold compile (~40 s) is repaid after
# 40 s / 0.27 ms = ~150,000 row-positions. The demo's generate (2 checkpoints x 2 batches x 8 rows x 259 positions:
# 8,300) stays eager; a CPU run of some 20x that switches. Counting the work a process has started, rather than
# deciding per generation, lets a run made of many short generations switch too, once its eager overhead has cost
# about what the compile does (so at most twice the overhead of the best choice).
COMPILE_PAYS_AFTER_ROW_STEPS = 150_000
# Compile keys the one compiled decode_step may hold (Dynamo's recompile_limit for it; its default is 8). A generate
# process needs one per (config, batch size); past the limit a model decodes eagerly with a warning.
RECOMPILE_LIMIT = 32


def decode_step(
    model: LanguageModel,
    tokens: torch.Tensor,
    position: torch.Tensor,
    states: list[Any],
    finish: Finish | None = None,
    finish_inputs: tuple = (),
) -> torch.Tensor:
    """tokens (B, K) just chosen, position embedding (D,) -> logits of the next position (B, K, V), or
    finish(logits, *finish_inputs) (the generation's sampler; see MusicLM.start).

    `states` holds one entry per sublayer, in order (the flattened BackboneCache.states), advanced in place.
    """
    x = model.embed(tokens[:, :, None])[:, 0] + position  # (B, D)
    for sub, state in zip(model.backbone.sublayers(), states, strict=True):
        x = sub.step(x, state)
    logits = torch.stack([linear_few_rows(head, x) for head in model.heads], dim=1)  # (B, K, V)
    return logits if finish is None else finish(logits, *finish_inputs)


def has_static_states(model: LanguageModel) -> bool:
    return all(sub.kind in STATIC_STATE_KINDS for sub in model.backbone.sublayers())


def resolve_mode(model: LanguageModel, mode: str, device: torch.device, row_steps: float = 0) -> str:
    """The mode `mode` means for this model and device ("auto" resolved; a mode that cannot run is an error).

    `row_steps`: the rows x positions a compiled step would serve (for "auto" on CPU; see `make_decoder`)."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode {mode!r}; valid: {', '.join(DECODE_MODES)}")
    static = has_static_states(model)
    if mode == "auto":
        from ssmttm.models.mamba2 import HAS_MAMBA_SSM_KERNELS

        if static and device.type == "cuda" and HAS_MAMBA_SSM_KERNELS:
            return "cuda_graph"
        if static and device.type == "cpu" and row_steps >= COMPILE_PAYS_AFTER_ROW_STEPS and compile_available():
            return "compile"
        return "eager"
    if mode != "eager" and not static:
        raise ValueError(
            f"decode mode {mode!r} needs Mamba2/MLP sublayers only; backbone {model.backbone.name!r} has a KV cache "
            "that grows every step: use 'eager'"
        )
    if mode == "cuda_graph" and device.type != "cuda":
        raise ValueError(f"decode mode 'cuda_graph' needs a CUDA model, this one is on {device}")
    return mode


def flat_states(cache: BackboneCache) -> list[Any]:
    return [state for block_states in cache.states for state in block_states]


# ---------------------------------------------------------------------------------------------------- compiled


@dataclass
class CompileBook:
    """What this process knows about compiling the decode step, shared by every model (`BOOK`)."""

    function: Callable | None = None  # torch.compile(decode_step), created on first use: one for every model
    row_steps: Counter = field(default_factory=Counter)  # compile key -> rows x positions "auto" generations started
    compiled: set = field(default_factory=set)  # compile keys with compiled code in this process
    unavailable: str | None = None  # why "auto" no longer compiles in this process (no C++ compiler, a failure)
    compiler_checked: bool = False

    def compiled_step(self) -> Callable:
        if self.function is None:
            # fullgraph: a graph break is a compile-time error, raised before anything runs (no half-advanced state).
            self.function = torch.compile(
                decode_step,
                fullgraph=True,
                dynamic=False,
                options={"cpp_wrapper": True},
                recompile_limit=RECOMPILE_LIMIT,
            )
        return self.function


BOOK = CompileBook()


def compile_available() -> bool:
    """Whether "auto" may compile here: not in portable CPU mode, no failure yet, a C++ compiler Inductor can use
    (looked up once; without one, one log line and eager decoding). Inductor needs no network: it builds with the
    local compiler (it downloads one only if TORCH_INDUCTOR_INSTALL_GXX is set)."""
    if portable_active():
        return False  # portable mode pins ATen's kernels; Inductor's code is built for the host (-march=native)
    if BOOK.unavailable is None and not BOOK.compiler_checked:
        BOOK.compiler_checked = True
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()  # the compiler Inductor would use (CXX, else g++), run once with --version
        except Exception as exc:  # InvalidCxxCompiler, or an Inductor that cannot load
            BOOK.unavailable = f"no C++ compiler for torch.compile ({type(exc).__name__})"
            log.info("decode 'auto': %s; decoding eagerly", BOOK.unavailable)
    return BOOK.unavailable is None


@dataclass
class CompiledStep:
    """The compiled decode_step as one model uses it; a failure to compile switches the model to eager for good.

    Inductor's C++ wrapper (cpp_wrapper) calls the generated kernels from C++ instead of Python. Guards, Dynamo's
    per-call checks that the inputs still match the compiled code (a third of a small model's step), are evaluated
    on this model's first call for each `key` only: the key (fixed by `make_decoder` for a generation) holds everything
    the compiled code depends on that can vary between generations (batch size and codebooks, dtypes, device, the
    parameters' layout, train/eval, kernel flags, the `finish` and its constants), and the layout of the finish's
    inputs is checked on every call (a few microseconds; an input with new strides needs the guarded call, which
    recompiles, where the unguarded one stops with an error), so later calls with the same key and layout skip
    them. The full check on a model's first call also guards what the key leaves out (the backbone's layout, Python
    constants), so a new model never runs another's code unchecked.
    """

    model: LanguageModel
    warm: set = field(default_factory=set)  # (key, finish inputs' layout) compiled and run once with full guards
    failed: str | None = None  # why compiling failed, once it has

    def __call__(self, key: tuple, tokens: torch.Tensor, position: torch.Tensor, states: list[Any], *finishing):
        """finishing: (finish, finish_inputs) of decode_step, or nothing."""
        if self.failed is None:
            compiled = BOOK.compiled_step()
            warm_key = (key, tensor_layouts(finishing[1]) if finishing else ())
            if warm_key in self.warm:
                with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                    return compiled(self.model, tokens, position, states, *finishing)
            try:
                logits = compiled(self.model, tokens, position, states, *finishing)
            except Exception as exc:  # Dynamo/Inductor/C++ compiler errors, the recompile limit: decode eagerly
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                BOOK.unavailable = BOOK.unavailable or f"torch.compile failed ({self.failed})"
                log.warning("torch.compile of the decode step failed (%s); decoding eagerly", self.failed)
            else:
                self.warm.add(warm_key)
                BOOK.compiled.add(key)
                return logits
        return decode_step(self.model, tokens, position, states, *finishing)


def tensor_layouts(values: tuple) -> tuple:
    """Shape, strides, dtype and device of each tensor of `values` (anything else as it is)."""
    return tuple((v.shape, v.stride(), v.dtype, v.device) if isinstance(v, torch.Tensor) else v for v in values)


def compiled_step(model: LanguageModel) -> CompiledStep:
    """The model's use of the compiled step, created on first use and kept on the model."""
    runner = model.__dict__.get("_compiled_step")
    if runner is None:
        runner = CompiledStep(model)
        model.__dict__["_compiled_step"] = runner  # a plain attribute: not a submodule, not in the state dict
    return runner


def compile_key(model: LanguageModel, cache: BackboneCache, n_codebooks: int, finish: Finish | None = None) -> tuple:
    """What the compiled step of `model` depends on for the generation that `cache` belongs to (not the model itself:
    models of one config share the compiled code), `finish` included (its constants are compiled in)."""
    states = [t for s in flat_states(cache) if s is not None for t in (s.conv_state, s.ssm_state)]
    return (
        finish,
        n_codebooks,
        model.training,
        tuple((t.shape, t.dtype, t.device, t.stride()) for t in states),
        tuple((p.shape, p.dtype, p.device, p.stride()) for p in model.parameters()),
        tuple(getattr(sub.mixer, "use_kernels", None) for sub in model.backbone.sublayers()),
    )


# ---------------------------------------------------------------------------------------------------- CUDA graphs


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    tokens: torch.Tensor  # (B, K) long, input buffer
    position: torch.Tensor  # (D,), input buffer
    cache: BackboneCache  # the states the graph advances
    logits: torch.Tensor  # (B, K, V), output buffer
    owner: object | None = None  # the generation currently bound to these buffers


@dataclass
class CudaGraphSteps:
    """One captured decode_step per batch size, sharing one memory pool (mamba_ssm's decoding does the same)."""

    model: LanguageModel
    graphs: dict[tuple[int, int, torch.dtype], _Graph] = field(default_factory=dict)  # (B, K, dtype)
    pool: Any = None

    def bind(self, cache: BackboneCache, batch: int, n_codebooks: int) -> object:
        """Move `cache`'s prefilled states into the graph's buffers and point the cache at them; returns a token
        identifying this generation (a later `bind` with the same batch size takes the buffers over)."""
        states = flat_states(cache)
        dtype = next(s.ssm_state.dtype for s in states if s is not None)
        key = (batch, n_codebooks, dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(batch, n_codebooks, dtype)
        entry = self.graphs[key]
        for src, dst in zip(states, flat_states(entry.cache), strict=True):
            if src is not None:
                dst.conv_state.copy_(src.conv_state)
                dst.ssm_state.copy_(src.ssm_state)
        cache.states = [list(block) for block in entry.cache.states]
        entry.owner = object()
        return entry.owner

    def step(self, owner: object, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        entry = next((g for g in self.graphs.values() if g.owner is owner), None)
        if entry is None:
            raise RuntimeError(
                "this generation's CUDA graph buffers were taken over by a later MusicLM.start with the same batch "
                "size; run one generation per batch size at a time, or start with decode='eager'"
            )
        entry.tokens.copy_(tokens)
        entry.position.copy_(position)
        entry.graph.replay()
        return entry.logits.clone()

    def _capture(self, batch: int, n_codebooks: int, dtype: torch.dtype) -> _Graph:
        model = self.model
        device = next(model.parameters()).device
        cache = model.backbone.allocate_cache(batch, 1, device=device, dtype=dtype)
        tokens = torch.zeros(batch, n_codebooks, dtype=torch.long, device=device)
        pos = torch.zeros(model.cfg.d_model, device=device, dtype=dtype)
        states = flat_states(cache)
        # Warm up on a side stream (Triton autotuning, lazy initialisation) before capturing, as CUDA graphs need.
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                decode_step(model, tokens, pos, states)
        torch.cuda.current_stream(device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = decode_step(model, tokens, pos, states)
        return _Graph(graph, tokens, pos, cache, logits)


def cuda_graph_steps(model: LanguageModel) -> CudaGraphSteps:
    runner = model.__dict__.get("_cuda_graph_steps")
    if runner is None:
        runner = CudaGraphSteps(model)
        model.__dict__["_cuda_graph_steps"] = runner
    return runner


# ---------------------------------------------------------------------------------------------------- per generation


@dataclass
class Decoder:
    """What `start` leaves in cache.extra["decoder"]: the resolved mode, the per-position embeddings, the states."""

    mode: str
    positions: torch.Tensor  # (max_len, D): row t = model.position_embedding(t, 1)[0]
    states: list[Any]  # the cache's states, flattened (one per sublayer)
    tokens_shape: tuple[int, int]  # (B, K): compiled code and graphs are built for exactly this
    owner: object | None = None  # cuda_graph: the buffers this generation is bound to
    key: tuple = ()  # compile: what the compiled code depends on (compile_key)
    finish: Finish | None = None  # applied to every step's logits (MusicLM.start)

    def __call__(self, model: LanguageModel, tokens: torch.Tensor, cache: BackboneCache, finish_inputs: tuple = ()):
        """One step: logits (B, K, V), or finish(logits, *finish_inputs)."""
        position = self.position(model, cache.position)
        if self.mode == "eager":
            out = decode_step(model, tokens, position, self.states, self.finish, finish_inputs)
        else:
            if tuple(tokens.shape) != self.tokens_shape:
                raise ValueError(
                    f"step: tokens {tuple(tokens.shape)}, this generation started with {self.tokens_shape}"
                )
            tokens = tokens.to(torch.long).contiguous()  # the layout the compiled code was built for
            if self.mode == "cuda_graph":
                out = cuda_graph_steps(model).step(self.owner, tokens, position)
                if self.finish is not None:  # outside the graph: the replay fills fixed buffers, logits only
                    out = self.finish(out, *finish_inputs)
            else:
                finishing = () if self.finish is None else (self.finish, finish_inputs)
                out = compiled_step(model)(self.key, tokens, position, self.states, *finishing)
        cache.position += 1
        return out

    def position(self, model: LanguageModel, t: int) -> torch.Tensor:
        if t < self.positions.shape[0]:
            return self.positions[t]
        # past max_len (Mamba states allow it): compute the row
        return model.position_embedding(t, 1, self.positions.device)[0].to(self.positions.dtype)


def make_decoder(
    model: LanguageModel, cache: BackboneCache, mode: str, batch: int, n_codebooks: int, finish: Finish | None = None
) -> Decoder:
    """Resolve `mode` for `model` and prepare the decoder of the generation whose prefilled states are in `cache`
    (`batch` rows of `n_codebooks` tokens per step, each step's logits through `finish`), binding CUDA graph buffers
    if any."""
    weight = next(model.parameters())
    key, row_steps = (), 0.0
    if mode == "auto" and weight.device.type == "cpu" and has_static_states(model):
        # The work a compile of this key would speed up: every generation "auto" started with it in this process,
        # this one included (rows x new positions); unbounded once compiled code exists (its cost is paid).
        key = compile_key(model, cache, n_codebooks, finish)
        BOOK.row_steps[key] += batch * (cache.max_len - cache.position)
        row_steps = math.inf if key in BOOK.compiled else BOOK.row_steps[key]
    resolved = resolve_mode(model, mode, weight.device, row_steps)
    dtype = model.emb[0].weight.dtype
    positions = model.position_embedding(0, cache.max_len, weight.device).to(dtype)  # (max_len, D)
    owner = cuda_graph_steps(model).bind(cache, batch, n_codebooks) if resolved == "cuda_graph" else None
    decoder = Decoder(resolved, positions, flat_states(cache), (batch, n_codebooks), owner=owner, finish=finish)
    if resolved == "compile":
        decoder.key = key or compile_key(model, cache, n_codebooks, finish)
    return decoder
