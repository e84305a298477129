"""configs/paper-test.yaml is configs/paper.yaml with only the listed sizes and counts, locations and hardware changed.

The profile is generated (scripts/paper_test/make_profile.py) from paper.yaml and configs/paper-test.overrides.yaml;
these tests hold it to that: a change to paper.yaml flows into the test profile as soon as it is regenerated, and a
test profile that differs in anything else fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.paper_test import make_profile

REPO = Path(__file__).resolve().parents[1]


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf (a list is a leaf: its items are one setting)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


@pytest.fixture(scope="module")
def files() -> tuple[dict, dict, dict[str, dict[str, Any]]]:
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    profile = yaml.safe_load((REPO / "configs/paper-test.yaml").read_text())
    raw = yaml.safe_load((REPO / "configs/paper-test.overrides.yaml").read_text())
    return paper, profile, raw


def test_override_categories_are_only_sizes_locations_and_hardware(files):
    _, _, raw = files
    assert set(raw) <= {"sizes_and_counts", "locations", "hardware"}
    assert all(isinstance(raw[c], dict) and raw[c] for c in raw)
    keys = [k for category in raw.values() for k in category]
    assert len(keys) == len(set(keys)), "a key is listed in two categories"


def test_every_override_key_exists_in_paper_yaml(files):
    paper, _, raw = files
    for category in raw.values():
        for dotted in category:
            assert make_profile.lookup(paper, dotted) is not make_profile.MISSING, f"{dotted}: not in paper.yaml"


def test_every_other_key_equals_paper_yaml(files):
    paper, profile, raw = files
    overridden = {k for category in raw.values() for k in category}
    paper_leaves, profile_leaves = leaves(paper), leaves(profile)
    assert set(profile_leaves) == set(paper_leaves), "the test profile adds or drops settings"
    for dotted, value in paper_leaves.items():
        if dotted in overridden:
            assert profile_leaves[dotted] == raw_value(raw, dotted)
        else:
            assert profile_leaves[dotted] == value, f"{dotted} differs from paper.yaml without an override"


def raw_value(raw: dict[str, dict[str, Any]], dotted: str) -> Any:
    return next(category[dotted] for category in raw.values() if dotted in category)


def test_locations_point_at_the_loopback_server_or_the_workspace(files):
    _, _, raw = files
    for dotted, value in raw["locations"].items():
        text = str(value)
        assert text.startswith("http://127.0.0.1:") or not text.startswith(("/", "http", "~")), dotted
    assert make_profile.server_port() == 18431


def test_hardware_overrides_only_move_work_from_gpu_to_cpu(files):
    paper, _, raw = files
    for dotted, value in raw["hardware"].items():
        assert value in ("cpu", "32", 32, "32-true"), dotted
        assert make_profile.lookup(paper, dotted) in ("cuda", "gpu", "auto", "bf16-mixed", "bfloat16"), dotted


def test_the_profile_file_is_what_make_profile_writes_now():
    result = subprocess.run(
        [sys.executable, "scripts/paper_test/make_profile.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + " (run python scripts/paper_test/make_profile.py)"


def test_an_unknown_key_or_category_is_refused(tmp_path):
    bad_key = tmp_path / "key.yaml"
    bad_key.write_text("sizes_and_counts:\n  lm.no_such_setting: 3\n")
    with pytest.raises(SystemExit, match="not a key of paper.yaml"):
        make_profile.render(overrides_path=bad_key)
    bad_category = tmp_path / "category.yaml"
    bad_category.write_text("speed:\n  lm.d_model: 3\n")
    with pytest.raises(SystemExit, match="unknown override categories"):
        make_profile.render(overrides_path=bad_category)


def test_the_profile_validates():
    ssmttm = Path(sys.executable).parent / "ssmttm"
    result = subprocess.run(
        [str(ssmttm), "validate", "configs/paper-test.yaml"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
