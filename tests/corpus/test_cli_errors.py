"""The CLI's contract for failures: bad input is one `error:` line; a crash is one line naming it a bug and the file
holding its traceback; never a bare Python traceback."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest
import yaml

from ssmttm import cli
from ssmttm.corpus import select


@pytest.fixture
def params(in_tmp, repo_root):
    (in_tmp / "params.yaml").write_text((repo_root / "params.yaml").read_text())
    return in_tmp / "params.yaml"


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_crash_is_one_line_naming_a_bug_and_the_traceback_file(params, in_tmp, monkeypatch, capsys):
    def buggy(args):
        return {}["missing"]

    monkeypatch.setattr(select, "run_from_args", buggy)
    assert cli.main(["select", "--fetched", "f", "--out", "o"]) == cli.EXIT_BUG
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("internal error (a bug) in `ssmttm select`: KeyError: 'missing' at test_cli_errors.py:")
    crash_logs = list((in_tmp / "logs/crashes").iterdir())
    assert len(crash_logs) == 1 and str(crash_logs[0].relative_to(in_tmp)) in line
    trace = crash_logs[0].read_text()
    assert "Traceback (most recent call last)" in trace and "KeyError: 'missing'" in trace and "def buggy" not in line

    assert cli.main(["-v", "select", "--fetched", "f", "--out", "o"]) == cli.EXIT_BUG
    assert "Traceback (most recent call last)" in capsys.readouterr().err  # --verbose shows it too


def test_a_full_disk_is_an_error_the_user_can_fix_not_a_bug(params, monkeypatch, capsys):
    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "data/segment/x.wav")

    monkeypatch.setattr(select, "run_from_args", disk_full)
    assert cli.main(["select", "--fetched", "f", "--out", "o"]) == 1
    assert _one_line(capsys.readouterr().err) == (
        "error: no space left on the device holding data/segment; free space and rerun the same command"
    )


@pytest.mark.parametrize(
    ("verb", "setup", "message"),
    [
        ("manifest", "start_s", "m.csv:2: start_s = 'ten' is not a number of seconds >= 0"),
        ("manifest", "long_id", "m.csv:2: invalid track id"),
        ("select", "no_fetch", "tracks.jsonl: not found; run `ssmttm fetch`"),
        ("segment", "float_rate", "segment.sample_rate = 44100.0 has the wrong type; expected integer"),
        ("select", "min_max", "select.min_duration_s = 100 is larger than select.max_duration_s = 10"),
    ],
)
def test_bad_inputs_print_one_error_line_and_no_traceback(params, in_tmp, verb, setup, message):
    """Through a real `python -m ssmttm` process, as a user runs it."""
    config = yaml.safe_load(params.read_text())
    args = {"manifest": ["--out", "m"], "select": ["--fetched", "f", "--out", "s"], "segment": ["--selected", "s"]}
    (in_tmp / "m.csv").write_text(
        {
            "start_s": "id,url,licence,start_s,end_s\na,http://x/a,MIT,ten,20\n",
            "long_id": f"id,url\n{'a' * 500},x\n",
        }.get(setup, "id,url\na,http://x/a\n")
    )
    config["corpus"].update({"source": "manifest", "manifest_path": "m.csv"})
    if setup == "float_rate":
        config["segment"]["sample_rate"] = 44100.0
    if setup == "min_max":
        config["select"].update({"min_duration_s": 100, "max_duration_s": 10})
    params.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "ssmttm", verb, "--params", str(params), *args[verb]]
    if verb == "segment":
        argv += ["--out", "g"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=in_tmp, timeout=120)
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    line = _one_line("\n".join(x for x in proc.stderr.splitlines() if x.startswith("error:")))
    assert message in line
