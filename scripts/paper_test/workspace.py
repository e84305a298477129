"""The paper test's scratch pieces: the stand-ins, the local server, a workspace. scripts/paper_test/run.sh (`make
paper-test`) builds its two workspaces with this module's command line; tests/slurm and bench/bench_scaling.py call it
from Python. The layout:

    SCRATCH/standins/   scripts/standins/make_all.py's output, with env.sh (the loaders' environment)
    SCRATCH/served/     the tiny MTG-Jamendo and MusicCaps files (scripts/paper_test/serve.py), served on 127.0.0.1
    WORKSPACE/          the repository's files, params.yaml = configs/paper-test.yaml, inputs/paper-test/ copied
                        from served/, models/eval -> SCRATCH/standins/models/eval

    python scripts/paper_test/workspace.py make WORKSPACE --served SCRATCH/served --standins SCRATCH/standins [--dvc]
(--dvc: also a fresh git repository of the workspace, committed, for `dvc repro`)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.paper_test import corpus, make_profile, summary  # noqa: E402

PROFILE = REPO_ROOT / "configs/paper-test.yaml"
SERVER_START_S = 600  # the server synthesises the corpus before it serves (about a minute; more under load)
GIT = ["git", "-c", "user.name=paper-test", "-c", "user.email=paper-test@localhost", "-c", "init.defaultBranch=main"]


def build_standins(scratch: Path) -> Path:
    """SCRATCH/standins (rebuilt: the builder is deterministic and replaces each stand-in whole)."""
    out = Path(scratch) / "standins"
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts/standins/make_all.py"), "--out", str(out)], check=True)
    return out


def standin_env(standins: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with env.sh's exports (HF_HUB_CACHE, TORCH_HOME, HOME, offline flags), the venv's
    bin first on PATH, and run.sh's other settings."""
    env = dict(os.environ if base is None else base)
    for line in (Path(standins) / "env.sh").read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0")
    return env


@contextlib.contextmanager
def served(scratch: Path, scale: int = 1, port: int | None = None) -> Iterator[Path]:
    """Synthesise SCRATCH/served (the corpus `scale` times its size, scripts/paper_test/corpus.py) and serve it on
    `port` (default: the profile's) while the block runs; the server is stopped on exit, whatever happens."""
    root = Path(scratch) / "served"
    log_path = Path(scratch) / "serve.log"
    port = port or make_profile.server_port()
    command = [sys.executable, str(REPO_ROOT / "scripts/paper_test/serve.py"), "--port", str(port), "--root", str(root)]
    with open(log_path, "w") as log:
        server = subprocess.Popen([*command, "--scale", str(scale)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not any(line.startswith("serving") for line in log_path.read_text().splitlines()):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the paper test server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield root
    finally:
        server.terminate()
        server.wait(60)


def make_workspace(workspace: Path, served_root: Path, standins: Path, port: int | None = None) -> Path:
    """A paper test workspace, as run.sh's make_workspace makes it; `port`: the server's, when not the profile's
    (the URLs of params.yaml are rewritten to it, so that two servers can run side by side)."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):
        summary.copy_repo(REPO_ROOT, workspace)
    profile_port = make_profile.server_port()
    text = PROFILE.read_text()
    if port and port != profile_port:
        text = text.replace(f"//127.0.0.1:{profile_port}/", f"//127.0.0.1:{port}/")
    (workspace / "params.yaml").write_text(text)
    inputs = workspace / "inputs/paper-test"
    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(served_root) / corpus.MUSICCAPS_DIR / corpus.MUSICCAPS_CSV, inputs / corpus.MUSICCAPS_CSV)
    shutil.copyfile(Path(served_root) / corpus.MTG_DIR / corpus.SHA256_LIST, inputs / corpus.SHA256_LIST)
    (workspace / "models").mkdir(exist_ok=True)
    (workspace / "models/eval").unlink(missing_ok=True)
    (workspace / "models/eval").symlink_to(Path(standins).resolve() / "models/eval")
    return workspace


def init_dvc_repo(workspace: Path) -> None:
    """A fresh git repository of the workspace (DVC's is in the copied .dvc/), committed, as run.sh's second one."""
    subprocess.run([*GIT, "init", "-q"], cwd=workspace, check=True)
    with open(Path(workspace) / ".git/info/exclude", "a") as exclude:
        exclude.write("models/\n")  # the stand-in link: not part of the project
    subprocess.run([*GIT, "add", "-A"], cwd=workspace, check=True)
    subprocess.run([*GIT, "commit", "-qm", "paper test workspace"], cwd=workspace, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a paper test workspace (layout: this module's docstring).")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="a workspace: the repository's files, the test profile, inputs, stand-in links")
    make.add_argument("workspace", type=Path)
    make.add_argument("--served", type=Path, required=True, help="the server's root (SCRATCH/served)")
    make.add_argument("--standins", type=Path, required=True, help="the stand-ins (SCRATCH/standins)")
    make.add_argument("--dvc", action="store_true", help="also a fresh git repository of it, committed (dvc repro)")
    args = parser.parse_args(argv)
    make_workspace(args.workspace, args.served, args.standins)
    if args.dvc:
        init_dvc_repo(args.workspace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
