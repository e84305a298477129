"""The second stage on held-out clips: the refiner on the reference's codebook 1 vs codebook 1 alone, per sampler.

For each test-split clip of the token shards (its codes, cropped to --seconds), every system decodes codes to audio:

    codebook1_only       the reference's codebook 1 decoded alone (what the first stage gives without a refiner)
    refiner <s> <n>      the refiner on the reference's codebook 1 (its caption, CFG, the clip's seed), sampler s with
                         n steps: DDPM 100, DDIM 50 / 25, DPM-Solver++ 20 / 10 (--quick: DDPM 10, DDIM 5, DPM++ 3)

and each result is compared with the target, the reference's codes with all K codebooks decoded (the best any second
stage can do with this codec), with ssmttm.signal: DAC's mel distance, dyncorr and log-mel L1 (lower, higher,
lower is better). With --clips, also against the original clip audio (and the codec floor itself). Wall time per
system covers refining (batched as the generate stage does) and decoding; RTF = wall time / audio seconds.

With an LM checkpoint (--lm, default results/train_lm/<lm.backbone>/final when it exists) the real-time factor of
`ssmttm generate` end to end (two_stage variant, models loaded, WAVs written) on this device is measured too.

    python bench/bench_second_stage.py            # demo artifacts, all test clips, full sampler grid
    python bench/bench_second_stage.py --quick    # 2 clips of 1 s, small grid
Writes results/bench/second_stage.json. Missing inputs (before `make demo`) are reported as not computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmttm.artifacts import library_versions, write_json
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.generate.config import GenerateConfig

FULL_GRID = [("ddpm", 100), ("ddim", 50), ("ddim", 25), ("dpm++", 20), ("dpm++", 10)]
QUICK_GRID = [("ddpm", 10), ("ddim", 5), ("dpm++", 3)]
METRICS = ("mel_distance", "dyncorr", "log_mel_l1_db")


def metric_functions() -> dict[str, Any]:
    """The signal measures that exist in ssmttm.signal (imported late: it is optional here)."""
    try:
        from ssmttm import signal
    except ImportError:
        return {}
    return {name: getattr(signal, name) for name in METRICS if hasattr(signal, name)}


def distances(reference: np.ndarray, estimate: np.ndarray, rate: int, functions: dict[str, Any]) -> dict[str, float]:
    return {name: float(fn(reference, estimate, rate)) for name, fn in functions.items()}


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--codec", default="data/codec")
    parser.add_argument("--refiner", default="results/train_refiner/final")
    parser.add_argument("--shards", default="data/tokenize")
    parser.add_argument("--clips", nargs="+", default=None, help="segment folders: also compare with the originals")
    parser.add_argument("--lm", default=None, help="LM checkpoint for the end-to-end RTF (default: the demo's)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default generate.seconds)")
    parser.add_argument("--max-clips", type=int, default=None, help="test clips to use (default all)")
    parser.add_argument("--quick", action="store_true", help="2 clips of 1 s, a small sampler grid")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/bench/second_stage.json")
    return parser.parse_args(argv)


def missing_inputs(args: argparse.Namespace) -> list[str]:
    wanted = [Path(args.codec) / "codec.json", Path(args.refiner) / "config.json", Path(args.shards)]
    return [str(p) for p in wanted if not p.exists()]


def second_stage(args, cfg: GenerateConfig, params: dict, grid: list[tuple[str, int]]) -> dict[str, Any]:
    from ssmttm.audio import load_mono
    from ssmttm.codec import load_codec
    from ssmttm.generate.captions import read_test_split
    from ssmttm.generate.common import AudioFormat, Encoders, load_checked_refiner
    from ssmttm.generate.references import index_clips
    from ssmttm.generate.synth import decode_clip, refine_codebook1
    from ssmttm.generate.tokens import caption_seed, encode_one_by_one

    device = torch.device(args.device)
    codec = load_codec(args.codec, device)
    refiner, _ = load_checked_refiner(args.refiner, codec, device)
    encoder = Encoders(params.get("text"), device, None).get(
        refiner.text, f"the refiner {args.refiner}", refiner.secondary.cfg.context_dim
    )
    audio = AudioFormat.of(codec, cfg.seconds)
    references = [r for r in read_test_split(args.shards, with_codes=True) if r.codes.shape[1] >= audio.n_frames]
    references = references[: cfg.max_captions] if cfg.max_captions else references
    if not references:
        raise SystemExit(f"{args.shards}: no test clip has {audio.n_frames} frames; lower --seconds")
    codes = torch.from_numpy(np.stack([r.codes[:, : audio.n_frames] for r in references]))  # (N, K, T)
    rate, n = audio.sample_rate, audio.n_samples
    targets = {"codec": [decode_clip(codec, c)[:n] for c in codes]}
    if args.clips:
        clips = index_clips(args.clips)
        targets["original"] = [load_mono(clips[r.caption.clip_id], rate)[:n] for r in references]
    functions = metric_functions()
    seeds = [caption_seed(int(params.get("seed", 0)), r.caption.caption_id) for r in references]
    text = encode_one_by_one(encoder, [r.caption.text for r in references])

    def measure(name: str, sampler: str | None, steps: int | None, make) -> dict[str, Any]:
        start = time.perf_counter()
        outputs = make()
        wall = time.perf_counter() - start
        metrics = {
            target: mean_rows([distances(t, o, rate, functions) for t, o in zip(audios, outputs, strict=True)])
            for target, audios in targets.items()
        }
        return {
            "system": name,
            "sampler": sampler,
            "steps": steps,
            "wall_s": wall,
            "rtf": wall / (len(outputs) * audio.seconds),
            "metrics": metrics,
        }

    def refined(run_cfg: GenerateConfig) -> list[np.ndarray]:
        out = []
        for i in range(0, len(references), run_cfg.batch_size):
            rows = slice(i, i + run_cfg.batch_size)
            batch_text = type(text)(text.hidden[rows], text.mask[rows])
            clip_codes = refine_codebook1(refiner, codec, codes[rows, :1], batch_text, seeds[rows], run_cfg)
            out += [decode_clip(codec, c)[:n] for c in clip_codes]
        return out

    # warm-up (lazy initialisation, allocator) outside the timings: one decode, one refiner step
    decode_clip(codec, codes[0])
    one_step = dataclasses.replace(cfg, refine_sampler="ddim", refine_steps=1)
    refine_codebook1(refiner, codec, codes[:1, :1], type(text)(text.hidden[:1], text.mask[:1]), seeds[:1], one_step)
    systems = [measure("codebook1_only", None, None, lambda: [decode_clip(codec, c[:1])[:n] for c in codes])]
    if "original" in targets:
        systems.append(measure("codec", None, None, lambda: [decode_clip(codec, c)[:n] for c in codes]))
    for sampler, steps in grid:
        run_cfg = dataclasses.replace(cfg, refine_sampler=sampler, refine_steps=steps)
        systems.append(measure("refiner", sampler, steps, lambda run_cfg=run_cfg: refined(run_cfg)))
    return {
        "clips": [r.caption.caption_id for r in references],
        "audio": audio.describe(),
        "targets": list(targets),
        "metrics_available": list(functions),
        "refine_guidance_scale": cfg.refine_guidance_scale,
        "batch_size": cfg.batch_size,
        "systems": systems,
    }


def generate_rtf(args, cfg: GenerateConfig, params: dict) -> dict[str, Any]:
    """Wall time of the generate stage (one checkpoint, two_stage, the test captions) over the audio it makes."""
    from ssmttm.generate.lm_run import generate_run

    lm = args.lm or f"results/train_lm/{params['lm']['backbone']}/final"
    if not (Path(lm) / "config.json").is_file():
        return {"not_computed": f"no LM checkpoint at {lm} (pass --lm)"}
    run_cfg = dataclasses.replace(cfg, variants=["two_stage"], captions="test_split", device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate_run(
            run_cfg,
            lm,
            args.codec,
            Path(tmp) / "out",
            int(params.get("seed", 0)),
            refiner_dir=args.refiner,
            shards_dir=args.shards,
            text_section=params.get("text"),
            progress=False,
        )
        wall = time.perf_counter() - start
    clips = summary["generated"]
    return {
        "lm": lm,
        "clips": clips,
        "wall_s": wall,
        "rtf": wall / (clips * cfg.seconds),
        "includes": "model loading, text encoding, LM sampling, refiner, decoding, checks and WAV writing",
        "refine_sampler": cfg.refine_sampler,
        "refine_steps": cfg.refine_steps,
    }


def print_table(result: dict[str, Any]) -> None:
    stage = result["second_stage"]
    audio = stage["audio"]
    print(
        f"{len(stage['clips'])} test clips of {audio['seconds']} s at {audio['sample_rate']} Hz, on {result['device']}"
    )
    for target in stage["targets"]:
        print(f"\ndistance to the {target} ({', '.join(stage['metrics_available']) or 'no metrics available'})")
        print(f"{'system':<22} {'wall s':>8} {'RTF':>7} " + " ".join(f"{m:>14}" for m in stage["metrics_available"]))
        for row in stage["systems"]:
            name = row["system"] if row["sampler"] is None else f"refiner {row['sampler']} {row['steps']}"
            values = " ".join(
                f"{row['metrics'][target].get(m, float('nan')):>14.4f}" for m in stage["metrics_available"]
            )
            print(f"{name:<22} {row['wall_s']:>8.2f} {row['rtf']:>7.3f} {values}")
    rtf = result["generate_end_to_end"]
    if "rtf" in rtf:
        print(f"\ngenerate end to end: {rtf['clips']} clips in {rtf['wall_s']:.1f} s, RTF {rtf['rtf']:.3f}")
    else:
        print(f"\ngenerate end to end: not computed ({rtf['not_computed']})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = section_to_dataclass(GenerateConfig, params.get("generate"))
    seconds = args.seconds or (min(cfg.seconds, 1.0) if args.quick else cfg.seconds)
    max_clips = args.max_clips or (2 if args.quick else None)
    cfg = dataclasses.replace(cfg, seconds=seconds, max_captions=max_clips, device=args.device)
    result: dict[str, Any] = {"benchmark": "second_stage", "quick": args.quick}
    missing = missing_inputs(args)
    if missing:
        result["not_computed"] = f"missing inputs: {', '.join(missing)} (run `make demo` first or pass their paths)"
        print(result["not_computed"])
    else:
        result["second_stage"] = second_stage(args, cfg, params, QUICK_GRID if args.quick else FULL_GRID)
        result["generate_end_to_end"] = generate_rtf(args, cfg, params)
    result.update(
        device=args.device,
        threads=args.threads,
        machine=platform.machine(),
        processor=platform.processor(),
        libraries=library_versions(),
    )
    if "second_stage" in result:
        print_table(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
