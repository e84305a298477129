"""`ssmttm sample`: your own prompts -> checked WAVs, through the two-stage path by default.

    ssmttm sample "calm acoustic piano" "energetic rock drums" --seconds 5 --out samples/
    ssmttm sample "calm acoustic piano" --seconds 5 --out piano.wav --run cross_transformer --step 100
    ssmttm sample "calm acoustic piano" --model exports/prefix_simba --out piano.wav   # a folder of `ssmttm export`

The model is a run of a workspace (--workspace, default: the current folder; its params.yaml, results/train_lm/<run>
at its last checkpoint or --step, results/train_refiner/final and data/codec) or an exported folder (--model); the
sampling settings default to params `generate` (an export keeps them). The audio is made by ssmttm.api.TextToMusic:
LM codebook 1 -> refiner -> codec (--codebook1-only: no refiner; --single-stage: all the tokens of an LM over every
codebook). Each clip is checked and written as the generate stage does (generate.audio_out.write_clip: the asked
length, finite, not silent, peak at most 1, read back at the codec's rate). --out DIR gets one WAV per prompt,
`NN-<prompt words>.wav`, and a manifest.jsonl (sha256, prompt, seed, settings, level); --out FILE.wav takes one
prompt. Bad numbers (seconds, seed, guidance, sampler steps) exit with status 2 before anything is written; a
missing piece (checkpoint, refiner, codec) exits 1 naming the command that builds it.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ssmttm.api import MAX_SEED, InvalidSetting, TextToMusic
from ssmttm.generate.audio_out import WAV_SUFFIX, ClipFolder, write_clip
from ssmttm.generate.config import REFINE_SAMPLERS
from ssmttm.inputs import check_utf8_texts

SLUG_WORDS = re.compile(r"[a-z0-9]+")
SLUG_CHARS = 40  # file names stay short whatever the prompt


def wav_name(index: int, prompt: str) -> str:
    """'03-calm-acoustic-piano.wav': the prompt's index and its first words."""
    slug = "-".join(SLUG_WORDS.findall(prompt.lower()))[:SLUG_CHARS].strip("-") or "prompt"
    return f"{index:02d}-{slug}{WAV_SUFFIX}"


def output_paths(out: Path, prompts: list[str]) -> list[Path]:
    """One WAV per prompt: `out` itself when it names a .wav file (one prompt only), else files inside `out`."""
    if out.suffix.lower() == WAV_SUFFIX:
        if len(prompts) != 1:
            raise InvalidSetting(f"--out {out}: a .wav file holds one prompt, {len(prompts)} given; pass a folder")
        return [out]
    return [out / wav_name(i, p) for i, p in enumerate(prompts)]


# ----------------------------------------------------------------------------------------------- argument types


def positive_seconds(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
    return value


def int_within(low: int, high: int | None = None, meaning: str = ""):
    """An argparse type: an integer from `low` to `high` (inclusive; None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text}: must be {meaning or f'>= {low}'}")
        return value

    return parse


seed_int = int_within(0, MAX_SEED - 1, "from 0 to 2**63 - 1")
positive_int = int_within(1)
step_int = int_within(0)


# ----------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        '  ssmttm sample "calm acoustic piano" "energetic rock drums" --seconds 5 --out samples/\n'
        '  ssmttm sample "calm acoustic piano" --out piano.wav --run cross_transformer --step 100\n'
        '  ssmttm sample "calm acoustic piano" --model exports/prefix_simba --out piano.wav\n'
        "Defaults come from the workspace's params.yaml `generate` section (an export keeps it); --params is not used."
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompts, one WAV each")
    parser.add_argument("--out", required=True, help="output folder (one NN-<words>.wav per prompt), or FILE.wav")
    parser.add_argument(
        "--seconds",
        type=positive_seconds,
        default=None,
        help="clip length (default generate.seconds; at most 4x the LM's trained context)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workspace", default=".", help="a finished pipeline's root (default: the current folder)")
    source.add_argument("--model", default=None, help="a folder written by `ssmttm export` instead of a workspace")
    parser.add_argument("--run", default=None, help="run name of params `runs` (default: the first trained one)")
    parser.add_argument("--step", type=step_int, default=None, help="checkpoint step (default: the run's last)")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--codebook1-only", action="store_true", help="decode the LM's codebook 1 alone (no refiner)")
    variant.add_argument(
        "--single-stage", action="store_true", help="decode all the tokens (an LM trained over every codebook only)"
    )
    parser.add_argument("--seed", type=seed_int, default=None, help="0 .. 2**63-1 (default: params seed)")
    parser.add_argument("--guidance", type=finite_float, default=None, help="LM classifier-free guidance (1 = none)")
    parser.add_argument("--temperature", type=finite_float, default=None, help="LM sampling temperature (<= 0: greedy)")
    parser.add_argument("--sampler", choices=REFINE_SAMPLERS, default=None, help="the refiner's sampler")
    parser.add_argument("--sampler-steps", type=positive_int, default=None, help="the refiner's sampling steps")
    parser.add_argument("--refiner-guidance", type=finite_float, default=None, help="the refiner's guidance scale")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: generate.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress reports")


def run_from_args(args: argparse.Namespace) -> int:
    check_utf8_texts(args.prompts, "prompt")
    try:
        paths = output_paths(Path(args.out), args.prompts)
    except InvalidSetting as exc:
        return usage_error(exc)
    model = TextToMusic.load(args.model or args.workspace, run=args.run, step=args.step, device=args.device)
    try:
        settings = model.settings(
            seconds=args.seconds,
            seed=args.seed,
            guidance=args.guidance,
            temperature=args.temperature,
            sampler=args.sampler,
            sampler_steps=args.sampler_steps,
            refiner_guidance=args.refiner_guidance,
            codebook1_only=args.codebook1_only,
            single_stage=args.single_stage,
        )
    except InvalidSetting as exc:
        return usage_error(exc)
    print(
        f"sampling {len(args.prompts)} prompt(s), {settings.seconds:g} s each, {settings.variant} with run "
        f"{model.run!r} step {model.step} ({model.source})",
        file=sys.stderr,
    )
    wav = model.generate_with(args.prompts, settings, progress=not args.no_progress)  # (B, 1, N)
    folder = None if Path(args.out).suffix.lower() == WAV_SUFFIX else ClipFolder(args.out)  # its manifest.jsonl
    n_samples, failed = wav.shape[-1], 0
    seeds = settings.clip_seeds(len(args.prompts))
    for prompt, path, clip, seed in zip(args.prompts, paths, wav[:, 0].numpy(), seeds, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        fields = write_clip(path, clip, model.sample_rate, n_samples)
        if fields["status"] != "ok":
            failed += 1
            print(f"error: {prompt!r}: no WAV written ({fields['reason']})", file=sys.stderr)
        else:
            print(f"{path}  ({prompt!r}, RMS {fields['rms_db']} dBFS)")
        if folder is not None:
            folder.record(
                {
                    "caption_id": path.stem,
                    "caption": prompt,
                    "run": model.run,
                    "step": model.step,
                    "source": str(model.source),
                    "clip_seed": seed,
                    "sample_rate": model.sample_rate,
                    "num_samples": n_samples,
                    "settings": settings.describe(),
                    "path": None,
                    "sha256": None,
                    "reason": None,
                    **fields,
                }
            )
    if folder is not None:
        folder.flush()
    return 1 if failed else 0


def usage_error(exc: Exception) -> int:
    """A bad setting: one line, exit status 2 (as argparse does), nothing written."""
    print(f"error: {exc}", file=sys.stderr)
    return 2
