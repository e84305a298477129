"""`ssmttm generate` from the command line with the real MiniLM encoder: a run killed with SIGKILL resumes clip by
clip; references; the ad-hoc codes mode and its frame rate."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssmttm import cli
from ssmttm.artifacts import TMP_MARK, read_jsonl
from ssmttm.generate.audio_out import MANIFEST_FILE
from tests.generate._fixtures import make_inputs

N_CAPTIONS = 8
VARIANTS = ["two_stage", "codebook1_only"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("generate_cli"), real_text=True)


def write_params(repo_root: Path, folder: Path, **generate) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = False
    params["text"].update(encoder="minilm", max_length=8, device="cpu")
    params["generate"].update(
        {
            "batch_size": 1,
            "seconds": 0.05,
            "device": "cpu",
            "variants": VARIANTS,
            "top_k": 8,
            "refine_sampler": "ddim",
            "refine_steps": 4,
            **generate,
        }
    )
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }


def manifest_rows(folder: Path) -> list[dict]:
    try:
        return read_jsonl(folder / MANIFEST_FILE)
    except (FileNotFoundError, ValueError):
        return []


def test_sigkill_then_rerun_regenerates_only_the_missing_clips(inputs, repo_root, tmp_path, monkeypatch, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("".join(f"caption number {i} with soft piano\n" for i in range(N_CAPTIONS)))
    params = write_params(repo_root, tmp_path, captions="file", captions_path=str(captions))
    out = tmp_path / "out"
    args = ["generate", "--params", str(params), "--lm-run", str(inputs.lm_run / "final")]
    args += ["--refiner", str(inputs.refiner), "--codec", str(inputs.codec), "--out", str(out), "--no-progress"]
    command = [sys.executable, "-m", "ssmttm", *args]
    folders = [out / "step-0000004" / v for v in VARIANTS]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not manifest_rows(folders[1]) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until the first clips of both variants are recorded
    os.kill(proc.pid, signal.SIGKILL)
    log = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    kept = {(f, row["path"]): (f / row["path"]).stat() for f in folders for row in manifest_rows(f)}
    total = len(folders) * N_CAPTIONS
    assert 0 < len(kept) < total  # killed in the middle

    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 0  # the same settings, numerics and thread count in this process
    printed = capsys.readouterr().out
    made, reused = map(int, re.search(r"\((\d+) made now, (\d+) kept\)", printed).groups())
    assert f"{total} clips ok, 0 failed" in printed
    assert (made, reused) == (total - len(kept), len(kept))
    for (folder, name), before in kept.items():  # the clips of the killed run were kept, not rewritten
        after = (folder / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    for folder in folders:
        rows = manifest_rows(folder)
        assert len(rows) == N_CAPTIONS and all(r["status"] == "ok" for r in rows)
        assert len(list(folder.glob("*.wav"))) == N_CAPTIONS
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]  # what the killed writer left is gone


def test_cli_references_and_run_with_the_real_encoder(inputs, repo_root, tmp_path, monkeypatch, capsys):
    params = write_params(repo_root, tmp_path, batch_size=2, max_captions=2)
    monkeypatch.chdir(tmp_path)
    common = ["--params", str(params), "--refiner", str(inputs.refiner), "--codec", str(inputs.codec)]
    common += ["--shards", str(inputs.shards), "--no-progress"]
    assert cli.main(["generate", "--reference", *common, "--clips", str(inputs.segment), "--out", "ref"]) == 0
    assert "8 clips ok, 0 failed (8 made now, 0 kept)" in capsys.readouterr().out
    rows = read_jsonl(tmp_path / "ref" / "reference_codebook1" / MANIFEST_FILE)
    assert [r["caption_id"] for r in rows] == ["trackA-0000", "trackA-0001"]
    assert cli.main(["generate", "--lm-run", str(inputs.lm_run / "final"), *common, "--out", "run"]) == 0
    assert "4 clips ok, 0 failed" in capsys.readouterr().out
    # no --clips: the original references are skipped, not invented
    assert cli.main(["generate", "--reference", *common, "--out", "ref2"]) == 0
    assert not (tmp_path / "ref2" / "original").exists()


def test_codes_mode_takes_the_frame_rate_from_the_codec(inputs, repo_root, tmp_path, monkeypatch, capsys):
    params = write_params(repo_root, tmp_path)
    monkeypatch.chdir(tmp_path)
    base = ["generate", "--params", str(params), "--checkpoint", str(inputs.lm_run / "final"), "--no-progress"]
    assert cli.main([*base, "--captions", "soft piano", "--seconds", "0.02", "--out", "a.npz"]) == 1
    assert "--codec" in capsys.readouterr().err  # seconds -> frames needs the codec's frame rate
    assert (
        cli.main(
            [*base, "--captions", "soft piano", "--seconds", "0.02", "--codec", str(inputs.codec)]
            + [
                "--out",
                "a.npz",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "a.npz")["codes"].shape == (1, 1, 40)  # 0.02 s x 2000 frames/s
