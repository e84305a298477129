"""Sharing a run through a Google Cloud Storage remote, with the README's GCS recipe run for real: the run is made in
the project's .venv, then `dvc` and `python -m ssmttm.cli remote-check` come from the second environment of
requirements/gcs-remote.txt (dvc-gs), against a GCS-compatible server (gcp-storage-emulator) on 127.0.0.1.

The first run builds that environment (about 70 s; cached in .venv/gcs-remote/, skipped with the reason offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remote.gcs_server import GCS_BUCKET, gcs_env, read_object, write_object
from tests.remote.remote_project import (
    MODEL,
    SHARD,
    clone,
    commit,
    make_project,
    object_key,
    run,
    ssmttm,
    versioned_files,
)
from tests.remote.test_s3_remote import lock_md5

# Its own target (`make gcs-test`, run by .ci/run): the second environment it builds costs minutes on a fresh clone,
# which `make test` (under 20 minutes) cannot spare.
pytestmark = [pytest.mark.remote, pytest.mark.gcs]

PREFIX = "ssmttm"


def gcs_dvc(venv: Path, *args: str) -> list[str]:
    return [str(venv / "bin/dvc"), *args]


def gcs_remote_check(repo_root: Path, venv: Path, *args: str) -> list[str]:
    """README: `PYTHONPATH=src .venv-gcs/bin/python -m ssmttm.cli remote-check` (it reads objects through dvc-gs)."""
    return [
        "env",
        f"PYTHONPATH={repo_root / 'src'}",
        str(venv / "bin/python"),
        "-m",
        "ssmttm.cli",
        "remote-check",
        *args,
    ]


def gcs_run(venv: Path, args: list[str], cwd: Path, check: bool = True):
    return run(args, cwd, check=check, env=gcs_env(venv))


def configure_endpoint(venv: Path, project: Path, endpoint: str) -> None:
    """Per clone, git-ignored: where the store is (a real bucket needs `credentialpath` or gcloud's login instead)."""
    gcs_run(venv, gcs_dvc(venv, "remote", "modify", "--local", "store", "endpointurl", endpoint), project)


@pytest.fixture(scope="module")
def clone_a(repo_root, tmp_path_factory, gcs_server) -> Path:
    """Clone A: the tiny run made by the project's dvc, the README's gs:// remote committed, pushed from the GCS env."""
    venv, endpoint = gcs_server
    project = make_project(repo_root, tmp_path_factory.mktemp("gcs") / "clone-a")
    gcs_run(venv, gcs_dvc(venv, "remote", "add", "-d", "store", f"gs://{GCS_BUCKET}/{PREFIX}"), project)
    gcs_run(venv, gcs_dvc(venv, "remote", "modify", "store", "verify", "true"), project)
    configure_endpoint(venv, project, endpoint)
    commit(project, "GCS remote")
    assert "8 files pushed" in gcs_run(venv, gcs_dvc(venv, "push"), project).stdout
    return project


def fresh_clone(venv: Path, clone_a: Path, endpoint: str, name: str) -> Path:
    target = clone(clone_a, clone_a.parent / name)
    configure_endpoint(venv, target, endpoint)
    return target


def test_push_git_clone_pull_is_byte_identical_and_clean(repo_root, clone_a, gcs_server):
    venv, endpoint = gcs_server
    clone_b = fresh_clone(venv, clone_a, endpoint, "clone-b")
    gcs_run(venv, gcs_dvc(venv, "pull"), clone_b)
    assert versioned_files(clone_b) == versioned_files(clone_a)
    assert MODEL in versioned_files(clone_b)
    assert "Data and pipelines are up to date." in gcs_run(venv, gcs_dvc(venv, "status"), clone_b).stdout
    assert "in sync" in gcs_run(venv, gcs_dvc(venv, "status", "-c"), clone_b).stdout
    check = gcs_run(venv, gcs_remote_check(repo_root, venv), clone_b)
    assert f"remote 'store' (gs://{GCS_BUCKET}/{PREFIX}): 8 objects checked, 8 good, 0 bad, 0 missing" in check.stdout


@pytest.mark.parametrize(("how", "artifact"), [("corrupt", MODEL), ("truncate", "results/summary.json")])
def test_a_damaged_gcs_object_is_refused_on_pull_and_named_by_remote_check(
    repo_root, clone_a, gcs_server, how, artifact
):
    venv, endpoint = gcs_server
    key = object_key(PREFIX, lock_md5(clone_a, artifact))
    original = read_object(endpoint, key)
    assert original == (clone_a / artifact).read_bytes()
    damaged = bytes([original[0] ^ 0xFF]) + original[1:] if how == "corrupt" else original[: len(original) // 2]
    target = fresh_clone(venv, clone_a, endpoint, f"clone-{how}")
    write_object(endpoint, key, damaged)
    try:
        pull = gcs_run(venv, gcs_dvc(venv, "pull"), target, check=False)
        check = gcs_run(venv, gcs_remote_check(repo_root, venv), clone_a, check=False)
    finally:
        write_object(endpoint, key, original)
    assert pull.returncode != 0
    folder_output = "results/train_lm" if artifact == MODEL else artifact
    assert "Checkout failed for following targets" in pull.stderr and folder_output in pull.stderr
    assert not (target / artifact).exists()  # the bad bytes are neither in the workspace nor in the cache
    assert check.returncode == 1
    expected = "md5 " if how == "corrupt" else f"{len(damaged)} bytes, expected {len(original)}"
    assert f"BAD {artifact}: {expected}" in check.stdout
    assert "8 objects checked, 7 good, 1 bad, 0 missing" in check.stdout
    gcs_run(venv, gcs_dvc(venv, "pull"), target)  # the same clone pulls the repaired remote
    assert versioned_files(target) == versioned_files(clone_a)


def test_remote_check_delete_bad_repairs_a_truncated_object_that_push_skips(repo_root, clone_a, gcs_server):
    venv, endpoint = gcs_server
    key = object_key(PREFIX, lock_md5(clone_a, SHARD))
    original = read_object(endpoint, key)
    write_object(endpoint, key, original[:1000])  # what an interrupted upload leaves
    try:
        assert "in sync" in gcs_run(venv, gcs_dvc(venv, "status", "-c"), clone_a).stdout  # DVC does not see it ...
        gcs_run(venv, gcs_dvc(venv, "push"), clone_a)  # ... and does not resend it
        assert len(read_object(endpoint, key)) == 1000
        repair = gcs_run(venv, gcs_remote_check(repo_root, venv, "--delete-bad"), clone_a, check=False)
        assert repair.returncode == 1
        assert f"BAD {SHARD}: 1000 bytes, expected {len(original)}" in repair.stdout
        assert "deleted 2 objects" in repair.stdout  # the shard and its folder's manifest
        assert "2 files pushed" in gcs_run(venv, gcs_dvc(venv, "push", "-r", "store"), clone_a).stdout
        assert read_object(endpoint, key) == original
        assert "8 good, 0 bad, 0 missing" in gcs_run(venv, gcs_remote_check(repo_root, venv), clone_a).stdout
    finally:
        write_object(endpoint, key, original)


def test_remote_check_from_the_project_venv_says_the_gcs_environment_is_needed(clone_a):
    """The project's .venv has no dvc-gs (protobuf conflict): one line that names the missing plugin, exit 1."""
    check = run(ssmttm("remote-check"), clone_a, check=False)
    assert check.returncode == 1
    assert "requires 'dvc-gs'" in check.stderr and "Traceback" not in check.stderr
