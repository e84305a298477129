"""Params files are validated before anything runs, with one message naming the key, the value and what is allowed."""

import copy
import shutil
from dataclasses import dataclass, field

import pytest
import yaml

from ssmttm.cli import main as cli_main
from ssmttm.config import ParamsError, load_params, section_to_dataclass, validate_params


@pytest.fixture(scope="module")
def demo_params(repo_root):
    return load_params(repo_root / "params.yaml")


def _check_rejected(params, *fragments):
    with pytest.raises(ParamsError) as info:
        validate_params(params, source="test.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("profile", ["params.yaml", "configs/paper.yaml", "configs/demo.yaml"])
def test_shipped_profiles_are_valid(repo_root, profile):
    load_params(repo_root / profile)


def test_demo_profile_file_matches_params_yaml(repo_root):
    assert yaml.safe_load((repo_root / "configs/demo.yaml").read_text()) == yaml.safe_load(
        (repo_root / "params.yaml").read_text()
    )


def test_unknown_key_is_named_with_allowed_keys(demo_params):
    params = copy.deepcopy(demo_params)
    params["segment"]["clip_secs"] = 30
    message = _check_rejected(params, "segment.clip_secs", "clip_seconds")
    assert message.startswith("test.yaml:")


def test_unknown_top_level_section(demo_params):
    params = copy.deepcopy(demo_params)
    params["segmnt"] = {}
    _check_rejected(params, "segmnt")


def test_wrong_type(demo_params):
    params = copy.deepcopy(demo_params)
    params["corpus"]["n_shards"] = "two"
    _check_rejected(params, "corpus.n_shards", "'two'", "integer")


def test_negative_duration(demo_params):
    params = copy.deepcopy(demo_params)
    params["segment"]["clip_seconds"] = -5
    _check_rejected(params, "segment.clip_seconds", "-5", "> 0")


def test_unknown_enum_value(demo_params):
    params = copy.deepcopy(demo_params)
    params["caption"]["mode"] = "tgs"
    _check_rejected(params, "caption.mode", "'tgs'", "'tags'", "'import'", "'model'")


def test_bad_licence_id_in_allow_list(demo_params):
    params = copy.deepcopy(demo_params)
    params["select"]["allowed_licences"] = ["CC BY 4.0"]
    _check_rejected(params, "select.allowed_licences.0", "CC BY 4.0")


def test_cli_validate_reports_error_without_traceback(tmp_path, demo_params, capsys):
    bad = copy.deepcopy(demo_params)
    bad["segment"]["hop_seconds"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert cli_main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "segment.hop_seconds" in err and "Traceback" not in err


def test_profile_switch_copies_and_refuses_invalid(tmp_path, repo_root, capsys):
    shutil.copytree(repo_root / "configs", tmp_path / "configs")
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    assert cli_main(["profile", "paper", "--root", str(tmp_path)]) == 0
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["profile"] == "paper"
    broken = yaml.safe_load((tmp_path / "configs/demo.yaml").read_text())
    broken["fetch"]["retries"] = -1
    (tmp_path / "configs/broken.yaml").write_text(yaml.safe_dump(broken))
    assert cli_main(["profile", "broken", "--root", str(tmp_path)]) == 2
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["profile"] == "paper"  # unchanged
    assert cli_main(["profile", "nonexistent", "--root", str(tmp_path)]) == 2
    assert "available" in capsys.readouterr().err


@dataclass
class _Inner:
    a: int = 1
    b: tuple[float, float] = (0.0, 1.0)


@dataclass
class _Outer:
    name: str = "x"
    inner: _Inner = field(default_factory=_Inner)


def test_section_to_dataclass_nested_and_defaults():
    cfg = section_to_dataclass(_Outer, {"inner": {"b": [2.0, 3.0]}})
    assert cfg == _Outer(name="x", inner=_Inner(a=1, b=(2.0, 3.0)))
    with pytest.raises(ParamsError, match="unknown key"):
        section_to_dataclass(_Outer, {"nme": "y"})


def test_text_cache_dtype_is_in_the_text_section(demo_params, repo_root):
    assert demo_params["text"]["cache_dtype"] == "float32"
    assert load_params(repo_root / "configs/paper.yaml")["text"]["cache_dtype"] == "bfloat16"
    params = copy.deepcopy(demo_params)
    params["text"]["cache_dtype"] = "int8"
    _check_rejected(params, "text.cache_dtype", "'int8'", "'bfloat16'")
    params = copy.deepcopy(demo_params)
    params["train_lm"]["text_cache_dtype"] = "float32"  # moved to text.cache_dtype
    _check_rejected(params, "train_lm.text_cache_dtype")


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("select.min_duration_s", 5000, ["select.min_duration_s", "select.max_duration_s"]),
        ("segment.min_tail_seconds", 20, ["segment.min_tail_seconds", "segment.clip_seconds"]),
        ("train_lm.warmup_steps", 500, ["runs.prefix_simba", "train_lm.warmup_steps", "max_steps"]),
        ("tokenize.valid_fraction", 0.95, ["tokenize.valid_fraction", "tokenize.test_fraction"]),
        ("train_lm.num_threads", None, ["portable_cpu", "train_lm.num_threads"]),
        ("segment.sample_rate", 44100.0, ["segment.sample_rate"]),
    ],
)
def test_inconsistent_params_are_refused_with_one_line_naming_the_keys(repo_root, key, value, named):
    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["portable_cpu"] = True  # the num_threads case is a portable-mode check
    section = params
    *parents, leaf = key.split(".")
    for part in parents:
        section = section[part]
    section[leaf] = value
    with pytest.raises(ParamsError) as caught:
        validate_params(params, source="params.yaml")
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in named), message
