"""The user's track list (`corpus.source: manifest`, and the rows `ssmttm manifest --from-folder` writes): a CSV, TSV
or JSONL with columns id, url, licence and optional source, tags (a JSON object), start_s, end_s, caption, sha256.
Every field of every row is checked; an error names the file, the line and the field. Track ids are checked here for
every source (`check_id`): they become file names in every later stage.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ssmttm.artifacts import TMP_MARK
from ssmttm.errors import UserFacingError

SOURCES = ("demo", "mtg_jamendo", "musiccaps", "manifest")
TAG_KEYS = ("mood", "genre", "style", "instruments", "bpm", "key", "title", "artist")
USER_COLUMNS = ("id", "url", "licence", "source", "tags", "start_s", "end_s", "caption", "sha256")
URL_SCHEMES = ("http", "https", "file")  # pkg:// is for the demo's own rows; fetch refuses every other scheme
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
# Ids become file names with suffixes ("<id>-0000.wav.tmp-<pid>-<host>-<hex>", "<id>.flac.sha256"): 128 characters
# keep every one of them far below the 255-byte limit of common file systems.
MAX_ID_LENGTH = 128
UNKNOWN_LICENCE = "unknown"


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
