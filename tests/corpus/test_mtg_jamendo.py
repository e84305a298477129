"""MTG-Jamendo parsing, TAR checksums before unpacking, and safe extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from ssmttm.artifacts import read_jsonl
from ssmttm.corpus import mtg_jamendo as mtg
from ssmttm.corpus.fetch import FetchConfig, fetch_shard
from ssmttm.corpus.manifest import CorpusConfig, MtgJamendoConfig, build_manifest
from ssmttm.errors import UserFacingError

TSV = (
    "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---rock\tgenre---pop\t"
    "mood/theme---happy\tinstrument---guitar\tinstrument---drums\n"
    "track_0000314\tartist_000015\talbum_000032\t14/314.mp3\t200.0\tgenre---jazz\n"
    "track_0000507\tartist_000016\talbum_000033\t07/507.mp3\t61.0\tmood/theme---calm\n"
)
LICENSES = (
    "14/214.mp3\n"
    "Song A by Some Band from Jamendo: http://www.jamendo.com/track/214\n"
    "Available under a Creative Commons Attribution-NonCommercial-ShareAlike license: "
    "http://creativecommons.org/licenses/by-nc-sa/3.0/\n"
    "\n"
    "14/314.mp3\n"
    "Made by Hand by Other Artist from Jamendo: http://www.jamendo.com/track/314\n"
    "Available under a Creative Commons Attribution-NoDerivatives license: "
    "http://creativecommons.org/licenses/by-nd/3.0/\n"
    "\n"
)


def make_tar(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> str:
    """Write a TAR with regular `members` (name -> bytes) and `symlinks` (name -> target); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- parsing


def test_parse_tags_tsv_and_tag_fields():
    tracks = mtg.parse_tags_tsv(TSV)
    assert [t.track_id for t in tracks] == ["track_0000214", "track_0000314", "track_0000507"]
    first = tracks[0]
    assert (first.path, first.archive, first.duration_s) == ("14/214.mp3", 14, 124.6)
    assert mtg.tag_fields(first.tags) == {"genre": "rock, pop", "mood": "happy", "instruments": ["guitar", "drums"]}
    assert tracks[2].archive == 7


@pytest.mark.parametrize("path", ["/14/214.mp3", "../214.mp3", "14/../214.mp3", "a/214.mp3", "14/x/214.mp3"])
def test_bad_track_paths_are_refused(path):
    tsv = f"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\ntrack_1\ta\tb\t{path}\t10\n"
    with pytest.raises(UserFacingError, match="PATH"):
        mtg.parse_tags_tsv(tsv)


def test_parse_audio_licenses_keeps_url_title_and_artist():
    licences = mtg.parse_audio_licenses(LICENSES)
    assert licences["14/214.mp3"].licence == "http://creativecommons.org/licenses/by-nc-sa/3.0/"
    assert (licences["14/214.mp3"].title, licences["14/214.mp3"].artist) == ("Song A", "Some Band")
    assert licences["14/314.mp3"].title == "Made by Hand"  # split at the last " by "
    assert "07/507.mp3" not in licences


def test_parse_sha256_list(tmp_path):
    text = "a" * 64 + " raw_30s_audio-00.tar\n" + "B" * 64 + "  *raw_30s_audio-01.tar\n\n"
    assert mtg.parse_sha256_list(text, "x") == {"raw_30s_audio-00.tar": "a" * 64, "raw_30s_audio-01.tar": "b" * 64}
    with pytest.raises(UserFacingError, match="x:1"):
        mtg.parse_sha256_list("nothex raw.tar\n", "x")
    real = Path(__file__).resolve().parents[3] / "shared/data/mtg_jamendo_raw_30s_audio_sha256_tars.txt"
    if real.is_file():
        sums = mtg.load_sha256_list(real)
        assert len(sums) == 100 and "raw_30s_audio-99.tar" in sums


# ----------------------------------------------------------------------------------------------- TARs


def test_extract_members_is_safe(tmp_path):
    outside = tmp_path / "evil.mp3"
    tar = tmp_path / "a.tar"
    make_tar(
        tar,
        {"./14/214.mp3": b"good", "../evil.mp3": b"bad", "/abs/14/999.mp3": b"bad", "14/777.mp3": b"x"},
        symlinks={"14/314.mp3": "/etc/passwd"},
    )
    dest = tmp_path / "out"
    wanted = {p: dest / Path(p).name for p in ("14/214.mp3", "14/314.mp3", "14/999.mp3", "14/555.mp3")}
    done, problems = mtg.extract_members(tar, wanted)
    assert set(done) == {"14/214.mp3"}
    assert (dest / "214.mp3").read_bytes() == b"good"
    assert done["14/214.mp3"] == (hashlib.sha256(b"good").hexdigest(), 4)
    assert "not a regular file" in problems["14/314.mp3"]
    assert "unsafe" in problems["14/999.mp3"]
    assert "not found" in problems["14/555.mp3"]
    assert not outside.exists() and not (dest / "314.mp3").exists() and not (dest / "777.mp3").exists()


def test_verify_archive_mismatch_deletes_and_names_both_hashes(tmp_path):
    tar = tmp_path / "raw_30s_audio-03.tar"
    actual = make_tar(tar, {"03/3.mp3": b"x"})
    with pytest.raises(mtg.ChecksumError) as info:
        mtg.verify_archive(tar, "0" * 64)
    message = str(info.value)
    assert "raw_30s_audio-03.tar" in message and "0" * 64 in message and actual in message
    assert not tar.exists()


def test_download_dead_url_is_a_clear_error(http_server, tmp_path):
    with pytest.raises(mtg.DownloadError, match="corpus.mtg_jamendo.metadata_url.*missing.tsv"):
        mtg.download_text(http_server.url("missing.tsv"), 2, 5, "corpus.mtg_jamendo.metadata_url")
    assert http_server.count("missing.tsv") == 1  # a 404 is not retried


def test_download_retries_transient_errors(http_server):
    (http_server.root / "meta.tsv").write_text("hello")
    http_server.fail["meta.tsv"] = 2
    assert mtg.download_text(http_server.url("meta.tsv"), 2, 5, "x") == "hello"
    assert http_server.count("meta.tsv") == 3


# ----------------------------------------------------------------------------------------------- stages


def _serve_corpus(server, tmp_path, sha_override: str | None = None) -> tuple[CorpusConfig, dict[str, bytes]]:
    (server.root / "raw_30s_cleantags.tsv").write_text(TSV)
    (server.root / "audio_licenses.txt").write_text(LICENSES)
    members = {"14/214.mp3": b"audio-214", "14/314.mp3": b"audio-314"}
    sha14 = make_tar(server.root / "raw_30s_audio-14.tar", members)
    sha07 = make_tar(server.root / "raw_30s_audio-07.tar", {"07/507.mp3": b"audio-507"})
    sums = tmp_path / "sums.txt"
    sums.write_text(f"{sha_override or sha14} raw_30s_audio-14.tar\n{sha07} raw_30s_audio-07.tar\n")
    cfg = CorpusConfig(
        source="mtg_jamendo",
        n_shards=4,
        mtg_jamendo=MtgJamendoConfig(
            metadata_url=server.url("raw_30s_cleantags.tsv"),
            licenses_url=server.url("audio_licenses.txt"),
            tar_url_template=server.url("raw_30s_audio-{index:02d}.tar"),
            tar_sha256_path=str(sums),
        ),
    )
    return cfg, members


def test_manifest_from_served_metadata(http_server, in_tmp):
    cfg, _ = _serve_corpus(http_server, in_tmp)
    rows = read_jsonl(build_manifest(cfg, "data/manifest", 0))
    by_id = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows] == ["track_0000214", "track_0000314", "track_0000507"]
    row = by_id["track_0000214"]
    assert row["url"] == http_server.url("raw_30s_audio-14.tar") + "#14/214.mp3"
    assert (row["archive"], row["shard"], row["source"]) == (14, 14 % 4, "mtg_jamendo")
    assert row["licence"] == "http://creativecommons.org/licenses/by-nc-sa/3.0/"
    assert row["tags"] == {
        "genre": "rock, pop",
        "mood": "happy",
        "instruments": ["guitar", "drums"],
        "title": "Song A",
        "artist": "Some Band",
    }
    assert by_id["track_0000507"]["licence"] == "unknown" and by_id["track_0000507"]["shard"] == 7 % 4
    only7 = CorpusConfig(
        **{**cfg.__dict__, "mtg_jamendo": MtgJamendoConfig(**{**cfg.mtg_jamendo.__dict__, "tar_indices": (7,)})}
    )
    assert [r["id"] for r in read_jsonl(build_manifest(only7, "data/m7", 0))] == ["track_0000507"]


def test_manifest_dead_metadata_url(http_server, in_tmp):
    cfg, _ = _serve_corpus(http_server, in_tmp)
    bad = CorpusConfig(source="mtg_jamendo", mtg_jamendo=MtgJamendoConfig(metadata_url=http_server.url("gone.tsv")))
    with pytest.raises(UserFacingError, match="gone.tsv"):
        build_manifest(bad, "data/manifest", 0)
    assert not (in_tmp / "data/manifest").exists()


def test_fetch_unpacks_only_this_shard_and_resumes(http_server, in_tmp):
    cfg, members = _serve_corpus(http_server, in_tmp)
    manifest = build_manifest(cfg, "data/manifest", 0)
    fetch_cfg = FetchConfig(cache_dir="cache", retries=0)
    summary = fetch_shard(manifest, 14 % 4, fetch_cfg, "data/fetch/shard-00002", cfg)
    assert (summary.items, summary.fetched, summary.failed) == (2, 2, 0)
    out = in_tmp / "data/fetch/shard-00002"
    tracks = read_jsonl(out / "tracks.jsonl")
    assert [t["id"] for t in tracks] == ["track_0000214", "track_0000314"]
    assert (out / "audio/track_0000214.mp3").read_bytes() == members["14/214.mp3"]
    assert tracks[0]["licence_manifest"].endswith("by-nc-sa/3.0/") and tracks[0]["licence_info"] is None
    assert http_server.count("raw_30s_audio-14.tar") == 1 and http_server.count("raw_30s_audio-07.tar") == 0
    assert not (in_tmp / "cache/archives/raw_30s_audio-14.tar").exists()  # keep_archives is off
    assert not (in_tmp / "cache/audio/track_0000507.mp3").exists()  # another shard's archive
    fetch_shard(manifest, 2, fetch_cfg, "data/fetch/shard-00002", cfg)
    assert http_server.count("raw_30s_audio-14.tar") == 1  # everything came from the cache


def test_fetch_refuses_a_tar_with_the_wrong_sha256_before_unpacking(http_server, in_tmp):
    cfg, _ = _serve_corpus(http_server, in_tmp, sha_override="f" * 64)
    manifest = build_manifest(cfg, "data/manifest", 0)
    with pytest.raises(mtg.ChecksumError) as info:
        fetch_shard(
            manifest, 2, FetchConfig(cache_dir="cache", retries=0, keep_archives=True), "data/fetch/shard-00002", cfg
        )
    assert "raw_30s_audio-14.tar" in str(info.value) and "f" * 64 in str(info.value)
    assert not list((in_tmp / "cache/audio").iterdir())  # nothing unpacked
    assert not (in_tmp / "cache/archives/raw_30s_audio-14.tar").exists()  # the bad archive is deleted
    assert not (in_tmp / "data/fetch/shard-00002").exists()
