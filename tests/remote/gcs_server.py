"""Helpers for tests/remote/test_gcs_remote.py: the README's GCS environment (requirements/gcs-remote.txt) in a
cached virtual environment, and a GCS-compatible server (gcp-storage-emulator) on 127.0.0.1.

Why a second environment: dvc-gs 3.1.0's gcsfs needs protobuf>=4.21 (google-cloud-storage-control), the `dac` extra
protobuf<3.20, so DVC's GCS plugin cannot live in the project's .venv. The environment is built once per set of pins
in the requirements file (the folder name is their hash) under .venv/gcs-remote/ and reused; a failed install
(offline, no index) skips the tests with pip's last line.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.remote.remote_project import SERVER_START_TIMEOUT_S, free_port, stop_server, tool_env

EMULATOR_PIN = "gcp-storage-emulator==2026.7.19"  # test-only: the server; not part of the user's environment
INSTALL_TIMEOUT_S = 600  # about 70 s on this machine from the package index
GCS_BUCKET = "ssmttm-store"


def gcs_venv(repo_root: Path) -> Path:
    """The cached environment's folder; built on first use (under a lock: concurrent sessions wait, then reuse it)."""
    requirements = repo_root / "requirements/gcs-remote.txt"
    pins = [line for line in requirements.read_text().splitlines() if line.strip() and not line.startswith("#")]
    key = hashlib.sha256("\n".join([*pins, EMULATOR_PIN, sys.version]).encode()).hexdigest()[:12]
    folder = repo_root / ".venv/gcs-remote" / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "installed").is_file():
            _install(folder, requirements)
    return folder


def _install(folder: Path, requirements: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # a half-built one from an interrupted run
    try:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=120)
        install = subprocess.run(
            [str(folder / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + ["-r", str(requirements), EMULATOR_PIN],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"installing requirements/gcs-remote.txt took over {exc.timeout} s (slow or no package index)")
    if install.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        last = (install.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"cannot install requirements/gcs-remote.txt and {EMULATOR_PIN} (offline?): {last}")
    (folder / "installed").write_text(f"{requirements.name} + {EMULATOR_PIN}\n")


def gcs_env(venv: Path) -> dict[str, str]:
    """The README's GCS environment first on PATH, no Google credentials from the caller's shell."""
    env = dict(tool_env(), PATH=f"{venv / 'bin'}{os.pathsep}{tool_env()['PATH']}")
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "CLOUDSDK_CONFIG"):
        env.pop(name, None)  # the remote's `endpointurl` alone says where the store is
    return env


@pytest.fixture(scope="module")
def gcs_server(repo_root, tmp_path_factory):
    """(environment folder, endpoint URL): gcp-storage-emulator in memory on a free loopback port, with the bucket."""
    venv = gcs_venv(repo_root)
    port = free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    command = [str(venv / "bin/gcp-storage-emulator"), "start", "-H", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [*command, "--default-bucket", GCS_BUCKET, "--in-memory"], stdout=handle, stderr=handle
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while "All services started" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gcp-storage-emulator did not start on {endpoint}:\n{log.read_text()}")
            time.sleep(0.2)
        yield venv, endpoint
    finally:
        stop_server(process)


def read_object(endpoint: str, key: str) -> bytes | None:
    """An object's bytes through the GCS JSON API (None when there is none)."""
    url = f"{endpoint}/storage/v1/b/{GCS_BUCKET}/o/{urllib.parse.quote(key, safe='')}?alt=media"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def write_object(endpoint: str, key: str, data: bytes) -> None:
    """Replace an object in place (a simple media upload, as any client may do)."""
    query = urllib.parse.urlencode({"uploadType": "media", "name": key})
    request = urllib.request.Request(
        f"{endpoint}/upload/storage/v1/b/{GCS_BUCKET}/o?{query}",
        data=data,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
