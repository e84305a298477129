"""How a write that failed for want of space is told apart from a bug, and which folder its one line names (the
real full disks are in tests/test_full_disk.py, which needs root)."""

from __future__ import annotations

import errno

import pytest

from ssmttm.artifacts import atomic_dir, atomic_path, disk_full_message


def test_a_library_error_that_says_the_disk_is_full_names_the_output_not_the_temporary(tmp_path):
    final = tmp_path / "run" / "step-0000008"
    with pytest.raises(OSError) as caught, atomic_dir(final) as tmp:
        (tmp / "weights").write_bytes(b"x")
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(final)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert not final.exists() and list(final.parent.iterdir()) == []  # nothing that looks finished


def test_a_bug_with_space_left_stays_a_bug(tmp_path):
    with pytest.raises(ValueError), atomic_path(tmp_path / "out.wav"):
        raise ValueError("a real bug")


def test_an_oserror_without_a_file_name_gets_the_output(tmp_path):
    with pytest.raises(OSError) as caught, atomic_path(tmp_path / "clips" / "a.wav"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(tmp_path / "clips" / "a.wav")


def test_the_line_names_the_stage_output_holding_the_failed_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = OSError(errno.ENOSPC, "No space left on device", "results/refiner/step-0000008.tmp-1-abcdef-0123abcd/x")
    assert disk_full_message(inside, ["results/refiner"]) == (
        "no space left on the device holding results/refiner; free space and rerun the same command"
    )
    elsewhere = OSError(errno.ENOSPC, "No space left on device", "data/cache/fetch/audio/t1.wav")
    assert disk_full_message(elsewhere, ["data/fetch/shard-00000"]).startswith(
        "no space left on the device holding data/cache/fetch/audio;"
    )
    unnamed = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert disk_full_message(unnamed, ["data/segment/shard-00000"]).startswith(
        "disk quota exceeded on the device holding data/segment/shard-00000;"
    )
