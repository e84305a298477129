"""The fetch stage through yt-dlp: http and file:// URLs, failures, retries, the cache, atomic output."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from ssmttm import cli
from ssmttm.artifacts import is_temporary, read_jsonl, write_jsonl
from ssmttm.corpus import fetch as fetch_module
from ssmttm.corpus.fetch import FetchConfig, fetch_shard
from ssmttm.errors import UserFacingError


def _manifest(path: Path, rows: list[dict]) -> Path:
    full = [{"licence": "MIT", "source": "manifest", "tags": {}, "shard": 0, **r} for r in rows]
    write_jsonl(path, sorted(full, key=lambda r: r["id"]))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cfg(**kw) -> FetchConfig:
    return FetchConfig(**{"cache_dir": "cache", "retries": 0, "timeout_s": 10, **kw})


def test_fetch_http_through_ytdlp(http_server, in_tmp, tone):
    tone(http_server.root / "one.wav", 1.0)
    tone(http_server.root / "two.flac", 0.5, fmt="FLAC")
    manifest = _manifest(
        in_tmp / "manifest.jsonl",
        [
            {"id": "t1", "url": http_server.url("one.wav"), "tags": {"mood": "calm"}},
            {"id": "t2", "url": http_server.url("two.flac"), "licence": "CC BY 4.0"},
            {"id": "other", "url": http_server.url("nothere.wav"), "shard": 1},
        ],
    )
    summary = fetch_shard(manifest, 0, _cfg(), "data/fetch/shard-00000")
    assert (summary.items, summary.fetched, summary.failed) == (2, 2, 0)
    out = in_tmp / "data/fetch/shard-00000"
    tracks = read_jsonl(out / "tracks.jsonl")
    assert [t["id"] for t in tracks] == ["t1", "t2"]
    t1 = tracks[0]
    assert t1["audio_path"] == "data/fetch/shard-00000/audio/t1.wav"
    assert t1["sha256"] == hashlib.sha256((http_server.root / "one.wav").read_bytes()).hexdigest()
    assert t1["bytes"] == (http_server.root / "one.wav").stat().st_size
    assert (t1["source"], t1["licence_manifest"], t1["licence_info"], t1["tags"]) == (
        "manifest",
        "MIT",
        None,
        {"mood": "calm"},
    )
    assert tracks[1]["audio_path"].endswith("t2.flac")
    info = json.loads((out / "info/t1.json").read_text())
    assert set(info) == {"title", "license", "duration", "uploader", "webpage_url", "ext"}
    assert info["webpage_url"] == http_server.url("one.wav") and info["ext"] == "wav"
    assert (out / "failures.tsv").read_text() == "id\turl\tkind\treason\n"
    assert (out / "audio/t1.wav").stat().st_ino == (in_tmp / "cache/audio/t1.wav").stat().st_ino  # hard link
    assert (in_tmp / "cache/audio/t1.wav.sha256").read_text().split()[0] == t1["sha256"]
    assert http_server.count("nothere.wav") == 0  # other shard


def test_rerun_is_idempotent_and_byte_identical(http_server, in_tmp, tone):
    tone(http_server.root / "a.wav", 0.5)
    tone(http_server.root / "b.wav", 0.5, freq=330)
    manifest = _manifest(
        in_tmp / "manifest.jsonl",
        [
            {"id": "a", "url": http_server.url("a.wav")},
            {"id": "b", "url": http_server.url("b.wav")},
        ],
    )
    fetch_shard(manifest, 0, _cfg(), "out")
    first = _snapshot(in_tmp / "out")
    requests = http_server.count()
    assert requests >= 2
    fetch_shard(manifest, 0, _cfg(), "out")
    assert http_server.count() == requests  # nothing fetched again
    assert _snapshot(in_tmp / "out") == first
    # A corrupted cache file is noticed through its checksum and fetched again; the other one is not.
    before_a, before_b = http_server.count("a.wav"), http_server.count("b.wav")
    (in_tmp / "cache/audio/a.wav").unlink()  # the output keeps its own link to the good bytes
    (in_tmp / "cache/audio/a.wav").write_bytes(b"garbage")
    fetch_shard(manifest, 0, _cfg(), "out")
    assert http_server.count("a.wav") > before_a and http_server.count("b.wav") == before_b
    assert _snapshot(in_tmp / "out") == first


def test_file_urls_only_when_allowed(in_tmp, tone):
    local = tone(in_tmp / "src" / "song.wav", 0.5)
    manifest = _manifest(in_tmp / "manifest.jsonl", [{"id": "song", "url": local.resolve().as_uri()}])
    summary = fetch_shard(manifest, 0, _cfg(max_failure_fraction=1.0), "refused")
    assert (summary.fetched, summary.failed) == (0, 1)
    failures = (in_tmp / "refused/failures.tsv").read_text().splitlines()
    assert failures[0] == "id\turl\tkind\treason"
    assert failures[1].startswith(f"song\t{local.resolve().as_uri()}\tpermanent\t")
    assert "allow_file_urls" in failures[1]
    summary = fetch_shard(manifest, 0, _cfg(allow_file_urls=True), "allowed")
    assert summary.fetched == 1
    assert (in_tmp / "allowed/audio/song.wav").read_bytes() == local.read_bytes()


def test_other_schemes_are_refused(in_tmp):
    manifest = _manifest(in_tmp / "manifest.jsonl", [{"id": "x", "url": "ftp://example.org/x.wav"}])
    summary = fetch_shard(manifest, 0, _cfg(max_failure_fraction=1.0, allow_file_urls=True), "out")
    assert summary.failed == 1 and "'ftp'" in (in_tmp / "out/failures.tsv").read_text()


def test_failures_recorded_threshold_enforced_and_rerun_resumes(http_server, in_tmp, tone):
    for name in ("a", "b", "c"):
        tone(http_server.root / f"{name}.wav", 0.3)
    manifest = _manifest(
        in_tmp / "manifest.jsonl", [{"id": n, "url": http_server.url(f"{n}.wav")} for n in ("a", "b", "c", "missing")]
    )
    with pytest.raises(UserFacingError, match=r"1 of 4 item\(s\) failed.*missing"):
        fetch_shard(manifest, 0, _cfg(max_failure_fraction=0.2, retries=1), "data/fetch/shard-00000")
    assert not (in_tmp / "data/fetch/shard-00000").exists()
    assert not list(in_tmp.glob("data/**/*"))  # not even a temporary folder is left
    assert sorted(p.name for p in (in_tmp / "cache/items").iterdir()) == ["a.json", "b.json", "c.json"]
    assert http_server.count("missing.wav") == 1  # a 404 is permanent: not retried
    before = http_server.count()
    summary = fetch_shard(manifest, 0, _cfg(max_failure_fraction=0.25), "data/fetch/shard-00000")
    assert (summary.fetched, summary.failed) == (3, 1)
    assert http_server.count() - before == http_server.count("missing.wav") - 1  # only the missing one again
    rows = (in_tmp / "data/fetch/shard-00000/failures.tsv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"missing\t{http_server.url('missing.wav')}\tpermanent\tHTTP 404")
    assert [t["id"] for t in read_jsonl(in_tmp / "data/fetch/shard-00000/tracks.jsonl")] == ["a", "b", "c"]


def test_permanent_failures_name_their_cause_and_are_not_retried(http_server, in_tmp, tone):
    """404, a missing or empty local file, an empty download, a page that is not media: one attempt each, a clear
    reason each; the valid rows of the shard (and one whose id cannot be a file name) are not lost with them."""
    tone(http_server.root / "ok.wav", 0.3)
    (http_server.root / "empty.wav").write_bytes(b"")
    (http_server.root / "page.html").write_text("<html><body>no media here</body></html>")
    (in_tmp / "empty.wav").write_bytes(b"")
    good = tone(in_tmp / "excerpt.wav", 3.0)
    manifest = _manifest(
        in_tmp / "manifest.jsonl",
        [
            {"id": "ok", "url": http_server.url("ok.wav")},
            {"id": "gone", "url": http_server.url("gone.wav")},
            {"id": "empty-http", "url": http_server.url("empty.wav")},
            {"id": "page", "url": http_server.url("page.html")},
            {"id": "missing-local", "url": (in_tmp / "nope.wav").as_uri()},
            {"id": "empty-local", "url": (in_tmp / "empty.wav").as_uri()},
            {"id": "excerpt", "url": good.as_uri(), "start_s": 1.0, "end_s": 2.0},  # copied whole: segment cuts it
            {"id": "x" * 300, "url": http_server.url("ok.wav")},
        ],
    )
    summary = fetch_shard(manifest, 0, _cfg(retries=3, allow_file_urls=True, max_failure_fraction=1.0), "out")
    assert (summary.items, summary.fetched, summary.failed) == (8, 2, 6)
    rows = [line.split("\t") for line in (in_tmp / "out/failures.tsv").read_text().splitlines()[1:]]
    reasons = {row[0]: (row[2], row[3]) for row in rows}
    assert {k: kind for k, (kind, _) in reasons.items()} == dict.fromkeys(reasons, "permanent")
    assert reasons["gone"][1].startswith("HTTP 404")
    assert reasons["empty-http"][1].startswith("the URL served an empty file (0 bytes)")
    assert reasons["page"][1].startswith("the URL is not a media file")
    assert reasons["missing-local"][1] == f"local file not found: {in_tmp / 'nope.wav'}"
    assert reasons["empty-local"][1] == f"local file is empty (0 bytes): {in_tmp / 'empty.wav'}"
    assert "invalid track id" in reasons["x" * 300][1] and "at most 128 characters" in reasons["x" * 300][1]
    for name in ("gone.wav", "empty.wav", "page.html"):
        assert http_server.count(name) <= 2, name  # one attempt (yt-dlp may probe a page twice), never 4
    tracks = {t["id"]: t for t in read_jsonl(in_tmp / "out/tracks.jsonl")}
    assert sorted(tracks) == ["excerpt", "ok"]
    assert (tracks["excerpt"]["start_s"], tracks["excerpt"]["end_s"]) == (1.0, 2.0)
    assert (in_tmp / "out/audio/excerpt.wav").read_bytes() == good.read_bytes()


def test_transient_failure_is_retried(http_server, in_tmp, tone):
    tone(http_server.root / "flaky.wav", 0.3)
    manifest = _manifest(in_tmp / "manifest.jsonl", [{"id": "flaky", "url": http_server.url("flaky.wav")}])
    http_server.fail["flaky.wav"] = 1
    assert fetch_shard(manifest, 0, _cfg(retries=2), "out").fetched == 1
    http_server.fail["flaky.wav"] = 10
    (in_tmp / "cache").rename(in_tmp / "old-cache")
    with pytest.raises(UserFacingError, match="flaky"):
        fetch_shard(manifest, 0, _cfg(retries=0), "out2")


def test_expected_sha256_is_checked(http_server, in_tmp, tone):
    tone(http_server.root / "s.wav", 0.3)
    manifest = _manifest(in_tmp / "manifest.jsonl", [{"id": "s", "url": http_server.url("s.wav"), "sha256": "0" * 64}])
    summary = fetch_shard(manifest, 0, _cfg(max_failure_fraction=1.0, retries=2), "out")
    assert summary.failed == 1 and "sha256 mismatch" in (in_tmp / "out/failures.tsv").read_text()
    assert http_server.count("s.wav") <= 2  # a wrong checksum is not retried
    assert not (in_tmp / "cache/audio/s.wav").exists()


def test_an_exception_mid_run_leaves_nothing_that_looks_complete(http_server, in_tmp, tone, monkeypatch):
    """The `finally` path; a real SIGKILL is tests/test_kills.py."""
    tone(http_server.root / "a.wav", 0.3)
    tone(http_server.root / "b.wav", 0.3)
    manifest = _manifest(
        in_tmp / "manifest.jsonl",
        [
            {"id": "a", "url": http_server.url("a.wav")},
            {"id": "b", "url": http_server.url("b.wav")},
        ],
    )
    calls = []

    def crash_on_second(source, dest):
        calls.append(dest)
        if len(calls) == 2:
            raise KeyboardInterrupt
        os.link(source, dest)

    monkeypatch.setattr(fetch_module, "link_or_copy", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        fetch_shard(manifest, 0, _cfg(), "data/fetch/shard-00000")
    leftovers = [p for p in (in_tmp / "data").rglob("*") if not is_temporary(p) and p.name != "fetch"]
    assert leftovers == []
    for record in (in_tmp / "cache/items").iterdir():  # every committed cache record has its file
        assert (in_tmp / "cache/audio" / json.loads(record.read_text())["file"]).is_file()
    requests = http_server.count()
    assert fetch_shard(manifest, 0, _cfg(), "data/fetch/shard-00000").fetched == 2  # third link call onwards works
    assert http_server.count() == requests  # the rerun finished from the cache


def test_start_end_cut_with_download_ranges(http_server, in_tmp, tone):
    tone(http_server.root / "long.wav", 4.0, sample_rate=16000)
    manifest = _manifest(
        in_tmp / "manifest.jsonl",
        [
            {
                "id": "clip",
                "url": http_server.url("long.wav"),
                "source": "musiccaps",
                "licence": "unknown",
                "start_s": 1.0,
                "end_s": 2.5,
                "caption": "a tone",
            }
        ],
    )
    fetch_shard(manifest, 0, _cfg(), "out")
    track = read_jsonl(in_tmp / "out/tracks.jsonl")[0]
    assert (track["start_s"], track["end_s"], track["caption"], track["source"]) == (1.0, 2.5, "a tone", "musiccaps")
    assert sf.info(str(in_tmp / "out/audio/clip.wav")).duration == pytest.approx(1.5, abs=0.05)


def test_cli_fetch(http_server, in_tmp, tone, repo_root):
    tone(http_server.root / "a.wav", 0.3)
    _manifest(in_tmp / "data/manifest/manifest.jsonl", [{"id": "a", "url": http_server.url("a.wav"), "shard": 1}])
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["fetch"].update({"cache_dir": "cache", "retries": 0})
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["fetch", "--params", "params.yaml", "--shard", "1", "--out", "data/fetch/shard-00001"]
    assert cli.main(args) == 0
    assert (in_tmp / "data/fetch/shard-00001/audio/a.wav").is_file()
    assert cli.main(args[:-3] + ["99", "--out", "x"]) == 1  # shard out of range for corpus.n_shards
