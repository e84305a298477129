"""What the miniature paper run must have produced, beyond "every job exited 0" (scripts/paper_test/run.sh).

    python scripts/paper_test/check.py build/paper-test/snakemake

Checks, from the workspace's own params.yaml (the test profile), that the paper's whole matrix went through:
every named run trained and generated; the single-stage run's `single_stage` clips exist and were evaluated; the
MusicGen-small baseline made clips that were evaluated; the MusicCaps references were fetched with the missing one
listed with its reason and turned into the reference set; the report laid out every comparison of
`report.comparisons` with no system missing; every output derived from the stand-in weights carries the stand-in
label (ssmttm.stand_ins: provenance, token manifest, evaluate's metrics and cards, the report's banner), and together
the labels name every stand-in the run loaded. Prints one line per failed check and exits 1 if any failed.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import yaml


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def check(workspace: Path) -> list[str]:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    problems: list[str] = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    evaluation = json.loads((workspace / "results/evaluate/metrics.json").read_text())
    evaluated = evaluation.get("sets") or {}
    names = set(evaluated) if isinstance(evaluated, dict) else {s.get("name") for s in evaluated}

    for run, entry in params["runs"].items():
        expect((workspace / f"results/train_lm/{run}/metrics.json").is_file(), f"run {run}: not trained")
        clips = sorted((workspace / f"results/generate/{run}").glob("step-*/*/manifest.jsonl"))
        expect(bool(clips), f"run {run}: no generated clips")
        variant = "single_stage" if (entry.get("lm") or {}).get("n_codebooks", 1) > 1 else "two_stage"
        made = [p for p in clips if p.parent.name == variant and any(r.get("status") != "failed" for r in rows(p))]
        expect(bool(made), f"run {run}: no {variant} clips")
        expect(
            any(n.startswith(f"{run}/") and n.endswith(f"/{variant}") for n in names), f"{run}: {variant} not evaluated"
        )

    for name in params.get("baselines") or {}:
        made = rows(workspace / f"results/generate/{name}/pretrained/manifest.jsonl")
        expect(bool(made), f"baseline {name}: no clips")
        expect(f"{name}/pretrained" in names, f"baseline {name}: not evaluated")

    fetched = workspace / "data/fetch_references"
    served = rows(fetched / "clips.jsonl")
    with open(fetched / "failures.tsv", newline="") as handle:
        failed = list(csv.DictReader(handle, delimiter="\t"))
    expect(len(served) >= 1, "fetch_references: no clip fetched")
    expect(len(failed) == 1 and all(row.get("reason") for row in failed), f"fetch_references: failures {failed}")
    originals = rows(workspace / "results/generate/reference/original/manifest.jsonl")
    expect(len([r for r in originals if r.get("status") != "failed"]) == len(served), "references: not every clip")

    comparisons = json.loads((workspace / "results/report/comparisons.json").read_text())
    titles = [c["title"] for c in comparisons]
    wanted = [c["title"] for c in params["report"]["comparisons"]]
    expect(titles == wanted, f"report: comparisons {titles}, params name {wanted}")
    for comparison in comparisons:
        missing = [s["system"] for s in comparison["systems"] if s.get("not_run")]
        expect(not missing and not comparison.get("problem"), f"report {comparison['title']!r}: not run {missing}")
    expect((workspace / "results/report/index.html").is_file(), "report: no index.html")
    return problems + embedding_problems(evaluation) + stand_in_problems(workspace)


# Evaluation networks with a stand-in (scripts/standins/make_all.py) and their metrics: each must be loaded and its
# metrics computed for every generated set. OpenL3 has none (make_all.NOT_BUILT says why): "not computed" there.
EMBEDDING_METRICS = {
    "vggish": ("fd_vggish",),
    "passt": ("kl_passt",),
    "passt_10s": ("kl_passt_sam",),
    "clap": ("clap_score", "fad_clap"),
    "clap_fusion": ("clap_score_sam",),
}


def embedding_problems(evaluation: dict) -> list[str]:
    """What evaluate's metrics.json (`evaluation`) lacks of the metrics of EMBEDDING_METRICS."""
    models, evaluated = evaluation.get("models") or {}, evaluation.get("sets") or {}
    problems = []
    for model, metrics in EMBEDDING_METRICS.items():
        loaded = models.get(model)
        if isinstance(loaded, str) and loaded.startswith("not computed"):
            problems.append(f"evaluate: {model} stand-in not loaded ({loaded[:160]})")
            continue
        for name, entry in evaluated.items():
            if entry.get("role") != "generated":  # the reconstructions are the codec's, not the matrix's
                continue
            for metric in metrics:
                status = (entry.get("metrics") or {}).get(metric) or {}
                if status.get("status") == "not computed" or "value" not in status:
                    problems.append(f"evaluate {name}: {metric} not computed ({str(status.get('reason'))[:120]})")
    return problems


# The stages before segment read no model; from segment on, every output is derived from a stand-in (Demucs first).
UPSTREAM_OF_EVERY_MODEL = ("data/manifest", "data/fetch", "data/select", "data/fetch_references")
# Recipes; per-checkpoint files (their run's provenance carries the label); runs archived by an earlier run of the
# workspace under another run key (train_lm's previous/: not made by this run; a fresh workspace has none).
NOT_THIS_RUN = ("_recipe", "step-", "previous/")
# The outputs that hold the numbers a reader takes away: labelled themselves, not only in provenance.
NUMBERS_FILES = ("results/evaluate/metrics.json", "results/report/metrics.json")
# What each stand-in of scripts/standins/make_all.py is called in the labels (ssmttm.stand_ins), as a name prefix.
STAND_IN_PARTS = (
    "segment.vocal_removal",  # htdemucs
    "caption.model",  # Qwen2-Audio
    "text encoder",  # flan-t5-base / -large
    "codec.pretrained",  # DAC 44 kHz, 9 codebooks
    "baselines.",  # MusicGen-small
    "evaluate network",  # VGGish
)


def stand_in_problems(workspace: Path) -> list[str]:
    """Each output derived from a stand-in that lacks the label, and each stand-in the labels do not name."""
    from ssmttm.stand_ins import NOT_A_RESULT

    problems: list[str] = []
    labelled = [workspace / f for f in ("data/tokenize/_manifest.json", *NUMBERS_FILES)]
    for top in ("data", "results"):
        labelled += (workspace / top).rglob("provenance.json")
    labelled += (workspace / "results/evaluate/cards").glob("*.json")
    named: set[str] = set()
    for path in sorted(set(labelled)):
        relative = path.relative_to(workspace).as_posix()
        if relative.startswith(UPSTREAM_OF_EVERY_MODEL) or any(f"/{p}" in relative for p in NOT_THIS_RUN):
            continue
        record = json.loads(path.read_text()) if path.is_file() else {}
        if record.get("stand_in") is not True or not record.get("stand_ins"):
            problems.append(f"{relative}: derived from stand-in weights but has no stand_in label")
        named.update(record.get("stand_ins") or {})
    for card in sorted((workspace / "results/evaluate/cards").glob("*.md")):
        if NOT_A_RESULT not in card.read_text():
            problems.append(f"{card.relative_to(workspace)}: metric card without '{NOT_A_RESULT}'")
    page = workspace / "results/report/index.html"
    if page.is_file() and 'id="stand-in-banner"' not in page.read_text():
        problems.append("results/report/index.html: no stand-in banner")
    for part in STAND_IN_PARTS:
        if not any(name.startswith(part) for name in named):
            problems.append(f"no output names the stand-in '{part}...' in its stand_ins")
    return problems


def main() -> int:
    workspace = Path(sys.argv[1])
    problems = check(workspace)
    for problem in problems:
        print(f"paper-test check: {problem}", file=sys.stderr)
    print(f"paper-test check of {workspace}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
