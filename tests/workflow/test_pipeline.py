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

import copy
import json
import re
from pathlib import Path

import pytest

from ssmttm.artifacts import read_jsonl, shard_of
from ssmttm.config import ParamsError, load_params, validate_params
from ssmttm.pipeline import PER_BACKBONE, Recipes, package_source
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


# ------------------------------------------------------------------------------------- per-backbone settings (fast)

PAPER_RUNS = ["prefix_simba", "prefix_mamba", "cross_transformer"]


def _paper_recipes(repo_root: Path, edit=None) -> dict[tuple[str, str], str]:
    """Recipes of the train_lm and generate runs of three backbones of the paper profile, after `edit(params)`."""
    params = copy.deepcopy(load_params(repo_root / "configs/paper.yaml"))
    params["train_lm"]["also_train"] = PAPER_RUNS[1:]
    if edit is not None:
        edit(params)
    recipes = Recipes(params, package_source(repo_root), repo_root)
    return {(stage, b): recipes(stage, b) for stage in ("train_lm", "generate") for b in PAPER_RUNS}


def test_a_backbone_depth_changes_only_that_backbones_recipe(repo_root):
    before = _paper_recipes(repo_root)
    after = _paper_recipes(repo_root, lambda p: p["lm"][PER_BACKBONE]["prefix_mamba"].update(n_layers=20))
    changed = {run for run in before if before[run] != after[run]}
    assert changed == {("train_lm", "prefix_mamba"), ("generate", "prefix_mamba")}


def test_a_backbone_step_budget_changes_only_that_backbones_recipe(repo_root):
    before = _paper_recipes(repo_root)
    shorter = {"max_steps": 300_000}
    after = _paper_recipes(repo_root, lambda p: p["train_lm"][PER_BACKBONE]["cross_transformer"].update(shorter))
    changed = {run for run in before if before[run] != after[run]}
    assert changed == {("train_lm", "cross_transformer"), ("generate", "cross_transformer")}


def test_a_run_records_its_own_resolved_sections(repo_root):
    params = load_params(repo_root / "configs/paper.yaml")
    sections = Recipes(params, package_source(repo_root), repo_root).sections("train_lm", "cross_transformer")
    assert PER_BACKBONE not in sections["lm"] and PER_BACKBONE not in sections["train_lm"]
    assert sections["lm"]["backbone"] == "cross_transformer" and sections["lm"]["n_layers"] == 24
    assert sections["train_lm"]["max_steps"] == 400_000


def test_without_overrides_the_sections_are_the_shared_ones(repo_root):
    """An empty or absent per_backbone leaves every run's recipe as it was before the setting existed (the demo)."""
    params = load_params(repo_root / "params.yaml")
    assert PER_BACKBONE not in params["lm"] and PER_BACKBONE not in params["train_lm"]
    plain = Recipes(params, package_source(repo_root), repo_root)
    empty = copy.deepcopy(params)
    empty["lm"][PER_BACKBONE], empty["train_lm"][PER_BACKBONE] = {}, {"prefix_mamba": {}}
    with_empty = Recipes(empty, package_source(repo_root), repo_root)
    for backbone in ("prefix_simba", "cross_transformer"):
        expected_lm = {**params["lm"], "backbone": backbone}
        expected_train = {k: v for k, v in params["train_lm"].items() if k != "also_train"}
        assert plain.sections("train_lm", backbone)["lm"] == expected_lm
        assert plain.sections("train_lm", backbone)["train_lm"] == expected_train
        assert with_empty("train_lm", backbone) == plain("train_lm", backbone)


@pytest.mark.parametrize(
    "section,override,message",
    [
        ("lm", {"prefix_mamba": {"seq_len": 100}}, "unknown key 'lm.per_backbone.prefix_mamba.seq_len'; allowed keys"),
        ("lm", {"simba": {"n_layers": 6}}, "unknown key 'lm.per_backbone.simba'; allowed keys here: cross_simba"),
        ("lm", {"prefix_mamba": {"n_layers": 0}}, "lm.per_backbone.prefix_mamba.n_layers = 0 is out of range"),
        ("train_lm", {"cross_transformer": {"lr": 1e-3}}, "allowed keys here: max_steps, schedule_steps"),
    ],
)
def test_an_override_outside_its_keys_is_refused_by_name(repo_root, section, override, message):
    params = copy.deepcopy(load_params(repo_root / "configs/paper.yaml"))
    params[section][PER_BACKBONE] = override
    with pytest.raises(ParamsError, match=re.escape(message)):
        validate_params(params, "paper.yaml")
