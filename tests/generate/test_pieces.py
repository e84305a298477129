"""Clip checks and the manifest folder, caption sets, checkpoint discovery, the refiner glue."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from ssmttm.artifacts import sha256_file
from ssmttm.codec import load_codec
from ssmttm.config import ParamsError
from ssmttm.errors import UserFacingError
from ssmttm.generate.audio_out import ClipFolder, check_audio, write_clip
from ssmttm.generate.captions import load_captions, read_caption_file, read_musiccaps
from ssmttm.generate.checkpoints import kept_checkpoints
from ssmttm.generate.synth import check_refiner_fits, refine_codebook1
from ssmttm.refine.model import load_refiner
from tests.codec import tiny_codec
from tests.generate._fixtures import gen_cfg, make_lm_run, make_refiner
from tests.models._lm_utils import FakeTextEncoder

RATE = 16000


def tone(n: int, amplitude: float) -> np.ndarray:
    return (amplitude * np.sin(np.arange(n) * 0.05)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- clip checks


def test_checks_crop_scale_and_fail_with_reasons():
    audio, fields = check_audio(tone(110, 0.5), 100)
    assert audio.shape == (100,) and fields == {"status": "ok", "gain": 1.0}
    assert check_audio(tone(90, 0.5), 100)[1]["reason"].startswith("short: 90 samples")
    nan = tone(100, 0.5)
    nan[3] = np.nan
    assert check_audio(nan, 100)[1]["reason"].startswith("not_finite")
    assert check_audio(tone(100, 1e-4), 100)[1]["reason"].startswith("silent")  # -83 dBFS
    loud, fields = check_audio(tone(100, 2.5), 100)
    assert fields["gain"] == pytest.approx(1 / np.abs(tone(100, 2.5)).max()) and np.abs(loud).max() <= 1.0


def test_write_clip_writes_checked_16_bit_wavs(tmp_path):
    fields = write_clip(tmp_path / "a.wav", tone(500, 3.0), RATE, 400)
    data, rate = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    assert rate == RATE and data.shape == (400,) and sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16"
    assert fields["status"] == "ok" and fields["gain"] < 1 and fields["peak"] <= 1.0  # scaled, never clipped
    assert fields["sha256"] == sha256_file(tmp_path / "a.wav") and fields["path"] == "a.wav"
    assert np.abs(data).max() > 0.99  # scaled to full scale, not to an arbitrary level
    failed = write_clip(tmp_path / "a.wav", np.zeros(400, np.float32), RATE, 400)
    assert failed["status"] == "failed" and not (tmp_path / "a.wav").exists()  # the old file does not stand for it


def test_clip_folder_knows_what_is_done(tmp_path):
    folder = ClipFolder(tmp_path / "f")
    fields = write_clip(folder.wav_path("x"), tone(100, 0.5), RATE, 100)
    folder.record({"caption_id": "x", "key": "k1", **fields})
    folder.record({"caption_id": "y", "key": "k1", "status": "failed", "reason": "silent"})
    folder.flush()
    again = ClipFolder(tmp_path / "f")
    assert again.done("x", "k1") and again.done("y", "k1")
    assert not again.done("x", "k2") and not again.done("z", "k1")
    folder.wav_path("x").write_bytes(b"changed")
    assert not again.done("x", "k1")
    (tmp_path / "f" / "stale.wav").write_bytes(b"")
    again.prune({"x"})
    assert not (tmp_path / "f" / "stale.wav").exists() and set(again.rows) == {"x"}
    assert again.counts() == {"ok": 1, "failed": 0}


# ----------------------------------------------------------------------------------------------- captions


def test_caption_files_and_musiccaps(tmp_path):
    (tmp_path / "c.txt").write_text("soft piano\n\n loud drums \n")
    assert [(c.caption_id, c.text) for c in read_caption_file(tmp_path / "c.txt")] == [
        ("caption-00000", "soft piano"),
        ("caption-00001", "loud drums"),
    ]
    (tmp_path / "c.jsonl").write_text('{"id": "a1", "caption": "x"}\n{"caption": "y"}\n')
    assert [c.caption_id for c in read_caption_file(tmp_path / "c.jsonl")] == ["a1", "caption-00001"]
    csv_text = 'ytid,start_s,end_s,caption\n-0Gj8-vB1q4,30,40,"a ballad, sad"\nabc_DEF123,0,10,drums\n'
    (tmp_path / "mc.csv").write_text(csv_text)
    captions = read_musiccaps(tmp_path / "mc.csv")
    assert [(c.caption_id, c.text) for c in captions] == [("-0Gj8-vB1q4", "a ballad, sad"), ("abc_DEF123", "drums")]
    cfg = gen_cfg(captions="musiccaps", captions_path=str(tmp_path / "mc.csv"), max_captions=1)
    assert load_captions(cfg, None) == captions[:1]
    (tmp_path / "bad.csv").write_text(csv_text.replace("abc_DEF123", "../up"))
    with pytest.raises(UserFacingError, match="cannot name a file"):
        load_captions(gen_cfg(captions="musiccaps", captions_path=str(tmp_path / "bad.csv")), None)


def test_caption_set_rules(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": "a", "caption": "x"}\n{"id": "a", "caption": "y"}\n')
    with pytest.raises(UserFacingError, match="appears twice"):
        load_captions(gen_cfg(captions="file", captions_path=str(tmp_path / "d.jsonl")), None)
    (tmp_path / "e.txt").write_text("a\nb\nc\n")
    cfg = gen_cfg(captions="file", captions_path=str(tmp_path / "e.txt"), max_captions=2)
    assert [c.text for c in load_captions(cfg, None)] == ["a", "b"]
    with pytest.raises(ParamsError, match="captions_path"):
        gen_cfg(captions="musiccaps")
    with pytest.raises(ParamsError, match="variants"):
        gen_cfg(variants=["three_stage"])


def test_the_shared_musiccaps_csv_reads_when_present(repo_root):
    path = repo_root.parent / "shared" / "data" / "musiccaps-public.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    captions = read_musiccaps(path)
    assert len(captions) == 5521 and len({c.caption_id for c in captions}) == 5521


# ----------------------------------------------------------------------------------------------- checkpoints


def test_kept_checkpoints_name_final_by_its_step(tmp_path):
    run = make_lm_run(tmp_path / "run")
    assert [(c.step, c.folder.name) for c in kept_checkpoints(run)] == [(2, "step-0000002"), (4, "step-0000004")]
    import shutil

    shutil.rmtree(run / "step-0000004")  # pruned: final/ stands for step 4
    assert [(c.name, c.folder.name) for c in kept_checkpoints(run)] == [
        ("step-0000002", "step-0000002"),
        ("step-0000004", "final"),
    ]
    assert [c.name for c in kept_checkpoints(run / "final")] == ["step-0000004"]  # one folder given directly
    config = json.loads((run / "final" / "config.json").read_text())
    del config["step"]
    (run / "final" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserFacingError, match="records no training step"):
        kept_checkpoints(run)


# ----------------------------------------------------------------------------------------------- refiner glue


def test_refiner_keeps_codebook1_and_fills_the_other_codebooks(tmp_path):
    codec = load_codec(tiny_codec(tmp_path / "codec"))
    refiner = load_refiner(make_refiner(tmp_path / "refiner", tmp_path / "codec"))
    check_refiner_fits(refiner, codec)
    g = torch.Generator().manual_seed(0)
    cb1 = torch.randint(0, 16, (2, 1, 24), generator=g)
    text = FakeTextEncoder().encode(["soft piano", "loud drums"])
    cfg = gen_cfg(batch_size=3, refine_steps=2)
    codes = refine_codebook1(refiner, codec, cb1, text, [5, 6], cfg)
    assert codes.shape == (2, 2, 24) and torch.equal(codes[:, :1], cb1)
    again = refine_codebook1(refiner, codec, cb1[1:], FakeTextEncoder().encode(["loud drums"]), [6], cfg)
    assert torch.equal(again[0], codes[1])  # alone or second of two: the same codes
    other = refine_codebook1(refiner, codec, cb1[1:], FakeTextEncoder().encode(["loud drums"]), [7], cfg)
    assert not torch.equal(other[0, 1], codes[1, 1])  # another seed, other codebooks 2..K


def test_a_refiner_of_another_codec_is_refused(tmp_path):
    tiny_codec(tmp_path / "codec")
    refiner = load_refiner(make_refiner(tmp_path / "refiner", tmp_path / "codec"))
    other = load_codec(tiny_codec(tmp_path / "other", seed=1))
    with pytest.raises(UserFacingError, match="another codec"):
        check_refiner_fits(refiner, other)
