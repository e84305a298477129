"""segment: cut plan, tail policies, silence, caps, contract fields, determinism, atomicity, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

import ssmttm
from ssmttm import audio
from ssmttm.artifacts import read_jsonl, write_jsonl
from ssmttm.config import section_to_dataclass
from ssmttm.corpus import segment as seg
from ssmttm.errors import UserFacingError
from tests.corpus._audio_fixtures import kept_row, tone, write_audio, write_kept

RATE = 16000  # small codec rate keeps the tests fast


def make_cfg(**overrides) -> seg.SegmentConfig:
    section = {
        "sample_rate": RATE,
        "clip_seconds": 1.0,
        "hop_seconds": 1.0,
        "tail": "drop",
        "min_tail_seconds": 0.3,
        "silence_db": -50,
        "max_clips_per_track": None,
        "vocal_removal": {"enabled": False},
    }
    section.update(overrides)
    return section_to_dataclass(seg.SegmentConfig, section)


@pytest.fixture
def shard(tmp_path) -> Path:
    """A select shard with three tracks in three formats and rates; 'quiet' has a silent second second."""
    audio_dir = tmp_path / "fetch" / "audio"
    loud = write_audio(audio_dir / "loud.flac", tone(440, 2.5, 22050, channels=2), 22050)  # 2 clips + 0.5 s tail
    quiet_src = np.concatenate(
        [tone(330, 1.0, 44100), np.zeros((1, 44100), np.float32), tone(330, 1.0, 44100)], axis=1
    )  # tone | silence | tone
    quiet = write_audio(audio_dir / "quiet.wav", quiet_src, 44100)
    short = write_audio(audio_dir / "short.ogg", tone(550, 0.4, 48000), 48000)  # only a tail
    rows = [
        kept_row("quiet", quiet, {"mood": "calm", "bpm": 70}),
        kept_row("loud", loud, {"genre": ["rock"], "key": "E minor"}),
        kept_row("short", short),
    ]
    write_kept(tmp_path / "select" / "shard-00000", rows)
    return tmp_path / "select" / "shard-00000"


def run(shard: Path, cfg: seg.SegmentConfig, out: Path | None = None, **kw) -> tuple[list[dict], list[list[str]], Path]:
    out = out or shard.parent.parent / "segment" / "shard-00000"
    seg.segment_shard(shard, cfg, out, seed=7, **kw)
    dropped = [line.split("\t") for line in (out / "dropped.tsv").read_text().splitlines()]
    return read_jsonl(out / "clips.jsonl"), dropped, out


# ----------------------------------------------------------------------------------------------- cut plan


@pytest.mark.parametrize(
    ("n", "clip", "hop", "expected"),
    [
        (10, 5, 5, [(0, 0, 5, False), (1, 5, 5, False)]),  # exact fit: no tail
        (12, 5, 5, [(0, 0, 5, False), (1, 5, 5, False), (2, 10, 2, True)]),
        (12, 5, 3, [(0, 0, 5, False), (1, 3, 5, False), (2, 6, 5, False), (3, 9, 3, True)]),  # overlap: one tail only
        (11, 5, 3, [(0, 0, 5, False), (1, 3, 5, False), (2, 6, 5, False)]),  # the end is covered: no tail
        (12, 4, 6, [(0, 0, 4, False), (1, 6, 4, False)]),  # gaps between clips; the last window fits
        (13, 4, 6, [(0, 0, 4, False), (1, 6, 4, False), (2, 12, 1, True)]),
        (3, 5, 5, [(0, 0, 3, True)]),  # shorter than a clip
        (0, 5, 5, []),
    ],
)
def test_plan_pieces(n, clip, hop, expected):
    got = [(p.index, p.start, p.length, p.is_tail) for p in seg.plan_pieces(n, clip, hop)]
    assert got == expected


# ----------------------------------------------------------------------------------------------- stage


def test_drop_tail_and_silence(shard):
    clips, dropped, out = run(shard, make_cfg(tail="drop"))
    assert [c["clip_id"] for c in clips] == ["loud-0000", "loud-0001", "quiet-0000", "quiet-0002"]
    assert dropped[0] == ["clip_id", "reason", "detail"]
    reasons = {row[0]: row[1] for row in dropped[1:]}
    assert reasons == {"loud-0002": "short_tail", "quiet-0001": "silent", "short-0000": "short_tail"}
    for clip in clips:
        assert set(clip) == {
            "clip_id",
            "track_id",
            "audio_path",
            "start_s",
            "duration_s",
            "num_samples",
            "sample_rate",
            "licence",
            "tags",
            "vocals_removed",
        }
        assert clip["num_samples"] == RATE and clip["duration_s"] == 1.0 and clip["sample_rate"] == RATE
        assert clip["vocals_removed"] is False and clip["licence"] == "CC-BY-4.0"
        path = Path(clip["audio_path"])
        assert path == out / "clips" / f"{clip['clip_id']}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (RATE, 1, "PCM_16", RATE)
    assert [c["start_s"] for c in clips] == [0.0, 1.0, 0.0, 2.0]
    assert clips[2]["tags"] == {"mood": "calm", "bpm": 70}
    assert sorted(p.name for p in (out / "clips").iterdir()) == [f"{c['clip_id']}.wav" for c in clips]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "segment" and prov["seed"] == 7
    assert prov["params"]["sample_rate"] == RATE and prov["counts"] == {"tracks": 3, "clips": 4, "dropped": 3}


def test_clip_audio_is_the_downmixed_resampled_track(shard, tmp_path):
    clips, _, _ = run(shard, make_cfg())
    src, rate = audio.load_audio(tmp_path / "fetch" / "audio" / "loud.flac")  # (2, N) at 22050
    expected = audio.resample(src.mean(axis=0, keepdims=True), rate, RATE)[0]  # (N',) at 16 kHz
    for clip in clips[:2]:
        got, got_rate = sf.read(clip["audio_path"], dtype="float32")
        start = round(clip["start_s"] * RATE)
        np.testing.assert_allclose(got, expected[start : start + RATE], atol=1.5 / 32768)


def test_pad_tail_zero_pads_and_records_real_duration(shard):
    clips, dropped, _ = run(shard, make_cfg(tail="pad", min_tail_seconds=0.3))
    by_id = {c["clip_id"]: c for c in clips}
    tail = by_id["loud-0002"]
    assert tail["num_samples"] == RATE and tail["duration_s"] == 0.5 and tail["start_s"] == 2.0
    samples, _ = sf.read(tail["audio_path"], dtype="float32")
    assert np.all(samples[RATE // 2 :] == 0) and np.abs(samples[: RATE // 2]).max() > 0.3
    assert by_id["short-0000"]["num_samples"] == RATE and by_id["short-0000"]["duration_s"] == 0.4
    assert "quiet-0003" not in by_id  # quiet is exactly 3 s: no tail piece at all
    assert [r[0] for r in dropped[1:]] == ["quiet-0001"]


def test_keep_tail_is_shorter_and_min_tail_applies(shard):
    clips, dropped, _ = run(shard, make_cfg(tail="keep", min_tail_seconds=0.45))
    by_id = {c["clip_id"]: c for c in clips}
    assert by_id["loud-0002"]["num_samples"] == RATE // 2 and by_id["loud-0002"]["duration_s"] == 0.5
    assert sf.info(by_id["loud-0002"]["audio_path"]).frames == RATE // 2
    assert "short-0000" not in by_id  # 0.4 s < 0.45 s
    detail = {r[0]: (r[1], r[2]) for r in dropped[1:]}
    assert detail["short-0000"][0] == "short_tail" and "min_tail_seconds" in detail["short-0000"][1]


def test_overlapping_hop_and_clip_cap(shard):
    clips, dropped, _ = run(shard, make_cfg(clip_seconds=1.0, hop_seconds=0.5, max_clips_per_track=3))
    reasons = {r[0]: r[1] for r in dropped[1:]}
    loud = [c for c in clips if c["track_id"] == "loud"]
    assert [(c["clip_id"], c["start_s"]) for c in loud] == [("loud-0000", 0.0), ("loud-0001", 0.5), ("loud-0002", 1.0)]
    assert reasons["loud-0003"] == "max_clips" and "loud-0004" not in reasons  # 2.5 s: the last window ends at 2.5
    # quiet (tone | silence | tone): the window at 1.0-2.0 s is silent; ids keep counting past it, and the cap
    # counts kept clips only
    quiet = [(c["clip_id"], c["start_s"]) for c in clips if c["track_id"] == "quiet"]
    assert quiet == [("quiet-0000", 0.0), ("quiet-0001", 0.5), ("quiet-0003", 1.5)]
    assert reasons["quiet-0002"] == "silent" and reasons["quiet-0004"] == "max_clips"
    assert "quiet-0005" not in reasons  # 3 s = 5 windows of 1 s every 0.5 s: no tail


def test_silence_threshold_is_in_dbfs(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(440, 1.0, RATE, amp=0.01), RATE)  # about -43 dBFS
    write_kept(tmp_path / "sel", [kept_row("a", path)])
    clips, _, _ = run(tmp_path / "sel", make_cfg(silence_db=-40), out=tmp_path / "o1")
    assert clips == []
    clips, _, _ = run(tmp_path / "sel", make_cfg(silence_db=-46), out=tmp_path / "o2")
    assert [c["clip_id"] for c in clips] == ["a-0000"]


def test_non_finite_samples_are_dropped_as_such_not_as_silence(tmp_path):
    samples = tone(440, 3.0, RATE)
    samples[0, RATE + 100] = np.nan  # clip 1 holds a NaN, clip 2 an infinity
    samples[0, 2 * RATE + 5] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(str(path), samples.T, RATE, subtype="FLOAT")
    write_kept(tmp_path / "sel", [kept_row("a", path)])
    clips, dropped, _ = run(tmp_path / "sel", make_cfg(), out=tmp_path / "out")
    assert [c["clip_id"] for c in clips] == ["a-0000"]
    assert dropped[1:] == [
        ["a-0001", "non_finite", "1 NaN or infinite samples"],
        ["a-0002", "non_finite", "1 NaN or infinite samples"],
    ]


def test_excerpt_window_is_honoured_only_when_the_file_holds_it(tmp_path):
    full = np.concatenate([tone(440, 1.0, RATE), tone(880, 1.0, RATE), tone(440, 1.0, RATE)], axis=1)
    whole = write_audio(tmp_path / "whole.wav", full, RATE)
    cut = write_audio(tmp_path / "cut.wav", tone(880, 1.0, RATE), RATE)  # already cut to the excerpt
    write_kept(
        tmp_path / "sel",
        [kept_row("whole", whole, start_s=1.0, end_s=2.0), kept_row("cut", cut, start_s=1.0, end_s=2.0)],
    )
    clips, _, _ = run(tmp_path / "sel", make_cfg(), out=tmp_path / "out")
    assert [c["clip_id"] for c in clips] == ["cut-0000", "whole-0000"]
    for clip in clips:
        got, _ = sf.read(clip["audio_path"], dtype="float32")
        np.testing.assert_allclose(got, tone(880, 1.0, RATE)[0], atol=1e-3)


@pytest.mark.parametrize("audio_format", ["wav", "flac"])
def test_rerun_is_byte_identical(shard, audio_format):
    _, _, out = run(shard, make_cfg(tail="pad", audio_format=audio_format))
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    run(shard, make_cfg(tail="pad", audio_format=audio_format))
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first.keys() == second.keys() and len(first) == 9  # 6 clips + 3 tables
    assert first == second


# ----------------------------------------------------------------------------------------------- FLAC clips


def _pcm16(path: Path) -> np.ndarray:
    samples, _ = sf.read(str(path), dtype="int16")
    return samples


def test_flac_clip_holds_exactly_the_16_bit_samples_of_the_wav_clip(tmp_path):
    rng = np.random.default_rng(0)
    # full scale, beyond full scale (clipped), silence and every rounding case in between
    samples = np.concatenate([rng.uniform(-1.2, 1.2, RATE), [-1.0, 1.0, 0.0, 0.5 / 32767, -0.5 / 32767]]).astype(
        np.float32
    )
    seg.write_clip(tmp_path / "c.wav", samples, RATE, "wav")
    seg.write_clip(tmp_path / "c.flac", samples, RATE, "flac")
    assert sf.info(str(tmp_path / "c.flac")).format == "FLAC" and sf.info(str(tmp_path / "c.flac")).subtype == "PCM_16"
    np.testing.assert_array_equal(_pcm16(tmp_path / "c.flac"), _pcm16(tmp_path / "c.wav"))
    wav_float, _ = sf.read(str(tmp_path / "c.wav"), dtype="float32")
    flac_float, _ = sf.read(str(tmp_path / "c.flac"), dtype="float32")
    np.testing.assert_array_equal(flac_float, wav_float)  # what every clip reader gets


def test_flac_segment_output_is_what_tokenize_reads_as_wav(shard, tmp_path):
    from ssmttm.codec.train import resolve_audio_path
    from ssmttm.generate.references import index_clips
    from ssmttm.tokens.tokenize import TokenizeConfig, load_clip, tokenize_shard
    from tests.codec import tiny_codec

    wav_clips, _, wav_out = run(shard, make_cfg(tail="pad"), out=tmp_path / "wav" / "shard-00000")
    flac_clips, _, flac_out = run(
        shard, make_cfg(tail="pad", audio_format="flac"), out=tmp_path / "flac" / "shard-00000"
    )
    assert [c["clip_id"] for c in flac_clips] == [c["clip_id"] for c in wav_clips]
    assert sorted(p.name for p in (flac_out / "clips").iterdir()) == [f"{c['clip_id']}.flac" for c in flac_clips]
    assert sum(p.stat().st_size for p in (flac_out / "clips").iterdir()) < sum(
        p.stat().st_size for p in (wav_out / "clips").iterdir()
    )
    for wav, flac in zip(wav_clips, flac_clips, strict=True):
        assert flac["audio_path"].endswith(".flac") and {**flac, "audio_path": ""} == {**wav, "audio_path": ""}
        np.testing.assert_array_equal(load_clip(flac, flac_out, RATE), load_clip(wav, wav_out, RATE))

    captions = [{"clip_id": c["clip_id"], "track_id": c["track_id"], "caption": "a tone"} for c in wav_clips]
    codec = tiny_codec(tmp_path / "codec")
    cfg = TokenizeConfig(encode_window_s=0.05, batch_size=2, device="cpu", valid_fraction=0.0, test_fraction=0.0)
    shards = {}
    for name, clips_dir in (("wav", wav_out), ("flac", flac_out)):
        write_jsonl(tmp_path / name / "caption" / "captions.jsonl", captions)
        summary = tokenize_shard(cfg, clips_dir, tmp_path / name / "caption", codec, tmp_path / name / "t.parquet", 0)
        assert summary["rows"] == len(wav_clips) and summary["failures"] == 0
        shards[name] = pq.read_table(str(tmp_path / name / "t.parquet")).select(["clip_id", "codes"]).to_pylist()
    assert shards["flac"] == shards["wav"]

    # A copy elsewhere (its clips.jsonl still names the old place): readers find the .flac files in the copy.
    moved = tmp_path / "moved" / "shard-00000"
    shutil.copytree(flac_out, moved)
    shutil.rmtree(flac_out)
    expected = {c["clip_id"]: moved / "clips" / f"{c['clip_id']}.flac" for c in flac_clips}
    assert {c["clip_id"]: resolve_audio_path(c, moved) for c in flac_clips} == expected
    assert index_clips([moved.parent]) == expected


def test_an_exception_mid_run_leaves_no_output(shard, monkeypatch):
    """The `finally` path (Ctrl-C, a bug). A real SIGKILL skips it: tests/test_kills.py covers that case."""
    out = shard.parent.parent / "segment" / "shard-00000"
    real = seg.segment_track
    calls = []

    def dies_on_second_track(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "segment_track", dies_on_second_track)
    with pytest.raises(KeyboardInterrupt):
        seg.segment_shard(shard, make_cfg(), out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary folder is gone too


def test_bad_inputs_give_one_clear_error(tmp_path, shard):
    with pytest.raises(UserFacingError, match=r"kept.jsonl: not found; run `ssmttm select`"):
        seg.segment_shard(tmp_path / "nowhere", make_cfg(), tmp_path / "out")
    write_kept(tmp_path / "bad", [{"id": "../evil", "audio_path": "x.wav"}])
    with pytest.raises(UserFacingError, match="not a safe file name"):
        seg.segment_shard(tmp_path / "bad", make_cfg(), tmp_path / "out")
    for licence in ("CC BY-ND 4.0", "unknown", None):  # only select's normalised ids get through
        write_kept(tmp_path / "licence", [kept_row("a", shard / "kept.jsonl") | {"licence": licence}])
        with pytest.raises(UserFacingError, match="not a licence id that select keeps"):
            seg.segment_shard(tmp_path / "licence", make_cfg(), tmp_path / "out")
    write_kept(tmp_path / "gone", [kept_row("gone", shard / "kept.jsonl") | {"audio_path": str(tmp_path / "x.mp3")}])
    with pytest.raises(audio.AudioDecodeError, match="x.mp3"):
        seg.segment_shard(tmp_path / "gone", make_cfg(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserFacingError, match="tail"):
        make_cfg(tail="wrap")
    with pytest.raises(ValueError, match="separator"):
        seg.segment_shard(shard, make_cfg(), tmp_path / "out", separator=lambda x, r: x[0])


def test_vocal_removal_with_an_injected_tiny_htdemucs(tmp_path):
    """PLUMBING ONLY (random tiny HTDemucs): the separator runs per track before cutting, clips are its no-vocals
    output downmixed and resampled to the codec rate, and the rows say vocals were removed."""
    from ssmttm.corpus.vocals import VocalRemover
    from tests.corpus._audio_fixtures import tiny_htdemucs

    path = write_audio(tmp_path / "song.flac", tone(220, 2.2, 22050, channels=1) * 0.8, 22050)
    write_kept(tmp_path / "sel", [kept_row("song", path)])
    remover = VocalRemover(tiny_htdemucs(), segment_seconds=1.0, name="tiny")
    cfg = make_cfg(silence_db=-120, vocal_removal={"enabled": True, "segment_seconds": 1.0})
    clips, _, out = run(tmp_path / "sel", cfg, out=tmp_path / "out", separator=remover)
    assert [c["clip_id"] for c in clips] == ["song-0000", "song-0001"]
    assert all(c["vocals_removed"] is True for c in clips)
    src, rate = audio.load_audio(path)
    expected = audio.resample(remover(src, rate)[None], 44100, RATE)[0]  # (N,) no-vocals at 16 kHz
    plain = audio.resample(src, rate, RATE)[0]
    for clip in clips:
        got, _ = sf.read(clip["audio_path"], dtype="float32")
        start = round(clip["start_s"] * RATE)
        np.testing.assert_allclose(got, np.clip(expected[start : start + RATE], -1, 1), atol=1.5 / 32768)
        assert not np.allclose(got, plain[start : start + RATE], atol=1e-2)  # not the untouched mixture
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["vocal_removal"]["model"] == "tiny" and prov["vocal_removal"]["kept_sources"] == [
        "drums",
        "bass",
        "other",
    ]


def test_empty_shard_writes_empty_tables(tmp_path):
    write_kept(tmp_path / "sel", [])
    clips, dropped, out = run(tmp_path / "sel", make_cfg(vocal_removal={"enabled": True}), out=tmp_path / "out")
    assert clips == [] and dropped == [["clip_id", "reason", "detail"]]
    assert (out / "clips").is_dir() and (out / "provenance.json").is_file()


def test_cli(shard, repo_root, tmp_path, monkeypatch):
    from ssmttm.cli import main

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["segment"].update(sample_rate=RATE, clip_seconds=1.0, hop_seconds=1.0, tail="keep", min_tail_seconds=0.3)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)  # artifact paths are relative to the working directory (the repository root)
    rc = main(["segment", "--params", str(params_file), "--selected", str(shard), "--out", "data/segment/shard-00000"])
    assert rc == 0
    clips = read_jsonl(tmp_path / "data/segment/shard-00000/clips.jsonl")
    assert clips[0]["audio_path"] == "data/segment/shard-00000/clips/loud-0000.wav"
    assert {c["clip_id"] for c in clips} >= {"loud-0002", "short-0000"}
    rc = main(["segment", "--params", str(params_file), "--selected", str(tmp_path / "x"), "--out", "o"])
    assert rc == 1  # a user error: one line, no traceback


def test_cli_log_file_has_progress_lines_without_carriage_returns(shard, repo_root, tmp_path):
    """Like Snakemake: `ssmttm segment ... 2> logs/segment/shard-00000.log`, stderr a file, not a terminal."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["segment"].update(sample_rate=RATE, clip_seconds=1.0, hop_seconds=1.0, tail="keep", min_tail_seconds=0.3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    log_path = tmp_path / "logs" / "segment" / "shard-00000.log"
    log_path.parent.mkdir(parents=True)
    src = str(Path(ssmttm.__file__).resolve().parents[1])  # the child imports the package under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    with log_path.open("w") as stderr:
        cli = ["-m", "ssmttm", "segment", "--params", "params.yaml", "--out", "data/segment/shard-00000"]
        proc = subprocess.run([sys.executable, *cli, "--selected", str(shard)], cwd=tmp_path, env=env, stderr=stderr)
    log = log_path.read_text()
    assert proc.returncode == 0, log
    assert "\r" not in log
    lines = log.splitlines()
    assert any("segment shard-00000: 1/3 tracks (33%)" in line for line in lines), log
    assert any("segment shard-00000: 3/3 tracks (100%)" in line and "done in" in line for line in lines), log
