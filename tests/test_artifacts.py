"""Atomic writes, provenance, stable hashing and sharding."""

import json
import os

import pytest

from ssmttm import artifacts


def test_atomic_path_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out" / "table.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path):
    target = tmp_path / "shard-00000"
    with artifacts.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000"]
    with artifacts.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_temporary_names_are_recognisable(tmp_path):
    with artifacts.atomic_path(tmp_path / "x.parquet") as tmp:
        assert artifacts.is_temporary(tmp)
        assert not tmp.name.endswith(".parquet")  # a glob for *.parquet never picks up a half-written file
        tmp.write_bytes(b"")
    assert not artifacts.is_temporary(tmp_path / "x.parquet")


def test_provenance_is_deterministic_and_complete(tmp_path):
    section = {"b": 2, "a": [1, 2]}
    first = artifacts.write_provenance(tmp_path / "one", "segment", section, seed=7).read_bytes()
    second = artifacts.write_provenance(tmp_path / "two", "segment", dict(reversed(section.items())), seed=7)
    assert first == second.read_bytes()
    record = json.loads(first)
    assert record["params"] == section and record["seed"] == 7 and record["stage"] == "segment"
    assert record["params_sha256"] == artifacts.hash_params(section)
    assert record["code_version"].startswith(artifacts.code_version().split("+")[0] + "+segment.")
    # a stage's provenance names its own source files only: unknown stages fall back to the whole package
    assert json.loads(artifacts.write_provenance(tmp_path / "x", "other", {}, None).read_bytes())["code_version"] == (
        artifacts.code_version()
    )
    assert {"python", "torch", "numpy"} <= set(record["libraries"])
    assert artifacts.hash_params({"a": 1}) != artifacts.hash_params({"a": 2})


def test_stable_hashes_do_not_depend_on_python_hash_seed():
    # Literal values: a change in the hashing scheme would silently reshuffle every shard and split.
    assert artifacts.shard_of("track_0000214", 100) == 86
    assert artifacts.stable_unit_float(1234, "split", "t1") == pytest.approx(0.760175, abs=1e-6)
    values = {artifacts.shard_of(f"t{i}", 4) for i in range(200)}
    assert values == {0, 1, 2, 3}


def test_sha256_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert artifacts.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_link_or_copy_links_or_copies_content_and_optionally_metadata(tmp_path, monkeypatch):
    source = tmp_path / "w.bin"
    source.write_bytes(b"weights")
    os.chmod(source, 0o640)
    os.utime(source, ns=(1_000_000_000, 2_000_000_000))
    artifacts.link_or_copy(source, tmp_path / "linked.bin")
    assert os.path.samefile(source, tmp_path / "linked.bin")

    def cross_device(source, dest):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    artifacts.link_or_copy(source, tmp_path / "plain.bin")
    artifacts.link_or_copy(source, tmp_path / "kept.bin", keep_metadata=True)
    for name in ("plain.bin", "kept.bin"):
        assert (tmp_path / name).read_bytes() == b"weights" and not os.path.samefile(source, tmp_path / name)
    assert (tmp_path / "plain.bin").stat().st_mtime_ns != 2_000_000_000
    kept = (tmp_path / "kept.bin").stat()
    assert kept.st_mtime_ns == 2_000_000_000 and kept.st_mode & 0o777 == 0o640


def test_a_real_kill_9_leaves_a_temporary_that_the_next_writer_removes(tmp_path):
    """SIGKILL skips every `finally`: the temporary stays, and the next atomic write of the same path removes it."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "shard-00000"
    code = (
        "import sys, time\n"
        "from ssmttm.artifacts import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'half.wav').write_bytes(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    left = [p for p in tmp_path.iterdir() if artifacts.is_temporary(p)]
    assert len(left) == 1 and (left[0] / "half.wav").is_file() and not target.exists()

    live = tmp_path / f"shard-00000{artifacts.TMP_MARK}{os.getpid()}-feedbeef"  # a writer that still runs
    live.mkdir()
    with artifacts.atomic_dir(target) as tmp:
        (tmp / "clip.wav").write_bytes(b"ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["shard-00000", live.name])
    assert (target / "clip.wav").read_bytes() == b"ok"
