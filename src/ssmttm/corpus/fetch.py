"""`ssmttm fetch`: download the tracks of one manifest shard into `data/fetch/shard-NNNNN/`.

Media URLs go through the yt-dlp Python API (YouTube, direct http(s) links, and file:// when allowed); MusicCaps-style
rows with start_s/end_s are cut by yt-dlp's download ranges (ffmpeg from imageio-ffmpeg). MTG-Jamendo rows (those
with an `archive`) come out of their TAR, downloaded once and checked against the published sha256 before anything
is unpacked.

Everything lands first in `fetch.cache_dir`, shared by shards and reruns:
    audio/<id>.<ext>            the file
    audio/<id>.<ext>.sha256     its checksum (`<sha256>  <name>`)
    items/<id>.json             url, file name, sha256, bytes and the yt-dlp info: written last, so its presence
                                means the item is complete
    archives/<name>.tar         MTG TARs (deleted after unpacking unless fetch.keep_archives)
An item whose record, file and checksum agree (and whose URL is unchanged) is never downloaded again, so a failed
or killed run resumes where it stopped. The shard folder hard-links the files from the cache (copy as fallback) and
is published atomically, and only when the share of failed items is within fetch.max_failure_fraction.

A failed item is `permanent` (HTTP 4xx but 408/429, a missing, empty or non-regular local file, an empty download, a
page that is not media, a refused URL scheme, a wrong checksum, an id that cannot be a file name) or `transient`
(network errors, 5xx...); only transient failures are retried, with a growing wait. failures.tsv lists each failed
item: id, url, kind, and the cause in words. A `file://` row with start_s/end_s is copied whole (yt-dlp cannot cut
local files); segment keeps its [start_s, end_s) excerpt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ssmttm.artifacts import (
    atomic_dir,
    link_or_copy,
    remove_stale_temporaries_in,
    sha256_file,
    temporary_name,
    write_json,
    write_jsonl,
    write_provenance,
    write_text,
)
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.corpus.manifest import CorpusConfig
from ssmttm.corpus.urls import is_local, local_path, resolve_url
from ssmttm.corpus.user_manifest import check_id
from ssmttm.errors import UserFacingError
from ssmttm.progress import progress

log = logging.getLogger(__name__)

# Seconds to wait before retry k of an item: RETRY_WAIT_S * k. Tests set it to 0.
RETRY_WAIT_S = 2.0
INFO_FIELDS = ("title", "license", "duration", "uploader", "webpage_url", "ext")
ROW_EXTRAS = ("start_s", "end_s", "caption")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# yt-dlp messages of failures that retrying cannot fix, with the cause they name.
PERMANENT_MESSAGES = (
    ("Did not get any data blocks", "the URL served an empty file (0 bytes)"),
    ("Unsupported URL", "the URL is not a media file or a page yt-dlp can read"),
    ("No such file or directory", "the local file does not exist"),
    ("Video unavailable", "the video is unavailable"),
    ("Private video", "the video is private"),
    ("Invalid data found when processing input", "the file does not decode as audio"),
    ("Postprocessing:", "the file could not be converted to fetch.audio_format"),
)


@dataclass(frozen=True)
class FetchConfig:
    retries: int = 2
    timeout_s: float = 60.0
    max_failure_fraction: float = 0.05
    references_max_failure_fraction: float = 0.25  # fetch_references: a share of vanished reference videos
    allow_file_urls: bool = False
    cache_dir: str = "data/fetch/_cache"
    audio_format: str = "best"
    keep_archives: bool = False


@dataclass(frozen=True)
class FetchSummary:
    shard: int
    items: int
    fetched: int
    failed: int
    out_dir: Path


@dataclass(frozen=True)
class CachedItem:
    path: Path
    sha256: str
    bytes: int
    info: dict[str, Any]


class ItemError(Exception):
    """One item failed; `permanent` ones are not retried (a refused scheme, a wrong checksum, HTTP 404, a missing or
    empty file)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent

    @property
    def kind(self) -> str:
        return "permanent" if self.permanent else "transient"


# ----------------------------------------------------------------------------------------------- cache


class Cache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.audio = self.root / "audio"
        self.items = self.root / "items"
        self.archives = self.root / "archives"
        for folder in (self.audio, self.items, self.archives):
            folder.mkdir(parents=True, exist_ok=True)

    def lookup(self, row: dict[str, Any]) -> CachedItem | None:
        """The cached item of `row` when its record, file and checksum all agree; None otherwise."""
        record_path = self.items / f"{row['id']}.json"
        if not record_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            path = self.audio / record["file"]
            sidecar = (self.audio / f"{record['file']}.sha256").read_text().split()[0]
        except (OSError, ValueError, KeyError, IndexError):
            return None
        if record.get("url") != row["url"] or not path.is_file() or sidecar != record.get("sha256"):
            return None
        if row.get("sha256") and row["sha256"] != record["sha256"]:
            return None
        if sha256_file(path) != record["sha256"]:
            log.warning("%s: cached file changed since it was fetched; fetching it again", path)
            return None
        return CachedItem(path, record["sha256"], int(record["bytes"]), record.get("info") or {})

    def store(self, row: dict[str, Any], file: Path, info: dict[str, Any], sha256: str | None = None) -> CachedItem:
        """Move (or keep) `file` as audio/<id>.<ext>, then write its sidecar, then the record that commits it."""
        ext = file.suffix.lstrip(".") or "bin"
        name = f"{row['id']}.{ext}"
        dest = self.audio / name
        if file != dest:
            os.replace(file, dest)
        digest = sha256 or sha256_file(dest)
        size = dest.stat().st_size
        if row.get("sha256") and row["sha256"] != digest:
            dest.unlink(missing_ok=True)
            raise ItemError(f"sha256 mismatch: manifest expects {row['sha256']}, got {digest}", permanent=True)
        write_text(self.audio / f"{name}.sha256", f"{digest}  {name}\n")
        info = {**{k: info.get(k) for k in INFO_FIELDS}, "ext": ext}
        write_json(
            self.items / f"{row['id']}.json",
            {"id": row["id"], "url": row["url"], "file": name, "sha256": digest, "bytes": size, "info": info},
        )
        return CachedItem(dest, digest, size, info)

    @contextlib.contextmanager
    def scratch(self, track_id: str) -> Iterator[Path]:
        """A private temporary folder under the cache (same file system, so moving out of it is a rename)."""
        folder = self.root / temporary_name(f"tmp-{track_id}")
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- yt-dlp


class _YdlLogger:
    """Route yt-dlp's messages to logging (its errors also raise, so they are not lost)."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


def check_scheme(url: str, allow_file_urls: bool) -> None:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return
    if is_local(url):
        if allow_file_urls:
            return
        raise ItemError("file:// URLs are refused (set fetch.allow_file_urls: true to allow local files)", True)
    raise ItemError(f"URL scheme {scheme or '(none)'!r} is not supported (use http, https or file)", True)


def ydl_options(row: dict[str, Any], cfg: FetchConfig, folder: Path) -> dict[str, Any]:
    import imageio_ffmpeg
    from yt_dlp.utils import download_range_func

    options: dict[str, Any] = {
        "format": "bestaudio/best",
        "outtmpl": str(folder / f"{row['id']}.%(ext)s"),
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "retries": cfg.retries,
        "socket_timeout": cfg.timeout_s,
        "enable_file_urls": cfg.allow_file_urls,
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "cachedir": False,
        "logger": _YdlLogger(),
    }
    # A local file is copied whole (yt-dlp cannot cut file:// URLs); segment keeps [start_s, end_s) of it.
    if row.get("start_s") is not None and row.get("end_s") is not None and not is_local(row["url"]):
        options["download_ranges"] = download_range_func(None, [(float(row["start_s"]), float(row["end_s"]))])
        options["force_keyframes_at_cuts"] = True
    if cfg.audio_format != "best":
        options["postprocessors"] = [{"key": "FFmpegExtractAudio", "preferredcodec": cfg.audio_format}]
    return options


def _download_error(exc: Exception) -> ItemError:
    """An ItemError naming the real cause of a yt-dlp failure; permanent when retrying cannot help."""
    message = _ANSI.sub("", str(exc)).removeprefix("ERROR: ").strip()
    cause = exc.exc_info[1] if getattr(exc, "exc_info", None) else None
    status = getattr(cause, "status", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return ItemError(f"HTTP {status}: the server refuses or does not have the file ({message})", permanent=True)
    for pattern, meaning in PERMANENT_MESSAGES:
        if pattern in message:
            return ItemError(f"{meaning} ({message})", permanent=True)
    return ItemError(message)


def check_local_file(url: str) -> None:
    """A missing, empty or non-regular local file is a permanent failure named as such, before yt-dlp sees it."""
    path = local_path(url)
    if not path.exists():
        raise ItemError(f"local file not found: {path}", permanent=True)
    if not path.is_file():
        raise ItemError(f"not a regular file: {path}", permanent=True)
    if path.stat().st_size == 0:
        raise ItemError(f"local file is empty (0 bytes): {path}", permanent=True)


def download_media(row: dict[str, Any], cfg: FetchConfig, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Download one media URL with yt-dlp into `folder`; return the file and yt-dlp's info."""
    import yt_dlp
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    options = ydl_options(row, cfg, folder)
    # yt-dlp decides whether ffmpeg can cut ranges through a context variable that only its CLI sets from
    # --ffmpeg-location; set it for this call so the API sees imageio-ffmpeg's binary too.
    location = getattr(FFmpegPostProcessor, "_ffmpeg_location", None)
    token = location.set(options["ffmpeg_location"]) if location is not None else None
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(resolve_url(row["url"]), download=True)
    except yt_dlp.utils.DownloadError as exc:
        raise _download_error(exc) from exc
    finally:
        if token is not None:
            location.reset(token)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl", ".temp"))]
    if len(files) != 1:
        raise ItemError(f"yt-dlp produced {len(files)} files instead of one: {[p.name for p in files]}")
    info = dict(info or {})
    if is_local(row["url"]):
        # keep machine-specific absolute paths out of the artifacts: the manifest URL is the portable name
        info["webpage_url"] = row["url"]
    return files[0], info


def fetch_media(row: dict[str, Any], cfg: FetchConfig, cache: Cache) -> CachedItem:
    """Download one media row into the cache, retrying `cfg.retries` times."""
    check_scheme(row["url"], cfg.allow_file_urls)
    if is_local(row["url"]):
        check_local_file(row["url"])
    last: ItemError | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(RETRY_WAIT_S * attempt)
        with cache.scratch(row["id"]) as folder:
            try:
                file, info = download_media(row, cfg, folder)
                return cache.store(row, file, info)
            except ItemError as exc:
                last = exc
                log.debug("%s: attempt %d/%d failed: %s", row["id"], attempt + 1, cfg.retries + 1, exc)
                if exc.permanent:
                    break
    assert last is not None
    raise last


def fetch_cached(row: dict[str, Any], cfg: FetchConfig, cache: Cache) -> CachedItem:
    """The cached item of `row`, downloading it first when the cache does not hold it whole; raises ItemError."""
    cached = cache.lookup(row)
    return cached if cached is not None else fetch_media(row, cfg, cache)


# ----------------------------------------------------------------------------------------------- MTG TARs


def fetch_archive(
    tar_url: str, rows: list[dict[str, Any]], cfg: FetchConfig, corpus: CorpusConfig | None, cache: Cache
) -> tuple[dict[str, CachedItem], dict[str, ItemError]]:
    """Unpack the members of `rows` (all from the TAR at `tar_url`) into the cache. Returns (items, failures)."""
    from ssmttm.corpus import mtg_jamendo as mtg

    if corpus is None:
        raise UserFacingError(
            "the manifest has MTG-Jamendo rows; fetch needs the corpus section "
            "(corpus.mtg_jamendo.tar_sha256_path) to check their archives"
        )
    name = mtg.tar_name(tar_url)
    expected = mtg.load_sha256_list(corpus.mtg_jamendo.tar_sha256_path).get(name)
    if expected is None:
        raise UserFacingError(
            f"{name}: no sha256 listed in {corpus.mtg_jamendo.tar_sha256_path}; "
            "cannot check the archive, so it is not unpacked"
        )
    tar_path = cache.archives / name
    if tar_path.is_file() and sha256_file(tar_path) != expected:
        log.warning("%s: cached archive does not match its sha256; downloading it again", tar_path)
        tar_path.unlink()
    if not tar_path.is_file():
        try:
            log.info("downloading %s", tar_url)
            actual = mtg.download_to(tar_url, tar_path, cfg.retries, cfg.timeout_s, what=f"MTG-Jamendo archive {name}")
        except mtg.DownloadError as exc:
            return {}, {row["id"]: ItemError(str(exc), exc.permanent) for row in rows}
        mtg.verify_archive(tar_path, expected, actual)  # raises (and deletes it) before anything is unpacked
    by_path = {row["url"].partition("#")[2]: row for row in rows}
    destinations = {path: cache.audio / f"{row['id']}{Path(path).suffix}" for path, row in by_path.items()}
    done, problems = mtg.extract_members(tar_path, destinations)
    items = {}
    failures = {by_path[path]["id"]: ItemError(problem, permanent=True) for path, problem in problems.items()}
    for path, (digest, _size) in done.items():
        row = by_path[path]
        try:
            items[row["id"]] = cache.store(row, destinations[path], {"ext": Path(path).suffix.lstrip(".")}, digest)
        except ItemError as exc:
            failures[row["id"]] = exc
    if not cfg.keep_archives:
        tar_path.unlink(missing_ok=True)
    return items, failures


# ----------------------------------------------------------------------------------------------- stage


def artifact_path(path: Path) -> str:
    """Paths inside artifacts are relative to the working directory (the repository root) when possible."""
    if not path.is_absolute():
        return path.as_posix()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd()).as_posix()
    return path.as_posix()


def clean_reason(reason: str) -> str:
    """One line of at most 500 characters, without terminal colours (for TSV cells and messages)."""
    return " ".join(_ANSI.sub("", reason).split())[:500]


def failures_tsv(failures: dict[str, ItemError], urls: dict[str, str]) -> str:
    """failures.tsv: a header, then one line per failed item sorted by id: id, url, kind, reason."""
    lines = ["id\turl\tkind\treason"] + [
        f"{clean_reason(k)}\t{clean_reason(urls.get(k, ''))}\t{exc.kind}\t{clean_reason(str(exc))}"
        for k, exc in sorted(failures.items())
    ]
    return "\n".join(lines) + "\n"


def failure_listing(failures: dict[str, ItemError], limit: int = 5) -> str:
    """The first `limit` failures (by id) and their causes, for a one-line error message."""
    return "; ".join(f"{k[:80]}: {clean_reason(str(v))[:160]}" for k, v in sorted(failures.items())[:limit])


def _shard_rows(manifest_path: Path, shard: int) -> tuple[list[dict[str, Any]], dict[str, ItemError]]:
    """(rows of `shard` sorted by id, failures of rows whose id cannot become a file name).

    A bad id fails its own row only: the valid rows of the shard are still fetched.
    """
    if not manifest_path.is_file():
        raise UserFacingError(f"{manifest_path}: manifest not found; run `ssmttm manifest` first")
    rows, invalid = [], {}
    for number, line in enumerate(manifest_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            in_shard = int(row["shard"]) == shard
            url_ok = isinstance(row["url"], str)
        except (ValueError, TypeError, KeyError) as exc:
            raise UserFacingError(
                f"{manifest_path}:{number}: not a manifest row with id, url and shard ({type(exc).__name__}: {exc}); "
                "rebuild it with `ssmttm manifest`"
            ) from exc
        if not in_shard:
            continue
        if not url_ok:
            raise UserFacingError(f"{manifest_path}:{number}: url must be a string")
        try:
            check_id(row.get("id"), f"{manifest_path}:{number}")
        except UserFacingError as exc:
            invalid[str(row.get("id"))] = ItemError(str(exc), permanent=True)
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: r["id"]), invalid


def fetch_shard(
    manifest_path: str | Path, shard: int, cfg: FetchConfig, out_dir: str | Path, corpus: CorpusConfig | None = None
) -> FetchSummary:
    """Fetch every manifest row of `shard` and publish `out_dir` (audio/, info/, tracks.jsonl, failures.tsv)."""
    manifest_path, out_dir = Path(manifest_path), Path(out_dir)
    rows, invalid = _shard_rows(manifest_path, shard)
    failures: dict[str, ItemError] = dict(invalid)
    total = len(rows) + len(invalid)
    urls = {r["id"]: r["url"] for r in rows} | {k: "" for k in invalid}
    cache = Cache(cfg.cache_dir)
    # what killed runs left (kill -9 skips every clean-up): in the output's folder and in the shared cache
    remove_stale_temporaries_in(out_dir.parent, cache.root, cache.audio, cache.items, cache.archives)
    items: dict[str, CachedItem] = {}
    media = [r for r in rows if r.get("archive") is None]
    archives: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("archive") is None:
            continue
        if "#" not in row["url"]:
            failures[row["id"]] = ItemError("MTG-Jamendo url has no '#<path in the TAR>' part", permanent=True)
            continue
        archives.setdefault(row["url"].split("#", 1)[0], []).append(row)

    for row in progress(media, f"fetch shard {shard}", "track"):
        try:
            items[row["id"]] = fetch_cached(row, cfg, cache)
        except ItemError as exc:
            failures[row["id"]] = exc
    for tar_url, tar_rows in progress(sorted(archives.items()), f"fetch shard {shard} archives", "tar"):
        missing = []
        for row in tar_rows:
            cached = cache.lookup(row)
            if cached is not None:
                items[row["id"]] = cached
            else:
                missing.append(row)
        if missing:
            got, failed = fetch_archive(tar_url, missing, cfg, corpus, cache)
            items.update(got)
            failures.update(failed)

    kinds = Counter(exc.kind for exc in failures.values())
    if total and len(failures) / total > cfg.max_failure_fraction:
        listing = failure_listing(failures)
        raise UserFacingError(
            f"fetch shard {shard}: {len(failures)} of {total} item(s) failed ({kinds['permanent']} permanent, "
            f"{kinds['transient']} transient), more than fetch.max_failure_fraction={cfg.max_failure_fraction} "
            f"({listing}); nothing was written to {out_dir}. Successful downloads are kept in {cfg.cache_dir}, so a "
            "rerun resumes"
        )

    by_id = {r["id"]: r for r in rows}
    with atomic_dir(out_dir) as tmp:
        (tmp / "audio").mkdir()
        (tmp / "info").mkdir()
        tracks = []
        for track_id in sorted(items):
            item, row = items[track_id], by_id[track_id]
            link_or_copy(item.path, tmp / "audio" / item.path.name)
            write_json(tmp / "info" / f"{track_id}.json", {k: item.info.get(k) for k in INFO_FIELDS})
            track = {
                "id": track_id,
                "audio_path": artifact_path(out_dir / "audio" / item.path.name),
                "sha256": item.sha256,
                "bytes": item.bytes,
                "source": row.get("source"),
                "licence_manifest": row.get("licence"),
                "licence_info": item.info.get("license"),
                "tags": row.get("tags") or {},
            }
            track.update({k: row[k] for k in ROW_EXTRAS if k in row})
            tracks.append(track)
        write_jsonl(tmp / "tracks.jsonl", tracks)
        write_text(tmp / "failures.tsv", failures_tsv(failures, urls))
        write_provenance(
            tmp,
            "fetch",
            dataclass_to_dict(cfg),
            None,
            shard=shard,
            items=total,
            fetched=len(items),
            failed=len(failures),
            failed_permanent=kinds["permanent"],
            manifest_sha256=sha256_file(manifest_path),
        )
    log.info(
        "fetch shard %d: %d fetched, %d failed (%d permanent, %d transient; see %s) -> %s",
        shard,
        len(items),
        len(failures),
        kinds["permanent"],
        kinds["transient"],
        out_dir / "failures.tsv",
        out_dir,
    )
    return FetchSummary(shard, total, len(items), len(failures), out_dir)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default="data/manifest/manifest.jsonl", help="manifest.jsonl to read")
    parser.add_argument("--shard", type=int, required=True, help="shard index to fetch")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/fetch/shard-00003")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = section_to_dataclass(FetchConfig, params.get("fetch"))
    corpus = section_to_dataclass(CorpusConfig, params["corpus"]) if params.get("corpus") else None
    if corpus is not None and not 0 <= args.shard < corpus.n_shards:
        raise UserFacingError(f"--shard {args.shard} is out of range; corpus.n_shards is {corpus.n_shards}")
    summary = fetch_shard(args.manifest, args.shard, cfg, args.out, corpus)
    failed = f", {summary.failed} failed (listed in {summary.out_dir / 'failures.tsv'})" if summary.failed else ""
    print(f"{summary.out_dir}: {summary.fetched} of {summary.items} fetched{failed}")
    return 0
