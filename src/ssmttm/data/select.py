"""`ssmttm select`: keep the fetched tracks that may be used and can be used.

A track is kept only if, in this order:
1. its licence is allowed. The licence is read from up to three places: the manifest (`licence_manifest`), what
   yt-dlp reported (`licence_info`) and the file's own tags (mutagen: LICENSE/licence comments, ID3 WCOP and
   TXXX:LICENSE frames, and copyright fields such as TCOP that name a licence or reserve all rights). Each value is
   normalised (`ssmttm.data.licences`). Sources that name different licences -> `licence_disagreement` (when
   `require_licence_agreement`; otherwise every named licence must be allowed); no licence, or one that is not
   recognised -> `licence_unknown`; a licence outside `select.allowed_licences` -> `licence_not_allowed`.
   A manifest licence of "unknown" (MusicCaps) counts as absent, so yt-dlp's or the file's licence decides.
2. it decodes (`undecodable` otherwise);
3. min_duration_s <= duration <= max_duration_s (`too_short`, `too_long`).
Each rejected track gets exactly one row in rejected.tsv with the first reason that applies.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmttm.artifacts import atomic_dir, read_jsonl, sha256_file, write_jsonl, write_provenance, write_text
from ssmttm.audio import audio_info, load_audio
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.data.licences import mentions_licence, normalise_licence
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress

log = logging.getLogger(__name__)

REASONS = ("licence_not_allowed", "licence_unknown", "licence_disagreement", "undecodable", "too_short", "too_long")
SOURCE_ORDER = ("manifest", "info", "tags")
# Tag keys (lower case; ID3 TXXX/WXXX descriptions and MP4 freeform names included) that hold a licence.
LICENCE_KEYS = frozenset({"license", "licence", "licenseurl", "license_url", "licenceurl", "wcop", "rights"})
# Tag keys that hold a copyright notice: used only when the notice names a licence or reserves all rights.
COPYRIGHT_KEYS = frozenset({"copyright", "tcop", "cprt", "\xa9cpy"})
_ABSENT = ("", "unknown", "none", "null")


@dataclass(frozen=True)
class SelectConfig:
    allowed_licences: tuple[str, ...] = ("CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "MIT")
    min_duration_s: float = 10.0
    max_duration_s: float = 3600.0
    require_licence_agreement: bool = True


@dataclass(frozen=True)
class LicenceDecision:
    licence: str | None  # the normalised licence when accepted
    sources: dict[str, str | None]  # source -> normalised licence (None: named but not recognised)
    reason: str | None = None  # a REASONS entry when rejected
    detail: str = ""


@dataclass(frozen=True)
class SelectSummary:
    kept: int
    rejected: dict[str, int]
    out_dir: Path


# ----------------------------------------------------------------------------------------------- licences


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    for attribute in ("url", "text"):  # ID3 frames
        if hasattr(value, attribute):
            inner = getattr(value, attribute)
            return " ".join(map(str, inner)) if isinstance(inner, list) else str(inner)
    return str(value)


def _classify(key: str, values: list[str], out: list[str]) -> None:
    key = key.lower().rsplit(":", 1)[-1]  # "TXXX:LICENSE", "----:com.apple.iTunes:LICENSE" -> "license"
    for value in values:
        value = value.strip()
        if not value:
            continue
        if key in LICENCE_KEYS or (key in COPYRIGHT_KEYS and mentions_licence(value)):
            out.append(value)


def tag_licences(path: str | Path) -> list[str]:
    """Licence statements found in a file's own tags (raw strings, in tag order)."""
    import mutagen
    from mutagen.id3 import ID3

    try:
        audio = mutagen.File(str(path))
    except Exception as exc:  # noqa: BLE001 - mutagen raises many types on damaged files; decoding judges them
        log.debug("%s: cannot read tags: %s", path, exc)
        return []
    tags = getattr(audio, "tags", None)
    if tags is None:
        return []
    found: list[str] = []
    if isinstance(tags, ID3):
        for frame in tags.values():
            frame_id = frame.FrameID
            key = frame.desc if frame_id in ("TXXX", "WXXX") else frame_id
            values = [frame.url] if hasattr(frame, "url") else [str(t) for t in getattr(frame, "text", [])]
            _classify(key, values, found)
        return found
    items = tags.items() if hasattr(tags, "items") else list(tags)
    for key, value in items:
        values = value if isinstance(value, list) else [value]
        _classify(str(key), [_text(v) for v in values], found)
    return found


def decide_licence(raw: dict[str, list[str]], cfg: SelectConfig) -> LicenceDecision:
    """Apply the licence rules to raw licence strings per source ("manifest", "info", "tags")."""
    present = {
        source: [v for v in raw.get(source, []) if isinstance(v, str) and v.strip().lower() not in _ABSENT]
        for source in SOURCE_ORDER
    }
    present = {s: v for s, v in present.items() if v}
    if not present:
        return LicenceDecision(None, {}, "licence_unknown", "no licence in the manifest, the download info or tags")
    normalised: dict[str, set[str | None]] = {s: {normalise_licence(v) for v in vals} for s, vals in present.items()}
    sources = {s: (next(iter(ids)) if len(ids) == 1 else None) for s, ids in normalised.items()}
    named = {i for ids in normalised.values() for i in ids if i is not None}
    if cfg.require_licence_agreement and len(named) > 1:
        detail = ", ".join(f"{s}={'/'.join(sorted(str(i) for i in ids))}" for s, ids in normalised.items())
        return LicenceDecision(None, sources, "licence_disagreement", detail)
    unknown = [(s, v) for s, vals in present.items() for v in vals if normalise_licence(v) is None]
    if unknown:
        detail = "; ".join(f"{s}: {v!r} is not a recognised licence" for s, v in unknown)
        return LicenceDecision(None, sources, "licence_unknown", detail)
    refused = sorted(named - set(cfg.allowed_licences))
    if refused:
        return LicenceDecision(
            None, sources, "licence_not_allowed", f"{', '.join(refused)} not in select.allowed_licences"
        )
    # The first source (manifest, info, tags) naming one licence; they all agree unless agreement is not required.
    licence = next((sources[s] for s in SOURCE_ORDER if sources.get(s)), None) or sorted(named)[0]
    return LicenceDecision(licence, sources)


# ----------------------------------------------------------------------------------------------- stage


def _check_track(row: dict[str, Any], path: Path, cfg: SelectConfig) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """(kept row, ("", "")) or (None, (reason, detail))."""
    raw = {
        "manifest": [row["licence_manifest"]] if row.get("licence_manifest") else [],
        "info": [row["licence_info"]] if row.get("licence_info") else [],
        "tags": tag_licences(path) if path.is_file() else [],
    }
    decision = decide_licence(raw, cfg)
    if decision.reason:
        return None, (decision.reason, decision.detail)
    try:
        header = audio_info(path)
        if header.duration_s > cfg.max_duration_s:  # do not decode hours of audio only to refuse it
            return None, ("too_long", f"{header.duration_s:.3f} s > {cfg.max_duration_s} s")
        samples, rate = load_audio(path)  # (C, N): the whole file must decode, not only its header
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing here
        return None, ("undecodable", " ".join(str(exc).split())[:300])
    duration = samples.shape[1] / rate
    if duration < cfg.min_duration_s:
        return None, ("too_short", f"{duration:.3f} s < {cfg.min_duration_s} s")
    if duration > cfg.max_duration_s:
        return None, ("too_long", f"{duration:.3f} s > {cfg.max_duration_s} s")
    kept = dict(row)
    kept.update(
        {
            "licence": decision.licence,
            "licence_sources": {s: v for s, v in decision.sources.items() if v is not None},
            "duration_s": round(duration, 6),
            "sample_rate": int(rate),
            "channels": int(samples.shape[0]),
        }
    )
    return kept, ("", "")


def select_shard(fetched_dir: str | Path, cfg: SelectConfig, out_dir: str | Path) -> SelectSummary:
    """Write `out_dir`/kept.jsonl, rejected.tsv and provenance.json for one fetched shard."""
    fetched_dir, out_dir = Path(fetched_dir), Path(out_dir)
    tracks_path = fetched_dir / "tracks.jsonl"
    if not tracks_path.is_file():
        raise UserFacingError(f"{tracks_path}: not found; run `ssmttm fetch` for this shard first")
    rows = sorted(read_jsonl(tracks_path), key=lambda r: r["id"])
    kept: list[dict[str, Any]] = []
    rejected: list[tuple[str, str, str]] = []
    for row in progress(rows, f"select {fetched_dir.name}", "track"):
        # The file is looked up inside the fetched folder, so select works from any working directory.
        path = fetched_dir / "audio" / Path(row["audio_path"]).name
        result, (reason, detail) = _check_track(row, path, cfg)
        if result is not None:
            kept.append(result)
        else:
            rejected.append((row["id"], reason, " ".join(detail.replace("\t", " ").split())))
    counts = Counter(reason for _, reason, _ in rejected)
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "kept.jsonl", kept)
        write_text(
            tmp / "rejected.tsv", "".join(f"{a}\t{b}\t{c}\n" for a, b, c in [("id", "reason", "detail"), *rejected])
        )
        write_provenance(
            tmp,
            "select",
            dataclass_to_dict(cfg),
            None,
            kept=len(kept),
            rejected={r: counts.get(r, 0) for r in REASONS},
            tracks_sha256=sha256_file(tracks_path),
        )
    log.info("select %s: kept %d, rejected %d (%s)", fetched_dir, len(kept), len(rejected), dict(counts))
    return SelectSummary(len(kept), dict(counts), out_dir)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fetched", required=True, help="a fetch output folder, e.g. data/fetch/shard-00003")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/select/shard-00003")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = section_to_dataclass(SelectConfig, params.get("select"))
    summary = select_shard(args.fetched, cfg, args.out)
    print(f"{summary.out_dir}: kept {summary.kept}, rejected {sum(summary.rejected.values())}")
    return 0
