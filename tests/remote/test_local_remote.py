"""The repository's own `.dvc/config` (the default remote `../ssmttm-dvc-remote` beside each clone, `verify = true`):
a damaged object is refused on pull, and `ssmttm remote-check` reads the local remote the same way as S3."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.remote.remote_project import MODEL, clone, dvc, make_project, run, ssmttm, versioned_files

pytestmark = pytest.mark.remote


@pytest.fixture(scope="module")
def pushed(repo_root, tmp_path_factory) -> Path:
    project = make_project(repo_root, tmp_path_factory.mktemp("local") / "clone-a")
    run(dvc("push"), project)
    return project


def test_the_default_remote_verifies_what_it_pulls(repo_root):
    shown = run(dvc("config", "--project", "remote.local.verify"), repo_root).stdout.strip()
    assert shown == "true"


def test_a_corrupted_object_on_the_default_remote_is_refused_and_remote_check_names_it(pushed):
    remote = pushed.parent / "ssmttm-dvc-remote"  # `../../ssmttm-dvc-remote` from clone-a/.dvc
    md5 = hashlib.md5((pushed / MODEL).read_bytes()).hexdigest()
    bad = remote / "files/md5" / md5[:2] / md5[2:]
    original = bad.read_bytes()
    bad.chmod(0o644)
    bad.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # overwritten in place, same size
    target = clone(pushed, pushed.parent / "clone-b")
    pull = run(dvc("pull"), target, check=False)
    assert pull.returncode != 0 and "results/train_lm" in pull.stderr
    assert not (target / MODEL).exists()
    check = run(ssmttm("remote-check"), target, check=False)
    assert check.returncode == 1 and f"BAD {MODEL}: md5 " in check.stdout
    bad.write_bytes(original)
    run(dvc("pull"), target)
    assert versioned_files(target) == versioned_files(pushed)
    assert "0 bad, 0 missing" in run(ssmttm("remote-check"), target).stdout
