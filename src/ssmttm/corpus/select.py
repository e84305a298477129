"""`ssmttm select`: keep the fetched tracks that may be used and can be used.

A track is kept only if, in this order:
1. its file's own tags can be trusted. mutagen reads them, choosing the format from the bytes (never the file
   name); tags it cannot parse -> `tags_unreadable`. The raw bytes are then searched for licence words
   ("license", "creativecommons", "NoDerivs", "all rights reserved"...): words no parsed tag holds point at a tag
   block the parser skipped, so an APEv2 reader and ffmpeg's tag readers are asked too, and words none of them
   accounts for -> `tags_malformed`. A file that does not decode at all is `undecodable` instead.
2. its licence is allowed. The licence is read from up to three places: the manifest (`licence_manifest`), what
   yt-dlp reported (`licence_info`) and the tags: every value of a licence key (LICENSE, TXXX:LICENSE, WCOP, MP4
   freeform ...:LICENSE...), and every other text tag but names (comments, descriptions, copyright notices, custom
   keys) that uses licence words. Each value is normalised (`ssmttm.corpus.licences`). Sources that name different
   licences -> `licence_disagreement` (when `require_licence_agreement`; otherwise every named licence must be
   allowed); no licence, or one that is not recognised (a comment such as "CC BY-ND, enjoy!" included) ->
   `licence_unknown`; a licence outside `select.allowed_licences` -> `licence_not_allowed`. A manifest licence of
   "unknown" (MusicCaps) counts as absent, so yt-dlp's or the file's licence decides.
3. it decodes (`undecodable` otherwise) to finite samples (`non_finite`: NaN or infinite values);
4. min_duration_s <= duration <= max_duration_s (`too_short`, `too_long`).
Each rejected track gets exactly one row in rejected.tsv with the first reason that applies.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import numpy as np

from ssmttm.artifacts import (
    atomic_dir,
    read_jsonl,
    remove_stale_temporaries_in,
    sha256_file,
    write_jsonl,
    write_provenance,
    write_text,
)
from ssmttm.audio import audio_info, ffmpeg_metadata, load_audio
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.corpus.licences import (
    RAW_LICENCE_WORDS,
    RAW_WORD_MAX_BYTES,
    mentions_licence,
    normalise_licence,
    text_licence_words,
)
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress

log = logging.getLogger(__name__)

REASONS = (
    "licence_not_allowed",
    "licence_unknown",
    "licence_disagreement",
    "tags_unreadable",
    "tags_malformed",
    "undecodable",
    "non_finite",
    "too_short",
    "too_long",
)
SOURCE_ORDER = ("manifest", "info", "tags")
# Tag keys (lower case; one part of "TXXX:<desc>" or an MP4 freeform name) that hold a licence, besides every key
# containing "licen". Their values are licence statements whatever they say.
LICENCE_KEYS = frozenset({"wcop", "rights", "usageterms", "user"})
# Keys that hold names, numbers or lyrics, never a licence: "License to Kill" as a title is not a statement. Every
# other text tag (comments, descriptions, copyright notices, custom keys) is a statement when it uses licence words.
NAME_KEYS = frozenset(
    {
        *("title", "artist", "album", "albumartist", "album artist", "album_artist", "composer", "performer"),
        *("genre", "date", "year", "tracknumber", "tracktotal", "totaltracks", "discnumber", "disctotal", "track"),
        *("disc", "bpm", "key", "isrc", "encoder", "encoded_by", "encodedby", "language", "lyrics", "duration"),
        *("unsyncedlyrics", "tit1", "tit2", "tit3", "talb", "tpe1", "tpe2", "tpe3", "tpe4", "tcom", "tcon", "tdrc"),
        *("tdor", "tyer", "tdat", "trck", "tpos", "tbpm", "tkey", "tsrc", "tsse", "tenc", "tlan", "tlen", "uslt"),
        *("sylt", "\xa9nam", "\xa9art", "\xa9alb", "aart", "\xa9wrt", "\xa9gen", "\xa9day", "trkn", "tmpo"),
        *("\xa9too", "\xa9lyr", "handler_name", "vendor_id", "creation_time", "major_brand", "minor_version"),
        "compatible_brands",
    }
)
# Keys of pictures and other binary data (their bytes are not text).
BINARY_KEYS = frozenset({"apic", "covr", "metadata_block_picture", "coverart", "priv", "geob", "mcdi"})
RAW_CHUNK_BYTES = 1 << 22
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]*")  # a key name such as "license_url", as opposed to text in a key
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
class TagReading:
    statements: list[str]  # raw licence statements found in the tags, in tag order
    problem: str | None = None  # "tags_unreadable" or "tags_malformed" when the tags cannot be trusted
    detail: str = ""


@dataclass(frozen=True)
class SelectSummary:
    kept: int
    rejected: dict[str, int]
    out_dir: Path


# ----------------------------------------------------------------------------------------------- licences


class ContentOnly:
    """An open file seen without its name: mutagen then picks the format from the bytes alone, so FLAC behind an
    `.mp3` name is read as FLAC instead of failing as a broken MP3."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def _key_parts(key: str) -> list[str]:
    """ "TXXX:LICENSE" -> ["txxx", "license"]; "----:com.apple.iTunes:LICENSE" -> [..., "license"]."""
    return [part for part in key.lower().split(":") if part]


def _is_licence_key(parts: list[str]) -> bool:
    return any("licen" in part or part in LICENCE_KEYS for part in parts)


def _statements(pairs: list[tuple[str, str]]) -> list[str]:
    """The licence statements among (key, value) tag pairs, in tag order.

    Every value of a licence key is one; names (title, artist...) never are; any other text (comments,
    descriptions, copyright notices, custom keys) is one when it uses a licence's words.
    """
    found = []
    for key, value in pairs:
        parts, value = _key_parts(key), value.strip()
        # A key that names a licence itself, or holds licence words beside other text (a damaged ID3 frame whose
        # description swallowed its value), is a statement too.
        found += [
            part
            for part in key.split(":")
            if normalise_licence(part) is not None or (mentions_licence(part) and not _PLAIN_KEY.fullmatch(part))
        ]
        if not value:
            continue
        if _is_licence_key(parts) or (parts[:1] and parts[0] not in NAME_KEYS and mentions_licence(value)):
            found.append(value)
    return found


def _value_text(value: Any) -> str | None:
    """Text of one tag value; None for pictures and other binary data."""
    from mutagen.mp4 import MP4Cover

    if isinstance(value, MP4Cover):
        return None
    if isinstance(value, bytes):  # MP4 freeform values
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str | int | float):
        return str(value)
    if hasattr(value, "value"):  # ASF attributes
        return _value_text(value.value)
    if type(value).__name__ == "APETextValue":
        return str(value)
    return None


def _mutagen_pairs(audio: Any) -> list[tuple[str, str]]:
    """(key, text) pairs of every text tag mutagen parsed; ID3 frames without text contribute their summary."""
    from mutagen.id3 import ID3

    tags = getattr(audio, "tags", None)
    if tags is None:
        return []
    pairs: list[tuple[str, str]] = []
    if isinstance(tags, ID3):
        for frame in tags.values():
            key = f"{frame.FrameID}:{frame.desc}" if hasattr(frame, "desc") else frame.FrameID
            if hasattr(frame, "url"):
                pairs.append((key, str(frame.url)))
            elif isinstance(getattr(frame, "text", None), list | str):
                texts = frame.text if isinstance(frame.text, list) else [frame.text]
                pairs += [(key, str(t)) for t in texts]
            elif key.split(":")[0].lower() not in BINARY_KEYS:
                pairs.append((key, frame.pprint()))  # e.g. a chapter's sub-frames, a private frame's owner
        return pairs
    items = tags.items() if hasattr(tags, "items") else list(tags)
    for key, value in items:
        if str(key).lower() in BINARY_KEYS:
            continue
        for item in value if isinstance(value, list) else [value]:
            text = _value_text(item)
            if text is not None:
                pairs.append((str(key), text))
    return pairs


def _raw_licence_words(path: Path) -> list[bytes]:
    """Licence words anywhere in the file's bytes (tag blocks a parser skipped included), read in chunks."""
    words: list[bytes] = []
    carry = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(RAW_CHUNK_BYTES):
            buffer = carry + chunk.lower().replace(b"\0", b"")
            # a word that ends inside `carry` was counted with the previous chunk
            words += [m.group() for m in RAW_LICENCE_WORDS.finditer(buffer) if m.end() > len(carry)]
            carry = buffer[-RAW_WORD_MAX_BYTES:]
    return words


def _unaccounted(raw: list[bytes], parsed: list[bytes]) -> list[str]:
    """Licence words of the raw bytes that the parsed tags do not hold (as many times)."""
    missing = Counter(raw) - Counter(parsed)
    return sorted(word.decode("ascii", errors="replace") for word in missing.elements())


def _apev2_pairs(path: Path, audio: Any) -> list[tuple[str, str]]:
    """An APEv2 tag at the end of a file whose format has another tag type (MP3 with ID3 and APE: mutagen's MP3
    reads only ID3). Empty when there is none, or when the file's own reader already read it."""
    from mutagen.apev2 import APEv2

    if isinstance(getattr(audio, "tags", None), APEv2):
        return []
    try:
        return _mutagen_pairs(SimpleNamespace(tags=APEv2(str(path))))
    except Exception:  # noqa: BLE001 - no APE tag, or a damaged one: its licence words stay unaccounted
        return []


def _words(pairs: list[tuple[str, str]]) -> list[bytes]:
    return [word for key, value in pairs for word in text_licence_words(f"{key}\n{value}")]


def read_tag_licences(path: str | Path) -> TagReading:
    """The licence statements of a file's own tags, read by content, or the reason they cannot be trusted.

    mutagen reads the tags (format chosen from the bytes, not the name). The file's raw bytes are then searched
    for licence words: a word that no parsed tag holds means a tag block the parser skipped (damaged, or a format
    it does not read), so an APEv2 reader and ffmpeg's tag readers (RIFF INFO, Matroska...) are asked too. A word
    no reader accounts for, or tags that cannot be parsed at all, make the file's licence unknowable: rejected.
    """
    import mutagen

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            audio = mutagen.File(ContentOnly(handle))
    except Exception as exc:  # noqa: BLE001 - mutagen raises many types on damaged tags; all mean "unreadable"
        return TagReading([], "tags_unreadable", f"mutagen cannot parse the tags: {type(exc).__name__}: {exc}")
    pairs = _mutagen_pairs(audio) if audio is not None else []
    raw = _raw_licence_words(path)
    if audio is not None and not _unaccounted(raw, _words(pairs)):
        return TagReading(_statements(pairs))
    # mutagen does not know the container, or left licence words unread: ask the other readers.
    pairs += _apev2_pairs(path, audio)
    ffmpeg_pairs = ffmpeg_metadata(path)
    if audio is None and ffmpeg_pairs is None:
        return TagReading([], "tags_unreadable", "neither mutagen nor ffmpeg recognises the file's format")
    ffmpeg_pairs = ffmpeg_pairs or []
    missing = min(_unaccounted(raw, _words(pairs)), _unaccounted(raw, _words(ffmpeg_pairs)), key=len)
    if missing:
        return TagReading(
            [],
            "tags_malformed",
            f"the file's bytes hold licence words ({', '.join(missing)}) that no tag reader could parse: "
            "a damaged or unsupported tag block",
        )
    statements = _statements(pairs)
    statements += [s for s in _statements(ffmpeg_pairs) if s not in statements]
    return TagReading(statements)


def tag_licences(path: str | Path) -> list[str]:
    """Licence statements of a file's tags; raises UserFacingError when they cannot be trusted."""
    reading = read_tag_licences(path)
    if reading.problem:
        raise UserFacingError(f"{path}: {reading.problem}: {reading.detail}")
    return reading.statements


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


def _decode(path: Path, cfg: SelectConfig) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """Decode the whole file: ({duration_s, sample_rate, channels}, None), or ({}, (reason, detail)) when it does
    not decode, holds non-finite samples or has a duration out of range."""
    try:
        header = audio_info(path)
        if header.duration_s > cfg.max_duration_s:  # do not decode hours of audio only to refuse it
            return {}, ("too_long", f"{header.duration_s:.3f} s > {cfg.max_duration_s} s")
        samples, rate = load_audio(path)  # (C, N): the whole file must decode, not only its header
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing here
        return {}, ("undecodable", " ".join(str(exc).split())[:300])
    bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
    if bad:
        return {}, ("non_finite", f"{bad} of {samples.size} decoded samples are NaN or infinite")
    duration = samples.shape[1] / rate
    if duration < cfg.min_duration_s:
        return {}, ("too_short", f"{duration:.3f} s < {cfg.min_duration_s} s")
    if duration > cfg.max_duration_s:
        return {}, ("too_long", f"{duration:.3f} s > {cfg.max_duration_s} s")
    return {"duration_s": round(duration, 6), "sample_rate": int(rate), "channels": int(samples.shape[0])}, None


def _check_track(row: dict[str, Any], path: Path, cfg: SelectConfig) -> tuple[dict[str, Any] | None, tuple[str, str]]:
    """(kept row, ("", "")) or (None, (reason, detail))."""
    reading = read_tag_licences(path) if path.is_file() else TagReading([])
    if reading.problem:
        _, problem = _decode(path, cfg)
        # a file that does not even decode is reported as such: that is the real cause
        return None, problem if problem and problem[0] == "undecodable" else (reading.problem, reading.detail)
    raw = {
        "manifest": [row["licence_manifest"]] if row.get("licence_manifest") else [],
        "info": [row["licence_info"]] if row.get("licence_info") else [],
        "tags": reading.statements,
    }
    decision = decide_licence(raw, cfg)
    if decision.reason:
        return None, (decision.reason, decision.detail)
    audio, problem = _decode(path, cfg)
    if problem is not None:
        return None, problem
    kept = dict(row)
    kept.update(
        {
            "licence": decision.licence,
            "licence_sources": {s: v for s, v in decision.sources.items() if v is not None},
            **audio,
        }
    )
    return kept, ("", "")


def select_shard(fetched_dir: str | Path, cfg: SelectConfig, out_dir: str | Path) -> SelectSummary:
    """Write `out_dir`/kept.jsonl, rejected.tsv and provenance.json for one fetched shard."""
    fetched_dir, out_dir = Path(fetched_dir), Path(out_dir)
    remove_stale_temporaries_in(out_dir.parent)  # what killed runs left (kill -9 skips every clean-up)
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
