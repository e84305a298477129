"""The paper profile's MTG-Jamendo checksum list ships with the repository and lists every archive the corpus reads."""

from __future__ import annotations

import re

import yaml

from ssmttm.corpus.mtg_jamendo import load_sha256_list, tar_name

MTG_ARCHIVES = 100  # raw_30s/audio is published as raw_30s_audio-00.tar ... -99.tar


def test_paper_profile_checksum_list_is_in_the_repository_and_parses(repo_root):
    mtg = yaml.safe_load((repo_root / "configs/paper.yaml").read_text())["corpus"]["mtg_jamendo"]
    path = (repo_root / mtg["tar_sha256_path"]).resolve()  # relative paths are from the project root
    assert path.is_relative_to(repo_root) and path.is_file(), path
    sums = load_sha256_list(path)
    expected = {tar_name(mtg["tar_url_template"].format(index=i)) for i in range(MTG_ARCHIVES)}
    assert set(sums) == expected and len(sums) == MTG_ARCHIVES
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in sums.values())
    assert len(set(sums.values())) == MTG_ARCHIVES  # no archive listed twice under another name
    note = (path.parent / "README.md").read_text()
    assert path.name in note and "MTG/mtg-jamendo-dataset" in note and "Apache 2.0" in note
