"""`ssmttm <verb>`: one subcommand per pipeline stage, plus `validate` and `profile`.

Each stage module exposes `configure_parser(parser)` (adds its own arguments) and `run_from_args(args)` (reads its
params section from `--params` and calls the stage's plain Python function). Modules are imported only when their
verb runs, so `ssmttm --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from ssmttm.artifacts import DISK_FULL_ERRNOS, disk_full_message
from ssmttm.config import ParamsError, available_profiles, load_params, profile_path
from ssmttm.errors import UserFacingError
from ssmttm.locks import add_lock_argument, stage_output_locks, stage_outputs

# verb -> (module, one-line help). The order is the DAG order.
STAGES: dict[str, tuple[str, str]] = {
    "manifest": ("ssmttm.corpus.manifest", "build the track manifest of the configured corpus source"),
    "fetch": ("ssmttm.corpus.fetch", "download the tracks of one manifest shard (yt-dlp, MTG TARs)"),
    "fetch-references": (
        "ssmttm.generate.fetch_references",
        "download the reference clips of the evaluation caption set (MusicCaps: 10 s from start_s)",
    ),
    "select": ("ssmttm.corpus.select", "keep tracks with an allowed licence, that decode, within duration limits"),
    "segment": ("ssmttm.corpus.segment", "decode, downmix, resample and cut kept tracks into clips"),
    "caption": ("ssmttm.corpus.caption", "write one caption per clip (tags, imported file, or a model)"),
    "codec": ("ssmttm.codec.stage", "train a small DAC or verify/download pretrained DAC weights"),
    "tokenize": ("ssmttm.tokens.tokenize", "encode clips to DAC codes (and latents) in Parquet shards"),
    "text-cache": ("ssmttm.train.text_cache", "encode every caption of the token shards with the frozen text encoder"),
    "train-lm": ("ssmttm.train.stage", "train (or resume, or reuse) a language model backbone on the token shards"),
    "lm-plot": ("ssmttm.train.plots", "loss curves, final losses and loss CSVs of several train-lm runs"),
    "train-refiner": ("ssmttm.refine.stage", "train (or resume, or reuse) the DiscoDiff-style latent refiner"),
    "generate": ("ssmttm.generate.stage", "captions -> WAVs for each checkpoint of an LM run, and the references"),
    "decode": ("ssmttm.generate.decode", "decode codes (.npz, .parquet) or latents (.npz) to WAVs with a codec"),
    "sample": ("ssmttm.sample", "your own prompts -> checked WAVs (LM, refiner, codec) from a workspace or an export"),
    "export": ("ssmttm.export", "one run's checkpoint, refiner, codec and model card as a self-contained folder"),
    "app": ("ssmttm.app", "a local web page (gradio, 127.0.0.1): prompt, run, step -> audio and its mel spectrogram"),
    "evaluate": ("ssmttm.evaluate.stage", "metrics with intervals and cards for generated sets against references"),
    "report": ("ssmttm.report.stage", "one HTML page: the paper-style table, figures, audio and a listening test"),
    "preflight": ("ssmttm.preflight.cli", "check weights, inputs, disk, GPUs, network of a profile; print the plan"),
    "remote-check": ("ssmttm.remote_check", "read back every dvc.lock object from a DVC remote; verify md5 and size"),
}


def _validate_command(args: argparse.Namespace) -> int:
    for path in args.files:
        load_params(path)
        print(f"{path}: valid")
    return 0


def _profile_command(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if args.name is None:
        current = load_params(root / "params.yaml", validate=False).get("profile", "?")
        print(f"current profile: {current}; available: {', '.join(available_profiles(root))}")
        return 0
    source = profile_path(args.name, root)
    if not source.is_file():
        raise ParamsError(f"profile '{args.name}' not found at {source}; available: {available_profiles(root)}")
    load_params(source)  # never switch to an invalid profile
    shutil.copyfile(source, root / "params.yaml")
    print(f"params.yaml is now the '{args.name}' profile (copied from {source})")
    return 0


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssmttm",
        description="Reproducible text-to-music pipeline with state-space language models. "
        "Each verb is one pipeline stage; the Snakefile calls these same commands.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    validate = sub.add_parser("validate", help="check params files against the schema")
    validate.add_argument("files", nargs="*", default=["params.yaml"])
    validate.set_defaults(handler=_validate_command)

    profile = sub.add_parser("profile", help="show or switch the active profile (copies configs/NAME.yaml)")
    profile.add_argument("name", nargs="?", help="profile to activate, e.g. demo or paper")
    profile.add_argument("--root", default=".", help="repository root")
    profile.set_defaults(handler=_profile_command)

    for verb, (module_name, help_text) in STAGES.items():
        if verbs is not None and verb not in verbs:
            sub.add_parser(verb, help=help_text, add_help=False)
            continue
        stage_parser = sub.add_parser(verb, help=help_text, description=help_text)
        stage_parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        module = importlib.import_module(module_name)
        module.configure_parser(stage_parser)
        add_lock_argument(stage_parser)
        stage_parser.set_defaults(handler=module.run_from_args)
    return parser


# Verbs whose float results depend on the CPU's kernels; `portable_cpu: true` in params pins those kernels.
FLOAT_VERBS = {"codec", "tokenize", "text-cache", "train-lm", "train-refiner", "generate", "decode"}


def _params_path(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--params" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--params="):
            return arg.split("=", 1)[1]
    return "params.yaml"


def _enter_portable_cpu_mode(verb: str | None, argv: list[str]) -> bool:
    """Set the portable CPU environment (ssmttm.determinism) before any stage module imports torch."""
    if verb not in FLOAT_VERBS or "torch" in sys.modules:
        return False
    path = Path(_params_path(argv))
    try:
        portable = bool(load_params(path, validate=False).get("portable_cpu", False)) if path.is_file() else False
    except ParamsError:
        return False  # the stage reports the params error itself
    if portable:
        from ssmttm.determinism import apply_portable_env

        os.environ.update(apply_portable_env(os.environ))
    return portable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the verb being run (the rest get placeholder parsers for --help).
    chosen = [a for a in argv if a in STAGES][:1]
    if _enter_portable_cpu_mode(chosen[0] if chosen else None, argv):
        from ssmttm.determinism import apply_runtime_settings

        apply_runtime_settings(True, threads=1)
    parser = build_parser(verbs=chosen)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        with stage_output_locks(args):  # one writer per output (ssmttm.locks: wait, then refuse)
            return int(args.handler(args) or 0)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was published (outputs appear only when complete)", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            print(f"error: {disk_full_message(exc, stage_outputs(args))}", file=sys.stderr)
            return 1
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _report_crash(args.verb, exc, args.verbose)
        hint = ENVIRONMENT_ERRNOS[exc.errno]
        print(f"error: {exc.strerror}: {exc.filename or '(no file name)'}; {hint}, then rerun", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: one line here, the traceback in a file
        return _report_crash(args.verb, exc, args.verbose)


# Failures of the machine, not of the code or the input: reported as errors the user can fix.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free disk space",
    errno.EDQUOT: "free space within your disk quota",
    errno.EACCES: "fix the permissions",
    errno.EPERM: "fix the permissions",
    errno.EROFS: "write to a writable file system",
    errno.EMFILE: "raise the open-file limit (ulimit -n)",
}
CRASH_DIR = Path("logs/crashes")
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h): an internal software error


def _report_crash(verb: str, exc: BaseException, verbose: bool) -> int:
    """One line on stderr saying this is a bug and where its traceback went (a file under logs/crashes/, so a log
    of thousands of shard jobs stays readable); the traceback is printed too with --verbose."""
    trace = "".join(traceback.format_exception(exc))
    name = f"{verb}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    try:
        CRASH_DIR.mkdir(parents=True, exist_ok=True)
        where = CRASH_DIR / name
        where.write_text(f"ssmttm {' '.join(sys.argv[1:])}\n{trace}", encoding="utf-8")
    except OSError:
        where = Path(tempfile.gettempdir()) / f"ssmttm-{name}"
        where.write_text(trace, encoding="utf-8")
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    message = " ".join(str(exc).split())[:300]
    print(
        f"internal error (a bug) in `ssmttm {verb}`: {type(exc).__name__}: {message}{at}; the traceback is in {where} "
        "(please report it with that file)",
        file=sys.stderr,
    )
    if verbose:
        print(trace, file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
