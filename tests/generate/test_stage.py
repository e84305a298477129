"""The generate stage end to end with tiny models: every checkpoint x caption x variant, checks, manifest, batch
independence, resume, stale outputs, references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmttm.artifacts import read_jsonl, sha256_file
from ssmttm.codec import load_codec
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import MANIFEST_FILE, SILENCE_DB, write_clip
from ssmttm.generate.stage import generate_references, generate_run
from ssmttm.generate.synth import decode_clip
from ssmttm.generate.tokens import caption_seed, generate_tokens
from ssmttm.models.lm import load_lm
from tests.generate._fixtures import CLIP_SECONDS, fake_encoder_factory, gen_cfg, make_inputs, text_section
from tests.models._lm_utils import FakeTextEncoder

SEED = 1234


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("generate"))


def run(inputs, out, cfg=None, **kw):
    return generate_run(
        cfg or gen_cfg(),
        kw.pop("lm_run", inputs.lm_run),
        inputs.codec,
        out,
        SEED,
        refiner_dir=kw.pop("refiner_dir", inputs.refiner),
        shards_dir=inputs.shards,
        text_section=text_section(False),
        encoder_factory=fake_encoder_factory,
        progress=False,
        **kw,
    )


def captions_file(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "captions.jsonl"
    path.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in rows))
    return path


def wav_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*.wav"))}


def test_every_checkpoint_and_variant_gets_checked_wavs_and_a_manifest(inputs, tmp_path):
    out = tmp_path / "prefix_simba"
    summary = run(inputs, out)
    # step-4 and final/ hold the same step: generated once, named by the step
    assert [c["folder"] for c in summary["checkpoints"]] == ["step-0000002", "step-0000004"]
    assert summary["variants"] == ["two_stage", "codebook1_only"] and "single_stage" in summary["skipped"]
    assert summary["audio"]["frame_rate"] == 2000.0 and summary["audio"]["num_samples"] == 320
    assert sorted(p.name for p in out.iterdir()) == [
        "host.json",
        "provenance.json",
        "step-0000002",
        "step-0000004",
        "summary.json",
    ]
    assert json.loads((out / "provenance.json").read_text())["stage"] == "generate"
    clip_ids = ["trackA-0000", "trackA-0001", "trackB-0000"]  # the test split, sorted
    for step in ("step-0000002", "step-0000004"):
        assert sorted(p.name for p in (out / step).iterdir()) == ["codebook1_only", "two_stage"]
        for variant in ("two_stage", "codebook1_only"):
            folder = out / step / variant
            rows = read_jsonl(folder / MANIFEST_FILE)
            assert [r["caption_id"] for r in rows] == clip_ids
            for row in rows:
                assert row["status"] == "ok" and row["variant"] == variant and row["checkpoint"] == step
                assert row["step"] == int(step[-7:]) and row["clip_id"] == row["caption_id"]
                assert row["caption"] == f"calm music from {row['caption_id']}"
                assert row["seed"] == caption_seed(SEED, row["caption_id"])
                assert row["settings"]["temperature"] == 1.2 and row["settings"]["device"] == "cpu"
                assert ("refine_steps" in row["settings"]) == (variant == "two_stage")
                assert sha256_file(folder / row["path"]) == row["sha256"]
                audio, rate = sf.read(str(folder / row["path"]), dtype="float32")
                assert rate == 16000 and audio.shape == (320,) == (row["num_samples"],)
                assert np.abs(audio).max() <= 1.0 and 20 * np.log10(np.sqrt(np.mean(audio**2))) > SILENCE_DB
    assert summary["folders"]["step-0000004/two_stage"] == {"ok": 3, "failed": 0}
    assert summary["generated"] == 12 and summary["reused"] == 0
    # the two variants share the LM's tokens but not the audio; the two checkpoints differ
    assert wav_hashes(out / "step-0000004" / "two_stage") != wav_hashes(out / "step-0000004" / "codebook1_only")
    assert wav_hashes(out / "step-0000002" / "two_stage") != wav_hashes(out / "step-0000004" / "two_stage")


def test_codebook1_only_is_the_lm_tokens_decoded(inputs, tmp_path):
    """Rebuild one clip by hand: the LM's tokens with the clip's seed, codebook 1 decoded."""
    run(inputs, tmp_path / "out", gen_cfg(variants=["codebook1_only"]), lm_run=inputs.lm_run / "step-0000002")
    codec = load_codec(inputs.codec)
    model, _, _ = load_lm(inputs.lm_run / "step-0000002")
    cfg = gen_cfg()
    codes = generate_tokens(
        model, FakeTextEncoder(), ["calm music from trackA-0001"], 40, cfg, [caption_seed(SEED, "trackA-0001")]
    )
    fields = write_clip(tmp_path / "by_hand.wav", decode_clip(codec, codes[0, :1]), 16000, 320)
    row = read_jsonl(tmp_path / "out" / "step-0000002" / "codebook1_only" / MANIFEST_FILE)[1]
    assert row["caption_id"] == "trackA-0001" and row["sha256"] == fields["sha256"]


def test_single_stage_decodes_a_k_codebook_lm_and_the_others_use_its_codebook1(tmp_path):
    inputs = make_inputs(tmp_path / "in", lm_codebooks=2)
    out = tmp_path / "out"
    summary = run(inputs, out, gen_cfg(max_captions=1), lm_run=inputs.lm_run / "final")
    assert summary["variants"] == ["two_stage", "codebook1_only", "single_stage"] and summary["skipped"] == {}
    assert [c["folder"] for c in summary["checkpoints"]] == ["step-0000004"]
    codec = load_codec(inputs.codec)
    model, lm_cfg, _ = load_lm(inputs.lm_run / "final")
    codes = generate_tokens(
        model, FakeTextEncoder(), ["calm music from trackA-0000"], 40, gen_cfg(), [caption_seed(SEED, "trackA-0000")]
    )
    assert codes.shape == (1, 2, 40)
    for variant, clip_codes in (("single_stage", codes[0]), ("codebook1_only", codes[0, :1])):
        expected = write_clip(tmp_path / f"{variant}.wav", decode_clip(codec, clip_codes), 16000, 320)
        assert read_jsonl(out / "step-0000004" / variant / MANIFEST_FILE)[0]["sha256"] == expected["sha256"]


def test_a_clip_does_not_depend_on_its_batch(inputs, tmp_path):
    cfg = dict(captions="file", batch_size=3)
    alone = captions_file(tmp_path, [("b", "soft strings")])
    run(inputs, tmp_path / "alone", gen_cfg(captions_path=str(alone), **cfg), lm_run=inputs.lm_run / "final")
    (tmp_path / "three").mkdir()
    three = captions_file(tmp_path / "three", [("a", "loud drums"), ("b", "soft strings"), ("c", "a flute")])
    run(inputs, tmp_path / "batch", gen_cfg(captions_path=str(three), **cfg), lm_run=inputs.lm_run / "final")
    (tmp_path / "last").mkdir()
    rows = [("z", "x"), ("a", "loud drums"), ("y", "organ"), ("c", "a flute"), ("b", "soft strings")]
    last = captions_file(tmp_path / "last", rows)  # b alone in the second (padded) batch
    run(inputs, tmp_path / "second", gen_cfg(captions_path=str(last), **cfg), lm_run=inputs.lm_run / "final")
    for variant in ("two_stage", "codebook1_only"):
        paths = [tmp_path / run_name / "step-0000004" / variant / "b.wav" for run_name in ("alone", "batch", "second")]
        assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    a = [tmp_path / n / "step-0000004" / "two_stage" / "a.wav" for n in ("batch", "second")]
    assert a[0].read_bytes() == a[1].read_bytes() != paths[0].read_bytes()


def test_rerun_regenerates_only_missing_or_changed_clips(inputs, tmp_path):
    out = tmp_path / "out"
    lm_run = inputs.lm_run / "final"
    first = run(inputs, out, lm_run=lm_run)
    hashes = wav_hashes(out)
    assert first["generated"] == 6
    again = run(inputs, out, lm_run=lm_run)
    assert (again["generated"], again["reused"]) == (0, 6) and wav_hashes(out) == hashes
    (out / "step-0000004" / "two_stage" / "trackA-0001.wav").unlink()
    (out / "step-0000004" / "codebook1_only" / "trackB-0000.wav").write_bytes(b"damaged")
    repaired = run(inputs, out, lm_run=lm_run)
    assert (repaired["generated"], repaired["reused"]) == (2, 4) and wav_hashes(out) == hashes
    # a refiner setting changes the two-stage clips only
    changed = run(inputs, out, gen_cfg(refine_steps=2), lm_run=lm_run)
    assert (changed["generated"], changed["reused"]) == (3, 3)
    new = wav_hashes(out)
    assert all(new[k] == hashes[k] for k in hashes if "codebook1_only" in k)
    assert all(new[k] != hashes[k] for k in hashes if "two_stage" in k)


def test_outputs_of_other_inputs_are_removed(inputs, tmp_path):
    out = tmp_path / "out"
    run(inputs, out)
    assert (out / "step-0000002").is_dir()
    summary = run(inputs, out, gen_cfg(max_captions=2, variants=["two_stage"]), lm_run=inputs.lm_run / "final")
    assert sorted(p.name for p in out.glob("step-*")) == ["step-0000004"]  # step 2 is not in this run
    assert sorted(p.name for p in (out / "step-0000004").iterdir()) == ["two_stage"]
    folder = out / "step-0000004" / "two_stage"
    assert sorted(p.name for p in folder.glob("*.wav")) == ["trackA-0000.wav", "trackA-0001.wav"]
    assert [r["caption_id"] for r in read_jsonl(folder / MANIFEST_FILE)] == ["trackA-0000", "trackA-0001"]
    assert summary["reused"] == 2 and summary["generated"] == 0


def test_failed_clips_are_recorded_with_their_reason(inputs, tmp_path, monkeypatch):
    import ssmttm.generate.lm_run as lm_run

    monkeypatch.setattr(lm_run, "decode_clip", lambda codec, codes: np.zeros(codes.shape[-1] * 8, np.float32))
    summary = run(inputs, tmp_path / "out", gen_cfg(variants=["codebook1_only"]), lm_run=inputs.lm_run / "final")
    assert summary["folders"]["step-0000004/codebook1_only"] == {"ok": 0, "failed": 3}
    folder = tmp_path / "out" / "step-0000004" / "codebook1_only"
    rows = read_jsonl(folder / MANIFEST_FILE)
    assert all(r["status"] == "failed" and r["reason"].startswith("silent") and r["path"] is None for r in rows)
    assert not list(folder.glob("*.wav"))


def test_references_original_codec_floor_and_refiner_ceiling(inputs, tmp_path):
    out = tmp_path / "reference"
    summary = generate_references(
        gen_cfg(seconds=0.2),
        inputs.codec,
        inputs.shards,
        out,
        SEED,
        refiner_dir=inputs.refiner,
        clip_dirs=[inputs.segment],
        text_section=text_section(False),
        encoder_factory=fake_encoder_factory,
        progress=False,
    )
    variants = ["original", "codec", "codebook1_only", "reference_codebook1"]
    assert summary["variants"] == variants and summary["mode"] == "reference"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(variants)
    for variant in variants:
        rows = read_jsonl(out / variant / MANIFEST_FILE)
        assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["num_samples"] == 3200 for r in rows)
        assert all((r["seed"] is not None) == (variant == "reference_codebook1") for r in rows)
    # original: the clip itself, cropped; codec: its codes decoded
    source, _ = sf.read(str(inputs.segment / "shard-00000" / "clips" / "trackA-0001.wav"), dtype="int16")
    written, rate = sf.read(str(out / "original" / "trackA-0001.wav"), dtype="int16")
    assert rate == 16000 and np.array_equal(written, source[:3200])
    import pyarrow.parquet as pq

    table = pq.read_table(str(inputs.shards / "shard-00000.parquet")).to_pylist()
    codes = torch.tensor([row["codes"] for row in table if row["clip_id"] == "trackA-0001"][0])[:, :400]
    codec = load_codec(inputs.codec)
    expected = write_clip(tmp_path / "codec.wav", decode_clip(codec, codes), 16000, 3200)
    assert read_jsonl(out / "codec" / MANIFEST_FILE)[1]["sha256"] == expected["sha256"]
    cb1 = write_clip(tmp_path / "cb1.wav", decode_clip(codec, codes[:1]), 16000, 3200)
    assert read_jsonl(out / "codebook1_only" / MANIFEST_FILE)[1]["sha256"] == cb1["sha256"]
    # longer than the references: recorded as failed, not dropped
    short = generate_references(
        gen_cfg(seconds=CLIP_SECONDS + 0.1, max_captions=1),
        inputs.codec,
        inputs.shards,
        tmp_path / "short",
        SEED,
        refiner_dir=inputs.refiner,
        text_section=text_section(False),
        encoder_factory=fake_encoder_factory,
        progress=False,
    )
    assert "original" in short["skipped"]
    rows = read_jsonl(tmp_path / "short" / "codec" / MANIFEST_FILE)
    assert rows[0]["status"] == "failed" and rows[0]["reason"].startswith("short")


def test_user_errors_name_the_input(inputs, tmp_path):
    with pytest.raises(UserFacingError, match="no checkpoints"):
        run(inputs, tmp_path / "out", lm_run=tmp_path)
    with pytest.raises(UserFacingError, match="--fetched"):
        generate_references(
            gen_cfg(captions="file", captions_path="x.txt"),
            inputs.codec,
            inputs.shards,
            tmp_path / "ref",
            SEED,
            refiner_dir=inputs.refiner,
        )
    with pytest.raises(UserFacingError, match="refiner"):
        run(inputs, tmp_path / "out", refiner_dir=tmp_path / "nowhere")
