"""Shared test setup: offline, deterministic, CPU only."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep each test on one thread: the CI machine has 2 cores and results must not depend on thread count."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Under `make test` the suite runs on two pytest-xdist workers with `--dist loadscope`, scheduled by module: each
# module is one unit of work, so its fixtures are built once, and the two modules that share the session's built
# Snakemake project (tests/workflow/conftest.py) are one unit, so that project is built once. The units known to
# take minutes start first, longest first, then the others by number of tests, so that no long unit runs alone at
# the end. (Grouping with `xdist_group` marks does nothing with pytest 9: xdist 3.8 renames nodes through an
# attribute pytest 9 no longer reads.)
SHARED_PROJECT_MODULES = frozenset({"tests/workflow/test_invalidation.py", "tests/workflow/test_pipeline.py"})
SHARED_PROJECT_UNIT = "tests/workflow (the shared project)"
# Measured with `pytest --durations`: each of these builds a tiny project or kills stages many times.
LONGEST_UNITS_FIRST = (
    SHARED_PROJECT_UNIT,
    "tests/workflow/test_dvc_engine.py",
    "tests/test_kills_later_stages.py",
    "tests/test_kills.py",
    "tests/models/test_decoding.py",
    "tests/remote/test_s3_remote.py",
    "tests/test_full_disk.py",
    "tests/app/test_app.py",
    "tests/test_two_runs.py",
)


def unit_of_work(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return SHARED_PROJECT_UNIT if module in SHARED_PROJECT_MODULES else module


def _unit_rank(unit: str, tests_in_unit: int) -> tuple[int, int]:
    known = LONGEST_UNITS_FIRST.index(unit) if unit in LONGEST_UNITS_FIRST else len(LONGEST_UNITS_FIRST)
    return known, -tests_in_unit


def pytest_collection_modifyitems(config, items):
    """The order in which xdist hands out the units (and a one-process run takes them). The sort is stable, so the
    tests of a unit keep their order and the modules of a unit stay together."""
    counts: dict[str, int] = {}
    for item in items:
        unit = unit_of_work(item.nodeid)
        counts[unit] = counts.get(unit, 0) + 1
    items.sort(key=lambda item: _unit_rank(unit_of_work(item.nodeid), counts[unit_of_work(item.nodeid)]))


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep the collection's order (pytest_collection_modifyitems)

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return ModuleScheduling(config, log)
