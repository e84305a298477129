"""Caption sets of the generate stage (params `generate.captions`), each caption with a stable id.

    test_split  the `test` rows of the token shards (the demo): id = clip id, so every generated clip has its
                reference clip (codes in the shards, audio in data/segment)
    musiccaps   the MusicCaps CSV (PAPER.md section 1; columns ytid, start_s, end_s, ..., caption): id = ytid
    file        a .txt file (one caption a line, id caption-NNNNN by line order among non-empty lines) or .jsonl rows
                with `caption` and optionally `id` (or `clip_id`)

The id names the clip's WAV (`<id>.wav`) and, with the params seed, its seed; `generate.max_captions` keeps the first
N captions in the set's order (test_split: sorted by clip id; the files: their own order).

Reference audio: test_split's is local (the segment clips). musiccaps and file name where to fetch it
(`reference_sources`): MusicCaps rows give the YouTube id (URL from corpus.musiccaps.url_template) and the
[start_s, end_s) excerpt; .jsonl caption rows may give `url` and optionally `start_s`, `end_s`. `ssmttm
fetch-references` fetches them; `generate --reference --fetched` pairs them with the captions by id.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ssmttm.errors import UserFacingError
from ssmttm.generate.config import GenerateConfig
from ssmttm.inputs import read_text_utf8
from ssmttm.tokens.shards import array_to_matrices, list_shards, read_shard_metadata

SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")  # ids become file names (YouTube ids may start with "-")
TEST_SPLIT = "test"


@dataclass(frozen=True)
class Caption:
    caption_id: str
    text: str
    clip_id: str | None = None  # the reference clip (test_split only)


@dataclass(frozen=True)
class Reference:
    """A reference clip: its caption and its codes (K, T) int64 (from the token shards; None for a fetched clip,
    which is encoded when a variant needs it)."""

    caption: Caption
    codes: np.ndarray | None


@dataclass(frozen=True)
class AudioSource:
    """Where the reference audio of a caption is fetched from: a URL and the excerpt [start_s, end_s) (both None:
    the whole file)."""

    url: str
    start_s: float | None = None
    end_s: float | None = None


def read_captions(path: str | Path) -> list[str]:
    """One caption per line (.txt), or the `caption` field of .jsonl rows."""
    return [c.text for c in read_caption_file(path)]


def read_caption_file(path: str | Path) -> list[Caption]:
    """Captions of a .txt (id caption-NNNNN) or .jsonl file (id from `id` or `clip_id`, else caption-NNNNN)."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"caption file {path} not found")
    lines = [line for line in read_text_utf8(path, "caption file").splitlines() if line.strip()]
    if not lines:
        raise UserFacingError(f"caption file {path} has no captions; write one caption a line (.txt) or .jsonl rows")
    if path.suffix != ".jsonl":
        return [Caption(f"caption-{i:05d}", line.strip()) for i, line in enumerate(lines)]
    captions = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            text = row["caption"]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise UserFacingError(f"{path}: every line must be a JSON object with a 'caption' field ({exc})") from None
        caption_id = row.get("id") or row.get("clip_id") or f"caption-{i:05d}"
        if not isinstance(text, str) or not isinstance(caption_id, str | int) or isinstance(caption_id, bool):
            raise UserFacingError(
                f"{path}: row {i + 1}: 'caption' must be a string and 'id' a string or an integer "
                f"(got {type(text).__name__}, {type(caption_id).__name__})"
            )
        captions.append(Caption(str(caption_id), text))
    return captions


def read_musiccaps(path: str | Path) -> list[Caption]:
    """MusicCaps CSV rows in file order: id = ytid, text = caption."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"MusicCaps CSV {path} not found; set generate.captions_path to musiccaps-public.csv")
    with io.StringIO(read_text_utf8(path, "MusicCaps CSV"), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"ytid", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise UserFacingError(f"{path}: not a MusicCaps CSV (no column {', '.join(sorted(missing))})")
        return [Caption(row["ytid"], row["caption"]) for row in reader]


def _excerpt(start: object, end: object, where: str) -> tuple[float | None, float | None]:
    """(start_s, end_s) as numbers with 0 <= start < end, or (None, None) when neither is given."""
    if start in (None, "") and end in (None, ""):
        return None, None
    try:
        start_s, end_s = float(start), float(end)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserFacingError(f"{where}: start_s and end_s must both be numbers (got {start!r}, {end!r})") from None
    if not 0 <= start_s < end_s:
        raise UserFacingError(f"{where}: needs 0 <= start_s < end_s (got {start_s}, {end_s})")
    return start_s, end_s


def reference_sources(cfg: GenerateConfig, url_template: str) -> dict[str, AudioSource]:
    """caption id -> where its reference audio is fetched from, for the musiccaps and file sets.

    MusicCaps: `url_template.format(ytid=...)` and the row's [start_s, end_s). A .jsonl caption file: each row's
    `url` with its optional start_s/end_s (rows without `url` have no reference); a .txt file has none.
    """
    path = Path(cfg.captions_path or "")
    if cfg.captions == "musiccaps":
        read_musiccaps(path)  # the same checks as the caption set (file present, columns)
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "start_s" not in (reader.fieldnames or []) or "end_s" not in (reader.fieldnames or []):
                raise UserFacingError(f"{path}: not a MusicCaps CSV (no start_s / end_s columns)")
            return {
                row["ytid"]: AudioSource(
                    url_template.format(ytid=row["ytid"]), *_excerpt(row["start_s"], row["end_s"], f"{path}:{number}")
                )
                for number, row in enumerate(reader, start=2)
            }
    if cfg.captions != "file" or path.suffix != ".jsonl":
        return {}
    ids = [c.caption_id for c in read_caption_file(path)]
    lines = [line for line in read_text_utf8(path, "caption file").splitlines() if line.strip()]
    sources = {}
    for number, (caption_id, line) in enumerate(zip(ids, lines, strict=True), start=1):
        row = json.loads(line)
        if row.get("url"):
            where = f"{path}: row {number}"
            sources[caption_id] = AudioSource(str(row["url"]), *_excerpt(row.get("start_s"), row.get("end_s"), where))
    return sources


def read_test_split(shards_dir: str | Path, with_codes: bool = False) -> list[Reference]:
    """The `test` rows of the token shards, sorted by clip id; codes (K, T) only when asked (row group by row group,
    test rows only, so the paper's shards never load whole)."""
    shards = list_shards(shards_dir)
    if not shards:
        raise UserFacingError(
            f"{shards_dir}: no token shards (shard-NNNNN.parquet); run `ssmttm tokenize` first or pass --shards"
        )
    columns = ["clip_id", "split", "caption"] + (["codes"] if with_codes else [])
    rows = []
    for shard in shards:
        for batch in pq.ParquetFile(str(shard)).iter_batches(columns=columns):
            keep = [i for i, split in enumerate(batch.column("split").to_pylist()) if split == TEST_SPLIT]
            if not keep:
                continue
            batch = batch.take(keep)
            codes = array_to_matrices(batch.column("codes"), np.int64) if with_codes else [None] * len(keep)
            for clip_id, text, clip_codes in zip(
                batch.column("clip_id").to_pylist(), batch.column("caption").to_pylist(), codes, strict=True
            ):
                rows.append(Reference(Caption(clip_id, text, clip_id), clip_codes))
    if not rows:
        raise UserFacingError(
            f"{shards_dir}: the token shards have no '{TEST_SPLIT}' rows; set tokenize.test_fraction > 0 or use "
            "generate.captions: musiccaps / file"
        )
    return sorted(rows, key=lambda r: r.caption.caption_id)


def shards_codec(shards_dir: str | Path) -> dict:
    """The codec identity the shards were tokenized with (to refuse decoding them with another codec)."""
    return read_shard_metadata(list_shards(shards_dir)[0])["codec"]


def check_ids(captions: list[Caption], source: str) -> None:
    seen: set[str] = set()
    for caption in captions:
        if not SAFE_ID.match(caption.caption_id):
            raise UserFacingError(
                f"{source}: caption id {caption.caption_id!r} cannot name a file; use letters, digits, '.', '_', '-'"
            )
        if caption.caption_id in seen:
            raise UserFacingError(f"{source}: caption id {caption.caption_id!r} appears twice; ids must be unique")
        seen.add(caption.caption_id)


def load_captions(cfg: GenerateConfig, shards_dir: str | Path | None) -> list[Caption]:
    """The configured caption set, first `max_captions` of it."""
    if cfg.captions == "test_split":
        if shards_dir is None:
            raise UserFacingError("generate.captions is test_split: pass --shards with the token shards folder")
        captions, source = [r.caption for r in read_test_split(shards_dir)], f"{shards_dir} (test split)"
    elif cfg.captions == "musiccaps":
        captions, source = read_musiccaps(cfg.captions_path), str(cfg.captions_path)
    else:
        captions, source = read_caption_file(cfg.captions_path), str(cfg.captions_path)
    if not captions:
        raise UserFacingError(f"{source}: the caption set is empty; add captions or choose another generate.captions")
    check_ids(captions, source)
    return captions[: cfg.max_captions] if cfg.max_captions else captions


def load_references(cfg: GenerateConfig, shards_dir: str | Path) -> list[Reference]:
    """The reference clips of the test split, with their codes (the other sets' references are fetched: see
    references.load_fetched_references)."""
    if cfg.captions != "test_split":
        raise UserFacingError(
            f"generate.captions is {cfg.captions!r}: its references are fetched clips, not token shards; run "
            "`ssmttm fetch-references` and pass its folder with --fetched"
        )
    references = read_test_split(shards_dir, with_codes=True)
    check_ids([r.caption for r in references], f"{shards_dir} (test split)")
    return references[: cfg.max_captions] if cfg.max_captions else references
