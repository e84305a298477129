"""Where the parts of one loadable text-to-music model are: in a workspace, or in a folder of `ssmttm export`.

A workspace is a repository root after `make demo` (or any finished run of the pipeline):

    params.yaml                          runs, text, generate and seed
    results/train_lm/<run>/              step-NNNNNNN/ and final/ LM checkpoints (generate.checkpoints)
    results/train_refiner/final/         the refiner
    data/codec/                          the codec

An exported folder holds one checkpoint of one run with its refiner, codec (or the identity of pretrained codec
weights) and text encoder names; `export.json` lists its files with their sha256 (written by ssmttm.export).
`ModelParts` is the same description for both; `TextToMusic.load` (ssmttm.api) loads it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssmttm.artifacts import sha256_file
from ssmttm.codec import CODEC_JSON, CodecHandle, load_codec
from ssmttm.config import load_params
from ssmttm.errors import UserFacingError
from ssmttm.generate.checkpoints import Checkpoint, kept_checkpoints
from ssmttm.pipeline import run_names

LM_RUNS_DIR = Path("results/train_lm")
REFINER_DIR = Path("results/train_refiner/final")
CODEC_DIR = Path("data/codec")
PARAMS_FILE = "params.yaml"
EXPORT_MANIFEST = "export.json"
EXPORT_FORMAT = "ssmttm.export/1"
REFINER_FILES = ("config.json", "model.safetensors", "latent_stats.json")
SNAKEMAKE = ".venv/bin/snakemake --cores 2"


@dataclass(frozen=True)
class ModelParts:
    """One checkpoint of one run and what it needs to make audio."""

    kind: str  # "workspace" or "export"
    root: Path
    run: str
    checkpoint: Checkpoint
    steps: list[int]  # every kept checkpoint step of the run (an export: its one step)
    codec_dir: Path | None  # None: pretrained codec weights, rebuilt from `codec_identity` at load
    codec_identity: dict[str, Any]
    refiner_dir: Path | None
    refiner_missing: str | None  # why there is no refiner and how to make one (None when there is one)
    text_section: dict[str, Any] | None
    generate_section: dict[str, Any]
    seed: int
    local_encoders: dict[str, str] = field(default_factory=dict)  # text.encoder name -> local folder to load it from


def is_export(folder: str | Path) -> bool:
    return (Path(folder) / EXPORT_MANIFEST).is_file()


def available_runs(workspace: str | Path) -> list[str]:
    """The runs of the workspace's params (in their order) that have at least one LM checkpoint; an export: its run."""
    workspace = Path(workspace)
    if is_export(workspace):
        return [read_export_manifest(workspace)["run"]]
    params = load_params(workspace / PARAMS_FILE)
    found = []
    for run in run_names(params):
        try:
            kept_checkpoints(workspace / LM_RUNS_DIR / run)
        except UserFacingError:
            continue
        found.append(run)
    return found


def find_parts(path: str | Path, run: str | None = None, step: int | None = None) -> ModelParts:
    """The parts of `path` (a workspace or an export); `run`/`step` default to the first trained run, last step."""
    path = Path(path)
    if is_export(path):
        return export_parts(path, run, step)
    if not (path / PARAMS_FILE).is_file():
        raise UserFacingError(
            f"{path}: neither a workspace (no {PARAMS_FILE}) nor an exported model (no {EXPORT_MANIFEST}); pass the "
            "repository root of a finished `make demo`, or a folder written by `ssmttm export`"
        )
    return workspace_parts(path, run, step)


def choose_checkpoint(checkpoints: list[Checkpoint], step: int | None, what: str) -> Checkpoint:
    if step is None:
        return checkpoints[-1]
    for ckpt in checkpoints:
        if ckpt.step == step:
            return ckpt
    kept = ", ".join(str(c.step) for c in checkpoints)
    raise UserFacingError(f"{what} has no checkpoint at step {step}; its checkpoints are at steps {kept}")


def workspace_parts(root: Path, run: str | None, step: int | None) -> ModelParts:
    params = load_params(root / PARAMS_FILE)
    runs = run_names(params)
    if not runs:
        raise UserFacingError(f"{root / PARAMS_FILE} names no runs (`runs:`); add one and train it with `make demo`")
    if run is None:
        trained = available_runs(root)
        run = trained[0] if trained else runs[0]
    elif run not in runs:
        raise UserFacingError(f"unknown run {run!r}: {root / PARAMS_FILE} has the runs {', '.join(runs)}")
    run_dir = root / LM_RUNS_DIR / run
    try:
        checkpoints = kept_checkpoints(run_dir)
    except UserFacingError:
        raise UserFacingError(
            f"no checkpoint for run {run!r} in {run_dir}; train it with `{SNAKEMAKE} {LM_RUNS_DIR / run}/metrics.json` "
            "(or `make demo`)"
        ) from None
    codec_dir = root / CODEC_DIR
    if not (codec_dir / CODEC_JSON).is_file():
        raise UserFacingError(
            f"no codec in {codec_dir} (no {CODEC_JSON}); build it with `{SNAKEMAKE} {CODEC_DIR}` (or `make demo`)"
        )
    refiner_dir: Path | None = root / REFINER_DIR
    missing = None
    if not all((refiner_dir / name).is_file() for name in REFINER_FILES):
        missing = (
            f"no refiner in {refiner_dir}; train it with `{SNAKEMAKE} {REFINER_DIR.parent}/metrics.json` (or "
            "`make demo`), or ask for codebook 1 only (--codebook1-only, codebook1_only=True)"
        )
        refiner_dir = None
    return ModelParts(
        kind="workspace",
        root=root,
        run=run,
        checkpoint=choose_checkpoint(checkpoints, step, f"run {run!r} ({run_dir})"),
        steps=[c.step for c in checkpoints],
        codec_dir=codec_dir,
        codec_identity=json.loads((codec_dir / CODEC_JSON).read_text()),
        refiner_dir=refiner_dir,
        refiner_missing=missing,
        text_section=params.get("text"),
        generate_section=dict(params.get("generate") or {}),
        seed=int(params.get("seed", 0)),
    )


# ----------------------------------------------------------------------------------------------- exports


def read_export_manifest(folder: Path) -> dict[str, Any]:
    manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
    if manifest.get("format") != EXPORT_FORMAT:
        raise UserFacingError(
            f"{folder / EXPORT_MANIFEST}: format {manifest.get('format')!r}, this ssmttm reads {EXPORT_FORMAT}; "
            "export the run again with this version's `ssmttm export`"
        )
    return manifest


def verify_export(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file listed in export.json is present with its recorded sha256."""
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise UserFacingError(f"exported model {folder}: {name} is missing; copy the whole folder, or export again")
        if sha256_file(path) != expected:
            raise UserFacingError(
                f"exported model {folder}: {name} does not match its sha256 in {EXPORT_MANIFEST} (changed or "
                "damaged); copy it again, or export again with `ssmttm export`"
            )


def export_parts(folder: Path, run: str | None, step: int | None) -> ModelParts:
    manifest = read_export_manifest(folder)
    if run is not None and run != manifest["run"]:
        raise UserFacingError(f"unknown run {run!r}: the exported model {folder} holds the run {manifest['run']!r}")
    verify_export(folder, manifest)
    checkpoint = Checkpoint(int(manifest["step"]), folder / manifest["lm"])
    checkpoint = choose_checkpoint([checkpoint], step, f"the exported model {folder}")
    codec = manifest["codec"]
    local = {
        name: str(folder / entry["path"]) for name, entry in manifest["text_encoders"].items() if entry.get("path")
    }
    return ModelParts(
        kind="export",
        root=folder,
        run=manifest["run"],
        checkpoint=checkpoint,
        steps=[checkpoint.step],
        codec_dir=folder / codec["path"] if codec.get("path") else None,
        codec_identity=codec["identity"],
        refiner_dir=folder / manifest["refiner"],
        refiner_missing=None,
        text_section=manifest.get("text"),
        generate_section=dict(manifest.get("generate") or {}),
        seed=int(manifest.get("seed", 0)),
        local_encoders=local,
    )


def load_parts_codec(parts: ModelParts, device: torch.device) -> CodecHandle:
    """The codec of `parts`: its folder, or pretrained weights rebuilt from descript's cache and checked against
    the exported identity (their converted weights must hash to the recorded weights_sha256)."""
    if parts.codec_dir is not None:
        return load_codec(parts.codec_dir, device)
    from ssmttm.codec.pretrained import PretrainedConfig, prepare_pretrained

    source = parts.codec_identity.get("source") or {}
    cfg = PretrainedConfig(
        model_type=source["model_type"],
        model_bitrate=source["model_bitrate"],
        tag=source["tag"],
        sha256=source["sha256"],
    )
    with tempfile.TemporaryDirectory(prefix="ssmttm-codec-") as tmp:
        identity = prepare_pretrained(cfg, Path(tmp))
        if identity["weights_sha256"] != parts.codec_identity["weights_sha256"]:
            raise UserFacingError(
                f"the pretrained DAC {cfg.model_type} {cfg.model_bitrate} weights found here convert to other "
                f"weights than the exported model's codec ({parts.codec_identity['weights_sha256'][:12]}...); use "
                "the same descript-audio-codec release and version the model was trained with"
            )
        return load_codec(tmp, device)
