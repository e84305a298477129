"""The run-folder lock between real processes: a second trainer waits, then stops naming the holder; a killed
holder's lock is free at once; a released lock leaves no file behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ssmttm.errors import UserFacingError
from ssmttm.train.run_lock import LOCK_FILE, run_lock

# A stand-in trainer: takes the lock, says so on stdout, then holds it for `hold_s` seconds.
HOLDER = """
import sys, time
from ssmttm.train.run_lock import run_lock
with run_lock(sys.argv[1], wait_s=float(sys.argv[3])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def _start_holder(run_dir, hold_s, wait_s=0.0):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), str(hold_s), str(wait_s)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_trainer_stops_naming_the_folder_and_the_holder(tmp_path):
    holder = _start_holder(tmp_path / "run", hold_s=60)
    try:
        started = time.monotonic()
        with pytest.raises(UserFacingError) as caught, run_lock(tmp_path / "run", wait_s=1.5):
            pytest.fail("the lock was taken twice")
        assert 1.5 <= time.monotonic() - started < 10
        message = str(caught.value)
        assert str(tmp_path / "run") in message
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_frees_the_folder_at_once(tmp_path):
    holder = _start_holder(tmp_path / "run", hold_s=60)
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the stale file stays, the kernel drops the lock
    holder.wait()
    assert (tmp_path / "run" / LOCK_FILE).exists()
    started = time.monotonic()
    with run_lock(tmp_path / "run", wait_s=5) as lock_path:
        assert time.monotonic() - started < 2
        assert lock_path.read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # nothing left in the run folder (a DVC output)


def test_a_waiting_trainer_gets_the_folder_when_the_holder_ends(tmp_path):
    holder = _start_holder(tmp_path / "run", hold_s=1.5)
    waiter = _start_holder(tmp_path / "run", hold_s=0, wait_s=30)  # returns once it holds the lock
    assert holder.stdout.readline().strip() == "released"
    assert waiter.stdout.readline().strip() == "released"
    assert holder.wait() == 0 and waiter.wait() == 0
    assert not (tmp_path / "run" / LOCK_FILE).exists()
