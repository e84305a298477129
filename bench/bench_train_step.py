"""Training throughput per backbone at roughly equal parameter count: forward + backward tokens/s.

Every backbone gets the config of the run named after it (the `lm` section with its `runs` entry applied,
pipeline.run_sections; demo: d_model 128) and, as the paper compares backbones at about 300 M, its depth from
`runs.<name>.lm` where the params give one (configs/paper.yaml: the paper's sizes), else the number of blocks that
brings its trainable parameter count closest to the reference (prefix_simba's run). The frozen text encoder is
outside the timed step: the text input is a random (B, 32, 384) encoding (MiniLM width) with half of it padding, and
caption dropout is active as in training.

    python bench/bench_train_step.py            # batch 4 x 512 positions, 5 timed steps
    python bench/bench_train_step.py --quick    # batch 2 x 128, 2 timed steps
Writes results/bench/train_step.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from collections.abc import Mapping
from typing import Any

import torch

from ssmttm.artifacts import library_versions, write_json
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.models.lm import LMConfig, MusicLM, param_count
from ssmttm.models.registry import backbone_names
from ssmttm.pipeline import run_names, run_sections

D_TEXT = 384  # MiniLM width; the text encoder is frozen and outside the timed step
TEXT_LEN = 32
REFERENCE = "prefix_simba"  # the backbone whose parameter count the others are matched to


def matched_config(base: LMConfig, backbone: str, target: int, max_layers: int = 64) -> LMConfig:
    """`base` with `backbone` and the block count whose parameter count is closest to `target`.

    A backbone's blocks are all alike, so the count is fixed + per_block x n_layers: two counts give every depth's."""
    one, two = (param_count(dataclasses.replace(base, backbone=backbone, n_layers=n)) for n in (1, 2))
    per_block, fixed = two - one, 2 * one - two
    n_layers = min(range(1, max_layers + 1), key=lambda n: abs(fixed + per_block * n - target))
    return dataclasses.replace(base, backbone=backbone, n_layers=n_layers)


def backbone_config(params: Mapping[str, Any], backbone: str) -> tuple[LMConfig, str | None]:
    """The LM of `backbone` as train_lm builds it, with the MiniLM text width, and the run it comes from: the run
    named after the backbone (the profiles name their full-size run of each backbone after it), else the shared
    `lm` section with that backbone (None)."""
    if backbone in run_names(params):
        run, section = backbone, run_sections(params, backbone)["lm"]
    else:
        run, section = None, {**params["lm"], "backbone": backbone}
    return dataclasses.replace(section_to_dataclass(LMConfig, section), d_text=D_TEXT), run


def equal_size_configs(params: Mapping[str, Any], backbones: list[str]) -> tuple[int, list[tuple[LMConfig, str]]]:
    """The reference's parameter count, and per backbone (its config, where its depth comes from)."""
    target = param_count(backbone_config(params, REFERENCE)[0])
    configs = []
    for name in backbones:
        cfg, run = backbone_config(params, name)
        if run is not None and "n_layers" in ((params["runs"][run] or {}).get("lm") or {}):
            configs.append((cfg, f"runs.{run}.lm"))
        else:
            configs.append((matched_config(cfg, name, target), "matched"))
    return target, configs


def time_steps(
    model: MusicLM, tokens: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor, warmup: int, steps: int
) -> float:
    """Seconds per forward + backward (loss included), averaged over `steps` after `warmup`."""

    def one() -> None:
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(tokens, hidden, mask)
        loss.backward()

    for _ in range(warmup):
        one()
    if tokens.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    if tokens.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 x 128 positions, 2 timed steps")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--backbones", nargs="+", default=backbone_names())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/bench/train_step.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch, length, warmup, steps = (2, 128, 1, 2) if args.quick else (4, 512, 1, 5)

    params = load_params(args.params)
    base, _ = backbone_config(params, REFERENCE)
    target, configs = equal_size_configs(params, args.backbones)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, base.codebook_size, (batch, base.n_codebooks, length), generator=g).to(device)
    hidden = torch.randn(batch, TEXT_LEN, D_TEXT, generator=g).to(device)
    mask = torch.ones(batch, TEXT_LEN, dtype=torch.bool, device=device)
    mask[:, TEXT_LEN // 2 :] = False

    rows = []
    for cfg, depth_from in configs:
        name = cfg.backbone
        torch.manual_seed(0)
        model = MusicLM(cfg).to(device).train()
        model.set_uncond(torch.zeros(1, TEXT_LEN, D_TEXT), torch.arange(TEXT_LEN)[None] < 1)
        seconds = time_steps(model, tokens, hidden, mask, warmup, steps)
        rows.append(
            {
                "backbone": name,
                "n_layers": cfg.n_layers,
                "n_layers_from": depth_from,
                "params": param_count(cfg),
                "seconds_per_step": seconds,
                "tokens_per_s": batch * length / seconds,
            }
        )
        del model

    print(
        f"forward+backward, batch {batch} x {length} audio positions (+{TEXT_LEN} text), d_model {base.d_model}, "
        f"{args.threads} thread(s) on {device}; reference {target / 1e6:.2f} M params"
    )
    print(f"{'backbone':<20} {'blocks':>6} {'params M':>9} {'s/step':>8} {'tokens/s':>10}")
    for r in rows:
        print(
            f"{r['backbone']:<20} {r['n_layers']:>6} {r['params'] / 1e6:>9.2f} {r['seconds_per_step']:>8.3f} "
            f"{r['tokens_per_s']:>10.0f}"
        )
    write_json(
        args.out,
        {
            "benchmark": "train_step",
            "quick": args.quick,
            "batch": batch,
            "audio_positions": length,
            "text_positions": TEXT_LEN,
            "base": dataclasses.asdict(base),
            "target_params": target,
            "rows": rows,
            "device": str(device),
            "threads": args.threads,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "libraries": library_versions(),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
