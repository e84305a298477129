"""Fixtures for the corpus stages: a local HTTP server on 127.0.0.1 and small generated audio files."""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with byte-range support (ffmpeg seeks when yt-dlp cuts ranges), request counting and
    programmable failures."""

    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def send_head(self):
        name = self.path.split("?", 1)[0].lstrip("/")
        with self.server.lock:
            self.server.requests[name] += 1
            failures_left = self.server.fail.get(name, 0)
            if failures_left:
                self.server.fail[name] = failures_left - 1
        if failures_left:
            self.send_error(503, "programmed failure")
            return None
        self._remaining = None
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = min(int(match.group(2) or size - 1), size - 1)
        if start >= size:
            self.send_error(416)
            return None
        handle = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return handle

    def copyfile(self, source, outputfile) -> None:
        try:
            if self._remaining is None:
                super().copyfile(source, outputfile)
            else:
                outputfile.write(source.read(self._remaining))
        except (BrokenPipeError, ConnectionResetError):  # clients (ffmpeg) may hang up early
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
        self.root = root
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.fail: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def count(self, name: str | None = None) -> int:
        with self.lock:
            return self.requests[name] if name is not None else sum(self.requests.values())


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; `.fail[name] = n` makes the next n requests for `name` answer 503."""
    root = tmp_path / "www"
    root.mkdir()
    server = _Server(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def write_tone(
    path: Path, seconds: float, sample_rate: int = 8000, freq: float = 440.0, channels: int = 1, fmt: str | None = None
) -> Path:
    """A sine tone file (WAV unless `fmt`): small, deterministic, decodable."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # (N,)
    data = np.stack([tone] * channels, axis=1)  # (N, C)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sample_rate, format=fmt or path.suffix.lstrip(".").upper(), subtype="PCM_16")
    return path


@pytest.fixture
def tone():
    return write_tone


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    """Retries without sleeping, so failure tests stay fast."""
    from ssmttm.corpus import fetch, mtg_jamendo

    monkeypatch.setattr(fetch, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(mtg_jamendo, "RETRY_WAIT_S", 0.0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test from tmp_path, as the stages run from the repository root."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
