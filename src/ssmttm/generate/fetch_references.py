"""`ssmttm fetch-references`: the reference audio of the evaluation caption set, in `data/fetch_references/`.

    ssmttm fetch-references --params params.yaml --out data/fetch_references

The caption set is the one generation uses (params `generate`: captions, captions_path, max_captions, read by
generate/captions.py), so every generated clip has its reference under the same id:

    musiccaps   each CSV row's YouTube video (URL from corpus.musiccaps.url_template), its [start_s, end_s)
    file        the `url` (and optional start_s, end_s) of each .jsonl caption row
    test_split  nothing to fetch: the references are the test clips of data/segment; the folder is still written
                (empty, summary.json says why) so the pipeline has the same steps in every profile

Downloads go through the fetch stage's machinery (data/fetch.py: yt-dlp, retries, permanent/transient failures)
into its cache (`fetch.cache_dir`), so a rerun downloads nothing already there. yt-dlp cuts the excerpt with
`FETCH_MARGIN_S` more at the end (a re-encoded cut can end a few milliseconds early); the clip is then decoded,
downmixed, resampled to 44.1 kHz and cropped to exactly end_s - start_s (a file:// URL is fetched whole and cut
here). A video shorter than end_s gives a shorter clip: generate records it as failed (short).

Layout of --out (published whole, atomically):
    clips/<id>.flac   mono, 44.1 kHz (PAPER.md 1: DAC 44 kHz's rate; EVALUATION.md: stable-audio-metrics'), 16-bit
                      FLAC: lossless for what is stored, about half a WAV
    clips.jsonl       one row per clip, sorted by id: id, caption, path, start_s, end_s, duration_s, sample_rate,
                      sha256 (of the FLAC), url, source_sha256 (of the downloaded file)
    failures.tsv      every caption without a clip: id, url, kind (permanent/transient), reason
    summary.json      caption set, counts, audio format, and `reason` when nothing was fetched
    provenance.json

More than fetch.references_max_failure_fraction of the captions failing stops the stage: nothing is published, the
failures are listed in `<out>.failures.tsv` beside the folder, and the downloads kept in the cache let a rerun resume.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ssmttm.artifacts import (
    atomic_dir,
    remove_stale_temporaries_in,
    sha256_file,
    write_json,
    write_jsonl,
    write_provenance,
    write_text,
)
from ssmttm.audio import load_audio, resample, to_mono
from ssmttm.config import dataclass_to_dict, load_params, section_to_dataclass
from ssmttm.corpus.fetch import (
    Cache,
    FetchConfig,
    ItemError,
    artifact_path,
    failure_listing,
    failures_tsv,
    fetch_cached,
)
from ssmttm.corpus.manifest import CorpusConfig, MusicCapsConfig
from ssmttm.corpus.urls import is_local
from ssmttm.corpus.user_manifest import check_id
from ssmttm.errors import UserFacingError
from ssmttm.generate.captions import AudioSource, Caption, load_captions, reference_sources
from ssmttm.generate.config import GenerateConfig
from ssmttm.progress import progress

log = logging.getLogger(__name__)

STAGE = "fetch_references"
SUMMARY_FORMAT = "ssmttm.fetch_references/1"
CLIPS_DIR = "clips"
CLIPS_TABLE = "clips.jsonl"
FAILURES_FILE = "failures.tsv"
SUMMARY_FILE = "summary.json"
CLIP_SAMPLE_RATE = 44100
CLIP_SUFFIX = ".flac"
CLIP_SUBTYPE = "PCM_16"
FETCH_MARGIN_S = 1.0  # fetched past end_s, then cropped: the excerpt is never short because of the cut itself


@dataclass(frozen=True)
class ReferencesSummary:
    captions: int
    fetched: int
    failed: int
    out_dir: Path
    reason: str | None = None


def fetch_row(caption_id: str, source: AudioSource) -> dict[str, Any]:
    """The fetch-stage row of a caption's excerpt. Its id names the download in the shared cache and carries the
    fetched range, so a changed excerpt is never served from an old download (and never meets a corpus track)."""
    if source.start_s is None or source.end_s is None:
        return {"id": check_id(f"{caption_id}.ref-whole", caption_id), "url": source.url}
    end_s = source.end_s + FETCH_MARGIN_S
    cache_id = f"{caption_id}.ref-{round(source.start_s * 1000)}-{round(end_s * 1000)}ms"
    return {"id": check_id(cache_id, caption_id), "url": source.url, "start_s": source.start_s, "end_s": end_s}


def excerpt(path: Path, source: AudioSource) -> np.ndarray:
    """The caption's excerpt of a downloaded file: (N,) float32 mono at CLIP_SAMPLE_RATE, at most end_s - start_s.

    A remote download already starts at start_s (yt-dlp cut it); a local file was copied whole and is cut here.
    """
    try:
        samples, rate = load_audio(path)  # (C, N)
    except UserFacingError as exc:
        raise ItemError(f"the downloaded file does not decode as audio ({exc})", permanent=True) from None
    audio = resample(to_mono(samples), rate, CLIP_SAMPLE_RATE)[0]  # (N',)
    if source.start_s is not None and source.end_s is not None:
        offset = round(source.start_s * CLIP_SAMPLE_RATE) if is_local(source.url) else 0
        audio = audio[offset : offset + round((source.end_s - source.start_s) * CLIP_SAMPLE_RATE)]
    if audio.size == 0:
        lasts = samples.shape[1] / rate
        raise ItemError(f"no audio in [{source.start_s}, {source.end_s}) s: the file lasts {lasts:.2f} s", True)
    if not np.isfinite(audio).all():
        raise ItemError("the decoded audio has NaN or infinite samples", permanent=True)
    return audio


def fetch_clip(
    caption: Caption, source: AudioSource, cfg: FetchConfig, cache: Cache, clips: Path, final: Path
) -> dict[str, Any]:
    """Fetch (or find in the cache) one caption's audio and write its clip into `clips`; returns its clips.jsonl
    row (paths name the published folder `final`). Raises ItemError."""
    try:
        row = fetch_row(caption.caption_id, source)
    except UserFacingError as exc:
        raise ItemError(str(exc), permanent=True) from None
    item = fetch_cached(row, cfg, cache)
    audio = excerpt(item.path, source)
    name = f"{caption.caption_id}{CLIP_SUFFIX}"
    sf.write(str(clips / name), np.clip(audio, -1.0, 1.0), CLIP_SAMPLE_RATE, format="FLAC", subtype=CLIP_SUBTYPE)
    return {
        "id": caption.caption_id,
        "caption": caption.text,
        "path": artifact_path(final / CLIPS_DIR / name),
        "start_s": source.start_s,
        "end_s": source.end_s,
        "duration_s": round(audio.shape[0] / CLIP_SAMPLE_RATE, 6),
        "sample_rate": CLIP_SAMPLE_RATE,
        "sha256": sha256_file(clips / name),
        "url": source.url,
        "source_sha256": item.sha256,
    }


def failures_beside(out_dir: Path) -> Path:
    """Where the failures go when too many of them stop the stage (the folder itself is not published then)."""
    return out_dir.with_name(f"{out_dir.name}.{FAILURES_FILE}")


def fetch_references(
    gen_cfg: GenerateConfig, fetch_cfg: FetchConfig, url_template: str, out_dir: str | Path
) -> ReferencesSummary:
    """Fetch the reference clip of every caption of the generate caption set and publish `out_dir`."""
    out_dir = Path(out_dir)
    captions_info = {"set": gen_cfg.captions, "path": gen_cfg.captions_path, "max_captions": gen_cfg.max_captions}
    section = {"generate": captions_info, "fetch": dataclass_to_dict(fetch_cfg), "url_template": url_template}
    if gen_cfg.captions == "test_split":
        reason = (
            "generate.captions is test_split: its references are the test clips of the segment folders "
            "(generate --reference --clips data/segment); nothing to fetch"
        )
        publish(out_dir, {**captions_info, "count": 0}, section, reason)
        log.info("%s: %s", out_dir, reason)
        return ReferencesSummary(0, 0, 0, out_dir, reason)

    captions = load_captions(gen_cfg, None)
    sources = reference_sources(gen_cfg, url_template)
    if not any(c.caption_id in sources for c in captions):
        raise UserFacingError(
            f"generate.captions_path {gen_cfg.captions_path}: no caption has a reference audio URL; give .jsonl "
            "rows a 'url' (and optionally start_s, end_s), or use generate.captions: musiccaps"
        )
    cache = Cache(fetch_cfg.cache_dir)
    # what killed runs left (kill -9 skips every clean-up): in the output's folder and in the shared cache
    remove_stale_temporaries_in(out_dir.parent, cache.root, cache.audio, cache.items, cache.archives)
    rows: list[dict[str, Any]] = []
    failures: dict[str, ItemError] = {}
    urls = {c.caption_id: sources[c.caption_id].url for c in captions if c.caption_id in sources}
    with atomic_dir(out_dir) as tmp:
        (tmp / CLIPS_DIR).mkdir()
        for caption in progress(captions, "fetch references", "clip"):
            source = sources.get(caption.caption_id)
            if source is None:
                failures[caption.caption_id] = ItemError(f"no 'url' for this caption in {gen_cfg.captions_path}", True)
                continue
            try:
                rows.append(fetch_clip(caption, source, fetch_cfg, cache, tmp / CLIPS_DIR, out_dir))
            except ItemError as exc:
                failures[caption.caption_id] = exc
                log.debug("%s: %s (%s)", caption.caption_id, exc, exc.kind)
        kinds = Counter(exc.kind for exc in failures.values())
        if len(failures) / len(captions) > fetch_cfg.references_max_failure_fraction:
            listed = failures_beside(out_dir)
            write_text(listed, failures_tsv(failures, urls))
            raise UserFacingError(
                f"fetch-references: {len(failures)} of {len(captions)} reference clip(s) failed "
                f"({kinds['permanent']} permanent, {kinds['transient']} transient), more than "
                f"fetch.references_max_failure_fraction={fetch_cfg.references_max_failure_fraction}; every failure and "
                f"its cause is in "
                f"{listed} ({failure_listing(failures, 3)}); nothing was written to {out_dir}. Downloads are kept in "
                f"{fetch_cfg.cache_dir}, so a rerun resumes"
            )
        write_contents(tmp, rows, failures, urls, {**captions_info, "count": len(captions)}, section, None)
    failures_beside(out_dir).unlink(missing_ok=True)  # a failed earlier run's list no longer applies
    log.info(
        "fetch-references: %d of %d clips fetched, %d failed (%d permanent, %d transient; see %s) -> %s",
        len(rows),
        len(captions),
        len(failures),
        kinds["permanent"],
        kinds["transient"],
        out_dir / FAILURES_FILE,
        out_dir,
    )
    return ReferencesSummary(len(captions), len(rows), len(failures), out_dir)


def publish(out_dir: Path, captions_info: dict[str, Any], section: dict[str, Any], reason: str) -> None:
    """Publish a folder with no clips, whose summary says why nothing was fetched."""
    rows: list[dict[str, Any]] = []
    failures: dict[str, ItemError] = {}
    urls: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp:
        (tmp / CLIPS_DIR).mkdir()
        write_contents(tmp, rows, failures, urls, captions_info, section, reason)


def write_contents(
    folder: Path,
    rows: list[dict[str, Any]],
    failures: dict[str, ItemError],
    urls: dict[str, str],
    captions_info: dict[str, Any],
    section: dict[str, Any],
    reason: str | None,
) -> None:
    """clips.jsonl, failures.tsv, summary.json and provenance.json of a folder whose clips/ is written."""
    kinds = Counter(exc.kind for exc in failures.values())
    write_jsonl(folder / CLIPS_TABLE, sorted(rows, key=lambda r: r["id"]))
    write_text(folder / FAILURES_FILE, failures_tsv(failures, urls))
    counts = {"fetched": len(rows), "failed": len(failures), "failed_permanent": kinds["permanent"]}
    summary = {
        "format": SUMMARY_FORMAT,
        "captions": captions_info,
        **counts,
        "failed_transient": kinds["transient"],
        "audio": {"sample_rate": CLIP_SAMPLE_RATE, "channels": 1, "format": "flac", "subtype": CLIP_SUBTYPE},
        "fetch_margin_s": FETCH_MARGIN_S,
        "reason": reason,
    }
    write_json(folder / SUMMARY_FILE, summary)
    path = captions_info.get("path")
    captions_sha256 = sha256_file(path) if path and Path(path).is_file() else None
    write_provenance(folder, STAGE, section, None, captions_sha256=captions_sha256, **counts)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/fetch_references", help="output folder (default data/fetch_references)")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    gen_cfg = section_to_dataclass(GenerateConfig, params.get("generate"))
    fetch_cfg = section_to_dataclass(FetchConfig, params.get("fetch"))
    corpus = params.get("corpus")
    musiccaps = section_to_dataclass(CorpusConfig, corpus).musiccaps if corpus else MusicCapsConfig()
    summary = fetch_references(gen_cfg, fetch_cfg, musiccaps.url_template, args.out)
    if summary.reason:
        print(f"{summary.out_dir}: nothing fetched ({summary.reason})")
        return 0
    failed = f", {summary.failed} failed (listed in {summary.out_dir / FAILURES_FILE})" if summary.failed else ""
    print(f"{summary.out_dir}: {summary.fetched} of {summary.captions} reference clips fetched{failed}")
    return 0
