"""The tiny project built by `dvc repro` alone, beside one built by a bare `snakemake`: both engines give the same
bytes, the DVC-built project is up to date in both engines, and a `dvc exp run` reports its own runs.

This module builds its own two projects (not the session's shared one of tests/workflow/conftest.py), so that under
`make test` it is a unit of work of its own and runs on one worker while the shared project's tests run on the other.
"""

from __future__ import annotations

import json

import pytest

from tests.workflow.project import commit, dvc, make_project, run, scheduled_jobs, snakemake, tree_hashes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def snakemake_built(repo_root, tmp_path_factory):
    project = make_project(repo_root, tmp_path_factory.mktemp("wf") / "snakemake")
    run(snakemake(), project)
    return project


@pytest.fixture(scope="module")
def dvc_project(repo_root, tmp_path_factory):
    project = make_project(repo_root, tmp_path_factory.mktemp("wf") / "dvc")
    run(dvc("repro"), project)
    commit(project, "tiny run through dvc repro")
    return project


def test_dvc_and_snakemake_build_byte_identical_artifacts(snakemake_built, dvc_project):
    via_snakemake = tree_hashes(snakemake_built)
    via_dvc = tree_hashes(dvc_project)
    assert via_snakemake.keys() == via_dvc.keys()
    different = [path for path in via_snakemake if via_snakemake[path] != via_dvc[path]]
    assert not different, f"artifacts differ between the two runs: {different[:10]}"
    assert any(p.endswith(".parquet") for p in via_snakemake) and any(p.endswith(".wav") for p in via_snakemake)
    assert any(p.startswith("results/train_lm/") for p in via_snakemake)


def test_the_dvc_run_is_up_to_date_in_both_engines(dvc_project):
    assert json.loads(run(dvc("status", "--json"), dvc_project).strip() or "{}") == {}
    assert scheduled_jobs(run(snakemake("--dry-run"), dvc_project)) == {}


def test_experiments_report_their_own_runs(dvc_project):
    before = tree_hashes(dvc_project, folders=("data",))
    run(dvc("exp", "run", "--quiet", "-S", "runs.cross_transformer.backbone=prefix_mamba"), dvc_project)
    assert tree_hashes(dvc_project, folders=("data",)) == before  # no data stage reran
    shown = json.loads(run(dvc("exp", "show", "--json"), dvc_project))
    experiments = [
        exp
        for commit_entry in shown
        for exp in [commit_entry, *[e for branch in commit_entry.get("experiments") or [] for e in branch["revs"]]]
    ]
    by_backbone = {}  # the backbone of the run named cross_transformer -> {run: its backbone in lm_plot's metrics}
    for exp in experiments:
        data = exp.get("data") or {}
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get("results/lm_plot/metrics.json", {}).get("data", {})
        if params:
            by_backbone[params["runs"]["cross_transformer"]["backbone"]] = set(metrics)
    assert by_backbone["prefix_mamba"] == {"prefix_simba", "cross_transformer"}, by_backbone
    assert by_backbone["cross_transformer"] == {"prefix_simba", "cross_transformer"}, by_backbone
    # the experiment's run of another backbone replaced the folder's run, which was kept under previous/<key>/
    run_dir = dvc_project / "results/train_lm/cross_transformer"
    assert json.loads((run_dir / "metrics.json").read_text())["backbone"] == "prefix_mamba"
    assert [p for p in (run_dir / "previous").iterdir() if (p / "run.json").is_file()]
