"""What the miniature paper run must have produced, beyond "every job exited 0" (scripts/paper_test/run.sh).

    python scripts/paper_test/check.py build/paper-test/snakemake

Checks, from the workspace's own params.yaml (the test profile), that the paper's whole matrix went through:
every named run trained and generated; the single-stage run's `single_stage` clips exist and were evaluated; the
MusicGen-small baseline made clips that were evaluated; the MusicCaps references were fetched with the missing one
listed with its reason and turned into the reference set; the report laid out every comparison of
`report.comparisons` with no system missing. Prints one line per failed check and exits 1 if any failed.
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

    evaluated = json.loads((workspace / "results/evaluate/metrics.json").read_text()).get("sets") or {}
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
