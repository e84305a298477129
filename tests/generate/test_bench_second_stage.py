"""Smoke test of bench/bench_second_stage.py on the tiny inputs (--quick)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.generate._fixtures import make_inputs
from tests.generate.test_cli import write_params


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_second_stage", repo_root / "bench" / "bench_second_stage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_compares_the_refiner_with_codebook1_alone(bench, repo_root, tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in", real_text=True)
    params = write_params(repo_root, tmp_path, batch_size=2)
    out = tmp_path / "second_stage.json"
    args = ["--params", str(params), "--codec", str(inputs.codec), "--refiner", str(inputs.refiner)]
    args += ["--shards", str(inputs.shards), "--clips", str(inputs.segment), "--lm", str(inputs.lm_run / "final")]
    assert bench.main([*args, "--quick", "--seconds", "0.1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    stage = result["second_stage"]
    assert stage["clips"] == ["trackA-0000", "trackA-0001"] and stage["targets"] == ["codec", "original"]
    names = [(s["system"], s["sampler"], s["steps"]) for s in stage["systems"]]
    assert names == [("codebook1_only", None, None), ("codec", None, None)] + [
        ("refiner", s, n) for s, n in bench.QUICK_GRID
    ]
    assert set(stage["metrics_available"]) == set(bench.METRICS)
    for system in stage["systems"]:
        assert system["wall_s"] > 0 and set(system["metrics"]["codec"]) == set(bench.METRICS)
    codec_vs_original = stage["systems"][1]["metrics"]["codec"]
    assert codec_vs_original["mel_distance"] == pytest.approx(0.0, abs=1e-6)  # the target itself
    assert result["generate_end_to_end"]["clips"] == 2 and result["generate_end_to_end"]["rtf"] > 0
    assert "refiner dpm++ 3" in capsys.readouterr().out


def test_missing_inputs_are_reported_as_not_computed(bench, repo_root, tmp_path):
    out = tmp_path / "x.json"
    assert (
        bench.main(["--params", str(repo_root / "params.yaml"), "--codec", str(tmp_path / "no"), "--out", str(out)])
        == 0
    )
    assert "missing inputs" in json.loads(out.read_text())["not_computed"]
