"""Bad inputs of the later stages, as a user gives them (issue 23): `ssmttm generate`, `decode`, `validate`,
`evaluate`, `report`, `text-cache` and `train-refiner` through the CLI's `main(argv)`. Each must give exit code 1
or 2, one `error:` line naming the input, no "internal error", and write nothing."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssmttm import cli
from tests.codec import tiny_codec
from tests.generate._fixtures import make_lm_run

HUGE_SEED = str(2**65)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    return {"codec": tiny_codec(root / "codec"), "lm_run": make_lm_run(root / "lm_run")}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A scratch folder as the working directory (so a crash log would land in it, and be seen)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def params_file(repo_root: Path, folder: Path, edit=None, **generate) -> Path:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = False
    params["generate"].update({"device": "cpu", "batch_size": 1, "seconds": 0.01, **generate})
    if edit:
        edit(params)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def refused(argv: list[str], capsys, names: str, out: Path | None, codes=(1, 2)) -> str:
    """Run the CLI; assert a refusal of one line that names `names`, and that `out` was not written."""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals (a flag's type)
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:") or " error: " in line]
    assert "internal error" not in err, err
    assert rc in codes, (rc, err)
    assert len(lines) == 1, err
    assert names in lines[0], lines[0]
    assert out is None or not out.exists(), f"{out} was written"
    assert not Path("logs/crashes").exists()
    return lines[0]


def generate_codes(built, params: Path, out: Path, *args: str) -> list[str]:
    checkpoint = str(built["lm_run"] / "final")
    return ["generate", "--params", str(params), "--checkpoint", checkpoint, "--codec", str(built["codec"]),
            "--out", str(out), "--no-progress", *args]  # fmt: skip


# ----------------------------------------------------------------------------------------------- generate


def test_caption_file_not_utf8(built, work, repo_root, capsys):
    captions = work / "latin1.txt"
    captions.write_bytes("café piano\n".encode("latin-1"))
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions-file", str(captions), "--frames", "4")
    assert "not UTF-8" in refused(argv, capsys, "latin1.txt", out)


@pytest.mark.parametrize("row", ['{"caption": 5}', '{"caption": "x", "id": [1]}', '{"caption": null}', "[1, 2]"])
def test_jsonl_fields_of_the_wrong_type(built, work, repo_root, capsys, row):
    captions = work / "captions.jsonl"
    captions.write_text(row + "\n")
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions-file", str(captions), "--frames", "4")
    refused(argv, capsys, "captions.jsonl", out)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "1e12"])
def test_seconds_not_finite_or_absurd(built, work, repo_root, capsys, value):
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions", "piano", f"--seconds={value}")
    refused(argv, capsys, "--seconds", out)


def test_frames_beyond_memory(built, work, repo_root, capsys):
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions", "piano", "--frames", str(10**13))
    assert "of memory" in refused(argv, capsys, "--frames", out)


def test_empty_caption_file(built, work, repo_root, capsys):
    captions = work / "empty.txt"
    captions.write_text("\n  \n")
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions-file", str(captions), "--frames", "4")
    assert "no captions" in refused(argv, capsys, "empty.txt", out)


def test_seed_beyond_the_generator_range(built, work, repo_root, capsys):
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions", "x", "--frames", "4")
    refused([*argv, "--seed", HUGE_SEED], capsys, "--seed", out)


@pytest.mark.parametrize(
    ("damaged", "content", "says"),
    [
        ("config.json", b"garbage{", "not a readable LM config"),
        ("config.json", b'{"lm": {"d_model": "wide"}}', "not a readable LM config"),
        ("model.safetensors", b"xx", "unreadable weights"),
    ],
)
def test_a_damaged_checkpoint_is_refused(built, work, repo_root, capsys, damaged, content, says):
    checkpoint = work / "checkpoint"
    shutil.copytree(built["lm_run"] / "final", checkpoint)
    (checkpoint / damaged).write_bytes(content)
    out = work / "codes.npz"
    argv = generate_codes(built, params_file(repo_root, work), out, "--captions", "x", "--frames", "4")
    argv[argv.index("--checkpoint") + 1] = str(checkpoint)
    assert says in refused(argv, capsys, damaged, out)


def test_lm_run_with_an_empty_caption_set_writes_nothing(built, work, repo_root, capsys):
    captions = work / "empty.jsonl"
    captions.write_text("")
    params = params_file(repo_root, work, captions="file", captions_path=str(captions))
    out = work / "generated"
    argv = ["generate", "--params", str(params), "--lm-run", str(built["lm_run"]), "--codec", str(built["codec"])]
    refused([*argv, "--out", str(out), "--no-progress"], capsys, "empty.jsonl", out)


def test_lm_run_with_a_length_beyond_memory_writes_nothing(built, work, repo_root, capsys):
    captions = work / "one.txt"
    captions.write_text("soft piano\n")
    params = params_file(
        repo_root, work, captions="file", captions_path=str(captions), seconds=1e9, variants=["codebook1_only"]
    )
    out = work / "generated"
    argv = ["generate", "--params", str(params), "--lm-run", str(built["lm_run"]), "--codec", str(built["codec"])]
    refused([*argv, "--out", str(out), "--no-progress"], capsys, "generate.seconds", out)


# ----------------------------------------------------------------------------------------------- decode


def decode_argv(built, out: Path, *args: str) -> list[str]:
    return ["decode", "--codec", str(built["codec"]), "--out", str(out), "--no-progress", *args]


@pytest.mark.parametrize(
    ("arrays", "says"),
    [
        ({"codes": np.zeros((1, 2, 0), np.int64)}, "no frames"),
        ({"codes": np.full((1, 2, 8), 1.7)}, "dtype float64"),
        ({"codes": np.ones((1, 2, 8), np.float32)}, "must be integers"),
        ({"codes": np.zeros((0, 2, 8), np.int64)}, "B >= 1"),
        ({"codes": np.zeros((2, 8), np.int64)}, "(B, K, T)"),
        ({"codes": np.full((1, 2, 8), -1, np.int64)}, "outside 0..15"),
        ({"codes": np.zeros((1, 2, 8), np.int64), "ids": np.array(["../up"])}, "file names"),
        ({"codes": np.zeros((1, 2, 8), np.int64), "captions": np.array(["a", "b"])}, "one per item"),
        ({"latents": np.zeros((1, 8, 4), np.float32)}, "no 'codes' array"),
    ],
)
def test_codes_npz_refused(built, work, capsys, arrays, says):
    np.savez(work / "codes.npz", **arrays)
    out = work / "wavs"
    assert says in refused(decode_argv(built, out, "--codes", str(work / "codes.npz")), capsys, "codes.npz", out)


@pytest.mark.parametrize("content", [b"this is not a zip file", b"PK\x03\x04 truncated", b""])
def test_a_file_that_is_not_an_npz(built, work, capsys, content):
    (work / "codes.npz").write_bytes(content)
    out = work / "wavs"
    refused(decode_argv(built, out, "--codes", str(work / "codes.npz")), capsys, "codes.npz", out)


def test_pickled_object_arrays_are_refused(built, work, capsys):
    np.savez(work / "codes.npz", codes=np.array([[[1, 2]], [[3]]], dtype=object))
    out = work / "wavs"
    assert "unreadable" in refused(decode_argv(built, out, "--codes", str(work / "codes.npz")), capsys, "codes", out)


def test_a_parquet_that_is_not_one(built, work, capsys):
    (work / "codes.parquet").write_bytes(b"PAR1 not really")
    out = work / "wavs"
    refused(decode_argv(built, out, "--codes", str(work / "codes.parquet")), capsys, "codes.parquet", out)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_latents_are_refused(built, work, capsys, value):
    latents = np.zeros((2, 8, 4), np.float32)
    latents[1, 3, 2] = value
    np.savez(work / "latents.npz", latents=latents)
    out = work / "wavs"
    line = refused(decode_argv(built, out, "--latents", str(work / "latents.npz")), capsys, "latents.npz", out)
    assert "NaN or infinite" in line


def test_all_nan_latents_are_refused(built, work, capsys):
    np.savez(work / "latents.npz", latents=np.full((1, 8, 4), np.nan, np.float32))
    out = work / "wavs"
    refused(decode_argv(built, out, "--latents", str(work / "latents.npz")), capsys, "latents.npz", out)


def test_latents_that_overflow_float32(built, work, capsys):
    np.savez(work / "latents.npz", latents=np.full((1, 8, 4), 1e300))
    out = work / "wavs"
    refused(decode_argv(built, out, "--latents", str(work / "latents.npz")), capsys, "latents.npz", out)


# ----------------------------------------------------------------------------------------------- validate


@pytest.mark.parametrize(
    ("key", "edit"),
    [
        ("generate.guidance_scale", lambda p: p["generate"].update(guidance_scale=math.nan)),
        ("evaluate.bootstrap_resamples", lambda p: p["evaluate"].update(bootstrap_resamples=0)),
        ("train_lm.lr", lambda p: p["train_lm"].update(lr=math.inf)),
        ("seed", lambda p: p.update(seed=2**64 + 5)),
        ("seed", lambda p: p.update(seed=2**63)),
        ("train_refiner.lr", lambda p: p["train_refiner"].update(lr=-math.inf)),
        ("generate.temperature", lambda p: p["generate"].update(temperature=math.nan)),
        ("select.max_duration_s", lambda p: p["select"].update(max_duration_s=math.inf)),
        ("train_lm.betas.1", lambda p: p["train_lm"].update(betas=[0.9, math.nan])),
    ],
)
def test_validate_refuses_non_finite_and_out_of_range_numbers(work, repo_root, capsys, key, edit):
    params = params_file(repo_root, work, edit)
    assert f"{key} = " in refused(["validate", str(params)], capsys, "params.yaml", None, codes=(2,))


def test_yaml_nan_spelling_is_refused(work, repo_root, capsys):
    text = (repo_root / "params.yaml").read_text().replace("guidance_scale: 3.0", "guidance_scale: .nan", 1)
    (work / "params.yaml").write_text(text)
    assert "not a finite number" in refused(["validate", "params.yaml"], capsys, "guidance_scale", None, codes=(2,))


def test_profiles_stay_valid(repo_root, capsys):
    files = [str(repo_root / "params.yaml"), *(str(repo_root / "configs" / f"{n}.yaml") for n in ("demo", "paper"))]
    assert cli.main(["validate", *files, str(repo_root / "configs" / "paper-test.yaml")]) == 0


# ----------------------------------------------------------------------------------------------- other stages


def test_evaluate_refuses_a_manifest_that_is_not_utf8(work, repo_root, capsys):
    (work / "generated").mkdir()
    (work / "generated" / "manifest.jsonl").write_bytes(b'{"path": "a.wav", "caption": "caf\xe9"}\n')
    out = work / "evaluated"
    argv = ["evaluate", "--params", str(params_file(repo_root, work)), "--reference", "generated"]
    refused([*argv, "--generated", "generated", "--out", str(out)], capsys, "manifest.jsonl", out)


@pytest.mark.parametrize(
    "row", ['{"path": 5, "caption": "x"}', "[1]", '{"path": "a.wav", "caption": "x", "step": "y"}']
)
def test_evaluate_refuses_manifest_rows_of_the_wrong_type(work, repo_root, capsys, row):
    (work / "generated").mkdir()
    (work / "generated" / "manifest.jsonl").write_text(row + "\n")
    out = work / "evaluated"
    argv = ["evaluate", "--params", str(params_file(repo_root, work)), "--reference", "generated"]
    refused([*argv, "--generated", "generated", "--out", str(out)], capsys, "manifest.jsonl", out)


@pytest.mark.parametrize(("summary", "metrics"), [(b"\xff", None), (b"[1, 2]", None), (None, b"\xfe{")])
def test_report_refuses_unreadable_summaries_and_metrics(work, repo_root, capsys, summary, metrics):
    not_computed = b'{"format": "ssmttm.generate/1", "status": "not computed", "reason": "no weights"}'
    for name, content, file, valid in (
        ("gen", summary, "summary.json", not_computed),
        ("ev", metrics, "metrics.json", b'{"format": "x"}'),
    ):
        (work / name).mkdir()
        (work / name / file).write_bytes(content or valid)
    out = work / "report"
    argv = ["report", "--params", str(params_file(repo_root, work)), "--generated", "gen", "--evaluate", "ev"]
    refused([*argv, "--out", str(out)], capsys, "summary.json" if summary else "metrics.json", out)


@pytest.mark.parametrize("verb", ["text-cache", "train-refiner"])
def test_shards_that_are_not_parquet(work, repo_root, capsys, verb):
    (work / "shards").mkdir()
    (work / "shards" / "shard-00000.parquet").write_bytes(b"hello")
    out = work / "out"
    argv = [verb, "--params", str(params_file(repo_root, work)), "--shards", "shards", "--out", str(out)]
    refused(argv, capsys, "shard-00000.parquet", out)
