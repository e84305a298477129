"""The whole DAG on a tiny config, through Snakemake and through DVC, and a snapshot that travels between clones.

Clone A builds the tiny project with a bare `snakemake`, records it with `dvc commit` (as `make demo` does) and
`dvc push`es it to the default remote (a folder beside the clones, as configured in .dvc/config). A second project
builds the same config with `dvc repro` alone. The tests check that:
- every stage's output exists with its provenance and recipe, and the disallowed track never passes select;
- both engines produce byte-identical artifacts (also a same-machine rerun-determinism check);
- clone B (`git clone` of A) gets byte-identical artifacts with `dvc pull`, and then neither `dvc status` nor
  `snakemake -n` has anything to do; a targeted pull brings only what training a new backbone needs;
- swapping `lm.backbone` rebuilds only train_lm and lm_plot, and the new experiment's metrics are its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssmttm.artifacts import read_jsonl, shard_of
from tests.workflow.project import (
    DEMO_TRACKS,
    N_SHARDS,
    ND_TRACK,
    TINY_OVERRIDES,
    commit,
    dvc,
    make_project,
    run,
    scheduled_jobs,
    set_param,
    snakemake,
    tree_hashes,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clones(tmp_path_factory) -> Path:
    """A folder for clones that share the default DVC remote (`../../ssmttm-dvc-remote` from each .dvc/)."""
    return tmp_path_factory.mktemp("clones")


@pytest.fixture(scope="module")
def snakemake_project(repo_root, clones):
    project = make_project(repo_root, clones / "clone-a")
    run(snakemake(), project)
    run(dvc("commit", "--force", "--quiet"), project)
    commit(project, "tiny run")
    return project


@pytest.fixture(scope="module")
def dvc_project(repo_root, tmp_path_factory):
    project = make_project(repo_root, tmp_path_factory.mktemp("wf") / "dvc")
    run(dvc("repro"), project)
    commit(project, "tiny run through dvc repro")
    return project


def test_snakemake_builds_every_stage(snakemake_project):
    root = snakemake_project
    shards = [f"shard-{i:05d}" for i in range(N_SHARDS)]
    for stage in ("fetch", "select", "segment", "caption"):
        for shard in shards:
            assert (root / "data" / stage / shard / "provenance.json").is_file(), (stage, shard)
            assert len((root / "data" / stage / shard / "_recipe").read_text().strip()) == 64
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
    assert (root / "data/text_cache/provenance.json").is_file() or any((root / "data/text_cache").rglob("cache.json"))
    for backbone in ("prefix_simba", "cross_transformer"):
        metrics = json.loads((root / f"results/train_lm/{backbone}/metrics.json").read_text())
        assert metrics["steps"] == TINY_OVERRIDES["train_lm"]["max_steps"], metrics
    summary = json.loads((root / "results/lm_plot/metrics.json").read_text())
    assert set(summary) == {"prefix_simba", "cross_transformer"}
    assert (root / "results/lm_plot/loss_curves.png").stat().st_size > 1000


def test_logs_are_plain_lines(snakemake_project):
    logs = list((snakemake_project / "logs").rglob("*.log"))
    assert logs and not [p for p in logs if "\r" in p.read_text()]


def test_dvc_and_snakemake_build_byte_identical_artifacts(snakemake_project, dvc_project):
    via_snakemake = tree_hashes(snakemake_project)
    via_dvc = tree_hashes(dvc_project)
    assert via_snakemake.keys() == via_dvc.keys()
    different = [path for path in via_snakemake if via_snakemake[path] != via_dvc[path]]
    assert not different, f"artifacts differ between the two runs: {different[:10]}"
    assert any(p.endswith(".parquet") for p in via_snakemake) and any(p.endswith(".wav") for p in via_snakemake)
    assert any(p.startswith("results/train_lm/") for p in via_snakemake)


def test_the_dvc_run_is_up_to_date_in_both_engines(dvc_project):
    assert json.loads(run(dvc("status", "--json"), dvc_project).strip() or "{}") == {}
    assert scheduled_jobs(run(snakemake("--dry-run"), dvc_project)) == {}


def test_a_pushed_run_pulls_byte_identical_into_another_clone(snakemake_project, clones):
    run(dvc("push", "--quiet"), snakemake_project)
    assert (clones / "ssmttm-dvc-remote").is_dir()  # the default remote of .dvc/config, beside the clones
    clone_b = clones / "clone-b"
    run(["git", "clone", "-q", str(snakemake_project), str(clone_b)], clones)
    run(dvc("pull", "--quiet"), clone_b)
    assert tree_hashes(clone_b) == tree_hashes(snakemake_project)
    assert json.loads(run(dvc("status", "--json"), clone_b).strip() or "{}") == {}
    assert scheduled_jobs(run(snakemake("--dry-run"), clone_b)) == {}
    assert "Nothing to be done" in run(snakemake("--dry-run"), clone_b)


def test_a_targeted_pull_brings_what_training_needs(snakemake_project, clones):
    clone_c = clones / "clone-c"
    run(["git", "clone", "-q", str(snakemake_project), str(clone_c)], clones)
    run(dvc("pull", "--quiet", "tokenize", "text_cache"), clone_c)
    assert (clone_c / "data/tokenize/_manifest.json").is_file() and (clone_c / "data/text_cache").is_dir()
    assert not (clone_c / "data/segment").exists() and not (clone_c / "data/fetch").exists()
    set_param(clone_c, "train_lm.also_train", ["cross_transformer", "prefix_mamba"])
    jobs = scheduled_jobs(run(snakemake("--dry-run", "lm_all"), clone_c))
    assert jobs == {"train_lm": 3}, jobs  # no run was pulled: every backbone trains; no data stage runs


def test_backbone_swap_reruns_only_what_follows_train_lm(snakemake_project):
    project = snakemake_project
    set_param(project, "lm.backbone", "prefix_mamba")
    jobs = scheduled_jobs(run(snakemake("--dry-run"), project))
    # the new backbone's training and audio only (cross_transformer's run and clips and the references stay), then
    # what collects every backbone
    assert jobs == {"train_lm": 1, "generate": 1, "lm_plot": 1, "evaluate": 1, "report": 1}, jobs
    status = json.loads(run(dvc("status", "--json"), project))
    assert set(status) == {"train_lm"}, status  # lm_plot follows once train_lm's output changes
    run(["git", "checkout", "--", "params.yaml"], project)


def test_experiments_report_their_own_backbone(dvc_project):
    before = tree_hashes(dvc_project, folders=("data",))
    run(dvc("exp", "run", "--quiet", "-S", "lm.backbone=prefix_mamba"), dvc_project)
    assert tree_hashes(dvc_project, folders=("data",)) == before  # no data stage reran
    shown = json.loads(run(dvc("exp", "show", "--json"), dvc_project))
    experiments = [
        exp
        for commit_entry in shown
        for exp in [commit_entry, *[e for branch in commit_entry.get("experiments") or [] for e in branch["revs"]]]
    ]
    by_backbone = {}
    for exp in experiments:
        data = exp.get("data") or {}
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get("results/lm_plot/metrics.json", {}).get("data", {})
        if params:
            by_backbone[params["lm"]["backbone"]] = set(metrics)
    assert by_backbone["prefix_mamba"] == {"prefix_mamba", "cross_transformer"}, by_backbone
    assert by_backbone["prefix_simba"] == {"prefix_simba", "cross_transformer"}, by_backbone
    # the baseline's run was not replaced: both prefix_simba and prefix_mamba runs are in the workspace
    for backbone in ("prefix_simba", "prefix_mamba", "cross_transformer"):
        assert (dvc_project / f"results/train_lm/{backbone}/metrics.json").is_file(), backbone
