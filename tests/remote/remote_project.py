"""Helpers for tests/remote: a tiny git + DVC project with the repository's own `.dvc/config`, and an S3-compatible
server (moto) on 127.0.0.1.

The project has two stages, as the real pipeline's folders look: `tokenize` writes `data/tokenize/` (three shards) and
`train_lm` writes `results/train_lm/` (a run folder with `x/final/model.safetensors`) and `results/summary.json`, so
the remote holds `.dir` manifests, files inside folders and a file output.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=ssmttm-test", "-c", "user.email=test@ssmttm.invalid", "-c", "init.defaultBranch=main"]
COMMAND_TIMEOUT_S = 120  # one dvc/git command; a push to a dead server retries for minutes (ENGINES.md)
SERVER_START_TIMEOUT_S = 30
BUCKET = "ssmttm-store"
DUMMY_KEY = "testing"  # moto accepts any credentials

MAKE_OUTPUTS = '''"""Deterministic stand-ins for the pipeline's token shards and a trained run."""
import json, random, sys
from pathlib import Path

stage = sys.argv[1]
rng = random.Random(stage)
if stage == "tokenize":
    for index in range(3):
        path = Path(f"data/tokenize/shard-{index:03d}.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(20_000 + index))
else:
    tokens = b"".join(p.read_bytes() for p in sorted(Path("data/tokenize").glob("*.parquet")))
    run = Path("results/train_lm/x")
    (run / "final").mkdir(parents=True, exist_ok=True)
    (run / "final/model.safetensors").write_bytes(rng.randbytes(30_000) + tokens[:100])
    (run / "history.jsonl").write_text(json.dumps({"step": 6, "loss": 1.5}) + "\\n")
    Path("results/summary.json").write_text(json.dumps({"shards_bytes": len(tokens)}))
'''

DVC_YAML = """stages:
  tokenize:
    cmd: {python} make_outputs.py tokenize
    deps: [make_outputs.py]
    outs: [data/tokenize]
  train_lm:
    cmd: {python} make_outputs.py train_lm
    deps: [make_outputs.py, data/tokenize]
    outs: [results/train_lm, results/summary.json]
"""

MODEL = "results/train_lm/x/final/model.safetensors"
SHARD = "data/tokenize/shard-001.parquet"


def tool_env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)  # each test says how it reaches the store
    return env


def run(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env or tool_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(*args: str) -> list[str]:
    return [str(BIN / "dvc"), *args]


def ssmttm(*args: str) -> list[str]:
    return [str(BIN / "ssmttm"), *args]


def make_project(repo_root: Path, folder: Path) -> Path:
    """Clone A: the tiny project run with `dvc repro` and committed, with the repository's `.dvc/config`."""
    folder.mkdir(parents=True)
    (folder / "make_outputs.py").write_text(MAKE_OUTPUTS)
    (folder / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    run([*GIT, "init", "-q"], folder)
    run(dvc("init", "-q"), folder)
    shutil.copy(repo_root / ".dvc/config", folder / ".dvc/config")  # the project's default remote settings
    run(dvc("repro", "-q"), folder)
    commit(folder, "tiny run")
    return folder


def commit(folder: Path, message: str) -> None:
    run([*GIT, "add", "-A"], folder)
    run([*GIT, "commit", "-qm", message], folder)


def clone(source: Path, target: Path) -> Path:
    run([*GIT, "clone", "-q", str(source), str(target)], source.parent)
    return target


def versioned_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for top in ("data", "results")
        for path in sorted((root / top).rglob("*"))
        if path.is_file() and path.name != ".gitignore"
    }


def object_key(prefix: str, md5: str) -> str:
    return f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """`moto_server` on a free loopback port for this module; killed at teardown whatever happened."""
    pytest.importorskip("dvc_s3", reason="the `s3` extra (dvc-s3) is not installed")
    pytest.importorskip("boto3", reason="the `dev` extra (moto[server]) is not installed")
    server = BIN / "moto_server"
    if not server.exists():
        pytest.skip("moto_server is not installed (the `dev` extra's moto[server])")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as handle:
        process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=handle, stderr=handle)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}:\n{log.read_text()}") from None
                time.sleep(0.2)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen) -> None:
    """Stop a test server: SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
        region_name="us-east-1",
    )


def add_s3_remote(project: Path, endpoint: str, prefix: str, name: str = "store") -> None:
    """The README's recipe: a default S3 remote with verify in `.dvc/config`; endpoint, keys in `.dvc/config.local`."""
    run(dvc("remote", "add", "-d", name, f"s3://{BUCKET}/{prefix}"), project)
    run(dvc("remote", "modify", name, "verify", "true"), project)
    configure_s3_credentials(project, endpoint, name)


def configure_s3_credentials(project: Path, endpoint: str, name: str = "store") -> None:
    """What each clone does once: `.dvc/config.local` is git-ignored, so credentials never reach the repository."""
    run(dvc("remote", "modify", "--local", name, "endpointurl", endpoint), project)
    run(dvc("remote", "modify", "--local", name, "access_key_id", DUMMY_KEY), project)
    run(dvc("remote", "modify", "--local", name, "secret_access_key", DUMMY_KEY), project)
