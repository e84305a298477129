"""Reading clip folders and their manifests into clip sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from ssmttm.errors import UserFacingError
from ssmttm.evaluate.clipsets import read_clip_sets
from tests.evaluate._fixtures import RATE, write_folder


def _row(caption_id: str, **extra):
    return {"caption_id": caption_id, "caption": f"caption {caption_id}", "seed": 3, **extra}


def test_a_folder_with_failed_rows_stereo_and_another_rate(tmp_path):
    folder = write_folder(tmp_path / "set", [(_row("a"), np.full(RATE, 0.1)), (_row("b"), None)])
    stereo = np.stack([np.full(44100, 0.2), np.zeros(44100)])  # (C, N) at 44.1 kHz
    sf.write(str(folder / "c.wav"), stereo.T, 44100, subtype="PCM_16")
    with open(folder / "manifest.jsonl", "a") as handle:
        handle.write(json.dumps({**_row("c"), "path": "c.wav", "settings": {"temperature": 1.2}}) + "\n")
    (clip_set,) = read_clip_sets(folder)
    assert clip_set.name == "set" and [c.caption_id for c in clip_set.clips] == ["a", "c"]
    assert clip_set.failed == [{"path": None, "caption_id": "b", "reason": "decoder produced NaN"}]
    c = clip_set.clips[1]
    assert c.sample_rate == 44100 and c.audio.ndim == 1 and np.mean(c.audio) == pytest.approx(0.1, abs=1e-3)
    resampled = clip_set.audio_at(RATE)
    assert [a.shape[0] for a in resampled] == [RATE, RATE] and clip_set.audio_at(RATE) is resampled
    described = clip_set.describe()
    assert (described["n_clips"], described["n_failed"], described["source_sample_rates"]) == (2, 1, [RATE, 44100])
    assert described["sampling_settings"] == [{"temperature": 1.2}] and described["seeds"] == [3]


def test_generate_layout_gives_one_set_per_checkpoint_and_variant(tmp_path):
    run = tmp_path / "prefix_simba"
    for step in ("step-0000010", "step-0000020"):
        for variant in ("two_stage", "codebook1_only"):
            write_folder(run / step / variant, [(_row("a", step=int(step[5:]), variant=variant), np.zeros(RATE))])
    names = [s.name for s in read_clip_sets(run)]
    assert names == [
        f"prefix_simba/{step}/{variant}"
        for step in ("step-0000010", "step-0000020")
        for variant in ("codebook1_only", "two_stage")
    ]
    assert {s.step for s in read_clip_sets(run, "custom")} == {10, 20}


def test_one_manifest_with_several_groups_is_split(tmp_path):
    rows = [(_row("a", step=s, variant=v), np.zeros(RATE)) for s in (1, 2) for v in ("x", "y")]
    rows = [({**row, "caption_id": f"{row['caption_id']}{i}"}, audio) for i, (row, audio) in enumerate(rows)]
    sets = read_clip_sets(write_folder(tmp_path / "mixed", rows))
    assert [s.name for s in sets] == ["mixed/step-0000001/x", "mixed/step-0000001/y", "mixed/step-0000002/x",
                                      "mixed/step-0000002/y"]  # fmt: skip


def test_manifest_json_list_form(tmp_path):
    folder = write_folder(tmp_path / "j", [(_row("a"), np.zeros(RATE))])
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    (folder / "manifest.jsonl").unlink()
    (folder / "manifest.json").write_text(json.dumps({"clips": rows}))
    assert len(read_clip_sets(folder)[0].clips) == 1


def test_user_errors_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserFacingError, match="no manifest.jsonl"):
        read_clip_sets(tmp_path / "empty")
    with pytest.raises(UserFacingError, match="not found"):
        read_clip_sets(tmp_path / "absent")
    folder = write_folder(tmp_path / "broken", [(_row("a"), np.zeros(RATE))])
    (folder / "a-3.wav").unlink()
    with pytest.raises(UserFacingError, match="a-3.wav"):
        read_clip_sets(folder)


def test_non_finite_samples_are_kept_for_health_and_read_as_zero_by_metrics(tmp_path):
    folder = tmp_path / "nan"
    folder.mkdir()
    audio = np.full(RATE, 0.1, np.float32)
    audio[:100] = np.nan
    sf.write(str(folder / "a.wav"), audio, RATE, subtype="FLOAT")
    (folder / "manifest.jsonl").write_text(json.dumps({**_row("a"), "path": "a.wav"}) + "\n")
    (clip_set,) = read_clip_sets(folder)
    assert np.isnan(clip_set.clips[0].audio).sum() == 100
    assert np.all(np.isfinite(clip_set.audio_at(RATE)[0])) and np.all(np.isfinite(clip_set.audio_at(8000)[0]))
