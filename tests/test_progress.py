"""progress(): a tqdm bar on a terminal, plain log lines (never a carriage return) anywhere else."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from ssmttm import progress as progress_module
from ssmttm.progress import format_line, format_seconds, plural, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def log_stream():
    """The progress logger's records, formatted like the CLI does, in a StringIO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("ssmttm.progress")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


def test_log_lines_when_stderr_is_not_a_terminal(monkeypatch, log_stream):
    stderr = io.StringIO()  # not a TTY, like `2> logs/segment/shard-00000.log`
    monkeypatch.setattr(sys, "stderr", stderr)
    items = list(progress(range(10_000), "segment shard-00000", "track"))
    assert items == list(range(10_000))
    output = log_stream.getvalue() + stderr.getvalue()
    assert "\r" not in output
    lines = log_stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 15, lines  # first item, every ~10%, last item
    assert lines[0].startswith("INFO ssmttm.progress: segment shard-00000: 1/10000 tracks (0%)")
    assert "10000/10000 tracks (100%)" in lines[-1] and "done in" in lines[-1]
    assert sum("10000/10000" in line for line in lines) == 1
    assert any("5000/10000 tracks (50%)" in line and "eta" in line for line in lines)


def test_a_line_every_30_seconds_without_a_total(monkeypatch, log_stream):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    clock = iter(range(0, 10_000, 31))  # every item takes 31 s
    monkeypatch.setattr(progress_module, "_now", lambda: next(clock))
    assert list(progress((i for i in range(4)), "caption", "batch")) == [0, 1, 2, 3]
    lines = log_stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines] == [
        "caption: 1 batches",
        "caption: 2 batches",
        "caption: 3 batches",
        "caption: 4 batches",
        "caption: 4 batches",
    ]
    assert lines[0].endswith("31 s/batch") and "eta" not in lines[0]  # no total: no eta
    assert lines[-1].endswith("done in 2 min 35 s")  # without a total the end is only known after the loop


def test_short_loops_and_disabled(monkeypatch, log_stream):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert list(progress([], "select", "track")) == []
    assert list(progress(["a"], "select", "track")) == ["a"]
    assert list(progress(range(3), "generate", "token", enabled=False)) == [0, 1, 2]
    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 1 and "select: 1/1 tracks (100%)" in lines[0]


def test_tqdm_bar_on_a_terminal(monkeypatch, log_stream):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress(range(5), "fetch shard 3", "track")) == list(range(5))
    assert "fetch shard 3" in terminal.getvalue() and "5/5" in terminal.getvalue()
    assert log_stream.getvalue() == ""


def test_formatting():
    assert format_line("x", "track", 12, 40, 4.0) == "x: 12/40 tracks (30%), 3 tracks/s, eta 9 s"
    assert format_line("x", "track", 40, 40, 13.0, final=True) == "x: 40/40 tracks (100%), 3.08 tracks/s, done in 13 s"
    assert format_line("x", "tar", 3, None, 0.0) == "x: 3 tars"
    assert [plural(u) for u in ("track", "batch", "tokens")] == ["tracks", "batches", "tokens"]
    assert [format_seconds(s) for s in (0.4, 59, 125, 3725)] == ["0 s", "59 s", "2 min 05 s", "1 h 02 min"]
