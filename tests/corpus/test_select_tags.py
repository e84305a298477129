"""Licences in a file's own tags fail closed: read by content, every field select reads, damaged tags rejected."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.flac import FLAC
from mutagen.id3 import COMM, ID3, TCOP, TXXX, USER, WCOP
from mutagen.mp4 import MP4, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from ssmttm.artifacts import read_jsonl, write_jsonl
from ssmttm.corpus.select import SelectConfig, decide_licence, read_tag_licences, select_shard

from ._audio_fixtures import ffmpeg_exe

CFG = SelectConfig(allowed_licences=("CC-BY-4.0", "CC-BY-SA-4.0", "MIT"), min_duration_s=0.5, max_duration_s=60.0)
MANIFEST_LICENCE = "CC-BY-4.0"
LICENCE_REASONS = {"licence_not_allowed", "licence_unknown", "licence_disagreement"}
EXTENSIONS = (".mp3", ".flac", ".ogg", ".opus", ".wav", ".m4a", ".webm", ".bin", "")

# Spellings that must never be kept (no-derivatives, rights reserved, or licence words that name nothing known).
DISALLOWED = (
    "CC BY-ND 4.0",
    "cc-by-nd-4.0",
    "CC_BY_NC_ND_3.0",
    "https://creativecommons.org/licenses/by-nd/4.0/",
    "http://creativecommons.org/licenses/by-nc-nd/3.0/deed.fr",
    "Attribution-NoDerivatives 4.0 International",
    "Creative Commons Attribution-NonCommercial-NoDerivs 3.0 Unported License",
    "This work is licensed under a Creative Commons Attribution-NoDerivatives 4.0 International License.",
    "(c) 2020 Label. All Rights Reserved.",
    "Licensed for personal use only",
    "This track is CC BY-ND 4.0, enjoy!",
    "Creative Commons",
)
# Spellings of the manifest's licence (CC-BY-4.0): the positive control, so a field select ignores fails the test.
ALLOWED = (
    "CC BY 4.0",
    "cc-by-4.0",
    "https://creativecommons.org/licenses/by/4.0/",
    "Creative Commons Attribution 4.0 International",
    "This work is licensed under a Creative Commons Attribution 4.0 International License.",
)


def _tone(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def _ffmpeg(source: Path, dest: Path, *args: str) -> Path:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(source), *args, str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """One untagged file per container (decodable, 1 s)."""
    root = tmp_path_factory.mktemp("bases")
    wav = _tone(root / "base.wav")
    out = {"wav": wav}
    for kind, fmt in (("flac", "FLAC"), ("ogg", "OGG")):
        data, rate = sf.read(str(wav))
        sf.write(str(root / f"base.{kind}"), data, rate, format=fmt)
        out[kind] = root / f"base.{kind}"
    out["mp3"] = _ffmpeg(wav, root / "base.mp3", "-c:a", "libmp3lame", "-b:a", "64k")
    out["opus"] = _ffmpeg(wav, root / "base.opus", "-c:a", "libopus", "-b:a", "32k")
    out["m4a"] = _ffmpeg(wav, root / "base.m4a", "-c:a", "aac", "-b:a", "64k")
    return out


def _vorbis(cls):
    def tag(path: Path, key: str, value: str) -> None:
        audio = cls(str(path))
        audio[key] = value
        audio.save()

    return tag


def _id3(frame_for):
    def tag(path: Path, value: str) -> None:
        if path.read_bytes()[:4] == b"RIFF":
            audio = WAVE(str(path))
            audio.add_tags()
            audio.tags.add(frame_for(value))
            audio.save()
        else:
            tags = ID3()
            tags.add(frame_for(value))
            tags.save(str(path))

    return tag


def _mp4(key: str, freeform: bool = False):
    def tag(path: Path, value: str) -> None:
        audio = MP4(str(path))
        audio[key] = [MP4FreeForm(value.encode())] if freeform else [value]
        audio.save()

    return tag


def _ffmpeg_tag(container: str, key: str):
    """RIFF INFO (wav) and Matroska (webm) tags, which mutagen does not read: the ffmpeg reader must."""

    def make(bases: dict[str, Path], path: Path, value: str) -> None:
        codec = ["-c:a", "libopus"] if container == "webm" else []
        _ffmpeg(bases["wav"], path, *codec, "-metadata", f"{key}={value}", "-f", container)

    return make


# (container, field) -> writer. Every field select reads, in every container it reads it from.
FIELDS = {
    **{("flac", k): _vorbis(FLAC) for k in ("LICENSE", "COPYRIGHT", "COMMENT", "DESCRIPTION", "USAGE_NOTE")},
    **{("ogg", k): _vorbis(OggVorbis) for k in ("LICENSE", "COPYRIGHT", "COMMENT")},
    **{("opus", k): _vorbis(OggOpus) for k in ("LICENSE", "COMMENT")},
    ("mp3", "TXXX:LICENSE"): _id3(lambda v: TXXX(encoding=3, desc="LICENSE", text=[v])),
    ("mp3", "TXXX:NOTES"): _id3(lambda v: TXXX(encoding=1, desc="NOTES", text=[v])),  # UTF-16
    ("mp3", "TCOP"): _id3(lambda v: TCOP(encoding=0, text=[v.replace("©", "(c)")])),
    ("mp3", "COMM"): _id3(lambda v: COMM(encoding=3, lang="eng", desc="", text=[v])),
    ("mp3", "USER"): _id3(lambda v: USER(encoding=3, lang="eng", text=v)),
    ("wav", "TXXX:LICENSE"): _id3(lambda v: TXXX(encoding=3, desc="LICENSE", text=[v])),
    ("wav", "COMM"): _id3(lambda v: COMM(encoding=1, lang="eng", desc="note", text=[v])),
    ("m4a", "cprt"): _mp4("cprt"),
    ("m4a", "\xa9cmt"): _mp4("\xa9cmt"),
    ("m4a", "desc"): _mp4("desc"),
    ("m4a", "----:com.apple.iTunes:LICENSE"): _mp4("----:com.apple.iTunes:LICENSE", freeform=True),
    ("riff", "copyright"): _ffmpeg_tag("wav", "copyright"),
    ("riff", "comment"): _ffmpeg_tag("wav", "comment"),
    ("webm", "LICENSE"): _ffmpeg_tag("webm", "LICENSE"),
    ("webm", "comment"): _ffmpeg_tag("webm", "comment"),
}
URL_FIELDS = {("mp3", "WCOP"): _id3(lambda v: WCOP(url=v))}  # URL frames hold URLs only


def _write(bases: dict[str, Path], container: str, field: str, value: str, path: Path) -> Path:
    """A file of `container` whose `field` holds `value`, saved under `path` (any extension)."""
    writer = FIELDS.get((container, field)) or URL_FIELDS[(container, field)]
    if container in ("riff", "webm"):
        writer(bases, path.with_suffix(".src"), value)
        os.replace(path.with_suffix(".src"), path)
        return path
    shutil.copyfile(bases[container], path)
    if container in ("flac", "ogg", "opus"):
        writer(path, field, value)
    else:
        writer(path, value)
    return path


def _select(folder: Path, files: dict[str, Path]) -> tuple[dict[str, dict], dict[str, tuple[str, str]]]:
    """Run select over `files` (id -> file) with the manifest naming CC-BY-4.0; return (kept, rejected)."""
    (folder / "audio").mkdir(parents=True)
    rows = []
    for track_id, file in sorted(files.items()):
        os.replace(file, folder / "audio" / f"{track_id}{file.suffix}")
        rows.append(
            {"id": track_id, "audio_path": f"audio/{track_id}{file.suffix}", "licence_manifest": MANIFEST_LICENCE}
        )
    write_jsonl(folder / "tracks.jsonl", rows)
    select_shard(folder, CFG, folder / "out")
    kept = {r["id"]: r for r in read_jsonl(folder / "out/kept.jsonl")}
    lines = (folder / "out/rejected.tsv").read_text().splitlines()[1:]
    return kept, {line.split("\t")[0]: tuple(line.split("\t")[1:]) for line in lines}


def test_every_field_of_every_container_is_read(bases, tmp_path):
    """Each field: an allowed spelling agreeing with the manifest is kept, a disallowed one is rejected."""
    files = {}
    for k, (container, field) in enumerate([*FIELDS, *URL_FIELDS]):
        url_only = (container, field) in URL_FIELDS
        allowed = "https://creativecommons.org/licenses/by/4.0/" if url_only else "CC BY 4.0"
        disallowed = "https://creativecommons.org/licenses/by-nd/4.0/" if url_only else "CC BY-ND 4.0"
        extension = EXTENSIONS[k % len(EXTENSIONS)]  # the name never matches the content for most of them
        files[f"ok-{k:02d}"] = _write(bases, container, field, allowed, tmp_path / f"ok-{k:02d}{extension}")
        files[f"nd-{k:02d}"] = _write(bases, container, field, disallowed, tmp_path / f"nd-{k:02d}{extension}")
    kept, rejected = _select(tmp_path / "shard", files)
    assert sorted(kept) == sorted(f for f in files if f.startswith("ok-")), rejected
    assert all(row["licence_sources"] == {"manifest": "CC-BY-4.0", "tags": "CC-BY-4.0"} for row in kept.values())
    assert {reason for reason, _ in rejected.values()} == {"licence_disagreement"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from(sorted(FIELDS)),
            st.sampled_from(EXTENSIONS),
            st.one_of(
                st.sampled_from(DISALLOWED).map(lambda s: (s, False)), st.sampled_from(ALLOWED).map(lambda s: (s, True))
            ),
            st.sampled_from([str.upper, str.lower, str.title, str]),
            st.sampled_from(["", " ", "  \t"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_licence_spellings_in_any_field_under_any_name(bases, tmp_path_factory, data):
    """Content/extension mismatches x licence spellings x tag fields: disallowed never kept, allowed kept."""
    root = tmp_path_factory.mktemp("prop")
    files, expect_kept = {}, set()
    for k, ((container, field), extension, (spelling, allowed), case, pad) in enumerate(data):
        value = pad + case(spelling) + pad
        files[f"t{k}"] = _write(bases, container, field, value, root / f"t{k}{extension}")
        if allowed:
            expect_kept.add(f"t{k}")
    kept, rejected = _select(root / "shard", files)
    assert set(kept) == expect_kept, rejected
    assert {reason for reason, _ in rejected.values()} <= LICENCE_REASONS


def test_flac_behind_an_mp3_name_is_read_as_flac(bases, tmp_path):
    """The case of the issue: the extension-based reader failed and select kept a no-derivatives track."""
    path = _write(bases, "flac", "LICENSE", "CC BY-ND 4.0", tmp_path / "x.mp3")
    assert read_tag_licences(path).statements == ["CC BY-ND 4.0"]
    kept, rejected = _select(tmp_path / "shard", {"x": path})
    assert kept == {} and rejected["x"][0] == "licence_disagreement" and "CC-BY-ND-4.0" in rejected["x"][1]


def test_an_apev2_tag_on_an_mp3_is_read_too(bases, tmp_path):
    """mutagen's MP3 reads ID3 only: the raw scan notices the licence words, and the APEv2 reader reads them."""
    path = tmp_path / "ape.mp3"
    shutil.copyfile(bases["mp3"], path)
    ape = APEv2()
    ape["License"] = "CC BY-ND 4.0"
    ape.save(str(path))
    assert read_tag_licences(path).statements == ["CC BY-ND 4.0"]


def test_unparseable_and_damaged_tags_are_rejected_with_their_reason(bases, tmp_path):
    broken = _write(bases, "flac", "LICENSE", "CC BY 4.0", tmp_path / "broken.flac")
    data = bytearray(broken.read_bytes())
    start = data.index(b"LICENSE") - 4
    data[start : start + 4] = (10**6).to_bytes(4, "little")  # a Vorbis comment length past the block's end
    broken.write_bytes(bytes(data))
    reading = read_tag_licences(broken)
    assert reading.problem == "tags_unreadable" and "mutagen cannot parse the tags" in reading.detail

    # An XMP-style packet after the audio: no reader parses it, so the licence it states cannot be judged.
    hidden = tmp_path / "hidden.wav"
    shutil.copyfile(bases["wav"], hidden)
    with open(hidden, "ab") as handle:
        handle.write(b"<x:xmpmeta><cc:license rdf:resource='http://creativecommons.org/licenses/by-nd/4.0/'/>")
    reading = read_tag_licences(hidden)
    assert reading.problem == "tags_malformed" and "licen" in reading.detail

    not_audio = tmp_path / "text.flac"
    not_audio.write_text("LICENSE=CC BY 4.0\n" * 20)
    kept, rejected = _select(tmp_path / "shard", {"broken": broken, "hidden": hidden, "text": not_audio})
    assert kept == {}
    assert {k: v[0] for k, v in rejected.items()} == {
        "broken": "tags_unreadable",
        "hidden": "tags_malformed",
        "text": "undecodable",  # not audio at all: the real cause, rather than its unreadable tags
    }


def test_names_and_plain_copyright_notices_are_not_licence_statements(bases, tmp_path):
    path = tmp_path / "a.flac"
    shutil.copyfile(bases["flac"], path)
    _vorbis(FLAC)(path, "TITLE", "License to Kill (All Rights Reserved remix)")
    _vorbis(FLAC)(path, "COPYRIGHT", "(c) 2012 Some Artist")
    _vorbis(FLAC)(path, "COMMENT", "visit https://example.org")
    reading = read_tag_licences(path)
    assert (reading.statements, reading.problem) == ([], None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    container=st.sampled_from(["flac", "mp3", "m4a"]),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_damaged_tag_blocks_never_let_a_disallowed_licence_through(bases, tmp_path_factory, container, flips):
    """Random bytes of the tag region overwritten: while the no-derivatives text survives, the track is rejected."""
    root = tmp_path_factory.mktemp("flip")
    field = {"flac": "LICENSE", "mp3": "TXXX:LICENSE", "m4a": "----:com.apple.iTunes:LICENSE"}[container]
    path = _write(bases, container, field, "CC BY-ND 4.0", root / "x.bin")
    data = bytearray(path.read_bytes())
    end = data.index(b"CC BY-ND 4.0") + 16  # the tag block up to the licence value
    for position, value in flips:
        data[position % end] = value
    path.write_bytes(bytes(data))
    reading = read_tag_licences(path)
    decision = decide_licence({"manifest": [MANIFEST_LICENCE], "tags": reading.statements}, CFG)
    if reading.problem is None and decision.reason is None:
        assert not re.search(rb"cc[ _-]by[ _-]nd", bytes(data).lower()), reading
