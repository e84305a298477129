"""`ssmttm generate`: captions -> WAVs for every kept checkpoint of an LM run, and the caption set's references.

    ssmttm generate --params params.yaml --lm-run results/train_lm/prefix_simba --refiner results/train_refiner/final \\
        --codec data/codec --shards data/tokenize --out results/generate/prefix_simba
    ssmttm generate --params params.yaml --reference --refiner results/train_refiner/final --codec data/codec \\
        --shards data/tokenize --clips data/segment --out results/generate/reference
        # musiccaps / file captions: the clips of `ssmttm fetch-references` instead of --clips
        ... --reference ... --fetched data/fetch_references --out results/generate/reference
    ssmttm generate --params params.yaml --checkpoint results/train_lm/prefix_simba/final --captions "calm piano" \\
        --frames 258 --out codes.npz        # ad hoc: codes only (--seconds needs --codec, which gives the frame rate)
    ssmttm generate --params params.yaml --baseline musicgen_small --shards data/tokenize \
        --out results/generate/musicgen_small   # params baselines.<name> from its public weights (baseline.py)

Reads the sections `generate`, `text` and `seed`; the text encoder and padding each model was trained with (in its
config.json) win over `text`. Every clip lasts `generate.seconds` at the codec's sample rate; the codec gives the
frame rate (sample_rate / hop_length), and the LM samples ceil(seconds * frame rate) frames. Variants and caption
sets: generate.config and generate.captions. Layout of --out:

    step-NNNNNNN/<variant>/<caption_id>.wav, manifest.jsonl   (references: <variant>/...)
    summary.json      checkpoints, variants (and why any were skipped), captions, audio format, settings, counts
    provenance.json   params, inputs (weights hashes), code and library versions (host.json beside it)

A clip depends only on its caption, its seed (`tokens.caption_seed(seed, caption_id)`), the weights and the settings,
never on the batch it ran in. Runs resume clip by clip (audio_out.ClipFolder); step and variant folders, and WAVs
of captions no longer in the set, are removed, so --out always matches the inputs. The modes live in lm_run.py,
references.py and, for codes only, here.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from ssmttm.codec import load_codec, resolve_device
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.generate.captions import read_captions
from ssmttm.generate.common import AudioFormat, Encoders
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.lm_run import generate_run
from ssmttm.generate.memory import check_sampling_fits
from ssmttm.generate.references import generate_references
from ssmttm.generate.tokens import generate_tokens, write_codes
from ssmttm.inputs import check_finite_number, check_seed, check_utf8_texts
from ssmttm.models.lm import load_lm

__all__ = ["configure_parser", "generate_references", "generate_run", "run_from_args"]


# ----------------------------------------------------------------------------------------------- ad-hoc codes


def generate_codes(args: argparse.Namespace, params: dict[str, Any], cfg: GenerateConfig) -> int:
    """--checkpoint mode: captions -> codes file (.npz / .parquet), no audio."""
    if Path(args.out).suffix not in (".npz", ".parquet"):
        raise UserFacingError(f"--out {args.out}: use a .npz or .parquet file name")
    if not (args.captions or args.captions_file):
        raise UserFacingError("--checkpoint needs --captions TEXT... or --captions-file FILE")
    check_finite_number(args.seconds, "--seconds", 0, None, low_open=True)
    check_finite_number(args.frames, "--frames", 1, None)
    seed = check_seed(args.seed, "--seed") if args.seed is not None else int(params.get("seed", 0))
    captions = check_utf8_texts(args.captions, "--captions") if args.captions else read_captions(args.captions_file)
    device = resolve_device(cfg.device)
    model, lm_cfg, trained_text = load_lm(args.checkpoint, device=device)
    if args.frames is not None:
        n_frames = args.frames
    elif args.codec:
        codec = load_codec(args.codec, "cpu")
        n_frames = AudioFormat.of(codec, args.seconds if args.seconds is not None else cfg.seconds).n_frames
    else:
        raise UserFacingError(
            "pass --frames N, or --codec data/codec to turn --seconds (or generate.seconds) into frames"
        )
    length = "--frames" if args.frames is not None else "--seconds" if args.seconds is not None else "generate.seconds"
    check_sampling_fits(lm_cfg, cfg.batch_size, cfg.guidance_scale, n_frames, length, device)
    encoder = Encoders(params.get("text"), device, None).get(
        trained_text, f"the checkpoint {args.checkpoint}", lm_cfg.d_text
    )
    codes = generate_tokens(model, encoder, captions, n_frames, cfg, seed, progress=not args.no_progress)
    meta = {
        "checkpoint": str(args.checkpoint),
        "seed": seed,
        "n_frames": n_frames,
        "generate": dataclass_to_dict(cfg),
        "lm": {"backbone": lm_cfg.backbone, "n_codebooks": lm_cfg.n_codebooks, "special_id": lm_cfg.special_id},
    }
    write_codes(args.out, captions, codes, meta)
    print(f"wrote {len(captions)} x {tuple(codes.shape[1:])} codes to {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--lm-run", help="train-lm run folder: every kept checkpoint (step-NNNNNNN/, final/) -> WAVs")
    mode.add_argument(
        "--reference", action="store_true", help="the caption set's references (test_split: --clips; else --fetched)"
    )
    mode.add_argument("--checkpoint", help="one LM checkpoint folder: codes of --captions to a .npz/.parquet file")
    mode.add_argument("--baseline", metavar="NAME", help="params baselines.NAME (e.g. MusicGen) -> WAVs of the set")
    parser.add_argument("--refiner", default="results/train_refiner/final", help="refiner folder (train-refiner)")
    parser.add_argument("--codec", default=None, help="codec folder (default data/codec; --checkpoint: optional)")
    parser.add_argument("--shards", default="data/tokenize", help="token shards (test_split captions, references)")
    parser.add_argument(
        "--clips", nargs="+", default=None, help="segment folders with the reference clips (--reference)"
    )
    parser.add_argument(
        "--fetched", default=None, help="--reference, musiccaps/file captions: the fetch-references folder"
    )
    parser.add_argument("--out", required=True, help="output folder (--checkpoint: a .npz or .parquet file)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--captions", nargs="+", metavar="TEXT", help="--checkpoint: captions to generate from")
    source.add_argument("--captions-file", help="--checkpoint: one caption per line (.txt) or .jsonl with 'caption'")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="--checkpoint: length in seconds (default generate.seconds)")
    length.add_argument("--frames", type=int, help="--checkpoint: length in codec frames")
    parser.add_argument("--seed", type=int, default=None, help="--checkpoint: sampling seed (default: params seed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress reports")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    section = params.get("generate") or {}
    cfg = section_to_dataclass(GenerateConfig, section)
    if args.checkpoint:
        return generate_codes(args, params, cfg)
    codes_only = {"--captions": args.captions, "--captions-file": args.captions_file, "--seconds": args.seconds}
    codes_only |= {"--frames": args.frames, "--seed": args.seed}
    given = [name for name, value in codes_only.items() if value is not None]
    if given:
        raise UserFacingError(
            f"{', '.join(given)}: only with --checkpoint; --lm-run and --reference take captions, length and seed "
            "from params (generate.captions, generate.seconds, seed)"
        )
    if args.baseline:
        return run_baseline(args, params, cfg)
    common = dict(
        text_section=params.get("text"), section=section, progress=not args.no_progress, refiner_dir=args.refiner
    )
    codec = args.codec or "data/codec"
    if args.reference:
        summary = generate_references(
            cfg,
            codec,
            args.shards,
            args.out,
            int(params["seed"]),
            clip_dirs=args.clips,
            fetched_dir=args.fetched,
            **common,
        )
    else:
        summary = generate_run(cfg, args.lm_run, codec, args.out, int(params["seed"]), shards_dir=args.shards, **common)
    counts = Counter()
    for folder in summary["folders"].values():
        counts.update(folder)
    print(
        f"{args.out}: {counts['ok']} clips ok, {counts['failed']} failed ({summary['generated']} made now, "
        f"{summary['reused']} kept)"
    )
    return 0


def run_baseline(args: argparse.Namespace, params: dict[str, Any], cfg: GenerateConfig) -> int:
    """--baseline mode: the caption set from a reference system's public weights (or a "not computed" summary)."""
    from ssmttm.generate.baseline import baseline_config, generate_baseline

    baseline_cfg = baseline_config(params, args.baseline)
    summary = generate_baseline(
        cfg,
        baseline_cfg,
        args.baseline,
        args.out,
        int(params["seed"]),
        shards_dir=args.shards,
        section=params.get("generate") or {},
        progress=not args.no_progress,
    )
    if summary["status"] != "ok":
        print(f"{args.out}: {args.baseline} {summary['status']}: {summary['reason']}; fetch with `{summary['fetch']}`")
        return 0
    counts = summary["folders"]["pretrained"]
    print(
        f"{args.out}: {counts['ok']} clips ok, {counts['failed']} failed ({summary['generated']} made now, "
        f"{summary['reused']} kept)"
    )
    return 0
