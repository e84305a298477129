"""`ssmttm manifest --from-folder DIR --write FILE`: a user manifest (JSONL) for a folder of your own audio.

Every audio file under DIR (found by suffix, recursively, in sorted order) becomes one row:
- `id`: its path under DIR without the suffix, every character outside `[A-Za-z0-9._-]` replaced by `_`; 8 hex
  digits of the path's hash are appended when that id is not unique or longer than 100 characters;
- `url`: `file:<path>` relative to the working directory (the repository root) when the file lies inside it, else a
  `file:///absolute/path` URL, which works on this machine only;
- `licence`: the one licence the file's own tags name; else the licence declared with `--licence`. A file whose
  tags cannot be read, or name a licence that is not recognised (or several), gets `unknown`: select rejects it
  and says why. Without `--licence`, a file whose tags name no licence stops the command: a licence is never
  assumed. `--licence PRIVATE` declares audio you may train on without a public licence (your own recordings);
  select keeps it only when `select.allowed_licences` lists PRIVATE, which no profile does by default;
- `sha256`: fetch checks it, so a file edited after the manifest was written is noticed;
- `tags`: title, artist, genre and bpm from the file's tags, for tag captions.
The FILE is a pipeline input: set `corpus.source: manifest`, `corpus.manifest_path: FILE` and
`fetch.allow_file_urls: true`; editing it (or regenerating it after the folder changed) reruns what depends on it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmttm.artifacts import TMP_MARK, sha256_file, write_jsonl
from ssmttm.corpus.licences import PRIVATE, normalise_licence
from ssmttm.corpus.urls import relative_file_url
from ssmttm.corpus.user_manifest import UNKNOWN_LICENCE, user_row
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress

AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".aif", ".aiff", ".webm", ".mka", ".wv"}
)
MAX_SLUG = 100
# easy-tag keys (mutagen's common names for ID3, MP4 and Vorbis fields) copied into the manifest's tags
DESCRIPTIVE_TAGS = ("title", "artist", "genre", "bpm")


@dataclass(frozen=True)
class FolderManifest:
    path: Path
    rows: int
    licence_counts: dict[str, int]  # "from tags" | "declared" | "unknown" -> files
    skipped: int  # files under DIR without an audio suffix


def _slug(relative: Path) -> str:
    text = relative.with_suffix("").as_posix()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    slug = re.sub(r"\.{2,}", ".", slug).replace(TMP_MARK, ".tmp_").strip("._-")
    return slug or "track"


def track_ids(relatives: list[Path]) -> list[str]:
    """One valid, unique id per relative path (same order); deterministic for the same list of paths."""
    slugs = [_slug(r) for r in relatives]
    counts = Counter(slugs)
    ids = []
    for relative, slug in zip(relatives, slugs, strict=True):
        if counts[slug] > 1 or len(slug) > MAX_SLUG:
            slug = f"{slug[:MAX_SLUG]}-{hashlib.sha256(relative.as_posix().encode()).hexdigest()[:8]}"
        ids.append(slug)
    return ids


def _portable_url(path: Path) -> str:
    absolute = path.resolve()
    try:
        return relative_file_url(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return absolute.as_uri()


def _descriptive_tags(path: Path) -> dict[str, Any]:
    """title/artist/genre/bpm from the file's tags (format chosen by content); {} when there are none."""
    import mutagen

    from ssmttm.corpus.select import ContentOnly

    try:
        with open(path, "rb") as handle:
            audio = mutagen.File(ContentOnly(handle), easy=True)
    except Exception:  # noqa: BLE001 - damaged tags: select reports them; names are optional here
        return {}
    if audio is None or audio.tags is None:
        return {}
    tags: dict[str, Any] = {}
    for key in DESCRIPTIVE_TAGS:
        values = audio.tags.get(key) or []
        text = ", ".join(str(v).strip() for v in (values if isinstance(values, list) else [values]) if str(v).strip())
        if text:
            tags[key] = text
    if "bpm" in tags:
        try:
            tags["bpm"] = round(float(tags["bpm"]))
        except ValueError:
            del tags["bpm"]
    return tags


def _tag_licence(path: Path) -> str | None:
    """The one licence id the tags name; UNKNOWN_LICENCE when they cannot be trusted or name none clearly; None
    when they say nothing about a licence."""
    from ssmttm.corpus.select import read_tag_licences

    reading = read_tag_licences(path)
    if reading.problem:
        return UNKNOWN_LICENCE
    if not reading.statements:
        return None
    ids = {normalise_licence(statement) for statement in reading.statements}
    return ids.pop() if len(ids) == 1 and None not in ids else UNKNOWN_LICENCE


def write_folder_manifest(folder: str | Path, out_path: str | Path, licence: str | None) -> FolderManifest:
    """Write a user manifest for every audio file under `folder` (see the module docstring)."""
    folder, out_path = Path(folder), Path(out_path)
    if not folder.is_dir():
        raise UserFacingError(f"--from-folder {folder}: not a folder")
    declared = None
    if licence is not None:
        declared = normalise_licence(licence)
        if declared is None:
            raise UserFacingError(
                f"--licence {licence!r} is not a recognised licence; use an id such as CC-BY-4.0, CC-BY-SA-4.0, "
                f"CC0-1.0 or MIT, or {PRIVATE} for audio you may train on without a public licence"
            )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    if not audio:
        raise UserFacingError(f"--from-folder {folder}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    ids = track_ids([p.relative_to(folder) for p in audio])
    rows, origins, unlicensed = [], Counter(), []
    for track_id, path in progress(list(zip(ids, audio, strict=True)), f"manifest {folder}", "file"):
        found = _tag_licence(path)
        if found is None and declared is None:
            unlicensed.append(path)
            continue
        if found is None:
            origins["declared"] += 1
        else:
            origins["unknown" if found == UNKNOWN_LICENCE else "from tags"] += 1
        record = {
            "id": track_id,
            "url": _portable_url(path),
            "licence": found or declared,
            "tags": _descriptive_tags(path),
            "sha256": sha256_file(path),
        }
        rows.append(user_row(record, str(path)))
    if unlicensed:
        raise UserFacingError(
            f"{len(unlicensed)} file(s) under {folder} name no licence in their tags (first: {unlicensed[0]}); "
            f"declare the licence of the folder with --licence (e.g. CC-BY-4.0, or {PRIVATE} for audio you may "
            "train on without a public licence): a licence is never assumed"
        )
    os.makedirs(out_path.parent, exist_ok=True)
    write_jsonl(out_path, rows)
    return FolderManifest(out_path, len(rows), dict(origins), len(files) - len(audio))
