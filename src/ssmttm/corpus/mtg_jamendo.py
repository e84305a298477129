"""MTG-Jamendo: metadata parsing, downloads with retries, TAR checksums and safe extraction.

Formats assumed (those of the `MTG/mtg-jamendo-dataset` repository):

- `raw_30s_cleantags.tsv`: a header, then one track a line, tab-separated: TRACK_ID (`track_0000214`), ARTIST_ID,
  ALBUM_ID, PATH (`14/214.mp3`: folder = TAR archive index), DURATION (seconds), then any number of TAGS columns
  (`genre---rock`, `mood/theme---happy`, `instrument---guitar`).
- `audio_licenses.txt`: one block per track, blocks separated by blank lines; the first line is the track PATH, then
  `<title> by <artist> from Jamendo: <track url>`, then a line naming the licence and ending with its Creative
  Commons URL (`Available under a Creative Commons Attribution license: http://creativecommons.org/licenses/by/3.0/`).
  The licence kept is the first creativecommons.org URL of the block (else the text after the last `: ` of a line
  that mentions a licence); it is stored as given and normalised later by the select stage.
- `raw_30s_audio_sha256_tars.txt`: `<sha256> <tar name>` per line.
- Audio TARs (`raw_30s_audio-NN.tar`) hold the tracks under their PATH (`NN/<id>.mp3`, possibly prefixed by `./` or
  a top folder).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ssmttm.artifacts import atomic_path
from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

USER_AGENT = "ssmttm (+https://github.com/; reproducible text-to-music pipeline)"
# Seconds to wait before retry k (k = 1, 2, ...): RETRY_WAIT_S * k. Tests set it to 0.
RETRY_WAIT_S = 2.0
_CHUNK = 1 << 20
_TRACK_PATH = re.compile(r"(\d+)/([A-Za-z0-9._-]+\.mp3)")
_CC_URL = re.compile(r"https?://(?:www\.)?creativecommons\.org/\S+", re.IGNORECASE)
_TITLE_LINE = re.compile(r"(?P<title>.+) by (?P<artist>.+?) from Jamendo:\s*\S+\s*$")


class DownloadError(UserFacingError):
    """A URL could not be downloaded after all retries; `permanent` when retrying could not help (HTTP 404...)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class ChecksumError(UserFacingError):
    """A downloaded archive does not have the expected sha256."""


# ----------------------------------------------------------------------------------------------- downloads


def _is_permanent(exc: Exception) -> bool:
    """HTTP 4xx (except 408/429) will not get better by retrying."""
    return isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500 and exc.code not in (408, 429)


def _retrying(url: str, retries: int, what: str, action):
    """Run `action()` (which opens `url`) with `retries` extra attempts and a growing wait between them."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_WAIT_S * attempt)
        try:
            return action()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = exc
            log.warning("download of %s failed (attempt %d/%d): %s", url, attempt + 1, retries + 1, exc)
            if _is_permanent(exc):
                break
    assert last is not None
    raise DownloadError(
        f"cannot download {what} from {url}: {last}; check the URL (and the network), then rerun", _is_permanent(last)
    )


def _open(url: str, timeout_s: float):
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout_s)


def download_to(url: str, dest: str | Path, retries: int, timeout_s: float, what: str = "file") -> str:
    """Stream `url` into `dest` atomically (retrying); return the file's sha256.

    `what` names the params key the URL came from, so the error says what to fix.
    """

    def action() -> str:
        digest = hashlib.sha256()
        with _open(url, timeout_s) as response, atomic_path(dest) as tmp, open(tmp, "wb") as out:
            while block := response.read(_CHUNK):
                digest.update(block)
                out.write(block)
        return digest.hexdigest()

    return _retrying(url, retries, what, action)


def download_text(url: str, retries: int, timeout_s: float, what: str) -> str:
    """Download a small UTF-8 text file (retrying) and return its content."""

    def action() -> str:
        with _open(url, timeout_s) as response:
            return response.read().decode("utf-8")

    return _retrying(url, retries, what, action)


# ----------------------------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class MtgTrack:
    track_id: str
    artist_id: str
    album_id: str
    path: str  # inside the TAR, e.g. "14/214.mp3"
    archive: int  # TAR index: the folder number of `path`
    duration_s: float
    tags: tuple[str, ...]


def parse_track_path(path: str, source: str = "raw_30s_cleantags.tsv") -> int:
    """Archive index of a PATH like `14/214.mp3`; refuses anything else (absolute, `..`, deeper folders)."""
    match = _TRACK_PATH.fullmatch(path)
    if not match or ".." in path:
        raise UserFacingError(f"{source}: unexpected track PATH {path!r}; expected '<folder number>/<file>.mp3'")
    return int(match.group(1))


def parse_tags_tsv(text: str, source: str = "raw_30s_cleantags.tsv") -> list[MtgTrack]:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TRACK_ID"):
        raise UserFacingError(f"{source}: missing the TRACK_ID/ARTIST_ID/ALBUM_ID/PATH/DURATION/TAGS header")
    tracks = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 5:
            raise UserFacingError(f"{source}:{number}: expected at least 5 tab-separated columns, got {len(fields)}")
        track_id, artist_id, album_id, path, duration = (f.strip() for f in fields[:5])
        try:
            duration_s = float(duration)
        except ValueError as exc:
            raise UserFacingError(f"{source}:{number}: DURATION {duration!r} is not a number") from exc
        tags = tuple(t.strip() for t in fields[5:] if t.strip())
        tracks.append(
            MtgTrack(
                track_id, artist_id, album_id, path, parse_track_path(path, f"{source}:{number}"), duration_s, tags
            )
        )
    return tracks


def tag_fields(tags: tuple[str, ...]) -> dict[str, object]:
    """`genre---rock`, `mood/theme---happy`, `instrument---guitar` -> manifest tags (genre, mood, instruments)."""
    groups: dict[str, list[str]] = {"genre": [], "mood/theme": [], "instrument": []}
    for tag in tags:
        category, _, value = tag.partition("---")
        if category in groups and value:
            groups[category].append(value)
    fields: dict[str, object] = {}
    if groups["genre"]:
        fields["genre"] = ", ".join(groups["genre"])
    if groups["mood/theme"]:
        fields["mood"] = ", ".join(groups["mood/theme"])
    if groups["instrument"]:
        fields["instruments"] = groups["instrument"]
    return fields


@dataclass(frozen=True)
class MtgLicence:
    licence: str  # as given: usually a creativecommons.org URL
    title: str | None
    artist: str | None


def _block_licence(lines: list[str]) -> str | None:
    for line in lines:
        if match := _CC_URL.search(line):
            return match.group(0)
    for line in lines:
        if "licen" in line.lower() and ": " in line:
            return line.rsplit(": ", 1)[1].strip() or None
    return None


def parse_audio_licenses(text: str) -> dict[str, MtgLicence]:
    """PATH -> licence (and title/artist when the block has them). Tracks without a licence line are left out."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if _TRACK_PATH.fullmatch(line):
            current = blocks.setdefault(line, [])
        elif line and current is not None:
            current.append(line)
    result = {}
    for path, lines in blocks.items():
        licence = _block_licence(lines)
        if licence is None:
            continue
        title = artist = None
        for line in lines:
            if match := _TITLE_LINE.match(line):
                title, artist = match.group("title").strip(), match.group("artist").strip()
                break
        result[path] = MtgLicence(licence, title, artist)
    return result


def parse_sha256_list(text: str, source: str) -> dict[str, str]:
    """`<sha256> <name>` lines -> {name: sha256}."""
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise UserFacingError(f"{source}:{number}: expected '<sha256> <name>', got {line.strip()!r}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def load_sha256_list(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"{path}: TAR checksum list not found (set corpus.mtg_jamendo.tar_sha256_path)")
    return parse_sha256_list(path.read_text(encoding="utf-8"), str(path))


# ----------------------------------------------------------------------------------------------- TARs


def tar_name(url: str) -> str:
    return PurePosixPath(urlparse(url).path).name


def verify_archive(path: str | Path, expected: str, actual: str | None = None) -> None:
    """Raise ChecksumError (and delete the archive) unless its sha256 is `expected`."""
    path = Path(path)
    if actual is None:
        from ssmttm.artifacts import sha256_file

        actual = sha256_file(path)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{path.name}: sha256 mismatch (expected {expected.lower()}, got {actual}); the archive was deleted "
            "and nothing was unpacked. Rerun to download it again; if it keeps failing the mirror or "
            "corpus.mtg_jamendo.tar_sha256_path is wrong."
        )


def _member_key(name: str) -> tuple[str, bool]:
    """(normalised name, safe?) for a TAR member name. Absolute names and `..` are unsafe."""
    safe = not name.startswith("/") and ".." not in PurePosixPath(name).parts and "\\" not in name
    while name.startswith("./"):
        name = name[2:]
    return name, safe


def _match(name: str, wanted: dict[str, Path]) -> str | None:
    """The wanted track path this member holds: exact, or under one top folder (`audio/14/214.mp3`)."""
    if name in wanted:
        return name
    parts = name.split("/")
    tail = "/".join(parts[-2:])
    return tail if len(parts) > 2 and tail in wanted else None


def extract_members(tar_path: str | Path, wanted: dict[str, Path]) -> tuple[dict[str, tuple[str, int]], dict[str, str]]:
    """Copy the regular-file members named in `wanted` (track path -> destination) out of a TAR, nothing else.

    Destinations come from `wanted`, never from member names, so a hostile archive cannot write elsewhere; members
    that are links, devices, absolute or contain `..` are refused even when their name matches.
    Returns ({track path: (sha256, bytes)}, {track path: problem}) ; paths absent from the TAR are problems too.
    """
    done: dict[str, tuple[str, int]] = {}
    problems: dict[str, str] = {}
    with tarfile.open(tar_path, mode="r:*") as archive:
        for member in archive:  # streaming: a 5 GB TAR is read once, front to back
            name, safe = _member_key(member.name)
            key = _match(name, wanted)
            if key is None or key in done:
                continue
            if not safe:
                problems[key] = f"refused unsafe member name {member.name!r}"
                continue
            if not member.isreg():
                problems[key] = f"refused member {member.name!r}: not a regular file (link or special file)"
                continue
            source = archive.extractfile(member)
            if source is None:
                problems[key] = f"cannot read member {member.name!r}"
                continue
            digest = hashlib.sha256()
            size = 0
            with source, atomic_path(wanted[key]) as tmp, open(tmp, "wb") as out:
                while block := source.read(_CHUNK):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
            done[key] = (digest.hexdigest(), size)
            problems.pop(key, None)
    for key in wanted:
        if key not in done and key not in problems:
            problems[key] = f"not found in {Path(tar_path).name}"
    return done, problems
