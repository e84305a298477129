"""The package's layers and its import graph (issue "The house"): the import-linter contracts in pyproject.toml hold,
they catch an upward import and a cycle, and no two modules of src/ssmttm import each other, lazy imports included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(repo: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(repo / "pyproject.toml")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "ssmttm", tmp_path / "src" / "ssmttm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _added():\n    {line}\n")


def test_the_contracts_catch_an_upward_import(package_copy: Path):
    # codec sits below the stage families: a lazy import of evaluate from it breaks the layers
    _append(package_copy / "src/ssmttm/codec/train.py", "from ssmttm.evaluate import metrics  # noqa")
    result = _lint_imports(package_copy)
    assert result.returncode != 0
    assert "ssmttm.codec.train -> ssmttm.evaluate.metrics" in result.stdout


def test_the_contracts_catch_a_cycle_within_a_layer(package_copy: Path):
    # corpus.manifest imports corpus.user_manifest; the way back closes a cycle between siblings
    _append(package_copy / "src/ssmttm/corpus/user_manifest.py", "from ssmttm.corpus import manifest  # noqa")
    result = _lint_imports(package_copy)
    assert result.returncode != 0
    assert "No import cycles between the modules of a package BROKEN" in " ".join(result.stdout.split())


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_strongly_connected_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_two_modules_import_each_other():
    """Every module, package __init__ files included (acyclic_siblings does not see a package and its own child)."""
    graph = grimp.build_graph("ssmttm", include_external_packages=False, cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert strongly_connected(edges) == []
