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
# Snakemake project (tests/workflow/conftest.py) are one unit, so that project is built once. xdist starts the
# units with the most tests first, so the long workflow unit does not run alone at the end. (Grouping with
# `xdist_group` marks does nothing with pytest 9: xdist 3.8 renames nodes through an attribute pytest 9 no longer
# reads.)
SHARED_PROJECT_MODULES = frozenset({"tests/workflow/test_invalidation.py", "tests/workflow/test_pipeline.py"})


def unit_of_work(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return "tests/workflow (the shared project)" if module in SHARED_PROJECT_MODULES else module


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return ModuleScheduling(config, log)
