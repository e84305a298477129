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


def test_the_long_units_exist_and_start_first(repo_root):
    from tests.conftest import LONGEST_UNITS_FIRST, SHARED_PROJECT_UNIT, _unit_rank

    for unit in LONGEST_UNITS_FIRST:
        assert unit == SHARED_PROJECT_UNIT or (repo_root / unit).is_file(), f"{unit} was renamed: update conftest"
    ranked = sorted(
        [("tests/test_config.py", 90), ("tests/test_kills.py", 8), (SHARED_PROJECT_UNIT, 60), ("tests/x.py", 3)],
        key=lambda unit_count: _unit_rank(*unit_count),
    )
    assert [unit for unit, _ in ranked] == [
        SHARED_PROJECT_UNIT,
        "tests/test_kills.py",
        "tests/test_config.py",
        "tests/x.py",
    ]
