"""The whole DAG on a tiny config through Snakemake, and a snapshot that travels between clones.

Clone A builds the tiny project with a bare `snakemake`, records it with `dvc commit` (as `make demo` does) and
`dvc push`es it to the default remote (a folder beside the clones, as configured in .dvc/config). The tests check:
- every stage's output exists with its provenance and recipe, and the disallowed track never passes select;
- clone B (`git clone` of A) gets byte-identical artifacts with `dvc pull`, and then neither `dvc status` nor
  `snakemake -n` has anything to do; a targeted pull brings what training a new run needs, and only that run trains;
- adding a named run rebuilds only its branch and the joint stages after it.
The same project built by `dvc repro` alone, and experiments: tests/workflow/test_dvc_engine.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from ssmttm.artifacts import read_jsonl, shard_of
from ssmttm.config import ParamsError, load_params, validate_params
from ssmttm.pipeline import Recipes, package_source
from tests.workflow.project import (
    DEMO_TRACKS,
    N_SHARDS,
    ND_TRACK,
    TINY_OVERRIDES,
    dvc,
    run,
    scheduled_jobs,
    set_param,
    snakemake,
    tree_hashes,
)

pytestmark = pytest.mark.slow


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


def test_a_targeted_pull_trains_a_new_run_and_nothing_else(snakemake_project, clones):
    """README "Train a new run from a targeted pull": the token shards, the text cache and the finished runs."""
    clone_c = clones / "clone-c"
    run(["git", "clone", "-q", str(snakemake_project), str(clone_c)], clones)
    run(dvc("pull", "--quiet", "tokenize", "text_cache", "train_lm"), clone_c)
    assert (clone_c / "data/tokenize/_manifest.json").is_file() and (clone_c / "data/text_cache").is_dir()
    assert not (clone_c / "data/segment").exists() and not (clone_c / "data/fetch").exists()
    set_param(clone_c, "runs.prefix_mamba", {"backbone": "prefix_mamba"})
    jobs = scheduled_jobs(run(snakemake("--dry-run", "lm_all"), clone_c))
    assert jobs == {"train_lm": 1}, jobs  # only the new run trains: no data stage, no other run


def test_adding_a_run_reruns_only_its_branch_and_the_joint_stages(snakemake_project):
    project = snakemake_project
    set_param(project, "runs.simba_narrow", {"backbone": "prefix_simba", "lm": {"d_model": 16}})
    jobs = scheduled_jobs(run(snakemake("--dry-run"), project))
    # the new run's training and audio only (the other runs, their clips and the references stay), then what
    # collects every run
    assert jobs == {"train_lm": 1, "generate": 1, "lm_plot": 1, "evaluate": 1, "report": 1}, jobs
    status = json.loads(run(dvc("status", "--json"), project))
    # the stages that declare the `runs` section; lm_plot and evaluate follow once train_lm's output changes
    assert set(status) == {"train_lm", "generate", "report"}, status
    run(["git", "checkout", "--", "params.yaml"], project)


# ------------------------------------------------------------------------------------------- named runs (fast)

PAPER_RUNS = ["prefix_simba", "prefix_mamba", "cross_transformer", "prefix_simba_small", "single_stage_simba"]


def _paper_recipes(repo_root: Path, edit=None) -> dict[tuple[str, str], str]:
    """Recipes of the train_lm and generate runs of the paper profile, after `edit(params)`."""
    params = copy.deepcopy(load_params(repo_root / "configs/paper.yaml"))
    if edit is not None:
        edit(params)
    recipes = Recipes(params, package_source(repo_root), repo_root)
    return {
        (stage, r): recipes(stage, r) for stage in ("train_lm", "generate") for r in PAPER_RUNS if r in params["runs"]
    }


def _changed(before: dict, after: dict) -> set:
    return {key for key in before.keys() & after.keys() if before[key] != after[key]}


def test_a_runs_depth_changes_only_that_runs_recipe(repo_root):
    before = _paper_recipes(repo_root)
    after = _paper_recipes(repo_root, lambda p: p["runs"]["prefix_simba_small"]["lm"].update(n_layers=7))
    assert _changed(before, after) == {("train_lm", "prefix_simba_small"), ("generate", "prefix_simba_small")}


def test_a_runs_step_budget_changes_only_that_runs_recipe(repo_root):
    before = _paper_recipes(repo_root)
    after = _paper_recipes(repo_root, lambda p: p["runs"]["cross_transformer"]["train_lm"].update(max_steps=300_000))
    assert _changed(before, after) == {("train_lm", "cross_transformer"), ("generate", "cross_transformer")}


def test_adding_or_removing_a_run_changes_no_other_runs_recipe(repo_root):
    before = _paper_recipes(repo_root)
    added = _paper_recipes(repo_root, lambda p: p["runs"].update(mamba_small={"backbone": "prefix_mamba"}))
    removed = _paper_recipes(repo_root, lambda p: p["runs"].pop("prefix_mamba"))
    assert _changed(before, added) == set() and _changed(before, removed) == set()
    assert set(before) - set(removed) == {("train_lm", "prefix_mamba"), ("generate", "prefix_mamba")}


def test_two_runs_of_one_backbone_coexist_with_their_own_settings(repo_root):
    params = load_params(repo_root / "configs/paper.yaml")
    recipes = Recipes(params, package_source(repo_root), repo_root)
    full, small, single = (recipes.sections("train_lm", r) for r in PAPER_RUNS[0:1] + PAPER_RUNS[3:])
    assert full["lm"]["backbone"] == small["lm"]["backbone"] == single["lm"]["backbone"] == "prefix_simba"
    assert (full["lm"]["n_layers"], small["lm"]["n_layers"], single["lm"]["n_codebooks"]) == (24, 6, 9)
    assert len({recipes("train_lm", r) for r in ("prefix_simba", "prefix_simba_small", "single_stage_simba")}) == 3


def test_a_run_records_its_own_resolved_sections(repo_root):
    params = load_params(repo_root / "configs/paper.yaml")
    sections = Recipes(params, package_source(repo_root), repo_root).sections("train_lm", "cross_transformer")
    assert "runs" not in sections and "runs" not in sections["lm"]
    assert sections["lm"]["backbone"] == "cross_transformer" and sections["lm"]["n_layers"] == 24
    assert sections["train_lm"]["max_steps"] == 400_000


def test_the_references_and_a_baseline_read_no_run(repo_root):
    """generate's reference job and a baseline's job are the same whatever the runs are."""
    params = copy.deepcopy(load_params(repo_root / "configs/paper.yaml"))
    params["baselines"] = {"musicgen_small": {"kind": "musicgen", "name_or_path": "facebook/musicgen-small"}}
    edited = copy.deepcopy(params)
    edited["runs"]["prefix_simba"]["lm"]["n_layers"] = 23
    edited["runs"]["new_run"] = {"backbone": "cross_simba"}
    before = Recipes(params, package_source(repo_root), repo_root)
    after = Recipes(edited, package_source(repo_root), repo_root)
    for run_name in ("reference", "musicgen_small"):
        assert before("generate", run_name) == after("generate", run_name), run_name
    assert "train_lm" not in before.upstream_of("generate", "musicgen_small")
    assert before.sections("generate", "musicgen_small")["baselines"] == {
        "musicgen_small": params["baselines"]["musicgen_small"]
    }
    assert "baselines" not in before.sections("generate", "prefix_simba")


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"backbone": "prefix_mamba", "lm": {"n_layer": 6}}, "unknown key 'runs.small.lm.n_layer'; allowed keys"),
        ({"backbone": "simba"}, "runs.small.backbone = 'simba' is not allowed; must be one of: 'prefix_simba'"),
        ({"backbone": "prefix_mamba", "lm": {"n_layers": 0}}, "runs.small.lm.n_layers = 0 is out of range"),
        ({"backbone": "prefix_mamba", "train_lm": {"lr": -1.0}}, "runs.small.train_lm.lr = -1.0 is out of range"),
        ({"lm": {"n_layers": 6}}, "'backbone' is a required property"),
        ({"backbone": "prefix_mamba", "train_lm": {"warmup_steps": 10**6}}, "runs.small: train_lm.warmup_steps"),
    ],
)
def test_a_run_outside_the_schema_is_refused_by_name(repo_root, entry, message):
    params = copy.deepcopy(load_params(repo_root / "configs/paper.yaml"))
    params["runs"]["small"] = entry
    with pytest.raises(ParamsError, match=re.escape(message)):
        validate_params(params, "paper.yaml")


@pytest.mark.parametrize("name", ["reference", "Big Run", "previous", "../x"])
def test_a_run_name_that_cannot_be_a_folder_of_its_own_is_refused(repo_root, name):
    params = copy.deepcopy(load_params(repo_root / "configs/paper.yaml"))
    params["runs"][name] = {"backbone": "prefix_mamba"}
    with pytest.raises(ParamsError, match="runs"):
        validate_params(params, "paper.yaml")
