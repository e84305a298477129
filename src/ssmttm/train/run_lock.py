"""One trainer per run folder: an exclusive `flock` on `<run folder>/.run.lock`, held for the trainer's lifetime.

Why: on a cluster a trainer can outlive its job (Slurm without cgroups tracks processes by parentage; a job whose
shell was killed leaves the trainer running), and Snakemake's retry then resumes from the same folder while the old
trainer keeps writing checkpoints and history rows into it. The lock is `ssmttm.locks.exclusive_lock` (the same
helper that guards every stage verb's outputs): the kernel releases it when its holder dies, however it dies, a
second trainer waits up to `wait_s` (a job being killed gets Slurm's KillWait, 30 s by default, to exit), then stops
with one line naming the folder and the holder's pid and host. The lock sits inside the run folder, which outlives
every attempt, and is removed on release, so a finished run folder (a DVC output) holds no trace of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ssmttm.locks import DEFAULT_WAIT_S, exclusive_lock

LOCK_FILE = ".run.lock"  # stage.py's run_files() must leave it in place (archiving a run never moves it)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, wait_s: float = DEFAULT_WAIT_S) -> Iterator[Path]:
    """Hold the run folder's lock for the body; raise UserFacingError if another process holds it after `wait_s`.

    Only the first process of a launch takes it (locks.is_primary_process): data-parallel ranks share the folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    def refusal(holder: str) -> str:
        return (
            f"run folder {run_dir} is in use by another trainer ({holder}), still after {wait_s:.0f} s: stop that "
            "process (or wait for it to finish), then run again"
        )

    with exclusive_lock(run_dir / LOCK_FILE, wait_s, refusal, f"run folder {run_dir}") as lock_path:
        yield lock_path
