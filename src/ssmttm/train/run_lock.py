"""One trainer per run folder: an exclusive `flock` on `<run folder>/.run.lock`, held for the trainer's lifetime.

Why: on a cluster a trainer can outlive its job (Slurm without cgroups tracks processes by parentage; a job whose
shell was killed leaves the trainer running), and Snakemake's retry then resumes from the same folder while the old
trainer keeps writing checkpoints and history rows into it. The kernel releases an flock when its holder dies,
however it dies, so a lock left by a killed trainer never blocks the next one.

A second trainer waits up to `wait_s` (a job being killed gets Slurm's KillWait, 30 s by default, to exit), then
stops with one line naming the folder and the holder's pid and host, read from the lock file.

The lock file is removed on release, so a finished run folder (a DVC output) holds no trace of it. Removing a
lock file races with a waiter that opened it before the removal; the waiter therefore checks, once it holds the
lock, that the path still names the file it locked, and starts over otherwise. On a file system without flock (some
Lustre mounts), the run goes on unguarded, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ssmttm.errors import UserFacingError

log = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"  # stage.py's run_files() must leave it in place (archiving a run never moves it)
DEFAULT_WAIT_S = 120.0
POLL_S = 0.5
_NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)


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
def run_lock(run_dir: str | Path, wait_s: float = DEFAULT_WAIT_S) -> Iterator[Path]:
    """Hold the run folder's lock for the body; raise UserFacingError if another process holds it after `wait_s`.

    Only the first process of a launch takes it (stage.is_primary_process): data-parallel ranks share the folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_FILE
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            handle = _try_lock(lock_path)
        except OSError as error:
            if error.errno not in _NO_FLOCK:
                raise
            log.warning("%s: this file system has no flock; nothing stops a second trainer here", run_dir)
            yield lock_path
            return
        if handle is not None:
            break
        if time.monotonic() >= deadline:
            raise UserFacingError(
                f"run folder {run_dir} is in use by another trainer ({read_holder(lock_path)}), still after "
                f"{wait_s:.0f} s: stop that process (or wait for it to finish), then run again"
            )
        if not waited:
            log.warning("run folder %s is in use (%s): waiting up to %.0f s", run_dir, read_holder(lock_path), wait_s)
            waited = True
        time.sleep(POLL_S)

    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield lock_path
    finally:
        # Remove while still holding it: a waiter that opened the old file sees it is gone and opens a new one.
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(handle)
