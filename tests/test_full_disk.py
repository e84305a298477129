"""A full disk in the middle of a stage: a corpus stage (segment), a training stage (train-refiner) and generate, each
run as `python -m ssmttm <verb>` (as Snakemake runs it) with its output folder on a small tmpfs that fills up while
the stage writes.

Each must stop with ONE line naming the folder ("no space left on the device holding <folder>; free space and rerun
the same command"), exit code 1, leave nothing that looks complete (no output at the output path, or for the
resuming stages no final artifact, and no temporary), and after the tmpfs is enlarged (space freed), the same
command must finish with the bytes of an uninterrupted run. The real write paths run (libsndfile, torch's zip
writer, safetensors, Python's own files): nothing is injected. Mounting needs root; without it the tests skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ssmttm import cli
from ssmttm.artifacts import TMP_MARK, read_jsonl, sha256_file
from tests._kills import CORPUS_STAGES, make_corpus, snapshot

ROOM = 64 << 20  # the tmpfs after "freeing space": room for every output here


def _can_mount() -> str | None:
    """None if a tmpfs can be mounted here, else why not."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    probe = Path(f"/tmp/ssmttm-full-disk-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.decode().strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    except FileNotFoundError:
        return "no mount command"
    finally:
        probe.rmdir()


pytestmark = pytest.mark.skipif(bool(_can_mount()), reason=str(_can_mount()))


@contextlib.contextmanager
def small_disk(folder: Path, size_bytes: int) -> Iterator[Path]:
    """`folder` (created) as a tmpfs of `size_bytes`, unmounted at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def free_space(folder: Path) -> None:
    subprocess.run(["mount", "-o", f"remount,size={ROOM}", str(folder)], check=True)


def ssmttm(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmttm", *args], cwd=cwd, env=env, capture_output=True, text=True)


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARK in p.name]


def assert_one_clear_line(done: subprocess.CompletedProcess, folder: str) -> None:
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"error: no space left on the device holding {folder}; free space and rerun the same command", (
        done.stderr[-3000:]
    )
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_segment_on_a_full_disk_stops_clearly_and_the_rerun_equals_an_uninterrupted_run(tmp_path, repo_root):
    make_corpus(tmp_path, repo_root)
    with contextlib.chdir(tmp_path):  # the upstream stages are inputs here: in this process, faster
        for verb in ("manifest", "fetch", "select"):
            args, _ = CORPUS_STAGES[verb]
            assert cli.main([verb, "--params", "params.yaml", *args]) == 0
    args, out = CORPUS_STAGES["segment"]
    command = ["segment", "--params", "params.yaml", *args]
    done = ssmttm(tmp_path, *command)
    assert done.returncode == 0, done.stderr
    expected = snapshot(tmp_path / out)
    size = tree_size(tmp_path / out)
    os.rename(tmp_path / out, tmp_path / "uninterrupted")

    with small_disk(tmp_path / "data/segment", size // 2) as disk:
        assert_one_clear_line(ssmttm(tmp_path, *command), out)
        assert not (tmp_path / out).exists() and temporaries(disk) == []
        free_space(disk)
        done = ssmttm(tmp_path, *command)
        assert done.returncode == 0, done.stderr
        assert snapshot(tmp_path / out) == expected
        assert temporaries(disk) == []


def test_train_refiner_on_a_full_disk_stops_clearly_and_resumes_to_the_same_bytes(tmp_path, repo_root):
    from tests.refine._train_fixtures import build_cache, make_latent_shards, tiny_refiner, tiny_train, write_params

    shards = make_latent_shards(tmp_path / "tokenize")
    build_cache(shards, tmp_path / "text_cache")
    cfg = tiny_train(steps=12, checkpoint_every=4, val_every=6)
    write_params(tmp_path / "params.yaml", repo_root, tiny_refiner(), cfg, seed=7)

    def command(out: str) -> list[str]:
        return ["train-refiner", "--params", "params.yaml", "--shards", "tokenize", "--text-cache", "text_cache"] + [
            "--out",
            out,
        ]

    with contextlib.chdir(tmp_path):  # the uninterrupted run: in this process, faster (same bytes as the CLI's)
        assert cli.main(command("reference")) == 0
    size = tree_size(tmp_path / "reference")

    # Room for the first checkpoints, not for the whole run: it fills up in the middle of training.
    with small_disk(tmp_path / "disk", size * 3 // 5) as disk:
        assert_one_clear_line(ssmttm(tmp_path, *command("disk/run")), "disk/run")
        assert not (disk / "run" / "final").exists() and not (disk / "run" / "metrics.json").exists()
        assert temporaries(disk) == []
        free_space(disk)
        done = ssmttm(tmp_path, *command("disk/run"))
        assert done.returncode == 0, done.stderr
        assert "resuming run" in done.stderr, "the full disk hit before the first checkpoint: give the tmpfs more room"
        for name in ("final/model.safetensors", "history.jsonl", "metrics.json"):
            assert (disk / "run" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
        assert temporaries(disk) == []


def test_generate_on_a_full_disk_stops_clearly_and_the_rerun_equals_an_uninterrupted_run(tmp_path, repo_root):
    from tests.generate._fixtures import make_inputs

    inputs = make_inputs(tmp_path / "inputs", real_text=True)
    captions = tmp_path / "captions.txt"
    captions.write_text("".join(f"caption number {i} with soft piano\n" for i in range(4)))
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = False
    params["text"].update(encoder="minilm", max_length=8, device="cpu")
    params["generate"].update(
        batch_size=2, seconds=0.5, device="cpu", variants=["two_stage", "codebook1_only"], top_k=8
    )
    params["generate"].update(refine_sampler="ddim", refine_steps=2, captions="file", captions_path=str(captions))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def command(out: str) -> list[str]:
        return ["generate", "--params", "params.yaml", "--lm-run", str(inputs.lm_run / "final"), "--refiner"] + [
            str(inputs.refiner),
            "--codec",
            str(inputs.codec),
            "--out",
            out,
            "--no-progress",
        ]

    done = ssmttm(tmp_path, *command("reference"))
    assert done.returncode == 0, done.stderr
    expected = snapshot(tmp_path / "reference")
    size = tree_size(tmp_path / "reference")

    with small_disk(tmp_path / "disk", size // 2) as disk:
        assert_one_clear_line(ssmttm(tmp_path, *command("disk/out")), "disk/out")
        assert temporaries(disk) == []
        for manifest in disk.rglob("manifest.jsonl"):  # a clip it lists was written whole (resume keeps it)
            for row in read_jsonl(manifest):
                assert row["status"] != "ok" or sha256_file(manifest.parent / row["path"]) == row["sha256"], row
        free_space(disk)
        done = ssmttm(tmp_path, *command("disk/out"))
        assert done.returncode == 0, done.stderr
        assert snapshot(disk / "out") == expected
        assert temporaries(disk) == []
