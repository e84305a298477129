"""caption: tag templates, imported files, the transformers model path (tiny random Qwen2-Audio), atomicity, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.standins.qwen2_audio import build_tiny_qwen2_audio
from ssmttm.artifacts import read_jsonl
from ssmttm.audio import write_wav
from ssmttm.config import section_to_dataclass
from ssmttm.corpus import caption as cap
from ssmttm.corpus.caption_templates import TEMPLATES, parse_tags, tag_caption
from ssmttm.errors import MissingWeightsError, UserFacingError
from tests.corpus._audio_fixtures import tone

CLIP_RATE = 16000
TAGS = {"mood": "calm", "style": "acoustic", "bpm": 68, "key": "C major", "instruments": ["piano", "strings"]}


def make_cfg(**overrides) -> cap.CaptionConfig:
    return section_to_dataclass(cap.CaptionConfig, overrides)


@pytest.fixture
def clips_dir(tmp_path) -> Path:
    """A segment shard: 3 clips of track 'a' and 2 of track 'b', with short tones of different pitch."""
    folder = tmp_path / "segment" / "shard-00000"
    rows = []
    for i, (track, k, tags) in enumerate(
        [("a", 0, TAGS), ("a", 1, TAGS), ("a", 3, TAGS), ("b", 0, {"genre": "rock"}), ("b", 1, {})]
    ):
        clip_id = f"{track}-{k:04d}"
        path = folder / "clips" / f"{clip_id}.wav"
        write_wav(path, tone(220 * (i + 1), 0.5 + 0.25 * i, CLIP_RATE)[0], CLIP_RATE)
        rows.append(
            {
                "clip_id": clip_id,
                "track_id": track,
                "audio_path": str(path),
                "start_s": 0.0,
                "duration_s": 0.5,
                "num_samples": 8000,
                "sample_rate": CLIP_RATE,
                "licence": "CC-BY-4.0",
                "tags": tags,
                "vocals_removed": False,
            }
        )
    (folder / "clips.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in reversed(rows)))
    return folder


def run(clips_dir: Path, cfg: cap.CaptionConfig, out: Path | None = None, **kw) -> list[dict]:
    out = out or clips_dir.parent.parent / "caption" / "shard-00000"
    cap.caption_shard(clips_dir, cfg, out, seed=3, **kw)
    return read_jsonl(out / "captions.jsonl")


# ----------------------------------------------------------------------------------------------- tags


def test_tag_caption_example_and_determinism():
    texts = {tag_caption(TAGS, f"t-{i:04d}", seed=0) for i in range(60)}
    assert len(texts) >= len(TEMPLATES) >= 5  # several phrasings, chosen by clip id
    for text in texts:
        for word in ("calm", "acoustic", "piano", "strings", "68 BPM", "C major"):
            assert word.lower() in text.lower(), text
    assert tag_caption(TAGS, "x-0001", seed=0) == tag_caption(dict(TAGS), "x-0001", seed=0)
    assert any(tag_caption(TAGS, f"t-{i}", seed=0) != tag_caption(TAGS, f"t-{i}", seed=1) for i in range(10))


def test_tag_parsing_cleans_values():
    parts = parse_tags(
        {
            "genre": ["genre---Rock", "pop", "rock"],
            "style": "lo_fi",
            "mood": None,
            "bpm": "121.6",
            "key": "F#min",
            "instruments": "guitar, drums",
        }
    )
    assert parts.genres == ("rock", "pop", "lo fi") and parts.moods == ()
    assert parts.bpm == 122 and parts.key == "F# minor" and parts.instruments == ("guitar", "drums")
    assert parse_tags({"bpm": "fast", "key": "", "mood": ["None", ""]}) == parse_tags({})
    assert parse_tags({"key": "Bb"}).key == "Bb major" and parse_tags({"key": "Dorian on D"}).key == "Dorian on D"


WORDS = st.one_of(
    st.text(alphabet="abcxyz _-#,;0123456789", max_size=12),
    st.sampled_from(["None", "nan", "null", "", "Calm", "upbeat", "Rock", "C major", "Am", "lo_fi"]),
)
TAG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    WORDS,
    st.lists(st.one_of(st.none(), WORDS), max_size=3),
    st.integers(-5, 500),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=120, deadline=None)
@given(
    tags=st.dictionaries(st.sampled_from(["mood", "genre", "style", "instruments", "bpm", "key", "title"]), TAG_VALUES),
    clip_id=st.text(min_size=1, max_size=10),
)
def test_tag_caption_never_empty_or_none(tags, clip_id):
    text = tag_caption(tags, clip_id, seed=0)
    assert text and not text[0].islower() and text.endswith(".")
    lowered = text.lower().replace(",", " ").replace(".", " ").split()
    assert not {"none", "nan", "null", "inf", "true", "false", "[]"} & set(lowered), text
    assert "  " not in text and " ," not in text and ",," not in text and ".." not in text
    assert text == tag_caption(tags, clip_id, seed=0)


def test_tags_mode_writes_the_contract(clips_dir):
    rows = run(clips_dir, make_cfg(mode="tags"))
    assert [r["clip_id"] for r in rows] == ["a-0000", "a-0001", "a-0003", "b-0000", "b-0001"]  # sorted
    for row in rows:
        assert set(row) == {"clip_id", "track_id", "caption", "caption_source"}
        assert row["caption_source"] == "tags" and row["caption"] == tag_caption(
            TAGS if row["track_id"] == "a" else ({"genre": "rock"} if row["clip_id"] == "b-0000" else {}),
            row["clip_id"],
            seed=3,
        )
    out = clips_dir.parent.parent / "caption" / "shard-00000"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["stage"] == "caption" and prov["counts"] == {"tags": 5} and prov["seed"] == 3
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    run(clips_dir, make_cfg(mode="tags"))
    assert first == {p.name: p.read_bytes() for p in out.iterdir()}  # byte-identical rerun


# ----------------------------------------------------------------------------------------------- import


def _write_import(path: Path, records: list[dict], fmt: str) -> Path:
    if fmt == "csv":
        lines = ["id,caption"] + [f'{r["id"]},"{r["caption"]}"' for r in records]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "json_list":
        path.write_text(json.dumps(records))
    elif fmt == "json_map":
        path.write_text(json.dumps({r["id"]: r["caption"] for r in records}))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        pq.write_table(pa.table({"id": [r["id"] for r in records], "caption": [r["caption"] for r in records]}), path)
    return path


IMPORTED = [
    {"id": "a", "caption": "Track a, gentle piano."},
    {"id": "a-0003", "caption": "Clip a-0003, its own."},
    {"id": "b", "caption": "Track b,   loud   guitars."},
    {"id": "zzz", "caption": "Not in this shard."},
]


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [("csv", ".csv"), ("json_list", ".json"), ("json_map", ".json"), ("jsonl", ".jsonl"), ("parquet", ".parquet")],
)
def test_import_every_format_clip_id_before_track_id(clips_dir, tmp_path, fmt, suffix):
    path = _write_import(tmp_path / f"captions{suffix}", IMPORTED, fmt)
    rows = {r["clip_id"]: r for r in run(clips_dir, make_cfg(mode="import", import_path=str(path)))}
    assert rows["a-0000"]["caption"] == "Track a, gentle piano."
    assert rows["a-0003"]["caption"] == "Clip a-0003, its own."  # the clip id wins over its track id
    assert rows["b-0001"]["caption"] == "Track b, loud guitars."  # whitespace normalised
    assert {r["caption_source"] for r in rows.values()} == {"import"}


def test_import_custom_columns_and_numeric_ids(clips_dir, tmp_path):
    path = tmp_path / "disco.parquet"
    table = pa.table({"track": ["a", "b"], "text": ["From parquet a.", "From parquet b."], "n": [1, 2]})
    pq.write_table(table, path)
    cfg = make_cfg(mode="import", import_path=str(path), import_id_column="track", import_caption_column="text")
    assert {r["caption"] for r in run(clips_dir, cfg)} == {"From parquet a.", "From parquet b."}
    bad = make_cfg(mode="import", import_path=str(path), import_id_column="id", import_caption_column="text")
    with pytest.raises(UserFacingError, match=r"disco.parquet: no column 'id' \(columns: track, text, n\)"):
        run(clips_dir, bad)


def test_import_missing_clip_is_an_error_or_falls_back_to_tags(clips_dir, tmp_path):
    path = _write_import(tmp_path / "c.jsonl", [r for r in IMPORTED if r["id"] != "b"], "jsonl")
    out = tmp_path / "caption" / "shard-00000"
    with pytest.raises(UserFacingError, match=r"c.jsonl: no caption for clip b-0000 \(nor its track b\); 2 of 5"):
        cap.caption_shard(clips_dir, make_cfg(mode="import", import_path=str(path)), out)
    assert not out.exists()
    rows = {
        r["clip_id"]: r
        for r in run(clips_dir, make_cfg(mode="import", import_path=str(path), import_missing="tags"), out=out)
    }
    assert rows["b-0000"]["caption_source"] == "tags" and rows["b-0000"]["caption"] == tag_caption(
        {"genre": "rock"}, "b-0000", seed=3
    )
    assert rows["a-0001"]["caption_source"] == "import"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["counts"] == {"import": 3, "tags": 2} and len(prov["inputs"]["import"]) == 64


def test_import_path_errors(clips_dir, tmp_path):
    with pytest.raises(UserFacingError, match="needs caption.import_path"):
        run(clips_dir, make_cfg(mode="import"))
    with pytest.raises(UserFacingError, match="nope.csv: file not found"):
        run(clips_dir, make_cfg(mode="import", import_path=str(tmp_path / "nope.csv")))
    (tmp_path / "c.txt").write_text("a caption")
    with pytest.raises(UserFacingError, match="unsupported format"):
        run(clips_dir, make_cfg(mode="import", import_path=str(tmp_path / "c.txt")))
    with pytest.raises(UserFacingError, match="clips.jsonl: not found; run `ssmttm segment`"):
        run(tmp_path / "nowhere", make_cfg())
    with pytest.raises(UserFacingError, match="caption.mode"):
        make_cfg(mode="llm")


# ----------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def tiny_qwen2_audio(tmp_path_factory) -> Path:
    """A randomly initialised Qwen2-Audio (about 40k parameters) with a processor built offline, by the paper test
    profile's stand-in builder (scripts/standins/qwen2_audio.py): 16 mel bins and a 2 s window (the real model: 128
    bins, 30 s). PLUMBING ONLY: its captions are gibberish."""
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"), mel_bins=16, window_s=2)


def model_cfg(folder: Path, **overrides) -> cap.CaptionConfig:
    section = {
        "name_or_path": str(folder),
        "batch_size": 2,
        "max_new_tokens": 6,
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": 16000,
        "prompt": "Describe this music.",
    }
    section.update(overrides)
    return make_cfg(mode="model", model=section)


def test_model_mode_tiny_qwen2_audio_batched_and_deterministic(clips_dir, tiny_qwen2_audio, monkeypatch):
    from ssmttm.corpus import caption_model

    batches = []
    real_call = caption_model.AudioCaptioner.__call__

    def spy(self, audios):
        batches.append([a.shape[0] for a in audios])
        return real_call(self, audios)

    monkeypatch.setattr(caption_model.AudioCaptioner, "__call__", spy)
    rows = run(clips_dir, model_cfg(tiny_qwen2_audio))
    assert [r["clip_id"] for r in rows] == ["a-0000", "a-0001", "a-0003", "b-0000", "b-0001"]
    assert batches == [[8000, 12000], [16000, 20000], [24000]]  # batch_size 2, clips at the model's 16 kHz
    assert all(isinstance(r["caption"], str) and r["caption"] for r in rows)
    assert {r["caption_source"] for r in rows} == {"model"}
    out = clips_dir.parent.parent / "caption" / "shard-00000"
    first = (out / "captions.jsonl").read_bytes()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["model"]["model_type"] == "qwen2_audio" and prov["model"]["decoding"] == "greedy"
    assert run(clips_dir, model_cfg(tiny_qwen2_audio)) == rows
    assert (out / "captions.jsonl").read_bytes() == first


def test_captioner_returns_one_string_per_clip_with_ragged_lengths(tiny_qwen2_audio):
    from ssmttm.corpus.caption_model import load_captioner

    captioner = load_captioner(model_cfg(tiny_qwen2_audio, max_new_tokens=4).model)
    assert captioner.sample_rate == 16000 and captioner.processor.tokenizer.padding_side == "left"
    assert "Describe this music." in captioner.prompt_text and "<|AUDIO|>" in captioner.prompt_text
    audios = [tone(440, s, 16000)[0] for s in (0.3, 1.0, 2.5)]  # the last one is longer than the 2 s window
    texts = captioner(audios)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert captioner(audios) == texts
    assert captioner(audios[:1]) == captioner(audios[:1])
    assert captioner([]) == []


def test_model_errors(clips_dir, tiny_qwen2_audio, tmp_path):
    from ssmttm.corpus.caption_model import load_captioner

    with pytest.raises(MissingWeightsError) as err:
        load_captioner(model_cfg(tmp_path / "missing-model").model)
    assert "missing-model" in str(err.value)
    with pytest.raises(MissingWeightsError) as err:
        load_captioner(model_cfg(Path("someone/not-downloaded-audio-model")).model)
    message = str(err.value)
    assert "hf download someone/not-downloaded-audio-model" in message and "cache" in message
    with pytest.raises(UserFacingError, match="expects 16000 Hz"):
        load_captioner(model_cfg(tiny_qwen2_audio, sample_rate=24000).model)
    assert load_captioner(model_cfg(tiny_qwen2_audio, sample_rate=None).model).sample_rate == 16000


class FakeRunner:
    """An injected runner (not a model): checks the stage's batching and fallbacks without transformers."""

    sample_rate = 8000

    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, audios: list[np.ndarray]) -> list[str]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return ["\x01 " if a.shape[0] == 4000 else f"  clip of {a.shape[0]}\nsamples\x00 " for a in audios]


def test_injected_runner_empty_reply_falls_back_to_tags(clips_dir):
    rows = {r["clip_id"]: r for r in run(clips_dir, model_cfg(Path("unused"), batch_size=4), model_runner=FakeRunner())}
    assert rows["a-0000"]["caption_source"] == "tags"  # 0.5 s at 8 kHz = 4000 samples -> empty reply
    assert rows["a-0000"]["caption"] == tag_caption(TAGS, "a-0000", seed=3)
    assert rows["a-0001"] == {
        "clip_id": "a-0001",
        "track_id": "a",
        "caption": "clip of 6000 samples",
        "caption_source": "model",
    }


def test_an_exception_mid_run_leaves_no_output(clips_dir, tmp_path):
    """The `finally` path; a real SIGKILL is tests/test_kills.py."""
    out = tmp_path / "caption" / "shard-00000"
    with pytest.raises(KeyboardInterrupt):
        cap.caption_shard(clips_dir, model_cfg(Path("unused")), out, model_runner=FakeRunner(fail_on_call=2))
    assert not out.exists()
    assert not (tmp_path / "caption").exists() or list((tmp_path / "caption").iterdir()) == []  # no temporary left


def test_cli(clips_dir, repo_root, tmp_path):
    from ssmttm.cli import main

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["caption"]["mode"] = "tags"
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out = tmp_path / "data" / "caption" / "shard-00000"
    assert main(["caption", "--params", str(params_file), "--clips", str(clips_dir), "--out", str(out)]) == 0
    rows = read_jsonl(out / "captions.jsonl")
    assert len(rows) == 5 and rows[0]["caption"] == tag_caption(TAGS, "a-0000", seed=params["seed"])
    params["caption"].update(mode="import", import_path=str(tmp_path / "missing.parquet"))
    params_file.write_text(yaml.safe_dump(params))
    assert main(["caption", "--params", str(params_file), "--clips", str(clips_dir), "--out", str(out)]) == 1


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("c.json", b'{"a-0000": "calm piano",', "JSON"),
        ("c.jsonl", b'{"id": "a", "caption": "x"}\n{"id": \n', "JSONL"),
        ("c.csv", "id,caption\na,caf\xe9 music\n".encode("latin-1"), "CSV"),
        ("c.parquet", b"PAR1 not really parquet PAR1", "PARQUET"),
    ],
)
def test_an_unreadable_import_file_is_one_clear_error(tmp_path, name, content, kind):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserFacingError, match=rf"caption.import_path = .*{name}: cannot be read as {kind} \("):
        cap.load_caption_table(tmp_path / name)
