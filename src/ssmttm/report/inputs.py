"""What the report reads: the generated clip folders, the evaluate stage's metrics, the codec's held-out metrics.

Generated folders are read from their `summary.json` (mode, skipped variants) and manifests only; no audio is
decoded here. A folder given to the report is either one `ssmttm generate --out` folder (it holds summary.json) or
the parent of several (results/generate: one per named run or baseline, plus `reference/`). Systems are named as
the evaluate stage names its sets: `<run>/step-NNNNNNN/<variant>`, `reference/<variant>`, and for a baseline
without checkpoint steps (public weights) `<baseline>/<variant>`.

A metric entry of the evaluate stage (ssmttm.evaluate.cards) is one of {"status": "ok" | "unreliable", "value",
"ci", "n", "better", ["warning"]} or {"status": "not computed", "reason"}; a metric the evaluate stage did not write
for a set (split-half FDs exist for the reference only, paired measures for reconstructions only) reads as
"not reported" with that reason, and a metric it wrote for no set at all (an older evaluate output) reads as
"not computed", so the page shows every gap instead of dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ssmttm.errors import UserFacingError
from ssmttm.evaluate.clipsets import find_manifests, read_manifest
from ssmttm.inputs import read_json_object

SUMMARY_FILE = "summary.json"
REFERENCE_RUN = "reference"
EVALUATE_FORMAT_PREFIX = "ssmttm.evaluate/"
OK, UNRELIABLE, NOT_COMPUTED = "ok", "unreliable", "not computed"
NOT_REPORTED = "not reported"  # the evaluate stage does not compute this metric for this kind of set


@dataclass(frozen=True)
class ClipRow:
    caption_id: str
    caption: str
    path: Path | None  # the WAV; None when generation failed
    reason: str | None  # why generation failed
    seed: int | None


@dataclass
class System:
    """One set of clips: a run's checkpoint x variant, a baseline's variant, or one variant of the references."""

    run: str  # the run or baseline (its generate folder's name), or "reference"
    step: int | None
    variant: str
    folder: Path
    clips: dict[str, ClipRow] = field(default_factory=dict)  # by caption id

    @property
    def name(self) -> str:
        step = [] if self.step is None else [f"step-{self.step:07d}"]
        return "/".join([self.run, *step, self.variant])

    @property
    def label(self) -> str:
        step = "" if self.step is None else f" · step {self.step}"
        return f"{self.run}{step} · {self.variant}"

    @property
    def n_ok(self) -> int:
        return sum(clip.path is not None for clip in self.clips.values())


@dataclass
class Generated:
    systems: list[System]  # generated sets, by (run, step, variant)
    references: dict[str, System]  # the reference folder's variants: original, codec, ...
    skipped: dict[str, dict[str, str]]  # run -> {variant: why generate skipped it}
    summaries: dict[str, str]  # run -> its summary.json
    notes: dict[str, str] = field(default_factory=dict)  # run -> why generate made no clips (e.g. weights absent)

    def runs(self) -> list[str]:
        return sorted({s.run for s in self.systems})

    def captions(self) -> dict[str, str]:
        """caption id -> caption text over every system (references first)."""
        texts: dict[str, str] = {}
        for system in [*self.references.values(), *self.systems]:
            for clip in system.clips.values():
                texts.setdefault(clip.caption_id, clip.caption)
        return dict(sorted(texts.items()))


# ----------------------------------------------------------------------------------------------- generated clips


def _run_folders(folder: Path) -> list[Path]:
    if (folder / SUMMARY_FILE).is_file():
        return [folder]
    if not folder.is_dir():
        raise UserFacingError(f"{folder}: not found; pass results/generate (or one `ssmttm generate --out` folder)")
    runs = sorted(child for child in folder.iterdir() if (child / SUMMARY_FILE).is_file())
    if not runs:
        raise UserFacingError(
            f"{folder}: neither it nor any folder in it has a {SUMMARY_FILE}; run `ssmttm generate` first"
        )
    return runs


def _systems_of(run_folder: Path, run: str) -> list[System]:
    systems: dict[tuple[int | None, str], System] = {}
    for manifest in find_manifests(run_folder):
        for row in read_manifest(manifest):
            step = row.get("step")
            step = int(step) if step is not None else None
            variant = str(row.get("variant") or manifest.parent.name)
            system = systems.setdefault(
                (step, variant), System(run, None if run == REFERENCE_RUN else step, variant, manifest.parent)
            )
            caption_id = str(row.get("caption_id") or row.get("clip_id") or row.get("path"))
            ok = str(row.get("status", "ok")).lower() == "ok" and row.get("path") is not None
            path = Path(row["path"]) if ok else None
            if path is not None and not path.is_absolute():
                path = manifest.parent / path
            if path is not None and not path.is_file():
                raise UserFacingError(f"{manifest}: lists {row['path']}, which is missing; rerun `ssmttm generate`")
            reason = None if ok else str(row.get("reason") or row.get("error") or "failed")
            seed = row.get("seed")
            system.clips[caption_id] = ClipRow(
                caption_id, str(row.get("caption", "")), path, reason, int(seed) if seed is not None else None
            )
    return [systems[key] for key in sorted(systems, key=lambda k: (k[0] if k[0] is not None else -1, k[1]))]


def read_generated(folders: list[str | Path]) -> Generated:
    """Every generated system and reference variant under `folders`."""
    systems: list[System] = []
    references: dict[str, System] = {}
    skipped: dict[str, dict[str, str]] = {}
    summaries: dict[str, str] = {}
    notes: dict[str, str] = {}
    for folder in folders:
        for run_folder in _run_folders(Path(folder)):
            summary = read_json_object(run_folder / SUMMARY_FILE, "generate summary")
            run = REFERENCE_RUN if summary.get("mode") == REFERENCE_RUN else run_folder.name
            if run in summaries:
                raise UserFacingError(f"two generate folders are both named {run!r}: {summaries[run]}, {run_folder}")
            summaries[run] = str(run_folder / SUMMARY_FILE)
            if summary.get("skipped"):
                skipped[run] = {str(k): str(v) for k, v in summary["skipped"].items()}
            if summary.get("reason"):  # e.g. a baseline without its weights: "not computed", and how to fetch them
                fetch = f"; to fetch the weights: {summary['fetch']}" if summary.get("fetch") else ""
                notes[run] = f"{summary.get('status') or 'not computed'}: {summary['reason']}{fetch}"
            # a folder generate left without clips on purpose (a baseline whose weights are absent) has no manifest
            made_nothing = summary.get("status") == NOT_COMPUTED and not summary.get("variants")
            found = [] if made_nothing else _systems_of(run_folder, run)
            if run == REFERENCE_RUN:
                references.update({s.variant: s for s in found})
            else:
                systems += found
    systems.sort(key=lambda s: (s.run, s.step if s.step is not None else -1, s.variant))
    return Generated(systems, references, skipped, summaries, notes)


# ----------------------------------------------------------------------------------------------- evaluate metrics


@dataclass
class Evaluation:
    folder: Path
    data: dict[str, Any]
    by_system: dict[tuple[str, int | None, str], dict[str, Any]]  # (run, step, variant) -> set entry

    @property
    def reference(self) -> dict[str, Any]:
        return self.data.get("reference") or {}

    @property
    def reference_variant(self) -> str:
        return str(self.reference.get("variant") or "original")

    @property
    def min_clips(self) -> int | None:
        return (self.data.get("bootstrap") or {}).get("min_clips")

    @property
    def confidence(self) -> float:
        return float((self.data.get("bootstrap") or {}).get("confidence") or 0.95)

    def set_of(self, run: str, step: int | None, variant: str) -> dict[str, Any] | None:
        if run == REFERENCE_RUN and variant == self.reference_variant:
            return self.reference or None
        return self.by_system.get((run, step, variant))

    def metric(self, entry: dict[str, Any] | None, metric: str) -> dict[str, Any]:
        """The entry of `metric` in a set entry, or an entry without a value saying why there is none."""
        if entry is None:
            return {"status": NOT_COMPUTED, "reason": "the evaluate stage has no set for these clips; rerun it"}
        metrics = entry.get("metrics") or {}
        if metric in metrics:
            return metrics[metric]
        if "all" in metrics:  # a set without a usable clip
            return metrics["all"]
        if metric not in self.known_metrics:
            return {
                "status": NOT_COMPUTED,
                "reason": f"the evaluate stage wrote {metric} for no set: its output predates this metric or it "
                "does not compute it; rerun `ssmttm evaluate`",
            }
        return {"status": NOT_REPORTED, "reason": f"the evaluate stage does not report {metric} for this kind of set"}

    @cached_property
    def known_metrics(self) -> frozenset[str]:
        """Every metric the evaluate stage wrote for at least one set."""
        names = set(self.reference.get("metrics") or {})
        for entry in self.data.get("sets", {}).values():
            names |= set(entry.get("metrics") or {}) - {"all"}
        return frozenset(names)

    def metric_names(self) -> list[str]:
        return sorted(self.known_metrics)


def read_evaluation(folder: str | Path) -> Evaluation:
    folder = Path(folder)
    path = folder / "metrics.json" if folder.is_dir() or not folder.suffix else folder
    if not path.is_file():
        raise UserFacingError(f"{path}: not found; run `ssmttm evaluate` first and pass its --out folder")
    data = read_json_object(path, "evaluate metrics")
    fmt = str(data.get("format", ""))
    if not fmt.startswith(EVALUATE_FORMAT_PREFIX) or not isinstance(data.get("sets"), dict):
        raise UserFacingError(f"{path}: not the metrics of `ssmttm evaluate` (format {fmt!r}); pass its --out folder")
    by_system: dict[tuple[str, int | None, str], dict[str, Any]] = {}
    for name, entry in data["sets"].items():
        if not isinstance(entry, dict) or not (entry.get("step") is None or isinstance(entry["step"], int)):
            raise UserFacingError(f"{path}: set {name!r} is not an evaluate set entry; rerun `ssmttm evaluate`")
        parts = name.split("/")
        run = str(entry.get("run") or parts[0])
        variant = str(entry.get("variant") or parts[-1])
        step = entry.get("step")
        by_system[(run, None if run == REFERENCE_RUN or step is None else int(step), variant)] = {
            "name": name,
            **entry,
        }
    return Evaluation(path.parent, data, by_system)


def read_codec(path: str | Path | None) -> tuple[dict[str, Any] | None, str | None]:
    """The codec folder's numbers and the file they came from: a trained codec's metrics.json (held-out scores), or a
    pretrained codec's codec.json (its identity only: it was not trained here, so it has no held-out scores)."""
    if path is None:
        return None, None
    path = Path(path)
    for name in ("metrics.json", "codec.json"):
        file = path / name if path.is_dir() else path
        if file.is_file() and (not path.is_dir() or file.name == name):
            return read_json_object(file, "codec numbers"), str(file)
    raise UserFacingError(f"{path}: neither metrics.json nor codec.json found; pass the codec stage's folder")


def read_json_or_none(path: str | Path | None, name: str = "metrics.json") -> dict[str, Any] | None:
    """A folder's `name` (or the file itself), or None when no path is given; a given path must exist."""
    if path is None:
        return None
    path = Path(path)
    file = path / name if path.is_dir() else path
    if not file.is_file():
        raise UserFacingError(f"{file}: not found; fix the path or leave the option out")
    return read_json_object(file, what=name)
