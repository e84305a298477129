"""Helpers of scripts/paper_test/run.sh: stage timings from time-stamped logs, and the two engines' outputs compared.

    python scripts/paper_test/summary.py stamp                  # stdin -> stdout, each line prefixed by epoch seconds
    python scripts/paper_test/summary.py snakemake-timings LOG  # wall seconds per rule (summed over its jobs)
    python scripts/paper_test/summary.py dvc-timings LOG        # wall seconds per DVC stage
    python scripts/paper_test/summary.py compare A B            # versioned outputs of two workspaces, byte by byte
    python scripts/paper_test/summary.py copy-repo ROOT DEST    # the files of the next commit: tracked + not ignored

`compare` hashes what DVC versions (every file under data/ and results/) except what is machine or run specific by
design: the fetch download cache (data/cache/), timing.* files, host.json and dvclive/ folders (the same rule as
tests/workflow/project.py's tree_hashes). It exits 1 when a file differs or exists on one side only.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

SNAKEMAKE_RULE = re.compile(r"^(?:local)?rule (\w+):")
SNAKEMAKE_JOBID = re.compile(r"^\s*jobid: (\d+)")
SNAKEMAKE_DONE = re.compile(r"Finished job(?:id)?:? (\d+)")
DVC_STAGE = re.compile(r"Running stage '([^']+)'")


def stamp() -> int:
    for line in sys.stdin:
        sys.stdout.write(f"{time.time():.3f} {line}")
        sys.stdout.flush()
    return 0


def _stamped(path: Path) -> list[tuple[float, str]]:
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        head, _, rest = line.partition(" ")
        try:
            rows.append((float(head), rest))
        except ValueError:
            continue
    return rows


def snakemake_timings(path: Path) -> dict[str, float]:
    """Per rule: the sum over its jobs of (finished - started), from a stamped `snakemake` log."""
    started: dict[str, tuple[str, float]] = {}
    totals: dict[str, float] = {}
    rule, rule_time = None, 0.0
    for when, text in _stamped(path):
        if match := SNAKEMAKE_RULE.match(text.strip()):
            rule, rule_time = match.group(1), when
        elif rule and (match := SNAKEMAKE_JOBID.match(text)):
            started[match.group(1)] = (rule, rule_time)
            rule = None
        elif match := SNAKEMAKE_DONE.search(text):
            job = started.pop(match.group(1), None)
            if job:
                totals[job[0]] = totals.get(job[0], 0.0) + when - job[1]
    return {name: round(seconds, 1) for name, seconds in totals.items()}


def dvc_timings(path: Path) -> dict[str, float]:
    """Per DVC stage: from its "Running stage" line to the next one (or the end of the log)."""
    rows = _stamped(path)
    marks = [(when, m.group(1)) for when, text in rows if (m := DVC_STAGE.search(text))]
    end = rows[-1][0] if rows else 0.0
    return {
        stage: round((marks[i + 1][0] if i + 1 < len(marks) else end) - when, 1)
        for i, (when, stage) in enumerate(marks)
    }


def versioned_hashes(root: Path) -> dict[str, str]:
    out = {}
    for top in ("data", "results"):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or rel.startswith("data/cache/") or path.name in (".gitignore", "host.json"):
                continue
            if "/dvclive/" in rel or path.name.startswith("timing."):
                continue
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def compare(a: Path, b: Path) -> int:
    left, right = versioned_hashes(Path(a)), versioned_hashes(Path(b))
    only_a, only_b = sorted(set(left) - set(right)), sorted(set(right) - set(left))
    differ = sorted(k for k in set(left) & set(right) if left[k] != right[k])
    print(f"compared {len(set(left) | set(right))} versioned files: {len(differ)} differ, {len(only_a)} only in {a}, "
          f"{len(only_b)} only in {b}")  # fmt: skip
    for title, names in (("differ", differ), (f"only in {a}", only_a), (f"only in {b}", only_b)):
        for name in names[:40]:
            print(f"  {title}: {name}")
        if len(names) > 40:
            print(f"  ... and {len(names) - 40} more")
    return 1 if differ or only_a or only_b else 0


def copy_repo(root: Path, dest: Path) -> int:
    """Copy the repository's tracked files and its new files that git does not ignore (what the next commit would
    hold: the engineers' work in progress included) from `root` to `dest`, symlinks as symlinks."""
    import shutil
    import subprocess

    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    count = 0
    for name in sorted(set(filter(None, listing.split("\0")))):
        source, target = root / name, dest / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet in a commit
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, target)
        count += 1
    print(f"copied {count} files of {root} to {dest}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["stamp"]:
        return stamp()
    if len(argv) == 2 and argv[0] in ("snakemake-timings", "dvc-timings"):
        timings = (snakemake_timings if argv[0] == "snakemake-timings" else dvc_timings)(Path(argv[1]))
        print(json.dumps(timings, indent=1))
        return 0
    if len(argv) == 3 and argv[0] == "copy-repo":
        return copy_repo(Path(argv[1]), Path(argv[2]))
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
