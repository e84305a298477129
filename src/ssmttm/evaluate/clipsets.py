"""Clip sets: a folder of WAV files and its manifest, read into memory as mono audio with captions.

A folder written by `ssmttm generate` (generated clips, or the references: original clips, codec reconstructions...)
holds `manifest.jsonl` (or `manifest.json`: a list of rows, or {"clips": [rows]}), one row per clip, or subfolders
that do (`<checkpoint>/<variant>/manifest.jsonl`, `<variant>/manifest.jsonl`):

    path        the WAV, relative to the folder (or absolute)    (also read: file, wav)
    caption     the text the clip was generated from or described by
    caption_id  the caption's id; pairs a generated clip with its reference (also read: clip_id, id)
    seed, step, variant, settings, duration_s     when known
    status      "failed" (or "error" present) for a clip that could not be generated: counted, never read

A manifest holding several (step, variant) groups gives one clip set per group. Audio is downmixed to mono and
resampled with soxr (`RESAMPLER`) to whatever rate a metric asks for; resampled copies are cached per rate.

A generate folder without clips whose summary.json says `"status": "not computed"` (a baseline whose weights are
absent) gives one empty set per variant it names under `skipped`, carrying the summary's reason (`not_computed`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ssmttm.artifacts import sha256_file
from ssmttm.audio import load_audio, resample, to_mono
from ssmttm.errors import UserFacingError
from ssmttm.inputs import read_json_file, read_jsonl_rows

MANIFEST_NAMES = ("manifest.jsonl", "manifest.json")
RESAMPLER = f"soxr {soxr.__version__} HQ (ssmttm.audio.resample), mono = mean of channels"
PATH_KEYS = ("path", "file", "wav")
CAPTION_ID_KEYS = ("caption_id", "clip_id", "id")
STEP_KEYS = ("step", "checkpoint_step")
SUMMARY_NAME = "summary.json"  # generate's summary of an output folder
NOT_COMPUTED = "not computed"


@dataclass
class Clip:
    clip_id: str  # unique in its set: the file's path in the folder
    caption: str
    caption_id: str
    seed: int | None
    audio: np.ndarray  # (N,) float32 mono at the set's source rate
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate


@dataclass
class ClipSet:
    name: str
    folder: Path
    clips: list[Clip]
    step: int | None = None
    variant: str | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"path", "reason"} of clips that were not written
    settings: list[Any] = field(default_factory=list)  # distinct `settings` of the manifest rows
    manifest: str = ""
    manifest_sha256: str = ""
    not_computed: str | None = None  # why the folder holds no clips at all (generate's summary.json), if it says
    _resampled: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.clips)

    def audio_at(self, sample_rate: int) -> list[np.ndarray]:
        """Every clip's mono audio (N,) float32 at `sample_rate` (soxr HQ), cached. Non-finite samples (which
        signal health counts on `Clip.audio`) are read as 0 here, so one NaN does not turn every metric into NaN."""
        if sample_rate not in self._resampled:
            self._resampled[sample_rate] = [
                resample(
                    np.nan_to_num(clip.audio, nan=0.0, posinf=0.0, neginf=0.0)[None], clip.sample_rate, sample_rate
                )[0]
                for clip in self.clips
            ]
        return self._resampled[sample_rate]

    def replace_audio(self, audio: list[np.ndarray]) -> None:
        """Swap in edited audio (cropped to the reference length), at each clip's own rate; clears the cache."""
        for clip, samples in zip(self.clips, audio, strict=True):
            clip.audio = np.ascontiguousarray(samples, np.float32)
        self._resampled.clear()

    def describe(self) -> dict[str, Any]:
        """The set's part of a metric card: where it is, what it holds and how it was made."""
        durations = np.array([clip.duration_s for clip in self.clips]) if self.clips else np.zeros(0)
        return {
            "name": self.name,
            "folder": str(self.folder),
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "step": self.step,
            "variant": self.variant,
            "n_clips": len(self.clips),
            "n_failed": len(self.failed),
            "failed": self.failed,
            "total_duration_s": round(float(durations.sum()), 3),
            "duration_s": {
                "min": round(float(durations.min()), 3) if durations.size else None,
                "max": round(float(durations.max()), 3) if durations.size else None,
            },
            "source_sample_rates": sorted({clip.sample_rate for clip in self.clips}),
            "seeds": sorted({clip.seed for clip in self.clips if clip.seed is not None}),
            "n_captions": len({clip.caption_id for clip in self.clips}),
            "caption_ids": sorted({clip.caption_id for clip in self.clips}),
            "sampling_settings": self.settings,
            **({"not_computed": self.not_computed} if self.not_computed else {}),
        }


# ----------------------------------------------------------------------------------------------- manifests


def find_manifest(folder: str | Path) -> Path:
    folder = Path(folder)
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise UserFacingError(
        f"{folder}: no {' or '.join(MANIFEST_NAMES)}; pass a folder written by `ssmttm generate` (or write a "
        "manifest with one row per WAV: path, caption, caption_id)"
    )


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl_rows(path, "clip manifest")
    data = read_json_file(path, "clip manifest")
    rows = data.get("clips", data.get("rows")) if isinstance(data, Mapping) else data
    if not isinstance(rows, list) or not all(isinstance(row, Mapping) for row in rows):
        raise UserFacingError(f"{path}: expected a list of clip rows (objects), or {{'clips': [...]}}")
    return rows


def _first(row: Mapping[str, Any], keys: Iterable[str]) -> Any:
    return next((row[key] for key in keys if row.get(key) is not None), None)


def _failure(row: Mapping[str, Any]) -> str | None:
    """The reason a manifest row is not a usable clip, or None."""
    status = str(row.get("status", "ok")).lower()
    if status in ("failed", "error") or row.get("error"):
        return str(row.get("reason") or row.get("error") or status)
    return None


def _group_key(row: Mapping[str, Any], manifest: Path) -> tuple[int | None, str | None]:
    step, variant = _first(row, STEP_KEYS), row.get("variant")
    if (step is not None and not _is_int(step)) or (variant is not None and not isinstance(variant, str)):
        raise UserFacingError(f"{manifest}: a row has a bad step (an integer) or variant (a string): {row!r:.200}")
    return (int(step) if step is not None else None, variant)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def group_name(base: str, key: tuple[int | None, str | None], keys: list[tuple[int | None, str | None]]) -> str:
    """`base`, plus `step-N` and the variant when those differ between the manifest's groups."""
    parts = [base]
    if len({k[0] for k in keys}) > 1 and key[0] is not None:
        parts.append(f"step-{key[0]:07d}")
    if len({k[1] for k in keys}) > 1 and key[1] is not None:
        parts.append(str(key[1]))
    return "/".join(parts)


def find_manifests(folder: Path) -> list[Path]:
    """The folder's own manifest; without one, every manifest below it (generate writes one per
    `<checkpoint>/<variant>/` or `<variant>/` subfolder)."""
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return [folder / name]
    found = sorted({p.parent: p for name in reversed(MANIFEST_NAMES) for p in folder.rglob(name)}.values())
    if not found:
        find_manifest(folder)  # raises the error that says what a clip folder needs
    return found


def read_clip_sets(folder: str | Path, name: str | None = None) -> list[ClipSet]:
    """Every clip set under `folder`, decoded to mono at the files' own rate: one per manifest and, within a
    manifest, one per (step, variant) group. Names: `name` (default: the folder's name), then the manifest's
    subfolder path, then `step-N` / the variant where a manifest holds several."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserFacingError(f"{folder}: clip folder not found; run `ssmttm generate` first or fix the path")
    not_computed = _not_computed_sets(folder, name or folder.name)
    if not_computed:
        return not_computed
    sets = []
    for manifest in find_manifests(folder):
        rows = read_manifest(manifest)
        if not rows:
            raise UserFacingError(f"{manifest}: the manifest lists no clips")
        base = "/".join([name or folder.name, *manifest.parent.relative_to(folder).parts])
        groups: dict[tuple[int | None, str | None], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(_group_key(row, manifest), []).append(row)
        keys = sorted(groups, key=lambda k: (k[0] if k[0] is not None else -1, k[1] or ""))
        digest = sha256_file(manifest)
        sets += [
            _read_group(manifest.parent, manifest, digest, group_name(base, key, keys), key, groups[key])
            for key in keys
        ]
    return sets


def _not_computed_sets(folder: Path, base: str) -> list[ClipSet]:
    """The empty sets of a clip-less folder whose summary.json says "not computed" (else [])."""
    summary_path = folder / SUMMARY_NAME
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    except json.JSONDecodeError:
        return []
    if not isinstance(summary, Mapping) or summary.get("status") != NOT_COMPUTED:
        return []
    if any(next(folder.rglob(name), None) for name in MANIFEST_NAMES):  # clips after all: read them as usual
        return []
    reason = f"{NOT_COMPUTED}: {summary.get('reason') or 'no reason recorded'}"
    if summary.get("fetch"):
        reason += f" (fetch with `{summary['fetch']}`)"
    variants = sorted(summary.get("skipped") or {}) or [None]
    return [
        ClipSet(name="/".join([base, v] if v else [base]), folder=folder, clips=[], variant=v, not_computed=reason)
        for v in variants
    ]


def _read_group(
    folder: Path, manifest: Path, digest: str, name: str, key: tuple[int | None, str | None], rows: list[dict]
) -> ClipSet:
    clips, failed, settings = [], [], []
    for row in rows:
        relative = _first(row, PATH_KEYS)
        reason = _failure(row)
        if reason is not None:
            failed.append({"path": relative, "caption_id": _first(row, CAPTION_ID_KEYS), "reason": reason})
            continue
        if not isinstance(relative, str) or row.get("caption") is None:
            raise UserFacingError(f"{manifest}: a row has no path (a string) or no caption: {json.dumps(row)[:200]}")
        if row.get("seed") is not None and not _is_int(row["seed"]):
            raise UserFacingError(f"{manifest}: a row's seed is not an integer: {json.dumps(row)[:200]}")
        path = Path(relative) if Path(relative).is_absolute() else folder / relative
        if not path.is_file():
            raise UserFacingError(f"{manifest}: lists {relative}, which is not in {folder}; regenerate the folder")
        samples, rate = load_audio(path)
        caption_id = _first(row, CAPTION_ID_KEYS)
        seed = row.get("seed")
        clips.append(
            Clip(
                clip_id=str(relative),
                caption=str(row["caption"]),
                caption_id=str(caption_id) if caption_id is not None else str(relative),
                seed=int(seed) if seed is not None else None,
                audio=to_mono(samples)[0],
                sample_rate=rate,
            )
        )
        if row.get("settings") is not None and row["settings"] not in settings:
            settings.append(row["settings"])
    clips.sort(key=lambda c: (c.caption_id, c.seed if c.seed is not None else -1, c.clip_id))
    return ClipSet(
        name=name,
        folder=folder,
        clips=clips,
        step=key[0],
        variant=key[1],
        failed=failed,
        settings=settings,
        manifest=str(manifest),
        manifest_sha256=digest,
    )
