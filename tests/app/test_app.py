"""`ssmttm app` as a user meets it: the server started by the CLI in a subprocess on a free port of 127.0.0.1 against a
tiny trained workspace, driven in headless Chromium (ssmttm.report.browser): type a prompt, click Generate, then the
page's <audio> element must have loaded a non-silent WAV and the spectrogram image must be shown. The workspace has
a second run with no checkpoint: choosing it must say so on the page.

Workspace: the demo params (tiny generate settings), tests.generate's tiny LM run (real MiniLM text, steps 2 and 4),
tiny refiner and tiny codec (16 kHz) in the folders a finished `make demo` has.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssmttm.app import ModelCache
from ssmttm.report.browser import chromium_available, close, launch
from tests.api._workspace import TRAINED_RUN, UNTRAINED_RUN, make_workspace

pytest.importorskip("gradio", reason="gradio (the `app` extra) is not installed: make setup installs it")

SECONDS = 0.1  # 1600 samples, 200 frames of the tiny codec: within 4 x the tiny LM's 63-frame context
SILENCE_RMS = 1e-4  # a random tiny model's clip is far louder; digital silence or a zeroed decode is not
STARTUP_TIMEOUT_S = 90
GENERATE_TIMEOUT_S = 90


def write_workspace(repo_root: Path, root: Path) -> Path:
    """tests/api's tiny workspace, with clips long enough for the browser's audio element."""
    return make_workspace(root, repo_root, generate={"seconds": SECONDS, "refine_steps": 2, "guidance_scale": 2.0})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }


def app_command(workspace: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssmttm", "app", "--workspace", str(workspace), "--port", str(port), *extra]


def wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`ssmttm app` exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"`ssmttm app` did not answer on {url} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, repo_root):
    return write_workspace(repo_root, tmp_path_factory.mktemp("app") / "workspace")


@pytest.fixture(scope="module")
def server(workspace, tmp_path_factory):
    """The URL of `ssmttm app` serving `workspace` on 127.0.0.1; stopped (SIGINT, as Ctrl-C) after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            app_command(workspace, port), cwd=workspace, env=env(), stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(process, url, log)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not chromium_available():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y --no-install-recommends chromium)")
    driver, context = launch(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield context
    finally:
        close(driver, context)


AUDIO_STATE = """() => { const a = document.querySelector('#audio audio');
    return a ? {src: a.currentSrc || a.src, readyState: a.readyState, duration: a.duration,
                error: a.error ? a.error.code : null} : null; }"""
IMAGE_STATE = """() => { const i = document.querySelector('#spectrogram img');
    return i ? {src: i.src, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight} : null; }"""


def test_prompt_to_a_playing_non_silent_clip_and_its_spectrogram(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.locator("#prompt textarea").fill("a calm piano melody")
    page.locator("#generate").click()
    page.wait_for_function(
        "() => { const a = document.querySelector('#audio audio'); return a && (a.readyState >= 2 || a.error); }",
        timeout=GENERATE_TIMEOUT_S * 1000,
    )
    audio = page.evaluate(AUDIO_STATE)
    assert audio["error"] is None, audio
    assert audio["readyState"] >= 2 and audio["duration"] > 0, audio
    assert abs(audio["duration"] - SECONDS) < 0.01, audio

    answer = browser.request.get(audio["src"])
    assert answer.ok, (audio["src"], answer.status)
    samples, rate = sf.read(io.BytesIO(answer.body()), dtype="float32")
    assert rate == 16000 and samples.shape == (round(SECONDS * rate),), (rate, samples.shape)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    assert rms > SILENCE_RMS, f"the served WAV is silent (RMS {rms:.2e})"

    page.wait_for_function(
        "() => { const i = document.querySelector('#spectrogram img'); return i && i.complete && i.naturalWidth > 0; }",
        timeout=10_000,
    )
    image = page.evaluate(IMAGE_STATE)
    assert image["width"] > 0 and image["height"] == 64, image  # one row per mel band (ssmttm.report.spectrogram)
    assert f"run {TRAINED_RUN}, step 4" in page.locator("#message").inner_text()
    page.close()


def test_a_run_without_a_checkpoint_says_so_on_the_page(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.locator("#run input").click()
    page.get_by_role("option", name=f"{UNTRAINED_RUN} (no checkpoint)").click()
    message = page.locator("#message")
    message.get_by_text("cannot make audio yet").wait_for(timeout=20_000)
    text = message.inner_text()
    assert f"no checkpoint for run '{UNTRAINED_RUN}'" in text and "train it with" in text, text
    assert page.locator("#generate").is_disabled()
    page.close()


def test_refuses_to_start_without_a_trained_run_or_on_a_busy_port(workspace, tmp_path):
    empty = tmp_path / "untrained"
    empty.mkdir()
    shutil.copyfile(workspace / "params.yaml", empty / "params.yaml")
    done = subprocess.run(app_command(empty, free_port()), env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and "no run can make audio yet" in done.stderr, done.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(app_command(workspace, port), env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr, done.stderr


def test_models_are_loaded_once_per_run_and_step(workspace):
    loads = []

    class Loaded:
        def __init__(self, step):
            self.step = step

    def loader(path, run, step, device):
        loads.append((run, step))
        return Loaded(4 if step is None else step)

    cache = ModelCache(workspace, "cpu", loader)
    first = cache.get(TRAINED_RUN, None)
    assert cache.get(TRAINED_RUN, None) is first and cache.get(TRAINED_RUN, 4) is first  # the last step is step 4
    other = cache.get(TRAINED_RUN, 2)
    assert other is not first and cache.get(TRAINED_RUN, 2) is other
    assert loads == [(TRAINED_RUN, None), (TRAINED_RUN, 2)]
