"""One invalidation contract, both engines, checked the way a user triggers it.

A tiny project is built once with a bare `snakemake` and recorded in DVC with `dvc commit` (what `make demo` does).
Then, for every stage and every kind of change (its own params section, its own source file, an upstream artifact),
a dry run of each engine must schedule exactly that stage and every stage downstream of it: nothing upstream, nothing
on a side branch. Each change is undone before the next one, and the project must then be up to date again.
Restoring artifacts (`dvc checkout`, new mtimes everywhere) must trigger nothing.

Each test expects exactly the jobs of its own change on a clean project, so a change left behind (or an undo that
did not bring the project back) fails the next test; a test after them checks that the undone project is up to date.
Checking both engines after every undo as well cost half of this module's time (a dry run of each per test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from ssmttm.pipeline import STAGES, declares, downstream
from tests.workflow.project import dvc, run, run_together, scheduled_jobs, set_param, snakemake

pytestmark = pytest.mark.slow

# A params key of each stage's own section (None: the stage reads no params). Changing any key of the section
# changes the stage's recipe; these keys are chosen so the tiny project stays valid.
OWN_PARAM = {
    "manifest": ("corpus.max_tracks", 100),
    "fetch": ("fetch.retries", 3),
    "select": ("select.max_duration_s", 3000),
    "segment": ("segment.silence_db", -51),
    "caption": ("caption.model.max_new_tokens", 100),
    "codec": ("codec.train.log_every", 3),
    "tokenize": ("tokenize.batch_size", 4),
    "text_cache": ("text.batch_size", 16),
    "train_lm": ("train_lm.lr", 0.002),
    "train_refiner": ("train_refiner.lr", 0.002),
    "fetch_references": ("fetch.retries", 3),
    "generate": ("generate.refine_steps", 3),
    "evaluate": ("evaluate.bootstrap_resamples", 30),
    "lm_plot": None,
    "report": ("report.listening_max_captions", 7),
}
JOBS_PER_STAGE = {  # Snakemake jobs of each stage in the tiny project (2 shards, 2 runs)
    "manifest": {"manifest": 1},
    "fetch": {"fetch": 2},
    "select": {"select": 2},
    "segment": {"segment": 2},
    "caption": {"caption": 2},
    "codec": {"codec": 1},
    "tokenize": {"tokenize": 2, "tokenize_manifest": 1},
    "text_cache": {"text_cache": 1},
    "train_lm": {"train_lm": 2},
    "train_refiner": {"train_refiner": 1},
    "fetch_references": {"fetch_references": 1},
    "generate": {"generate": 2, "generate_reference": 1},
    "evaluate": {"evaluate": 1},
    "lm_plot": {"lm_plot": 1},
    "report": {"report": 1},
}


def ancestors(stages) -> set[str]:
    """`stages` and every stage upstream of them."""
    seen: set[str] = set()
    todo = list(stages)
    while todo:
        stage = todo.pop()
        if stage not in seen:
            seen.add(stage)
            todo += STAGES[stage].upstream
    return seen


# What each kind of generate job reads: an LM run's job reads no fetched references, the references' job no LM.
GENERATE_READS = {
    "generate": ancestors(u for u in STAGES["generate"].upstream if u != "fetch_references") | {"generate"},
    "generate_reference": ancestors(u for u in STAGES["generate"].upstream if u != "train_lm") | {"generate"},
}


def expected_jobs(roots: list[str]) -> dict[str, int]:
    """Jobs that a change of the stages `roots` reruns: theirs and those of every stage after them, except the
    generate jobs that read none of the roots (train_lm's change reruns each run's generate job but not
    generate_reference; fetch_references' change reruns generate_reference only)."""
    reached = {name for root in roots for name in downstream(root)}
    jobs = {rule: n for stage in STAGES if stage in reached for rule, n in JOBS_PER_STAGE[stage].items()}
    for rule, reads in GENERATE_READS.items():
        if rule in jobs and not set(roots) & reads:
            jobs.pop(rule)
    return jobs


def readers_of(key: str) -> list[str]:
    """The stages that read a params key (its section, or the key itself: `generate.captions` is read by
    fetch_references and generate, `generate.refine_steps` by generate alone), in DAG order."""
    return [stage for stage in STAGES if declares(stage, key)]


def dvc_would_run(project: Path) -> set[str]:
    """Stages `dvc repro --dry` would run. A dry run cannot know which outputs will change, so it lists the stages
    whose own dependencies changed; `closure` adds what DVC then reruns because their outputs changed (every
    output holds its recipe, so a rerun with another recipe always changes it: see test_dvc_repro_reruns_...)."""
    output = run(dvc("repro", "--dry"), project)
    return set(re.findall(r"Running stage '(\w+)'", output))


def closure(stages: set[str]) -> set[str]:
    return {name for stage in stages for name in downstream(stage)}


def snakemake_would_run(project: Path, *args: str) -> dict[str, int]:
    return scheduled_jobs(run(snakemake("--dry-run", *args), project))


def both_would_run(project: Path) -> tuple[dict[str, int], set[str]]:
    """(Snakemake's jobs, DVC's stages) of a dry run of each engine, run side by side."""
    smk, dvc_out = run_together(snakemake("--dry-run"), dvc("repro", "--dry"), cwd=project)
    return scheduled_jobs(smk), set(re.findall(r"Running stage '(\w+)'", dvc_out))


def assert_up_to_date(project: Path) -> None:
    smk, status = run_together(snakemake("--dry-run"), dvc("status", "--json"), cwd=project)
    assert scheduled_jobs(smk) == {}
    assert json.loads(status.strip() or "{}") == {}, status


@pytest.fixture
def project(snakemake_project):
    """The session's built tiny project (tests/workflow/conftest.py); each test leaves it as it found it."""
    return snakemake_project


def test_a_finished_run_is_up_to_date_in_both_engines(project):
    assert_up_to_date(project)


@pytest.mark.parametrize("stage", [s for s in STAGES if OWN_PARAM[s]])
def test_changing_a_stages_params_reruns_it_and_what_follows(project, stage):
    key, value = OWN_PARAM[stage]
    original = (project / "params.yaml").read_text()
    try:
        set_param(project, key, value)
        readers = readers_of(key)
        assert stage in readers
        jobs, direct = both_would_run(project)
        assert jobs == expected_jobs(readers), key
        assert direct == set(readers), key
        assert closure(direct) == closure(set(readers)), key
    finally:
        (project / "params.yaml").write_text(original)


@pytest.mark.parametrize("stage", list(STAGES))
def test_changing_a_stages_source_reruns_it_and_what_follows(project, stage):
    entry = project / "src/ssmttm" / STAGES[stage].code[0]
    source = entry if entry.is_file() else sorted(entry.rglob("*.py"))[0]
    original = source.read_bytes()
    try:
        source.write_bytes(original + b"\n# an edit\n")
        # the file may also be a source of other stages (generate runs the LM code of `models/`, fetch_references
        # the fetch machinery): they rerun too, with what follows them
        relative = source.relative_to(project / "src/ssmttm").as_posix()
        readers = [s for s in STAGES if any(relative == e or relative.startswith(e + "/") for e in STAGES[s].code)]
        expected = {name for reader in readers for name in downstream(reader)}
        would_run, direct = both_would_run(project)
        assert would_run == expected_jobs(readers), source
        assert stage in direct and closure(direct) == expected, source
    finally:
        source.write_bytes(original)


@pytest.mark.parametrize("stage", [s for s in STAGES if STAGES[s].upstream])
def test_a_changed_upstream_artifact_reruns_the_stage_and_what_follows(project, stage):
    """Snakemake: the upstream stage's jobs rerun (forced); DVC: an upstream output with new content is recorded."""
    upstream = STAGES[stage].upstream[0]
    expected = downstream(upstream)
    forced = STAGES[upstream].job_rules
    assert snakemake_would_run(project, "--forcerun", *forced) == expected_jobs([upstream])

    out = project / STAGES[upstream].outs[0]
    versioned = [p for p in sorted(out.rglob("*")) if p.is_file() and "dvclive" not in p.parts]
    unhashed = ("timing.json", "timing.jsonl", "host.json")  # .dvcignore: not part of the artifact
    victim = next(p for p in versioned if p.suffix in (".json", ".jsonl", ".tsv") and p.name not in unhashed)
    original = victim.read_bytes()
    try:
        victim.write_bytes(original + b"\n")
        run(dvc("commit", "--force", "--quiet", upstream), project)
        direct = dvc_would_run(project)
        assert direct == {s for s in STAGES if upstream in STAGES[s].upstream}, victim
        assert closure(direct) == set(expected) - {upstream}, victim
    finally:
        victim.write_bytes(original)
        run(dvc("commit", "--force", "--quiet", upstream), project)


def test_editing_the_user_manifest_reruns_the_corpus_and_what_follows(project):
    """The manifest file that params name is an input: editing its bytes (not its path) reruns manifest onwards."""
    manifest = project / "inputs/tiny_manifest.jsonl"
    original = manifest.read_bytes()
    rows = [json.loads(line) for line in original.decode().splitlines()]
    rows[0]["tags"]["style"] = "edited"
    try:
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
        jobs, direct = both_would_run(project)
        assert jobs == expected_jobs(["manifest"])
        assert direct == {"manifest", "caption", "fetch_references", "generate"}  # the stages that declare inputs/
    finally:
        manifest.write_bytes(original)


def test_every_undone_change_left_the_project_up_to_date(project):
    """Runs after the dry-run tests above (file order): the params, sources, artifacts and manifest they edited are
    all back, and neither engine has anything to do."""
    assert_up_to_date(project)


def test_dvc_repro_reruns_a_changed_stage_and_everything_after_it(project):
    """A real `dvc repro` after a params change: exactly the stage and its followers run, then all is up to date;
    restoring the committed params and artifacts (`git checkout`, `dvc checkout`) needs no rerun in either engine."""
    # generate: a stage with followers (evaluate, report) whose rerun is cheap in the tiny project
    set_param(project, "generate.refine_steps", 3)
    output = run(dvc("repro"), project)
    ran = set(re.findall(r"Running stage '(\w+)'", output))
    assert ran == set(downstream("generate")) == {"generate", "evaluate", "report"}, output[-3000:]
    assert_up_to_date(project)
    run(["git", "checkout", "--", "params.yaml", "dvc.lock"], project)
    run(dvc("checkout", "--quiet", "--force"), project)
    assert_up_to_date(project)


def test_restored_artifacts_trigger_nothing(project):
    """`dvc checkout` rewrites files (new mtimes, in any order): neither engine sees a change."""
    for out in ("data/segment", "data/tokenize", "results/train_lm"):
        shutil.rmtree(project / out)
    run(dvc("checkout", "--quiet"), project)
    later = time.time() + 60  # inputs newer than outputs, which an mtime check would take for a change
    for path in (project / "data/segment").rglob("*"):
        os.utime(path, (later, later))
    assert_up_to_date(project)


def test_snakemake_reruns_what_dvc_restored_to_another_recipe(project):
    """Artifacts say which recipe made them: after a params change is built, restoring the committed artifacts
    (`git checkout` + `dvc checkout`) puts the workspace back in step, with no rerun in either engine."""
    set_param(project, "evaluate.bootstrap_resamples", 30)
    run(snakemake(), project)
    assert snakemake_would_run(project) == {}
    run(["git", "checkout", "--", "params.yaml"], project)
    run(dvc("checkout", "--quiet", "--force"), project)
    assert_up_to_date(project)
