"""The suite's own layout: under `make test` (pytest-xdist, tests/conftest.py) each module is one unit of work, and
the modules that use the session's built Snakemake project must be one unit, or each worker builds it again."""

import re

from tests.conftest import SHARED_PROJECT_MODULES, unit_of_work


def test_the_modules_sharing_the_built_project_are_one_unit_of_work(repo_root):
    users = {
        path.relative_to(repo_root).as_posix()
        for path in (repo_root / "tests").rglob("test_*.py")
        if re.search(r"def \w+\([^)]*\bsnakemake_project\b", path.read_text())  # takes the fixture
    }
    assert users == SHARED_PROJECT_MODULES
    assert len({unit_of_work(f"{module}::test_x") for module in users}) == 1
    assert unit_of_work("tests/test_kills.py::test_x[a]") == unit_of_work("tests/test_kills.py::test_y")
    assert unit_of_work("tests/test_kills.py::test_x") != unit_of_work("tests/test_kills_later_stages.py::test_x")
