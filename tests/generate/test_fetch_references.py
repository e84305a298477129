"""`ssmttm fetch-references` and `generate --reference --fetched`: MusicCaps-style rows served by a local HTTP server
through yt-dlp, 10 s cut from start_s, failures, the failure limit, the CLI, and the reference variants built from
the fetched clips, paired with the captions by id."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from ssmttm import cli
from ssmttm.artifacts import read_jsonl, sha256_file
from ssmttm.audio import load_mono
from ssmttm.codec import load_codec
from ssmttm.corpus import fetch as fetch_module
from ssmttm.corpus.fetch import FetchConfig
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import MANIFEST_FILE, write_clip
from ssmttm.generate.captions import shards_codec
from ssmttm.generate.config import GenerateConfig
from ssmttm.generate.fetch_references import CLIP_SAMPLE_RATE, fetch_references
from ssmttm.generate.synth import decode_clip
from tests.corpus._audio_fixtures import dominant_freq
from tests.corpus.conftest import http_server  # noqa: F401  (a fixture: the same server as the fetch tests)
from tests.generate._fixtures import make_inputs

SOURCE_RATE = 8000
PRE_START_HZ = 300.0  # the part of vidA before start_s: must not be in its clip
# ytid -> (tone after start_s in Hz, file length s, start_s, end_s); "gone" is never served (HTTP 404)
VIDEOS = {"vidA": (600.0, 14.0, 3, 13), "vidB": (440.0, 12.0, 1, 11), "-vidC": (1000.0, 11.0, 0, 10)}
COLUMNS = (
    "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval"
)


@pytest.fixture
def server(http_server, monkeypatch):  # noqa: F811 (the imported fixture, requested by name)
    """tests/corpus's static file server (byte ranges, request counts) on 127.0.0.1, serving tmp_path/www; no waits
    between fetch retries."""
    monkeypatch.setattr(fetch_module, "RETRY_WAIT_S", 0.0)
    return http_server


def serve_video(root: Path, ytid: str, freq: float, seconds: float, start_s: float) -> None:
    """A mono WAV: PRE_START_HZ before start_s, `freq` from start_s on."""
    t = np.arange(round(seconds * SOURCE_RATE)) / SOURCE_RATE
    tone = np.where(t < start_s, np.sin(2 * np.pi * PRE_START_HZ * t), np.sin(2 * np.pi * freq * t))
    sf.write(str(root / f"{ytid}.wav"), (0.4 * tone).astype(np.float32), SOURCE_RATE, subtype="PCM_16")


def musiccaps_csv(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS.split(","))
        for ytid, start_s, end_s in rows:
            writer.writerow([ytid, start_s, end_s, "/m/04rlf", "['tone']", f"a tone called {ytid}", 1, False, True])
    return path


def setup_musiccaps(server, folder: Path, extra: list[tuple[str, float, float]] = ()) -> tuple[Path, str]:
    """Serve VIDEOS; write a MusicCaps CSV of them plus `gone` (never served) and `extra`. Returns (csv, template)."""
    for ytid, (freq, seconds, start_s, _end) in VIDEOS.items():
        serve_video(server.root, ytid, freq, seconds, start_s)
    rows = [(ytid, start, end) for ytid, (_, _, start, end) in VIDEOS.items()] + [("gone", 30, 40), *extra]
    return musiccaps_csv(folder / "musiccaps.csv", rows), server.url("{ytid}.wav")


def captions_cfg(csv_path: Path, **kw) -> GenerateConfig:
    return GenerateConfig(captions="musiccaps", captions_path=str(csv_path), **kw)


def fetch_cfg(**kw) -> FetchConfig:
    return FetchConfig(**{"cache_dir": "cache", "retries": 0, "timeout_s": 10, **kw})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_clips_are_10_s_from_start_s_failures_listed_and_reruns_use_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_path, template = setup_musiccaps(server, tmp_path)
    summary = fetch_references(
        captions_cfg(csv_path), fetch_cfg(references_max_failure_fraction=0.25), template, "refs"
    )
    assert (summary.captions, summary.fetched, summary.failed, summary.reason) == (4, 3, 1, None)
    out = tmp_path / "refs"
    rows = read_jsonl(out / "clips.jsonl")
    assert [r["id"] for r in rows] == sorted(VIDEOS)
    for row in rows:
        freq, _, start_s, end_s = VIDEOS[row["id"]]
        assert (row["start_s"], row["end_s"], row["caption"]) == (start_s, end_s, f"a tone called {row['id']}")
        assert row["url"] == template.format(ytid=row["id"]) and row["path"] == f"refs/clips/{row['id']}.flac"
        assert row["sha256"] == sha256_file(out / "clips" / f"{row['id']}.flac")
        audio, rate = sf.read(str(tmp_path / row["path"]), dtype="float32")
        assert rate == CLIP_SAMPLE_RATE and audio.ndim == 1 and row["duration_s"] == 10.0
        assert audio.shape[0] == 10 * CLIP_SAMPLE_RATE  # exactly end_s - start_s, measured
        head, tail = audio[: CLIP_SAMPLE_RATE // 2], audio[-CLIP_SAMPLE_RATE // 2 :]
        assert dominant_freq(head, rate) == pytest.approx(freq, abs=5)  # starts at start_s: no PRE_START_HZ
        assert dominant_freq(tail, rate) == pytest.approx(freq, abs=5)
    failures = (out / "failures.tsv").read_text().splitlines()
    assert failures[0] == "id\turl\tkind\treason" and len(failures) == 2
    assert failures[1].startswith(f"gone\t{template.format(ytid='gone')}\tpermanent\tHTTP 404")
    written = yaml.safe_load((out / "summary.json").read_text())
    assert (written["fetched"], written["failed"], written["failed_permanent"]) == (3, 1, 1)
    assert written["captions"]["set"] == "musiccaps" and written["audio"]["sample_rate"] == CLIP_SAMPLE_RATE
    assert (out / "provenance.json").is_file()
    # a rerun downloads nothing that is in the cache and writes the same bytes
    first, requests = snapshot(out), server.count()
    fetch_references(captions_cfg(csv_path), fetch_cfg(references_max_failure_fraction=0.25), template, "refs")
    assert server.count() - requests == server.count("gone.wav") - 1  # only the missing one is asked again
    assert snapshot(out) == first
    # max_captions: the same first N captions generation uses
    fetch_references(captions_cfg(csv_path, max_captions=2), fetch_cfg(), template, "two")
    assert [r["id"] for r in read_jsonl(tmp_path / "two/clips.jsonl")] == ["vidA", "vidB"]


def test_too_many_failures_publish_nothing_and_name_the_failures_file(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_path, template = setup_musiccaps(server, tmp_path)
    with pytest.raises(UserFacingError, match=r"1 of 4 reference clip\(s\) failed.*refs\.failures\.tsv"):
        fetch_references(captions_cfg(csv_path), fetch_cfg(references_max_failure_fraction=0.2), template, "data/refs")
    assert not (tmp_path / "data/refs").exists()
    listed = (tmp_path / "data/refs.failures.tsv").read_text().splitlines()
    assert len(listed) == 2 and listed[1].startswith("gone\t") and "\tpermanent\tHTTP 404" in listed[1]
    requests = server.count()
    assert fetch_references(
        captions_cfg(csv_path), fetch_cfg(references_max_failure_fraction=0.25), template, "data/refs"
    )
    assert server.count() - requests == server.count("gone.wav") - 1  # the first run's downloads were kept
    assert not (tmp_path / "data/refs.failures.tsv").exists()  # the stale list goes with the successful run


def test_file_captions_with_urls_local_files_cut_here(tmp_path, monkeypatch):
    """A .jsonl caption set names its audio by `url` (+ start_s, end_s); a file:// URL is fetched whole and cut
    after decoding; a row without url is a permanent failure."""
    monkeypatch.chdir(tmp_path)
    serve_video(tmp_path, "local", 600.0, 5.0, 2.0)
    rows = [
        {"id": "loc", "caption": "a local tone", "url": (tmp_path / "local.wav").as_uri(), "start_s": 2, "end_s": 4},
        {"id": "nourl", "caption": "no audio"},
    ]
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = GenerateConfig(captions="file", captions_path=str(captions))
    fetch_references(cfg, fetch_cfg(allow_file_urls=True, references_max_failure_fraction=0.5), "", "refs")
    (row,) = read_jsonl(tmp_path / "refs/clips.jsonl")
    audio, rate = sf.read(str(tmp_path / row["path"]), dtype="float32")
    assert (row["id"], row["duration_s"], audio.shape[0]) == ("loc", 2.0, 2 * CLIP_SAMPLE_RATE)
    assert dominant_freq(audio[: rate // 2], rate) == pytest.approx(600.0, abs=5)
    failures = (tmp_path / "refs/failures.tsv").read_text().splitlines()
    assert failures[1].startswith("nourl\t\tpermanent\tno 'url'")
    txt = tmp_path / "captions.txt"
    txt.write_text("calm piano\n")
    with pytest.raises(UserFacingError, match="no caption has a reference audio URL"):
        fetch_references(GenerateConfig(captions="file", captions_path=str(txt)), fetch_cfg(), "", "refs")


def write_params(repo_root: Path, folder: Path, generate: dict, fetch: dict | None = None, template: str = "") -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["generate"].update(generate)
    params["fetch"].update({"cache_dir": "cache", "retries": 0, "timeout_s": 10, **(fetch or {})})
    if template:
        params["corpus"].setdefault("musiccaps", {})["url_template"] = template
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_cli_exit_codes_and_the_demo_s_empty_folder(server, tmp_path, monkeypatch, repo_root, capsys):
    monkeypatch.chdir(tmp_path)
    csv_path, template = setup_musiccaps(server, tmp_path)
    musiccaps = {"captions": "musiccaps", "captions_path": str(csv_path)}
    verb = ["fetch-references", "--params", "params.yaml", "--out", "data/fetch_references"]
    write_params(repo_root, tmp_path, musiccaps, {"references_max_failure_fraction": 0.25}, template)
    assert cli.main(verb) == 0
    assert "3 of 4 reference clips fetched, 1 failed" in capsys.readouterr().out
    write_params(repo_root, tmp_path, musiccaps, {"references_max_failure_fraction": 0.0}, template)
    assert cli.main(verb) == 1
    assert "data/fetch_references.failures.tsv" in capsys.readouterr().err
    write_params(repo_root, tmp_path, {"captions": "musiccaps", "captions_path": None})
    assert cli.main(verb) == 2  # a params error: musiccaps without its CSV
    write_params(repo_root, tmp_path, {"captions": "musiccaps", "captions_path": "nowhere.csv"})
    assert cli.main(verb) == 1 and "nowhere.csv" in capsys.readouterr().err
    # the demo (test_split): an empty but valid folder saying why, so every profile runs the same steps
    write_params(repo_root, tmp_path, {"captions": "test_split", "captions_path": None})
    requests = server.count()
    assert cli.main(verb) == 0 and "nothing fetched" in capsys.readouterr().out
    out = tmp_path / "data/fetch_references"
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["fetched"] == 0 and "test_split" in summary["reason"]
    assert (out / "clips.jsonl").read_text() == "" and not list((out / "clips").iterdir())
    assert (out / "failures.tsv").read_text() == "id\turl\tkind\treason\n" and (out / "provenance.json").is_file()
    assert server.count() == requests


# ----------------------------------------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("fetched_references"), real_text=True)


def generate_params(repo_root: Path, folder: Path, **generate) -> Path:
    base = {
        "batch_size": 2,
        "seconds": 0.5,
        "device": "cpu",
        "top_k": 8,
        "refine_sampler": "ddim",
        "refine_steps": 2,
        **generate,
    }
    path = write_params(repo_root, folder, base)
    params = yaml.safe_load(path.read_text())
    params["portable_cpu"] = False
    params["text"].update(encoder="minilm", max_length=8, device="cpu")
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_generate_reference_from_fetched_clips_paired_by_caption_id(
    server, inputs, tmp_path, monkeypatch, repo_root, capsys
):
    monkeypatch.chdir(tmp_path)
    serve_video(server.root, "short", 200.0, 0.3, 0.0)  # a video shorter than generate.seconds
    csv_path, template = setup_musiccaps(server, tmp_path, extra=[("short", 0, 10)])
    fetch_references(
        captions_cfg(csv_path), fetch_cfg(references_max_failure_fraction=0.5), template, "data/fetch_references"
    )
    params = generate_params(repo_root, tmp_path, captions="musiccaps", captions_path=str(csv_path))
    common = ["generate", "--params", str(params), "--reference", "--refiner", str(inputs.refiner)]
    common += ["--codec", str(inputs.codec), "--shards", str(inputs.shards), "--no-progress"]
    # musiccaps without --fetched: a clear error
    assert cli.main([*common, "--out", "ref"]) == 1
    assert "--fetched data/fetch_references" in capsys.readouterr().err
    assert cli.main([*common, "--fetched", "data/fetch_references", "--out", "ref"]) == 0
    assert "12 clips ok, 8 failed (20 made now, 0 kept)" in capsys.readouterr().out
    codec = load_codec(inputs.codec)
    n_samples = codec.sample_rate // 2
    # the token shards' encode window (these tiny shards record none: then one window of generate.seconds)
    window = shards_codec(inputs.shards).get("encode_window_samples") or codec.window_samples(0.5)
    ids = sorted([*VIDEOS, "gone", "short"])
    for variant in ("original", "codec", "codebook1_only", "reference_codebook1"):
        rows = {r["caption_id"]: r for r in read_jsonl(tmp_path / "ref" / variant / MANIFEST_FILE)}
        assert sorted(rows) == ids
        assert all(rows[i]["caption"] == f"a tone called {i}" and rows[i]["clip_id"] == i for i in ids)
        assert rows["gone"]["status"] == "failed" and rows["gone"]["reason"].startswith("missing")
        assert "HTTP 404" in rows["gone"]["reason"]
        assert rows["short"]["status"] == "failed" and rows["short"]["reason"].startswith("short")
        assert all(rows[i]["status"] == "ok" and rows[i]["num_samples"] == n_samples for i in VIDEOS)
    for ytid, (freq, *_rest) in VIDEOS.items():
        # original: the fetched clip of this caption id, from its start_s, at the codec rate, cropped
        written, rate = sf.read(str(tmp_path / "ref/original" / f"{ytid}.wav"), dtype="float32")
        assert rate == codec.sample_rate and written.shape[0] == n_samples
        assert dominant_freq(written, rate) == pytest.approx(freq, abs=10)
        # codec: that clip encoded in the token shards' window and decoded
        clip = load_mono(tmp_path / "data/fetch_references/clips" / f"{ytid}.flac", codec.sample_rate)[:n_samples]
        codes, _ = codec.encode_windowed(torch.from_numpy(clip)[None, None], window)
        expected = write_clip(tmp_path / "expected.wav", decode_clip(codec, codes[0]), codec.sample_rate, n_samples)
        codec_row = [r for r in read_jsonl(tmp_path / "ref/codec" / MANIFEST_FILE) if r["caption_id"] == ytid][0]
        assert codec_row["sha256"] == expected["sha256"]
    summary = yaml.safe_load((tmp_path / "ref/summary.json").read_text())
    assert summary["captions"]["fetched"] == "data/fetch_references" and summary["skipped"] == {}
    # a rerun makes nothing again
    assert cli.main([*common, "--fetched", "data/fetch_references", "--out", "ref"]) == 0
    assert "(0 made now, 20 kept)" in capsys.readouterr().out
    # a fetched folder of another caption set is refused
    (tmp_path / "demo").mkdir()
    other = generate_params(repo_root, tmp_path / "demo", captions="test_split", captions_path=None)
    assert cli.main(["fetch-references", "--params", str(other), "--out", "demo_refs"]) == 0
    assert cli.main([*common, "--fetched", "demo_refs", "--out", "ref2"]) == 1
    assert "fetched for generate.captions 'test_split'" in capsys.readouterr().err


def test_test_split_accepts_and_ignores_fetched(inputs, tmp_path, monkeypatch, repo_root, capsys):
    monkeypatch.chdir(tmp_path)
    params = generate_params(repo_root, tmp_path, captions="test_split", max_captions=1, seconds=0.05)
    args = ["generate", "--params", str(params), "--reference", "--refiner", str(inputs.refiner), "--no-progress"]
    args += ["--codec", str(inputs.codec), "--shards", str(inputs.shards), "--clips", str(inputs.segment)]
    assert cli.main([*args, "--fetched", "data/fetch_references", "--out", "ref"]) == 0
    rows = read_jsonl(tmp_path / "ref/original" / MANIFEST_FILE)
    assert [(r["caption_id"], r["status"]) for r in rows] == [("trackA-0000", "ok")]
