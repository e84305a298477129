"""`ssmttm export`: one checkpoint of a trained run as a self-contained folder that `ssmttm sample --model` and
`TextToMusic.load` read without the workspace.

    ssmttm export --run prefix_simba --out exports/prefix_simba [--step 100] [--workspace .]

Layout of --out (written under a temporary name, renamed when complete; an existing non-empty --out is refused):

    lm/                 config.json, model.safetensors (the checkpoint; no optimizer state)
    refiner/            config.json, model.safetensors, latent_stats.json
    codec/              codec.json, weights.safetensors: a codec trained by the pipeline. For pretrained DAC weights
                        only the identity is kept (in export.json: release, file sha256, converted weights sha256);
                        the loader rebuilds it from descript's cache (`python -m dac download ...`)
    text_encoders/      only for an encoder given as a local folder: a copy of that folder
    MODEL_CARD.md       what the model is, its training data and their licences, its metrics, each part's provenance
    TRAINING_DATA.tsv   the kept tracks (id, licence, source, title, URL), when the workspace has data/select
    export.json         format, run, step, seed, text and generate settings, text encoders (name, how to get it),
                        each part's provenance, and the sha256 of every other file (checked at load)
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import json
import shutil
from pathlib import Path
from typing import Any

from ssmttm.artifacts import atomic_dir, code_version, read_jsonl, sha256_file, write_json, write_text
from ssmttm.codec import CODEC_JSON
from ssmttm.codec import WEIGHTS_FILE as CODEC_WEIGHTS
from ssmttm.config import load_params
from ssmttm.errors import UserFacingError
from ssmttm.model_parts import (
    EXPORT_FORMAT,
    EXPORT_MANIFEST,
    LM_RUNS_DIR,
    PARAMS_FILE,
    REFINER_FILES,
    ModelParts,
    is_export,
    workspace_parts,
)
from ssmttm.models.lm import CONFIG_FILE as LM_CONFIG
from ssmttm.models.lm import WEIGHTS_FILE as LM_WEIGHTS
from ssmttm.text.encoder import ALIASES, WHEEL_ALIASES

MODEL_CARD = "MODEL_CARD.md"
TRAINING_DATA = "TRAINING_DATA.tsv"
# The generate settings an export keeps as its defaults (the caption set and variants belong to the pipeline).
GENERATE_KEYS = (
    "temperature",
    "top_k",
    "guidance_scale",
    "batch_size",
    "seconds",
    "device",
    "refine_sampler",
    "refine_steps",
    "refine_guidance_scale",
)
CARD_VARIANTS = ("two_stage", "codebook1_only", "single_stage")
PROVENANCE_FILE = "provenance.json"


def copy_files(source: Path, dest: Path, names: tuple[str, ...]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, dest / name)


def text_encoder_entry(name: str, workspace: Path, tmp: Path) -> dict[str, Any]:
    """How a loader gets the text encoder `name` (params text.encoder): a package, a Hugging Face id, or a copied
    local folder (then `path` inside the export)."""
    if name in WHEEL_ALIASES:
        _, package = WHEEL_ALIASES[name]
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = None
        pin = f"=={version}" if version else ""
        return {"kind": "package", "package": package, "version": version, "install": f"pip install {package}{pin}"}
    local = Path(name).expanduser()
    if not local.is_absolute() and (workspace / local).exists():
        local = workspace / local
    if local.exists():
        folder, n = f"text_encoders/{local.resolve().name}", 1
        while (tmp / folder).exists():  # two encoder folders of the same name
            folder, n = f"text_encoders/{local.resolve().name}-{n}", n + 1
        shutil.copytree(local, tmp / folder, symlinks=False)
        return {"kind": "folder", "path": folder, "copied_from": str(name)}
    hub_id = ALIASES.get(name, name)
    return {"kind": "hugging_face", "id": hub_id, "install": f"hf download {hub_id}"}


def shown(path: Path, workspace: Path) -> str:
    """A part's folder as the export records it, relative to the workspace."""
    try:
        return path.resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:
        return str(path)


def part_provenance(folder: Path, workspace: Path) -> dict[str, Any]:
    """code version, params hash, seed and stage of the provenance.json of a stage output (or of its parent)."""
    for candidate in (folder, folder.parent):
        path = candidate / PROVENANCE_FILE
        if path.is_file():
            recorded = json.loads(path.read_text())
            keep = ("stage", "code_version", "params_sha256", "seed", "run_key")
            return {"provenance_file": shown(path, workspace), **{k: recorded[k] for k in keep if k in recorded}}
    return {"provenance_file": None}


# ----------------------------------------------------------------------------------------------- model card


def kept_tracks(workspace: Path) -> list[dict[str, Any]] | None:
    """The tracks select kept (every shard), with the manifest's URL; None when the workspace has no select output."""
    shards = sorted((workspace / "data" / "select").glob("shard-*/kept.jsonl"))
    if not shards:
        return None
    urls = {}
    manifest = workspace / "data" / "manifest" / "manifest.jsonl"
    if manifest.is_file():
        urls = {row["id"]: row.get("url") for row in read_jsonl(manifest)}
    tracks = [row for shard in shards for row in read_jsonl(shard)]
    return [
        {
            "id": t["id"],
            "licence": t.get("licence"),
            "source": t.get("source"),
            "title": (t.get("tags") or {}).get("title"),
            "url": urls.get(t["id"]),
        }
        for t in sorted(tracks, key=lambda t: t["id"])
    ]


def rejected_count(workspace: Path) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for path in sorted((workspace / "data" / "select").glob("shard-*/rejected.tsv")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    return reasons


def training_data_section(workspace: Path, params: dict[str, Any], tracks: list[dict] | None) -> list[str]:
    corpus = params.get("corpus") or {}
    lines = ["## Training data", "", f"Corpus source: `{corpus.get('source', 'not recorded')}`."]
    if tracks is None:
        lines += ["", "Tracks and licences: not recorded (the workspace has no `data/select/shard-*/kept.jsonl`)."]
        return lines
    licences: dict[str, int] = {}
    for track in tracks:
        licences[str(track["licence"])] = licences.get(str(track["licence"]), 0) + 1
    lines += [
        "",
        f"{len(tracks)} tracks kept by `select` (allowed licences: "
        f"{', '.join((params.get('select') or {}).get('allowed_licences') or []) or 'not recorded'}); "
        f"every kept track with its licence and URL is listed in `{TRAINING_DATA}`.",
        "",
        "| licence | tracks |",
        "|---|---|",
        *[f"| {licence} | {n} |" for licence, n in sorted(licences.items())],
    ]
    rejected = rejected_count(workspace)
    if rejected:
        lines += ["", "Rejected by `select`: " + ", ".join(f"{n} ({reason})" for reason, n in sorted(rejected.items()))]
    tokenized = workspace / "data" / "tokenize" / "_manifest.json"
    if tokenized.is_file():
        counts = json.loads(tokenized.read_text()).get("counts") or {}
        lines += ["", "Clips by split: " + ", ".join(f"{split} {n}" for split, n in sorted(counts.items()))]
    lines += ["", "Check the licences of the training data before you use or share what the model makes."]
    return lines


def metric_cell(entry: dict[str, Any]) -> tuple[str, str, str]:
    """(value, interval, status) of one metric of results/evaluate/metrics.json."""
    if entry.get("status") == "not computed" or "value" not in entry:
        return "not computed", "", entry.get("reason", "")
    ci = entry.get("ci")
    interval = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if isinstance(ci, list) and len(ci) == 2 else ""
    return f"{entry['value']:.4g}", interval, entry.get("status", "")


def metrics_section(workspace: Path, parts: ModelParts) -> list[str]:
    lines = ["## Metrics", ""]
    path = workspace / "results" / "evaluate" / "metrics.json"
    if not path.is_file():
        return lines + ["Not computed: the workspace has no `results/evaluate/metrics.json` (`make demo` computes it)."]
    sets = json.loads(path.read_text()).get("sets") or {}
    found = False
    for variant in CARD_VARIANTS:
        name = f"{parts.run}/{parts.checkpoint.name}/{variant}"
        if name not in sets:
            continue
        found = True
        lines += [f"### {variant}", "", f"From `{path.relative_to(workspace)}`, set `{name}`.", ""]
        lines += ["| metric | value | 95% interval | status |", "|---|---|---|---|"]
        warnings = []
        for metric, entry in sorted((sets[name].get("metrics") or {}).items()):
            value, interval, note = metric_cell(entry)
            lines.append(f"| {metric} | {value} | {interval} | {note.replace('|', '/')} |")
            if entry.get("warning") and entry["warning"] not in warnings:
                warnings.append(entry["warning"])
        lines += ["", *[f"Warning: {w}" for w in warnings], ""]
    if not found:
        lines.append(
            f"Not computed: `{path.relative_to(workspace)}` has no set for {parts.run} {parts.checkpoint.name}."
        )
    return lines


def model_card(workspace: Path, params: dict[str, Any], parts: ModelParts, manifest: dict[str, Any]) -> str:
    lm = json.loads((parts.checkpoint.folder / LM_CONFIG).read_text())["lm"]
    codec = parts.codec_identity
    frame_rate = codec["sample_rate"] / codec["hop_length"]
    encoders = ", ".join(f"`{name}` ({e['kind']})" for name, e in manifest["text_encoders"].items())
    lines = [
        f"# {parts.run}, step {parts.checkpoint.step}: an ssmttm text-to-music model",
        "",
        f"A `{lm['backbone']}` language model over {lm['n_codebooks']} codebook(s) of a DAC codec "
        f"({codec['sample_rate']} Hz, {codec['n_codebooks']} codebooks, {frame_rate:g} frames/s), trained on "
        f"{(lm['seq_len'] - lm['n_codebooks']) / frame_rate:g} s sequences; a DiscoDiff-style refiner fills in the "
        f"other codebooks; text encoder(s): {encoders}. Made by ssmttm {manifest['code_version']}.",
        "",
        "## Use",
        "",
        "```bash",
        'ssmttm sample "calm acoustic piano" --model THIS_FOLDER --seconds 3 --out piano.wav',
        "```",
        "",
        "```python",
        "from ssmttm.api import TextToMusic",
        'model = TextToMusic.load("THIS_FOLDER")',
        'wav, sample_rate = model.generate(["calm acoustic piano"], seconds=3.0, seed=0)',
        "```",
        "",
        *training_data_section(workspace, params, kept_tracks(workspace)),
        "",
        *metrics_section(workspace, parts),
        "",
        "## Provenance",
        "",
        "| part | from | sha256 | code version | params sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, part in manifest["parts"].items():
        version, params_sha = part.get("code_version", "not recorded"), part.get("params_sha256", "not recorded")
        lines.append(f"| {name} | `{part['from']}` | `{str(part['sha256'])[:16]}` | {version} | `{params_sha[:16]}` |")
    for name, entry in manifest["text_encoders"].items():
        origin = entry.get("install") or f"copied from {entry.get('copied_from')}"
        lines.append(f"| text encoder `{name}` | {entry['kind']}: `{origin}` | | | |")
    lines += ["", f"Every file's sha256 is in `{EXPORT_MANIFEST}`; the loader checks them."]
    return "\n".join(lines) + "\n"


def training_data_tsv(tracks: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["id", "licence", "source", "title", "url"], delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(tracks)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- export


def export_run(workspace: str | Path, run: str, out: str | Path, step: int | None = None) -> Path:
    """Write one checkpoint of `run` (default: its last) with everything it needs into `out`; returns `out`."""
    workspace, out = Path(workspace), Path(out)
    if is_export(workspace):
        raise UserFacingError(f"--workspace {workspace} is already an exported model; copy the folder instead")
    parts = workspace_parts(workspace, run, step)
    if parts.refiner_dir is None:
        raise UserFacingError(f"cannot export run {run!r} without its refiner: {parts.refiner_missing}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserFacingError(f"--out {out} exists and is not empty; choose a new folder or remove it first")
    params = load_params(workspace / PARAMS_FILE)
    lm_config = json.loads((parts.checkpoint.folder / LM_CONFIG).read_text())
    refiner_config = json.loads((parts.refiner_dir / REFINER_FILES[0]).read_text())
    pretrained = "source" in parts.codec_identity  # codec.pretrained: the identity of descript's release
    with atomic_dir(out) as tmp:
        copy_files(parts.checkpoint.folder, tmp / "lm", (LM_CONFIG, LM_WEIGHTS))
        copy_files(parts.refiner_dir, tmp / "refiner", REFINER_FILES)
        if not pretrained:
            copy_files(parts.codec_dir, tmp / "codec", (CODEC_JSON, CODEC_WEIGHTS))
        names = [(lm_config.get("text") or {}).get("encoder"), (refiner_config.get("text") or {}).get("encoder")]
        names.append((params.get("text") or {}).get("encoder"))
        encoders = {name: text_encoder_entry(name, workspace, tmp) for name in dict.fromkeys(n for n in names if n)}
        manifest: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "run": parts.run,
            "step": parts.checkpoint.step,
            "backbone": lm_config["lm"]["backbone"],
            "seed": parts.seed,
            "code_version": code_version(),
            "lm": "lm",
            "refiner": "refiner",
            "codec": {"path": None if pretrained else "codec", "identity": parts.codec_identity},
            "text": parts.text_section,
            "generate": {k: v for k, v in parts.generate_section.items() if k in GENERATE_KEYS},
            "text_encoders": encoders,
            "parts": {
                "lm": {
                    "from": shown(parts.checkpoint.folder, workspace),
                    "sha256": sha256_file(parts.checkpoint.folder / LM_WEIGHTS),
                    **part_provenance(workspace / LM_RUNS_DIR / parts.run, workspace),
                },
                "refiner": {
                    "from": shown(parts.refiner_dir, workspace),
                    "sha256": sha256_file(parts.refiner_dir / REFINER_FILES[1]),
                    **part_provenance(parts.refiner_dir, workspace),
                },
                "codec": {
                    "from": shown(parts.codec_dir, workspace),
                    "sha256": parts.codec_identity["weights_sha256"],
                    "pretrained": parts.codec_identity.get("source"),
                    **part_provenance(parts.codec_dir, workspace),
                },
            },
        }
        tracks = kept_tracks(workspace)
        if tracks is not None:
            write_text(tmp / TRAINING_DATA, training_data_tsv(tracks))
        write_text(tmp / MODEL_CARD, model_card(workspace, params, parts, manifest))
        manifest["files"] = {
            path.relative_to(tmp).as_posix(): sha256_file(path) for path in sorted(tmp.rglob("*")) if path.is_file()
        }
        write_json(tmp / EXPORT_MANIFEST, manifest)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "The folder holds lm/, refiner/, codec/ (or the pretrained codec's identity), MODEL_CARD.md and export.json "
        "(checksums); use it with `ssmttm sample --model DIR` or TextToMusic.load(DIR). --params is not used."
    )
    parser.add_argument("--run", required=True, help="run name of params `runs` (results/train_lm/<run>)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the run's last)")
    parser.add_argument("--out", required=True, help="new folder for the exported model")
    parser.add_argument("--workspace", default=".", help="the finished pipeline's root (default: the current folder)")


def run_from_args(args: argparse.Namespace) -> int:
    out = export_run(args.workspace, args.run, args.out, step=args.step)
    manifest = json.loads((out / EXPORT_MANIFEST).read_text())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"{out}: run {manifest['run']!r} step {manifest['step']}, {len(manifest['files'])} files, "
        f'{size / 1e6:.1f} MB; try `ssmttm sample "calm piano" --model {out} --out sample.wav`'
    )
    return 0
