"""The DAG as data: what defines each stage, and the recipe hash that tells whether an artifact is up to date.

Both engines follow this one table. `workflow/Snakefile` reads it to decide what to rerun; `dvc.yaml` declares the
same params sections, source files and upstream folders as DVC dependencies (tests/workflow/test_dvc_agreement.py
keeps the two in agreement, tests/workflow/test_invalidation.py checks the behaviour of both).

A stage's *recipe* is a hash of its own params sections, the bytes of its own source files and the recipes of the
stages it reads. Every job writes the recipe it was built with beside its output (`recipe_file`), so an artifact
says how it was made wherever it travels (`dvc pull`, another clone, a `git checkout` of an older run): the workflow
reruns a job exactly when the recorded recipe differs from the one the current params and code give, and every job
downstream of it follows. File modification times play no part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmttm.config import canonical_json, params_value

RECIPE_FILE = "_recipe"  # inside a folder output; a file output gets `<file>.recipe` beside it
CODE_SUFFIXES = (".py", ".yaml", ".txt")


@dataclass(frozen=True)
class Stage:
    # params.yaml sections the stage reads, or dotted keys where it reads a few keys of a section that other stages own
    # (fetch_references reads only the caption set of `generate`); DVC declares the same names
    params: tuple[str, ...]
    code: tuple[str, ...]  # its own source files or folders, relative to the package folder src/ssmttm/
    upstream: tuple[str, ...]  # stages whose outputs it reads
    outs: tuple[str, ...]  # what DVC versions
    rules: tuple[str, ...]  # its Snakemake rules: the job rules, then the aggregate `*_all` rule if any
    target: str  # what the DVC stage asks Snakemake to build
    # params keys (dotted) that name a user's input file (a manifest, a caption import): the file's bytes are part of
    # the recipe, so editing it reruns the stage. DVC sees such files under INPUTS_DIR, a dependency of the stage.
    inputs: tuple[str, ...] = ()

    @property
    def code_paths(self) -> tuple[str, ...]:
        """The source files as DVC names them, relative to the repository root."""
        return tuple(f"{PACKAGE_DIR}/{entry}" for entry in self.code)

    @property
    def job_rules(self) -> tuple[str, ...]:
        return tuple(rule for rule in self.rules if not rule.endswith("_all"))


PACKAGE_DIR = "src/ssmttm"
INPUTS_DIR = "inputs"  # where a user's manifests and caption files live (tracked by git; a DVC dependency)
# Snakemake rules that run once per corpus shard (a `{shard}` wildcard in their outputs; the other job rules run once
# per run or once). Preflight counts jobs with it; tests/workflow/test_dvc_agreement.py checks it against the rules.
SHARDED_RULES = frozenset({"fetch", "select", "segment", "caption", "tokenize"})


# DAG order. `code` lists what can change a stage's output; helpers used by every stage (artifacts, config, cli)
# are not listed, so editing them reruns nothing (their effects are covered by the tests).
STAGES: dict[str, Stage] = {
    "manifest": Stage(
        params=("seed", "corpus"),
        code=(
            "corpus/manifest.py",
            "corpus/user_manifest.py",
            "corpus/demo_corpus.py",
            "corpus/mtg_jamendo.py",
            "corpus/urls.py",
        ),
        upstream=(),
        outs=("data/manifest",),
        rules=("manifest",),
        target="data/manifest",
        inputs=("corpus.manifest_path",),
    ),
    "fetch": Stage(
        params=("fetch", "corpus"),
        code=(
            "corpus/fetch.py",
            "corpus/mtg_jamendo.py",
            "corpus/urls.py",
            "corpus/manifest.py",
            "corpus/user_manifest.py",
        ),
        upstream=("manifest",),
        outs=("data/fetch",),
        rules=("fetch", "fetch_all"),
        target="fetch_all",
    ),
    "select": Stage(
        params=("select",),
        code=("corpus/select.py", "corpus/licences.py", "audio.py"),
        upstream=("fetch",),
        outs=("data/select",),
        rules=("select", "select_all"),
        target="select_all",
    ),
    "segment": Stage(
        params=("seed", "segment"),
        code=("corpus/segment.py", "corpus/vocals.py", "corpus/licences.py", "audio.py"),
        upstream=("select",),
        outs=("data/segment",),
        rules=("segment", "segment_all"),
        target="segment_all",
    ),
    "caption": Stage(
        params=("seed", "caption"),
        code=("corpus/caption.py", "corpus/caption_templates.py", "corpus/caption_model.py"),
        upstream=("segment",),
        outs=("data/caption",),
        rules=("caption", "caption_all"),
        target="caption_all",
        inputs=("caption.import_path",),
    ),
    "codec": Stage(
        params=("seed", "portable_cpu", "codec"),
        code=("codec", "signal.py"),
        upstream=("segment",),
        outs=("data/codec",),
        rules=("codec",),
        target="data/codec",
    ),
    "tokenize": Stage(
        params=("seed", "portable_cpu", "tokenize"),
        code=("tokens/tokenize.py", "tokens/shards.py"),
        upstream=("segment", "caption", "codec"),
        outs=("data/tokenize",),
        rules=("tokenize", "tokenize_manifest", "tokens_all"),
        target="tokens_all",
    ),
    "text_cache": Stage(
        params=("portable_cpu", "text", "refiner_text"),
        code=("text", "train/text_cache.py", "tokens/shards.py"),
        upstream=("tokenize",),
        outs=("data/text_cache",),
        rules=("text_cache",),
        target="data/text_cache",
    ),
    "train_lm": Stage(
        params=("seed", "portable_cpu", "text", "lm", "train_lm", "runs"),
        code=(
            "models",
            "train/checkpoint.py",
            "train/config.py",
            "train/data.py",
            "train/flops.py",
            "train/module.py",
            "train/recorder.py",
            "train/schedule.py",
            "train/stage.py",
            "tokens/loader.py",
            "tokens/shards.py",
        ),
        upstream=("tokenize", "text_cache"),
        outs=("results/train_lm",),
        rules=("train_lm", "lm_all"),
        target="lm_all",
    ),
    "train_refiner": Stage(
        params=("seed", "portable_cpu", "text", "refiner_text", "refiner", "train_refiner"),
        code=(
            "refine",
            "train/checkpoint.py",
            "train/recorder.py",
            "train/stage.py",
            "train/text_cache.py",
            "tokens/shards.py",
        ),
        upstream=("tokenize", "text_cache"),
        outs=("results/train_refiner",),
        rules=("train_refiner",),
        target="results/train_refiner/metrics.json",
    ),
    "fetch_references": Stage(
        # the caption set of `generate` (not its sampling settings) and MusicCaps' URL template
        params=("fetch", "corpus.musiccaps", "generate.captions", "generate.captions_path", "generate.max_captions"),
        code=(
            "generate/fetch_references.py",
            "corpus/fetch.py",
            "corpus/urls.py",
            "corpus/manifest.py",
            "corpus/user_manifest.py",
            "generate/captions.py",
            "audio.py",
        ),
        upstream=(),
        outs=("data/fetch_references",),
        rules=("fetch_references",),
        target="data/fetch_references",
        inputs=("generate.captions_path",),
    ),
    "generate": Stage(
        params=("seed", "portable_cpu", "generate", "runs", "baselines"),
        code=("generate", "refine/model.py", "refine/diffusion.py", "refine/normalise.py", "refine/unet.py", "models"),
        upstream=("segment", "codec", "tokenize", "fetch_references", "train_lm", "train_refiner"),
        outs=("results/generate",),
        rules=("generate", "generate_baseline", "generate_reference", "generate_all"),
        target="generate_all",
        inputs=("generate.captions_path",),  # the evaluation captions, when a file
    ),
    "evaluate": Stage(
        params=("seed", "evaluate"),
        code=("evaluate", "signal.py"),
        upstream=("generate",),
        outs=("results/evaluate",),
        rules=("evaluate",),
        target="results/evaluate",
    ),
    "lm_plot": Stage(
        params=(),
        code=("train/plots.py",),
        upstream=("train_lm",),
        outs=("results/lm_plot",),
        rules=("lm_plot",),
        target="results/lm_plot",
    ),
    "report": Stage(
        params=("seed", "report", "lm", "train_lm", "runs", "baselines"),
        code=(
            "report",
            "evaluate/clipsets.py",
            "evaluate/cards.py",
            "evaluate/features.py",
            "signal.py",
            "train/plots.py",
        ),
        upstream=("codec", "train_lm", "generate", "evaluate", "lm_plot"),
        outs=("results/report",),
        rules=("report",),
        target="results/report",
    ),
}

# The section of named experiments: `runs.<name>` = a backbone plus its own overrides of `lm` and `train_lm`
# (`runs.prefix_simba_small: {backbone: prefix_simba, lm: {n_layers: 6}}`). A run is known by its name everywhere
# (results/train_lm/<run>/, results/generate/<run>/, evaluate's sets, the report); its recipe holds only its own
# entry, resolved into `lm` and `train_lm`, so adding, removing or changing one run rebuilds only its branch.
RUNS = "runs"
# Reference systems generated from public weights (`baselines.musicgen_small: {kind: musicgen, ...}`): generate runs
# of their own, beside the LM runs, scored by the same evaluate.
BASELINES = "baselines"
# Sections that name runs rather than define a stage's settings: a per-run recipe holds only its own entry.
RUN_SECTIONS = (RUNS, BASELINES)

# The generate stage's LM-independent job (references, codec floor, the refiner on the references' codebook 1).
REFERENCE_RUN = "reference"
# What one generate run reads besides its own LM: the fetched references are the reference job's alone; a baseline
# (public weights) reads only the token shards, for the test split's captions.
REFERENCE_ONLY_UPSTREAM = ("fetch_references",)
BASELINE_UPSTREAM = ("tokenize",)


def declares(stage: str, key: str) -> bool:
    """Whether `stage` reads the params key `key` (dotted): its whole section, or that key or one above or below it."""
    return any(key == name or key.startswith(name + ".") or name.startswith(key + ".") for name in STAGES[stage].params)


def run_names(params: Mapping[str, Any]) -> list[str]:
    """The named LM runs the workflow trains, in the order of `runs`."""
    return list(params.get(RUNS) or {})


def baseline_names(params: Mapping[str, Any]) -> list[str]:
    """The reference systems generated from public weights, in the order of `baselines`."""
    return list(params.get(BASELINES) or {})


def runs(stage: str, params: Mapping[str, Any]) -> list[str] | None:
    """The runs of a stage made of one job per run (train_lm: one per named run; generate: each run, each baseline
    and the references); None for a stage that is one whole."""
    if stage == "train_lm":
        return run_names(params)
    if stage == "generate":
        return [*run_names(params), *baseline_names(params), REFERENCE_RUN]
    return None


def run_sections(params: Mapping[str, Any], run: str) -> dict[str, Any]:
    """The sections that differ between runs, resolved for the named run `run`: `lm` (the shared keys, the run's
    `lm` overrides, its `backbone`) and `train_lm` (the shared keys and the run's `train_lm` overrides). The recipe
    of a train_lm run and the configs `ssmttm train-lm --run` builds both come from here."""
    entries = params.get(RUNS) or {}
    if run not in entries:
        known = ", ".join(entries) or "none"
        raise KeyError(f"no run named {run!r} in params `runs` (runs: {known})")
    entry = entries[run] or {}
    return {
        "lm": {**(params.get("lm") or {}), **(entry.get("lm") or {}), "backbone": entry["backbone"]},
        "train_lm": {**(params.get("train_lm") or {}), **(entry.get("train_lm") or {})},
    }


def downstream(stage: str) -> list[str]:
    """`stage` and every stage that reads its outputs, directly or not, in DAG order."""
    reached = {stage}
    for name, spec in STAGES.items():
        if reached & set(spec.upstream):
            reached.add(name)
    return [name for name in STAGES if name in reached]


def _code_files(root: Path, entry: str) -> list[Path]:
    path = root / entry
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: source listed for a stage in ssmttm.pipeline.STAGES does not exist")
    return sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
    )


def package_source(repo_root: str | Path) -> Path:
    """The source tree whose bytes recipes hash: the repository's own src/ssmttm, else the installed package."""
    local = Path(repo_root) / PACKAGE_DIR
    return local if local.is_dir() else Path(__file__).parent


def code_digest(root: str | Path, entries: tuple[str, ...]) -> str:
    """sha256 over the names and bytes of a stage's source files (`entries` relative to the package folder)."""
    root = Path(root)
    digest = hashlib.sha256()
    for entry in entries:
        for path in _code_files(root, entry):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class Recipes:
    """Recipe hashes of every stage for one params dict and one source tree (memoised: the DAG asks often)."""

    def __init__(self, params: Mapping[str, Any], package_root: str | Path, inputs_root: str | Path = "."):
        self.params = params
        self.root = Path(package_root)
        self.inputs_root = Path(inputs_root)  # what relative input paths are relative to: the repository
        self._memo: dict[tuple[str, str | None], str] = {}

    def sections(self, stage: str, run: str | None = None) -> dict[str, Any]:
        """The params sections in the recipe of `stage` (of one of its runs): a named run holds its own resolved
        `lm` and `train_lm` (run_sections) and no `runs` entry of another run; a baseline holds only its own
        `baselines` entry; the references hold neither."""
        chosen = {name: params_value(self.params, name) for name in STAGES[stage].params}
        if run is None:
            return chosen
        for name in RUN_SECTIONS:
            chosen.pop(name, None)
        if run in run_names(self.params):
            chosen.update({name: s for name, s in run_sections(self.params, run).items() if name in chosen})
        elif run in baseline_names(self.params) and BASELINES in STAGES[stage].params:
            chosen[BASELINES] = {run: self.params[BASELINES][run]}
        return chosen

    def upstream_of(self, stage: str, run: str | None) -> tuple[str, ...]:
        """The upstream stages one run of `stage` reads: a generate run of an LM reads no fetched references, a
        baseline reads only the token shards (the test split's captions), the references read every input but an LM."""
        upstream = STAGES[stage].upstream
        if stage != "generate" or run is None or run == REFERENCE_RUN:
            return upstream
        if run in baseline_names(self.params):
            return tuple(name for name in upstream if name in BASELINE_UPSTREAM)
        return tuple(name for name in upstream if name not in REFERENCE_ONLY_UPSTREAM)

    def __call__(self, stage: str, run: str | None = None) -> str:
        """The recipe of `stage`: of one run for a per-run stage (train_lm, generate); of all runs for what reads one.

        A run reads only its own run of a per-run upstream stage (generate of prefix_simba reads train_lm of
        prefix_simba; the references and the baselines read no LM), so adding or changing a run rebuilds only its
        branch and the joint stages after it."""
        key = (stage, run)
        own_runs = runs(stage, self.params)
        if own_runs is not None and run not in own_runs:
            raise ValueError(f"the recipe of {stage} is per run: pass one of {own_runs} as run=")
        if key not in self._memo:
            upstream: dict[str, Any] = {}
            for name in self.upstream_of(stage, run):
                upstream_runs = runs(name, self.params)
                if upstream_runs is None:
                    upstream[name] = self(name)
                elif own_runs is None:
                    upstream[name] = {each: self(name, each) for each in upstream_runs}
                elif run in upstream_runs:
                    upstream[name] = self(name, run)
            record = {
                "stage": stage,
                "params": self.sections(stage, run),
                "code": code_digest(self.root, STAGES[stage].code),
                "upstream": upstream,
            }
            if STAGES[stage].inputs:
                record["inputs"] = {key: self.input_digest(key) for key in STAGES[stage].inputs}
            self._memo[key] = hashlib.sha256(canonical_json(record).encode()).hexdigest()
        return self._memo[key]

    def input_digest(self, dotted: str) -> str | None:
        """sha256 of the file a params key names (None when unset; "missing" lets the stage report the error)."""
        value = params_value(self.params, dotted)
        if not value:
            return None
        path = Path(value) if Path(value).is_absolute() else self.inputs_root / value
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def recipe_file(output: str | Path, is_dir: bool) -> Path:
    output = Path(output)
    return output / RECIPE_FILE if is_dir else output.with_name(output.name + ".recipe")


def recorded_recipe(output: str | Path, is_dir: bool) -> str | None:
    """The recipe written beside an existing output; "" when the output exists without one; None when absent."""
    output = Path(output)
    if not output.exists():
        return None
    path = recipe_file(output, is_dir)
    return path.read_text().strip() if path.is_file() else ""
