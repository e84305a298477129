"""`ssmttm manifest --from-folder`: your own audio, licences from tags or declared, never assumed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from mutagen.flac import FLAC

from ssmttm import cli
from ssmttm.artifacts import read_jsonl, sha256_file
from ssmttm.corpus.fetch import FetchConfig, fetch_shard
from ssmttm.corpus.folder_manifest import track_ids, write_folder_manifest
from ssmttm.corpus.manifest import CorpusConfig, build_manifest
from ssmttm.corpus.select import SelectConfig, select_shard
from ssmttm.corpus.user_manifest import ID_PATTERN
from ssmttm.errors import UserFacingError

from .conftest import write_tone


def _flac(path: Path, **tags: str) -> Path:
    write_tone(path, 2.0, fmt="FLAC")
    audio = FLAC(str(path))
    for key, value in tags.items():
        audio[key] = value
    audio.save()
    return path


@pytest.fixture
def folder(in_tmp) -> Path:
    """my_audio/: a CC BY track with names, an untagged one, a no-derivatives one, damaged tags, a text file."""
    root = in_tmp / "my_audio"
    _flac(root / "a.flac", LICENSE="CC BY 4.0", TITLE="Morning", ARTIST="Me", GENRE="ambient", BPM="92.4")
    write_tone(root / "sub dir/b c.wav", 2.0)
    _flac(root / "nd.flac", LICENSE="https://creativecommons.org/licenses/by-nd/4.0/")
    broken = _flac(root / "broken.flac", LICENSE="CC BY 4.0")
    data = bytearray(broken.read_bytes())
    start = data.index(b"LICENSE") - 4
    data[start : start + 4] = (10**6).to_bytes(4, "little")  # a Vorbis comment length past its block
    broken.write_bytes(bytes(data))
    (root / "notes.txt").write_text("not audio")
    return root


def test_licences_come_from_tags_else_from_the_declared_licence(folder, in_tmp):
    with pytest.raises(UserFacingError, match=r"1 file\(s\) .*name no licence.*b c.wav.*--licence"):
        write_folder_manifest(folder, "mine.jsonl", None)
    assert not (in_tmp / "mine.jsonl").exists()
    result = write_folder_manifest(folder, "mine.jsonl", "cc-by-sa-4.0")
    assert (result.rows, result.skipped, result.licence_counts) == (4, 1, {"from tags": 2, "declared": 1, "unknown": 1})
    rows = {r["id"]: r for r in read_jsonl(in_tmp / "mine.jsonl")}
    assert {k: r["licence"] for k, r in rows.items()} == {
        "a": "CC-BY-4.0",
        "broken": "unknown",  # tags that cannot be read: select rejects it and says why
        "nd": "CC-BY-ND-4.0",
        "sub_dir_b_c": "CC-BY-SA-4.0",
    }
    assert rows["a"]["url"] == "file:my_audio/a.flac"
    assert rows["sub_dir_b_c"]["url"] == "file:my_audio/sub%20dir/b%20c.wav"
    assert rows["a"]["tags"] == {"title": "Morning", "artist": "Me", "genre": "ambient", "bpm": 92}
    assert rows["a"]["sha256"] == sha256_file(folder / "a.flac") and rows["a"]["source"] == "manifest"


def test_the_folder_goes_through_manifest_fetch_and_select(folder, in_tmp):
    write_folder_manifest(folder, "mine.jsonl", "CC-BY-SA-4.0")
    manifest = build_manifest(CorpusConfig(source="manifest", manifest_path="mine.jsonl"), "data/manifest", 0)
    summary = fetch_shard(manifest, 0, FetchConfig(allow_file_urls=True, cache_dir="cache", retries=0), "fetched")
    assert (summary.fetched, summary.failed) == (4, 0)
    allowed = ("CC-BY-4.0", "CC-BY-SA-4.0")
    select_shard("fetched", SelectConfig(allowed_licences=allowed, min_duration_s=1), "selected")
    assert sorted(r["id"] for r in read_jsonl(in_tmp / "selected/kept.jsonl")) == ["a", "sub_dir_b_c"]
    rejected = dict(line.split("\t")[:2] for line in (in_tmp / "selected/rejected.tsv").read_text().splitlines()[1:])
    assert rejected == {"broken": "tags_unreadable", "nd": "licence_not_allowed"}


def test_private_audio_needs_the_token_and_the_allow_list(folder, in_tmp):
    shutil.rmtree(folder)
    write_tone(folder / "take1.wav", 2.0)
    write_folder_manifest(folder, "mine.jsonl", "private")
    assert [r["licence"] for r in read_jsonl(in_tmp / "mine.jsonl")] == ["PRIVATE"]
    manifest = build_manifest(CorpusConfig(source="manifest", manifest_path="mine.jsonl"), "data/manifest", 0)
    fetch_shard(manifest, 0, FetchConfig(allow_file_urls=True, cache_dir="cache"), "fetched")
    select_shard("fetched", SelectConfig(min_duration_s=1), "default")  # the default allow-list: never private
    assert read_jsonl(in_tmp / "default/kept.jsonl") == []
    select_shard("fetched", SelectConfig(allowed_licences=("CC-BY-4.0", "PRIVATE"), min_duration_s=1), "opted_in")
    assert [r["licence"] for r in read_jsonl(in_tmp / "opted_in/kept.jsonl")] == ["PRIVATE"]


def test_errors_are_clear(folder, in_tmp):
    with pytest.raises(UserFacingError, match="--licence 'mine all mine' is not a recognised licence"):
        write_folder_manifest(folder, "mine.jsonl", "mine all mine")
    with pytest.raises(UserFacingError, match="not a folder"):
        write_folder_manifest(in_tmp / "nope", "mine.jsonl", "MIT")
    (in_tmp / "empty").mkdir()
    with pytest.raises(UserFacingError, match="no audio files"):
        write_folder_manifest(in_tmp / "empty", "mine.jsonl", "MIT")


def test_ids_are_valid_unique_and_stable():
    paths = [Path("a b.wav"), Path("a_b.wav"), Path("x" * 150 + ".wav"), Path("..odd/.tmp-1.wav"), Path("ü.mp3")]
    ids = track_ids(paths)
    assert len(set(ids)) == len(ids) and ids == track_ids(paths)
    assert all(ID_PATTERN.fullmatch(i) and ".." not in i and ".tmp-" not in i and len(i) <= 128 for i in ids)


def test_cli_from_folder(folder, in_tmp, capsys):
    argv = ["manifest", "--from-folder", str(folder), "--licence", "CC-BY-4.0", "--write", "lists/mine.jsonl"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "lists/mine.jsonl: 4 tracks" in out and "corpus.manifest_path: lists/mine.jsonl" in out
    assert len(read_jsonl(in_tmp / "lists/mine.jsonl")) == 4
    assert cli.main(["manifest", "--from-folder", str(folder)]) == 1
    assert "--from-folder needs --write FILE" in capsys.readouterr().err
    assert json.loads((in_tmp / "lists/mine.jsonl").read_text().splitlines()[0])["id"] == "a"
    assert yaml  # params are not read by --from-folder: no params.yaml exists here
