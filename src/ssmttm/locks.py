"""Exclusive `flock`s between processes: one writer per stage output, one trainer per run folder.

Why: Snakemake's directory lock (`.snakemake/locks`) guards one Snakemake against another, but a stage run by hand
(`ssmttm segment ...`), a run with `--nolock`, a job that outlives its Slurm allocation, or `dvc repro` beside
`snakemake` (different engines, whose lock checks cover only the jobs each plans) can start a second writer of the
same output. Every stage verb therefore holds an exclusive flock on each of its outputs (`--out`) for its whole run
(`stage_output_locks`, taken once in `ssmttm.cli.main`), and a trainer holds one on its run folder
(`ssmttm.train.run_lock`).

Wait, then refuse: a second writer waits up to `--lock-wait` seconds (default 120: a job being killed gets Slurm's
KillWait, 30 s by default, to exit), then stops with one line naming the output and the holder's pid and host, exit
code 1. If the first writer finishes within the wait, the second runs after it and writes the same bytes (stages are
deterministic), so nothing is ever written by two processes at once. The kernel releases an flock when its holder
dies, however it dies, so a lock of a killed process never blocks the next one.

Where: `<parent>/.<name>.ssmttm-lock` beside the output (the output itself is replaced whole by an atomic rename, so
a lock inside it would be renamed away with it); a trainer's lock is inside its run folder (`.run.lock`), which
outlives every attempt. The lock file is removed on release, so a finished output's folder holds no trace of it (and
.dvcignore names the pattern for a lock seen while another run holds it). Removing a lock file races with a waiter
that opened it before the removal; the waiter therefore checks, once it holds the lock, that the path still names
the file it locked, and starts over otherwise. On a file system without flock (some Lustre mounts), the run goes on
unguarded, with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

OUTPUT_LOCK_SUFFIX = ".ssmttm-lock"
DEFAULT_WAIT_S = 120.0
POLL_S = 0.5
_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)
# Set in the extra processes of a multi-process launch (Lightning's ddp children, torchrun, srun tasks).
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_primary_process() -> bool:
    """False in the extra processes of a multi-process launch: they share the first process's outputs and locks.

    Before a Trainer exists, only the environment tells which process this is.
    """
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in _RANK_VARIABLES)


def read_holder(lock_path: Path) -> str:
    """'pid P on host H' as the holder wrote it, or a plain description when it wrote nothing (yet)."""
    try:
        text = lock_path.read_text().strip()
    except OSError:
        text = ""
    return text or "a process that has not written its pid yet"


def _same_file(handle: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _try_lock(lock_path: Path) -> int | None:
    """A descriptor holding the lock on the file now at `lock_path`, or None if another process holds it."""
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    except OSError:
        os.close(handle)
        raise
    if not _same_file(handle, lock_path):  # released and removed between our open and our flock: try again
        os.close(handle)
        return None
    return handle


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, wait_s: float, refusal: Callable[[str], str], what: str) -> Iterator[Path]:
    """Hold an exclusive flock on `lock_path` for the body, waiting up to `wait_s` seconds for another holder.

    `refusal(holder)` is the one-line message of the UserFacingError raised when the wait runs out; `what` names the
    guarded thing in the log line said when the wait starts.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            handle = _try_lock(lock_path)
        except OSError as error:
            if error.errno not in _NO_FLOCK:
                raise
            log.warning("%s: this file system has no flock; nothing stops a second writer here", what)
            yield lock_path
            return
        if handle is not None:
            break
        if time.monotonic() >= deadline:
            raise UserFacingError(refusal(read_holder(lock_path)))
        if not waited:
            log.warning("%s is in use (%s): waiting up to %.0f s", what, read_holder(lock_path), wait_s)
            waited = True
        time.sleep(POLL_S)
    if waited:
        log.warning("%s is free now: going on", what)

    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield lock_path
    finally:
        # Remove while still holding it: a waiter that opened the old file sees it is gone and opens a new one.
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(handle)


def output_lock_path(output: str | Path) -> Path:
    """`<parent>/.<name>.ssmttm-lock`: beside the output, which an atomic rename replaces whole."""
    output = Path(output)
    return output.parent / f".{output.name}{OUTPUT_LOCK_SUFFIX}"


@contextlib.contextmanager
def output_locks(outputs: Iterable[str | Path], wait_s: float = DEFAULT_WAIT_S) -> Iterator[list[Path]]:
    """Hold the lock of every output for the body. Taken in sorted order, so two processes locking overlapping sets
    never wait for each other in a circle."""
    paths = sorted({Path(os.path.normpath(os.path.abspath(out))) for out in outputs})
    with contextlib.ExitStack() as stack:
        for path in paths:
            shown = os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)

            def refusal(holder: str, shown: str = shown) -> str:
                return (
                    f"{shown} is being written by another run ({holder}), still after {wait_s:.0f} s: two runs in one "
                    "workspace (e.g. snakemake and dvc repro) must not write the same stage; let the other finish "
                    "(or stop it), then rerun the same command"
                )

            stack.enter_context(exclusive_lock(output_lock_path(path), wait_s, refusal, shown))
        yield paths


# ----------------------------------------------------------------------------------------------- the CLI's side


def add_lock_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="if another run is writing this stage's output, wait this long for it, then stop (default: "
        f"{DEFAULT_WAIT_S:.0f}; 0 stops at once)",
    )


def stage_outputs(args: argparse.Namespace) -> list[str]:
    """What a stage verb writes, from its arguments: `--out` (every stage verb that writes has it)."""
    out = getattr(args, "out", None)
    return [out] if isinstance(out, str | os.PathLike) else []


def stage_output_locks(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The locks of a stage verb's outputs; none in the extra processes of a multi-process launch (they write
    under the first process's lock)."""
    outputs = stage_outputs(args)
    if not outputs or not is_primary_process():
        return contextlib.nullcontext([])
    wait_s = getattr(args, "lock_wait", DEFAULT_WAIT_S)
    if wait_s is None or wait_s != wait_s or wait_s < 0:  # NaN or negative: argparse takes any float
        raise UserFacingError(f"--lock-wait {wait_s}: give a number of seconds, 0 or more")
    return output_locks(outputs, min(wait_s, 1e9))
