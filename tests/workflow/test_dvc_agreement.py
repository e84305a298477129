"""dvc.yaml and the Snakemake workflow describe the same DAG.

Each DVC stage runs only its own Snakemake rules, declares as params exactly the sections those rules hash, outputs
the folder those rules write, and depends on the folders those rules read.
"""

import re

import pytest
import yaml

from ssmttm.config import params_value
from ssmttm.pipeline import INPUTS_DIR, SHARDED_RULES, STAGES
from tests.workflow.smk import read_rules


@pytest.fixture(scope="module")
def rules(repo_root):
    return read_rules(repo_root / "workflow")


@pytest.fixture(scope="module")
def stages(repo_root):
    return yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]


def _allowed_rules(cmd: str) -> list[str]:
    match = re.search(r"--allowed-rules ((?:\w+ ?)+) --forcerun ", cmd)
    assert match, f"stage command must name its rules with --allowed-rules ... -- TARGET: {cmd}"
    return match.group(1).split()


def _outs(stage) -> set[str]:
    """Output paths of a stage; an entry is a path or a one-key mapping {path: options}."""
    return {next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]}


def _job_rules(stage, rules):
    """The rules of a stage that produce files (aggregate `*_all` rules only list inputs)."""
    return [rules[name] for name in _allowed_rules(stage["cmd"]) if rules[name].outputs]


def test_every_stage_runs_existing_rules_and_target(stages, rules):
    for name, stage in stages.items():
        allowed = _allowed_rules(stage["cmd"])
        missing = [r for r in allowed if r not in rules]
        assert not missing, f"dvc stage {name}: unknown Snakemake rules {missing}"
        target = stage["cmd"].split(" -- ", 1)[1].strip()
        produced = {o for r in allowed for o in rules[r].outputs}
        assert target in allowed or target in produced, f"dvc stage {name}: target {target} not built by {allowed}"


def test_each_stage_follows_the_pipeline_table(stages):
    """Params, source files, upstream folders, outputs and command of every DVC stage come from ssmttm.pipeline."""
    assert list(stages) == list(STAGES)
    for name, spec in STAGES.items():
        stage = stages[name]
        assert stage.get("params", []) == list(spec.params), f"dvc stage {name}: params"
        upstream = [out for up in spec.upstream for out in STAGES[up].outs]
        inputs = [INPUTS_DIR] if spec.inputs else []
        assert stage["deps"] == upstream + inputs + list(spec.code_paths), f"dvc stage {name}: deps"
        assert sorted(_outs(stage)) == sorted(spec.outs), f"dvc stage {name}: outs"
        assert _allowed_rules(stage["cmd"]) == list(spec.rules), f"dvc stage {name}: rules"
        forced = re.search(r"--forcerun ((?:\w+ ?)+) -- ", stage["cmd"]).group(1).split()
        assert forced == list(spec.job_rules), f"dvc stage {name}: DVC must force its own job rules"


def test_every_rule_hashes_the_recipe_of_its_own_stage(rules, repo_root):
    text = "".join(p.read_text() for p in sorted((repo_root / "workflow/rules").glob("*.smk")))
    for name, spec in STAGES.items():
        for rule in spec.job_rules:
            body = re.search(rf"^rule {rule}:\n((?:[ \t]+.*\n|\n)*)", text, re.MULTILINE).group(1)
            assert re.search(rf'recipe=recipe\("{name}"[,)]', body), (
                f"rule {rule} must record the recipe of stage {name}"
            )
            assert f'changed("{name}",' in body, f"rule {rule} must rerun when the recipe of {name} changed"
            assert "+ record(" in body, f"rule {rule} must write its recipe beside its output"


def _covers(out: str, path: str) -> bool:
    """A DVC out covers a Snakemake path when it is that path or a folder above it."""
    return path == out or path.startswith(out.rstrip("/") + "/")


def test_stage_outs_are_what_its_rules_write(stages, rules):
    for name, stage in stages.items():
        outs = _outs(stage)
        written = [o for rule in _job_rules(stage, rules) for o in rule.outputs]
        uncovered = [path for path in written if not any(_covers(out, path) for out in outs)]
        assert not uncovered, f"dvc stage {name}: rule outputs outside the stage outs: {uncovered}"
        unused = [out for out in outs if not any(_covers(out, path) for path in written)]
        assert not unused, f"dvc stage {name}: outs no rule writes: {unused}"


def test_stage_data_deps_are_what_its_rules_read(stages, rules):
    all_outs = {out for stage in stages.values() for out in _outs(stage)}
    for name, stage in stages.items():
        read = [i for rule in _job_rules(stage, rules) for i in rule.inputs]
        # each input maps to the DVC out that produces it; inputs a stage makes itself are not dependencies
        producers = {out for path in read for out in all_outs if _covers(out, path)} - _outs(stage)
        declared = {d for d in stage.get("deps", []) if d.startswith(("data/", "results/"))}
        assert declared == producers, f"dvc stage {name}"


def test_every_producing_rule_belongs_to_one_stage(stages, rules):
    owners: dict[str, str] = {}
    for name, stage in stages.items():
        for rule in _job_rules(stage, rules):
            assert rule.name not in owners, f"rule {rule.name} in stages {owners.get(rule.name)} and {name}"
            owners[rule.name] = name
    producing = {r.name for r in rules.values() if r.outputs}
    assert producing == set(owners), f"rules without a DVC stage: {sorted(producing - set(owners))}"


def test_code_deps_exist(stages, repo_root):
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            if dep.startswith(("src/", "workflow/", INPUTS_DIR)):
                assert (repo_root / dep).exists(), f"dvc stage {name}: dependency {dep} does not exist"


def test_committed_lock_covers_every_stage_with_the_demo_params(stages, repo_root):
    """dvc.lock pins the demo's artifacts: every stage is there, recorded with the params now in params.yaml."""
    lock = yaml.safe_load((repo_root / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages)
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    for name, entry in lock.items():
        recorded = entry.get("params", {}).get("params.yaml", {})
        assert set(recorded) == set(stages[name].get("params", [])), name
        for section, value in recorded.items():
            now = params_value(params, section)  # a section, or a dotted key of one
            assert _normal(value) == _normal(now), f"dvc.lock {name}: params.yaml:{section} changed"


def _normal(value):
    """DVC writes 1e-07 where params.yaml has 1.0e-7; YAML 1.1 reads the former as a string."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def test_the_per_shard_rules_of_the_pipeline_table_are_the_workflow_rules_with_a_shard_wildcard(rules):
    sharded = {name for name, rule in rules.items() if any("{shard}" in out for out in rule.outputs)}
    assert sharded == SHARDED_RULES
