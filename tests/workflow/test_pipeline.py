"""The whole DAG on a tiny config, through Snakemake and through DVC.

One Snakemake run and one `dvc repro` run build the same tiny project in two scratch folders (3 demo tracks + 1
track whose licence is not allowed, 5 s clips, a tiny codec, two tiny LMs). The tests then check that:
- every stage's output exists with its provenance, and the disallowed track never passes select;
- both tools produce byte-identical data artifacts (which is also a rerun-determinism check);
- a second Snakemake run has nothing to do;
- swapping `lm.backbone` rebuilds only train_lm, through Snakemake (dry-run) and through DVC (status and repro).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssmttm.artifacts import read_jsonl, shard_of
from ssmttm.data.urls import package_url

pytestmark = pytest.mark.slow

DEMO_TRACKS = ["calm/calm_acoustic_1.opus", "energetic/energetic_electronic_2.opus", "happy/happy_acoustic_2.opus"]
ND_TRACK = "tender/tender_acoustic_1.opus"  # a real demo file, declared under a licence select must refuse
N_SHARDS = 2

TINY_OVERRIDES = {
    "corpus": {"source": "manifest", "manifest_path": "tiny_manifest.jsonl", "n_shards": N_SHARDS},
    "segment": {"clip_seconds": 5, "hop_seconds": 5, "max_clips_per_track": 3, "tail": "drop"},
    "codec": {
        "train": {
            "steps": 4,
            "batch_size": 2,
            "segment_s": 0.2,
            "eval_clips": 2,
            "eval_seconds": 1.0,
            "log_every": 2,
            "n_codebooks": 2,
            "codebook_size": 64,
        }
    },
    "tokenize": {"encode_window_s": 5.0, "row_group_size": 4, "valid_fraction": 0.34, "test_fraction": 0.0},
    "lm": {
        "d_model": 32,
        "n_layers": 2,
        "d_state": 16,
        "headdim": 16,
        "chunk_size": 16,
        "n_heads": 2,
        "mlp_hidden": 64,
        "seq_len": 64,
        "codebook_size": 64,
        "special_id": 64,
        "n_codebooks": 1,
    },
    "train_lm": {
        "max_steps": 6,
        "batch_size": 2,
        "accumulate_grad_batches": 1,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "val_every": 3,
        "log_every": 1,
    },
}

PROJECT_FILES = ["Snakefile", "workflow", "dvc.yaml", ".dvcignore"]


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _tiny_params(repo_root: Path) -> dict:
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    return _merge(params, TINY_OVERRIDES)


def _manifest_rows() -> list[dict]:
    rows = []
    for relative in DEMO_TRACKS + [ND_TRACK]:
        track_id = Path(relative).stem
        rows.append(
            {
                "id": track_id,
                "url": package_url("immich_memories_music", f"tracks/{relative}"),
                "licence": "CC BY-ND 4.0" if relative == ND_TRACK else "MIT",
                "source": "manifest",
                "tags": {"mood": relative.split("/")[0], "style": track_id.split("_")[1]},
            }
        )
    return rows


def _make_project(repo_root: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = repo_root / name
        if source.is_dir():
            shutil.copytree(source, folder / name, symlinks=False)
        elif source.exists():
            shutil.copy(source, folder / name)
    params = _tiny_params(repo_root)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with open(folder / "tiny_manifest.jsonl", "w") as handle:
        for row in _manifest_rows():
            handle.write(json.dumps(row) + "\n")
    # dvc.yaml's code dependencies point into src/: give the scratch project a copy so DVC can hash them
    shutil.copytree(repo_root / "src", folder / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "logs").rglob("*.log")))
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-6000:]}{logs}")
    return output


def _snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/default", "--cores", "2", *args]


def _dvc(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


def _tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under data/ (the fetch download cache is a convenience, not an artifact)."""
    out = {}
    for path in sorted((root / "data").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith("data/cache/") and path.name != ".gitignore":  # DVC's own
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def snakemake_project(repo_root, tmp_path_factory):
    project = _make_project(repo_root, tmp_path_factory.mktemp("wf") / "snakemake")
    _run(_snakemake(), project)
    return project


@pytest.fixture(scope="module")
def dvc_project(repo_root, tmp_path_factory):
    project = _make_project(repo_root, tmp_path_factory.mktemp("wf") / "dvc")
    _run(["git", "init", "-q"], project)
    _run(_dvc("init", "-q"), project)
    # a clone of the project has commits; dvclive reads the current revision
    _run(["git", "add", "-A"], project)
    _run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "tiny project"], project)
    _run(_dvc("repro"), project)
    return project


def test_snakemake_builds_every_stage(snakemake_project):
    root = snakemake_project
    shards = [f"shard-{i:05d}" for i in range(N_SHARDS)]
    for stage in ("fetch", "select", "segment", "caption"):
        for shard in shards:
            assert (root / "data" / stage / shard / "provenance.json").is_file(), (stage, shard)
    kept = [row["id"] for shard in shards for row in read_jsonl(root / "data/select" / shard / "kept.jsonl")]
    assert sorted(kept) == sorted(Path(t).stem for t in DEMO_TRACKS)
    nd_shard = f"shard-{shard_of(Path(ND_TRACK).stem, N_SHARDS):05d}"
    rejected = (root / "data/select" / nd_shard / "rejected.tsv").read_text()
    assert f"{Path(ND_TRACK).stem}\tlicence_not_allowed" in rejected
    clips = [row for shard in shards for row in read_jsonl(root / "data/segment" / shard / "clips.jsonl")]
    assert len(clips) == 3 * len(DEMO_TRACKS) and not any(Path(ND_TRACK).stem in c["clip_id"] for c in clips)
    captions = [row for shard in shards for row in read_jsonl(root / "data/caption" / shard / "captions.jsonl")]
    assert {c["clip_id"] for c in captions} == {c["clip_id"] for c in clips}
    assert (root / "data/codec/codec.json").is_file() and (root / "data/codec/provenance.json").is_file()
    manifest = json.loads((root / "data/tokenize/_manifest.json").read_text())
    assert sum(manifest["counts"].values()) == len(clips) if "counts" in manifest else manifest
    for backbone in ("prefix_simba", "cross_transformer"):
        metrics = json.loads((root / f"results/train_lm/{backbone}/metrics.json").read_text())
        assert metrics["steps"] == TINY_OVERRIDES["train_lm"]["max_steps"], metrics


def test_second_snakemake_run_has_nothing_to_do(snakemake_project):
    output = _run(_snakemake("--dry-run"), snakemake_project)
    assert "Nothing to be done" in output, output[-2000:]


def test_dvc_and_snakemake_build_byte_identical_data(snakemake_project, dvc_project):
    via_snakemake = _tree_hashes(snakemake_project)
    via_dvc = _tree_hashes(dvc_project)
    assert via_snakemake.keys() == via_dvc.keys()
    different = [path for path in via_snakemake if via_snakemake[path] != via_dvc[path]]
    assert not different, f"artifacts differ between the two runs: {different[:10]}"
    assert any(p.endswith(".parquet") for p in via_snakemake) and any(p.endswith(".wav") for p in via_snakemake)


def _swap_backbone(project: Path, backbone: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["lm"]["backbone"] = backbone
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_backbone_swap_reruns_only_train_lm_in_snakemake(snakemake_project):
    _swap_backbone(snakemake_project, "prefix_mamba")
    output = _run(_snakemake("--dry-run", "--quiet", "rules"), snakemake_project)
    job_lines = [line.split() for line in output.splitlines() if line.strip() and line.split()[-1].isdigit()]
    jobs = {parts[0]: int(parts[-1]) for parts in job_lines if len(parts) == 2}
    assert jobs.get("train_lm") == 1, output[-2000:]  # the new backbone only; cross_transformer stays
    data_rules = {"manifest", "fetch", "select", "segment", "caption", "codec", "tokenize", "tokenize_manifest"}
    assert not data_rules & set(jobs), jobs


def test_backbone_swap_reruns_only_train_lm_in_dvc(dvc_project):
    assert json.loads(_run(_dvc("status", "--json"), dvc_project).strip() or "{}") == {}
    _swap_backbone(dvc_project, "prefix_mamba")
    status = json.loads(_run(_dvc("status", "--json"), dvc_project))
    assert set(status) == {"train_lm"}, status
    before = _tree_hashes(dvc_project)
    _run(_dvc("repro"), dvc_project)
    assert _tree_hashes(dvc_project) == before  # no data stage reran
    assert (dvc_project / "results/train_lm/prefix_mamba/metrics.json").is_file()
    assert (dvc_project / "results/train_lm/prefix_simba/metrics.json").is_file()  # kept, not retrained
