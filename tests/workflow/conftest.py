"""One tiny project built with a bare `snakemake` for the whole session, shared by the invalidation and the
pipeline tests: building it is most of their cost. Every test that changes it puts it back as committed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflow.project import commit, dvc, make_project, run, snakemake


@pytest.fixture(scope="session")
def clones(tmp_path_factory) -> Path:
    """A folder for clones that share the default DVC remote (`../../ssmttm-dvc-remote` from each .dvc/)."""
    return tmp_path_factory.mktemp("clones")


@pytest.fixture(scope="session")
def snakemake_project(repo_root, clones) -> Path:
    """Clone A: built with a bare `snakemake`, recorded with `dvc commit` (what `make demo` does), committed."""
    project = make_project(repo_root, clones / "clone-a")
    run(snakemake(), project)
    run(dvc("commit", "--force", "--quiet"), project)
    commit(project, "tiny run")
    return project
